/*
 * journal/journal.c: runs, journals, leases and fencing.
 *
 * Column family `runs` (integers big-endian, strings as base/codec.h):
 *   'r' run_id                         -> run record
 *   'i' app 0 user 0 session 0 inv     -> run_id     (BeginRun idempotency)
 *   's' app 0 user 0 session 0 run_id  -> ""         (runs of a session)
 *   'a' run_id                         -> ""         (RUNNABLE or RUNNING)
 *   run record: u8 format (1), u8 status, u32 n_labels, u64 next_seq,
 *     u64 lease_epoch, i64 lease_expires_at_ms, i64 created_at_ms,
 *     i64 updated_at_ms, i64 ended_at_ms, str run_id, app, user, session,
 *     invocation_id, lease_owner, waiting_on, result, then n_labels x
 *     (str key, str value).
 *
 * Column family `journal`:
 *   'e' run_id seq(8)                  -> entry record
 *   'k' run_id idempotency_key         -> seq(8)
 *   entry record: u8 format (1), u64 seq, u64 lease_epoch, u64 revision,
 *     i64 ts_ms, str run_id, kind, payload, idempotency_key.
 *
 * run_ids are ULIDs made on the writer thread: 48 bits of milliseconds and
 * 80 random bits, incremented within one millisecond, so they are unique
 * and sort by creation.
 *
 * Invariants
 *   - Every check (lease epoch, status, expected seq, idempotency) and the
 *     write it guards run in one apply function on the writer thread, so no
 *     other write can come between them: fencing has no race. An append
 *     checks the lease first, then its idempotency key (a retry must carry
 *     the original kind and payload), then expected_seq.
 *   - An entry, its idempotency index and the run's next_seq commit
 *     together, so seqs are gapless and a retried key finds its entry.
 *   - Every mutation that writes emits exactly one change: a JOURNAL change
 *     (the entry record) for an append, a RUNS change (the run record) for
 *     the rest. A BeginRun that only returns an existing run, and a
 *     duplicate append, write nothing.
 *   - 'a' holds exactly the RUNNABLE and RUNNING runs.
 *
 * Recovery: nothing beyond RocksDB's own; the ULID clock restarts from the
 * wall clock, and ids made in the same millisecond as before a restart are
 * still distinct by their random bits.
 */
#include "journal/journal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <uthash.h>

#include "base/clock.h"
#include "base/codec.h"
#include "base/fault.h"
#include "base/json.h"
#include "base/pattern.h"
#include "base/text.h"

#define REC_FORMAT 1
#define RUN_HDR 52 /* format..ended_at_ms */

enum { CHANGE_RUN = 1, CHANGE_ENTRY = 2 };

#define CF_RUNS "runs"
#define CF_JOURNAL "journal"

/* Both are read by key before most writes (a run, an idempotency key). */
const store_cf_desc_t journal_cfs[] = {
    {CF_RUNS, STORE_CF_LOOKUP},
    {CF_JOURNAL, STORE_CF_LOOKUP},
    {NULL, STORE_CF_PLAIN},
};

typedef struct sub_bucket {
    UT_hash_handle hh;
    journal_sub_t *head;
    char run_id[JOURNAL_RUN_ID_LEN + 1];
} sub_bucket_t;

struct journal {
    store_t *store;
    store_cf_t *cf_runs, *cf_journal;
    journal_limits_t lim;
    /* The ULID clock: writer thread only. */
    int64_t ulid_ms;
    unsigned char ulid_rand[10];
    journal_pending_fn pending;
    void *pending_arg;
    /* Subscriptions; lock order hub_mu before a subscription's mu. */
    pthread_mutex_t hub_mu;
    uint64_t last_published;
    sub_bucket_t *subs;
};

static const char *const status_names[] = {
    "STATUS_UNSPECIFIED", "RUNNABLE", "RUNNING",  "WAITING",
    "COMPLETED",          "FAILED",   "CANCELLED",
};

const char *run_status_name(run_status_t s) {
    return (int)s >= 0 && s <= RUN_CANCELLED ? status_names[s] : "UNKNOWN";
}

int run_status_terminal(run_status_t s) {
    return s == RUN_COMPLETED || s == RUN_FAILED || s == RUN_CANCELLED;
}

/* ---- Records ------------------------------------------------------------- */

static void run_encode(const run_t *r, reel_wbuf_t *w) {
    reel_wbuf_u8(w, REC_FORMAT);
    reel_wbuf_u8(w, (uint8_t)r->status);
    reel_wbuf_u32(w, (uint32_t)r->n_labels);
    reel_wbuf_u64(w, r->next_seq);
    reel_wbuf_u64(w, r->lease_epoch);
    reel_wbuf_u64(w, (uint64_t)r->lease_expires_at_ms);
    reel_wbuf_u64(w, (uint64_t)r->created_at_ms);
    reel_wbuf_u64(w, (uint64_t)r->updated_at_ms);
    reel_wbuf_u64(w, (uint64_t)r->ended_at_ms);
    reel_wbuf_str(w, r->run_id);
    reel_wbuf_str(w, r->app);
    reel_wbuf_str(w, r->user);
    reel_wbuf_str(w, r->session);
    reel_wbuf_str(w, r->invocation_id);
    reel_wbuf_str(w, r->lease_owner);
    reel_wbuf_str(w, r->waiting_on);
    reel_wbuf_str(w, r->result);
    for (size_t i = 0; i < r->n_labels; i++) {
        reel_wbuf_str(w, r->labels[i].key);
        reel_wbuf_str(w, r->labels[i].value);
    }
}

/* Decodes into one block: the labels array, then a copy of the record. */
static int run_decode(const void *buf, size_t len, run_t *r) {
    const unsigned char *b = buf;
    reel_rbuf_t rd;
    size_t n_labels, lab_bytes;
    run_label_t *labels;
    char *block, *copy;

    memset(r, 0, sizeof(*r));
    if (len < RUN_HDR || b[0] != REC_FORMAT)
        return -1;
    n_labels = ((size_t)b[2] << 24) | ((size_t)b[3] << 16) |
               ((size_t)b[4] << 8) | b[5];
    if (n_labels > JOURNAL_MAX_LABELS)
        return -1;
    lab_bytes = n_labels * sizeof(run_label_t);
    block = malloc(lab_bytes + len);
    if (block == NULL)
        return -1;
    labels = (run_label_t *)block;
    copy = block + lab_bytes;
    memcpy(copy, buf, len);
    reel_rbuf_init(&rd, copy, len);
    reel_rbuf_u8(&rd);
    r->status = (run_status_t)reel_rbuf_u8(&rd);
    reel_rbuf_u32(&rd);
    r->next_seq = reel_rbuf_u64(&rd);
    r->lease_epoch = reel_rbuf_u64(&rd);
    r->lease_expires_at_ms = (int64_t)reel_rbuf_u64(&rd);
    r->created_at_ms = (int64_t)reel_rbuf_u64(&rd);
    r->updated_at_ms = (int64_t)reel_rbuf_u64(&rd);
    r->ended_at_ms = (int64_t)reel_rbuf_u64(&rd);
    r->run_id = reel_rbuf_str(&rd);
    r->app = reel_rbuf_str(&rd);
    r->user = reel_rbuf_str(&rd);
    r->session = reel_rbuf_str(&rd);
    r->invocation_id = reel_rbuf_str(&rd);
    r->lease_owner = reel_rbuf_str(&rd);
    r->waiting_on = reel_rbuf_str(&rd);
    r->result = reel_rbuf_str(&rd);
    for (size_t i = 0; i < n_labels; i++) {
        labels[i].key = reel_rbuf_str(&rd);
        labels[i].value = reel_rbuf_str(&rd);
    }
    r->labels = labels;
    r->n_labels = n_labels;
    r->mem_ = block;
    if (reel_rbuf_ok(&rd) != 0) {
        run_fini(r);
        return -1;
    }
    return 0;
}

static void entry_encode(const journal_entry_t *e, reel_wbuf_t *w) {
    reel_wbuf_u8(w, REC_FORMAT);
    reel_wbuf_u64(w, e->seq);
    reel_wbuf_u64(w, e->lease_epoch);
    reel_wbuf_u64(w, e->revision);
    reel_wbuf_u64(w, (uint64_t)e->ts_ms);
    reel_wbuf_str(w, e->run_id);
    reel_wbuf_str(w, e->kind);
    reel_wbuf_str(w, e->payload);
    reel_wbuf_str(w, e->idempotency_key);
}

/* 0, -1 if malformed, -2 out of memory (not to be reported as corrupt). */
static int entry_decode(const void *buf, size_t len, journal_entry_t *e) {
    reel_rbuf_t rd;
    char *copy;

    memset(e, 0, sizeof(*e));
    if (len < 1 || ((const unsigned char *)buf)[0] != REC_FORMAT)
        return -1;
    copy = malloc(len);
    if (copy == NULL)
        return -2;
    memcpy(copy, buf, len);
    reel_rbuf_init(&rd, copy, len);
    reel_rbuf_u8(&rd);
    e->seq = reel_rbuf_u64(&rd);
    e->lease_epoch = reel_rbuf_u64(&rd);
    e->revision = reel_rbuf_u64(&rd);
    e->ts_ms = (int64_t)reel_rbuf_u64(&rd);
    e->run_id = reel_rbuf_str(&rd);
    e->kind = reel_rbuf_str(&rd);
    e->payload = reel_rbuf_str(&rd);
    e->idempotency_key = reel_rbuf_str(&rd);
    e->mem_ = copy;
    if (reel_rbuf_ok(&rd) != 0) {
        journal_entry_fini(e);
        return -1;
    }
    return 0;
}

void run_fini(run_t *r) {
    if (r == NULL)
        return;
    free(r->mem_);
    memset(r, 0, sizeof(*r));
}

void journal_entry_fini(journal_entry_t *e) {
    if (e == NULL)
        return;
    free(e->mem_);
    memset(e, 0, sizeof(*e));
}

/* ---- Keys ---------------------------------------------------------------- */

typedef struct key {
    char *p;
    size_t len;
} key_t_;

/* tag, then the given strings each followed by a NUL except the last,
 * then an optional 8-byte number. */
static key_t_ make_key(char tag, const char *const *parts, size_t n,
                       int with_num, uint64_t num) {
    reel_wbuf_t w = {0};
    key_t_ k = {NULL, 0};

    reel_wbuf_u8(&w, (uint8_t)tag);
    for (size_t i = 0; i < n; i++) {
        reel_wbuf_raw(&w, parts[i], strlen(parts[i]));
        if (i + 1 < n)
            reel_wbuf_u8(&w, 0);
    }
    if (with_num)
        reel_wbuf_u64(&w, num);
    if (reel_wbuf_done(&w) == 0) {
        k.p = (char *)w.p;
        k.len = w.len;
    }
    return k;
}

static key_t_ run_key(const char *run_id) {
    return make_key('r', &run_id, 1, 0, 0);
}

static key_t_ active_key(const char *run_id) {
    return make_key('a', &run_id, 1, 0, 0);
}

static key_t_ entry_key(const char *run_id, uint64_t seq) {
    return make_key('e', &run_id, 1, 1, seq);
}

static key_t_ idem_key(const char *run_id, const char *idem) {
    /* run_ids have a fixed length, so no separator is needed. */
    const char *parts[1];
    char buf[JOURNAL_RUN_ID_LEN + JOURNAL_MAX_IDEMPOTENCY + 1];

    snprintf(buf, sizeof(buf), "%s%s", run_id, idem);
    parts[0] = buf;
    return make_key('k', parts, 1, 0, 0);
}

static key_t_ invocation_key(const run_t *r) {
    const char *parts[4] = {r->app, r->user, r->session, r->invocation_id};
    return make_key('i', parts, 4, 0, 0);
}

static key_t_ session_key(const run_t *r) {
    const char *parts[4] = {r->app, r->user, r->session, r->run_id};
    return make_key('s', parts, 4, 0, 0);
}

/* ---- ULIDs ---------------------------------------------------------------- */

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static void ulid_next(journal_t *j, int64_t now_ms, char out[27]) {
    unsigned char bytes[16];
    int bit = 0;

    if (now_ms > j->ulid_ms) {
        j->ulid_ms = now_ms;
        if (getrandom(j->ulid_rand, sizeof(j->ulid_rand), 0) !=
            (ssize_t)sizeof(j->ulid_rand)) {
            /* Fall back to the clock's nanoseconds: still unique per ms
             * together with the increment below. */
            uint64_t ns = (uint64_t)reel_clock_mono_ns();
            for (int i = 0; i < 8; i++)
                j->ulid_rand[2 + i] = (unsigned char)(ns >> (8 * i));
        }
    } else {
        for (int i = 9; i >= 0 && ++j->ulid_rand[i] == 0; i--) {
        }
    }
    for (int i = 0; i < 6; i++)
        bytes[i] = (unsigned char)((uint64_t)j->ulid_ms >> (8 * (5 - i)));
    memcpy(bytes + 6, j->ulid_rand, 10);
    /* 128 bits as 26 base-32 digits: two leading zero bits, then 5 at a time. */
    for (int c = 0; c < 26; c++) {
        int v = 0;
        for (int b = 0; b < 5; b++, bit++) {
            int pos = bit - 2; /* the first two bits are padding */
            v <<= 1;
            if (pos >= 0)
                v |= (bytes[pos / 8] >> (7 - pos % 8)) & 1;
        }
        out[c] = crockford[v];
    }
    out[26] = '\0';
}

/* ---- Validation ----------------------------------------------------------- */

reel_code_t journal_check_run_id(const char *field, const char *id,
                                 reel_status_t *st) {
    if (strlen(id) != JOURNAL_RUN_ID_LEN ||
        reel_check_charset(field, id, JOURNAL_RUN_ID_LEN, JOURNAL_RUN_ID_LEN,
                           "0-9A-Z", NULL) != REEL_OK)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: must be %d characters of [0-9A-Z] "
                               "(got \"%.40s\")",
                               field, JOURNAL_RUN_ID_LEN, id);
    return REEL_OK;
}

static reel_code_t check_run_id(const char *id, reel_status_t *st) {
    return journal_check_run_id("run_id", id, st);
}

static reel_code_t check_name(const char *field, const char *s,
                              reel_status_t *st) {
    return reel_check_name(field, s ? s : "", s ? strlen(s) : 0,
                           JOURNAL_MAX_NAME, st);
}

static reel_code_t check_ttl(int64_t *ttl, reel_status_t *st) {
    if (*ttl == 0)
        *ttl = JOURNAL_DEFAULT_TTL_MS;
    if (*ttl < 1 || *ttl > JOURNAL_MAX_TTL_MS)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "lease_ttl_ms: must be 1-%d (got %lld)",
                               JOURNAL_MAX_TTL_MS, (long long)*ttl);
    return REEL_OK;
}

static reel_code_t check_json(const char *field, const char *s, size_t max,
                              int allow_empty, reel_status_t *st) {
    size_t len = strlen(s), off = 0;
    const char *why = NULL;

    if (len == 0 && allow_empty)
        return REEL_OK;
    if (len > max)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: %zu bytes exceeds the limit of %zu bytes",
                               field, len, max);
    if (reel_json_validate(s, len, &off, &why) != 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: not valid JSON: %s at byte %zu", field, why,
                               off);
    return REEL_OK;
}

static reel_code_t check_req(journal_t *j, journal_req_t *r,
                             reel_status_t *st) {
    reel_code_t rc = REEL_OK;

    if (r->op != JOURNAL_BEGIN && (rc = check_run_id(r->run_id ? r->run_id : "",
                                                     st)) != REEL_OK)
        return rc;
    switch (r->op) {
    case JOURNAL_BEGIN:
        if ((rc = check_name("app", r->app, st)) ||
            (rc = check_name("user", r->user, st)) ||
            (rc = check_name("session", r->session, st)) ||
            (rc = check_name("invocation_id", r->invocation_id, st)) ||
            (rc = check_name("lease_owner", r->lease_owner, st)) ||
            (rc = check_ttl(&r->lease_ttl_ms, st)))
            return rc;
        if (r->n_labels > JOURNAL_MAX_LABELS)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "labels: at most %d (got %zu)",
                                   JOURNAL_MAX_LABELS, r->n_labels);
        for (size_t i = 0; i < r->n_labels; i++) {
            const char *v = r->labels[i].value ? r->labels[i].value : "";
            const char *key = r->labels[i].key ? r->labels[i].key : "";
            if ((rc = reel_check_name("labels: key", key, strlen(key),
                                      JOURNAL_MAX_LABEL_KEY, st)))
                return rc;
            if (strlen(v) > JOURNAL_MAX_LABEL_VALUE ||
                !reel_utf8_valid(v, strlen(v)))
                return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                       "labels: the value of \"%s\" must be "
                                       "at most %d bytes of UTF-8",
                                       key,
                                       JOURNAL_MAX_LABEL_VALUE);
        }
        return REEL_OK;
    case JOURNAL_HEARTBEAT:
        return check_ttl(&r->lease_ttl_ms, st);
    case JOURNAL_CLAIM:
        if ((rc = check_name("lease_owner", r->lease_owner, st)))
            return rc;
        return check_ttl(&r->lease_ttl_ms, st);
    case JOURNAL_APPEND:
        if (r->kind == NULL || r->payload == NULL)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "kind and payload are required");
        if ((rc = reel_check_charset("kind", r->kind, strlen(r->kind),
                                     JOURNAL_MAX_KIND, JOURNAL_KIND_CHARS,
                                     st)) ||
            (rc = reel_pattern_check_name("kind", r->kind, strlen(r->kind),
                                          st)))
            return rc;
        if (r->idempotency_key != NULL &&
            (strlen(r->idempotency_key) > JOURNAL_MAX_IDEMPOTENCY ||
             !reel_utf8_valid(r->idempotency_key, strlen(r->idempotency_key))))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "idempotency_key: at most %d bytes of "
                                   "UTF-8",
                                   JOURNAL_MAX_IDEMPOTENCY);
        return check_json("payload", r->payload, j->lim.max_payload, 0, st);
    case JOURNAL_END:
        if (!run_status_terminal(r->end_status))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "status: must be COMPLETED, FAILED or "
                                   "CANCELLED (got %s)",
                                   run_status_name(r->end_status));
        return check_json("result", r->result ? r->result : "",
                          j->lim.max_payload, 1, st);
    case JOURNAL_SUSPEND:
        /* A name SendSignal refuses could never wake the run. */
        if ((rc = reel_check_charset("waiting_on",
                                     r->waiting_on ? r->waiting_on : "",
                                     r->waiting_on ? strlen(r->waiting_on) : 0,
                                     JOURNAL_MAX_SIGNAL_NAME,
                                     JOURNAL_SIGNAL_CHARS, st)))
            return rc;
        return reel_pattern_check_name("waiting_on", r->waiting_on,
                                       strlen(r->waiting_on), st);
    }
    return reel_status_set(st, REEL_INVALID_ARGUMENT, "unknown operation");
}

reel_code_t journal_validate(journal_req_t *req, size_t max_payload,
                             reel_status_t *st) {
    journal_t probe;

    memset(&probe, 0, sizeof(probe));
    probe.lim.max_payload = max_payload ? max_payload
                                        : JOURNAL_DEFAULT_MAX_PAYLOAD;
    return check_req(&probe, req, st);
}

/* ---- Create and destroy ---------------------------------------------------- */

reel_code_t journal_create(store_t *store, const journal_limits_t *limits,
                           journal_t **out, reel_status_t *st) {
    journal_t *j = calloc(1, sizeof(*j));
    reel_code_t rc;

    *out = NULL;
    if (j == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    j->store = store;
    if (limits != NULL)
        j->lim = *limits;
    if (j->lim.max_payload == 0)
        j->lim.max_payload = JOURNAL_DEFAULT_MAX_PAYLOAD;
    if ((rc = store_cf_lookup(store, CF_RUNS, &j->cf_runs, st)) != REEL_OK ||
        (rc = store_cf_lookup(store, CF_JOURNAL, &j->cf_journal, st)) !=
            REEL_OK) {
        free(j);
        return rc;
    }
    pthread_mutex_init(&j->hub_mu, NULL);
    j->last_published = store_revision(store);
    *out = j;
    return REEL_OK;
}

void journal_destroy(journal_t *j) {
    sub_bucket_t *b, *tmp;

    if (j == NULL)
        return;
    HASH_ITER(hh, j->subs, b, tmp) {
        HASH_DEL(j->subs, b);
        free(b);
    }
    pthread_mutex_destroy(&j->hub_mu);
    free(j);
}

/* ---- The writer side ---------------------------------------------------- */

/* A queued mutation with deep copies of its strings. */
typedef struct op {
    store_req_t req;
    journal_t *j;
    journal_req_t r;
    char **owned; /* every copied string, freed at the end */
    size_t n_owned;
    run_label_t *labels;
    journal_done_fn done;
    void *arg;
    journal_result_t res;
} op_t;

static const char *own(op_t *op, const char *s) {
    char *c;

    if (s == NULL)
        return NULL;
    c = strdup(s);
    if (c != NULL)
        op->owned[op->n_owned++] = c;
    return c;
}

static void op_free(op_t *op) {
    for (size_t i = 0; i < op->n_owned; i++)
        free(op->owned[i]);
    free(op->owned);
    free(op->labels);
    journal_result_fini(&op->res);
    free(op);
}

static reel_code_t load_run(journal_t *j, store_txn_t *txn,
                            const char *run_id, run_t *out,
                            reel_status_t *st) {
    key_t_ k = run_key(run_id);
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc;

    if (k.p == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = store_txn_get(txn, j->cf_runs, k.p, k.len, &val, &vlen, st);
    free(k.p);
    if (rc == REEL_NOT_FOUND)
        return reel_status_set(st, REEL_NOT_FOUND, "run %s not found", run_id);
    if (rc != REEL_OK)
        return rc;
    if (run_decode(val, vlen, out) != 0)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "run %s: stored record is corrupt", run_id);
    free(val);
    return rc;
}

static void iso_time(int64_t ms, char *buf, size_t n) {
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    size_t k;

    gmtime_r(&s, &tm);
    k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + k, n - k, ".%03dZ", (int)(ms % 1000));
}

/* FAILED_PRECONDITION unless the caller holds the run's current lease. */
static reel_code_t check_lease(const run_t *r, uint64_t epoch,
                               reel_status_t *st) {
    if (run_status_terminal(r->status))
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is %s: it takes no more writes",
                               r->run_id, run_status_name(r->status));
    if (r->status == RUN_WAITING)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is WAITING on signal \"%s\" and holds "
                               "no lease (current epoch %llu)",
                               r->run_id, r->waiting_on,
                               (unsigned long long)r->lease_epoch);
    if (r->status == RUN_RUNNABLE)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is RUNNABLE and holds no lease "
                               "(current epoch %llu): claim it first",
                               r->run_id, (unsigned long long)r->lease_epoch);
    if (epoch != r->lease_epoch)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "lease lost: current epoch %llu (yours is %llu, "
                               "held by \"%s\")",
                               (unsigned long long)r->lease_epoch,
                               (unsigned long long)epoch, r->lease_owner);
    return REEL_OK;
}

/* Writes the run, keeps the active index right, emits the change (if
 * emit), and decodes the stored run into *out (if not NULL). */
static reel_code_t put_run_rec(journal_t *j, store_txn_t *txn,
                               const run_t *r, int was_active, int emit,
                               run_t *out, reel_status_t *st) {
    reel_wbuf_t w = {0};
    key_t_ rk = run_key(r->run_id), ak = active_key(r->run_id);
    int active = r->status == RUN_RUNNABLE || r->status == RUN_RUNNING;
    reel_code_t rc = REEL_OK;

    run_encode(r, &w);
    if (reel_wbuf_done(&w) != 0 || rk.p == NULL || ak.p == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    store_txn_put(txn, j->cf_runs, rk.p, rk.len, w.p, w.len);
    if (active && !was_active)
        store_txn_put(txn, j->cf_runs, ak.p, ak.len, "", 0);
    else if (!active && was_active)
        store_txn_delete(txn, j->cf_runs, ak.p, ak.len);
    if (emit)
        store_txn_emit(txn, JOURNAL_MODULE_ID, CHANGE_RUN, w.p, w.len);
    if (out != NULL) {
        run_fini(out);
        if (run_decode(w.p, w.len, out) != 0)
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
out:
    reel_wbuf_fini(&w);
    free(rk.p);
    free(ak.p);
    return rc;
}

static reel_code_t put_run(op_t *op, store_txn_t *txn, const run_t *r,
                           int was_active, int emit, reel_status_t *st) {
    return put_run_rec(op->j, txn, r, was_active, emit, &op->res.run, st);
}

static int is_active(const run_t *r) {
    return r->status == RUN_RUNNABLE || r->status == RUN_RUNNING;
}

static reel_code_t apply_begin(op_t *op, store_txn_t *txn, int64_t now,
                               reel_status_t *st) {
    const journal_req_t *q = &op->r;
    run_t probe = {0}, cur = {0}, nr;
    key_t_ ik, sk = {NULL, 0};
    char *val = NULL, id[JOURNAL_RUN_ID_LEN + 1];
    size_t vlen = 0;
    reel_code_t rc;

    probe.app = q->app, probe.user = q->user, probe.session = q->session;
    probe.invocation_id = q->invocation_id;
    ik = invocation_key(&probe);
    if (ik.p == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = store_txn_get(txn, op->j->cf_runs, ik.p, ik.len, &val, &vlen, st);
    if (rc == REEL_OK) {
        char existing[JOURNAL_RUN_ID_LEN + 1];

        snprintf(existing, sizeof(existing), "%.*s", (int)vlen, val);
        free(val);
        free(ik.p);
        if ((rc = load_run(op->j, txn, existing, &cur, st)) != REEL_OK)
            return rc == REEL_NOT_FOUND ? reel_status_set(st, REEL_DATA_LOSS,
                                                          "run %s is indexed "
                                                          "but missing",
                                                          existing)
                                        : rc;
        if (run_status_terminal(cur.status) || cur.status == RUN_WAITING) {
            /* Returned as it is: nothing to lease. */
            run_fini(&op->res.run);
            op->res.run = cur;
            op->res.run.resumed = 1;
            return REEL_OK;
        }
        if (cur.status == RUN_RUNNING && cur.lease_expires_at_ms > now &&
            strcmp(cur.lease_owner, q->lease_owner) != 0) {
            char until[40];

            iso_time(cur.lease_expires_at_ms, until, sizeof(until));
            rc = reel_status_set(st, REEL_FAILED_PRECONDITION,
                                 "run %s is leased to \"%s\" until %s (epoch "
                                 "%llu)",
                                 cur.run_id, cur.lease_owner, until,
                                 (unsigned long long)cur.lease_epoch);
            run_fini(&cur);
            return rc;
        }
        nr = cur;
        nr.status = RUN_RUNNING;
        nr.lease_owner = q->lease_owner;
        nr.lease_epoch = cur.lease_epoch + 1;
        nr.lease_expires_at_ms = now + q->lease_ttl_ms;
        nr.updated_at_ms = now;
        rc = put_run(op, txn, &nr, is_active(&cur), 1, st);
        op->res.run.resumed = 1;
        run_fini(&cur);
        return rc;
    }
    if (rc != REEL_NOT_FOUND) {
        free(ik.p);
        return rc;
    }
    reel_status_fini(st);

    ulid_next(op->j, now, id);
    memset(&nr, 0, sizeof(nr));
    nr.run_id = id;
    nr.app = q->app, nr.user = q->user, nr.session = q->session;
    nr.invocation_id = q->invocation_id;
    nr.lease_owner = q->lease_owner;
    nr.waiting_on = "", nr.result = "";
    nr.status = RUN_RUNNING;
    nr.next_seq = 1;
    nr.lease_epoch = 1;
    nr.lease_expires_at_ms = now + q->lease_ttl_ms;
    nr.created_at_ms = nr.updated_at_ms = now;
    nr.labels = q->labels;
    nr.n_labels = q->n_labels;
    sk = session_key(&nr);
    if (sk.p == NULL) {
        free(ik.p);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    store_txn_put(txn, op->j->cf_runs, ik.p, ik.len, id, JOURNAL_RUN_ID_LEN);
    store_txn_put(txn, op->j->cf_runs, sk.p, sk.len, "", 0);
    free(ik.p);
    free(sk.p);
    return put_run(op, txn, &nr, 0, 1, st);
}

/* Writes the next entry of cur and bumps its next_seq (no lease check). */
static reel_code_t append_core(journal_t *j, store_txn_t *txn,
                               const run_t *cur,
                               uint64_t epoch, const char *kind,
                               const char *payload, const char *idem,
                               int64_t now, journal_entry_t *out_entry,
                               run_t *out_run, reel_status_t *st) {
    journal_entry_t e;
    reel_wbuf_t w = {0};
    key_t_ ek;
    run_t nr;
    reel_code_t rc = REEL_OK;

    memset(&e, 0, sizeof(e));
    e.run_id = cur->run_id;
    e.seq = cur->next_seq;
    e.lease_epoch = epoch;
    e.revision = store_txn_next_revision(txn);
    e.ts_ms = now;
    e.kind = kind;
    e.payload = payload;
    e.idempotency_key = idem ? idem : "";
    entry_encode(&e, &w);
    ek = entry_key(cur->run_id, e.seq);
    if (reel_wbuf_done(&w) != 0 || ek.p == NULL) {
        free(ek.p);
        reel_wbuf_fini(&w);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    store_txn_put(txn, j->cf_journal, ek.p, ek.len, w.p, w.len);
    free(ek.p);
    store_txn_emit(txn, JOURNAL_MODULE_ID, CHANGE_ENTRY, w.p, w.len);
    if (out_entry != NULL && entry_decode(w.p, w.len, out_entry) != 0)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    reel_wbuf_fini(&w);
    if (rc != REEL_OK)
        return rc;
    nr = *cur;
    nr.next_seq = cur->next_seq + 1;
    nr.updated_at_ms = now;
    return put_run_rec(j, txn, &nr, is_active(cur), 0, out_run, st);
}

/*
 * An append whose idempotency key already names entry seq: a retry. It
 * gets the original entry (duplicate) if it carries the same kind and
 * payload bytes; anything else is another write reusing the key, refused
 * with ALREADY_EXISTS (not FAILED_PRECONDITION, which tells a worker it
 * lost its lease) naming the key and the original seq.
 */
static reel_code_t apply_retry(op_t *op, store_txn_t *txn, const run_t *cur,
                               const char *idem, uint64_t seq,
                               reel_status_t *st) {
    const journal_req_t *q = &op->r;
    journal_entry_t *e = &op->res.entry;
    key_t_ ek = entry_key(cur->run_id, seq);
    char *rec = NULL;
    size_t rlen = 0;
    reel_code_t rc;

    if (ek.p == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = store_txn_get(txn, op->j->cf_journal, ek.p, ek.len, &rec, &rlen, st);
    free(ek.p);
    if (rc == REEL_OK && entry_decode(rec, rlen, e) != 0)
        rc = REEL_DATA_LOSS;
    free(rec);
    if (rc == REEL_NOT_FOUND || rc == REEL_DATA_LOSS)
        return reel_status_set(st, REEL_DATA_LOSS,
                               "run %s: the entry of idempotency key \"%s\" "
                               "(seq %llu) is missing or corrupt",
                               cur->run_id, idem, (unsigned long long)seq);
    if (rc != REEL_OK)
        return rc;
    if (strcmp(e->kind, q->kind) != 0)
        rc = reel_status_set(st, REEL_ALREADY_EXISTS,
                             "idempotency_key \"%s\" already names seq %llu "
                             "of run %s, of kind \"%s\" (this append's is "
                             "\"%s\"): a retry must repeat the original kind "
                             "and payload",
                             idem, (unsigned long long)seq, cur->run_id,
                             e->kind, q->kind);
    else if (strcmp(e->payload, q->payload) != 0)
        rc = reel_status_set(st, REEL_ALREADY_EXISTS,
                             "idempotency_key \"%s\" already names seq %llu "
                             "of run %s, with another payload: a retry must "
                             "repeat the original kind and payload",
                             idem, (unsigned long long)seq, cur->run_id);
    if (rc != REEL_OK) {
        journal_entry_fini(e);
        return rc;
    }
    op->res.duplicate = 1;
    return REEL_OK;
}

static reel_code_t apply_append(op_t *op, store_txn_t *txn, const run_t *cur,
                                int64_t now, reel_status_t *st) {
    const journal_req_t *q = &op->r;
    const char *idem = q->idempotency_key ? q->idempotency_key : "";
    key_t_ kk = {NULL, 0};
    unsigned char seqbuf[8];
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc;

    /* The lease before the key: a worker that lost its run must hear so at
     * once, even when retrying an append that committed before it lost
     * it. */
    if ((rc = check_lease(cur, q->lease_epoch, st)) != REEL_OK)
        return rc;
    if (*idem) {
        kk = idem_key(cur->run_id, idem);
        if (kk.p == NULL)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        rc = store_txn_get(txn, op->j->cf_journal, kk.p, kk.len, &val, &vlen,
                           st);
        if (rc == REEL_OK && vlen == 8) {
            rc = apply_retry(op, txn, cur, idem,
                             reel_be64_get((unsigned char *)val), st);
            goto out;
        }
        if (rc != REEL_OK && rc != REEL_NOT_FOUND)
            goto out;
        reel_status_fini(st);
    }
    if (q->expected_seq != 0 && q->expected_seq != cur->next_seq) {
        rc = reel_status_set(st, REEL_ABORTED,
                             "expected seq %llu, but the next seq of run %s "
                             "is %llu",
                             (unsigned long long)q->expected_seq, cur->run_id,
                             (unsigned long long)cur->next_seq);
        goto out;
    }
    rc = append_core(op->j, txn, cur, q->lease_epoch, q->kind, q->payload,
                     idem, now, &op->res.entry, &op->res.run, st);
    if (rc == REEL_OK && *idem) {
        reel_be64_put(seqbuf, op->res.entry.seq);
        store_txn_put(txn, op->j->cf_journal, kk.p, kk.len, seqbuf, 8);
    }
out:
    free(val);
    free(kk.p);
    return rc;
}

static reel_code_t apply_claim(op_t *op, store_txn_t *txn, const run_t *cur,
                               int64_t now, reel_status_t *st) {
    run_t nr = *cur;

    if (cur->status == RUN_RUNNING && cur->lease_expires_at_ms > now) {
        char until[40];

        iso_time(cur->lease_expires_at_ms, until, sizeof(until));
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is leased to \"%s\" until %s (epoch "
                               "%llu)",
                               cur->run_id, cur->lease_owner, until,
                               (unsigned long long)cur->lease_epoch);
    }
    if (cur->status != RUN_RUNNING && cur->status != RUN_RUNNABLE)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is %s%s%s%s: only a RUNNABLE run or a "
                               "RUNNING one whose lease expired can be "
                               "claimed",
                               cur->run_id, run_status_name(cur->status),
                               cur->status == RUN_WAITING ? " on signal \""
                                                          : "",
                               cur->status == RUN_WAITING ? cur->waiting_on
                                                          : "",
                               cur->status == RUN_WAITING ? "\"" : "");
    nr.status = RUN_RUNNING;
    nr.lease_owner = op->r.lease_owner;
    nr.lease_epoch = cur->lease_epoch + 1;
    nr.lease_expires_at_ms = now + op->r.lease_ttl_ms;
    nr.waiting_on = "";
    nr.updated_at_ms = now;
    return put_run(op, txn, &nr, is_active(cur), 1, st);
}

static reel_code_t op_apply(store_txn_t *txn, void *arg, reel_status_t *st) {
    op_t *op = arg;
    const journal_req_t *q = &op->r;
    int64_t now = store_txn_now_ms(txn);
    run_t cur = {0}, nr;
    reel_code_t rc;

    if (q->op == JOURNAL_BEGIN)
        return apply_begin(op, txn, now, st);
    if ((rc = load_run(op->j, txn, q->run_id, &cur, st)) != REEL_OK)
        return rc;
    nr = cur;
    switch (q->op) {
    case JOURNAL_APPEND:
        rc = apply_append(op, txn, &cur, now, st);
        break;
    case JOURNAL_CLAIM:
        rc = apply_claim(op, txn, &cur, now, st);
        break;
    case JOURNAL_HEARTBEAT:
        if ((rc = check_lease(&cur, q->lease_epoch, st)) != REEL_OK)
            break;
        nr.lease_expires_at_ms = now + q->lease_ttl_ms;
        nr.updated_at_ms = now;
        rc = put_run(op, txn, &nr, 1, 1, st);
        break;
    case JOURNAL_END:
        if ((rc = check_lease(&cur, q->lease_epoch, st)) != REEL_OK)
            break;
        nr.status = q->end_status;
        nr.result = q->result ? q->result : "";
        nr.lease_owner = "";
        nr.lease_expires_at_ms = 0;
        nr.waiting_on = "";
        nr.ended_at_ms = nr.updated_at_ms = now;
        rc = put_run(op, txn, &nr, is_active(&cur), 1, st);
        break;
    case JOURNAL_SUSPEND:
        if ((rc = check_lease(&cur, q->lease_epoch, st)) != REEL_OK)
            break;
        /* The signal may have come first: then there is nothing to wait
         * for, and the run needs a worker at once. */
        nr.status = op->j->pending != NULL &&
                            op->j->pending(op->j->pending_arg, txn, cur.run_id,
                                           q->waiting_on)
                        ? RUN_RUNNABLE
                        : RUN_WAITING;
        nr.waiting_on = q->waiting_on;
        nr.lease_owner = "";
        nr.lease_expires_at_ms = 0;
        nr.updated_at_ms = now;
        rc = put_run(op, txn, &nr, is_active(&cur), 1, st);
        break;
    default:
        rc = reel_status_set(st, REEL_INTERNAL, "unknown operation");
    }
    run_fini(&cur);
    return rc;
}

static void op_done(store_req_t *req) {
    op_t *op = (op_t *)req;

    reel_status_move(&op->res.status, &req->status);
    if (op->res.status.code != REEL_OK) {
        run_fini(&op->res.run);
        journal_entry_fini(&op->res.entry);
    }
    op->done(op->arg, &op->res);
    op_free(op);
}

reel_code_t journal_submit(journal_t *j, const journal_req_t *req,
                           journal_done_fn done, void *arg, reel_status_t *st) {
    op_t *op = calloc(1, sizeof(*op));
    reel_code_t rc;

    if (op == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    op->r = *req;
    if ((rc = check_req(j, &op->r, st)) != REEL_OK) {
        free(op);
        return rc;
    }
    op->owned = calloc(16 + 2 * op->r.n_labels, sizeof(char *));
    op->labels = calloc(op->r.n_labels ? op->r.n_labels : 1,
                        sizeof(run_label_t));
    if (op->owned == NULL || op->labels == NULL) {
        op_free(op);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    op->r.run_id = own(op, req->run_id);
    op->r.app = own(op, req->app);
    op->r.user = own(op, req->user);
    op->r.session = own(op, req->session);
    op->r.invocation_id = own(op, req->invocation_id);
    op->r.lease_owner = own(op, req->lease_owner);
    op->r.kind = own(op, req->kind);
    op->r.payload = own(op, req->payload);
    op->r.idempotency_key = own(op, req->idempotency_key);
    op->r.result = own(op, req->result);
    op->r.waiting_on = own(op, req->waiting_on);
    for (size_t i = 0; i < req->n_labels; i++) {
        op->labels[i].key = own(op, req->labels[i].key);
        op->labels[i].value = own(op, req->labels[i].value
                                          ? req->labels[i].value
                                          : "");
    }
    op->r.labels = op->labels;
    op->j = j;
    op->done = done;
    op->arg = arg;
    op->req.apply = op_apply;
    op->req.done = op_done;
    op->req.arg = op;
    if ((rc = store_submit(j->store, &op->req)) != REEL_OK) {
        reel_status_move(st, &op->req.status);
        op_free(op);
        return rc;
    }
    return REEL_OK;
}

typedef struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    journal_result_t *res;
} sync_wait_t;

static void sync_done(void *arg, journal_result_t *res) {
    sync_wait_t *w = arg;

    pthread_mutex_lock(&w->mu);
    *w->res = *res;
    memset(res, 0, sizeof(*res));
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

reel_code_t journal_exec(journal_t *j, const journal_req_t *req,
                         journal_result_t *res) {
    sync_wait_t w = {.res = res};
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc;

    memset(res, 0, sizeof(*res));
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    rc = journal_submit(j, req, sync_done, &w, &st);
    if (rc == REEL_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = res->status.code;
    } else {
        reel_status_move(&res->status, &st);
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

void journal_result_fini(journal_result_t *res) {
    if (res == NULL)
        return;
    reel_status_fini(&res->status);
    run_fini(&res->run);
    journal_entry_fini(&res->entry);
}

/* ---- For other modules' apply functions ------------------------------------ */

reel_code_t journal_txn_get_run(journal_t *j, store_txn_t *txn,
                                const char *run_id, run_t *out,
                                reel_status_t *st) {
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if ((rc = check_run_id(run_id, st)) != REEL_OK)
        return rc;
    return load_run(j, txn, run_id, out, st);
}

static reel_code_t indexed_run(store_txn_t *txn, journal_t *j,
                               const store_snapshot_t *snap,
                               const char *run_id, run_t *out,
                               reel_status_t *st);

reel_code_t journal_txn_session_run(journal_t *j, store_txn_t *txn,
                                    const char *app, const char *user,
                                    const char *session, run_t *out,
                                    reel_status_t *st) {
    const char *parts[4] = {app, user, session, ""};
    key_t_ base = make_key('s', parts, 4, 0, 0);
    store_iter_t *it = base.p ? store_txn_iter(txn, j->cf_runs) : NULL;
    char best[JOURNAL_RUN_ID_LEN + 1] = "";
    reel_code_t rc = REEL_OK;

    memset(out, 0, sizeof(*out));
    if (it == NULL) {
        free(base.p);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    /* Run ids sort by creation: the last live one is the newest. */
    for (store_iter_seek(it, base.p, base.len); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);
        char id[JOURNAL_RUN_ID_LEN + 1];
        run_t r;

        if (klen < base.len || memcmp(k, base.p, base.len) != 0)
            break;
        if (klen != base.len + JOURNAL_RUN_ID_LEN)
            continue;
        memcpy(id, k + base.len, JOURNAL_RUN_ID_LEN);
        id[JOURNAL_RUN_ID_LEN] = '\0';
        if ((rc = indexed_run(txn, j, NULL, id, &r, st)) != REEL_OK)
            break;
        if (!run_status_terminal(r.status))
            memcpy(best, id, sizeof(best));
        run_fini(&r);
    }
    if (rc == REEL_OK)
        rc = store_iter_status(it, st);
    store_iter_destroy(it);
    free(base.p);
    if (rc != REEL_OK)
        return rc;
    if (best[0] == '\0')
        return reel_status_set(st, REEL_NOT_FOUND,
                               "session %s/%s/%s has no run that has not "
                               "ended",
                               app, user, session);
    rc = load_run(j, txn, best, out, st);
    return rc;
}

reel_code_t journal_check_lease(const run_t *r, uint64_t epoch,
                                reel_status_t *st) {
    return check_lease(r, epoch, st);
}

reel_code_t journal_txn_put_run(journal_t *j, store_txn_t *txn,
                                const run_t *r, run_status_t prev, run_t *out,
                                reel_status_t *st) {
    return put_run_rec(j, txn, r, prev == RUN_RUNNABLE || prev == RUN_RUNNING,
                       1, out, st);
}

reel_code_t journal_txn_append(journal_t *j, store_txn_t *txn,
                               const run_t *r, uint64_t epoch,
                               const char *kind, const char *payload,
                               journal_entry_t *entry, run_t *run_out,
                               reel_status_t *st) {
    return append_core(j, txn, r, epoch, kind, payload, "",
                       store_txn_now_ms(txn), entry, run_out, st);
}

void journal_set_pending_check(journal_t *j, journal_pending_fn fn,
                               void *arg) {
    j->pending = fn;
    j->pending_arg = arg;
}

/* ---- Reads ---------------------------------------------------------------- */

static reel_code_t get_run_at(journal_t *j, const store_snapshot_t *snap,
                              const char *run_id, run_t *out,
                              reel_status_t *st) {
    key_t_ k = run_key(run_id);
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if (k.p == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = store_snapshot_get(j->store, snap, j->cf_runs, k.p, k.len, &val,
                            &vlen, st);
    free(k.p);
    if (rc == REEL_NOT_FOUND)
        return reel_status_set(st, REEL_NOT_FOUND, "run %s not found", run_id);
    if (rc != REEL_OK)
        rc = reel_status_set(st, rc, "run %s: %s", run_id,
                             reel_status_message(st));
    else if (run_decode(val, vlen, out) != 0)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "run %s: stored record is corrupt", run_id);
    free(val);
    return rc;
}

/*
 * A run an index ('s' or 'a') names, read through txn or at snap: the
 * index and the record commit together, so a missing record is DATA_LOSS,
 * never a run to pass over (a list would silently leave it out).
 */
static reel_code_t indexed_run(store_txn_t *txn, journal_t *j,
                               const store_snapshot_t *snap,
                               const char *run_id, run_t *out,
                               reel_status_t *st) {
    reel_code_t rc = txn != NULL ? load_run(j, txn, run_id, out, st)
                                 : get_run_at(j, snap, run_id, out, st);

    if (rc == REEL_NOT_FOUND)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "run %s is in an index but its record is "
                             "missing",
                             run_id);
    return rc;
}

reel_code_t journal_get_run(journal_t *j, const char *run_id, run_t *out,
                            reel_status_t *st) {
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if ((rc = check_run_id(run_id, st)) != REEL_OK)
        return rc;
    return get_run_at(j, NULL, run_id, out, st);
}

static reel_code_t check_limit(uint32_t *limit, reel_status_t *st) {
    if (*limit == 0)
        *limit = JOURNAL_LIST_DEFAULT;
    if (*limit > JOURNAL_LIST_MAX)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "limit: at most %d (got %u)", JOURNAL_LIST_MAX,
                               *limit);
    return REEL_OK;
}

/* Entries of run_id after from_seq at snap, delivered to fn until it says
 * stop or limit is reached. Returns how the scan ended: an entry it cannot
 * read ends it with an error naming the entry's seq, never a skip. */
typedef int (*entry_fn)(void *arg, journal_entry_t *e); /* 0 go on, 1 stop */

static reel_code_t scan_entries(journal_t *j, const store_snapshot_t *snap,
                                const char *run_id, uint64_t from_seq,
                                entry_fn fn, void *arg, reel_status_t *st) {
    key_t_ start = {NULL, 0};
    store_iter_t *it = NULL;
    uint64_t seq = from_seq;
    reel_code_t rc = REEL_OK;

    /* No seq follows the largest (and + 1 would wrap to the first). */
    if (from_seq == UINT64_MAX)
        return REEL_OK;
    start = entry_key(run_id, from_seq + 1);
    it = store_iter_create(j->store, j->cf_journal, snap);
    if (start.p == NULL || it == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (store_iter_seek(it, start.p, start.len); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        journal_entry_t e;
        int drc;

        if (klen != start.len || memcmp(k, start.p, start.len - 8) != 0)
            break;
        seq = reel_be64_get((const unsigned char *)k + klen - 8);
        /* The fault point stands in for a corrupt record. */
        drc = REEL_FAULT("journal.decode") ? -1 : entry_decode(v, vlen, &e);
        if (drc != 0) {
            rc = reel_status_set(st, drc == -2 ? REEL_RESOURCE_EXHAUSTED
                                               : REEL_DATA_LOSS,
                                 "run %s: journal entry %llu %s", run_id,
                                 (unsigned long long)seq,
                                 drc == -2 ? "could not be read: out of memory"
                                           : "is corrupt");
            break;
        }
        if (fn(arg, &e) != 0)
            break;
    }
    if (rc == REEL_OK && (rc = store_iter_status(it, st)) != REEL_OK)
        rc = reel_status_set(st, rc, "run %s: reading the journal after seq "
                                     "%llu: %s",
                             run_id, (unsigned long long)seq,
                             reel_status_message(st));
out:
    store_iter_destroy(it);
    free(start.p);
    return rc;
}

typedef struct collect {
    journal_entry_t *arr;
    size_t n, limit, used;
    const reel_page_t *page;
    int more;
} collect_t;

static int collect_entry(void *arg, journal_entry_t *e) {
    collect_t *c = arg;

    if (c->n == c->limit || !reel_page_take(c->page, c->n, &c->used, e)) {
        c->more = 1;
        journal_entry_fini(e);
        return 1;
    }
    c->arr[c->n++] = *e;
    return 0;
}

reel_code_t journal_read(journal_t *j, const char *run_id, uint64_t from_seq,
                         uint32_t limit, const reel_page_t *page,
                         journal_entry_t **out, size_t *n, int *more,
                         reel_status_t *st) {
    store_snapshot_t *snap = NULL;
    collect_t c = {0};
    run_t r;
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    *more = 0;
    if ((rc = check_run_id(run_id, st)) != REEL_OK ||
        (rc = check_limit(&limit, st)) != REEL_OK)
        return rc;
    if ((rc = store_snapshot_create(j->store, &snap, st)) != REEL_OK)
        return rc;
    if ((rc = get_run_at(j, snap, run_id, &r, st)) != REEL_OK)
        goto out;
    run_fini(&r);
    c.limit = limit;
    c.page = page;
    c.arr = calloc(limit, sizeof(*c.arr));
    if (c.arr == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    /* A from_seq past the last entry reads an empty page: a read skips
     * nothing, and its next_from_seq stays where the reader asked. */
    rc = scan_entries(j, snap, run_id, from_seq, collect_entry, &c, st);
    if (rc != REEL_OK) {
        for (size_t i = 0; i < c.n; i++)
            journal_entry_fini(&c.arr[i]);
        free(c.arr);
        goto out;
    }
    *out = c.arr;
    *n = c.n;
    *more = c.more;
out:
    store_snapshot_release(j->store, snap);
    return rc;
}

static int run_matches(const run_t *r, const run_filter_t *f) {
    if (f->app && *f->app && strcmp(r->app, f->app) != 0)
        return 0;
    if (f->user && *f->user && strcmp(r->user, f->user) != 0)
        return 0;
    if (f->session && *f->session && strcmp(r->session, f->session) != 0)
        return 0;
    return f->status == RUN_STATUS_ANY || r->status == f->status;
}

reel_code_t journal_list_runs(journal_t *j, const run_filter_t *f,
                              run_t **out, size_t *n, int *more,
                              reel_status_t *st) {
    int by_session = f->app && *f->app && f->user && *f->user && f->session &&
                     *f->session;
    const char *after = f->start_after ? f->start_after : "";
    uint32_t limit = f->limit;
    store_snapshot_t *snap = NULL;
    store_iter_t *it = NULL;
    key_t_ base, seek;
    run_t *arr = NULL;
    size_t used = 0;
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    *more = 0;
    if ((rc = check_limit(&limit, st)) != REEL_OK)
        return rc;
    if ((f->user && *f->user && !(f->app && *f->app)) ||
        (f->session && *f->session && !(f->user && *f->user)))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: filtering by %s needs %s too",
                               f->session && *f->session ? "session" : "user",
                               f->session && *f->session ? "session" : "user",
                               f->session && *f->session ? "user" : "app");
    if ((int)f->status < RUN_STATUS_ANY || f->status > RUN_CANCELLED)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "status: unknown value %d", (int)f->status);
    if (*after &&
        (rc = journal_check_run_id("start_after", after, st)) != REEL_OK)
        return rc;
    if (by_session) {
        const char *parts[4] = {f->app, f->user, f->session, ""};
        const char *sparts[4] = {f->app, f->user, f->session, after};
        base = make_key('s', parts, 4, 0, 0);
        seek = make_key('s', sparts, 4, 0, 0);
    } else {
        const char *empty = "";
        base = make_key('r', &empty, 1, 0, 0);
        seek = make_key('r', &after, 1, 0, 0);
    }
    if ((rc = store_snapshot_create(j->store, &snap, st)) != REEL_OK)
        goto out;
    it = store_iter_create(j->store, j->cf_runs, snap);
    arr = calloc(limit, sizeof(*arr));
    if (base.p == NULL || seek.p == NULL || it == NULL || arr == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (store_iter_seek(it, seek.p, seek.len); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        char id[JOURNAL_RUN_ID_LEN + 1];
        run_t r;

        if (klen < base.len || memcmp(k, base.p, base.len) != 0)
            break;
        if (klen != base.len + JOURNAL_RUN_ID_LEN)
            continue;
        memcpy(id, k + base.len, JOURNAL_RUN_ID_LEN);
        id[JOURNAL_RUN_ID_LEN] = '\0';
        if (*after && strcmp(id, after) <= 0)
            continue;
        if (by_session) {
            if ((rc = indexed_run(NULL, j, snap, id, &r, st)) != REEL_OK)
                goto out;
        } else if (run_decode(v, vlen, &r) != 0) {
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "run %s: stored record is corrupt", id);
            goto out;
        }
        if (!run_matches(&r, f)) {
            run_fini(&r);
            continue;
        }
        if (*n == limit || !reel_page_take(f->page, *n, &used, &r)) {
            run_fini(&r);
            *more = 1;
            break;
        }
        arr[(*n)++] = r;
    }
    rc = store_iter_status(it, st);
out:
    if (rc != REEL_OK) {
        for (size_t i = 0; i < *n; i++)
            run_fini(&arr[i]);
        free(arr);
        arr = NULL;
        *n = 0;
    }
    *out = arr;
    store_iter_destroy(it);
    store_snapshot_release(j->store, snap);
    free(base.p);
    free(seek.p);
    return rc;
}

reel_code_t journal_list_recoverable(journal_t *j, const char *app,
                                     const char *start_after, uint32_t limit,
                                     const reel_page_t *page, run_t **out,
                                     size_t *n, int *more, reel_status_t *st) {
    const char *after = start_after ? start_after : "";
    int64_t now = reel_clock_now_ms();
    store_snapshot_t *snap = NULL;
    store_iter_t *it = NULL;
    run_t *arr = NULL;
    key_t_ seek = {0};
    size_t used = 0;
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    *more = 0;
    if ((rc = check_limit(&limit, st)) != REEL_OK)
        return rc;
    if (app != NULL && *app && (rc = check_name("app", app, st)) != REEL_OK)
        return rc;
    if (*after &&
        (rc = journal_check_run_id("start_after", after, st)) != REEL_OK)
        return rc;
    seek = make_key('a', &after, 1, 0, 0);
    if ((rc = store_snapshot_create(j->store, &snap, st)) != REEL_OK)
        goto out;
    it = store_iter_create(j->store, j->cf_runs, snap);
    arr = calloc(limit, sizeof(*arr));
    if (seek.p == NULL || it == NULL || arr == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (store_iter_seek(it, seek.p, seek.len); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);
        char id[JOURNAL_RUN_ID_LEN + 1];
        run_t r;

        if (klen < 1 || k[0] != 'a')
            break;
        if (klen != 1 + JOURNAL_RUN_ID_LEN)
            continue;
        memcpy(id, k + 1, JOURNAL_RUN_ID_LEN);
        id[JOURNAL_RUN_ID_LEN] = '\0';
        if (*after && strcmp(id, after) <= 0)
            continue;
        if ((rc = indexed_run(NULL, j, snap, id, &r, st)) != REEL_OK)
            goto out;
        if ((app != NULL && *app && strcmp(r.app, app) != 0) ||
            (r.status != RUN_RUNNABLE &&
             !(r.status == RUN_RUNNING && r.lease_expires_at_ms <= now))) {
            run_fini(&r);
            continue;
        }
        if (*n == limit || !reel_page_take(page, *n, &used, &r)) {
            run_fini(&r);
            *more = 1;
            break;
        }
        arr[(*n)++] = r;
    }
    rc = store_iter_status(it, st);
out:
    if (rc != REEL_OK) {
        for (size_t i = 0; i < *n; i++)
            run_fini(&arr[i]);
        free(arr);
        arr = NULL;
        *n = 0;
    }
    *out = arr;
    store_iter_destroy(it);
    store_snapshot_release(j->store, snap);
    free(seek.p);
    return rc;
}

/* ---- Subscriptions -------------------------------------------------------
 *
 * The same scheme as KV watches (kv/kv_watch.c): a subscription replays
 * from storage up to a snapshot, then goes LIVE under hub_mu only if
 * nothing was published past the snapshot; when its sink is full it drops
 * back to replay. It ends (OK) once the run is terminal and everything
 * before that was delivered: entries always commit before the EndRun that
 * makes the run terminal, so they come first in both paths. A replay that
 * cannot read the run or an entry it owes ends the subscription with that
 * error (naming the run and seq) instead of skipping it or waiting.
 */

enum { SUB_REPLAY, SUB_LIVE, SUB_DONE };

struct journal_sub {
    journal_t *j;
    char run_id[JOURNAL_RUN_ID_LEN + 1];
    journal_sink_t sink;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int live;
    int dead, pumping, phase;
    int refs; /* the owner's, and one per publish about to end it */
    uint64_t cursor_seq, cursor_rev;
    journal_sub_t *end_next; /* publish's list of subscriptions to end */
    /* hub links, under hub_mu */
    sub_bucket_t *bucket;
    journal_sub_t *prev, *next;
};

static void sub_unlink(journal_t *j, journal_sub_t *s) {
    if (s->bucket == NULL)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        s->bucket->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->bucket->head == NULL) {
        HASH_DEL(j->subs, s->bucket);
        free(s->bucket);
    }
    s->bucket = NULL;
    s->prev = s->next = NULL;
}

reel_code_t journal_sub_create(journal_t *j, const char *run_id,
                               uint64_t from_seq, const journal_sink_t *sink,
                               void *arg, journal_sub_t **out,
                               reel_status_t *st) {
    journal_sub_t *s;
    sub_bucket_t *b;
    run_t r;
    reel_code_t rc;

    *out = NULL;
    if ((rc = journal_get_run(j, run_id, &r, st)) != REEL_OK)
        return rc;
    /* Entries after a seq that does not exist yet would never come: the
     * ones before it, when appended, are not after the cursor, so the
     * subscriber would miss them without a word. */
    if (from_seq > r.next_seq - 1) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "from_seq: %llu is past the run's last seq %llu",
                             (unsigned long long)from_seq,
                             (unsigned long long)(r.next_seq - 1));
        run_fini(&r);
        return rc;
    }
    run_fini(&r);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(s->run_id, run_id, JOURNAL_RUN_ID_LEN + 1);
    s->j = j;
    s->sink = *sink;
    s->arg = arg;
    s->cursor_seq = from_seq;
    s->phase = SUB_REPLAY;
    s->refs = 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_lock(&j->hub_mu);
    HASH_FIND_STR(j->subs, s->run_id, b);
    if (b == NULL && (b = calloc(1, sizeof(*b))) != NULL) {
        memcpy(b->run_id, s->run_id, sizeof(b->run_id));
        HASH_ADD_STR(j->subs, run_id, b);
    }
    if (b != NULL) {
        s->bucket = b;
        s->next = b->head;
        if (b->head)
            b->head->prev = s;
        b->head = s;
    }
    pthread_mutex_unlock(&j->hub_mu);
    if (b == NULL) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    *out = s;
    return REEL_OK;
}

int journal_change_decode(const store_change_t *c, run_t *run,
                          journal_entry_t *entry) {
    if (c->module == JOURNAL_MODULE_ID && c->type == CHANGE_RUN)
        return run_decode(c->event, c->len, run) == 0 ? 1 : -1;
    if (c->module == JOURNAL_MODULE_ID && c->type == CHANGE_ENTRY)
        return entry_decode(c->event, c->len, entry) == 0 ? 2 : -1;
    return 0;
}

static void sub_unref(journal_sub_t *s) {
    int left;

    pthread_mutex_lock(&s->mu);
    left = --s->refs;
    pthread_mutex_unlock(&s->mu);
    if (left > 0)
        return;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

typedef struct replay {
    journal_sub_t *s;
    int full;
} replay_t;

static int replay_entry(void *arg, journal_entry_t *e) {
    replay_t *rp = arg;

    if (rp->s->sink.deliver(rp->s->arg, e) != 0) {
        journal_entry_fini(e);
        rp->full = 1;
        return 1;
    }
    rp->s->cursor_seq = e->seq;
    journal_entry_fini(e);
    return 0;
}

/*
 * Replays to a fresh snapshot. 0 caught up, 1 full, 2 the run is over, -1
 * failed (st says why, naming the run and the entry): what cannot be read
 * ends the subscription, never skipped and never waited on.
 */
static int sub_replay(journal_sub_t *s, reel_status_t *st) {
    store_snapshot_t *snap = NULL;
    replay_t rp = {s, 0};
    run_t r;
    int terminal;
    reel_code_t rc;

    if ((rc = store_snapshot_create(s->j->store, &snap, st)) != REEL_OK) {
        reel_status_set(st, rc, "run %s: replaying after seq %llu: %s",
                        s->run_id, (unsigned long long)s->cursor_seq,
                        reel_status_message(st));
        return -1;
    }
    if (get_run_at(s->j, snap, s->run_id, &r, st) != REEL_OK) {
        store_snapshot_release(s->j->store, snap);
        return -1;
    }
    terminal = run_status_terminal(r.status);
    run_fini(&r);
    if (scan_entries(s->j, snap, s->run_id, s->cursor_seq, replay_entry, &rp,
                     st) != REEL_OK) {
        store_snapshot_release(s->j->store, snap);
        return -1;
    }
    if (!rp.full && store_snapshot_revision(snap) > s->cursor_rev)
        s->cursor_rev = store_snapshot_revision(snap);
    store_snapshot_release(s->j->store, snap);
    if (rp.full)
        return 1;
    return terminal ? 2 : 0;
}

void journal_sub_pump(journal_sub_t *s) {
    journal_t *j = s->j;
    reel_status_t why = REEL_STATUS_INIT;
    int ended = 0;

    pthread_mutex_lock(&s->mu);
    if (s->dead || s->pumping || s->phase != SUB_REPLAY) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->pumping = 1;
    while (!s->dead && s->phase == SUB_REPLAY) {
        int r = sub_replay(s, &why);

        if (r == 1)
            break;
        if (r == 2 || r == -1) {
            /* -1 keeps why: the stream ends with it instead of OK. */
            s->phase = SUB_DONE;
            s->refs++; /* ending may destroy it: keep it until we are out */
            ended = 1;
            break;
        }
        /* Caught up to the snapshot: go live if nothing newer was
         * published (hub_mu first, so drop and retake our lock). */
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&j->hub_mu);
        pthread_mutex_lock(&s->mu);
        if (!s->dead && j->last_published <= s->cursor_rev) {
            s->phase = SUB_LIVE;
            atomic_store(&s->live, 1);
        }
        pthread_mutex_unlock(&j->hub_mu);
    }
    s->pumping = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (ended) {
        s->sink.end(s->arg, &why);
        sub_unref(s);
    }
    reel_status_fini(&why);
}

void journal_publish(journal_t *j, const store_change_t *changes, size_t n) {
    journal_sub_t *ending = NULL;

    pthread_mutex_lock(&j->hub_mu);
    for (size_t i = 0; i < n && j->subs != NULL; i++) {
        const store_change_t *c = &changes[i];
        sub_bucket_t *b = NULL;
        journal_entry_t e;
        run_t r;

        if (c->module == JOURNAL_MODULE_ID && c->type == CHANGE_ENTRY) {
            if (entry_decode(c->event, c->len, &e) != 0)
                continue;
            HASH_FIND_STR(j->subs, e.run_id, b);
            for (journal_sub_t *s = b ? b->head : NULL; s; s = s->next) {
                if (!atomic_load(&s->live))
                    continue;
                pthread_mutex_lock(&s->mu);
                if (s->phase == SUB_LIVE && !s->dead &&
                    e.revision > s->cursor_rev && e.seq > s->cursor_seq) {
                    if (s->sink.deliver(s->arg, &e) == 0) {
                        s->cursor_seq = e.seq;
                        s->cursor_rev = e.revision;
                    } else {
                        atomic_store(&s->live, 0);
                        s->phase = SUB_REPLAY;
                    }
                }
                pthread_mutex_unlock(&s->mu);
            }
            journal_entry_fini(&e);
        } else if (c->module == JOURNAL_MODULE_ID && c->type == CHANGE_RUN) {
            if (run_decode(c->event, c->len, &r) != 0)
                continue;
            if (run_status_terminal(r.status))
                HASH_FIND_STR(j->subs, r.run_id, b);
            for (journal_sub_t *s = b ? b->head : NULL; s; s = s->next) {
                pthread_mutex_lock(&s->mu);
                if (s->phase == SUB_LIVE && !s->dead) {
                    s->phase = SUB_DONE;
                    atomic_store(&s->live, 0);
                    s->refs++;
                    s->end_next = ending;
                    ending = s;
                }
                pthread_mutex_unlock(&s->mu);
            }
            run_fini(&r);
        }
    }
    if (n > 0 && changes[n - 1].revision > j->last_published)
        j->last_published = changes[n - 1].revision;
    pthread_mutex_unlock(&j->hub_mu);

    /* Outside every lock: ending a call may free it, and its cleanup
     * destroys the subscription (our reference keeps it alive). */
    while (ending != NULL) {
        journal_sub_t *s = ending;
        reel_status_t ok = REEL_STATUS_INIT;

        ending = s->end_next;
        s->sink.end(s->arg, &ok);
        sub_unref(s);
    }
}

void journal_sub_destroy(journal_sub_t *s) {
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->j->hub_mu);
    sub_unlink(s->j, s);
    pthread_mutex_lock(&s->mu);
    s->dead = 1;
    atomic_store(&s->live, 0);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->j->hub_mu);
    pthread_mutex_lock(&s->mu);
    while (s->pumping)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    sub_unref(s);
}
