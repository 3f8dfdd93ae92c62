/*
 * signals/signals.c: mailboxes, exactly-once consumption, waiters.
 *
 * Column family `signals` (integers big-endian, strings as base/codec.h):
 *   'p' run_id name 0 seq(8)   -> signal record   (pending, FIFO per name)
 *   'q' run_id seq(8)          -> name            (pending, in send order)
 *   'c' run_id seq(8)          -> signal record   (consumed)
 *   'd' run_id signal_id       -> seq(8) name     (dedup of signal_id)
 *   'n' run_id                 -> seq(8)          (the run's last seq)
 *   'w' run_id seq(8)          -> signal record   (scheduled: sent with a
 *                                                  future deliver_at_ms;
 *                                                  its 'q' lists it)
 *   signal record: u8 format (2), u64 seq, u64 revision, i64 sent_at_ms,
 *     i64 consumed_at_ms, u64 journal_seq, str run_id, name, payload,
 *     signal_id, then (format 2) u8 scheduled, i64 deliver_at_ms. A format
 *     1 record reads as delivered when sent. A change (in memory only) is
 *     the record followed by str app, the run's, so the WAL tells the run's
 *     tenant without a read.
 *
 * Delayed signals: a send with a future deliver_at_ms stores the record
 * under 'w' (and 'q', so it is listed, and 'd') and a durable timer
 * (timers/, kind 'G', id run_id seq) at deliver_at_ms, and emits nothing.
 * When the timer fires, the signal is delivered exactly as a send then:
 * the next seq, 'p' and 'q' under it, a SENT change, a WAITING run woken;
 * awaiters hear of it through the publish step's wake. CancelSignal
 * deletes 'w', 'q' and 'd' while it is scheduled; the timer then finds
 * nothing and does nothing.
 *
 * Invariants
 *   - A signal is in exactly one of 'p' (with its 'q') and 'c'. Consumption moves it and
 *     appends the run's "signal" journal entry in one apply, so it is
 *     delivered once and recorded once, or neither.
 *   - Sends and consumptions emit one SIGNALS change each (the record); a
 *     send that wakes a WAITING run also emits the run's change, and a
 *     consumption emits its journal entry.
 *   - Checks (run state, lease epoch, dedup) and writes share an apply on
 *     the writer thread: concurrent awaiters cannot take the same signal.
 *
 * Waiters are in memory only: an awaiter registers, then tries to consume;
 * every later send of that (run, name) wakes it to try again. Registering
 * before the first try means no send can fall between the two.
 */
#include "signals/signals.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <uthash.h>

#include "base/clock.h"
#include "base/codec.h"
#include "base/json.h"
#include "base/pattern.h"
#include "base/text.h"

#define REC_FORMAT 1
#define REC_FORMAT_2 2 /* format 1 plus scheduled and deliver_at_ms */
#define TIMER_SIGNAL 'G'
#define CF_SIGNALS "signals"
enum { CHANGE_SENT = 1, CHANGE_CONSUMED = 2 };

/* Read by key before most writes (the run's last seq, a signal_id). */
const store_cf_desc_t signals_cfs[] = {
    {CF_SIGNALS, STORE_CF_LOOKUP},
    {NULL, STORE_CF_PLAIN},
};

/* Waiters by run_id name (a send's), and by run_id alone (a change of the
 * run's lease): a name is never empty, so the keys never meet. */
typedef struct wait_bucket {
    UT_hash_handle hh;
    signals_waiter_t *head;
    size_t klen;
    char key[]; /* run_id name, or run_id */
} wait_bucket_t;

typedef struct wait_link {
    wait_bucket_t *bucket;
    signals_waiter_t *prev, *next;
} wait_link_t;

struct signals_waiter {
    wait_link_t by_name, by_run;
    uint64_t epoch;
    void (*wake)(void *arg);
    signals_claim_fn claim;
    void *arg;
    char *key;
    size_t klen;
};

/*
 * Where a mailbox's pending signals of one name begin: the 'p' key of the
 * last one consumed. Consuming deletes keys at the front of the name's
 * range, and until RocksDB compacts them away a seek from the prefix steps
 * over every one (draining 30,000 signals went from 0.8 ms to 5.5 ms a
 * consume, on the writer). Every signal still pending there sorts at or
 * after the hint: consumption takes the lowest seq, and a send or a
 * scheduled delivery takes a seq above all before it. A consume rolled
 * back leaves its key, at the hint, where the next seek finds it. Writer
 * thread only; at most CONSUME_HINTS_MAX, then forgotten all at once.
 */
#define CONSUME_HINTS_MAX 4096
typedef struct consume_hint {
    UT_hash_handle hh;
    size_t klen;
    char key[]; /* the pending prefix, then the seq (8) */
} consume_hint_t;

struct signals {
    store_t *store;
    store_cf_t *cf;
    journal_t *journal;
    signals_limits_t lim;
    pthread_mutex_t mu; /* the waiter registry */
    wait_bucket_t *waits;
    timers_t *timers; /* NULL: no delayed sends */
    consume_hint_t *hints; /* by pending prefix; the writer's */
    size_t n_hints;
};

/* ---- Records and keys --------------------------------------------------- */

static void rec_encode(const signal_t *g, reel_wbuf_t *w) {
    reel_wbuf_u8(w, REC_FORMAT_2);
    reel_wbuf_u64(w, g->seq);
    reel_wbuf_u64(w, g->revision);
    reel_wbuf_u64(w, (uint64_t)g->sent_at_ms);
    reel_wbuf_u64(w, (uint64_t)g->consumed_at_ms);
    reel_wbuf_u64(w, g->journal_seq);
    reel_wbuf_str(w, g->run_id);
    reel_wbuf_str(w, g->name);
    reel_wbuf_str(w, g->payload);
    reel_wbuf_str(w, g->signal_id);
    reel_wbuf_u8(w, g->scheduled ? 1 : 0);
    reel_wbuf_u64(w, (uint64_t)g->deliver_at_ms);
}

static int rec_decode(const void *buf, size_t len, signal_t *g) {
    reel_rbuf_t r;
    char *copy;

    memset(g, 0, sizeof(*g));
    if (len < 1 ||
        (((const unsigned char *)buf)[0] != REC_FORMAT &&
         ((const unsigned char *)buf)[0] != REC_FORMAT_2) ||
        (copy = malloc(len)) == NULL)
        return -1;
    memcpy(copy, buf, len);
    reel_rbuf_init(&r, copy, len);
    reel_rbuf_u8(&r);
    g->seq = reel_rbuf_u64(&r);
    g->revision = reel_rbuf_u64(&r);
    g->sent_at_ms = (int64_t)reel_rbuf_u64(&r);
    g->consumed_at_ms = (int64_t)reel_rbuf_u64(&r);
    g->journal_seq = reel_rbuf_u64(&r);
    g->run_id = reel_rbuf_str(&r);
    g->name = reel_rbuf_str(&r);
    g->payload = reel_rbuf_str(&r);
    g->signal_id = reel_rbuf_str(&r);
    if (copy[0] == REC_FORMAT_2) {
        g->scheduled = reel_rbuf_u8(&r) != 0;
        g->deliver_at_ms = (int64_t)reel_rbuf_u64(&r);
    }
    /* A change's record ends with the run's app; a stored one does not. */
    g->app = r.p < r.end ? reel_rbuf_str(&r) : "";
    g->priv_ = copy;
    if (reel_rbuf_ok(&r) != 0) {
        signal_fini(g);
        return -1;
    }
    return 0;
}

/* Emits rec (stored already) as a change of type, followed by the run's
 * app; rec keeps it (rec_decode reads it as the change's). */
static reel_code_t emit_change(store_txn_t *txn, uint32_t type,
                               reel_wbuf_t *rec, const char *app,
                               reel_status_t *st) {
    reel_wbuf_str(rec, app);
    if (reel_wbuf_done(rec) != 0)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    store_txn_emit(txn, SIGNALS_MODULE_ID, type, rec->p, rec->len);
    return REEL_OK;
}

void signal_fini(signal_t *g) {
    if (g == NULL)
        return;
    free(g->priv_);
    memset(g, 0, sizeof(*g));
}

/* tag run_id [a] [0 b] [seq]: a NULL part is left out. */
static int make_key(reel_wbuf_t *w, char tag, const char *run_id,
                    const char *a, const char *b, int with_seq, uint64_t seq) {
    reel_wbuf_u8(w, (uint8_t)tag);
    reel_wbuf_raw(w, run_id, strlen(run_id));
    if (a != NULL)
        reel_wbuf_raw(w, a, strlen(a));
    if (b != NULL) {
        reel_wbuf_u8(w, 0);
        reel_wbuf_raw(w, b, strlen(b));
    }
    if (with_seq)
        reel_wbuf_u64(w, seq);
    return reel_wbuf_done(w);
}

static int pending_prefix(reel_wbuf_t *w, const char *run_id,
                          const char *name) {
    if (make_key(w, 'p', run_id, name, NULL, 0, 0) != 0)
        return -1;
    reel_wbuf_u8(w, 0);
    return reel_wbuf_done(w);
}

/* ---- Validation --------------------------------------------------------- */

static reel_code_t check_name(const char *name, reel_status_t *st) {
    return reel_check_charset("name", name, strlen(name),
                              JOURNAL_MAX_SIGNAL_NAME, JOURNAL_SIGNAL_CHARS,
                              st);
}

static reel_code_t check_payload(signals_t *s, const char *p,
                                 reel_status_t *st) {
    size_t len = strlen(p), off = 0;
    const char *why = NULL;

    if (len == 0)
        return REEL_OK;
    if (len > s->lim.max_payload)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "payload: %zu bytes exceeds the limit of %zu "
                               "bytes (reeld's --journal-max-payload-bytes)",
                               len, s->lim.max_payload);
    if (reel_json_validate(p, len, &off, &why) != 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "payload: not valid JSON: %s at byte %zu", why,
                               off);
    return REEL_OK;
}

static reel_code_t check_run_id(const char *id, reel_status_t *st) {
    return journal_check_run_id("run_id", id, st);
}

/* ---- Create -------------------------------------------------------------- */

static reel_code_t has_pending(void *arg, store_txn_t *txn,
                               const char *run_id, const char *name,
                               int *found, reel_status_t *st) {
    reel_wbuf_t w = {0};
    store_iter_t *it = NULL;
    signals_t *s = arg;
    reel_code_t rc;

    *found = 0;
    if (pending_prefix(&w, run_id, name) != 0 ||
        (it = store_txn_iter_prefix(txn, s->cf, w.p, w.len)) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    store_iter_seek(it, w.p, w.len);
    if (store_iter_valid(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);

        *found = klen == w.len + 8 && memcmp(k, w.p, w.len) == 0;
    }
    rc = store_iter_status(it, st); /* a failed read is not "none" */
out:
    if (it != NULL)
        store_iter_destroy(it);
    reel_wbuf_fini(&w);
    return rc;
}

reel_code_t signals_create(store_t *store, journal_t *j,
                           const signals_limits_t *limits, signals_t **out,
                           reel_status_t *st) {
    signals_t *s = calloc(1, sizeof(*s));
    reel_code_t rc;

    *out = NULL;
    if (s == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    s->store = store;
    s->journal = j;
    if (limits != NULL)
        s->lim = *limits;
    if (s->lim.max_payload == 0)
        s->lim.max_payload = JOURNAL_DEFAULT_MAX_PAYLOAD;
    if (s->lim.max_wait_ms <= 0)
        s->lim.max_wait_ms = SIGNALS_DEFAULT_MAX_WAIT_MS;
    if ((rc = store_cf_lookup(store, CF_SIGNALS, &s->cf, st)) != REEL_OK) {
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->mu, NULL);
    journal_set_pending_check(j, has_pending, s);
    *out = s;
    return REEL_OK;
}

static reel_code_t fire_signal(void *arg, store_txn_t *txn, int64_t due_ms,
                               const char *id, size_t idlen, const void *val,
                               size_t vlen, reel_status_t *st);

void signals_use_timers(signals_t *s, timers_t *t) {
    s->timers = t;
    timers_register(t, TIMER_SIGNAL, fire_signal, s);
}

int64_t signals_max_wait_ms(const signals_t *s) {
    return s->lim.max_wait_ms;
}

static void hints_clear(signals_t *s) {
    consume_hint_t *h, *tmp;

    HASH_ITER(hh, s->hints, h, tmp) {
        HASH_DEL(s->hints, h);
        free(h);
    }
    s->n_hints = 0;
}

/* Where the seek for pfx's first pending signal starts: the hint's key, or
 * the prefix itself. */
static void hint_seek(signals_t *s, store_iter_t *it, const reel_wbuf_t *pfx) {
    consume_hint_t *h;

    HASH_FIND(hh, s->hints, pfx->p, pfx->len, h);
    if (h != NULL)
        store_iter_seek(it, h->key, h->klen);
    else
        store_iter_seek(it, pfx->p, pfx->len);
}

/* Remembers key (pfx, then a seq), the pending key just consumed. */
static void hint_set(signals_t *s, const reel_wbuf_t *pfx, const char *key,
                     size_t klen) {
    consume_hint_t *h;

    HASH_FIND(hh, s->hints, pfx->p, pfx->len, h);
    if (h == NULL) {
        if (s->n_hints >= CONSUME_HINTS_MAX)
            hints_clear(s);
        if ((h = malloc(sizeof(*h) + klen)) == NULL)
            return; /* no hint: a seek from the prefix */
        memcpy(h->key, key, klen);
        h->klen = klen;
        HASH_ADD(hh, s->hints, key, pfx->len, h);
        s->n_hints++;
        return;
    }
    if (klen == h->klen)
        memcpy(h->key, key, klen);
}

void signals_destroy(signals_t *s) {
    wait_bucket_t *b, *tmp;

    if (s == NULL)
        return;
    HASH_ITER(hh, s->waits, b, tmp) {
        HASH_DEL(s->waits, b);
        free(b);
    }
    hints_clear(s);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- Operations on the writer thread ------------------------------------ */

typedef struct op {
    store_req_t req;
    signals_t *s;
    char *strs[8]; /* owned copies */
    const char *run_id, *app, *user, *session, *name, *payload, *signal_id;
    uint64_t epoch;
    const atomic_int *abandoned;
    int64_t deliver_at_ms;
    int is_consume;
    int is_cancel;
    int wrote;          /* consume: it has begun writing */
    struct op *direct;  /* send: the consume it does for a claiming waiter */
    signals_send_done_fn send_done;
    signals_consume_done_fn consume_done;
    void *arg;
    signals_send_result_t send;
    signals_consume_result_t consume;
} op_t;

static reel_code_t apply_consume(op_t *op, store_txn_t *txn,
                                 reel_status_t *st);
static op_t *claim_waiter(signals_t *s, const char *run_id, const char *name);
static void op_free(op_t *op);

static reel_code_t get_u64(signals_t *s, store_txn_t *txn,
                           const reel_wbuf_t *k, uint64_t *v,
                           reel_status_t *st) {
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc = store_txn_get(txn, s->cf, k->p, k->len, &val, &vlen, st);

    *v = 0;
    if (rc == REEL_OK && vlen >= 8)
        *v = reel_be64_get((unsigned char *)val);
    free(val);
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        return REEL_OK;
    }
    return rc;
}

/* The stored signal behind a dedup entry: pending or consumed. */
static reel_code_t find_dup(signals_t *s, store_txn_t *txn,
                            const char *run_id, const char *val, size_t vlen,
                            signal_t *out, reel_status_t *st) {
    char name[JOURNAL_MAX_SIGNAL_NAME + 1];
    reel_wbuf_t pk = {0}, ck = {0};
    char *rec = NULL;
    size_t rlen = 0;
    uint64_t seq;
    reel_code_t rc;

    if (vlen < 8 || vlen - 8 > JOURNAL_MAX_SIGNAL_NAME)
        return reel_status_set(st, REEL_DATA_LOSS, "signal index corrupt");
    seq = reel_be64_get((const unsigned char *)val);
    memcpy(name, val + 8, vlen - 8);
    name[vlen - 8] = '\0';
    if (make_key(&pk, 'p', run_id, name, "", 1, seq) != 0 ||
        make_key(&ck, 'c', run_id, NULL, NULL, 1, seq) != 0) {
        reel_wbuf_fini(&pk);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    /* 'p' key: run_id name 0 seq (make_key put the 0 before the empty b). */
    rc = store_txn_get(txn, s->cf, pk.p, pk.len, &rec, &rlen, st);
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        rc = store_txn_get(txn, s->cf, ck.p, ck.len, &rec, &rlen, st);
    }
    if (rc == REEL_NOT_FOUND) { /* still scheduled */
        reel_wbuf_t wk = {0};

        reel_status_fini(st);
        rc = make_key(&wk, 'w', run_id, NULL, NULL, 1, seq) != 0
                 ? reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory")
                 : store_txn_get(txn, s->cf, wk.p, wk.len, &rec, &rlen, st);
        reel_wbuf_fini(&wk);
    }
    if (rc == REEL_OK && rec_decode(rec, rlen, out) != 0)
        rc = reel_status_set(st, REEL_DATA_LOSS, "signal record corrupt");
    free(rec);
    reel_wbuf_fini(&pk);
    reel_wbuf_fini(&ck);
    return rc;
}

/* ---- Delayed signals ------------------------------------------------------ */

/* The timer id of run_id's scheduled signal seq: run_id seq(8). */
static int timer_id(reel_wbuf_t *w, const char *run_id, uint64_t seq) {
    reel_wbuf_raw(w, run_id, strlen(run_id));
    reel_wbuf_u64(w, seq);
    return reel_wbuf_done(w);
}

/* A send with a future deliver_at_ms: stored as scheduled under seq, with
 * a timer at its time; nothing is emitted until it is delivered. */
static reel_code_t schedule_send(op_t *op, store_txn_t *txn, const run_t *run,
                                 uint64_t seq, const reel_wbuf_t *dk,
                                 reel_status_t *st) {
    reel_wbuf_t nk = {0}, wk = {0}, qk = {0}, rec = {0}, dv = {0}, tid = {0};
    unsigned char seqbuf[8];
    signal_t g;
    reel_code_t rc = REEL_OK;

    memset(&g, 0, sizeof(g));
    g.run_id = run->run_id;
    g.name = op->name;
    g.payload = op->payload;
    g.signal_id = op->signal_id;
    g.seq = seq;
    g.sent_at_ms = store_txn_now_ms(txn);
    g.scheduled = 1;
    g.deliver_at_ms = op->deliver_at_ms;
    rec_encode(&g, &rec);
    reel_be64_put(seqbuf, seq);
    reel_wbuf_raw(&dv, seqbuf, 8);
    reel_wbuf_raw(&dv, op->name, strlen(op->name));
    if (reel_wbuf_done(&rec) != 0 || reel_wbuf_done(&dv) != 0 ||
        make_key(&nk, 'n', run->run_id, NULL, NULL, 0, 0) != 0 ||
        make_key(&wk, 'w', run->run_id, NULL, NULL, 1, seq) != 0 ||
        make_key(&qk, 'q', run->run_id, NULL, NULL, 1, seq) != 0 ||
        timer_id(&tid, run->run_id, seq) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    store_txn_put(txn, op->s->cf, nk.p, nk.len, seqbuf, 8);
    store_txn_put(txn, op->s->cf, wk.p, wk.len, rec.p, rec.len);
    store_txn_put(txn, op->s->cf, qk.p, qk.len, op->name, strlen(op->name));
    if (*op->signal_id)
        store_txn_put(txn, op->s->cf, dk->p, dk->len, dv.p, dv.len);
    if ((rc = timers_schedule(op->s->timers, txn, op->deliver_at_ms,
                              TIMER_SIGNAL, (const char *)tid.p, tid.len, "",
                              0, st)) != REEL_OK)
        goto out;
    op->send.run_status = run->status;
    if (rec_decode(rec.p, rec.len, &op->send.signal) != 0)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
out:
    reel_wbuf_fini(&nk);
    reel_wbuf_fini(&wk);
    reel_wbuf_fini(&qk);
    reel_wbuf_fini(&rec);
    reel_wbuf_fini(&dv);
    reel_wbuf_fini(&tid);
    return rc;
}

/*
 * A scheduled signal's time: delivered as a send now would be (the next
 * seq, 'p', a SENT change, a WAITING run woken); awaiters hear of it from
 * the publish step. Cancelled: nothing. To a run that has ended: dropped
 * with its signal_id (a send then would have been refused).
 */
static reel_code_t fire_signal(void *arg, store_txn_t *txn, int64_t due_ms,
                               const char *id, size_t idlen, const void *val,
                               size_t vlen, reel_status_t *st) {
    signals_t *s = arg;
    char run_id[JOURNAL_RUN_ID_LEN + 1], *rec = NULL;
    reel_wbuf_t wk = {0}, qk = {0}, nk = {0}, pk = {0}, nq = {0}, dk = {0},
                out = {0}, dv = {0};
    unsigned char seqbuf[8];
    size_t rlen = 0;
    uint64_t seq, last = 0;
    signal_t g = {0}, d;
    run_t run = {0};
    reel_code_t rc;

    (void)due_ms;
    (void)val;
    (void)vlen;
    if (idlen != JOURNAL_RUN_ID_LEN + 8)
        return reel_status_set(st, REEL_DATA_LOSS,
                               "a delayed signal's timer is malformed (id of "
                               "%zu bytes)",
                               idlen);
    memcpy(run_id, id, JOURNAL_RUN_ID_LEN);
    run_id[JOURNAL_RUN_ID_LEN] = '\0';
    seq = reel_be64_get((const unsigned char *)id + JOURNAL_RUN_ID_LEN);
    if (make_key(&wk, 'w', run_id, NULL, NULL, 1, seq) != 0 ||
        make_key(&qk, 'q', run_id, NULL, NULL, 1, seq) != 0 ||
        make_key(&nk, 'n', run_id, NULL, NULL, 0, 0) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    rc = store_txn_get(txn, s->cf, wk.p, wk.len, &rec, &rlen, st);
    if (rc == REEL_NOT_FOUND) { /* cancelled */
        reel_status_fini(st);
        rc = REEL_OK;
        goto out;
    }
    if (rc != REEL_OK)
        goto out;
    if (rec_decode(rec, rlen, &g) != 0) {
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "scheduled signal %llu of run %s is corrupt",
                             (unsigned long long)seq, run_id);
        goto out;
    }
    if ((rc = journal_txn_get_run(s->journal, txn, run_id, &run, st)) !=
        REEL_OK)
        goto out;
    store_txn_delete(txn, s->cf, wk.p, wk.len);
    store_txn_delete(txn, s->cf, qk.p, qk.len);
    if (*g.signal_id &&
        make_key(&dk, 'd', run_id, g.signal_id, NULL, 0, 0) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (run_status_terminal(run.status)) {
        if (*g.signal_id)
            store_txn_delete(txn, s->cf, dk.p, dk.len);
        goto out;
    }
    if ((rc = get_u64(s, txn, &nk, &last, st)) != REEL_OK)
        goto out;
    d = g;
    d.seq = last + 1;
    d.scheduled = 0;
    d.revision = store_txn_next_revision(txn);
    d.sent_at_ms = store_txn_now_ms(txn);
    rec_encode(&d, &out);
    reel_be64_put(seqbuf, d.seq);
    reel_wbuf_raw(&dv, seqbuf, 8);
    reel_wbuf_raw(&dv, d.name, strlen(d.name));
    if (reel_wbuf_done(&out) != 0 || reel_wbuf_done(&dv) != 0 ||
        make_key(&pk, 'p', run_id, d.name, "", 1, d.seq) != 0 ||
        make_key(&nq, 'q', run_id, NULL, NULL, 1, d.seq) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    store_txn_put(txn, s->cf, nk.p, nk.len, seqbuf, 8);
    store_txn_put(txn, s->cf, pk.p, pk.len, out.p, out.len);
    store_txn_put(txn, s->cf, nq.p, nq.len, d.name, strlen(d.name));
    if (*d.signal_id)
        store_txn_put(txn, s->cf, dk.p, dk.len, dv.p, dv.len);
    if ((rc = emit_change(txn, CHANGE_SENT, &out, run.app, st)) != REEL_OK)
        goto out;
    if (run.status == RUN_WAITING && strcmp(run.waiting_on, d.name) == 0) {
        run_t woken = run;

        woken.status = RUN_RUNNABLE;
        woken.reason = RUN_REASON_SIGNAL;
        woken.not_before_ms = 0;
        woken.updated_at_ms = store_txn_now_ms(txn);
        rc = journal_txn_put_run(s->journal, txn, &woken, &run, NULL, st);
    }
out:
    signal_fini(&g);
    run_fini(&run);
    free(rec);
    reel_wbuf_fini(&wk);
    reel_wbuf_fini(&qk);
    reel_wbuf_fini(&nk);
    reel_wbuf_fini(&pk);
    reel_wbuf_fini(&nq);
    reel_wbuf_fini(&dk);
    reel_wbuf_fini(&out);
    reel_wbuf_fini(&dv);
    return rc;
}

/* CancelSignal: a scheduled signal's records and timer go; one that was
 * delivered is FAILED_PRECONDITION. */
static reel_code_t apply_cancel(op_t *op, store_txn_t *txn,
                                reel_status_t *st) {
    signals_t *s = op->s;
    reel_wbuf_t dk = {0}, wk = {0}, qk = {0}, tid = {0};
    char *val = NULL, *rec = NULL;
    size_t vlen = 0, rlen = 0;
    uint64_t seq;
    run_t run = {0};
    reel_code_t rc;

    if ((rc = journal_txn_get_run(s->journal, txn, op->run_id, &run, st)) !=
        REEL_OK)
        return rc;
    if (make_key(&dk, 'd', run.run_id, op->signal_id, NULL, 0, 0) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    rc = store_txn_get(txn, s->cf, dk.p, dk.len, &val, &vlen, st);
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        rc = reel_status_set(st, REEL_NOT_FOUND,
                             "signal_id: run %s has no signal \"%s\"",
                             run.run_id, op->signal_id);
        goto out;
    }
    if (rc != REEL_OK)
        goto out;
    if (vlen < 8) {
        rc = reel_status_set(st, REEL_DATA_LOSS, "signal index corrupt");
        goto out;
    }
    seq = reel_be64_get((const unsigned char *)val);
    if (make_key(&wk, 'w', run.run_id, NULL, NULL, 1, seq) != 0 ||
        make_key(&qk, 'q', run.run_id, NULL, NULL, 1, seq) != 0 ||
        timer_id(&tid, run.run_id, seq) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    rc = store_txn_get(txn, s->cf, wk.p, wk.len, &rec, &rlen, st);
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        rc = reel_status_set(st, REEL_FAILED_PRECONDITION,
                             "signal \"%s\" of run %s was already delivered "
                             "(seq %llu): only a scheduled signal can be "
                             "cancelled",
                             op->signal_id, run.run_id,
                             (unsigned long long)seq);
        goto out;
    }
    if (rc != REEL_OK)
        goto out;
    if (rec_decode(rec, rlen, &op->send.signal) != 0) {
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "scheduled signal %llu of run %s is corrupt",
                             (unsigned long long)seq, run.run_id);
        goto out;
    }
    store_txn_delete(txn, s->cf, wk.p, wk.len);
    store_txn_delete(txn, s->cf, qk.p, qk.len);
    store_txn_delete(txn, s->cf, dk.p, dk.len);
    rc = timers_cancel(s->timers, txn, op->send.signal.deliver_at_ms,
                       TIMER_SIGNAL, (const char *)tid.p, tid.len, st);
    op->send.run_status = run.status;
out:
    run_fini(&run);
    free(val);
    free(rec);
    reel_wbuf_fini(&dk);
    reel_wbuf_fini(&wk);
    reel_wbuf_fini(&qk);
    reel_wbuf_fini(&tid);
    return rc;
}

static reel_code_t apply_send(op_t *op, store_txn_t *txn, reel_status_t *st) {
    run_t run = {0};
    reel_wbuf_t nk = {0}, pk = {0}, qk = {0}, dk = {0}, rec = {0}, dv = {0};
    unsigned char seqbuf[8];
    signal_t g;
    uint64_t last = 0;
    reel_code_t rc;

    rc = *op->run_id
             ? journal_txn_get_run(op->s->journal, txn, op->run_id, &run, st)
             : journal_txn_session_run(op->s->journal, txn, op->app, op->user,
                                       op->session, &run, st);
    if (rc != REEL_OK)
        return rc;
    if (run_status_terminal(run.status)) {
        rc = reel_status_set(st, REEL_FAILED_PRECONDITION,
                             "run %s is %s: it takes no more signals",
                             run.run_id, run_status_name(run.status));
        goto out;
    }
    op->send.run_status = run.status;
    if (*op->signal_id) {
        char *val = NULL;
        size_t vlen = 0;

        if (make_key(&dk, 'd', run.run_id, op->signal_id, NULL, 0, 0) != 0) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        rc = store_txn_get(txn, op->s->cf, dk.p, dk.len, &val, &vlen, st);
        if (rc == REEL_OK) {
            signal_t *g0 = &op->send.signal;

            rc = find_dup(op->s, txn, run.run_id, val, vlen, g0, st);
            free(val);
            /* A retry repeats the original; anything else is another
             * signal reusing the id, refused as Append refuses a reused
             * idempotency key. */
            if (rc == REEL_OK && strcmp(g0->name, op->name) != 0)
                rc = reel_status_set(st, REEL_ALREADY_EXISTS,
                                     "signal_id \"%s\" already names signal "
                                     "%llu of run %s, named \"%s\": a retry "
                                     "must repeat the original name and "
                                     "payload",
                                     op->signal_id,
                                     (unsigned long long)g0->seq, run.run_id,
                                     g0->name);
            else if (rc == REEL_OK && strcmp(g0->payload, op->payload) != 0)
                rc = reel_status_set(st, REEL_ALREADY_EXISTS,
                                     "signal_id \"%s\" already names signal "
                                     "%llu of run %s, with another payload: "
                                     "a retry must repeat the original name "
                                     "and payload",
                                     op->signal_id,
                                     (unsigned long long)g0->seq, run.run_id);
            if (rc != REEL_OK) {
                signal_fini(g0);
                goto out;
            }
            op->send.duplicate = 1;
            goto out;
        }
        if (rc != REEL_NOT_FOUND)
            goto out;
        reel_status_fini(st);
    }
    if (make_key(&nk, 'n', run.run_id, NULL, NULL, 0, 0) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if ((rc = get_u64(op->s, txn, &nk, &last, st)) != REEL_OK)
        goto out;
    if (op->deliver_at_ms > store_txn_now_ms(txn)) {
        rc = schedule_send(op, txn, &run, last + 1, &dk, st);
        goto out;
    }
    memset(&g, 0, sizeof(g));
    g.run_id = run.run_id;
    g.name = op->name;
    g.payload = op->payload;
    g.signal_id = op->signal_id;
    g.seq = last + 1;
    g.revision = store_txn_next_revision(txn);
    g.sent_at_ms = store_txn_now_ms(txn);
    rec_encode(&g, &rec);
    reel_be64_put(seqbuf, g.seq);
    if (reel_wbuf_done(&rec) != 0 ||
        make_key(&pk, 'p', run.run_id, op->name, "", 1, g.seq) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (make_key(&qk, 'q', run.run_id, NULL, NULL, 1, g.seq) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    store_txn_put(txn, op->s->cf, nk.p, nk.len, seqbuf, 8);
    store_txn_put(txn, op->s->cf, pk.p, pk.len, rec.p, rec.len);
    store_txn_put(txn, op->s->cf, qk.p, qk.len, op->name,
                  strlen(op->name));
    if (*op->signal_id) {
        reel_wbuf_raw(&dv, seqbuf, 8);
        reel_wbuf_raw(&dv, op->name, strlen(op->name));
        if (reel_wbuf_done(&dv) != 0) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        store_txn_put(txn, op->s->cf, dk.p, dk.len, dv.p, dv.len);
    }
    if ((rc = emit_change(txn, CHANGE_SENT, &rec, run.app, st)) != REEL_OK)
        goto out;
    if (rec_decode(rec.p, rec.len, &op->send.signal) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (run.status == RUN_WAITING && strcmp(run.waiting_on, op->name) == 0) {
        run_t woken = run;

        woken.status = RUN_RUNNABLE;
        woken.reason = RUN_REASON_SIGNAL;
        woken.not_before_ms = 0;
        woken.updated_at_ms = store_txn_now_ms(txn);
        if ((rc = journal_txn_put_run(op->s->journal, txn, &woken, &run,
                                      NULL, st)) != REEL_OK)
            goto out;
        op->send.run_status = RUN_RUNNABLE;
    }
    /* A waiter that claims the signal gets it from this same write. What
     * stops the consume before it writes (a stale lease, say) is the
     * waiter's answer; a failure after (out of memory) undoes the send. */
    if ((op->direct = claim_waiter(op->s, run.run_id, op->name)) != NULL) {
        op_t *d = op->direct;

        rc = apply_consume(d, txn, &d->consume.status);
        if (rc != REEL_OK && d->wrote) {
            reel_status_copy(st, &d->consume.status);
            goto out;
        }
    }
    rc = REEL_OK;
out:
    run_fini(&run);
    reel_wbuf_fini(&nk);
    reel_wbuf_fini(&pk);
    reel_wbuf_fini(&qk);
    reel_wbuf_fini(&dk);
    reel_wbuf_fini(&dv);
    reel_wbuf_fini(&rec);
    return rc;
}

/*
 * The payload of the "signal" journal entry a consumption appends:
 * {"name":...,"signal_id":...,"payload":...}, keys in that order, no
 * spaces, the signal's payload as stored (JSON, already validated) or
 * null. Free it with cJSON_free(); NULL if out of memory.
 */
static char *consumed_entry(const signal_t *g) {
    cJSON *o = cJSON_CreateObject();
    char *out = NULL;

    if (o != NULL && cJSON_AddStringToObject(o, "name", g->name) != NULL &&
        cJSON_AddStringToObject(o, "signal_id", g->signal_id) != NULL &&
        cJSON_AddRawToObject(o, "payload",
                             *g->payload ? g->payload : "null") != NULL)
        out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

static reel_code_t apply_consume(op_t *op, store_txn_t *txn,
                                 reel_status_t *st) {
    run_t run = {0};
    reel_wbuf_t pfx = {0}, ck = {0}, qk = {0}, rec = {0};
    store_iter_t *it = NULL;
    char *pkey = NULL, *payload = NULL;
    size_t pklen = 0;
    journal_entry_t entry = {0};
    signal_t g = {0};
    reel_code_t rc;

    if ((rc = journal_txn_get_run(op->s->journal, txn, op->run_id, &run,
                                  st)) != REEL_OK)
        return rc;
    if ((rc = journal_check_lease(&run, op->epoch, st)) != REEL_OK)
        goto out;
    if (op->abandoned != NULL && atomic_load(op->abandoned))
        goto out; /* the awaiter is gone: leave the mailbox alone */
    if (pending_prefix(&pfx, run.run_id, op->name) != 0 ||
        (it = store_txn_iter_prefix(txn, op->s->cf, pfx.p, pfx.len)) ==
            NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    hint_seek(op->s, it, &pfx);
    if (store_iter_valid(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);

        if (klen == pfx.len + 8 && memcmp(k, pfx.p, pfx.len) == 0) {
            pkey = malloc(klen);
            if (pkey != NULL) {
                memcpy(pkey, k, klen);
                pklen = klen;
                hint_set(op->s, &pfx, pkey, pklen);
            }
            if (rec_decode(v, vlen, &g) != 0 || pkey == NULL) {
                rc = reel_status_set(st, REEL_DATA_LOSS,
                                     "a pending signal of run %s is corrupt",
                                     run.run_id);
                goto out;
            }
        }
    }
    /* A read that failed is not an empty mailbox. */
    if (pkey == NULL && (rc = store_iter_status(it, st)) != REEL_OK)
        goto out;
    store_iter_destroy(it);
    it = NULL;
    if (pkey == NULL)
        goto out; /* nothing pending: delivered = 0 */

    /* The journal entry first: its seq goes into the consumed record. */
    if ((payload = consumed_entry(&g)) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    op->wrote = 1;
    if ((rc = journal_txn_append(op->s->journal, txn, &run, op->epoch,
                                 "signal", payload, &entry, NULL, st)) !=
        REEL_OK)
        goto out;
    g.consumed_at_ms = store_txn_now_ms(txn);
    g.journal_seq = entry.seq;
    rec_encode(&g, &rec);
    if (reel_wbuf_done(&rec) != 0 ||
        make_key(&ck, 'c', run.run_id, NULL, NULL, 1, g.seq) != 0 ||
        make_key(&qk, 'q', run.run_id, NULL, NULL, 1, g.seq) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    store_txn_delete(txn, op->s->cf, pkey, pklen);
    store_txn_delete(txn, op->s->cf, qk.p, qk.len);
    store_txn_put(txn, op->s->cf, ck.p, ck.len, rec.p, rec.len);
    if ((rc = emit_change(txn, CHANGE_CONSUMED, &rec, run.app, st)) !=
        REEL_OK)
        goto out;
    if (rec_decode(rec.p, rec.len, &op->consume.signal) != 0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    op->consume.delivered = 1;
out:
    store_iter_destroy(it);
    signal_fini(&g);
    journal_entry_fini(&entry);
    run_fini(&run);
    free(pkey);
    cJSON_free(payload);
    reel_wbuf_fini(&pfx);
    reel_wbuf_fini(&ck);
    reel_wbuf_fini(&qk);
    reel_wbuf_fini(&rec);
    return rc;
}

static reel_code_t op_apply(store_txn_t *txn, void *arg, reel_status_t *st) {
    op_t *op = arg;

    return op->is_consume  ? apply_consume(op, txn, st)
           : op->is_cancel ? apply_cancel(op, txn, st)
                           : apply_send(op, txn, st);
}

static void op_free(op_t *op) {
    if (op->direct != NULL)
        op_free(op->direct);
    for (size_t i = 0; i < sizeof(op->strs) / sizeof(*op->strs); i++)
        free(op->strs[i]);
    reel_status_fini(&op->send.status);
    signal_fini(&op->send.signal);
    reel_status_fini(&op->consume.status);
    signal_fini(&op->consume.signal);
    free(op);
}

/* Writer thread: a claiming waiter's outcome, once its send is done. */
static void finish_direct(op_t *d, int committed) {
    if (!committed) /* the send was undone or lost: nothing was consumed */
        reel_status_fini(&d->consume.status);
    if (!committed || d->consume.status.code != REEL_OK) {
        d->consume.delivered = 0;
        signal_fini(&d->consume.signal);
    }
    d->consume_done(d->arg, &d->consume);
    op_free(d);
}

static void op_done(store_req_t *req) {
    op_t *op = (op_t *)req;

    if (op->direct != NULL) {
        finish_direct(op->direct, req->status.code == REEL_OK);
        op->direct = NULL;
    }
    if (op->is_consume) {
        reel_status_move(&op->consume.status, &req->status);
        if (op->consume.status.code != REEL_OK) {
            op->consume.delivered = 0;
            signal_fini(&op->consume.signal);
        }
        op->consume_done(op->arg, &op->consume);
    } else {
        reel_status_move(&op->send.status, &req->status);
        if (op->send.status.code != REEL_OK)
            signal_fini(&op->send.signal);
        op->send_done(op->arg, &op->send);
    }
    op_free(op);
}

static const char *own(op_t *op, int i, const char *s) {
    op->strs[i] = strdup(s ? s : "");
    if (op->strs[i] != NULL) /* what it holds while queued */
        op->req.bytes += strlen(op->strs[i]) + 1;
    return op->strs[i];
}

static reel_code_t submit(signals_t *s, op_t *op, reel_status_t *st) {
    for (size_t i = 0; i < sizeof(op->strs) / sizeof(*op->strs); i++)
        if (op->strs[i] == NULL && i < 7) {
            op_free(op);
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        }
    op->s = s;
    op->req.apply = op_apply;
    op->req.done = op_done;
    op->req.arg = op;
    if (store_submit(s->store, &op->req) != REEL_OK) {
        reel_code_t rc = op->req.status.code;
        reel_status_move(st, &op->req.status);
        op_free(op);
        return rc;
    }
    return REEL_OK;
}

reel_code_t signals_send(signals_t *s, const signals_send_args_t *a,
                         signals_send_done_fn done, void *arg,
                         reel_status_t *st) {
    const char *run_id = a->run_id ? a->run_id : "";
    op_t *op;
    reel_code_t rc;

    if (*run_id) {
        if ((rc = check_run_id(run_id, st)) != REEL_OK)
            return rc;
        /* Both would leave one of them ignored: the caller that thinks it
         * routes by session would not learn it signalled another run. */
        if ((a->app != NULL && *a->app) || (a->user != NULL && *a->user) ||
            (a->session != NULL && *a->session))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "run_id and app/user/session: give "
                                   "run_id, or app, user and session, not "
                                   "both");
    } else {
        const char *f[3] = {"app", "user", "session"};
        const char *v[3] = {a->app, a->user, a->session};
        for (int i = 0; i < 3; i++)
            if ((rc = reel_check_name(f[i], v[i] ? v[i] : "",
                                      v[i] ? strlen(v[i]) : 0,
                                      JOURNAL_MAX_NAME, st)) != REEL_OK)
                return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                       "%s (give run_id, or app, user and "
                                       "session)",
                                       reel_status_message(st));
    }
    /* Only a send makes a name: awaits and lists keep taking names with an
     * empty token, so a signal sent before that rule can still be
     * consumed. */
    if ((rc = check_name(a->name ? a->name : "", st)) != REEL_OK ||
        (rc = reel_pattern_check_name("name", a->name, strlen(a->name), st)) !=
            REEL_OK ||
        (rc = check_payload(s, a->payload ? a->payload : "", st)) != REEL_OK)
        return rc;
    if (a->signal_id != NULL && strlen(a->signal_id) > SIGNALS_MAX_ID)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "signal_id: at most %d bytes (got %zu)",
                               SIGNALS_MAX_ID, strlen(a->signal_id));
    if (a->deliver_at_ms < 0 ||
        a->deliver_at_ms > reel_clock_now_ms() + SIGNALS_MAX_DELAY_MS)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "deliver_at_ms: must be 0 (now) or a time in "
                               "ms since 1970 at most 365 days ahead (got "
                               "%lld)",
                               (long long)a->deliver_at_ms);
    if (a->deliver_at_ms > 0 && s->timers == NULL)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "deliver_at_ms: this server has no timers");
    op = calloc(1, sizeof(*op));
    if (op == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    op->run_id = own(op, 0, run_id);
    op->app = own(op, 1, a->app);
    op->user = own(op, 2, a->user);
    op->session = own(op, 3, a->session);
    op->name = own(op, 4, a->name);
    op->payload = own(op, 5, a->payload);
    op->signal_id = own(op, 6, a->signal_id);
    op->deliver_at_ms = a->deliver_at_ms;
    op->send_done = done;
    op->arg = arg;
    op->req.grows = 1; /* a new signal stored */
    return submit(s, op, st);
}

reel_code_t signals_cancel(signals_t *s, const char *run_id,
                           const char *signal_id, signals_send_done_fn done,
                           void *arg, reel_status_t *st) {
    reel_code_t rc;
    op_t *op;

    if ((rc = check_run_id(run_id ? run_id : "", st)) != REEL_OK)
        return rc;
    if (signal_id == NULL || *signal_id == '\0' ||
        strlen(signal_id) > SIGNALS_MAX_ID)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "signal_id: 1-%d bytes, the id the signal "
                               "was sent with",
                               SIGNALS_MAX_ID);
    if ((op = calloc(1, sizeof(*op))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    op->is_cancel = 1;
    op->run_id = own(op, 0, run_id);
    op->app = own(op, 1, "");
    op->user = own(op, 2, "");
    op->session = own(op, 3, "");
    op->name = own(op, 4, "");
    op->payload = own(op, 5, "");
    op->signal_id = own(op, 6, signal_id);
    op->send_done = done;
    op->arg = arg;
    return submit(s, op, st);
}

reel_code_t signals_check_await(signals_t *s, const char *run_id,
                                const char *name, int64_t *timeout_ms,
                                reel_status_t *st) {
    reel_code_t rc;

    if ((rc = check_run_id(run_id, st)) != REEL_OK ||
        (rc = check_name(name, st)) != REEL_OK)
        return rc;
    if (*timeout_ms < 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "timeout_ms: must not be negative (got %lld)",
                               (long long)*timeout_ms);
    if (*timeout_ms > s->lim.max_wait_ms)
        *timeout_ms = s->lim.max_wait_ms;
    return REEL_OK;
}

reel_code_t signals_consume(signals_t *s, const char *run_id,
                            const char *name, uint64_t epoch,
                            const atomic_int *abandoned,
                            signals_consume_done_fn done, void *arg,
                            reel_status_t *st) {
    op_t *op = calloc(1, sizeof(*op));

    if (op == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    op->is_consume = 1;
    op->run_id = own(op, 0, run_id);
    op->app = own(op, 1, "");
    op->user = own(op, 2, "");
    op->session = own(op, 3, "");
    op->name = own(op, 4, name);
    op->payload = own(op, 5, "");
    op->signal_id = own(op, 6, "");
    op->epoch = epoch;
    op->abandoned = abandoned;
    op->consume_done = done;
    op->arg = arg;
    return submit(s, op, st);
}

/* ---- Waiters ------------------------------------------------------------ */

/* Links w into the bucket of key (made if new), through its link l. */
static int wait_link(signals_t *s, signals_waiter_t *w, wait_link_t *l,
                     const char *key, size_t klen) {
    wait_bucket_t *b;

    HASH_FIND(hh, s->waits, key, klen, b);
    if (b == NULL) {
        if ((b = calloc(1, sizeof(*b) + klen)) == NULL)
            return -1;
        memcpy(b->key, key, klen);
        b->klen = klen;
        HASH_ADD_KEYPTR(hh, s->waits, b->key, b->klen, b);
    }
    l->bucket = b;
    l->prev = NULL;
    l->next = b->head;
    if (b->head != NULL)
        (l == &w->by_name ? &b->head->by_name : &b->head->by_run)->prev = w;
    b->head = w;
    return 0;
}

static void wait_unlink(signals_t *s, signals_waiter_t *w, wait_link_t *l) {
    int by_name = l == &w->by_name;

    if (l->bucket == NULL)
        return;
    if (l->prev != NULL)
        (by_name ? &l->prev->by_name : &l->prev->by_run)->next = l->next;
    else
        l->bucket->head = l->next;
    if (l->next != NULL)
        (by_name ? &l->next->by_name : &l->next->by_run)->prev = l->prev;
    if (l->bucket->head == NULL) {
        HASH_DEL(s->waits, l->bucket);
        free(l->bucket);
    }
    l->bucket = NULL;
}

signals_waiter_t *signals_wait(signals_t *s, const char *run_id,
                               const char *name, uint64_t epoch,
                               void (*wake)(void *arg),
                               signals_claim_fn claim, void *arg) {
    signals_waiter_t *w = calloc(1, sizeof(*w));
    int rc;

    if (w == NULL || asprintf(&w->key, "%s%s", run_id, name) < 0) {
        free(w);
        return NULL;
    }
    w->klen = strlen(w->key);
    w->epoch = epoch;
    w->wake = wake;
    w->claim = claim;
    w->arg = arg;
    pthread_mutex_lock(&s->mu);
    rc = wait_link(s, w, &w->by_name, w->key, w->klen);
    if (rc == 0 &&
        (rc = wait_link(s, w, &w->by_run, w->key, strlen(run_id))) != 0)
        wait_unlink(s, w, &w->by_name);
    pthread_mutex_unlock(&s->mu);
    if (rc != 0) {
        free(w->key);
        free(w);
        return NULL;
    }
    return w;
}

/*
 * Writer thread, applying a send: the consume op of the first waiter on
 * (run_id, name) that claims the signal, or NULL. The op is made before
 * asking, so a waiter that said yes is never let down for want of memory.
 */
static op_t *claim_waiter(signals_t *s, const char *run_id,
                          const char *name) {
    char key[JOURNAL_RUN_ID_LEN + JOURNAL_MAX_SIGNAL_NAME + 1];
    signals_claim_t c;
    signals_waiter_t *w = NULL;
    wait_bucket_t *b;
    op_t *d = NULL;

    snprintf(key, sizeof(key), "%s%s", run_id, name);
    pthread_mutex_lock(&s->mu);
    HASH_FIND(hh, s->waits, key, strlen(key), b);
    if (b != NULL && (d = calloc(1, sizeof(*d))) != NULL &&
        own(d, 0, run_id) != NULL && own(d, 4, name) != NULL)
        for (w = b->head; w != NULL; w = w->by_name.next)
            if (w->claim != NULL && w->claim(w->arg, &c))
                break;
    pthread_mutex_unlock(&s->mu);
    if (w == NULL) {
        if (d != NULL)
            op_free(d);
        return NULL;
    }
    d->s = s;
    d->is_consume = 1;
    d->run_id = d->strs[0];
    d->name = d->strs[4];
    d->epoch = c.epoch;
    d->abandoned = c.abandoned;
    d->consume_done = c.done;
    d->arg = c.arg;
    return d;
}

void signals_unwait(signals_t *s, signals_waiter_t *w) {
    if (w == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    wait_unlink(s, w, &w->by_name);
    wait_unlink(s, w, &w->by_run);
    pthread_mutex_unlock(&s->mu);
    free(w->key);
    free(w);
}

int signals_change_decode(const store_change_t *c, signal_t *g,
                          int *consumed) {
    if (c->module != SIGNALS_MODULE_ID ||
        (c->type != CHANGE_SENT && c->type != CHANGE_CONSUMED))
        return 0;
    *consumed = c->type == CHANGE_CONSUMED;
    return rec_decode(c->event, c->len, g) == 0 ? 1 : -1;
}

/* Wakes the waiters of a run whose lease they awaited at has ended (the
 * run holds none, or a newer one): their next attempt fails the lease
 * check, so an await ends at once instead of at its timeout. */
static void wake_lease_ended(signals_t *s, const store_change_t *c) {
    run_status_t status;
    uint64_t epoch;
    const char *run_id;
    wait_bucket_t *b;

    if (journal_change_run_lease(c, &status, &epoch, &run_id) != 1)
        return;
    HASH_FIND(hh, s->waits, run_id, strlen(run_id), b);
    for (signals_waiter_t *w = b ? b->head : NULL; w; w = w->by_run.next)
        if (status != RUN_RUNNING || epoch != w->epoch)
            w->wake(w->arg);
}

void signals_publish(signals_t *s, const store_change_t *changes, size_t n) {
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < n && s->waits != NULL; i++) {
        const store_change_t *c = &changes[i];
        wait_bucket_t *b;
        signal_t g;
        char key[JOURNAL_RUN_ID_LEN + JOURNAL_MAX_SIGNAL_NAME + 1];

        if (c->module == JOURNAL_MODULE_ID) {
            wake_lease_ended(s, c);
            continue;
        }
        if (c->module != SIGNALS_MODULE_ID || c->type != CHANGE_SENT ||
            rec_decode(c->event, c->len, &g) != 0)
            continue;
        snprintf(key, sizeof(key), "%s%s", g.run_id, g.name);
        HASH_FIND(hh, s->waits, key, strlen(key), b);
        for (signals_waiter_t *w = b ? b->head : NULL; w; w = w->by_name.next)
            w->wake(w->arg);
        signal_fini(&g);
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- Reads ---------------------------------------------------------------- */

reel_code_t signals_list(signals_t *s, const signals_list_args_t *a,
                         signal_t **out, size_t *n, int *more,
                         reel_status_t *st) {
    const char *run_id = a->run_id, *name = a->name;
    uint32_t limit = a->limit;
    store_snapshot_t *snap = NULL;
    store_iter_t *it = NULL;
    signal_t *arr = NULL;
    size_t used = 0;
    run_t run;
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    *more = 0;
    if ((rc = check_run_id(run_id, st)) != REEL_OK)
        return rc;
    if (name && *name && (rc = check_name(name, st)) != REEL_OK)
        return rc;
    if (limit == 0)
        limit = SIGNALS_LIST_DEFAULT;
    if (limit > SIGNALS_LIST_MAX)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "limit: at most %d (got %u)", SIGNALS_LIST_MAX,
                               limit);
    if ((rc = journal_get_run(s->journal, run_id, &run, st)) != REEL_OK)
        return rc;
    run_fini(&run);
    if ((rc = store_snapshot_create(s->store, &snap, st)) != REEL_OK)
        goto out;
    it = store_iter_create(s->store, s->cf, snap);
    arr = calloc(limit, sizeof(*arr));
    if (it == NULL || arr == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    /* Pending in send order through 'q', then consumed ('c' is by seq);
     * the cursor's part resumes after its seq, a later part from its
     * start. */
    for (int pass = a->after_consumed ? 1 : 0; pass < 2 && !*more; pass++) {
        uint64_t after = pass == (a->after_consumed ? 1 : 0) ? a->after_seq
                                                              : 0;
        char prefix[1 + JOURNAL_RUN_ID_LEN];
        unsigned char seek[sizeof(prefix) + 8];

        if (pass == 1 && !a->include_consumed)
            break;
        prefix[0] = pass == 0 ? 'q' : 'c';
        memcpy(prefix + 1, run_id, JOURNAL_RUN_ID_LEN);
        memcpy(seek, prefix, sizeof(prefix));
        reel_be64_put(seek + sizeof(prefix), after);
        for (store_iter_seek(it, seek, sizeof(seek)); store_iter_valid(it);
             store_iter_next(it)) {
            size_t klen, vlen, rlen = 0;
            const char *k = store_iter_key(it, &klen);
            const char *v = store_iter_value(it, &vlen);
            char sname[JOURNAL_MAX_SIGNAL_NAME + 1], *rec = NULL;
            reel_wbuf_t pk = {0};
            signal_t g;
            uint64_t seq;
            int ok;

            if (klen != sizeof(prefix) + 8 ||
                memcmp(k, prefix, sizeof(prefix)) != 0)
                break;
            seq = reel_be64_get((const unsigned char *)k + sizeof(prefix));
            if (seq <= after)
                continue;
            if (pass == 1) {
                if (rec_decode(v, vlen, &g) != 0)
                    continue;
            } else {
                if (vlen > JOURNAL_MAX_SIGNAL_NAME)
                    continue;
                memcpy(sname, v, vlen);
                sname[vlen] = '\0';
                if (name && *name && strcmp(sname, name) != 0)
                    continue;
                ok = make_key(&pk, 'p', run_id, sname, "", 1, seq) == 0 &&
                     store_snapshot_get(s->store, snap, s->cf,
                                        pk.p, pk.len, &rec, &rlen,
                                        NULL) == REEL_OK &&
                     rec_decode(rec, rlen, &g) == 0;
                if (!ok && rec == NULL) { /* scheduled, not yet 'p' */
                    reel_wbuf_fini(&pk);
                    ok = make_key(&pk, 'w', run_id, NULL, NULL, 1, seq) ==
                             0 &&
                         store_snapshot_get(s->store, snap, s->cf, pk.p,
                                            pk.len, &rec, &rlen,
                                            NULL) == REEL_OK &&
                         rec_decode(rec, rlen, &g) == 0;
                }
                free(rec);
                reel_wbuf_fini(&pk);
                if (!ok)
                    continue;
            }
            if (name && *name && strcmp(g.name, name) != 0) {
                signal_fini(&g);
                continue;
            }
            if (*n == limit || !reel_page_take(a->page, *n, &used, &g)) {
                signal_fini(&g);
                *more = 1;
                break;
            }
            arr[(*n)++] = g;
        }
    }
    rc = store_iter_status(it, st);
out:
    if (rc != REEL_OK) {
        for (size_t i = 0; i < *n; i++)
            signal_fini(&arr[i]);
        free(arr);
        arr = NULL;
        *n = 0;
        *more = 0;
    }
    *out = arr;
    store_iter_destroy(it);
    store_snapshot_release(s->store, snap);
    return rc;
}
