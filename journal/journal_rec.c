/*
 * journal/journal_rec.c: the journal's records and keys.
 *
 * Column family `runs` (integers big-endian, strings as base/codec.h):
 *   'r' run_id                         -> run record
 *   'i' app 0 user 0 session 0 inv     -> run_id     (BeginRun idempotency)
 *   's' app 0 user 0 session 0 run_id  -> ""         (runs of a session)
 *   'o' app 0 user 0 session 0 ~run_id -> ""         (the same, while the
 *                                        run has not ended, newest first:
 *                                        ~ is each byte's 255 - b; a send
 *                                        by session reads the first, past
 *                                        no ended run's delete but those
 *                                        newer; since store format 7)
 *   'a' run_id                         -> ""         (RUNNABLE or RUNNING)
 *   'A' app 0 run_id                   -> ""         (the same, by app:
 *                                        ListRunsToRecover of one app;
 *                                        since store format 3)
 *   'p' app 0 run_id                   -> ""         (every run by app:
 *                                        ListRuns of one app; since
 *                                        store format 4)
 *   'x' S 0 run_id                     -> ""         (every run not
 *                                        RUNNABLE or RUNNING, by status:
 *                                        ListRuns by status; since store
 *                                        format 6)
 *   'X' S app 0 run_id                 -> ""         (the same, by app)
 *     S is one byte, '0' + the run's status
 *   'c' app 0 ready_ms(8) run_id       -> ""         (RUNNABLE, claimable
 *                                        from ready_ms: ClaimNextRun's
 *                                        index, oldest due first)
 *   run record: u8 format (2), u8 status, u32 n_labels, u64 next_seq,
 *     u64 lease_epoch, i64 lease_expires_at_ms, i64 created_at_ms,
 *     i64 updated_at_ms, i64 ended_at_ms, str run_id, app, user, session,
 *     invocation_id, lease_owner, waiting_on, result, then n_labels x
 *     (str key, str value); then (format 2) u32 attempt, i64
 *     not_before_ms, str reason, i64 retry initial_ms, u64 retry
 *     multiplier (the double's bits), i64 retry max_interval_ms, u32 retry
 *     max_attempts, u32 failures, u8 progress, i64 ready_ms, i64
 *     wait_until_ms. A format 1 record (written before recovery existed)
 *     reads with those zero: no attempts, reeld's retry defaults.
 *
 * Column family `journal`:
 *   'e' run_id seq(8)                  -> entry record
 *   'k' run_id idempotency_key         -> seq(8)
 *   entry record: u8 format (1), u64 seq, u64 lease_epoch, u64 revision,
 *     i64 ts_ms, str run_id, kind, payload, idempotency_key.
 *   An entry's change (CHANGE_ENTRY, in memory only) is the record
 *   followed by str app, the run's: the WAL's encoder tells the run's
 *   tenant from it without a read.
 *
 * A decoded run or entry owns one block its strings point into (mem_,
 * freed by run_fini() / journal_entry_fini()); a record that does not
 * decode is never half-filled.
 */
#include "journal/journal_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REC_FORMAT 1
#define RUN_FORMAT 2 /* format 1 plus the recovery fields */
#define RUN_HDR 52 /* format..ended_at_ms */

/* Both are read by key before most writes (a run, an idempotency key). */
const store_cf_desc_t journal_cfs[] = {
    {JOURNAL_CF_RUNS, STORE_CF_LOOKUP},
    {JOURNAL_CF_JOURNAL, STORE_CF_LOOKUP},
    {NULL, STORE_CF_PLAIN},
};

/* ---- Records ------------------------------------------------------------- */

void journal_run_encode(const run_t *r, reel_wbuf_t *w) {
    uint64_t mult;

    reel_wbuf_u8(w, RUN_FORMAT);
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
    memcpy(&mult, &r->retry.multiplier, 8);
    reel_wbuf_u32(w, r->attempt);
    reel_wbuf_u64(w, (uint64_t)r->not_before_ms);
    reel_wbuf_str(w, r->reason);
    reel_wbuf_u64(w, (uint64_t)r->retry.initial_ms);
    reel_wbuf_u64(w, mult);
    reel_wbuf_u64(w, (uint64_t)r->retry.max_interval_ms);
    reel_wbuf_u32(w, r->retry.max_attempts);
    reel_wbuf_u32(w, r->failures_);
    reel_wbuf_u8(w, r->progress_ ? 1 : 0);
    reel_wbuf_u64(w, (uint64_t)r->ready_ms_);
    reel_wbuf_u64(w, (uint64_t)r->wait_until_ms_);
}

/* Decodes into one block: the labels array, then a copy of the record. */
int journal_run_decode(const void *buf, size_t len, run_t *r) {
    const unsigned char *b = buf;
    reel_rbuf_t rd;
    size_t n_labels, lab_bytes;
    run_label_t *labels;
    char *block, *copy;

    memset(r, 0, sizeof(*r));
    if (len < RUN_HDR || (b[0] != REC_FORMAT && b[0] != RUN_FORMAT))
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
    r->reason = "";
    if (b[0] == RUN_FORMAT) {
        uint64_t mult;

        r->attempt = reel_rbuf_u32(&rd);
        r->not_before_ms = (int64_t)reel_rbuf_u64(&rd);
        r->reason = reel_rbuf_str(&rd);
        r->retry.initial_ms = (int64_t)reel_rbuf_u64(&rd);
        mult = reel_rbuf_u64(&rd);
        memcpy(&r->retry.multiplier, &mult, 8);
        r->retry.max_interval_ms = (int64_t)reel_rbuf_u64(&rd);
        r->retry.max_attempts = reel_rbuf_u32(&rd);
        r->failures_ = reel_rbuf_u32(&rd);
        r->progress_ = reel_rbuf_u8(&rd) != 0;
        r->ready_ms_ = (int64_t)reel_rbuf_u64(&rd);
        r->wait_until_ms_ = (int64_t)reel_rbuf_u64(&rd);
    }
    r->mem_ = block;
    if (reel_rbuf_ok(&rd) != 0) {
        run_fini(r);
        return -1;
    }
    return 0;
}

void journal_entry_encode(const journal_entry_t *e, reel_wbuf_t *w) {
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
int journal_entry_decode(const void *buf, size_t len, journal_entry_t *e) {
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
    /* A change's record ends with the run's app; a stored one does not. */
    e->app = rd.p < rd.end ? reel_rbuf_str(&rd) : "";
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

journal_key_t journal_make_key(char tag, const char *const *parts, size_t n,
                               int with_num, uint64_t num) {
    reel_wbuf_t w = {0};
    journal_key_t k = {NULL, 0};

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

journal_key_t journal_run_key(const char *run_id) {
    return journal_make_key('r', &run_id, 1, 0, 0);
}

journal_key_t journal_active_key(const char *run_id) {
    return journal_make_key('a', &run_id, 1, 0, 0);
}

journal_key_t journal_app_active_key(const char *app, const char *run_id) {
    const char *parts[2] = {app, run_id};

    return journal_make_key('A', parts, 2, 0, 0);
}

journal_key_t journal_app_run_key(const char *app, const char *run_id) {
    const char *parts[2] = {app, run_id};

    return journal_make_key('p', parts, 2, 0, 0);
}

/* The first part of a status key: its status byte. */
static void status_part(run_status_t s, char out[2]) {
    out[0] = (char)('0' + (int)s);
    out[1] = '\0';
}

journal_key_t journal_status_key(run_status_t s, const char *run_id) {
    char sp[2];
    const char *parts[2] = {sp, run_id};

    status_part(s, sp);
    return journal_make_key('x', parts, 2, 0, 0);
}

void journal_status_app(run_status_t s, const char *app,
                        char out[JOURNAL_STATUS_APP_MAX]) {
    status_part(s, out);
    snprintf(out + 1, JOURNAL_STATUS_APP_MAX - 1, "%s", app);
}

journal_key_t journal_app_status_key(run_status_t s, const char *app,
                                     const char *run_id) {
    char sa[JOURNAL_STATUS_APP_MAX];
    const char *parts[2] = {sa, run_id};

    journal_status_app(s, app, sa);
    return journal_make_key('X', parts, 2, 0, 0);
}

journal_key_t journal_entry_key(const char *run_id, uint64_t seq) {
    return journal_make_key('e', &run_id, 1, 1, seq);
}

journal_key_t journal_idem_key(const char *run_id, const char *idem) {
    /* run_ids have a fixed length, so no separator is needed. */
    const char *parts[1];
    char buf[JOURNAL_RUN_ID_LEN + JOURNAL_MAX_IDEMPOTENCY + 1];

    snprintf(buf, sizeof(buf), "%s%s", run_id, idem);
    parts[0] = buf;
    return journal_make_key('k', parts, 1, 0, 0);
}

journal_key_t journal_invocation_key(const run_t *r) {
    const char *parts[4] = {r->app, r->user, r->session, r->invocation_id};
    return journal_make_key('i', parts, 4, 0, 0);
}

journal_key_t journal_claimable_key(const char *app, int64_t ready_ms,
                                    const char *run_id) {
    const char *parts[2] = {app, ""};
    journal_key_t k = journal_make_key('c', parts, 2, 1, (uint64_t)ready_ms);
    char *p;

    if (k.p == NULL)
        return k;
    p = realloc(k.p, k.len + JOURNAL_RUN_ID_LEN);
    if (p == NULL) {
        free(k.p);
        k.p = NULL;
        return k;
    }
    memcpy(p + k.len, run_id, JOURNAL_RUN_ID_LEN);
    k.p = p;
    k.len += JOURNAL_RUN_ID_LEN;
    return k;
}

journal_key_t journal_claimable_prefix(const char *app) {
    const char *parts[2] = {app, ""};

    return journal_make_key('c', parts, 2, 0, 0);
}

journal_key_t journal_session_key(const run_t *r) {
    const char *parts[4] = {r->app, r->user, r->session, r->run_id};
    return journal_make_key('s', parts, 4, 0, 0);
}

journal_key_t journal_open_session_key(const char *app, const char *user,
                                       const char *session,
                                       const char *run_id) {
    char inv[JOURNAL_RUN_ID_LEN + 1] = "";
    const char *parts[4] = {app, user, session, inv};

    for (size_t i = 0; run_id != NULL && i < JOURNAL_RUN_ID_LEN; i++)
        inv[i] = (char)(255 - (unsigned char)run_id[i]);
    if (run_id != NULL)
        inv[JOURNAL_RUN_ID_LEN] = '\0';
    return journal_make_key('o', parts, 4, 0, 0);
}

/* ---- Changes ------------------------------------------------------------- */

int journal_change_run_lease(const store_change_t *c, run_status_t *status,
                             uint64_t *lease_epoch, const char **run_id) {
    const unsigned char *b = c->event;
    reel_rbuf_t rd;

    if (c->module != JOURNAL_MODULE_ID || c->type != CHANGE_RUN)
        return 0;
    if (c->len < RUN_HDR || (b[0] != REC_FORMAT && b[0] != RUN_FORMAT))
        return -1;
    reel_rbuf_init(&rd, b, c->len);
    reel_rbuf_u8(&rd);
    *status = (run_status_t)reel_rbuf_u8(&rd);
    reel_rbuf_u32(&rd);
    reel_rbuf_u64(&rd);
    *lease_epoch = reel_rbuf_u64(&rd);
    for (int i = 0; i < 4; i++)
        reel_rbuf_u64(&rd);
    *run_id = reel_rbuf_str(&rd);
    return reel_rbuf_ok(&rd) == 0 ? 1 : -1;
}

int journal_change_decode(const store_change_t *c, run_t *run,
                          journal_entry_t *entry) {
    if (c->module == JOURNAL_MODULE_ID && c->type == CHANGE_RUN)
        return journal_run_decode(c->event, c->len, run) == 0 ? 1 : -1;
    if (c->module == JOURNAL_MODULE_ID && c->type == CHANGE_ENTRY)
        return journal_entry_decode(c->event, c->len, entry) == 0 ? 2 : -1;
    return 0;
}
