/*
 * kv/kv.h: versioned live state: namespaced keys with JSON values, a
 * per-key version that only grows, tombstones, compare-and-swap, per-key
 * history and push watches.
 *
 * Threading: kv_t is thread-safe. Writes go through the store's single
 * writer; reads go straight to storage. Watches follow the feed
 * (feed/feed.h): their sinks are called from the writer thread (live
 * events, in the publish step) and from whichever thread calls
 * kv_watch_pump() (replay); calls for one watch never overlap.
 *
 * Ownership: kv_entry_t and kv_event_t own their memory; release with
 * kv_entry_fini() / kv_event_fini(). Every string in them is NUL-terminated.
 * Their mem_ field is private to kv/ (the block the strings point into):
 * never read it; a filled entry or event has a version, an empty one 0.
 */
#ifndef REEL_KV_KV_H
#define REEL_KV_KV_H

#include <stddef.h>
#include <stdint.h>

#include "base/page.h"
#include "base/status.h"
#include "store/store.h"

#define KV_DEFAULT_MAX_NAMESPACE 256
#define KV_DEFAULT_MAX_KEY 1024
#define KV_DEFAULT_MAX_VALUE (1u << 20)
#define KV_DEFAULT_HISTORY_KEEP 100
#define KV_DEFAULT_DELETED_HISTORY_MS (7LL * 24 * 3600 * 1000)
#define KV_MAX_WRITER 256
#define KV_LIST_DEFAULT 100
#define KV_LIST_MAX 1000
/*
 * The bytes a namespace may hold, as reel_check_charset() reads them. A
 * namespace is one token of its WAL subjects (kv.<namespace>.<key>), so it
 * has no '.', '*' or '>' and no byte a NATS bucket name would refuse; '/'
 * and ':' are not subject syntax and let tenants nest.
 */
#define KV_NAMESPACE_CHARS "A-Za-z0-9_:/-"

typedef struct kv kv_t;
typedef struct kv_watch kv_watch_t;

typedef struct kv_limits {
    size_t max_namespace;  /* bytes; 0 = default */
    size_t max_key;        /* bytes; 0 = default */
    size_t max_value;      /* bytes; 0 = default */
    uint32_t history_keep; /* versions kept per key; 0 = all */
    /* A deleted key's history (its retained versions, the delete's own
     * event among them) is kept this long after the delete, then purged;
     * its tombstone stays, so a later set goes on from its version.
     * 0 = kept for ever. */
    int64_t deleted_history_ms;
    int64_t purge_interval_ms; /* how often to look; 0 = a tenth of that,
                                  within 100 ms and a minute */
} kv_limits_t;

/* The defaults above, history_keep and deleted_history_ms included. */
kv_limits_t kv_limits_default(void);

/* The module field of KV's changes (store_change_t): unique among
 * reeld's modules, and in memory only (nothing stored carries it). */
#define KV_MODULE_ID 1

/* KV's column families, for store_open(): "kv" (point lookups) and
 * "kv_history", ended by a NULL name. */
extern const store_cf_desc_t kv_cfs[];

typedef struct kv_entry {
    const char *ns, *key, *value, *writer;
    size_t ns_len, key_len, value_len, writer_len;
    uint64_t version;
    uint64_t revision;
    int64_t updated_at_ms;
    int deleted;
    char *mem_; /* private: owns the strings */
} kv_entry_t;

typedef enum kv_event_type {
    KV_EVENT_PUT = 1,
    KV_EVENT_DELETE = 2,
    KV_EVENT_BOOTSTRAP_DONE = 3,
} kv_event_type_t;

typedef struct kv_event {
    kv_event_type_t type;
    const char *ns, *key, *value, *prev_value, *writer;
    size_t ns_len, key_len, value_len, prev_value_len, writer_len;
    uint64_t version, prev_version, revision;
    int64_t ts_ms;
    int deleted;
    char *mem_; /* private: owns the strings */
} kv_event_t;

void kv_entry_fini(kv_entry_t *e);
void kv_event_fini(kv_event_t *ev);

/*
 * Creates the KV module over an open store, which must have been opened
 * with kv_cfs (FAILED_PRECONDITION naming the family otherwise). The
 * store's publish function must hand KV changes to kv_publish().
 */
reel_code_t kv_create(store_t *store, const kv_limits_t *limits, kv_t **out,
                      reel_status_t *st);
/* Stops the purge of deleted keys' history, which writes through the store:
 * before the store closes. Idempotent; kv_destroy does it too. */
void kv_stop(kv_t *kv);
/* Watches must all be destroyed first. Accepts NULL. */
void kv_destroy(kv_t *kv);

/*
 * Purges, now, the history of the keys deleted deleted_history_ms or more
 * before now_ms and not written since (kv/kv_purge.c), in commits of a
 * batch of keys each; *purged counts them. The module's own thread calls
 * it every purge interval. An error stops at the batch that failed, which
 * stays in place (nothing is skipped).
 */
reel_code_t kv_purge_deleted(kv_t *kv, int64_t now_ms, size_t *purged,
                             reel_status_t *st);

/* Deleted keys whose history this kv purged since it was created. */
uint64_t kv_purged_keys(kv_t *kv);

/* Brings what a data dir of an older store format (from) lacks up to date:
 * from 1 to 4, every tombstone moves apart from the live keys, so that a
 * listing does not walk them; from 1 to 3, it also gets its purge entry, at
 * its own time. In commits of a batch of tombstones each: a dir whose
 * upgrade stopped half way (reeld killed) still says its old format, and
 * the next start goes on. Not from the writer thread. */
reel_code_t kv_upgrade(kv_t *kv, int from, reel_status_t *st);

/* Watches registered now (a gauge for metrics). Any thread. */
size_t kv_watchers(kv_t *kv);

/* 1 and *ev filled if c is a KV change, 0 if it is another module's, -1 if
 * malformed. */
int kv_change_decode(const store_change_t *c, kv_event_t *ev);

/* The publish step's share of KV: call from the store's publish function. */
void kv_publish(kv_t *kv, const store_change_t *changes, size_t n);

/* ---- Writes --------------------------------------------------------------- */

typedef enum kv_precond {
    KV_PRECOND_NONE = 0,
    KV_PRECOND_ABSENT = 1,  /* missing or tombstoned */
    KV_PRECOND_VERSION = 2, /* current version == expected_version */
} kv_precond_t;

typedef struct kv_write_args {
    int is_delete;
    const char *ns, *key, *value, *writer;
    size_t ns_len, key_len, value_len, writer_len;
    kv_precond_t precond;
    uint64_t expected_version;
} kv_write_args_t;

typedef struct kv_write_result {
    reel_status_t status;
    kv_entry_t entry;      /* the new entry, or the tombstone written */
    uint64_t prev_version; /* 0 if the key never existed */
    int existed;           /* delete: whether there was a live value */
} kv_write_result_t;

/*
 * Runs on the store's writer thread with the outcome. res belongs to kv and
 * is freed after the call; take what you need (e.g. move the entry out).
 */
typedef void (*kv_write_done_fn)(void *arg, kv_write_result_t *res);

/*
 * Validates args (INVALID_ARGUMENT naming the field and the limit: the
 * namespace is 1-max_namespace bytes of KV_NAMESPACE_CHARS, the key has no
 * empty, "*" or ">" token), copies them, and queues the write. On OK, done
 * runs exactly once later; on any other code (bad input, queue full, store
 * failed) nothing was queued and done never runs. A set or a delete of a
 * live key writes a new version; deleting a missing or tombstoned key
 * writes nothing (existed = 0). A failed precondition writes nothing:
 * ALREADY_EXISTS for ABSENT on a live key, ABORTED for a version mismatch.
 */
reel_code_t kv_write_submit(kv_t *kv, const kv_write_args_t *args,
                            kv_write_done_fn done, void *arg,
                            reel_status_t *st);

/* The validation kv_write_submit() does, on its own (pure; for fuzzing and
 * tools). lim: as given to kv_create (0 fields = defaults). */
reel_code_t kv_validate_write(const kv_limits_t *lim,
                              const kv_write_args_t *args, reel_status_t *st);

/* The synchronous form (not from the writer thread). Fills *res. */
reel_code_t kv_write(kv_t *kv, const kv_write_args_t *args,
                     kv_write_result_t *res);
void kv_write_result_fini(kv_write_result_t *res);

/* ---- Reads ---------------------------------------------------------------- */

/*
 * OK with the live entry; NOT_FOUND for a missing key (entry zeroed) or a
 * tombstone (entry filled, deleted = 1); INVALID_ARGUMENT for bad names.
 * Reads and watches take a namespace outside KV_NAMESPACE_CHARS only while
 * it holds keys (written before the rule), so old data can be read out.
 */
reel_code_t kv_get(kv_t *kv, const char *ns, size_t ns_len, const char *key,
                   size_t key_len, kv_entry_t *entry, reel_status_t *st);

typedef struct kv_list_args {
    const char *ns, *prefix, *start_after;
    size_t ns_len, prefix_len, start_after_len;
    uint32_t limit; /* 0 = KV_LIST_DEFAULT; more than KV_LIST_MAX is invalid */
    int include_deleted;
    const reel_page_t *page; /* byte budget (base/page.h); NULL = none */
} kv_list_args_t;

/*
 * Entries of ns whose key starts with prefix and sorts after start_after,
 * in key order, at most limit of them and, with a page budget, no more
 * than fit in it (at least one). *out is a malloc'd array of *n entries:
 * free each with kv_entry_fini and the array with free(). *more tells
 * whether a next page exists; it starts after the last entry's key.
 */
reel_code_t kv_list(kv_t *kv, const kv_list_args_t *args, kv_entry_t **out,
                    size_t *n, int *more, reel_status_t *st);

/*
 * The retained versions of a key after from_version, in order, as PUT or
 * DELETE events with their previous values; bounded by limit and page as
 * kv_list is. Same array conventions. A from_version at or past the
 * current version (UINT64_MAX included) is an empty page, not an error: a
 * read skips nothing, and the next page after the last one is empty too.
 * From a version whose successor was trimmed (from_version > 0): OUT_OF_RANGE
 * naming the oldest retained version, as a watch from it. A history record
 * that is missing or corrupt is DATA_LOSS naming the version.
 */
reel_code_t kv_history(kv_t *kv, const char *ns, size_t ns_len,
                       const char *key, size_t key_len, uint64_t from_version,
                       uint32_t limit, const reel_page_t *page,
                       kv_event_t **out, size_t *n, int *more,
                       reel_status_t *st);

/* ---- Watches -------------------------------------------------------------- */

typedef enum kv_watch_start {
    KV_WATCH_SNAPSHOT = 0,
    KV_WATCH_NOW = 1,
    KV_WATCH_FROM_VERSION = 2,
    KV_WATCH_FROM_REVISION = 3,
} kv_watch_start_t;

typedef struct kv_watch_args {
    const char *ns, *key; /* key: exact, or a pattern (base/pattern.h) */
    size_t ns_len, key_len;
    kv_watch_start_t start;
    uint64_t from_version;
    uint64_t from_revision;
    /*
     * Watches created with the same non-NULL group share one sink that has
     * deliver_group(): an event that several of them receive live at the
     * same point goes to it once, for all of them. NULL: on its own.
     */
    void *group;
} kv_watch_args_t;

/*
 * What a sink keeps with one event while kv hands it to the watches it
 * reaches, so it encodes the event once for all of them (api/ packs a
 * ValueEvent once for every watcher of a key). Empty for each new event;
 * a sink that fills it sets bytes (malloc'd) and len, and kv frees bytes
 * with free() once every watch has had the event. A replayed event goes
 * to one watch, with a cache of its own.
 */
typedef struct kv_sink_cache {
    void *bytes;
    size_t len;
} kv_sink_cache_t;

typedef struct kv_watch_sink {
    /*
     * Takes one event: 0 if taken, non-zero if the sink is full and did not
     * take it. A full sink stops the push; the owner calls kv_watch_pump()
     * when it has room (or when woken), and the watch resumes from storage
     * after the last event taken, so nothing is missed or repeated.
     */
    int (*deliver)(void *arg, const kv_event_t *ev, kv_sink_cache_t *cache);
    /*
     * Optional (used for grouped watches): takes one event for the n
     * watches whose sink_args are args[0..n-1], all of one group, in no
     * particular order.
     * 0 if taken for all of them, non-zero if full: then none took it, and
     * each resumes from storage as after a full deliver(). Called by the
     * publish step with no watch's lock held.
     */
    int (*deliver_group)(void *const *args, size_t n, const kv_event_t *ev,
                         kv_sink_cache_t *cache);
    /*
     * The watch cannot continue: it fell behind retained history
     * (OUT_OF_RANGE naming the last revision delivered), or a stored
     * record it owes could not be read (DATA_LOSS if corrupt or missing,
     * INTERNAL for a failed read, RESOURCE_EXHAUSTED out of memory; the
     * message names the key, version or revision). Called at most once,
     * with no kv lock held; the owner may call kv_watch_cancel() in it,
     * and must still call kv_watch_destroy() later (it may do so in it).
     */
    void (*end)(void *arg, const reel_status_t *st);
    /*
     * Optional: the watch dropped out of live delivery (its sink was full
     * or refused, or an event could not be decoded) and needs a
     * kv_watch_pump() that a drain might never bring (a sink that refused
     * with nothing queued has no drain coming). Called from the publish
     * step with kv locks held: it must not block nor call into kv; the
     * owner pumps soon from its own thread.
     */
    void (*wake)(void *arg);
} kv_watch_sink_t;

/*
 * Validates args and registers a watch. Nothing is delivered until the
 * first kv_watch_pump(). Errors: INVALID_ARGUMENT (bad names, malformed
 * pattern, FROM_VERSION on a pattern, from_revision past the head revision,
 * naming it), OUT_OF_RANGE (from_revision or from_version no longer
 * retained, naming the oldest retained). A from_version at or past the
 * current version (UINT64_MAX included) replays nothing: BOOTSTRAP_DONE,
 * then live.
 */
reel_code_t kv_watch_create(kv_t *kv, const kv_watch_args_t *args,
                            const kv_watch_sink_t *sink, void *sink_arg,
                            kv_watch_t **out, reel_status_t *st);

/*
 * Delivers what the watch owes from storage (snapshot, replay, catch-up)
 * until the sink is full or the watch is live again. Any thread; calls for
 * one watch are serialised, and a call while another runs returns at once.
 */
void kv_watch_pump(kv_watch_t *w);

/* Stops deliveries; idempotent, any thread, even inside the sink's end
 * (not inside deliver, deliver_group or wake: kv locks are held there). */
void kv_watch_cancel(kv_watch_t *w);

/*
 * Cancels and frees; waits for a pump or an end running on another
 * thread. The caller guarantees no thread will enter kv_watch_pump() for
 * w afterwards. Accepts NULL; may be called inside the sink's end.
 */
void kv_watch_destroy(kv_watch_t *w);

#endif
