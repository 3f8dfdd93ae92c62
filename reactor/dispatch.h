/*
 * reactor/dispatch.h: what reel-reactor decides without a server (private
 * to reactor/): reading a run from a WAL event or a ListRunsToRecover
 * answer, whether it is claimable, the dispatch's id and body, and the
 * table of dispatches held.
 *
 * Runs are read from their wire bytes, not through protobuf-c's generated
 * struct: the fields the contract of issue 21 adds to reel.v1.Run
 * (attempt = 18, not_before_ms = 19, reason = 20) are read whether or not
 * the generated code of this build knows them, so a reactor built before
 * the server side works against a reeld built after, and the other way
 * round (absent fields read 0 and "").
 *
 * A dispatch is one run at one (lease_epoch, attempt): its id,
 * "<run_id>:<epoch>:<attempt>", is the webhook-id of every retry, so a
 * worker can deduplicate by it. Two events naming the same id (the WAL
 * event and the sweep, or an event replayed after a restart) make one
 * dispatch. A dispatch for a newer epoch or attempt of the same run is
 * another dispatch: the older one is harmless (the worker's ClaimRun with
 * the older expected_epoch is refused).
 *
 * Pure; the table is not thread-safe (the reactor holds its lock).
 */
#ifndef REEL_REACTOR_DISPATCH_H
#define REEL_REACTOR_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <uthash.h>

#include "sink/http.h"
#include "sink/window.h"

#define REACTOR_RUN_ID_MAX 128
#define REACTOR_ID_MAX (REACTOR_RUN_ID_MAX + 48)

/* reel.v1.Run.Status values the reactor looks at. */
#define REACTOR_RUNNABLE 1
#define REACTOR_RUNNING 2
/* reel.v1.Event.Type RUN_CHANGED */
#define REACTOR_RUN_CHANGED 2

/* The fields of a reel.v1.Run the reactor needs; the strings point into the
 * scanned bytes (not NUL-terminated). */
typedef struct reactor_run {
    const char *run_id;
    size_t run_id_len;
    const char *app;
    size_t app_len;
    int status;
    uint64_t epoch;          /* lease_epoch */
    uint32_t attempt;
    int64_t not_before_ms;
    const char *reason;
    size_t reason_len;
} reactor_run_t;

/* Reads a reel.v1.Run from its wire bytes. 0, or -1 when they are not a
 * well-formed message or lack a run_id. */
int reactor_run_scan(const uint8_t *b, size_t len, reactor_run_t *out);

/* Reads a reel.v1.Event: its type, ts_ms and, for RUN_CHANGED, the run's
 * bytes (*run NULL otherwise). 0, or -1 when malformed (a RUN_CHANGED
 * event without a run included). */
int reactor_event_scan(const uint8_t *b, size_t len, int *type,
                       int64_t *ts_ms, const uint8_t **run, size_t *run_len);

/* Calls fn on the bytes of each run of a ListRunsToRecoverResponse and
 * returns its page cursor (next_start_after, borrowed) and `more`. 0, or -1
 * when malformed (or fn returned non-zero). */
int reactor_recover_scan(const uint8_t *b, size_t len,
                         int (*fn)(void *arg, const uint8_t *run, size_t n),
                         void *arg, const char **next, size_t *next_len,
                         int *more);

/*
 * Whether a run event makes the run claimable now, per the contract: a
 * RUN_CHANGED event to RUNNABLE whose not_before_ms is at most the event's
 * ts_ms (a later one is a backoff; the timer's BACKOFF_ENDED event comes
 * when it ends).
 */
int reactor_event_claimable(const reactor_run_t *r, int64_t ts_ms);

/*
 * Whether a run the sweep found (ListRunsToRecover: RUNNABLE, or RUNNING
 * with an expired lease) is claimable at now_ms (the reactor's wall
 * clock): RUNNING ones are (the server says their lease expired), RUNNABLE
 * ones once not_before_ms has passed.
 */
int reactor_sweep_claimable(const reactor_run_t *r, int64_t now_ms);

/* "<run_id>:<epoch>:<attempt>" into buf (REACTOR_ID_MAX). */
void reactor_dispatch_id(const reactor_run_t *r, char *buf, size_t cap);

/*
 * The request body, malloc'd JSON (NULL when out of memory):
 *   {"type": "reel.run_claimable", "timestamp": "<ISO time of ts_ms>",
 *    "data": {"run_id": ..., "app": ..., "attempt": N, "epoch": N,
 *             "reason": ..., "not_before_ms": N, "revision": N,
 *             "source": "event" | "sweep"}}
 * revision is the event's (0 from the sweep). 64-bit numbers are written
 * exactly.
 */
char *reactor_dispatch_body(const reactor_run_t *r, uint64_t revision,
                            int64_t ts_ms, int from_sweep, size_t *len);

/* ---- The table of dispatches ------------------------------------------------ */

typedef struct reactor_dispatch {
    UT_hash_handle hh;            /* keyed by id */
    char id[REACTOR_ID_MAX];
    char run_id[REACTOR_RUN_ID_MAX + 1];
    size_t app;                   /* index in the configuration */
    char *body;
    size_t len;
    /* The window positions of the events this dispatch settles (none for
     * one the sweep found). */
    uint64_t *pos;
    size_t n_pos, cap_pos;
    struct reactor_dispatch *next; /* in arrival order */

    /* The engine's: attempts and the request. */
    unsigned failures;
    int64_t first_ms, first_wall_ms, last_wall_ms; /* 0 before the first */
    int64_t next_ms;              /* monotonic: not before */
    int in_flight;
    CURL *easy;
    struct curl_slist *hdrs;
    char errbuf[CURL_ERROR_SIZE];
    sink_http_answer_t ans;       /* the last answer's headers */
    char last_error[256];
    /* Given up: its dead letter is still to be stored (by the engine's
     * loop, at next_ms), never sent to its worker again. */
    int dead;
} reactor_dispatch_t;

typedef struct reactor_table {
    reactor_dispatch_t *by_id;    /* uthash head */
    reactor_dispatch_t *first, *last;
    size_t n;
} reactor_table_t;

/* The dispatch called id, or NULL. */
reactor_dispatch_t *reactor_table_find(reactor_table_t *t, const char *id);

/*
 * The dispatch of run r (from an event at window position pos, or the
 * sweep: pos UINT64_MAX): an existing one with the same id takes the
 * position too; else a new one is added at the end, with its body. NULL
 * when out of memory (nothing changed). *added says which.
 */
reactor_dispatch_t *reactor_table_offer(reactor_table_t *t,
                                        const reactor_run_t *r, size_t app,
                                        uint64_t pos, uint64_t revision,
                                        int64_t ts_ms, int *added);

/* Takes d out of the table (the caller frees it). */
void reactor_table_remove(reactor_table_t *t, reactor_dispatch_t *d);

/* Frees d and what it holds (its curl handle too). NULL is fine. */
void reactor_dispatch_free(reactor_dispatch_t *d);

/* Frees every dispatch. */
void reactor_table_fini(reactor_table_t *t);

/* ---- Events held, and what may be acknowledged -------------------------------
 *
 * An event that makes a run claimable holds a place in the window (its
 * revision) until its dispatch is settled; others are passed over at once.
 * The window's frontier (sink_window_advance) is then the highest revision
 * below which every event is settled or passed over: what the consumer may
 * acknowledge.
 */

/*
 * Holds the event at revision (type, ts_ms) for run r: a window place, in
 * the dispatch of its id (new or existing, see reactor_table_offer). The
 * caller checked the window has room. NULL when out of memory (nothing
 * changed).
 */
reactor_dispatch_t *reactor_hold(reactor_table_t *t, sink_window_t *w,
                                 const reactor_run_t *r, size_t app,
                                 uint64_t revision, int type, int64_t ts_ms,
                                 int *added);

/* d is settled: its window places are done and it leaves the table (the
 * caller frees it). */
void reactor_settle(reactor_table_t *t, sink_window_t *w,
                    reactor_dispatch_t *d);

#endif
