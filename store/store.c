/*
 * store/store.c: RocksDB, the single writer with group commit, the global
 * revision.
 *
 * Data dir layout
 *   FORMAT        "reel-format N\n" (STORE_FORMAT_VERSION): written (and fsynced) before RocksDB
 *                 creates anything, checked before RocksDB opens anything,
 *                 so a foreign or newer data dir is refused untouched.
 *                 Written only into a new or empty directory: a directory
 *                 that holds anything else and no FORMAT is refused
 *                 untouched too (RocksDB would delete what looks like its
 *                 own files there).
 *   CURRENT, ...  one RocksDB database with the column families below.
 *
 * Column families
 *   default       unused (RocksDB requires it)
 *   meta          "format"   -> decimal format version
 *                 "revision" -> uint64 big-endian: the last committed revision
 *                 "clock"    -> reel's clock at that commit, the boot clock
 *                               then (ns, uint64 big-endian each) and the
 *                               boot's id (36 bytes, absent if unknown):
 *                               where a restart takes the clock up
 *   the rest      declared by the modules that own them (store_opts_t.cfs),
 *                 which document their own key encodings; the store knows
 *                 only each one's name and kind (the options it gets).
 *                 A family on disk that nobody declares is opened with the
 *                 plain options and left alone.
 *
 * The writer
 *   Callers push request pointers onto a bounded ring (mutex + condvar). The
 *   writer thread takes up to max_group of them, clears one
 *   WriteBatchWithIndex and one plain WriteBatch (the blind writes, which
 *   the group never reads back, so they skip the index: events stored by
 *   revision), and for each request sets a save point in both, runs its
 *   apply function, and on failure rolls both batches, the revision counter
 *   and the change list back to the save point, so a failed request leaves
 *   no trace and revisions stay gapless. It then puts meta/revision into the
 *   indexed batch, writes the two as one batch with sync=true, publishes the
 *   group's changes, and completes the requests. A group stops growing past
 *   GROUP_BYTES so one huge group cannot hold every caller back.
 *
 * The alarm
 *   A module may arm the writer's alarm for a wall-clock time
 *   (store_wake_at; the earliest wins). With nothing queued the writer
 *   waits on its queue's condition variable with a timeout at that time
 *   (on the monotonic clock, so a wall-clock step cannot make it spin);
 *   with requests queued it compares the time with the clock only while
 *   the alarm is armed (a vDSO read, no system call). When the time has
 *   come, the alarm function runs as one more request at the end of the
 *   group, disarmed first, so what it writes commits and is published
 *   like any request's, and it arms the alarm again for what is left.
 *
 * Invariants
 *   - Revisions are assigned only on the writer thread, in apply order, and
 *     committed in the same batch as meta/revision: commit order equals
 *     revision order, and the stored revision is always the last committed.
 *   - A request completes OK only after its batch is synced.
 *   - After a failed write the store is failed for good (sticky): RocksDB's
 *     own state after a failed sync is unknown, so we refuse rather than
 *     guess. A restart recovers from the RocksDB WAL.
 *
 * Metrics
 *   The writer counts each commit, its group's size and its synced write's
 *   time into metrics it owns (relaxed atomics: nothing the writer waits
 *   on). Queue depth, revision, the sticky failure and RocksDB's stall
 *   properties are read when a scrape asks; store_close() drops them all
 *   before the database closes.
 *
 * Recovery
 *   RocksDB replays its WAL on open; every acknowledged group was synced, so
 *   it is there, and meta/revision comes back with it.
 */
#include "store/store.h"
#include "store/log_check.h"
#include "store/rocks_crc.h"
#include "store/rocks_log.h"
#include "store/rocks_rate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "base/clock.h"
#include "base/codec.h"
#include "base/file.h"
#include "base/fault.h"
#include "base/log.h"

#define DEFAULT_QUEUE_CAPACITY 4096
#define DEFAULT_QUEUE_BYTES ((size_t)64 << 20)
#define DEFAULT_MAX_GROUP 1024
#define GROUP_BYTES (32u << 20)
/* A RocksDB WriteBatch starts with a sequence number and a record count. */
#define BATCH_HEADER 12
/* The joined batch's buffer is kept between groups up to this size. */
#define JOINED_KEEP ((size_t)1 << 20)
#define STORE_MEMTABLE_BUDGET ((size_t)64 << 20)
#define STORE_BLOCK_CACHE ((size_t)32 << 20)
#define STORE_TAIL_READAHEAD ((size_t)256 << 10) /* per tail iterator */
#define BULK_BUFFER ((size_t)16 << 20) /* a bulk family's memtable */
#define STORE_WAL_MAX ((uint64_t)64 << 20) /* live WAL, all files */
#define BULK_MEMTABLES 4 /* RocksDB stops every write at this many */
#define BULK_IMMUTABLE 2 /* a bulk put waits while this many are flushing */
/* Bulk flushes, each starting a log file, between flushes of the other
 * families, which release the logs they pin (see store_bulk_sync). */
#define BULK_FLUSHES_PER_RELEASE 32

/* The background write governor (govern()). */
/* Bytes a second: the limiter's rate for "no limit" under auto. */
#define GOV_CEILING ((int64_t)STORE_BACKGROUND_RATE_MAX)
#define GOV_TICK_NS ((int64_t)100000000)  /* one decision per 100 ms */
#define GOV_BULK_IDLE_NS ((int64_t)1000000000) /* bulk writers gone */
#define FORMAT_FILE "FORMAT"
#define META_REVISION "revision"
#define META_FORMAT "format"
/* reel's clock at the group's commit (base/clock.h), the boot clock then
 * and the boot's id: where a restart takes reel's clock up again. */
#define META_CLOCK "clock"
#define BOOT_ID_LEN 36
/* A last commit further ahead of the system clock than this is not waited
 * for: reel's clock starts from the system clock (times may go back). */
#define CLOCK_AHEAD_MAX_NS (24LL * 3600 * 1000000000LL)
#define META_CF "meta"

/* A change recorded during apply; its bytes live in the group arena. */
typedef struct change_rec {
    uint64_t revision;
    uint32_t module;
    uint32_t type;
    size_t off;
    size_t len;
} change_rec_t;

struct store_txn {
    store_t *store;
    uint64_t next_rev;
    int64_t now_ms;
    int emit_failed; /* an emit ran out of memory: the request fails */
};

/* A delta store_txn_count() holds back until its group is durable. */
typedef struct count_rec {
    _Atomic int64_t *counter;
    int64_t delta;
} count_rec_t;

struct store_snapshot {
    const rocksdb_snapshot_t *snap;
    uint64_t revision;
};

/* An open column family; the store's own "meta" is the first. */
struct store_cf {
    rocksdb_column_family_handle_t *h;
    store_cf_kind_t kind;
    char *name;
};

struct store_iter {
    rocksdb_iterator_t *it;
    rocksdb_readoptions_t *ro; /* owned when reading at a snapshot */
    char *upper;               /* its upper bound (the options point here) */
    int failed; /* an injected fault: invalid from here on, status INTERNAL */
};

struct store {
    char *dir;
    char boot_id[BOOT_ID_LEN + 1]; /* this boot's, or "" */
    int format; /* the data dir's at open (store_format_opened) */
    rocksdb_t *db;
    rocksdb_options_t *dbopts;
    rocksdb_options_t *lookup_opts; /* dbopts + a memtable bloom filter */
    rocksdb_options_t *bulk_opts;   /* STORE_CF_BULK: blob files */
    rocksdb_block_based_table_options_t *bulk_table;
    rocksdb_writeoptions_t *bulk_wopts; /* no log */
    rocksdb_writeoptions_t *direct_wopts; /* logged, not synced */
    rocksdb_block_based_table_options_t *table;
    rocksdb_cache_t *cache;
    store_cf_t *cfs; /* meta, then the declared ones */
    size_t n_cfs;
    store_cf_t *meta; /* cfs[0] */
    rocksdb_column_family_handle_t **other_cf; /* default + undeclared ones */
    size_t n_other_cf;
    rocksdb_writeoptions_t *wopts;
    rocksdb_readoptions_t *ropts;

    size_t max_group;
    store_publish_fn publish;
    void *publish_arg;
    store_before_commit_fn before_commit;
    void *before_commit_arg;
    store_fault_fn fault;
    void *fault_arg;
    store_failed_fn on_failure;
    void *on_failure_arg;
    store_alarm_fn alarm;
    void *alarm_arg;
    /* The armed alarm's wall-clock ms, INT64_MAX when disarmed: lowered by
     * store_wake_at (any thread), swapped back by the writer. */
    _Atomic int64_t alarm_due;
    store_req_t alarm_req; /* the writer's; in a group only while it runs */
    metrics_registry_t *metrics;
    metrics_histogram_t *m_group_size;
    metrics_histogram_t *m_commit_seconds;

    /* Guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    store_req_t **ring;
    size_t cap, head, count;
    size_t bytes, bytes_cap; /* what the queued requests hold; its budget */
    int stopping;
    int idle;          /* the writer waits in writer_wait() */
    int leading;       /* a submitter runs a group in its place */
    int writer_only;   /* never a submitter (store_opts.writer_only) */
    size_t last_group; /* requests in the last group run_group() ran */
    reel_status_t failure; /* set once, when failed becomes 1 */

    atomic_int failed;
    int opened; /* store_open() returned it */
    /* RocksDB's background work failed (on_rocks_error): 1 while its why
     * is written, 2 once bg_why holds it; fail_store follows on the next
     * look (bg_fail), from a thread that may take mu. */
    atomic_int bg_state;
    char bg_why[1024];
    _Atomic uint64_t revision;

    /* The data dir's free space (disk_room()): the floor, the last look
     * and what it saw. */
    uint64_t min_free;
    _Atomic int64_t disk_checked_ns;
    _Atomic uint64_t disk_free;
    atomic_int disk_low;
    int dir_lock; /* the data dir, flock'ed while open (dir_lock()) */
    pthread_t writer;
    int writer_started;

    /* Commits, the requests they held and their writes' time: written by
     * the writer alone (relaxed: nobody waits on them), read by stats. */
    _Atomic uint64_t n_groups, n_grouped, commit_ns;
    _Atomic uint64_t n_led; /* groups a submitter ran (store_submit) */
    /* Groups that failed whole with the store still writing (nothing of
     * them written): whoever holds the writer's role, under its hand-off. */
    uint64_t n_aborted;

    /* The background write rate (see govern()). */
    rocksdb_ratelimiter_t *limiter; /* NULL: no limit */
    int gov_auto;
    int gov_unlimited; /* auto without a ceiling: GOV_CEILING is no limit */
    _Atomic int64_t gov_last_ns;       /* the last tick */
    _Atomic uint64_t gov_max_ns;       /* longest commit since then */
    _Atomic int64_t bulk_last_ns;      /* a bulk writer's last step */
    _Atomic int bulk_syncs;            /* store_bulk_sync()s under way */
    _Atomic unsigned bulk_flushes;     /* since the logs were released */
    pthread_mutex_t gov_mu;            /* the rest: one tick at a time */
    store_gov_t gov;
    _Atomic int64_t gov_rate_now;      /* gov.rate, for store_stats() */
    uint64_t gov_groups0, gov_commit_ns0;

    /* Writer thread only. */
    rocksdb_writebatch_wi_t *wb;
    rocksdb_writebatch_t *blind; /* the group's unindexed writes */
    char *joined;                /* wb + blind as one batch (write_group) */
    size_t joined_cap;
    store_req_t **group;
    change_rec_t *changes;
    size_t n_changes, cap_changes;
    char *arena;
    size_t arena_used, arena_cap;
    store_change_t *pub; /* publish view, cap_changes long */
    count_rec_t *counts; /* the group's store_txn_count()s */
    size_t n_counts, cap_counts;
};

const char *store_cf_name(const store_cf_t *cf) {
    return cf != NULL ? cf->name : "?";
}

reel_code_t store_cf_lookup(store_t *s, const char *name, store_cf_t **out,
                            reel_status_t *st) {
    for (size_t i = 1; i < s->n_cfs; i++)
        if (strcmp(s->cfs[i].name, name) == 0) {
            *out = &s->cfs[i];
            return REEL_OK;
        }
    *out = NULL;
    return reel_status_set(st, REEL_FAILED_PRECONDITION,
                           "column family \"%s\" was not declared when the "
                           "store opened (store_opts_t.cfs)",
                           name);
}

/* Moves a RocksDB error into st; RocksDB's errptr never leaves this file. */
static reel_code_t take_err(reel_status_t *st, reel_code_t code, char **err,
                            const char *what) {
    reel_status_set(st, code, "%s: %s", what, *err ? *err : "unknown error");
    rocksdb_free(*err);
    *err = NULL;
    return code;
}

/* ---- The FORMAT file ---------------------------------------------------- */

static int path_exists(const char *dir, const char *name) {
    char path[4096];
    struct stat sb;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return stat(path, &sb) == 0;
}

/* True when dir holds no RocksDB database yet. */
static int no_database(const char *dir) {
    return !path_exists(dir, "CURRENT") && !path_exists(dir, "IDENTITY");
}

/*
 * 1 if dir holds nothing but perhaps our own FORMAT.tmp (left by a crash
 * before the rename), 0 if it holds something else (the first few names
 * go to `names` for the error message), -1 if it cannot be read.
 */
static int dir_is_empty(const char *dir, char *names, size_t cap) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    size_t used = 0;

    names[0] = '\0';
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            strcmp(e->d_name, FORMAT_FILE ".tmp") == 0)
            continue;
        if (n < 3 && used < cap) {
            int k = snprintf(names + used, cap - used, "%s\"%s\"",
                             n ? ", " : "", e->d_name);
            used += k > 0 ? (size_t)k : 0;
        } else if (n == 3 && used < cap) {
            snprintf(names + used, cap - used, ", ...");
            used = cap;
        }
        n++;
    }
    closedir(d);
    return n == 0;
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), t = strlen(tail);

    return n >= t && strcmp(s + n - t, tail) == 0;
}

/*
 * 1 if dir holds only what a first start leaves when it stops (a crash)
 * before RocksDB wrote CURRENT: the FORMAT marker, RocksDB's identity,
 * lock, info logs, first MANIFEST and options, and empty logs. No data
 * can be there: nothing is written before the database exists. With
 * clean, deletes the empty logs (RocksDB makes no database beside one).
 * The first name that is not such a leftover goes to other[cap].
 */
static int creation_leftovers_only(const char *dir, int clean, char *other,
                                   size_t cap) {
    char path[4096];
    DIR *d = opendir(dir);
    struct dirent *e;
    struct stat sb;
    int only = 1;

    if (d == NULL)
        return 0;
    while (only && (e = readdir(d)) != NULL) {
        const char *n = e->d_name;

        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 ||
            strcmp(n, FORMAT_FILE) == 0 ||
            strcmp(n, FORMAT_FILE ".tmp") == 0 ||
            strcmp(n, "IDENTITY") == 0 || strcmp(n, "LOCK") == 0 ||
            strcmp(n, "LOG") == 0 || strncmp(n, "LOG.old.", 8) == 0 ||
            strcmp(n, "MANIFEST-000001") == 0 ||
            strncmp(n, "OPTIONS-", 8) == 0 || ends_with(n, ".dbtmp"))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, n);
        only = ends_with(n, ".log") && stat(path, &sb) == 0 &&
               S_ISREG(sb.st_mode) && sb.st_size == 0;
        if (only && clean && unlink(path) != 0)
            only = 0;
        if (!only && cap > 0)
            snprintf(other, cap, "%s", n);
    }
    closedir(d);
    return only;
}

/*
 * The data dir, opened and locked (flock) before anything in it is read
 * or made: of two reelds started on one new dir at once, the second is
 * told the dir is in use, not that FORMAT vanished under it. RocksDB's
 * own LOCK comes later, once FORMAT was written. *out: the fd.
 */
static reel_code_t dir_lock(const char *dir, int *out, reel_status_t *st) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), e;

    if (fd < 0)
        return reel_status_set(st, REEL_UNAVAILABLE,
                               "cannot open the data dir %s: %s", dir,
                               strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return reel_status_set(st, REEL_UNAVAILABLE,
                                   "the data dir is in use by another "
                                   "process: %s is locked",
                                   dir);
        return reel_status_set(st, REEL_UNAVAILABLE,
                               "cannot lock the data dir %s: %s", dir,
                               strerror(e));
    }
    *out = fd;
    return REEL_OK;
}

static reel_code_t format_write(const char *dir, reel_status_t *st) {
    char path[4096], body[64];
    int n;

    snprintf(path, sizeof(path), "%s/%s", dir, FORMAT_FILE);
    n = snprintf(body, sizeof(body), "reel-format %d\n", STORE_FORMAT_VERSION);
    return reel_file_replace(path, body, (size_t)n, 0644, st);
}

/*
 * Decides whether dir may be opened: reel makes its data only in a new or
 * empty directory (FORMAT is then written first), and opens only a
 * directory that carries its FORMAT marker at this version. Anything else
 * (a directory with other files, another program's RocksDB, another
 * format) is FAILED_PRECONDITION and left untouched: RocksDB, opened on a
 * directory, deletes files that look like its own.
 */
static reel_code_t format_check(const char *dir, int *fresh, int *version_out,
                                reel_status_t *st) {
    char path[4096], buf[128], other[256];
    int fd, version = 0;
    ssize_t n;

    *fresh = 0;
    *version_out = STORE_FORMAT_VERSION;
    snprintf(path, sizeof(path), "%s/%s", dir, FORMAT_FILE);
    fd = open(path, O_RDONLY);
    if (fd < 0) {
        char names[256];
        int empty;

        if (errno != ENOENT)
            return reel_status_set(st, REEL_UNAVAILABLE, "open %s: %s", path,
                                   strerror(errno));
        if (!no_database(dir))
            return reel_status_set(
                st, REEL_FAILED_PRECONDITION,
                "data dir %s holds a RocksDB database but no %s file: it was "
                "not written by reel; refusing to open it",
                dir, FORMAT_FILE);
        if ((empty = dir_is_empty(dir, names, sizeof(names))) < 0)
            return reel_status_set(st, REEL_UNAVAILABLE, "read %s: %s", dir,
                                   strerror(errno));
        if (!empty)
            return reel_status_set(
                st, REEL_FAILED_PRECONDITION,
                "data dir %s is not empty and is not a reel data dir (no %s "
                "file; it holds %s): reel makes its data only in a new or "
                "empty directory; refusing to touch it (choose another "
                "--data-dir%s)",
                dir, FORMAT_FILE, names,
                path_exists(dir, "lost+found")
                    ? ", such as a subdirectory of this filesystem"
                    : "");
        *fresh = 1;
        return format_write(dir, st);
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0)
        n = 0;
    buf[n] = '\0';
    if (sscanf(buf, "reel-format %d", &version) != 1)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "data dir %s: %s is unreadable (\"%.40s\"); "
                               "refusing to open it",
                               dir, FORMAT_FILE, buf);
    if (version > STORE_FORMAT_VERSION)
        return reel_status_set(
            st, REEL_FAILED_PRECONDITION,
            "data dir %s was written by a newer reel (format %d; this reeld "
            "reads formats %d to %d): run that reel or a newer one, or "
            "restore a backup taken before it upgraded the data dir; "
            "refusing to open it",
            dir, version, STORE_FORMAT_OLDEST, STORE_FORMAT_VERSION);
    if (version < STORE_FORMAT_OLDEST)
        return reel_status_set(
            st, REEL_FAILED_PRECONDITION,
            "data dir %s was written by reel format %d; this reeld reads "
            "formats %d to %d; refusing to open it",
            dir, version, STORE_FORMAT_OLDEST, STORE_FORMAT_VERSION);
    *version_out = version;
    if (path_exists(dir, "CURRENT"))
        return REEL_OK;
    /* No database, so RocksDB would make one, deleting what looks like
     * its own files: only over what a first start leaves. Anything else
     * (table files, a later MANIFEST) is a copy or a restore cut short. */
    if (!creation_leftovers_only(dir, 0, other, sizeof(other)))
        return reel_status_set(
            st, REEL_FAILED_PRECONDITION,
            "data dir %s has reel's %s but no database (no CURRENT) and "
            "holds \"%s\", which a first start does not leave: a copy or "
            "restore cut short? Copy the whole backup again; refusing to "
            "open it",
            dir, FORMAT_FILE, other);
    if (!no_database(dir)) {
        if (!creation_leftovers_only(dir, 1, other, sizeof(other)))
            return reel_status_set(st, REEL_UNAVAILABLE,
                                   "data dir %s: cannot delete the empty "
                                   "log %s its first start left",
                                   dir, other);
        REEL_WARN("store", "data dir %s: its first start stopped before the "
                           "database was made (no CURRENT, no data): making "
                           "it again",
                  dir);
    }
    *fresh = 1;
    return REEL_OK;
}

static reel_code_t make_dir(const char *dir, reel_status_t *st) {
    char path[4096];
    struct stat sb;
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof(path))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "data dir: path must be 1-%zu bytes",
                               sizeof(path) - 1);
    memcpy(path, dir, len + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return reel_status_set(st, REEL_UNAVAILABLE, "mkdir %s: %s", path,
                                   strerror(errno));
        *p = '/';
    }
    /* The data dir itself is its owner's alone: its files hold every
     * tenant's data in clear. One made before, or by someone else, is
     * left as it is, with a warning when others may enter it. */
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return reel_status_set(st, REEL_UNAVAILABLE, "mkdir %s: %s", path,
                               strerror(errno));
    if (stat(path, &sb) == 0 && (sb.st_mode & 0077) != 0)
        REEL_WARN("store",
                  "data dir %s: mode %04o lets others than its owner in, and "
                  "its files hold every value in clear: chmod 700 it",
                  path, (unsigned)(sb.st_mode & 07777));
    return REEL_OK;
}

/* ---- Open and close ----------------------------------------------------- */

/*
 * Checks the declared column families (before anything is touched) and
 * counts them into *n: INVALID_ARGUMENT, naming the family, for an empty,
 * over-long, reserved or repeated name, or an unknown kind.
 */
static reel_code_t check_cfs(const store_cf_desc_t *const *lists, size_t *n,
                             reel_status_t *st) {
    *n = 0;
    for (size_t l = 0; lists != NULL && lists[l] != NULL; l++)
        for (const store_cf_desc_t *d = lists[l]; d->name != NULL; d++) {
            size_t len = strlen(d->name);

            if (len == 0 || len > STORE_CF_NAME_MAX)
                return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                       "column family \"%.80s\": a name is "
                                       "1-%d bytes (got %zu)",
                                       d->name, STORE_CF_NAME_MAX, len);
            if (strcmp(d->name, META_CF) == 0 ||
                strcmp(d->name, "default") == 0)
                return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                       "column family \"%s\": the name is "
                                       "the store's own",
                                       d->name);
            if (d->kind != STORE_CF_PLAIN && d->kind != STORE_CF_LOOKUP &&
                d->kind != STORE_CF_TAIL && d->kind != STORE_CF_BULK)
                return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                       "column family \"%s\": unknown kind "
                                       "%d",
                                       d->name, (int)d->kind);
            for (size_t m = 0; m <= l; m++)
                for (const store_cf_desc_t *e = lists[m];
                     e->name != NULL && e != d; e++)
                    if (strcmp(e->name, d->name) == 0)
                        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                               "column family \"%s\" is "
                                               "declared twice",
                                               d->name);
            (*n)++;
        }
    return REEL_OK;
}

/* Copies the n declarations into s->cfs, after the store's own meta. */
static reel_code_t copy_cfs(store_t *s, const store_cf_desc_t *const *lists,
                            size_t n, reel_status_t *st) {
    if ((s->cfs = calloc(n + 1, sizeof(*s->cfs))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    s->meta = &s->cfs[0];
    s->meta->kind = STORE_CF_PLAIN;
    s->n_cfs = 1;
    if ((s->meta->name = strdup(META_CF)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t l = 0; lists != NULL && lists[l] != NULL; l++)
        for (const store_cf_desc_t *d = lists[l]; d->name != NULL; d++) {
            store_cf_t *cf = &s->cfs[s->n_cfs];

            cf->kind = d->kind;
            if ((cf->name = strdup(d->name)) == NULL)
                return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                       "out of memory");
            s->n_cfs++;
        }
    return REEL_OK;
}

static int declared_cf(const store_t *s, const char *name) {
    for (size_t i = 0; i < s->n_cfs; i++)
        if (strcmp(name, s->cfs[i].name) == 0)
            return 1;
    return 0;
}

/*
 * Why RocksDB would not open the data dir: another process holds it (its
 * LOCK is taken: EAGAIN, or this process's own), its LOCK cannot be made
 * (a read-only filesystem, no permission), or a file of it (a table, the
 * MANIFEST, CURRENT) is corrupted, which is refused as such whichever file
 * it is; else `otherwise`.
 */
static reel_code_t open_failed(reel_status_t *st, char **err,
                               const char *otherwise) {
    int lock = strstr(*err, "lock") != NULL || strstr(*err, "LOCK") != NULL;

    if (lock && (strstr(*err, "temporarily unavailable") != NULL ||
                 strstr(*err, "hold by current process") != NULL))
        return take_err(st, REEL_UNAVAILABLE, err,
                        "the data dir is in use by another process");
    if (lock)
        return take_err(st, REEL_UNAVAILABLE, err,
                        "the data dir cannot be locked: reeld must be able "
                        "to write in it");
    if (strstr(*err, "Corruption") != NULL)
        return take_err(st, REEL_DATA_LOSS, err,
                        "the data dir is corrupted; refusing to open it");
    return take_err(st, REEL_UNAVAILABLE, err, otherwise);
}

static reel_code_t open_db(store_t *s, int fresh, reel_status_t *st) {
    char **existing = NULL, *err = NULL;
    size_t n_existing = 0, n = 0, n_other = 0;
    const char **names = NULL;
    const rocksdb_options_t **cfopts = NULL;
    rocksdb_column_family_handle_t **handles = NULL;
    reel_code_t rc = REEL_OK;

    if (!fresh) {
        existing = rocksdb_list_column_families(s->dbopts, s->dir, &n_existing,
                                                &err);
        if (err != NULL) {
            /* It returns an array (malloc(0)) even when it fails. */
            if (existing != NULL)
                rocksdb_list_column_families_destroy(existing, n_existing);
            return open_failed(st, &err,
                               "cannot read the data dir's column families");
        }
    }
    /* Open every family that exists (RocksDB insists) plus the declared
     * ones, which are created if missing. */
    names = calloc(n_existing + s->n_cfs + 1, sizeof(*names));
    cfopts = calloc(n_existing + s->n_cfs + 1, sizeof(*cfopts));
    handles = calloc(n_existing + s->n_cfs + 1, sizeof(*handles));
    if (names == NULL || cfopts == NULL || handles == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < s->n_cfs; i++) {
        names[n] = s->cfs[i].name;
        cfopts[n++] = s->cfs[i].kind == STORE_CF_LOOKUP ? s->lookup_opts
                      : s->cfs[i].kind == STORE_CF_BULK ? s->bulk_opts
                                                        : s->dbopts;
    }
    names[n] = "default";
    cfopts[n++] = s->dbopts;
    for (size_t i = 0; i < n_existing; i++)
        if (!declared_cf(s, existing[i]) &&
            strcmp(existing[i], "default") != 0) {
            names[n] = existing[i];
            cfopts[n++] = s->dbopts;
        }
    s->db = rocksdb_open_column_families(s->dbopts, s->dir, (int)n, names,
                                         cfopts, handles, &err);
    if (err != NULL) {
        rc = open_failed(st, &err, "cannot open the data dir");
        s->db = NULL;
        goto out;
    }
    for (size_t i = 0; i < s->n_cfs; i++)
        s->cfs[i].h = handles[i];
    n_other = n - s->n_cfs;
    s->other_cf = calloc(n_other, sizeof(*s->other_cf));
    if (s->other_cf == NULL) {
        for (size_t i = s->n_cfs; i < n; i++)
            rocksdb_column_family_handle_destroy(handles[i]);
    } else {
        for (size_t i = 0; i < n_other; i++)
            s->other_cf[i] = handles[s->n_cfs + i];
        s->n_other_cf = n_other;
    }
out:
    if (existing != NULL)
        rocksdb_list_column_families_destroy(existing, n_existing);
    free(names);
    free(cfopts);
    free(handles);
    return rc;
}

/* A decimal version from an unterminated value; -1 if malformed. */
static int parse_version(const char *val, size_t vlen) {
    int v = 0;

    if (vlen == 0 || vlen > 6)
        return -1;
    for (size_t i = 0; i < vlen; i++) {
        if (val[i] < '0' || val[i] > '9')
            return -1;
        v = v * 10 + (val[i] - '0');
    }
    return v;
}

/* Reads meta/format and meta/revision; writes them on a fresh database. */
static reel_code_t load_meta(store_t *s, reel_status_t *st) {
    char *val = NULL, *err = NULL;
    size_t vlen = 0;
    reel_code_t rc;
    int v;

    rc = store_get(s, s->meta, META_FORMAT, strlen(META_FORMAT), &val,
                   &vlen, st);
    if (rc == REEL_NOT_FOUND) {
        char body[16];
        unsigned char rev[8];
        rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
        int n = snprintf(body, sizeof(body), "%d", STORE_FORMAT_VERSION);

        reel_status_fini(st);
        reel_be64_put(rev, 0);
        rocksdb_writebatch_put_cf(wb, s->meta->h, META_FORMAT,
                                  strlen(META_FORMAT), body, (size_t)n);
        rocksdb_writebatch_put_cf(wb, s->meta->h, META_REVISION,
                                  strlen(META_REVISION), (const char *)rev, 8);
        rocksdb_write(s->db, s->wopts, wb, &err);
        rocksdb_writebatch_destroy(wb);
        if (err != NULL)
            return take_err(st, REEL_UNAVAILABLE, &err,
                            "cannot initialise the data dir");
        atomic_store(&s->revision, 0);
        return REEL_OK;
    }
    if (rc != REEL_OK)
        return rc;
    v = parse_version(val, vlen);
    if (v < STORE_FORMAT_OLDEST || v > STORE_FORMAT_VERSION) {
        rc = reel_status_set(st, REEL_FAILED_PRECONDITION,
                             "data dir %s: stored format %.*s is not one "
                             "this reeld reads (%d to %d); refusing to open "
                             "it",
                             s->dir, (int)(vlen > 16 ? 16 : vlen), val,
                             STORE_FORMAT_OLDEST, STORE_FORMAT_VERSION);
        free(val);
        return rc;
    }
    /* The older of the two marks: an upgrade stopped between them. */
    if (v < s->format)
        s->format = (int)v;
    free(val);
    val = NULL;
    rc = store_get(s, s->meta, META_REVISION, strlen(META_REVISION),
                   &val, &vlen, st);
    if (rc != REEL_OK && rc != REEL_NOT_FOUND)
        return rc; /* the read failed: its own error, not a verdict */
    reel_status_fini(st);
    if (rc != REEL_OK || vlen != 8) {
        free(val);
        return reel_status_set(st, REEL_DATA_LOSS,
                               "data dir %s: the stored revision is missing "
                               "or malformed",
                               s->dir);
    }
    atomic_store(&s->revision, reel_be64_get((const unsigned char *)val));
    free(val);
    return REEL_OK;
}

/* The boot's id (/proc/sys/kernel/random/boot_id) into s->boot_id. */
static void read_boot_id(store_t *s) {
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

    s->boot_id[0] = '\0';
    if (f == NULL)
        return;
    if (fgets(s->boot_id, sizeof(s->boot_id), f) == NULL ||
        strlen(s->boot_id) != BOOT_ID_LEN)
        s->boot_id[0] = '\0';
    fclose(f);
}

/*
 * Takes reel's clock up where the last commit left it, so that its times
 * never go back and leases and timers keep their length across a restart
 * whatever the system clock did meanwhile: on the same boot, the last
 * commit's time plus the boot clock's elapsed time (exact, suspends
 * included); after a reboot, no earlier than the last commit. The clock
 * then closes any gap to the system clock a tenth at a time (base/clock.h).
 */
static void resume_clock(store_t *s) {
    reel_status_t st = REEL_STATUS_INIT;
    char *val = NULL;
    size_t vlen = 0;
    int64_t t, boot, at, wall;
    int same_boot;
    reel_code_t rc;

    read_boot_id(s);
    rc = store_get(s, s->meta, META_CLOCK, strlen(META_CLOCK), &val, &vlen,
                   &st);
    if (rc != REEL_OK || vlen < 16) {
        /* None: a fresh data dir, or one from before the record. */
        if (rc != REEL_NOT_FOUND)
            REEL_WARN("store",
                      "data dir %s: reel's clock at the last commit is "
                      "unreadable (%s): it starts from the system clock, and "
                      "times recorded from now on may be earlier than those "
                      "already stored",
                      s->dir, rc != REEL_OK ? reel_status_message(&st)
                                            : "the record is too short");
        reel_status_fini(&st);
        free(val);
        return;
    }
    t = (int64_t)reel_be64_get((const unsigned char *)val);
    boot = (int64_t)reel_be64_get((const unsigned char *)val + 8);
    at = t;
    same_boot = s->boot_id[0] != '\0' && vlen == 16 + BOOT_ID_LEN &&
                memcmp(val + 16, s->boot_id, BOOT_ID_LEN) == 0 &&
                reel_clock_boot_ns() >= boot;
    if (same_boot)
        at = t + (reel_clock_boot_ns() - boot);
    free(val);
    wall = reel_clock_now_ns();
    if (at - wall > CLOCK_AHEAD_MAX_NS) {
        REEL_WARN("store",
                  "data dir %s: its last commit is %.0f s ahead of the "
                  "system clock, more than a day: reel's clock starts from "
                  "the system clock, and times recorded from now on may be "
                  "earlier than those already stored",
                  s->dir, (double)(at - wall) / 1e9);
        return;
    }
    /* The same boot: exactly where it was, behind the system clock too
     * (a restart is no step), unless more than a day behind (base/clock.c
     * would take that gap at once anyway); else never before the last
     * commit. */
    if (same_boot && wall - at <= CLOCK_AHEAD_MAX_NS) {
        reel_clock_set(at);
        return;
    }
    /* The same boot, and the system clock more than a day past where the
     * downtime leaves reel's: a step taken at once, said as a step seen
     * while running is (base/clock.c). */
    if (same_boot)
        REEL_WARN("store",
                  "the system clock is %.0f s ahead of where reel's clock "
                  "stood after the last commit and the time since (the "
                  "same boot), more than a day: the step is taken at once, "
                  "and timers due meanwhile fire now",
                  (double)(wall - at) / 1e9);
    reel_clock_start_at(at);
}

int store_format_opened(const store_t *s) { return s->format; }

reel_code_t store_format_upgrade(store_t *s, reel_status_t *st) {
    char body[16], *err = NULL;
    int n, from = s->format;
    reel_code_t rc;

    if (from == STORE_FORMAT_VERSION)
        return REEL_OK;
    n = snprintf(body, sizeof(body), "%d", STORE_FORMAT_VERSION);
    rocksdb_put_cf(s->db, s->wopts, s->meta->h, META_FORMAT,
                   strlen(META_FORMAT), body, (size_t)n, &err);
    if (err != NULL)
        return take_err(st, REEL_UNAVAILABLE, &err,
                        "cannot mark the data dir with its new format");
    if ((rc = format_write(s->dir, st)) != REEL_OK)
        return rc;
    s->format = STORE_FORMAT_VERSION;
    REEL_INFO("store",
              "data dir %s upgraded from format %d to %d: reelds older than "
              "this one refuse it from now on (going back takes a backup "
              "made before this start)",
              s->dir, from, STORE_FORMAT_VERSION);
    return REEL_OK;
}

static void *writer_main(void *arg);

/*
 * RocksDB counts into a thread-local perf context by default: every key
 * comparison touches it, and from a shared library each touch is a
 * __tls_get_addr call. reel does not read those counters, so every thread
 * that calls RocksDB turns them off (6% fewer instructions per write).
 */
static void perf_off(void) {
    static _Thread_local int off;

    if (!off) {
        rocksdb_set_perf_level(rocksdb_disable);
        off = 1;
    }
}

/* ---- Metrics ------------------------------------------------------------ */

static void disk_look(store_t *s);
static void bg_fail(store_t *s);
static void on_rocks_error(void *arg, const char *why);

void store_stats(store_t *s, store_stats_t *out) {
    out->commits = atomic_load_explicit(&s->n_groups, memory_order_relaxed);
    out->requests = atomic_load_explicit(&s->n_grouped, memory_order_relaxed);
    out->commit_ns = atomic_load_explicit(&s->commit_ns, memory_order_relaxed);
    out->led = atomic_load_explicit(&s->n_led, memory_order_relaxed);
    /* 0 is "no limit": no limiter, or auto at its open ceiling. A fixed
     * rate is reported as it is, the largest one included. */
    out->background_rate =
        s->limiter == NULL ? 0
        : s->gov_unlimited && atomic_load(&s->gov_rate_now) >= GOV_CEILING
            ? 0
            : atomic_load(&s->gov_rate_now);
    disk_look(s);
    out->disk_free = atomic_load(&s->disk_free);
    out->disk_low = s->min_free > 0 && atomic_load(&s->disk_low);
    pthread_mutex_lock(&s->mu);
    out->queue_depth = s->count;
    out->queue_bytes = s->bytes;
    out->writer_idle = s->idle;
    pthread_mutex_unlock(&s->mu);
}

static double m_queue_depth(void *arg) {
    store_stats_t stats;

    store_stats(arg, &stats);
    return (double)stats.queue_depth;
}

static double m_queue_bytes(void *arg) {
    store_stats_t stats;

    store_stats(arg, &stats);
    return (double)stats.queue_bytes;
}

static double m_commits(void *arg) {
    store_stats_t stats;

    store_stats(arg, &stats);
    return (double)stats.commits;
}

static double m_revision(void *arg) {
    return (double)store_revision(arg);
}

static double m_disk_free(void *arg) {
    store_t *s = arg;

    disk_look(s);
    return (double)atomic_load(&s->disk_free);
}

static double m_disk_low(void *arg) {
    store_t *s = arg;

    if (s->min_free == 0)
        return 0;
    disk_look(s);
    return atomic_load(&s->disk_low) ? 1 : 0;
}

static double m_refused(void *arg) {
    store_t *s = arg;

    bg_fail(s);
    return atomic_load(&s->failed) ? 1 : 0;
}

/* The RocksDB properties that explain a stall, per column family. */
static const struct {
    const char *metric, *property, *help;
} rocks_cf_props[] = {
    {"reel_rocksdb_pending_compaction_bytes",
     "rocksdb.estimate-pending-compaction-bytes",
     "Bytes RocksDB estimates compaction must rewrite; past its limits "
     "writes slow down, then stop."},
    {"reel_rocksdb_memtable_bytes", "rocksdb.cur-size-all-mem-tables",
     "Bytes in memtables (active and unflushed immutable ones)."},
    {"reel_rocksdb_live_sst_bytes", "rocksdb.live-sst-files-size",
     "Bytes of the table files of the current version."},
    {"reel_rocksdb_immutable_memtables", "rocksdb.num-immutable-mem-table",
     "Memtables waiting to be flushed; many mean flushes lag writes."},
};

static void m_rocks_cf(void *arg, metrics_emit_t *e, size_t prop) {
    store_t *s = arg;

    for (size_t i = 0; i < s->n_cfs; i++) {
        uint64_t v = 0;
        const char *l[] = {"cf", s->cfs[i].name, NULL};

        if (rocksdb_property_int_cf(s->db, s->cfs[i].h,
                                    rocks_cf_props[prop].property, &v) != 0) {
            reel_status_t why = REEL_STATUS_INIT;

            reel_status_set(&why, REEL_INTERNAL,
                            "RocksDB has no property %s for family %s",
                            rocks_cf_props[prop].property, s->cfs[i].name);
            metrics_emit_fail(e, &why);
            reel_status_fini(&why);
            return;
        }
        metrics_emit(e, l, (double)v);
    }
}

static void m_rocks_pending(void *arg, metrics_emit_t *e) {
    m_rocks_cf(arg, e, 0);
}
static void m_rocks_memtable(void *arg, metrics_emit_t *e) {
    m_rocks_cf(arg, e, 1);
}
static void m_rocks_sst(void *arg, metrics_emit_t *e) {
    m_rocks_cf(arg, e, 2);
}
static void m_rocks_immutable(void *arg, metrics_emit_t *e) {
    m_rocks_cf(arg, e, 3);
}

/* A database-wide property; -1 if RocksDB cannot say (shown as such). */
static double rocks_db_prop(store_t *s, const char *name) {
    uint64_t v = 0;

    return rocksdb_property_int(s->db, name, &v) == 0 ? (double)v : -1;
}

static double m_rocks_stopped(void *arg) {
    return rocks_db_prop(arg, "rocksdb.is-write-stopped");
}

static double m_rocks_delayed(void *arg) {
    return rocks_db_prop(arg, "rocksdb.actual-delayed-write-rate");
}

static double m_background_rate(void *arg) {
    store_stats_t st;

    store_stats(arg, &st);
    return (double)st.background_rate;
}

static reel_code_t register_metrics(store_t *s, reel_status_t *st) {
    metrics_registry_t *r = s->metrics;
    static const metrics_collect_fn rocks_fns[] = {
        m_rocks_pending, m_rocks_memtable, m_rocks_sst, m_rocks_immutable};
    reel_code_t rc;

    if (r == NULL)
        return REEL_OK;
    if ((rc = metrics_reg_fn(r, s, METRICS_COUNTER, "reel_commits_total",
                             "Commit groups written and synced.", NULL,
                             m_commits, s, st)) != REEL_OK ||
        (rc = metrics_reg_histogram(
             r, s, "reel_commit_group_size",
             "Requests per commit group (one synced write each).", NULL,
             metrics_buckets_count, metrics_buckets_count_n,
             &s->m_group_size, st)) != REEL_OK ||
        (rc = metrics_reg_histogram(
             r, s, "reel_commit_duration_seconds",
             "Time of a commit group's synced write (RocksDB write + fsync).",
             NULL, metrics_buckets_seconds, metrics_buckets_seconds_n,
             &s->m_commit_seconds, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, s, METRICS_GAUGE, "reel_write_queue_depth",
                             "Write requests queued for the writer.", NULL,
                             m_queue_depth, s, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, s, METRICS_GAUGE, "reel_write_queue_bytes",
                             "Bytes the queued write requests hold.", NULL,
                             m_queue_bytes, s, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, s, METRICS_GAUGE, "reel_revision",
                             "The last committed global revision.", NULL,
                             m_revision, s, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, s, METRICS_GAUGE, "reel_disk_free_bytes",
                             "Bytes free on the data dir's filesystem (for "
                             "reel's user; looked at most every 100 ms).",
                             NULL, m_disk_free, s, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, s, METRICS_GAUGE, "reel_disk_low",
                             "1 while the data dir's disk is below "
                             "--min-free-disk-bytes: writes that add data "
                             "are refused until space is freed.",
                             NULL, m_disk_low, s, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, s, METRICS_GAUGE, "reel_writes_refused",
                             "1 once a failed write or fsync stopped all "
                             "writes (sticky until restart).",
                             NULL, m_refused, s, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, s, METRICS_GAUGE, "reel_rocksdb_write_stopped",
                             "1 while RocksDB stops writes (too many "
                             "memtables, level-0 files or pending "
                             "compaction bytes).",
                             NULL, m_rocks_stopped, s, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, s, METRICS_GAUGE,
                             "reel_rocksdb_delayed_write_rate_bytes",
                             "The rate RocksDB slows writes to, in bytes/s "
                             "(0: not delayed).",
                             NULL, m_rocks_delayed, s, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, s, METRICS_GAUGE,
                             "reel_background_write_rate_bytes",
                             "The rate RocksDB's flushes and compactions may "
                             "write at now, in bytes/s (0: no limit); with "
                             "--background-write-rate auto it drops while "
                             "an upload slows commits.",
                             NULL, m_background_rate, s, st)) != REEL_OK)
        return rc;
    for (size_t i = 0; i < sizeof(rocks_fns) / sizeof(*rocks_fns); i++)
        if ((rc = metrics_reg_collector(r, s, METRICS_GAUGE,
                                        rocks_cf_props[i].metric,
                                        rocks_cf_props[i].help, rocks_fns[i],
                                        s, st)) != REEL_OK)
            return rc;
    return REEL_OK;
}

reel_code_t store_open(const store_opts_t *opts, store_t **out,
                       reel_status_t *st) {
    store_t *s = NULL;
    int fresh = 0, format = STORE_FORMAT_VERSION, lock_fd = -1;
    size_t n_cfs = 0;
    reel_code_t rc;

    *out = NULL;
    if (opts == NULL || opts->data_dir == NULL)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "data dir: required");
    if ((rc = check_cfs(opts->cfs, &n_cfs, st)) != REEL_OK)
        return rc;
    if ((rc = make_dir(opts->data_dir, st)) != REEL_OK)
        return rc;
    if ((rc = dir_lock(opts->data_dir, &lock_fd, st)) != REEL_OK)
        return rc;
    if ((rc = format_check(opts->data_dir, &fresh, &format, st)) != REEL_OK ||
        (!fresh && (rc = store_logs_check(opts->data_dir, st)) != REEL_OK)) {
        close(lock_fd);
        return rc;
    }

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        close(lock_fd);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    s->dir_lock = lock_fd;
    s->format = format;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->gov_mu, NULL);
    /* The writer's timed wait for the alarm is on the monotonic clock. */
    reel_cond_init_mono(&s->cv);
    atomic_store(&s->alarm_due, INT64_MAX);
    s->dir = strdup(opts->data_dir);
    s->cap = opts->queue_capacity ? opts->queue_capacity
                                  : DEFAULT_QUEUE_CAPACITY;
    s->bytes_cap = opts->queue_bytes ? opts->queue_bytes
                                     : DEFAULT_QUEUE_BYTES;
    s->max_group = opts->max_group ? opts->max_group : DEFAULT_MAX_GROUP;
    s->writer_only = opts->writer_only;
    s->min_free = opts->min_free_bytes;
    s->publish = opts->publish;
    s->publish_arg = opts->publish_arg;
    s->before_commit = opts->before_commit;
    s->before_commit_arg = opts->before_commit_arg;
    s->fault = opts->fault;
    s->fault_arg = opts->fault_arg;
    s->on_failure = opts->on_failure;
    s->on_failure_arg = opts->on_failure_arg;
    s->alarm = opts->alarm;
    s->alarm_arg = opts->alarm_arg;
    s->metrics = opts->metrics;
    s->ring = calloc(s->cap, sizeof(*s->ring));
    /* One more slot: the alarm's request. */
    s->group = calloc(s->max_group + 1, sizeof(*s->group));
    if (s->dir == NULL || s->ring == NULL || s->group == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    if ((rc = copy_cfs(s, opts->cfs, n_cfs, st)) != REEL_OK)
        goto fail;

    s->dbopts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(s->dbopts, 1);
    rocksdb_options_set_create_missing_column_families(s->dbopts, 1);
    rocksdb_options_increase_parallelism(s->dbopts, 2);
    store_rocks_log(s->dbopts); /* not a LOG file on the disk that may fill */
    store_rocks_on_error(s->dbopts, on_rocks_error, s);
    /* One memtable budget for all column families together (RocksDB's
     * default is per family, 2 x 64 MiB each): memory stays bounded
     * whatever the write mix. */
    rocksdb_options_set_db_write_buffer_size(s->dbopts, STORE_MEMTABLE_BUDGET);
    rocksdb_options_set_write_buffer_size(s->dbopts, STORE_MEMTABLE_BUDGET / 4);
    rocksdb_options_set_paranoid_checks(s->dbopts, 1);
    /*
     * Every commit writes the meta family, so its memtable, far from full,
     * would pin every log file since its last flush: the live log would
     * grow with the data written, and a restart after a crash replays all
     * of it. The cap on the live log makes RocksDB flush the families that
     * pin the oldest log, so logs are released (bench/ANALYSIS.md,
     * "Sequential writes"). Reusing released log files (RocksDB's
     * recycle_log_file_num, to save a synced write of the file's size per
     * commit) is not on: RocksDB turns it off under point-in-time recovery,
     * its default and reel's, whatever it is set to (the OPTIONS file of a
     * data dir says recycle_log_file_num=0).
     */
    rocksdb_options_set_max_total_wal_size(s->dbopts, STORE_WAL_MAX);
    /* Table and blob files are written out a MiB at a time as they grow,
     * not all at their end: a flush of a file's chunks never leaves a
     * backlog of dirty pages that a KV commit's fsync would wait behind. */
    rocksdb_options_set_bytes_per_sync(s->dbopts, (uint64_t)1 << 20);
    if (opts->background_write_rate > 0 || opts->background_write_auto) {
        /* Measured (bench/ANALYSIS.md, "Workspace"): a 1 GiB upload at the
         * disk's full rate made KV commits wait 5x longer; at 3/4 of it,
         * 1.4x, but a fixed rate is either too slow for the disk or too
         * fast for the commits: with background_write_auto the rate
         * follows the commits (govern()). Flushes go first, compactions
         * after. */
        s->gov_auto = opts->background_write_auto;
        s->gov_unlimited = s->gov_auto && opts->background_write_rate == 0;
        s->gov.ceiling = opts->background_write_rate > 0 &&
                                 opts->background_write_rate <
                                     (uint64_t)GOV_CEILING
                             ? (int64_t)opts->background_write_rate
                             : GOV_CEILING;
        s->gov.rate = s->gov_auto && s->gov.ceiling > STORE_GOV_START
                          ? STORE_GOV_START
                          : s->gov.ceiling;
        atomic_store(&s->gov_rate_now, s->gov.rate);
        /* Refilled every 10 ms, not RocksDB's 100: a flush writes what
         * one refill grants at once, and at 8 MB/s a 100 ms grant is an
         * 800 KB burst that commits wait behind (measured: p99 during an
         * upload 2.5x alone with 100 ms, 1.4-1.7x with 10 ms). */
        s->limiter = rocksdb_ratelimiter_create(s->gov.rate, 10000, 10);
        rocksdb_options_set_ratelimiter(s->dbopts, s->limiter);
    }
    /* Bloom filters: a write reads its key first, and most keys written
     * are new, so most of those reads would otherwise search every table
     * file's index for nothing. Index and filter blocks stay with their
     * table readers (RocksDB's default), so a long scan that churns the
     * block cache does not evict them. LZ4 decompresses about twice as
     * fast as Snappy, RocksDB's default, which WAL tails read through. */
    s->cache = rocksdb_cache_create_lru(STORE_BLOCK_CACHE);
    s->table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(s->table, s->cache);
    rocksdb_block_based_options_set_filter_policy(
        s->table, rocksdb_filterpolicy_create_bloom(10));
    rocksdb_options_set_block_based_table_factory(s->dbopts, s->table);
    rocksdb_options_set_compression(s->dbopts, rocksdb_lz4_compression);
    /*
     * Families read by key before most writes, where the key is often new
     * (a first set, a journal's idempotency key, a new run or signal): a
     * bloom filter over the memtable answers "not there" without searching
     * it. 2% of a memtable: 320 KiB each.
     */
    s->lookup_opts = rocksdb_options_create_copy(s->dbopts);
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(s->lookup_opts, 0.02);
    rocksdb_options_set_memtable_whole_key_filtering(s->lookup_opts, 1);
    /*
     * Their keys come and go (a KV key deleted, a run's index entry of its
     * active days, a delivered signal), and an iterator steps over every
     * deleted key still in the tree, one by one, until a compaction drops
     * it. A file where 2,048 of any 4,096 entries in a row are deletes is
     * compacted soon instead, so deletes do not pile up in front of what a
     * listing reads.
     */
    rocksdb_options_add_compact_on_deletion_collector_factory(
        s->lookup_opts, STORE_DELETES_WINDOW, STORE_DELETES_TRIGGER);
    /*
     * Bulk families (file chunks): values of 4 KiB and more go to blob
     * files, so the LSM tree holds small references and compaction does
     * not rewrite the bytes (measured: bench/ANALYSIS.md, "Workspace"); a
     * blob file whose blobs are all deleted is dropped. RocksDB's garbage
     * collection stays off: on, every compaction rewrote the live blobs
     * of the oldest quarter of the files, and compactions come by
     * themselves (once a snapshot that held a new file's sequence numbers
     * goes, a download's say, each of them is compacted again), so a
     * download of a new artifact rewrote all of it. store_bulk_collect()
     * runs it on purpose, when garbage is worth it. Its own
     * 16 MiB write buffer (it still counts against the shared budget)
     * and no bloom filters: chunks are read by range, never probed.
     */
    s->bulk_opts = rocksdb_options_create_copy(s->dbopts);
    s->bulk_table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(s->bulk_table, s->cache);
    rocksdb_options_set_block_based_table_factory(s->bulk_opts,
                                                  s->bulk_table);
    rocksdb_options_set_write_buffer_size(s->bulk_opts, BULK_BUFFER);
    /* A write stop or slowdown in RocksDB holds every family's writes, the
     * KV's synced commits too: the bulk family must never cause one.
     * store_bulk_put waits itself while BULK_IMMUTABLE memtables wait for
     * their flush, below BULK_MEMTABLES (the stop), and its table files
     * (blob references, a few KiB each) may pile up in L0 far past the
     * usual triggers. */
    rocksdb_options_set_max_write_buffer_number(s->bulk_opts, BULK_MEMTABLES);
    rocksdb_options_set_level0_slowdown_writes_trigger(s->bulk_opts, 200);
    rocksdb_options_set_level0_stop_writes_trigger(s->bulk_opts, 400);
    rocksdb_options_set_enable_blob_files(s->bulk_opts, 1);
    rocksdb_options_set_min_blob_size(s->bulk_opts, STORE_BULK_MIN_BLOB);
    rocksdb_options_set_blob_file_size(s->bulk_opts, (uint64_t)256 << 20);
    rocksdb_options_set_enable_blob_gc(s->bulk_opts, 0);
    rocksdb_options_set_compression(s->bulk_opts, rocksdb_no_compression);
    s->bulk_wopts = rocksdb_writeoptions_create();
    rocksdb_writeoptions_disable_WAL(s->bulk_wopts, 1);
    s->direct_wopts = rocksdb_writeoptions_create();
    s->wopts = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->wopts, 1);
    s->ropts = rocksdb_readoptions_create();

    if ((rc = open_db(s, fresh, st)) != REEL_OK)
        goto fail;
    if ((rc = load_meta(s, st)) != REEL_OK)
        goto fail;
    resume_clock(s);

    s->wb = rocksdb_writebatch_wi_create(0, 1);
    s->blind = rocksdb_writebatch_create();
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        rc = reel_status_set(st, REEL_INTERNAL,
                             "cannot start the writer thread");
        goto fail;
    }
    s->writer_started = 1;
    if ((rc = register_metrics(s, st)) != REEL_OK)
        goto fail;
    REEL_INFO("store", "opened %s at revision %llu%s, checksums by %s",
              s->dir, (unsigned long long)atomic_load(&s->revision),
              fresh ? " (new)" : "", store_crc32c_engine());
    s->opened = 1;
    *out = s;
    return REEL_OK;
fail:
    /* A corrupted table is found by the first reads, once RocksDB has
     * opened the dir: refused as one it finds while opening. Nothing is
     * written on the way out (no flush of what the log replayed). */
    if (strstr(reel_status_message(st), "Corruption") != NULL &&
        strncmp(reel_status_message(st), "the data dir is corrupted",
                25) != 0) {
        char *msg = strdup(reel_status_message(st));

        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "the data dir is corrupted; refusing to open "
                             "it: %s",
                             msg != NULL ? msg : "Corruption");
        free(msg);
    }
    atomic_store(&s->failed, 1);
    store_close(s);
    return rc;
}

/*
 * A clean stop writes the memtables out, so the next start has no RocksDB
 * WAL to replay and serves at once. (After a crash it replays: at most one
 * memtable budget.) Skipped once a write failed: the disk is suspect.
 */
static void flush_memtables(store_t *s) {
    rocksdb_flushoptions_t *fo;
    char *err = NULL;

    if (s->db == NULL || atomic_load(&s->failed))
        return;
    /* A stop writes at the disk's speed: a memtable budget at a low
     * --background-write-rate would hold it for minutes. */
    if (s->limiter != NULL)
        store_ratelimiter_set_rate(s->limiter, GOV_CEILING);
    fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    for (size_t i = 0; i < s->n_cfs && err == NULL; i++)
        rocksdb_flush_cf(s->db, fo, s->cfs[i].h, &err);
    if (err != NULL) {
        struct stat sb;

        if (stat(s->dir, &sb) != 0)
            REEL_ERROR("store", "flushing memtables at close: %s: the data "
                                "dir %s is gone (%s), and what it held with it",
                       err, s->dir, strerror(errno));
        else
            REEL_WARN("store", "flushing memtables at close: %s (the next "
                               "start replays the log instead)",
                      err);
        rocksdb_free(err);
    }
    rocksdb_flushoptions_destroy(fo);
}

void store_stop(store_t *s) {
    if (s == NULL || !s->writer_started)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->writer, NULL);
    s->writer_started = 0;
}

void store_close(store_t *s) {
    if (s == NULL)
        return;
    store_stop(s);
    /* The writer is gone and the database still open: nothing registered
     * can run after this. */
    metrics_registry_drop(s->metrics, s);
    if (s->wb != NULL)
        rocksdb_writebatch_wi_destroy(s->wb);
    if (s->blind != NULL)
        rocksdb_writebatch_destroy(s->blind);
    free(s->joined);
    flush_memtables(s);
    for (size_t i = 0; i < s->n_cfs; i++) {
        if (s->cfs[i].h != NULL)
            rocksdb_column_family_handle_destroy(s->cfs[i].h);
        free(s->cfs[i].name);
    }
    free(s->cfs);
    for (size_t i = 0; i < s->n_other_cf; i++)
        rocksdb_column_family_handle_destroy(s->other_cf[i]);
    free(s->other_cf);
    if (s->db != NULL)
        rocksdb_close(s->db);
    if (s->opened) {
        REEL_INFO("store",
                  "closed %s at revision %llu (%llu commits since start, "
                  "%.1f requests each, %llu run by their submitter)",
                  s->dir, (unsigned long long)atomic_load(&s->revision),
                  (unsigned long long)atomic_load(&s->n_groups),
                  atomic_load(&s->n_groups)
                      ? (double)atomic_load(&s->n_grouped) /
                            (double)atomic_load(&s->n_groups)
                      : 0.0,
                  (unsigned long long)atomic_load(&s->n_led));
    }
    if (s->dbopts != NULL)
        rocksdb_options_destroy(s->dbopts);
    if (s->lookup_opts != NULL)
        rocksdb_options_destroy(s->lookup_opts);
    if (s->bulk_opts != NULL)
        rocksdb_options_destroy(s->bulk_opts);
    if (s->bulk_table != NULL)
        rocksdb_block_based_options_destroy(s->bulk_table);
    if (s->bulk_wopts != NULL)
        rocksdb_writeoptions_destroy(s->bulk_wopts);
    if (s->direct_wopts != NULL)
        rocksdb_writeoptions_destroy(s->direct_wopts);
    if (s->table != NULL)
        rocksdb_block_based_options_destroy(s->table);
    if (s->cache != NULL)
        rocksdb_cache_destroy(s->cache);
    if (s->wopts != NULL)
        rocksdb_writeoptions_destroy(s->wopts);
    if (s->ropts != NULL)
        rocksdb_readoptions_destroy(s->ropts);
    reel_status_fini(&s->failure);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->gov_mu);
    if (s->limiter != NULL)
        rocksdb_ratelimiter_destroy(s->limiter);
    pthread_cond_destroy(&s->cv);
    free(s->ring);
    free(s->group);
    free(s->changes);
    free(s->pub);
    free(s->counts);
    free(s->arena);
    free(s->dir);
    if (s->dir_lock >= 0)
        close(s->dir_lock); /* the lock goes with it */
    free(s);
}

uint64_t store_revision(store_t *s) { return atomic_load(&s->revision); }

uint64_t store_groups_aborted(const store_t *s) { return s->n_aborted; }

reel_code_t store_health(store_t *s, reel_status_t *st) {
    reel_code_t rc = REEL_OK;

    bg_fail(s);
    if (!atomic_load(&s->failed))
        return REEL_OK;
    pthread_mutex_lock(&s->mu);
    if (st != NULL)
        reel_status_copy(st, &s->failure);
    rc = s->failure.code;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- The disk's free space ------------------------------------------------ */

/* How long an answer of statvfs() stands before the next look. */
#define DISK_CHECK_NS (100 * 1000000LL)

/*
 * Looks at the data dir's free space again if the last look is older than
 * DISK_CHECK_NS (from whichever thread asks first), and logs a turn below
 * or above min_free. A failed statvfs() keeps the last answer: a full disk
 * is still caught by the write that fails.
 */
static void disk_look(store_t *s) {
    int64_t now, last;
    struct statvfs v;
    uint64_t avail;
    int low;

    now = reel_clock_mono_ns();
    last = atomic_load_explicit(&s->disk_checked_ns, memory_order_relaxed);
    if ((last == 0 || now - last >= DISK_CHECK_NS) &&
        atomic_compare_exchange_strong(&s->disk_checked_ns, &last, now) &&
        statvfs(s->dir, &v) == 0) {
        avail = (uint64_t)v.f_bavail * v.f_frsize;
        low = avail < s->min_free;
        atomic_store(&s->disk_free, avail);
        if (atomic_exchange(&s->disk_low, low) != low) {
            if (low)
                REEL_WARN("store",
                          "the data dir's disk has %llu bytes free, less "
                          "than the %llu kept free: writes that add data "
                          "are refused until space is freed",
                          (unsigned long long)avail,
                          (unsigned long long)s->min_free);
            else
                REEL_INFO("store",
                          "the data dir's disk has %llu bytes free again: "
                          "writes are accepted",
                          (unsigned long long)avail);
        }
    }
}

/* OK while the data dir's filesystem has min_free bytes free or more
 * (or no floor is set); else RESOURCE_EXHAUSTED, before anything is
 * written. Writes resume by themselves once space is freed. */
static reel_code_t disk_room(store_t *s, reel_status_t *st) {
    if (s->min_free == 0)
        return REEL_OK;
    disk_look(s);
    if (!atomic_load(&s->disk_low))
        return REEL_OK;
    return reel_status_set(
        st, REEL_RESOURCE_EXHAUSTED,
        "the data dir's disk has %llu bytes free, less than the %llu kept "
        "free (--min-free-disk-bytes): writes that add data are refused "
        "until space is freed; reads and deletes go on",
        (unsigned long long)atomic_load(&s->disk_free),
        (unsigned long long)s->min_free);
}

/* ---- Submitting --------------------------------------------------------- */

static size_t run_group(store_t *s, store_req_t **reqs, size_t n);
/* This thread runs a group in the writer's place (store_submit): a submit
 * from its apply, done or publish functions is queued for the writer. */
static _Thread_local int lead_here;

reel_code_t store_submit(store_t *s, store_req_t *req) {
    reel_code_t rc = REEL_OK;
    int64_t due;

    req->status.code = REEL_OK;
    req->status.msg = NULL;
    req->first_revision = req->last_revision = 0;
    /* A failed store says so below, before any disk's floor. */
    bg_fail(s);
    if (req->grows && !atomic_load(&s->failed) &&
        (rc = disk_room(s, &req->status)) != REEL_OK)
        return rc;
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&s->failed)) {
        reel_status_copy(&req->status, &s->failure);
        rc = req->status.code;
    } else if (s->stopping) {
        rc = reel_status_set(&req->status, REEL_UNAVAILABLE,
                             "the server is shutting down");
    } else if (s->count == s->cap) {
        rc = reel_status_set(&req->status, REEL_RESOURCE_EXHAUSTED,
                             "write queue is full (%zu requests waiting); "
                             "retry later",
                             s->cap);
    } else if (s->count > 0 && s->bytes + req->bytes > s->bytes_cap) {
        /* One large writer cannot queue gigabytes, nor make everyone
         * else's writes wait behind them for the disk's time. */
        rc = reel_status_set(&req->status, REEL_RESOURCE_EXHAUSTED,
                             "write queue is full (%zu bytes waiting in %zu "
                             "requests, at most %zu; this one holds %zu); "
                             "retry later",
                             s->bytes, s->count, s->bytes_cap, req->bytes);
    } else if (s->idle && !s->leading && s->count == 0 &&
               s->last_group == 1 && !lead_here && !s->writer_only) {
        /*
         * One call at a time (the last group held one request) and the
         * writer asleep: this thread runs the request as a group of its
         * own, in the writer's place, and spares a sequential client the
         * writer's wake-up and its sleep after. Under concurrency the
         * writer keeps the role, so requests still gather into groups.
         * Either way one group runs at a time, in submission order.
         */
        s->leading = 1;
        pthread_mutex_unlock(&s->mu);
        perf_off();
        lead_here = 1;
        atomic_fetch_add_explicit(&s->n_led, 1, memory_order_relaxed);
        run_group(s, &req, 1);
        lead_here = 0;
        pthread_mutex_lock(&s->mu);
        s->leading = 0;
        /* The writer takes what came meanwhile, a stop, or its alarm (the
         * clock read only while the alarm is armed). */
        due = atomic_load(&s->alarm_due);
        if (s->count > 0 || s->stopping ||
            (due != INT64_MAX && due <= reel_clock_now_ms()))
            pthread_cond_signal(&s->cv);
    } else {
        s->ring[(s->head + s->count) % s->cap] = req;
        s->count++;
        s->bytes += req->bytes;
        if (s->count == 1 && !s->leading)
            pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

typedef struct exec_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} exec_wait_t;

static void exec_done(store_req_t *req) {
    exec_wait_t *w = req->arg;

    pthread_mutex_lock(&w->mu);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

typedef struct exec_arg {
    exec_wait_t wait; /* first: exec_done finds it through req->arg */
    store_apply_fn apply;
    void *arg;
} exec_arg_t;

static reel_code_t exec_apply(store_txn_t *txn, void *arg, reel_status_t *st) {
    exec_arg_t *ea = arg;

    return ea->apply(txn, ea->arg, st);
}

reel_code_t store_exec(store_t *s, store_apply_fn apply, void *arg,
                       uint64_t *last_revision, reel_status_t *st) {
    exec_arg_t ea = {.apply = apply, .arg = arg};
    store_req_t req = {.apply = exec_apply, .done = exec_done, .arg = &ea};
    reel_code_t rc;

    pthread_mutex_init(&ea.wait.mu, NULL);
    pthread_cond_init(&ea.wait.cv, NULL);
    rc = store_submit(s, &req);
    if (rc == REEL_OK) {
        pthread_mutex_lock(&ea.wait.mu);
        while (!ea.wait.done)
            pthread_cond_wait(&ea.wait.cv, &ea.wait.mu);
        pthread_mutex_unlock(&ea.wait.mu);
        rc = req.status.code;
    }
    if (last_revision != NULL)
        *last_revision = rc == REEL_OK ? req.last_revision : 0;
    if (st != NULL)
        reel_status_move(st, &req.status);
    else
        reel_status_fini(&req.status);
    pthread_mutex_destroy(&ea.wait.mu);
    pthread_cond_destroy(&ea.wait.cv);
    return rc;
}

/* ---- The writer --------------------------------------------------------- */

static void fail_store(store_t *s, const reel_status_t *why);

/* store_rocks_on_error's fn: noted for bg_fail, which may take locks. */
static void on_rocks_error(void *arg, const char *why) {
    store_t *s = arg;
    int idle = 0;

    if (!atomic_compare_exchange_strong(&s->bg_state, &idle, 1))
        return; /* the first is the cause */
    snprintf(s->bg_why, sizeof(s->bg_why), "%s", why);
    atomic_store(&s->bg_state, 2);
}

/* A failure of RocksDB's background work stops the store, as a failed
 * write does: RocksDB refuses every write from then on. */
static void bg_fail(store_t *s) {
    reel_status_t why = REEL_STATUS_INIT;

    if (atomic_load(&s->bg_state) != 2 || atomic_load(&s->failed))
        return;
    reel_status_set(&why, REEL_INTERNAL, "%s", s->bg_why);
    fail_store(s, &why);
    reel_status_fini(&why);
}

static void fail_store(store_t *s, const reel_status_t *why) {
    reel_status_t failure = REEL_STATUS_INIT;
    int first = 0;

    pthread_mutex_lock(&s->mu);
    if (!atomic_load(&s->failed)) {
        reel_status_set(&s->failure, REEL_UNAVAILABLE,
                        "the store stopped accepting writes after a failed "
                        "write (%s); restart reeld once the cause is fixed",
                        reel_status_message(why));
        atomic_store(&s->failed, 1);
        reel_status_copy(&failure, &s->failure);
        first = 1;
    }
    pthread_mutex_unlock(&s->mu);
    REEL_ERROR("store", "write failed, refusing further writes: %s",
               reel_status_message(why));
    if (first && s->on_failure != NULL)
        s->on_failure(s->on_failure_arg, &failure);
    reel_status_fini(&failure);
}

static int reserve_changes(store_t *s) {
    size_t cap;
    change_rec_t *c;
    store_change_t *p;

    if (s->n_changes < s->cap_changes)
        return 0;
    cap = s->cap_changes ? s->cap_changes * 2 : 256;
    c = realloc(s->changes, cap * sizeof(*c));
    if (c == NULL)
        return -1;
    s->changes = c;
    p = realloc(s->pub, cap * sizeof(*p));
    if (p == NULL)
        return -1;
    s->pub = p;
    s->cap_changes = cap;
    return 0;
}

static int reserve_arena(store_t *s, size_t len) {
    size_t cap;
    char *a;

    if (s->arena_cap - s->arena_used >= len)
        return 0;
    cap = s->arena_cap ? s->arena_cap : 64 * 1024;
    while (cap - s->arena_used < len)
        cap *= 2;
    a = realloc(s->arena, cap);
    if (a == NULL)
        return -1;
    s->arena = a;
    s->arena_cap = cap;
    return 0;
}

static void complete_all(store_req_t **reqs, size_t n) {
    for (size_t i = 0; i < n; i++)
        reqs[i]->done(reqs[i]);
}

/* Nothing of the group is written: fails every request alike with *st. */
static void fail_group(store_t *s, store_req_t **reqs, size_t n,
                       reel_status_t *st) {
    s->n_aborted++;
    for (size_t i = 0; i < n; i++) {
        if (reqs[i]->status.code == REEL_OK)
            reel_status_copy(&reqs[i]->status, st);
        reqs[i]->first_revision = reqs[i]->last_revision = 0;
    }
    reel_status_fini(st);
    complete_all(reqs, n);
}

/*
 * Writes the group, wb and blind, as one synced batch. RocksDB's C API has
 * no call that adds one batch to another, so the two are joined in the batch
 * format RocksDB documents in write_batch.cc (LevelDB's): an 8-byte sequence
 * number, a 4-byte little-endian record count, then the records. No key has
 * records in both (see store_txn_put_blind), so their order across the two
 * does not matter. Returns -1 if out of memory, else 0 (and *err on failure).
 */
static int write_group(store_t *s, char **err) {
    size_t wlen, blen, len;
    const char *w, *b;
    uint32_t count;
    rocksdb_writebatch_t *joined;

    if (rocksdb_writebatch_count(s->blind) == 0) {
        rocksdb_write_writebatch_wi(s->db, s->wopts, s->wb, err);
        return 0;
    }
    w = rocksdb_writebatch_wi_data(s->wb, &wlen);
    b = rocksdb_writebatch_data(s->blind, &blen);
    len = wlen + blen - BATCH_HEADER;
    if (len > s->joined_cap) {
        char *p = realloc(s->joined, len);
        if (p == NULL)
            return -1;
        s->joined = p;
        s->joined_cap = len;
    }
    memcpy(s->joined, w, wlen);
    memcpy(s->joined + wlen, b + BATCH_HEADER, blen - BATCH_HEADER);
    count = (uint32_t)rocksdb_writebatch_wi_count(s->wb) +
            (uint32_t)rocksdb_writebatch_count(s->blind);
    for (int i = 0; i < 4; i++)
        s->joined[8 + i] = (char)(count >> (8 * i));
    joined = rocksdb_writebatch_create_from(s->joined, len);
    if (joined == NULL)
        return -1;
    rocksdb_write(s->db, s->wopts, joined, err);
    rocksdb_writebatch_destroy(joined);
    if (s->joined_cap > JOINED_KEEP) { /* a big group: do not hold on */
        free(s->joined);
        s->joined = NULL;
        s->joined_cap = 0;
    }
    return 0;
}

int64_t store_gov_next(store_gov_t *g, int bulk, uint64_t groups,
                       double mean_ns, uint64_t max_ns) {
    int64_t rate = g->rate;

    if (!bulk) {
        if (groups >= STORE_GOV_MIN_GROUPS)
            g->usual_ns = mean_ns;
        rate = g->ceiling;
    } else if (groups < STORE_GOV_MIN_GROUPS) {
        rate = rate > g->ceiling / 2 ? g->ceiling : rate * 2;
    } else {
        if (!g->bulk) {
            /* An upload starts beside commits. */
            g->rate = rate < STORE_GOV_START ? rate : STORE_GOV_START;
            g->bulk = bulk;
            return g->rate;
        }
        if (g->usual_ns <= 0 || mean_ns < g->usual_ns)
            g->usual_ns = mean_ns;
        else
            g->usual_ns *= 1.01;
        if (mean_ns > 1.5 * g->usual_ns || (double)max_ns > 4 * g->usual_ns)
            rate = rate > STORE_GOV_START         ? STORE_GOV_START
                   : rate / 2 < STORE_GOV_FLOOR ? STORE_GOV_FLOOR
                                                : rate / 2;
        else
            rate = rate > g->ceiling / 5 * 4 ? g->ceiling : rate + rate / 4;
    }
    if (rate > g->ceiling)
        rate = g->ceiling;
    g->rate = rate;
    g->bulk = bulk;
    return rate;
}

/*
 * The background write governor (gov_auto): once a tick, sets the rate
 * RocksDB's flushes and compactions may write at from what the writer's
 * synced commits took meanwhile (store_gov_next() decides). A flush
 * writing a file's chunks at the disk's speed queues every commit's fsync
 * behind its own I/O, and a fixed rate is too fast for the commits on a
 * slow disk and too slow for the disk when nobody commits. A bulk writer
 * is at work while one writes, waits for its flushes or syncs, and for
 * GOV_BULK_IDLE_NS after (its last memtable's flush). Called by the
 * writer after each commit and by bulk writers as they go, so it runs
 * while anything writes; any thread, one at a time.
 */
static void govern(store_t *s, int64_t now_ns) {
    uint64_t groups, commit_ns, max_ns;
    int64_t before;
    int bulk;

    if (!s->gov_auto ||
        now_ns - atomic_load_explicit(&s->gov_last_ns,
                                      memory_order_relaxed) < GOV_TICK_NS ||
        pthread_mutex_trylock(&s->gov_mu) != 0)
        return;
    if (now_ns - atomic_load(&s->gov_last_ns) < GOV_TICK_NS) {
        pthread_mutex_unlock(&s->gov_mu);
        return;
    }
    atomic_store(&s->gov_last_ns, now_ns);
    groups = atomic_load(&s->n_groups) - s->gov_groups0;
    commit_ns = atomic_load(&s->commit_ns) - s->gov_commit_ns0;
    s->gov_groups0 += groups;
    s->gov_commit_ns0 += commit_ns;
    max_ns = atomic_exchange(&s->gov_max_ns, 0);
    bulk = atomic_load(&s->bulk_syncs) > 0 ||
           now_ns - atomic_load(&s->bulk_last_ns) < GOV_BULK_IDLE_NS;
    before = s->gov.rate;
    if (store_gov_next(&s->gov, bulk, groups,
                       groups ? (double)commit_ns / (double)groups : 0,
                       max_ns) != before) {
        store_ratelimiter_set_rate(s->limiter, s->gov.rate);
        atomic_store(&s->gov_rate_now, s->gov.rate);
    }
    pthread_mutex_unlock(&s->gov_mu);
}

/*
 * Applies, commits and completes a prefix of reqs[0..n) as one commit group
 * and returns its length: all n, unless the batch passed GROUP_BYTES first.
 */
static size_t run_group(store_t *s, store_req_t **reqs, size_t n) {
    store_txn_t txn;
    reel_status_t werr = REEL_STATUS_INIT;
    char *err = NULL;
    size_t batch_bytes = 0, blind_bytes = 0;
    unsigned char rev[8], clk[16 + BOOT_ID_LEN];
    int64_t t0 = 0, t1, now_ns;

    s->last_group = n;
    if (atomic_load(&s->failed)) {
        pthread_mutex_lock(&s->mu);
        for (size_t i = 0; i < n; i++)
            reel_status_copy(&reqs[i]->status, &s->failure);
        pthread_mutex_unlock(&s->mu);
        complete_all(reqs, n);
        return n;
    }

    rocksdb_writebatch_wi_clear(s->wb);
    rocksdb_writebatch_clear(s->blind);
    s->n_changes = 0;
    s->arena_used = 0;
    s->n_counts = 0;
    txn.store = s;
    txn.next_rev = atomic_load(&s->revision) + 1;
    now_ns = reel_clock_now_ns();
    txn.now_ms = now_ns / 1000000;

    for (size_t i = 0; i < n; i++) {
        store_req_t *req = reqs[i];
        uint64_t rev0 = txn.next_rev;
        size_t nch0 = s->n_changes, arena0 = s->arena_used;
        size_t ncnt0 = s->n_counts;
        reel_code_t rc;

        rocksdb_writebatch_wi_set_save_point(s->wb);
        rocksdb_writebatch_set_save_point(s->blind);
        txn.emit_failed = 0;
        rc = req->apply(&txn, req->arg, &req->status);
        if (rc == REEL_OK && req->status.code != REEL_OK)
            rc = req->status.code;
        if (rc == REEL_OK && txn.emit_failed)
            /* A change without its event must not commit: the publish
             * step and the WAL would miss it. */
            rc = reel_status_set(&req->status, REEL_RESOURCE_EXHAUSTED,
                                 "out of memory recording a committed "
                                 "change; nothing was written");
        if (rc != REEL_OK) {
            if (req->status.code == REEL_OK)
                req->status.code = rc;
            rocksdb_writebatch_wi_rollback_to_save_point(s->wb, &err);
            if (err == NULL)
                rocksdb_writebatch_rollback_to_save_point(s->blind, &err);
            if (err != NULL) {
                /* The batch can no longer be trusted: commit nothing. */
                take_err(&werr, REEL_INTERNAL, &err,
                         "rolling back a failed request");
                fail_store(s, &werr);
                for (size_t j = 0; j < n; j++)
                    if (reqs[j]->status.code == REEL_OK || j == i)
                        reel_status_copy(&reqs[j]->status, &s->failure);
                reel_status_fini(&werr);
                complete_all(reqs, n);
                return n;
            }
            txn.next_rev = rev0;
            s->n_changes = nch0;
            s->arena_used = arena0;
            s->n_counts = ncnt0;
            continue;
        }
        if (txn.next_rev > rev0) {
            req->first_revision = rev0;
            req->last_revision = txn.next_rev - 1;
        }
        rocksdb_writebatch_wi_data(s->wb, &batch_bytes);
        rocksdb_writebatch_data(s->blind, &blind_bytes);
        if (batch_bytes + blind_bytes >= GROUP_BYTES && i + 1 < n) {
            n = i + 1; /* the rest go in the next group */
            break;
        }
    }

    if (rocksdb_writebatch_wi_count(s->wb) == 0 &&
        rocksdb_writebatch_count(s->blind) == 0) {
        /* Nothing to write: every request failed or only read. */
        complete_all(reqs, n);
        return n;
    }

    for (size_t i = 0; i < s->n_changes; i++) {
        const change_rec_t *c = &s->changes[i];
        s->pub[i] = (store_change_t){
            .revision = c->revision,
            .module = c->module,
            .type = c->type,
            .ts_ms = txn.now_ms,
            .event = s->arena + c->off,
            .len = c->len,
        };
    }
    if (s->before_commit != NULL && s->n_changes > 0 &&
        s->before_commit(s->before_commit_arg, &txn, s->pub, s->n_changes,
                         &werr) != REEL_OK) {
        fail_group(s, reqs, n, &werr);
        return n;
    }
    reel_be64_put(rev, txn.next_rev - 1);
    rocksdb_writebatch_wi_put_cf(s->wb, s->meta->h, META_REVISION,
                                 strlen(META_REVISION), (const char *)rev, 8);
    reel_be64_put(clk, (uint64_t)now_ns);
    reel_be64_put(clk + 8, (uint64_t)reel_clock_boot_ns());
    memcpy(clk + 16, s->boot_id, BOOT_ID_LEN);
    rocksdb_writebatch_wi_put_cf(s->wb, s->meta->h, META_CLOCK,
                                 strlen(META_CLOCK), (const char *)clk,
                                 s->boot_id[0] ? 16 + BOOT_ID_LEN : 16);
    t0 = reel_clock_mono_ns();
    if ((s->fault != NULL && s->fault(s->fault_arg) != 0) ||
        REEL_FAULT("store.write"))
        reel_status_set(&werr, REEL_UNAVAILABLE, "injected write fault");
    else if (write_group(s, &err) != 0) {
        /* Nothing was written: the group fails, not the store. */
        reel_status_set(&werr, REEL_RESOURCE_EXHAUSTED,
                        "out of memory writing the group");
        fail_group(s, reqs, n, &werr);
        return n;
    } else if (err != NULL)
        take_err(&werr, REEL_UNAVAILABLE, &err, "write");
    if (werr.code != REEL_OK) {
        fail_store(s, &werr);
        reel_status_fini(&werr);
        pthread_mutex_lock(&s->mu);
        for (size_t i = 0; i < n; i++) {
            /* Even a request that only read may have seen a write that is
             * now lost, so none of the group is acknowledged. */
            if (reqs[i]->status.code == REEL_OK)
                reel_status_copy(&reqs[i]->status, &s->failure);
            reqs[i]->first_revision = reqs[i]->last_revision = 0;
        }
        pthread_mutex_unlock(&s->mu);
        complete_all(reqs, n);
        return n;
    }
    atomic_store(&s->revision, txn.next_rev - 1);
    t1 = reel_clock_mono_ns();
    t0 = t1 - t0;
    atomic_fetch_add_explicit(&s->n_groups, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->n_grouped, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->commit_ns, (uint64_t)t0,
                              memory_order_relaxed);
    if (s->gov_auto) {
        if ((uint64_t)t0 > atomic_load_explicit(&s->gov_max_ns,
                                                memory_order_relaxed))
            atomic_store_explicit(&s->gov_max_ns, (uint64_t)t0,
                                  memory_order_relaxed);
        govern(s, t1);
    }
    metrics_histogram_observe(s->m_commit_seconds, (double)t0 / 1e9);
    metrics_histogram_observe(s->m_group_size, (double)n);
    for (size_t i = 0; i < s->n_counts; i++)
        atomic_fetch_add_explicit(s->counts[i].counter, s->counts[i].delta,
                                  memory_order_relaxed);

    if (s->publish != NULL && s->n_changes > 0)
        s->publish(s->publish_arg, s->pub, s->n_changes);
    complete_all(reqs, n);
    return n;
}

/* ---- The alarm ---------------------------------------------------------- */

void store_wake_at(store_t *s, int64_t due_ms) {
    int64_t cur = atomic_load(&s->alarm_due);

    if (s->alarm == NULL)
        return;
    while (due_ms < cur)
        if (atomic_compare_exchange_weak(&s->alarm_due, &cur, due_ms)) {
            /* The writer reads the time under mu before it waits: taking
             * mu to signal means it cannot miss it. From the writer
             * itself (an apply arming it) there is nobody to wake. */
            if (!pthread_equal(pthread_self(), s->writer)) {
                pthread_mutex_lock(&s->mu);
                pthread_cond_signal(&s->cv);
                pthread_mutex_unlock(&s->mu);
            }
            return;
        }
}

static reel_code_t alarm_apply(store_txn_t *txn, void *arg,
                               reel_status_t *st) {
    store_t *s = arg;

    return s->alarm(s->alarm_arg, txn, st);
}

/* What it was to do is still stored: log the failure and try again in a
 * second (a failed store stops it for good). */
static void alarm_done(store_req_t *req) {
    store_t *s = req->arg;

    if (req->status.code != REEL_OK && !atomic_load(&s->failed)) {
        REEL_ERROR("store", "the alarm failed (retrying in 1 s): %s",
                   reel_status_message(&req->status));
        store_wake_at(s, reel_clock_now_ms() + 1000);
    }
    reel_status_fini(&req->status);
}

/* Mu held, nothing queued: waits for a request, a stop, or the alarm's
 * time. 1 if the alarm's time has come. */
static int writer_wait(store_t *s) {
    for (;;) {
        int64_t due = atomic_load(&s->alarm_due), now;
        struct timespec ts;

        /* While a submitter leads, nothing is taken: it signals when it
         * is done if requests wait, a stop, or the alarm's time passed. */
        if (!s->leading && (s->count > 0 || s->stopping))
            return 0;
        if (due == INT64_MAX) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        now = reel_clock_now_ms();
        if (now >= due) {
            if (!s->leading)
                return 1;
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        /* due is on reel's clock, which runs up to a tenth faster than
         * the monotonic one while it closes a step's gap (or jumps, past a
         * day): wake at least once a second to look again. */
        ts = reel_clock_mono_after(due - now < 1000 ? due - now : 1000);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
}

static void *writer_main(void *arg) {
    store_t *s = arg;

    perf_off();
    s->alarm_req.apply = alarm_apply;
    s->alarm_req.done = alarm_done;
    s->alarm_req.arg = s;
    for (;;) {
        size_t n = 0;
        int64_t due;

        pthread_mutex_lock(&s->mu);
        s->idle = 1;
        writer_wait(s);
        s->idle = 0;
        if (s->count == 0 && s->stopping) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        while (s->count > 0 && n < s->max_group) {
            s->group[n++] = s->ring[s->head];
            s->head = (s->head + 1) % s->cap;
            s->count--;
            s->bytes -= s->group[n - 1]->bytes;
        }
        pthread_mutex_unlock(&s->mu);
        due = atomic_load(&s->alarm_due);
        if (due != INT64_MAX && reel_clock_now_ms() >= due) {
            /* Disarmed before it runs: it arms again for what is left, and
             * anyone arming meanwhile is kept. A failed store takes no
             * more writes: disarmed for good, or its wait would spin. */
            atomic_store(&s->alarm_due, INT64_MAX);
            if (!atomic_load(&s->failed))
                s->group[n++] = &s->alarm_req;
        }
        if (n == 0)
            continue;
        for (size_t done = 0; done < n;)
            done += run_group(s, s->group + done, n - done);
    }
    return NULL;
}

/* ---- Transactions ------------------------------------------------------- */

reel_code_t store_txn_get(store_txn_t *txn, store_cf_t *cf, const void *key,
                          size_t klen, char **val, size_t *vlen,
                          reel_status_t *st) {
    store_t *s = txn->store;
    char *err = NULL;

    if (REEL_FAULT("store.get"))
        return reel_status_set(st, REEL_INTERNAL, "read: injected fault");
    *val = rocksdb_writebatch_wi_get_from_batch_and_db_cf(
        s->wb, s->db, s->ropts, cf->h, key, klen, vlen, &err);
    if (err != NULL)
        return take_err(st, REEL_INTERNAL, &err, "read");
    return *val != NULL ? REEL_OK : REEL_NOT_FOUND;
}

void store_txn_put(store_txn_t *txn, store_cf_t *cf, const void *key,
                   size_t klen, const void *val, size_t vlen) {
    rocksdb_writebatch_wi_put_cf(txn->store->wb, cf->h, key, klen,
                                 val, vlen);
}

void store_txn_delete(store_txn_t *txn, store_cf_t *cf, const void *key,
                      size_t klen) {
    rocksdb_writebatch_wi_delete_cf(txn->store->wb, cf->h, key,
                                    klen);
}

void store_txn_put_blind(store_txn_t *txn, store_cf_t *cf, const void *key,
                         size_t klen, const void *val, size_t vlen) {
    rocksdb_writebatch_put_cf(txn->store->blind, cf->h, key, klen,
                              val, vlen);
}

void store_txn_delete_blind(store_txn_t *txn, store_cf_t *cf, const void *key,
                            size_t klen) {
    rocksdb_writebatch_delete_cf(txn->store->blind, cf->h, key,
                                 klen);
}

void store_txn_delete_range_blind(store_txn_t *txn, store_cf_t *cf,
                                  const void *begin, size_t blen,
                                  const void *end, size_t elen) {
    rocksdb_writebatch_delete_range_cf(txn->store->blind, cf->h, begin, blen,
                                       end, elen);
}

uint64_t store_txn_emit(store_txn_t *txn, uint32_t module, uint32_t type,
                        const void *event, size_t len) {
    store_t *s = txn->store;
    uint64_t rev = txn->next_rev++;

    /* Out of memory fails the request (run_group rolls it back): a change
     * is never committed without the event the WAL and watchers need. */
    if (REEL_FAULT("store.emit") || reserve_changes(s) != 0 ||
        reserve_arena(s, len) != 0) {
        txn->emit_failed = 1;
        return rev;
    }
    if (len > 0)
        memcpy(s->arena + s->arena_used, event, len);
    s->changes[s->n_changes++] = (change_rec_t){
        .revision = rev,
        .module = module,
        .type = type,
        .off = s->arena_used,
        .len = len,
    };
    s->arena_used += len;
    return rev;
}

void store_txn_count(store_txn_t *txn, _Atomic int64_t *counter,
                     int64_t delta) {
    store_t *s = txn->store;

    if (s->n_counts == s->cap_counts) {
        size_t cap = s->cap_counts ? s->cap_counts * 2 : 256;
        count_rec_t *c = realloc(s->counts, cap * sizeof(*c));

        if (c == NULL) {
            /* Like an event: a count that could not be kept fails the
             * request rather than let the figure drift. */
            txn->emit_failed = 1;
            return;
        }
        s->counts = c;
        s->cap_counts = cap;
    }
    s->counts[s->n_counts++] = (count_rec_t){counter, delta};
}

uint64_t store_txn_next_revision(store_txn_t *txn) { return txn->next_rev; }

int64_t store_txn_now_ms(store_txn_t *txn) { return txn->now_ms; }

store_iter_t *store_txn_iter(store_txn_t *txn, store_cf_t *cf) {
    return store_txn_iter_prefix(txn, cf, NULL, 0);
}

store_iter_t *store_txn_iter_prefix(store_txn_t *txn, store_cf_t *cf,
                                    const void *prefix, size_t len) {
    store_t *s = txn->store;
    store_iter_t *it = calloc(1, sizeof(*it));
    rocksdb_iterator_t *base;
    size_t elen;

    if (it == NULL)
        return NULL;
    if (prefix != NULL && len > 0) {
        if ((it->upper = malloc(len)) == NULL ||
            (it->ro = rocksdb_readoptions_create()) == NULL) {
            free(it->upper);
            free(it);
            return NULL;
        }
        /* All 0xff: no end; the walk's own check stops it. */
        if ((elen = store_prefix_end(prefix, len, it->upper)) > 0)
            rocksdb_readoptions_set_iterate_upper_bound(it->ro, it->upper,
                                                        elen);
    }
    base = rocksdb_create_iterator_cf(s->db, it->ro ? it->ro : s->ropts,
                                      cf->h);
    it->it = rocksdb_writebatch_wi_create_iterator_with_base_cf(s->wb, base,
                                                                cf->h);
    return it;
}

/* ---- Reads -------------------------------------------------------------- */

reel_code_t store_get(store_t *s, store_cf_t *cf, const void *key, size_t klen,
                      char **val, size_t *vlen, reel_status_t *st) {
    char *err = NULL;

    perf_off();
    *val = NULL;
    if (REEL_FAULT("store.get"))
        return reel_status_set(st, REEL_INTERNAL, "read: injected fault");
    *val = rocksdb_get_cf(s->db, s->ropts, cf->h, key, klen, vlen, &err);
    if (err != NULL)
        return take_err(st, REEL_INTERNAL, &err, "read");
    return *val != NULL ? REEL_OK : REEL_NOT_FOUND;
}

reel_code_t store_snapshot_create(store_t *s, store_snapshot_t **out,
                                  reel_status_t *st) {
    store_snapshot_t *snap = calloc(1, sizeof(*snap));
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    char *val = NULL, *err = NULL;
    size_t vlen = 0;
    reel_code_t rc = REEL_OK;

    *out = NULL;
    if (snap == NULL || ro == NULL) {
        free(snap);
        if (ro != NULL)
            rocksdb_readoptions_destroy(ro);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    perf_off();
    snap->snap = rocksdb_create_snapshot(s->db);
    rocksdb_readoptions_set_snapshot(ro, snap->snap);
    /* meta/revision commits with every group: reading it at the snapshot
     * gives exactly the revision the snapshot includes. */
    if (REEL_FAULT("store.snapshot"))
        rc = reel_status_set(st, REEL_INTERNAL,
                             "reading the snapshot's revision: injected "
                             "fault");
    else
        val = rocksdb_get_cf(s->db, ro, s->meta->h, META_REVISION,
                             strlen(META_REVISION), &vlen, &err);
    rocksdb_readoptions_destroy(ro);
    if (err != NULL)
        rc = take_err(st, REEL_INTERNAL, &err,
                      "reading the snapshot's revision");
    else if (rc == REEL_OK && (val == NULL || vlen != 8))
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "the stored revision is missing or malformed");
    if (rc != REEL_OK) {
        /* Never a snapshot at a made-up revision: readers would skip or
         * repeat changes. */
        rocksdb_free(val);
        rocksdb_release_snapshot(s->db, snap->snap);
        free(snap);
        return rc;
    }
    snap->revision = reel_be64_get((const unsigned char *)val);
    rocksdb_free(val);
    *out = snap;
    return REEL_OK;
}

uint64_t store_snapshot_revision(const store_snapshot_t *snap) {
    return snap->revision;
}

reel_code_t store_snapshot_get(store_t *s, const store_snapshot_t *snap,
                               store_cf_t *cf, const void *key, size_t klen,
                               char **val, size_t *vlen, reel_status_t *st) {
    rocksdb_readoptions_t *ro;
    char *err = NULL;

    if (snap == NULL)
        return store_get(s, cf, key, klen, val, vlen, st);
    perf_off();
    *val = NULL;
    if (REEL_FAULT("store.get"))
        return reel_status_set(st, REEL_INTERNAL, "read: injected fault");
    ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(ro, snap->snap);
    *val = rocksdb_get_cf(s->db, ro, cf->h, key, klen, vlen, &err);
    rocksdb_readoptions_destroy(ro);
    if (err != NULL)
        return take_err(st, REEL_INTERNAL, &err, "read");
    return *val != NULL ? REEL_OK : REEL_NOT_FOUND;
}

void store_snapshot_release(store_t *s, store_snapshot_t *snap) {
    if (snap == NULL)
        return;
    rocksdb_release_snapshot(s->db, snap->snap);
    free(snap);
}

store_iter_t *store_iter_create(store_t *s, store_cf_t *cf,
                                const store_snapshot_t *snap) {
    return store_iter_create_below(s, cf, snap, NULL, 0);
}

store_iter_t *store_iter_create_below(store_t *s, store_cf_t *cf,
                                      const store_snapshot_t *snap,
                                      const void *upper, size_t ulen) {
    store_iter_t *it = calloc(1, sizeof(*it));

    if (it == NULL)
        return NULL;
    perf_off();
    if (snap != NULL || cf->kind == STORE_CF_TAIL || upper != NULL) {
        if ((it->ro = rocksdb_readoptions_create()) == NULL)
            goto fail;
        if (snap != NULL)
            rocksdb_readoptions_set_snapshot(it->ro, snap->snap);
    }
    if (upper != NULL) {
        if ((it->upper = malloc(ulen ? ulen : 1)) == NULL)
            goto fail;
        memcpy(it->upper, upper, ulen);
        rocksdb_readoptions_set_iterate_upper_bound(it->ro, it->upper, ulen);
    }
    if (cf->kind == STORE_CF_TAIL) {
        /* Tails are read in forward passes: read ahead, and keep their
         * blocks out of the cache the live keys use. A subscriber of the
         * WAL (the tail reeld has) replays in rounds, each until its send
         * queue is full and each on a new iterator (so that a stalled one
         * pins nothing): the read ahead is sized to what a round uses,
         * since a larger buffer is read, faulted in and dropped every
         * round (with 1 MiB, `reel-bench tail` was 23-29% slower). */
        rocksdb_readoptions_set_fill_cache(it->ro, 0);
        rocksdb_readoptions_set_readahead_size(it->ro, STORE_TAIL_READAHEAD);
    }
    it->it = rocksdb_create_iterator_cf(s->db, it->ro ? it->ro : s->ropts,
                                        cf->h);
    return it;
fail:
    if (it->ro != NULL)
        rocksdb_readoptions_destroy(it->ro);
    free(it);
    return NULL;
}

store_iter_t *store_iter_prefix(store_t *s, store_cf_t *cf,
                                const store_snapshot_t *snap,
                                const void *prefix, size_t len) {
    char *end = malloc(len ? len : 1);
    size_t elen;
    store_iter_t *it;

    if (end == NULL)
        return NULL;
    elen = store_prefix_end(prefix, len, end);
    it = store_iter_create_below(s, cf, snap, elen > 0 ? end : NULL, elen);
    free(end);
    return it;
}

reel_code_t store_get_first(store_t *s, store_txn_t *txn,
                            const store_snapshot_t *snap, store_cf_t *cf,
                            const void *k0, size_t l0, const void *k1,
                            size_t l1, char **val, size_t *vlen, int *which,
                            reel_status_t *st) {
    store_snapshot_t *own = NULL;
    reel_code_t rc;

    *which = 0;
    for (int i = 0; i < 2; i++) {
        const void *k = i ? k1 : k0;
        size_t l = i ? l1 : l0;

        rc = txn != NULL
                 ? store_txn_get(txn, cf, k, l, val, vlen, st)
                 : store_snapshot_get(s, snap, cf, k, l, val, vlen, st);
        *which = i;
        if (rc != REEL_NOT_FOUND)
            break;
        reel_status_fini(st);
        if (i == 0 && txn == NULL && snap == NULL) {
            /* Not at k0 a moment ago: both again, at one snapshot. */
            if ((rc = store_snapshot_create(s, &own, st)) != REEL_OK)
                return rc;
            snap = own;
            i = -1;
        }
    }
    store_snapshot_release(s, own);
    return rc;
}

const char *store_merge_key(store_merge_t *m, size_t *klen, const char **val,
                            size_t *vlen, int *place) {
    const char *best = NULL;

    for (int i = 0; i < 2; i++) {
        store_iter_t *it = m->it[i];
        const char *k;
        size_t l;

        if (it == NULL || !store_iter_valid(it))
            continue;
        k = store_iter_key(it, &l);
        if (l < m->base_len[i] || memcmp(k, m->base[i], m->base_len[i]) != 0)
            continue;
        k += m->skip[i], l -= m->skip[i];
        if (best != NULL) {
            int c = memcmp(k, best, l < *klen ? l : *klen);

            if (c > 0 || (c == 0 && l >= *klen))
                continue;
        }
        best = k, *klen = l, *place = i;
        *val = store_iter_value(it, vlen);
    }
    return best;
}

reel_code_t store_merge_status(store_merge_t *m, reel_status_t *st) {
    reel_code_t rc = REEL_OK;

    for (int i = 0; i < 2 && rc == REEL_OK; i++)
        if (m->it[i] != NULL)
            rc = store_iter_status(m->it[i], st);
    return rc;
}

size_t store_prefix_end(const void *prefix, size_t len, char *out) {
    const unsigned char *p = prefix;

    while (len > 0 && p[len - 1] == 0xff)
        len--;
    if (len == 0)
        return 0;
    memcpy(out, p, len);
    out[len - 1] = (char)(p[len - 1] + 1);
    return len;
}

void store_iter_seek(store_iter_t *it, const void *key, size_t klen) {
    if (REEL_FAULT("store.iter"))
        it->failed = 1;
    rocksdb_iter_seek(it->it, key, klen);
}

void store_iter_seek_first(store_iter_t *it) {
    if (REEL_FAULT("store.iter"))
        it->failed = 1;
    rocksdb_iter_seek_to_first(it->it);
}

int store_iter_valid(store_iter_t *it) {
    return !it->failed && rocksdb_iter_valid(it->it);
}

void store_iter_next(store_iter_t *it) {
    if (REEL_FAULT("store.iter"))
        it->failed = 1;
    rocksdb_iter_next(it->it);
}

const char *store_iter_key(store_iter_t *it, size_t *klen) {
    return rocksdb_iter_key(it->it, klen);
}

const char *store_iter_value(store_iter_t *it, size_t *vlen) {
    return rocksdb_iter_value(it->it, vlen);
}

reel_code_t store_iter_status(store_iter_t *it, reel_status_t *st) {
    char *err = NULL;

    if (it->failed)
        return reel_status_set(st, REEL_INTERNAL, "iterate: injected fault");
    rocksdb_iter_get_error(it->it, &err);
    if (err != NULL)
        return take_err(st, REEL_INTERNAL, &err, "iterate");
    return REEL_OK;
}

void store_iter_destroy(store_iter_t *it) {
    if (it == NULL)
        return;
    rocksdb_iter_destroy(it->it);
    if (it->ro != NULL)
        rocksdb_readoptions_destroy(it->ro);
    free(it->upper);
    free(it);
}

/* ---- Writes outside the writer ------------------------------------------- */

/* The store's failure (its cause, and to restart); with stopping, the
 * shutdown too. */
static reel_code_t refused_for(store_t *s, int stopping, reel_status_t *st) {
    reel_code_t rc = REEL_OK;

    bg_fail(s);
    if (!atomic_load(&s->failed) && !stopping)
        return REEL_OK;
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&s->failed)) {
        reel_status_copy(st, &s->failure);
        rc = s->failure.code;
    } else if (stopping && s->stopping) {
        rc = reel_status_set(st, REEL_UNAVAILABLE,
                             "the server is shutting down");
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static reel_code_t direct_refused(store_t *s, reel_status_t *st) {
    return refused_for(s, 0, st);
}

/* A failed write to the bulk family: the store's failure if RocksDB's
 * background work failed meanwhile (the whole database refuses writes
 * then), else that upload's own (code, "what: err"). */
static reel_code_t bulk_failed(store_t *s, reel_code_t code, char **err,
                               const char *what, reel_status_t *st) {
    reel_status_t mine = REEL_STATUS_INIT;

    take_err(&mine, code, err, what);
    if (direct_refused(s, st) != REEL_OK) {
        reel_status_fini(&mine);
        return st->code;
    }
    reel_status_move(st, &mine);
    return st->code;
}

/*
 * The floor, for an upload's next chunk: looked at now (an upload writes
 * 100 ms's worth of a disk between two looks of disk_room), and less what
 * the bulk family's memtables hold: up to BULK_MEMTABLES x BULK_BUFFER of
 * staged bytes, acknowledged to no one yet and still to land on the disk.
 */
static reel_code_t bulk_room(store_t *s, store_cf_t *cf, reel_status_t *st) {
    struct statvfs v;
    uint64_t avail, held = 0;

    if (s->min_free == 0 || statvfs(s->dir, &v) != 0)
        return REEL_OK;
    avail = (uint64_t)v.f_bavail * v.f_frsize;
    if (rocksdb_property_int_cf(s->db, cf->h,
                                "rocksdb.cur-size-all-mem-tables",
                                &held) != 0)
        held = 0;
    if (avail >= held && avail - held >= s->min_free)
        return REEL_OK;
    return reel_status_set(
        st, REEL_RESOURCE_EXHAUSTED,
        "the data dir's disk has %llu bytes free, %llu of them taken by "
        "uploads still in memory, less than the %llu kept free "
        "(--min-free-disk-bytes): this upload is refused; reads and deletes "
        "go on",
        (unsigned long long)avail, (unsigned long long)held,
        (unsigned long long)s->min_free);
}

/* A bulk writer is at work: the governor holds the rate down for it. */
static void bulk_step(store_t *s) {
    int64_t now = reel_clock_mono_ns();

    atomic_store_explicit(&s->bulk_last_ns, now, memory_order_relaxed);
    govern(s, now);
}

reel_code_t store_bulk_put(store_t *s, store_cf_t *cf, const void *key,
                           size_t klen, const void *val, size_t vlen,
                           reel_status_t *st) {
    char *err = NULL;
    reel_code_t rc;

    if ((rc = direct_refused(s, st)) != REEL_OK ||
        (rc = disk_room(s, st)) != REEL_OK ||
        (rc = bulk_room(s, cf, st)) != REEL_OK)
        return rc;
    if (cf->kind != STORE_CF_BULK)
        return reel_status_set(st, REEL_INTERNAL,
                               "column family %s: not a bulk family",
                               cf->name);
    if (REEL_FAULT("store.bulk_put"))
        return reel_status_set(st, REEL_INTERNAL,
                               "write to %s: injected fault", cf->name);
    /* The bulk writer waits for the flushes it caused, so that RocksDB
     * never stops every family's writes for it (BULK_MEMTABLES). */
    for (;;) {
        uint64_t imm = 0;

        if (rocksdb_property_int_cf(s->db, cf->h,
                                    "rocksdb.num-immutable-mem-table",
                                    &imm) != 0 ||
            imm < BULK_IMMUTABLE)
            break;
        /* A flush that failed never ends the wait: the failure does, and
         * so does a shutdown. */
        if ((rc = refused_for(s, 1, st)) != REEL_OK)
            return rc;
        bulk_step(s);
        nanosleep(&(struct timespec){0, 1000000L}, NULL);
    }
    bulk_step(s);
    rocksdb_put_cf(s->db, s->bulk_wopts, cf->h, key, klen, val, vlen, &err);
    if (err != NULL)
        return bulk_failed(s, REEL_INTERNAL, &err, "write to the bulk family",
                           st);
    return REEL_OK;
}

/*
 * Every flush starts a new log file, and a log file is deleted only once
 * every family with writes in it has flushed. The families the writer
 * commits to (the meta family, at every commit) flush when the live log
 * reaches STORE_WAL_MAX, which counts bytes: with an upload's flush every
 * few hundred bytes of commits, the logs pile up by the thousand (6,428
 * files after 20 minutes of uploads in one test, and a restart after a
 * crash that took 4.9 s to read them). Flushing those families too, every
 * BULK_FLUSHES_PER_RELEASE bulk flushes (a sync, or a compaction of a
 * range, which flushes first), releases them. A failure here leaves the
 * logs for the next time: nothing is lost by it.
 */
static void bulk_flushed(store_t *s) {
    rocksdb_flushoptions_t *fo;

    if (atomic_fetch_add(&s->bulk_flushes, 1) + 1 < BULK_FLUSHES_PER_RELEASE)
        return;
    atomic_store(&s->bulk_flushes, 0);
    if ((fo = rocksdb_flushoptions_create()) == NULL)
        return;
    rocksdb_flushoptions_set_wait(fo, 1);
    for (size_t i = 0; i < s->n_cfs; i++) {
        char *err = NULL;

        if (s->cfs[i].kind == STORE_CF_BULK)
            continue;
        rocksdb_flush_cf(s->db, fo, s->cfs[i].h, &err);
        if (err != NULL) {
            REEL_WARN("store", "flushing %s to release log files: %s",
                      s->cfs[i].name, err);
            rocksdb_free(err);
            break;
        }
    }
    rocksdb_flushoptions_destroy(fo);
}

reel_code_t store_bulk_sync(store_t *s, store_cf_t *cf, reel_status_t *st) {
    rocksdb_flushoptions_t *fo;
    char *err = NULL;
    reel_code_t rc;

    if ((rc = direct_refused(s, st)) != REEL_OK)
        return rc;
    if (REEL_FAULT("store.bulk_sync"))
        return reel_status_set(st, REEL_INTERNAL,
                               "flush of %s: injected fault", cf->name);
    /* A flush writes the memtable to table and blob files, syncs them and
     * records them in the synced MANIFEST: from then on they survive a
     * crash without the log. */
    if ((fo = rocksdb_flushoptions_create()) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rocksdb_flushoptions_set_wait(fo, 1);
    atomic_fetch_add(&s->bulk_syncs, 1);
    bulk_step(s);
    rocksdb_flush_cf(s->db, fo, cf->h, &err);
    bulk_step(s);
    if (err == NULL)
        bulk_flushed(s);
    atomic_fetch_sub(&s->bulk_syncs, 1);
    rocksdb_flushoptions_destroy(fo);
    if (err != NULL)
        return bulk_failed(s, REEL_INTERNAL, &err, "flush of the bulk family",
                           st);
    return REEL_OK;
}

reel_code_t store_put_synced(store_t *s, store_cf_t *cf, const void *key,
                             size_t klen, const void *val, size_t vlen,
                             reel_status_t *st) {
    char *err = NULL;
    reel_code_t rc;

    if ((rc = direct_refused(s, st)) != REEL_OK)
        return rc;
    if (REEL_FAULT("store.put_synced"))
        return reel_status_set(st, REEL_INTERNAL,
                               "write to %s: injected fault", cf->name);
    rocksdb_put_cf(s->db, s->wopts, cf->h, key, klen, val, vlen, &err);
    if (err != NULL)
        return take_err(st, REEL_INTERNAL, &err, "synced write");
    return REEL_OK;
}

reel_code_t store_delete_range(store_t *s, store_cf_t *range_cf,
                               const void *begin, size_t blen,
                               const void *end, size_t elen,
                               store_cf_t *key_cf, const void *key,
                               size_t klen, reel_status_t *st) {
    rocksdb_writebatch_t *b;
    char *err = NULL;
    reel_code_t rc;

    if ((rc = direct_refused(s, st)) != REEL_OK)
        return rc;
    if ((b = rocksdb_writebatch_create()) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rocksdb_writebatch_delete_range_cf(b, range_cf->h, begin, blen, end,
                                       elen);
    if (key != NULL)
        rocksdb_writebatch_delete_cf(b, key_cf->h, key, klen);
    rocksdb_write(s->db, s->direct_wopts, b, &err);
    rocksdb_writebatch_destroy(b);
    if (err != NULL)
        return take_err(st, REEL_INTERNAL, &err, "range delete");
    return REEL_OK;
}

reel_code_t store_compact_range(store_t *s, store_cf_t *cf, const void *begin,
                                size_t blen, const void *end, size_t elen,
                                reel_status_t *st) {
    reel_code_t rc;

    if ((rc = direct_refused(s, st)) != REEL_OK)
        return rc;
    rocksdb_compact_range_cf(s->db, cf->h, begin, blen, end, elen);
    if (cf->kind == STORE_CF_BULK)
        bulk_flushed(s);
    return REEL_OK;
}

void store_manual_compactions(store_t *s, int allow) {
    if (allow)
        rocksdb_enable_manual_compaction(s->db);
    else
        rocksdb_disable_manual_compaction(s->db);
}

static uint64_t cf_property(store_t *s, store_cf_t *cf, const char *name) {
    char *v = rocksdb_property_value_cf(s->db, cf->h, name);
    uint64_t n = 0;

    if (v != NULL) {
        n = strtoull(v, NULL, 10);
        rocksdb_free(v);
    }
    return n;
}

reel_code_t store_bulk_collect(store_t *s, store_cf_t *cf, int *ran,
                               reel_status_t *st) {
    static const char *const keys[2] = {"enable_blob_garbage_collection",
                                        "blob_garbage_collection_age_cutoff"};
    static const char *const on[2] = {"true", "1.0"};
    static const char *const off[2] = {"false", "0.25"};
    uint64_t garbage, size;
    rocksdb_compactoptions_t *co;
    char *err = NULL;
    reel_code_t rc;

    *ran = 0;
    if (cf->kind != STORE_CF_BULK)
        return reel_status_set(st, REEL_INTERNAL,
                               "column family %s: not a bulk family",
                               cf->name);
    if ((rc = direct_refused(s, st)) != REEL_OK)
        return rc;
    garbage = cf_property(s, cf, "rocksdb.live-blob-file-garbage-size");
    size = cf_property(s, cf, "rocksdb.live-blob-file-size");
    /* Live bytes at most twice the garbage: the rewrite frees at least
     * half what it writes, and garbage stays under a third of the files. */
    if (garbage == 0 || garbage < size / 3)
        return REEL_OK;
    if ((co = rocksdb_compactoptions_create()) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    /* The last level too (by default a compaction of a range leaves it
     * when no filter would change it), and beside the automatic ones. */
    rocksdb_compactoptions_set_bottommost_level_compaction(co, 2 /* kForce */);
    rocksdb_compactoptions_set_exclusive_manual_compaction(co, 0);
    rocksdb_set_options_cf(s->db, cf->h, 2, keys, on, &err);
    if (err != NULL) {
        rocksdb_compactoptions_destroy(co);
        return take_err(st, REEL_INTERNAL, &err, "blob collection on");
    }
    *ran = 1;
    rocksdb_compact_range_cf_opt(s->db, cf->h, co, NULL, 0, NULL, 0);
    rocksdb_compactoptions_destroy(co);
    rocksdb_set_options_cf(s->db, cf->h, 2, keys, off, &err);
    if (err != NULL)
        return take_err(st, REEL_INTERNAL, &err, "blob collection off");
    return REEL_OK;
}

uint64_t store_cf_bytes(store_t *s, store_cf_t *cf) {
    /* The live files: those the current version of the tree uses. Files
     * an older version still holds (an open read) are about to go. */
    return cf_property(s, cf, "rocksdb.live-sst-files-size") +
           cf_property(s, cf, "rocksdb.live-blob-file-size") +
           cf_property(s, cf, "rocksdb.cur-size-all-mem-tables");
}
