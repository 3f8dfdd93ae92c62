/*
 * wal/wal.h: the tail of everything. Every committed change is stored once,
 * already encoded, under its global revision, in the same commit as the
 * change; subscribers read from any revision, then follow live.
 *
 * The encoding is not the WAL's business: its owner supplies an encode
 * function (api/ turns each change into a reel.v1.Event). The WAL stores
 * the subject beside the bytes, so filters run without decoding, and
 * forwards the bytes as they are.
 *
 * Threading: wal_t is thread-safe. wal_before_commit and wal_publish run on
 * the store's writer thread. Subscriptions follow the feed (feed/feed.h):
 * sinks' deliver and end are called from the writer thread (live) or the
 * pumping thread (replay); calls for one subscription never overlap. wake
 * may come from the writer thread, or any thread that takes a consumer
 * over or trims (under WAL locks).
 */
#ifndef REEL_WAL_WAL_H
#define REEL_WAL_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/page.h"
#include "base/status.h"
#include "store/store.h"

typedef struct wal wal_t;
typedef struct wal_sub wal_sub_t;

/* Turns one change into its subject and event bytes (both malloc'd). */
typedef reel_code_t (*wal_encode_fn)(void *arg, const store_change_t *c,
                                     char **subject, uint8_t **bytes,
                                     size_t *len, reel_status_t *st);

/*
 * Retention: events are trimmed, oldest first, once they are past the age
 * cap or beyond the size cap. A durable consumer keeps the events after
 * its acknowledged revision from being trimmed while they take at most
 * consumer_max_lag_bytes; when retention would trim an event it has not
 * acknowledged and its unacknowledged events take more, it is invalidated
 * (it can no longer subscribe or acknowledge) and trimming goes on.
 */
typedef struct wal_limits {
    uint64_t retention_bytes; /* 0 = 1 GiB */
    int64_t retention_age_ms; /* 0 = 7 days */
    int64_t trim_interval_ms; /* 0 = 1000 */
    uint64_t consumer_max_lag_bytes; /* 0 = 1 GiB */
    /* Durable consumers at most: a new one past it is RESOURCE_EXHAUSTED
     * (every trim and listing reads them all). 0 = the default. */
    uint32_t max_consumers;
    /* Durable consumers of one tenant at most, so one tenant cannot take
     * the whole of max_consumers: a tenant's are those whose names start
     * with the same tenant prefix, of the length consumer_scope gives
     * (0: the name has none, and only max_consumers applies; NULL: no
     * name has one). 0 = the default. */
    uint32_t max_tenant_consumers;
    size_t (*consumer_scope)(const char *name);
} wal_limits_t;

#define WAL_DEFAULT_MAX_CONSUMERS 10000
#define WAL_DEFAULT_MAX_TENANT_CONSUMERS 1000

/* The WAL's column family, for store_open(): "wal" (a tail), ended by a
 * NULL name. The WAL emits no changes of its own: it has no module id. */
extern const store_cf_desc_t wal_cfs[];

/* Starts the background trimmer. Fails (and starts nothing) when the
 * store was opened without wal_cfs (FAILED_PRECONDITION), or when the
 * stored byte count or the oldest event cannot be read. */
reel_code_t wal_create(store_t *store, wal_encode_fn encode, void *encode_arg,
                       const wal_limits_t *limits, wal_t **out,
                       reel_status_t *st);
/* Stops the trimmer; call before the store closes. Idempotent. */
void wal_stop(wal_t *w);
/* Stops, and frees; subscriptions must all be destroyed first. NULL ok. */
void wal_destroy(wal_t *w);

/* The store's before_commit hook (arg is the wal_t). */
reel_code_t wal_before_commit(void *arg, store_txn_t *txn,
                              const store_change_t *changes, size_t n,
                              reel_status_t *st);
/* The publish step's share: pushes the group's events to live subscribers. */
void wal_publish(wal_t *w, const store_change_t *changes, size_t n);

/* The last committed revision, and the oldest stored event's (0: none).
 * INTERNAL when the oldest cannot be read. */
reel_code_t wal_head(wal_t *w, uint64_t *head, uint64_t *oldest,
                     reel_status_t *st);

/* What a sink's deliver answers for an event it took without sending
 * anything (another tenant's): as 0, but it counts as refused, so a long
 * catch-up through such events is read in parts too. */
#define WAL_SINK_SKIPPED 2

typedef struct wal_sink {
    /* 0 if taken, WAL_SINK_SKIPPED if taken and not sent, other non-zero
     * if full (pump again when there is room). */
    int (*deliver)(void *arg, const uint8_t *bytes, size_t len,
                   uint64_t revision);
    /*
     * The subscription cannot go on: it fell behind retention, and events
     * after the last one it received were trimmed (OUT_OF_RANGE); reading
     * the stored events failed (INTERNAL, DATA_LOSS, RESOURCE_EXHAUSTED,
     * naming what failed); or its durable consumer was taken over by
     * another subscriber (ABORTED) or invalidated (FAILED_PRECONDITION).
     * Called at most once, from wal_sub_pump, with no WAL lock held.
     */
    void (*end)(void *arg, const reel_status_t *st);
    /*
     * The subscription needs a pump: it must end (its consumer was taken
     * over or invalidated), or it dropped out of live delivery (its sink
     * was full or refused, or an event could not be read) and a drain
     * might never come. The owner should call wal_sub_pump soon, from its
     * own thread. Called with WAL locks held: it must not block nor call
     * into the WAL. Optional; with it, a pump's catch-up that met events
     * it sent nothing for stops after about WAL_REPLAY_PART_MS (the clock
     * read every WAL_REPLAY_CHECK events or WAL_REPLAY_CHECK_BYTES read)
     * and wake asks for the next part, so a scan of a long backlog its
     * pattern refuses holds no thread for its whole length, and the owner
     * may report the cursor (wal_sub_cursor_try) between parts.
     */
    void (*wake)(void *arg);
    /*
     * NULL, or a tenant's mark "::T:" (api/tenant.h): only events whose
     * subject's second token starts with it reach the sink; or
     * WAL_SCOPE_UNMARKED: only events with no tenant's mark. A
     * subscription whose pattern has no literal second token is indexed
     * under it, so other tenants' events are not even offered to it: a
     * tenant's tails cost other tenants' writes nothing. Copied.
     */
    const char *scope;
} wal_sink_t;

/* wal_sink_t.scope of a tail that takes the events of no tenant's mark
 * (the default tenant's, under token auth): no mark is this short. */
#define WAL_SCOPE_UNMARKED "::"

/*
 * Events with revision > from_revision whose subject matches pattern (""
 * matches all); from_revision 0 means from the oldest retained.
 * INVALID_ARGUMENT for a malformed pattern or a from_revision past the
 * head (naming the head); OUT_OF_RANGE, naming the oldest retained
 * revision, when that far back is gone.
 */
#define WAL_REPLAY_PART_MS 10
#define WAL_REPLAY_CHECK 64
#define WAL_REPLAY_CHECK_BYTES (1 << 20)

reel_code_t wal_sub_create(wal_t *w, uint64_t from_revision,
                           const char *pattern, const wal_sink_t *sink,
                           void *arg, wal_sub_t **out, reel_status_t *st);
/* Delivers what there is room for, or ends the subscription (sink.end).
 * Calls for one subscription may overlap: one pumps, the others return. */
void wal_sub_pump(wal_sub_t *s);
/* ---- Durable consumers ----------------------------------------------------- */

/* What a caller names a consumer: 1-WAL_CONSUMER_MAX bytes of
 * WAL_CONSUMER_CHARS. The stored name may hold ':' too, so that api/ can
 * keep a tenant's consumer T as "::T:name" (api/tenant.h). */
#define WAL_CONSUMER_MAX 128
#define WAL_CONSUMER_CHARS "A-Za-z0-9_.-"
/* What a stored name may hold: a tenant's are "::tenant:name". */
#define WAL_CONSUMER_STORED_CHARS "A-Za-z0-9_.:-"

/* wal_consumers() counts the events pending for a filtered consumer over
 * at most this many revisions after its cursor, and over at most
 * WAL_PENDING_SCAN_PAGE for all the consumers of one call together (1,000
 * consumers far behind read 10 million events: 5 s a listing); those past
 * it are not exact. */
#define WAL_PENDING_SCAN_MAX 10000
#define WAL_PENDING_SCAN_PAGE 100000

typedef struct wal_consumer {
    char *name, *pattern;
    uint64_t acked;
    int64_t created_at_ms, acked_at_ms;
    int active;
    /* Invalidated by retention: when (0: valid) and why. */
    int64_t invalidated_at_ms;
    char *invalidated_reason;
    /* Filled by wal_consumers() only: */
    uint64_t pending;       /* events after acked matching the pattern ... */
    int pending_exact;      /* ... all of them, or those of the first
                               WAL_PENDING_SCAN_MAX revisions (0) */
    uint64_t holding_bytes; /* when it is what keeps events past the
                               retention limits, the bytes of the events
                               after acked at the last trim; else 0 */
} wal_consumer_t;

void wal_consumer_fini(wal_consumer_t *c);

/*
 * Subscribes as durable consumer `name`: creates it with its cursor at
 * from_revision (0: the oldest retained, less one) or resumes it after its
 * acknowledged revision, and streams like wal_sub_create() from there. The
 * subscription holds the consumer until wal_sub_destroy(). *out is set
 * before the subscription can call sink.wake.
 *
 * resume_after: the subscriber holds the events up to it already; the
 * stream starts after it when that is past the acknowledged revision (the
 * cursor stays). 0 for none.
 *
 * INVALID_ARGUMENT for a bad name or pattern, a new consumer's
 * from_revision or a resume_after past the head; OUT_OF_RANGE for one no longer retained;
 * FAILED_PRECONDITION when the consumer was invalidated, or while another
 * subscriber holds it, unless takeover: that one then ends ABORTED.
 * Blocks for one commit.
 */
reel_code_t wal_consumer_subscribe(wal_t *w, const char *name,
                                   uint64_t from_revision,
                                   uint64_t resume_after,
                                   const char *pattern, int takeover,
                                   const wal_sink_t *sink, void *arg,
                                   wal_sub_t **out, reel_status_t *st);

/* Moves the cursor to revision (never back). INVALID_ARGUMENT past the
 * head; FAILED_PRECONDITION when invalidated. Blocks for one commit. */
reel_code_t wal_ack(wal_t *w, const char *name, uint64_t revision,
                    wal_consumer_t *out, reel_status_t *st);
/*
 * Consumers by name after start_after ("" or NULL: from the first), at
 * most limit (0: no count limit) and, with a page budget (base/page.h;
 * NULL = none), no more than fit in it (at least one). *out is malloc'd
 * (wal_consumer_fini each, free the array); *more (may be NULL) says
 * whether a next page exists, after the last name. An error fails the
 * whole list: never a partial one.
 */
reel_code_t wal_consumers(wal_t *w, const char *start_after, size_t limit,
                          const reel_page_t *page, wal_consumer_t **out,
                          size_t *n, int *more, reel_status_t *st);
/* NOT_FOUND, or FAILED_PRECONDITION while a subscriber holds it. What it
 * kept from being trimmed goes at the next trim. */
reel_code_t wal_consumer_delete(wal_t *w, const char *name,
                                reel_status_t *st);

/*
 * Every consumer with its acknowledged revision, like wal_consumers() but
 * without counting pending events or marking the active ones: cheap enough
 * for every metrics scrape. Same ownership of *out.
 */
reel_code_t wal_consumer_cursors(wal_t *w, wal_consumer_t **out, size_t *n,
                                 reel_status_t *st);

/* Subscriptions registered now, and the bytes of the stored events (for
 * metrics). Any thread. */
size_t wal_subscribers(wal_t *w);
uint64_t wal_bytes(wal_t *w);

/* Trims what retention allows now (the background thread does it too).
 * On an error nothing more is trimmed and the events stay in place. */
reel_code_t wal_trim(wal_t *w, reel_status_t *st);

/* True once the subscription has caught up and follows live. */
int wal_sub_live(wal_sub_t *s);
/* Every event up to this revision was delivered or did not match: a
 * durable consumer may acknowledge it. */
uint64_t wal_sub_cursor(wal_sub_t *s);
/* The same, but -1 instead of waiting while a pump holds the subscription
 * (a catch-up's part): for periodic readers, which must not hold every
 * commit's publish behind it. */
int wal_sub_cursor_try(wal_sub_t *s, uint64_t *out);
/* Cancels and frees; waits for a pump or an end running on another thread
 * (no pump may start after). NULL ok; may be called inside the sink's end. */
void wal_sub_destroy(wal_sub_t *s);

#endif
