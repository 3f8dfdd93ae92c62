/*
 * store/store.h: reel's storage: one RocksDB, one writer, one global
 * revision.
 *
 * A store is one RocksDB database in a data dir, with the column families
 * its modules declare. Reads go straight to RocksDB from any thread. Every
 * mutation goes through the single writer: a caller submits a request (an
 * apply function and its argument) to a bounded queue; the writer thread
 * takes what is queued as a group, runs each request's apply
 * function in order against a transaction that sees the group's earlier
 * writes, assigns each committed change the next global revision, writes
 * the group as one synced WriteBatch, hands the group's changes to the
 * publish function, and only then completes the requests.
 *
 * The writer is a role, held by one thread at a time: the writer thread,
 * or, when that thread sleeps with nothing queued and the last group held
 * one request (one caller writing at a time), the submitting thread
 * itself, which then runs its request as a group inside store_submit()
 * and spares it the writer's wake-up (unless store_opts.writer_only).
 * Groups run one at a time, in submission order, whichever thread runs
 * them. "The writer" below means whichever thread holds the role.
 *
 * Threading: store_t is thread-safe. A store_txn_t exists only inside an
 * apply function, on the writer; it must not escape it. Apply, done and
 * publish functions run on the writer and must not block, nor wait for
 * another store request (that would deadlock the writer). As done may run
 * before store_submit() returns, a caller must not hold, while it
 * submits, a lock that its done (or any apply or publish function) takes.
 *
 * Failure is sticky: once a write or fsync fails, the store answers every
 * later submit with UNAVAILABLE and never acknowledges a write that is not
 * durable. Reads keep working.
 */
#ifndef REEL_STORE_STORE_H
#define REEL_STORE_STORE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "metrics/metrics.h"

/*
 * The on-disk format this build writes. It also opens the formats from
 * STORE_FORMAT_OLDEST on, and store_format_upgrade() marks such a data dir
 * with this one once the modules have brought their records up to it:
 * reelds older than the format then refuse it instead of misreading it.
 *   1  the records up to 2026-12-05
 *   2  the same records (a format 1 dir is upgraded by relabelling it):
 *      the version older reelds refuse, and reel's clock (meta/clock)
 *   3  the journal's index of active runs by app (journal_upgrade() makes
 *      it for an older dir)
 *   4  the journal's index of every run by app, and the KV's purge entries
 *      of deleted keys (journal_upgrade(), kv_upgrade())
 *   5  the KV's tombstones apart from its live keys (kv_upgrade())
 *   6  the journal's indexes of runs by status (journal_upgrade())
 *   7  the journal's index of the runs of a session that have not ended
 *      (journal_upgrade())
 */
#define STORE_FORMAT_VERSION 7

/* A file of a STORE_CF_LOOKUP family holding this many deletes among any
 * window of entries in a row is compacted soon (store.c). */
#define STORE_DELETES_WINDOW 4096
#define STORE_DELETES_TRIGGER 2048
#define STORE_FORMAT_OLDEST 1

/* The longest column family name a module may declare. */
#define STORE_CF_NAME_MAX 64

/* A bulk family's values of this many bytes and more go to blob files;
 * smaller ones stay in its table files. */
#define STORE_BULK_MIN_BLOB 4096

/*
 * Column families. The store keeps one of its own, "meta"; every other one
 * is declared by the module that owns it (store_opts_t.cfs) and reached
 * through the handle store_cf_lookup() gives for its name. The store names
 * no module: what it knows of a family is its name and its kind.
 */
typedef enum store_cf_kind {
    /* The options every family gets: bloom filters in table files, LZ4,
     * one memtable budget shared by all families. */
    STORE_CF_PLAIN = 0,
    /* Point lookups: read by key before most writes, where the key is
     * often new (a first set, an idempotency key, a new run or signal). A
     * bloom filter over the memtable answers "not there" without
     * searching it. */
    STORE_CF_LOOKUP,
    /* A tail: read in long forward passes. Its iterators read ahead and
     * keep their blocks out of the block cache the live keys use. */
    STORE_CF_TAIL,
    /*
     * Bulk bytes (a file's chunks), written outside the writer with
     * store_bulk_put() and read by range. Values of 4 KiB or more go to
     * blob files (RocksDB's integrated BlobDB, garbage-collected), so
     * compaction moves small references instead of rewriting the bytes;
     * its own 16 MiB write buffer; no bloom filters.
     */
    STORE_CF_BULK,
} store_cf_kind_t;

/* One column family a module declares. Lists of them end with a NULL name. */
typedef struct store_cf_desc {
    const char *name;
    store_cf_kind_t kind;
} store_cf_desc_t;

typedef struct store store_t;
typedef struct store_txn store_txn_t;
typedef struct store_iter store_iter_t;
typedef struct store_snapshot store_snapshot_t;
typedef struct store_req store_req_t;
typedef struct store_cf store_cf_t;

/*
 * One committed change, as the publish function sees it. `event` points into
 * storage owned by the store and is valid only during the publish call.
 */
typedef struct store_change {
    uint64_t revision;
    uint32_t module; /* the emitting module's id: the store only carries it */
    uint32_t type;   /* the module's own event type */
    int64_t ts_ms;   /* the group's commit time */
    const void *event;
    size_t len;
} store_change_t;

/* Called on the writer after each successful commit. */
typedef void (*store_publish_fn)(void *arg, const store_change_t *changes,
                                 size_t n);

/*
 * Called on the writer after a group's requests applied and before
 * its write, with the group's changes: what it writes through txn commits
 * in the same batch (the WAL stores its events this way). Returning an
 * error fails the whole group, which writes nothing.
 */
typedef reel_code_t (*store_before_commit_fn)(void *arg, store_txn_t *txn,
                                              const store_change_t *changes,
                                              size_t n, reel_status_t *st);

/*
 * Called by tests before each group's write; a non-zero answer is treated
 * exactly like a failed write or fsync. NULL in production.
 */
typedef int (*store_fault_fn)(void *arg);

/*
 * Called once, on the writer, when the store stops accepting
 * writes (why: the sticky error). It must not block or submit requests.
 */
typedef void (*store_failed_fn)(void *arg, const reel_status_t *why);

/*
 * The writer's alarm (durable timers, timers/): called on the writer
 * thread as the last request of a group, once the time last given to
 * store_wake_at() has come, with a transaction like an apply function's.
 * It is disarmed before the call, so it must arm again (store_wake_at)
 * for whatever is still to come. Its writes and changes commit with the
 * group; an error rolls back its writes alone, is logged, and the alarm
 * is armed again a second later (what it was to do is still stored).
 */
typedef reel_code_t (*store_alarm_fn)(void *arg, store_txn_t *txn,
                                      reel_status_t *st);

typedef struct store_opts {
    const char *data_dir;    /* required; created if missing */
    /*
     * The modules' column families: lists of descriptors, each ended by
     * one with a NULL name, the lists themselves ended by NULL (NULL: no
     * family but the store's own). A name is 1-STORE_CF_NAME_MAX bytes,
     * declared once, and neither "meta" nor "default" (RocksDB's own).
     * Families found in the data dir and declared by no list stay open,
     * untouched. The descriptors are copied.
     */
    const store_cf_desc_t *const *cfs;
    size_t queue_capacity;   /* queued requests; 0 = 4096 */
    /* Bytes the queued requests may hold together (store_req_t.bytes);
     * 0 = 64 MiB. A request is always taken when none is queued, however
     * large: the budget bounds the queue's memory, not a request's size. */
    size_t queue_bytes;
    size_t max_group;        /* requests per commit group; 0 = 1024 */
    store_publish_fn publish; /* may be NULL */
    void *publish_arg;
    store_before_commit_fn before_commit; /* may be NULL */
    void *before_commit_arg;
    store_fault_fn fault;    /* tests only */
    void *fault_arg;
    store_failed_fn on_failure; /* may be NULL */
    void *on_failure_arg;
    store_alarm_fn alarm; /* may be NULL: store_wake_at() then does nothing */
    void *alarm_arg;
    /* RocksDB's flushes and compactions (table and blob files, a bulk
     * family's chunks among them) write at most this many bytes a second,
     * up to STORE_BACKGROUND_RATE_MAX (more is held there); 0: no limit.
     * Below the disk's own rate, synced commits keep their latency while
     * bulk bytes are written. */
    uint64_t background_write_rate;
    /*
     * With background_write_auto, background_write_rate is only the
     * ceiling (0: the disk's), and the rate follows the commits: it halves
     * while the writer's synced commits take longer than they usually do
     * (a flush or compaction is in their way) and grows back while they
     * do not, or while nothing waits on them.
     */
    int background_write_auto;
    /*
     * Where the store registers its metrics (NULL: none): commits, group
     * sizes, commit latency, queue depth, revision, writes refused and
     * the RocksDB properties that explain a stall (docs/operations.md).
     * Registered under the store as owner and dropped by store_close(),
     * so the registry must outlive the store.
     */
    metrics_registry_t *metrics;
    /*
     * 1: only the writer thread runs groups, never a submitter. Set it
     * when one thread makes every submit (reeld with a single poller):
     * that thread, running a group, could take no new request meanwhile,
     * so nothing would ever queue behind it and every request would be
     * written alone, one sync each, however many were waiting.
     */
    int writer_only;
    /*
     * Bytes kept free on the data dir's filesystem (0: no floor). Below
     * it, a request that adds data (store_req_t.grows) and a bulk write
     * are refused with RESOURCE_EXHAUSTED before anything is written,
     * until space is freed; other requests (deletes, the modules' own
     * writes) go on. So a filling disk stops what fills it, with a clear
     * answer, well before a failed write stops every write.
     */
    uint64_t min_free_bytes;
} store_opts_t;

/*
 * Opens (creating if needed) the store in opts->data_dir, with the column
 * families opts->cfs declares (created if missing), and starts the writer.
 * Refuses, without touching the directory, a data dir that is not a reel
 * data dir or was written by another format version, or one that another
 * process holds; and, before anything, a malformed declaration
 * (INVALID_ARGUMENT naming the family). On success *out must be closed
 * with store_close().
 */
reel_code_t store_open(const store_opts_t *opts, store_t **out,
                       reel_status_t *st);

/* The format the data dir had when it was opened: STORE_FORMAT_VERSION, or
 * an older one to upgrade (modules read it to bring their records up). */
int store_format_opened(const store_t *s);

/*
 * Marks an older data dir with STORE_FORMAT_VERSION, synced: meta/format,
 * then the FORMAT file (a crash between leaves FORMAT old, and the next
 * start upgrades again). Call once every module has started. Nothing to do
 * for a data dir already at the version.
 */
reel_code_t store_format_upgrade(store_t *s, reel_status_t *st);

/*
 * Stops accepting requests (UNAVAILABLE from then on) and lets the writer
 * commit and complete everything already queued; reads still work. For a
 * shutdown in which the calls those requests complete must be freed while
 * the database is still open (their cleanups release snapshots and
 * iterators). Idempotent; store_close() does it first. Accepts NULL.
 */
void store_stop(store_t *store);

/*
 * store_stop(), then closes RocksDB and frees the store. Accepts NULL.
 */
void store_close(store_t *store);

/* The last committed revision (0 before any change). Any thread. */
uint64_t store_revision(store_t *store);

/*
 * Groups that failed whole while the store went on writing (a
 * before_commit hook's error, no memory to join the batch): nothing of
 * them was written, though their requests applied. A module that keeps
 * memory of its own on the writer's side while applying (a hint where
 * to seek) compares this with what it saw last, and forgets what such a
 * group may have taught it. Whoever applies (the writer's role) only.
 */
uint64_t store_groups_aborted(const store_t *store);

/*
 * Arms the writer's alarm for wall-clock time due_ms, unless it is already
 * armed for earlier: the alarm runs in the first group that starts at or
 * after due_ms (a group of its own when nothing else is queued). Any
 * thread; costs an atomic compare when it changes nothing. The writer
 * waits for the earliest armed time in a timed wait on its queue, so an
 * idle store does not spin and a busy one reads no clock it did not read
 * already.
 */
void store_wake_at(store_t *store, int64_t due_ms);
/* The writer's figures since the store opened (for status and metrics). */
typedef struct store_stats {
    uint64_t commits;        /* groups written and synced */
    uint64_t requests;       /* requests those groups held */
    uint64_t commit_ns;      /* time of their synced writes, summed */
    uint64_t led;            /* groups a submitter ran (store_submit) */
    size_t queue_depth;      /* requests queued now */
    size_t queue_bytes;      /* the bytes they hold (store_req_t.bytes) */
    int writer_idle;         /* the writer thread sleeps, waiting for work */
    int64_t background_rate; /* bytes a second flushes and compactions may
                                write now; 0: no limit */
    uint64_t disk_free;      /* bytes free on the data dir's filesystem */
    int disk_low;            /* below store_opts_t.min_free_bytes */
} store_stats_t;

/* Any thread. */
void store_stats(store_t *store, store_stats_t *out);

/*
 * The background write rate that follows the commits
 * (background_write_auto), as one decision a tick (store.c's govern()
 * measures; this decides, and is here to be tested on its own).
 */
#define STORE_BACKGROUND_RATE_MAX ((uint64_t)4000000000) /* bytes a second */
#define STORE_GOV_START ((int64_t)32000000) /* bytes a second */
#define STORE_GOV_FLOOR ((int64_t)8000000)
#define STORE_GOV_MIN_GROUPS 8

typedef struct store_gov {
    int64_t ceiling, rate; /* bytes a second */
    double usual_ns;       /* a commit's usual time; 0: not known yet */
    int bulk;              /* the last tick had a bulk writer */
} store_gov_t;

/*
 * The next rate, given the tick's commits (groups of them, mean_ns long
 * on average, the longest max_ns) and whether a bulk writer was at work:
 * without one, the ceiling (what is left is compaction, which the commits
 * need done; the tick's mean, from STORE_GOV_MIN_GROUPS commits up, is
 * then the usual time). With one: doubled while fewer than
 * STORE_GOV_MIN_GROUPS commits came (nobody to protect); at the first
 * tick with it and commits, STORE_GOV_START (at most), so that an upload
 * never starts at the disk's full speed beside commits; after that, cut
 * when the commits took half again as long
 * as usual on average or one took four times as long (to STORE_GOV_START
 * from above it, else halved, never under STORE_GOV_FLOOR); else a
 * quarter more, up to the ceiling. "Usual" follows the lowest mean seen,
 * drifting up 1% a tick so that it follows a load that changes.
 */
int64_t store_gov_next(store_gov_t *g, int bulk, uint64_t groups,
                       double mean_ns, uint64_t max_ns);

/* OK, or the sticky error (UNAVAILABLE) that stopped writes, copied into
 * st when st is not NULL. */
reel_code_t store_health(store_t *store, reel_status_t *st);

/*
 * The handle of the column family `name`, in *out: valid until
 * store_close(). FAILED_PRECONDITION, naming it, when no list given to
 * store_open() declared it. Modules look their families up once, when
 * they are created. Any thread.
 */
reel_code_t store_cf_lookup(store_t *store, const char *name,
                            store_cf_t **out, reel_status_t *st);

/* The column family's name, e.g. "kv_history". */
const char *store_cf_name(const store_cf_t *cf);

/* ---- Writer requests ---------------------------------------------------- */

/*
 * Runs on the writer. Reads and writes go through txn. Returning a
 * code other than OK (with st set) fails this request alone: everything it
 * wrote or emitted is rolled back and the rest of the group goes on.
 */
typedef reel_code_t (*store_apply_fn)(store_txn_t *txn, void *arg,
                                      reel_status_t *st);

/* Runs on the writer once the request's outcome is final: perhaps on the
 * submitting thread, before store_submit() returns. */
typedef void (*store_done_fn)(store_req_t *req);

/*
 * A request, in the caller's storage; it must stay valid until done runs.
 * The caller sets apply, done and arg; the store sets the rest.
 */
struct store_req {
    store_apply_fn apply;
    store_done_fn done;
    void *arg;
    /* What it holds while queued (its module's copy of the request): the
     * queue's memory is bounded by these (store_opts_t.queue_bytes). */
    size_t bytes;
    /* 1: a client's write that adds data, refused while the disk is below
     * store_opts_t.min_free_bytes; 0: a delete or the modules' own. */
    int grows;
    /* Outcome, valid in done: */
    reel_status_t status;    /* OK, the apply error, or UNAVAILABLE */
    uint64_t first_revision; /* 0 if the request committed no change */
    uint64_t last_revision;
};

/*
 * Queues req (or runs it at once, on this thread: see the top). Returns OK
 * and calls req->done exactly once, later or already; or returns
 * RESOURCE_EXHAUSTED (queue full: of requests, or of their bytes; or the
 * disk below min_free_bytes, for a request that grows) or UNAVAILABLE
 * (store failed or closing)
 * at once, with req->status set and done never called.
 */
reel_code_t store_submit(store_t *store, store_req_t *req);

/*
 * Submits and waits: the synchronous form for tools and tests. On success
 * *last_revision (if not NULL) is the request's last revision, or 0.
 * Must not be called from the writer (an apply, done or publish function).
 */
reel_code_t store_exec(store_t *store, store_apply_fn apply, void *arg,
                       uint64_t *last_revision, reel_status_t *st);

/* ---- Inside an apply function (on the writer only) ---------------------- */

/*
 * Reads key as this transaction sees it (the database plus the group's
 * earlier writes). OK with *val (malloc'd, free() it) and *vlen, NOT_FOUND,
 * or INTERNAL.
 */
reel_code_t store_txn_get(store_txn_t *txn, store_cf_t *cf, const void *key,
                          size_t klen, char **val, size_t *vlen,
                          reel_status_t *st);
void store_txn_put(store_txn_t *txn, store_cf_t *cf, const void *key,
                   size_t klen, const void *val, size_t vlen);
void store_txn_delete(store_txn_t *txn, store_cf_t *cf, const void *key,
                      size_t klen);

/*
 * Blind writes: committed with the group like the two above, but invisible
 * to store_txn_get and store_txn_iter until the commit, and cheaper (they
 * skip the batch's index). For keys no request reads inside a transaction,
 * such as events stored by revision. A key written blind in a group must be
 * written only blind (puts and deletes) in that group, so its writes stay in
 * order.
 */
void store_txn_put_blind(store_txn_t *txn, store_cf_t *cf, const void *key,
                         size_t klen, const void *val, size_t vlen);
void store_txn_delete_blind(store_txn_t *txn, store_cf_t *cf, const void *key,
                            size_t klen);

/*
 * Records one committed change and returns its revision: the next global
 * revision. The event bytes are copied. If the request later fails, the
 * revision is given back, so revisions stay gapless. If the copy cannot be
 * made (out of memory) the request fails with RESOURCE_EXHAUSTED once its
 * apply returns, and nothing it wrote commits.
 */
uint64_t store_txn_emit(store_txn_t *txn, uint32_t module, uint32_t type,
                        const void *event, size_t len);

/*
 * A blind delete of every key in [begin, end) (a range tombstone: one
 * record however many keys it covers). Same rules as the blind writes.
 */
void store_txn_delete_range_blind(store_txn_t *txn, store_cf_t *cf,
                                  const void *begin, size_t blen,
                                  const void *end, size_t elen);

/*
 * Adds delta to *counter once the group is written and synced, and never
 * if this request fails (or the group does): a figure kept beside the
 * data (runs per status, timers stored) moves with what commits, and only
 * with it. Applied with one relaxed atomic add each, on the writer
 * thread, before the publish step. Out of memory fails the request as an
 * emit's does. counter must outlive the store's writer.
 */
void store_txn_count(store_txn_t *txn, _Atomic int64_t *counter,
                     int64_t delta);

/* The revision the next emit would get. */
uint64_t store_txn_next_revision(store_txn_t *txn);

/* The group's commit time, the same for every request in the group. */
int64_t store_txn_now_ms(store_txn_t *txn);

/* An iterator that sees the database plus the group's earlier writes. */
store_iter_t *store_txn_iter(store_txn_t *txn, store_cf_t *cf);

/* store_txn_iter() for a walk of the keys that start with prefix: its read
 * of the database stops at the prefix's end, so it never steps over the
 * deletes past it (the group's own writes past it may still show: stop at
 * the first key without the prefix). NULL when out of memory. */
store_iter_t *store_txn_iter_prefix(store_txn_t *txn, store_cf_t *cf,
                                    const void *prefix, size_t len);

/* ---- Reads (any thread) -------------------------------------------------- */

/* Reads key from committed state: OK, NOT_FOUND or INTERNAL. */
reel_code_t store_get(store_t *store, store_cf_t *cf, const void *key,
                      size_t klen, char **val, size_t *vlen,
                      reel_status_t *st);

/*
 * A consistent view of committed state and the revision it includes, in
 * *out; release it with store_snapshot_release(). RESOURCE_EXHAUSTED (out
 * of memory), or INTERNAL / DATA_LOSS when the revision cannot be read,
 * with *out NULL: never a snapshot at a revision it does not hold.
 */
reel_code_t store_snapshot_create(store_t *store, store_snapshot_t **out,
                                  reel_status_t *st);
uint64_t store_snapshot_revision(const store_snapshot_t *snap);
/* store_get() at snap. */
reel_code_t store_snapshot_get(store_t *store, const store_snapshot_t *snap,
                               store_cf_t *cf, const void *key, size_t klen,
                               char **val, size_t *vlen, reel_status_t *st);
void store_snapshot_release(store_t *store, store_snapshot_t *snap);

/* An iterator over committed state, at snap if not NULL. */
store_iter_t *store_iter_create(store_t *store, store_cf_t *cf,
                                const store_snapshot_t *snap);
/*
 * The same, over the keys below upper only (copied): a walk of a prefix
 * ends at the first key past it, instead of stepping past every deleted
 * key after the prefix that the tree still holds on its way to the next
 * live one.
 */
store_iter_t *store_iter_create_below(store_t *store, store_cf_t *cf,
                                      const store_snapshot_t *snap,
                                      const void *upper, size_t ulen);
/*
 * Reads the first of two keys of cf that exists (*which: 0 or 1) into *val
 * (malloc'd): in txn when it is not NULL; else at snap; else in committed
 * state, both read at one snapshot, so that a record a commit moves from
 * one key to the other is found once. OK, NOT_FOUND (neither) or INTERNAL.
 */
reel_code_t store_get_first(store_t *store, store_txn_t *txn,
                            const store_snapshot_t *snap, store_cf_t *cf,
                            const void *k0, size_t l0, const void *k1,
                            size_t l1, char **val, size_t *vlen, int *which,
                            reel_status_t *st);

/*
 * A walk of two places of one family merged in key order: place i holds
 * the keys that start with base[i], compared past their first skip[i]
 * bytes, where the two places differ (a module keeping its deleted records
 * apart from its live ones; a key is in one place at most). The iterators
 * it[i] are the caller's, seeked, and moved on with store_iter_next() past
 * the key taken; it[1] may be NULL (one place).
 */
typedef struct store_merge {
    store_iter_t *it[2];
    const char *base[2];
    size_t base_len[2], skip[2];
} store_merge_t;

/* The smaller current key of the two places, past its head, with its
 * value and place (0 or 1); NULL when both are past their base. */
const char *store_merge_key(store_merge_t *m, size_t *klen, const char **val,
                            size_t *vlen, int *place);
/* OK, or the first iterator's error. */
reel_code_t store_merge_status(store_merge_t *m, reel_status_t *st);

/* store_iter_create_below() over the keys that start with prefix: NULL
 * when out of memory. It still needs a seek. */
store_iter_t *store_iter_prefix(store_t *store, store_cf_t *cf,
                                const store_snapshot_t *snap,
                                const void *prefix, size_t len);

/* The least key above every key starting with prefix, into out (room for
 * len bytes): prefix with its last byte below 0xff raised by one and what
 * follows dropped. Returns its length; 0 when there is none (an empty
 * prefix, or all 0xff). */
size_t store_prefix_end(const void *prefix, size_t len, char *out);
void store_iter_seek(store_iter_t *it, const void *key, size_t klen);
void store_iter_seek_first(store_iter_t *it);
int store_iter_valid(store_iter_t *it);
void store_iter_next(store_iter_t *it);
/* Valid until the iterator moves or is destroyed. */
const char *store_iter_key(store_iter_t *it, size_t *klen);
const char *store_iter_value(store_iter_t *it, size_t *vlen);
/* OK, or INTERNAL if the iteration stopped on an error. */
reel_code_t store_iter_status(store_iter_t *it, reel_status_t *st);
void store_iter_destroy(store_iter_t *it);

/* ---- Writes outside the writer (any thread) ------------------------------ */

/*
 * For bytes too large to pass through the group commit (a file's chunks):
 * each call writes at once, beside the writer, and commits nothing that
 * carries a revision. The writer's commits go on meanwhile. All refuse
 * with UNAVAILABLE once the store failed, and answer INTERNAL (naming the
 * family) when RocksDB fails; a failure here does not fail the store.
 */

/*
 * Writes key into a STORE_CF_BULK family without RocksDB's log: the bytes
 * are not durable, and not in the log every synced commit must write out,
 * until store_bulk_sync() of that family returns OK. A crash before it
 * loses them; nothing else. RESOURCE_EXHAUSTED while the disk is below
 * store_opts_t.min_free_bytes.
 */
reel_code_t store_bulk_put(store_t *store, store_cf_t *cf, const void *key,
                           size_t klen, const void *val, size_t vlen,
                           reel_status_t *st);

/* Makes every store_bulk_put() into cf that returned before it durable:
 * flushes the family's memtable to synced table and blob files. */
reel_code_t store_bulk_sync(store_t *store, store_cf_t *cf, reel_status_t *st);

/* Writes key -> val through RocksDB's log, synced before it returns. */
reel_code_t store_put_synced(store_t *store, store_cf_t *cf, const void *key,
                             size_t klen, const void *val, size_t vlen,
                             reel_status_t *st);

/*
 * Deletes [begin, end) in range_cf and then, if key is not NULL, key in
 * key_cf, as one logged write (not synced: what it deletes must be safe
 * to delete again after a crash).
 */
reel_code_t store_delete_range(store_t *store, store_cf_t *range_cf,
                               const void *begin, size_t blen,
                               const void *end, size_t elen,
                               store_cf_t *key_cf, const void *key,
                               size_t klen, reel_status_t *st);

/*
 * Compacts [begin, end) of cf, so what deletes covered there gives its
 * disk space back now rather than at some later compaction. Blocks for
 * as long as the compaction takes: not on the writer.
 */
reel_code_t store_compact_range(store_t *store, store_cf_t *cf,
                                const void *begin, size_t blen,
                                const void *end, size_t elen,
                                reel_status_t *st);

/* Stops (allow 0) or allows again (allow 1) the compactions
 * store_compact_range runs: one under way returns soon after it is
 * stopped, one started meanwhile returns at once. Calls nest. */
void store_manual_compactions(store_t *store, int allow);

/*
 * When the garbage in bulk family cf's blob files (the bytes of deleted
 * values in files still holding live ones: chunks flushed beside those of
 * another upload) is a third of those files' size or more, rewrites
 * their live values (RocksDB's blob garbage collection, on for one
 * compaction of the whole family), so the files go; else nothing. The
 * rewrite is at most twice the garbage it frees. *ran says whether it
 * ran. Blocks; not on the writer.
 */
reel_code_t store_bulk_collect(store_t *store, store_cf_t *cf, int *ran,
                               reel_status_t *st);

/* The bytes cf holds on disk and in memory: the table and blob files its
 * current tree uses, and its memtables, as RocksDB counts them. */
uint64_t store_cf_bytes(store_t *store, store_cf_t *cf);

#endif
