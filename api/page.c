/*
 * api/page.c: the response byte budget: page budgets for the paged reads,
 * and the start-up check that reeld's limits let one element of every
 * kind fit in one message.
 *
 * The check works from upper bounds of the protobuf encoding, not from
 * packing a message of the largest values (that would allocate as much as
 * the limits allow): a string field of n bytes is at most a two-byte tag,
 * a varint length and the bytes; a numeric field at most a two-byte tag
 * and ten bytes; a nested message its bound plus a tag and a length.
 */
#include "api/page.h"

#include <stdio.h>

#include "api/wire.h"
#include "journal/journal.h"
#include "kv/kv.h"
#include "signals/signals.h"

#define TAG 2              /* field numbers under 2048 */
#define NUM (TAG + 10)     /* any varint field */

size_t api_page_elem_size(size_t packed) {
    return 1 + api_wire_varint_size(packed) + packed;
}

reel_page_t api_page(const api_ctx_t *ctx, reel_page_size_fn fn, void *arg) {
    reel_page_t p = {0, fn, arg};

    if (ctx->max_response_bytes > API_PAGE_RESERVE)
        p.max_bytes = ctx->max_response_bytes - API_PAGE_RESERVE;
    return p;
}

static size_t str(size_t len) {
    return TAG + api_wire_varint_size(len) + len;
}

static size_t nested(size_t len) { return str(len); }

static size_t max2(size_t a, size_t b) { return a > b ? a : b; }

/* reel.v1.ValueEvent: type, version, prev_version, deleted, revision,
 * ts_ms, and five strings. */
static size_t value_event_bound(const kv_limits_t *kv) {
    return 6 * NUM + str(kv->max_namespace) + str(kv->max_key) +
           2 * str(kv->max_value) + str(KV_MAX_WRITER);
}

/* The journal entry that records a consumed signal wraps its payload:
 * {"name":"N","signal_id":"I","payload":P}, the id JSON-escaped (up to
 * six bytes a byte). */
#define SIGNAL_ENTRY_EXTRA                                                   \
    (64 + JOURNAL_MAX_SIGNAL_NAME + 6 * SIGNALS_MAX_ID)

/* reel.v1.JournalEntry: seq, lease_epoch, revision, ts_ms, four strings. */
static size_t journal_entry_bound(size_t max_payload) {
    return 4 * NUM + str(JOURNAL_RUN_ID_LEN) + str(JOURNAL_MAX_KIND) +
           str(max_payload + SIGNAL_ENTRY_EXTRA) +
           str(JOURNAL_MAX_IDEMPOTENCY);
}

/* reel.v1.Run: eight numeric fields, eight strings, the labels map. */
static size_t run_bound(size_t max_payload) {
    size_t label = nested(str(JOURNAL_MAX_LABEL_KEY) +
                          str(JOURNAL_MAX_LABEL_VALUE));

    /* attempt and not_before_ms, and reason (at most "SIGNAL_TIMEOUT")
     * since issue 21. */
    return 10 * NUM + str(JOURNAL_RUN_ID_LEN) + 5 * str(JOURNAL_MAX_NAME) +
           str(JOURNAL_MAX_SIGNAL_NAME) + str(max_payload) + str(16) +
           JOURNAL_MAX_LABELS * label;
}

/* reel.v1.Signal: seven numeric fields (scheduled and deliver_at_ms since
 * issue 21), four strings. */
static size_t signal_bound(size_t max_payload) {
    return 7 * NUM + str(JOURNAL_RUN_ID_LEN) + str(JOURNAL_MAX_SIGNAL_NAME) +
           str(max_payload) + str(SIGNALS_MAX_ID);
}

/* reel.v1.Event around a body: revision, type, ts_ms, subject, body. The
 * longest subject is kv.<namespace>.<key> or signal.<run>.<name>.consumed. */
static size_t wal_event_bound(const kv_limits_t *kv, size_t body) {
    size_t subject = max2(3 + kv->max_namespace + 1 + kv->max_key,
                          7 + JOURNAL_RUN_ID_LEN + 1 +
                              JOURNAL_MAX_SIGNAL_NAME + 9);

    return 3 * NUM + str(subject) + nested(body);
}

int api_check_response_budget(size_t budget, const kv_limits_t *kv,
                              const journal_limits_t *journal,
                              const signals_limits_t *signals, char *why,
                              size_t whylen) {
    /* Whichever is largest: a paged response of one element (with its
     * reserve), a stream message, a WAL event or a batch of one. */
    size_t value = value_event_bound(kv);
    size_t kv_need = max2(
        API_PAGE_RESERVE + nested(value),
        max2(nested(wal_event_bound(kv, value)),
             /* WatchValues: watch, the event, `also` packed */
             NUM + nested(value) + TAG + 5 + 5 * API_MAX_WATCHES_PER_STREAM));
    size_t payload = max2(journal->max_payload, signals->max_payload);
    size_t body = max2(journal_entry_bound(journal->max_payload),
                       max2(run_bound(journal->max_payload),
                            signal_bound(signals->max_payload)));
    size_t journal_need = max2(API_PAGE_RESERVE + nested(body),
                               nested(wal_event_bound(kv, body)));

    if (kv_need > budget) {
        snprintf(why, whylen,
                 "--max-response-bytes %zu cannot hold one KV event: with "
                 "--kv-max-value-bytes %zu, a ValueHistory, WatchValue or "
                 "WAL event carries value and prev_value and can be %zu "
                 "bytes encoded; raise --max-response-bytes or lower "
                 "--kv-max-value-bytes",
                 budget, kv->max_value, kv_need);
        return -1;
    }
    if (journal_need > budget) {
        snprintf(why, whylen,
                 "--max-response-bytes %zu cannot hold one journal entry, "
                 "run or signal: with --journal-max-payload-bytes %zu, one "
                 "can be %zu bytes encoded; raise --max-response-bytes or "
                 "lower --journal-max-payload-bytes",
                 budget, payload, journal_need);
        return -1;
    }
    return 0;
}
