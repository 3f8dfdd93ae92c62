/*
 * client/client_test.c: what the client library does without a server:
 * the backoff schedule and its jitter, EventBatch decoding (unknown fields,
 * malformed bytes), the consumer's bookkeeping (each revision handed out
 * once, PROGRESS, when acks are due), the options' limits, and the retry
 * bounds against an address where nothing listens. And against a real
 * reeld (api/reeld, started per test on a fresh data dir, and stopped with
 * SIGSTOP to play a server that hangs): size limits on streams, stopping a
 * consumer promptly, noticing a silent server, destroying a client with
 * calls open, uploads.
 *
 * `bazel test --test_filter=NAME` runs the tests whose names match NAME.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpc/support/log.h>

#include "reel/v1/kv.pb-c.h"
#include "reel/v1/wal.pb-c.h"
#include "reel/v1/workspace.pb-c.h"
#include "client/backoff.h"
#include "client/batch.h"
#include "client/client.h"
#include "client/client_impl.h"

/* ---- Backoff ------------------------------------------------------------- */

static void test_backoff_grows_by_the_multiplier_within_jitter_up_to_max(
    void **state) {
    client_backoff_t b = {100, 5000, 2.0, 0.2};
    uint64_t rng = 42;

    (void)state;
    for (unsigned k = 0; k < 12; k++) {
        double base = fmin(5000.0, 100.0 * pow(2.0, k));

        for (int i = 0; i < 500; i++) {
            int64_t d = client_backoff_delay(&b, k, &rng);

            if ((double)d < floor(base * 0.8) ||
                (double)d > fmin(5000.0, base * 1.2))
                fail_msg("attempt %u: %lld outside [%g, %g]", k,
                         (long long)d, base * 0.8, fmin(5000.0, base * 1.2));
        }
    }
}

static void test_backoff_jitter_spreads_the_waits_over_its_whole_range(
    void **state) {
    client_backoff_t b = {1000, 100000, 2.0, 0.2};
    client_backoff_t fixed = {1000, 100000, 2.0, 0.0};
    uint64_t rng = 7;
    int64_t lo = INT64_MAX, hi = 0;

    (void)state;
    for (int i = 0; i < 2000; i++) {
        int64_t d = client_backoff_delay(&b, 2, &rng); /* base 4000 */

        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    /* Uniform over [3200, 4800]: 2000 draws come near both ends. */
    assert_true(lo >= 3200 && lo < 3300);
    assert_true(hi <= 4800 && hi > 4700);
    for (int i = 0; i < 10; i++)
        assert_int_equal(client_backoff_delay(&fixed, 2, &rng), 4000);
}

static void test_backoff_stays_at_max_however_many_attempts(void **state) {
    client_backoff_t b = {1, 30000, 10.0, 0.5};
    uint64_t rng = 3;

    (void)state;
    for (int i = 0; i < 100; i++) {
        int64_t d = client_backoff_delay(&b, UINT32_MAX - (unsigned)i, &rng);

        assert_true(d >= 15000 && d <= 30000);
    }
}

static void test_rng_seeds_differ_and_draws_stay_in_the_unit_range(
    void **state) {
    uint64_t a = client_rng_seed(), b = client_rng_seed();

    (void)state;
    assert_true(a != 0 && b != 0 && a != b);
    for (int i = 0; i < 10000; i++) {
        double u = client_rng_unit(&a);

        assert_true(u >= 0.0 && u < 1.0);
    }
}

/* ---- EventBatch decoding ------------------------------------------------- */

/* A batch of a value event at 7, a PROGRESS at 9 and a run event at 12. */
static size_t sample_batch(uint8_t **out) {
    Reel__V1__Event a = REEL__V1__EVENT__INIT, p = REEL__V1__EVENT__INIT,
                    c = REEL__V1__EVENT__INIT;
    Reel__V1__ValueEvent v = REEL__V1__VALUE_EVENT__INIT;
    Reel__V1__EventBatch b = REEL__V1__EVENT_BATCH__INIT;
    Reel__V1__Event *evs[] = {&a, &p, &c};
    size_t n;

    a.revision = 7;
    a.subject = "kv.app.orders.1";
    a.type = REEL__V1__EVENT__TYPE__VALUE_CHANGED;
    a.ts_ms = 1700000000000;
    v.value = "{\"qty\":2}";
    a.body_case = REEL__V1__EVENT__BODY_VALUE;
    a.value = &v;
    p.revision = 9;
    p.type = REEL__V1__EVENT__TYPE__PROGRESS;
    c.revision = 12;
    c.subject = "run.01J0000000000000000000000A.RUNNING";
    c.type = REEL__V1__EVENT__TYPE__RUN_CHANGED;
    b.n_events = 3;
    b.events = evs;
    n = reel__v1__event_batch__get_packed_size(&b);
    *out = malloc(n);
    assert_non_null(*out);
    reel__v1__event_batch__pack(&b, *out);
    return n;
}

static void test_batch_decode_splits_events_and_keeps_their_stored_bytes(
    void **state) {
    client_batch_t b = {0};
    Reel__V1__Event *back;
    uint8_t *msg;
    size_t len = sample_batch(&msg);
    char err[160];

    (void)state;
    assert_int_equal(client_batch_decode(msg, len, &b, err, sizeof(err)), 0);
    assert_int_equal(b.n, 3);
    assert_int_equal(b.events[0].revision, 7);
    assert_int_equal(b.events[0].type, REEL__V1__EVENT__TYPE__VALUE_CHANGED);
    assert_int_equal(b.events[0].subject_len, strlen("kv.app.orders.1"));
    assert_memory_equal(b.events[0].subject, "kv.app.orders.1",
                        b.events[0].subject_len);
    assert_int_equal(b.events[1].type, CLIENT_EVENT_PROGRESS);
    assert_int_equal(b.events[1].revision, 9);
    assert_int_equal(b.events[1].subject_len, 0);
    assert_int_equal(b.events[2].revision, 12);
    /* The bytes are the event as stored: they unpack to all of it. */
    back = reel__v1__event__unpack(NULL, b.events[0].len, b.events[0].bytes);
    assert_non_null(back);
    assert_int_equal(back->revision, 7);
    assert_int_equal(back->ts_ms, 1700000000000);
    assert_int_equal(back->body_case, REEL__V1__EVENT__BODY_VALUE);
    assert_string_equal(back->value->value, "{\"qty\":2}");
    reel__v1__event__free_unpacked(back, NULL);
    /* A second batch replaces what the first left. */
    assert_int_equal(client_batch_decode(msg, 0, &b, err, sizeof(err)), 0);
    assert_int_equal(b.n, 0);
    client_batch_fini(&b);
    free(msg);
}

static void test_batch_decode_passes_over_fields_it_does_not_know(
    void **state) {
    /* An event: revision 5, an unknown varint (field 20), subject "a.b",
     * an unknown fixed64 (21) and fixed32 (22), type 3, an unknown
     * length-delimited field (23). Around it, unknown batch fields. */
    static const uint8_t ev[] = {
        0x08, 0x05,                         /* 1: 5 */
        0xa0, 0x01, 0x96, 0x01,             /* 20: 150 */
        0x12, 0x03, 'a',  '.',  'b',        /* 2: "a.b" */
        0xa9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, /* 21: fixed64 */
        0xb5, 0x01, 1, 2, 3, 4,             /* 22: fixed32 */
        0x18, 0x03,                         /* 3: VALUE_CHANGED */
        0xba, 0x01, 0x02, 'x', 'y',         /* 23: "xy" */
    };
    uint8_t msg[128];
    size_t n = 0;
    client_batch_t b = {0};
    char err[160];

    (void)state;
    msg[n++] = 0x10; /* batch field 2, a varint */
    msg[n++] = 0x01;
    msg[n++] = 0x0a; /* batch field 1: the event */
    msg[n++] = (uint8_t)sizeof(ev);
    memcpy(msg + n, ev, sizeof(ev));
    n += sizeof(ev);
    msg[n++] = 0x1a; /* batch field 3, bytes */
    msg[n++] = 0x00;
    assert_int_equal(client_batch_decode(msg, n, &b, err, sizeof(err)), 0);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.events[0].revision, 5);
    assert_int_equal(b.events[0].type, 3);
    assert_int_equal(b.events[0].subject_len, 3);
    assert_memory_equal(b.events[0].subject, "a.b", 3);
    assert_ptr_equal(b.events[0].bytes, msg + 4);
    assert_int_equal(b.events[0].len, sizeof(ev));
    client_batch_fini(&b);
}

static void expect_malformed(const uint8_t *msg, size_t len,
                             const char *what) {
    client_batch_t b = {0};
    char err[160] = "";

    if (client_batch_decode(msg, len, &b, err, sizeof(err)) != -1)
        fail_msg("%s: decoded", what);
    if (strstr(err, "EventBatch") == NULL && strstr(err, "Event") == NULL)
        fail_msg("%s: \"%s\" does not say what was malformed", what, err);
    client_batch_fini(&b);
}

static void test_batch_decode_refuses_malformed_bytes_and_says_where(
    void **state) {
    static const uint8_t too_long[] = {0x0a, 0x05, 0x08, 0x01};
    static const uint8_t long_varint[] = {0x0a, 0x0b, 0x08, 0xff, 0xff, 0xff,
                                          0xff, 0xff, 0xff, 0xff, 0xff,
                                          0xff, 0x02};
    static const uint8_t group[] = {0x0b, 0x0c};
    static const uint8_t events_as_varint[] = {0x08, 0x01};
    static const uint8_t revision_as_bytes[] = {0x0a, 0x03, 0x0a, 0x01, 0x00};
    static const uint8_t no_revision[] = {0x0a, 0x02, 0x18, 0x03};
    static const uint8_t field_zero[] = {0x0a, 0x02, 0x00, 0x01};
    static const uint8_t cut_fixed64[] = {0x0a, 0x04, 0x08, 0x01, 0x09, 0x01};
    uint8_t *msg;
    size_t len;
    client_batch_t b = {0};
    char err[160];

    (void)state;
    expect_malformed(too_long, sizeof(too_long), "a length past the end");
    expect_malformed(long_varint, sizeof(long_varint),
                     "a varint over 64 bits");
    expect_malformed(group, sizeof(group), "a group");
    expect_malformed(events_as_varint, sizeof(events_as_varint),
                     "events as a varint");
    expect_malformed(revision_as_bytes, sizeof(revision_as_bytes),
                     "a revision as bytes");
    expect_malformed(no_revision, sizeof(no_revision),
                     "an event without a revision");
    expect_malformed(field_zero, sizeof(field_zero), "field number 0");
    expect_malformed(cut_fixed64, sizeof(cut_fixed64),
                     "a cut fixed64 field");
    /* Every prefix of a real batch decodes to whole events or is refused,
     * and nothing is read past the prefix (ASan runs this too). */
    len = sample_batch(&msg);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *p = malloc(cut ? cut : 1);

        memcpy(p, msg, cut);
        if (client_batch_decode(p, cut, &b, err, sizeof(err)) == 0)
            assert_true(b.n < 3);
        free(p);
    }
    client_batch_fini(&b);
    free(msg);
}

/* ---- The consumer's cursor ----------------------------------------------- */

/* A batch of events (type 3) at the given revisions; PROGRESS for p. */
static void fill(client_batch_t *b, const uint64_t *revs, const char *types,
                 size_t n) {
    static reel_event_t evs[16];

    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++) {
        memset(&evs[i], 0, sizeof(evs[i]));
        evs[i].revision = revs[i];
        evs[i].type = types != NULL && types[i] == 'p'
                          ? CLIENT_EVENT_PROGRESS
                          : 3;
    }
    b->events = evs;
    b->n = n;
    b->cap = 16;
}

static void test_cursor_hands_out_each_revision_once_across_a_reconnect(
    void **state) {
    client_cursor_t c;
    client_batch_t b;
    uint64_t skipped = 0;
    char err[160];

    (void)state;
    client_cursor_init(&c, 0);
    client_cursor_new_stream(&c);
    fill(&b, (uint64_t[]){1, 2, 3}, NULL, 3);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     0);
    assert_int_equal(b.n, 3);
    client_cursor_finish(&c, 3, 2); /* 3 is not finished */
    /* Acked up to 2; the server sends again from there. */
    client_cursor_acked(&c, 2, 0);
    client_cursor_new_stream(&c);
    fill(&b, (uint64_t[]){3, 4, 5}, NULL, 3);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     0);
    assert_int_equal(skipped, 1);
    assert_int_equal(b.n, 2);
    assert_int_equal(b.events[0].revision, 4);
    assert_int_equal(b.events[1].revision, 5);
}

static void test_cursor_refuses_a_revision_that_falls_within_a_stream(
    void **state) {
    client_cursor_t c;
    client_batch_t b;
    uint64_t skipped = 0;
    char err[160];

    (void)state;
    client_cursor_init(&c, 0);
    client_cursor_new_stream(&c);
    fill(&b, (uint64_t[]){5, 6}, NULL, 2);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     0);
    client_cursor_finish(&c, 6, 6);
    fill(&b, (uint64_t[]){6}, NULL, 1);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "revision 6 after 6"));
    /* A PROGRESS below the last event is not out of order: the server may
     * queue a live event before it. */
    fill(&b, (uint64_t[]){4, 8}, "pe", 2);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     0);
    assert_int_equal(b.n, 1);
}

static void test_cursor_acks_progress_once_all_handed_out_is_finished(
    void **state) {
    client_cursor_t c;
    client_batch_t b;
    uint64_t skipped = 0;
    char err[160];

    (void)state;
    client_cursor_init(&c, 0);
    client_cursor_new_stream(&c);
    assert_int_equal(client_cursor_ackable(&c), 0);
    fill(&b, (uint64_t[]){3, 5, 9}, "eep", 3);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     0);
    assert_int_equal(b.n, 2);
    client_cursor_finish(&c, 5, 3);
    /* 5 is handed out and not finished: the PROGRESS at 9 must wait. */
    assert_int_equal(client_cursor_ackable(&c), 3);
    client_cursor_finish(&c, 5, 5); /* the same events: changes nothing */
    assert_int_equal(client_cursor_ackable(&c), 3);
    fill(&b, (uint64_t[]){11}, NULL, 1);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     0);
    client_cursor_finish(&c, 11, 11); /* covers 5 too */
    assert_int_equal(client_cursor_ackable(&c), 11);
    client_cursor_acked(&c, 11, 0);
    assert_int_equal(client_cursor_ackable(&c), 0);
    /* Idle: a PROGRESS alone moves the ack. */
    fill(&b, (uint64_t[]){20}, "p", 1);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     0);
    assert_int_equal(b.n, 0);
    assert_int_equal(client_cursor_ackable(&c), 20);
}

static void test_cursor_events_given_back_are_handed_out_again_not_acked(
    void **state) {
    client_cursor_t c;
    client_batch_t b;
    uint64_t skipped = 0;
    char err[160];

    (void)state;
    client_cursor_init(&c, 0);
    client_cursor_new_stream(&c);
    fill(&b, (uint64_t[]){3, 4, 5, 7}, "eeep", 4);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     0);
    client_cursor_finish(&c, 5, 5);
    /* The callback kept 3 only (a full queue): 4 and 5 are owed again,
     * and the PROGRESS at 7 no longer covers them. */
    client_cursor_hand_back(&c, 3);
    assert_int_equal(c.delivered, 3);
    assert_int_equal(client_cursor_ackable(&c), 3);
    client_cursor_acked(&c, 3, 0);
    /* Giving back what was already given back, or above, changes
     * nothing. */
    client_cursor_hand_back(&c, 9);
    assert_int_equal(c.delivered, 3);
    /* The next stream starts after the ack: 4 and 5 come again. */
    client_cursor_new_stream(&c);
    fill(&b, (uint64_t[]){4, 5, 6}, NULL, 3);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     0);
    assert_int_equal(skipped, 0);
    assert_int_equal(b.n, 3);
    assert_int_equal(b.events[0].revision, 4);
    client_cursor_finish(&c, 6, 6);
    assert_int_equal(client_cursor_ackable(&c), 6);
}

static void test_cursor_answers_never_move_back_nor_past_the_last_event(
    void **state) {
    client_cursor_t c;

    (void)state;
    client_cursor_init(&c, 0);
    client_cursor_finish(&c, 10, 20);
    assert_int_equal(c.finished, 10);
    client_cursor_finish(&c, 12, 5);
    assert_int_equal(c.finished, 10);
    assert_int_equal(c.delivered, 12);
    assert_int_equal(client_cursor_ackable(&c), 10);
    client_cursor_acked(&c, 10, 0);
    client_cursor_acked(&c, 4, 0); /* an older answer arriving late */
    assert_int_equal(c.acked, 10);
}

static void test_cursor_async_answers_finish_what_was_handed_out_only(
    void **state) {
    client_cursor_t c;
    client_batch_t b;
    uint64_t skipped = 0;
    char err[160];

    (void)state;
    client_cursor_init(&c, 0);
    client_cursor_new_stream(&c);
    fill(&b, (uint64_t[]){3, 5, 7}, "eee", 3);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     0);
    /* The callback hands its events to another thread: nothing finished. */
    client_cursor_finish(&c, 7, 0);
    assert_int_equal(client_cursor_ackable(&c), 0);
    client_cursor_finish_async(&c, 4); /* 3 done, 5 not */
    assert_int_equal(client_cursor_ackable(&c), 4);
    client_cursor_finish_async(&c, 2); /* late and lower: changes nothing */
    assert_int_equal(client_cursor_ackable(&c), 4);
    /* A PROGRESS past 7 waits for 5 and 7. */
    fill(&b, (uint64_t[]){12}, "p", 1);
    assert_int_equal(client_cursor_take(&c, &b, &skipped, err, sizeof(err)),
                     0);
    assert_int_equal(client_cursor_ackable(&c), 4);
    /* An answer past what was handed out counts as the last handed out;
     * then the PROGRESS may go. */
    client_cursor_finish_async(&c, 100);
    assert_int_equal(c.finished, 7);
    assert_int_equal(client_cursor_ackable(&c), 12);
}

static void test_cursor_ack_is_due_by_count_or_by_time_never_per_event(
    void **state) {
    client_cursor_t c;
    client_batch_t b;
    uint64_t skipped = 0, rev = 0;
    char err[160];

    (void)state;
    client_cursor_init(&c, 1000);
    client_cursor_new_stream(&c);
    for (int i = 0; i < 2; i++) {
        rev++;
        fill(&b, &rev, NULL, 1);
        client_cursor_take(&c, &b, &skipped, err, sizeof(err));
        client_cursor_finish(&c, rev, rev);
        assert_false(client_cursor_ack_due(&c, 1010, 3, 500));
    }
    rev++;
    fill(&b, &rev, NULL, 1);
    client_cursor_take(&c, &b, &skipped, err, sizeof(err));
    client_cursor_finish(&c, rev, rev);
    assert_true(client_cursor_ack_due(&c, 1010, 3, 500)); /* 3 events */
    client_cursor_acked(&c, rev, 1010);
    assert_false(client_cursor_ack_due(&c, 5000, 3, 500)); /* nothing */
    rev++;
    fill(&b, &rev, NULL, 1);
    client_cursor_take(&c, &b, &skipped, err, sizeof(err));
    client_cursor_finish(&c, rev, rev);
    assert_false(client_cursor_ack_due(&c, 1509, 3, 500));
    assert_true(client_cursor_ack_due(&c, 1510, 3, 500)); /* 500 ms */
}

/* ---- Options ------------------------------------------------------------- */

static void expect_refused(const reel_client_opts_t *o, const char *addr,
                           const char *field) {
    reel_client_t *c = (reel_client_t *)1;
    reel_reply_t err;

    assert_int_equal(reel_client_create(addr, o, &c, &err), 3);
    assert_null(c);
    assert_non_null(err.details);
    if (strstr(err.details, field) == NULL)
        fail_msg("\"%s\" does not name %s", err.details, field);
    reel_reply_fini(&err);
}

static void test_client_options_outside_their_limits_name_the_field(
    void **state) {
    reel_client_opts_t o;
    reel_client_t *c;
    reel_reply_t err;
    int x;

    (void)state;
#define BAD(field, value)                                                    \
    do {                                                                     \
        memset(&o, 0, sizeof(o));                                            \
        o.field = value;                                                     \
        expect_refused(&o, "127.0.0.1:1", #field);                           \
    } while (0)
    BAD(connect_timeout_ms, 50);
    BAD(connect_timeout_ms, -1);
    BAD(deadline_ms, -5);
    BAD(backoff_multiplier, 0.5);
    BAD(backoff_multiplier, NAN);
    BAD(backoff_multiplier, 11.0);
    BAD(backoff_jitter, 1.0);
    BAD(backoff_jitter, -0.1);
    BAD(max_attempts, 101);
    BAD(max_receive_bytes, (size_t)1 << 31);
    BAD(stream_window_bytes, 1000);
    BAD(stream_window_bytes, (size_t)1 << 31);
    BAD(keepalive_time_ms, (int64_t)1 << 40);
    BAD(reserved[3], &x);
    BAD(tls_cert_file, "client.pem"); /* without tls_key_file */
    BAD(tls_key_file, "client.key");
    BAD(tls_ca_file, "no/such/ca.pem");
    BAD(token, "");
    BAD(token, "secret with space");
#undef BAD
    /* A refused token is never echoed. */
    memset(&o, 0, sizeof(o));
    o.token = "s3cret\n";
    assert_int_equal(reel_client_create("127.0.0.1:1", &o, &c, &err), 3);
    assert_null(strstr(err.details, "s3cret"));
    reel_reply_fini(&err);
    memset(&o, 0, sizeof(o));
    o.backoff_initial_ms = 500;
    o.backoff_max_ms = 100;
    expect_refused(&o, "127.0.0.1:1", "backoff_max_ms");
    /* Named as given, not as the maximum it would have set. */
    memset(&o, 0, sizeof(o));
    o.backoff_initial_ms = (int64_t)1 << 31;
    expect_refused(&o, "127.0.0.1:1", "backoff_initial_ms");
    expect_refused(NULL, "", "addr");
    expect_refused(NULL, NULL, "addr");
    /* Nothing need listen: a client connects when a call needs it. */
    assert_int_equal(reel_client_create("127.0.0.1:1", NULL, &c, &err), 0);
    assert_non_null(c);
    assert_null(err.details);
    reel_client_destroy(c);
}

static int never(void *arg, const reel_event_t *ev, size_t n,
                 uint64_t *finished) {
    (void)arg;
    (void)ev;
    (void)n;
    (void)finished;
    fail_msg("no event can come");
    return 1;
}

static void test_consumer_options_are_checked_naming_the_field(void **state) {
    reel_consumer_opts_t o = REEL_CONSUMER_OPTS_INIT;
    reel_consumer_t *k;
    reel_client_t *c;
    reel_reply_t err;

    (void)state;
    assert_int_equal(reel_client_create("127.0.0.1:1", NULL, &c, NULL), 0);
    o.on_batch = never;
    assert_int_equal(reel_consumer_create(c, &o, &k, &err), 3);
    assert_non_null(strstr(err.details, "consumer"));
    reel_reply_fini(&err);
    o.consumer = "indexer";
    o.on_batch = NULL;
    assert_int_equal(reel_consumer_create(c, &o, &k, &err), 3);
    assert_non_null(strstr(err.details, "on_batch"));
    reel_reply_fini(&err);
    o.on_batch = never;
    o.ack_interval_ms = 3600001;
    assert_int_equal(reel_consumer_create(c, &o, &k, &err), 3);
    assert_non_null(strstr(err.details, "ack_interval_ms"));
    reel_reply_fini(&err);
    o.ack_interval_ms = 0;
    o.max_attempts = -1;
    assert_int_equal(reel_consumer_create(c, &o, &k, &err), 3);
    assert_non_null(strstr(err.details, "max_attempts"));
    reel_reply_fini(&err);
    o.max_attempts = 0;
    o.silence_timeout_ms = 1999; /* under two PROGRESS periods */
    assert_int_equal(reel_consumer_create(c, &o, &k, &err), 3);
    assert_non_null(strstr(err.details, "silence_timeout_ms: 1999"));
    reel_reply_fini(&err);
    o.silence_timeout_ms = 3600001;
    assert_int_equal(reel_consumer_create(c, &o, &k, &err), 3);
    assert_non_null(strstr(err.details, "silence_timeout_ms"));
    reel_reply_fini(&err);
    o.silence_timeout_ms = -1; /* never */
    assert_int_equal(reel_consumer_create(c, &o, &k, &err), 0);
    reel_consumer_destroy(k);
    reel_client_destroy(c);
}

/* ---- Retries against an address where nothing listens -------------------- */

/* A port bound and never listened on: connecting to it is refused. */
static int refusing_port(int *fd) {
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t n = sizeof(a);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*fd >= 0);
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &n), 0);
    return ntohs(a.sin_port);
}

/* A client of a port nobody listens on, fd the port's socket. */
static reel_client_t *client_of_nothing(int *fd, int max_attempts,
                                        int64_t initial_ms, int64_t max_ms) {
    reel_client_opts_t o = REEL_CLIENT_OPTS_INIT;
    reel_client_t *c;
    char addr[32];

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", refusing_port(fd));
    o.backoff_initial_ms = initial_ms;
    o.backoff_max_ms = max_ms;
    o.backoff_multiplier = 2.0;
    o.backoff_jitter = 0.25;
    o.max_attempts = max_attempts;
    assert_int_equal(reel_client_create(addr, &o, &c, NULL), 0);
    return c;
}

/* want, or also 4 (DEADLINE_EXCEEDED) when want is negative: a refused
 * connect can outlast a short deadline on a loaded machine. */
static int64_t timed_call(reel_client_t *c, int retry, int64_t timeout_ms,
                          int want) {
    int64_t t0 = client_now_ms();
    reel_reply_t r;
    int rc = retry ? reel_client_unary_retry(c, "/reel.v1.Wal/GetHead", "",
                                             0, timeout_ms, &r)
                   : reel_client_unary(c, "/reel.v1.Wal/GetHead", "", 0,
                                       timeout_ms, &r);

    if (want < 0 && rc == 4)
        want = 4;
    else if (want < 0)
        want = -want;
    if (rc != want)
        fail_msg("%s: %d, not %d (%s)", retry ? "retry" : "once", rc, want,
                 r.details ? r.details : "");
    reel_reply_fini(&r);
    return client_now_ms() - t0;
}

static void test_unary_retry_waits_between_attempts_and_stops_at_the_bound(
    void **state) {
    int fd;
    /* Waits of 300 to 500 ms, then 600 to 1000. */
    reel_client_t *c = client_of_nothing(&fd, 3, 400, 2000);
    int64_t took;

    (void)state;
    /* Sent once: no wait. */
    took = timed_call(c, 0, 5000, 14);
    if (took >= 300)
        fail_msg("a call sent once took %lld ms", (long long)took);
    /* Three attempts: two waits. */
    took = timed_call(c, 1, 5000, 14);
    if (took < 900 || took > 4000)
        fail_msg("three attempts took %lld ms", (long long)took);
    /* No wait that would pass the deadline (which may end the attempt). */
    took = timed_call(c, 1, 100, -14);
    if (took >= 300)
        fail_msg("a 100 ms deadline took %lld ms", (long long)took);
    /* A timeout past any clock is no deadline, not an overflow that ends
     * the retries at once. */
    took = timed_call(c, 1, INT64_MAX, 14);
    if (took < 900)
        fail_msg("three attempts with no deadline took %lld ms",
                 (long long)took);
    reel_client_destroy(c);
    close(fd);
}

static int no_msg(void *arg, const uint8_t *msg, size_t len) {
    (void)arg, (void)msg, (void)len;
    return 1;
}

/* gRPC's bare size error made clear: the request's own size is reeld's
 * refusal of it (INVALID_ARGUMENT, like any input over a limit), another
 * size is the answer over this client's limit; anything else stays. */
static void test_a_message_past_a_size_limit_says_whose(void **state) {
    static const struct {
        const char *details;
        size_t request_len;
        int code;         /* the reply's before, and after when want is NULL */
        const char *want; /* NULL: the reply as it was */
    } cases[] = {
        {"Received message larger than max (5242894 vs. 4194304)", 5242894,
         CLIENT_INVALID_ARGUMENT,
         "request: 5242894 bytes, more than reeld takes in one message (its "
         "--max-message-bytes), at most 4194304; values and payloads have "
         "smaller limits of their own (1 MiB by default): store large data "
         "as a workspace artifact"},
        {"Received message larger than max (200032 vs. 100000)", 40,
         CLIENT_RESOURCE_EXHAUSTED, /* the answer's */
         "answer: 200032 bytes, more than this client takes in one message "
         "(max_receive_bytes), at most 100000"},
        {"Received message larger than max (10 vs. 4)x", 10,
         CLIENT_RESOURCE_EXHAUSTED, NULL},
        {"Received message larger than max (ten vs. 4)", 10,
         CLIENT_RESOURCE_EXHAUSTED, NULL},
        {"queue full", 10, CLIENT_RESOURCE_EXHAUSTED, NULL},
        {"Received message larger than max (10 vs. 4)", 10,
         CLIENT_INVALID_ARGUMENT, NULL}, /* not RESOURCE_EXHAUSTED */
    };
    reel_reply_t r = {0};

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        client_reply_set(&r, cases[i].want ? CLIENT_RESOURCE_EXHAUSTED
                                           : cases[i].code,
                         "%s", cases[i].details);
        client_reply_sized(&r, cases[i].request_len, CLIENT_SIZED_UNARY);
        assert_int_equal(r.code, cases[i].code);
        assert_string_equal(r.details,
                            cases[i].want ? cases[i].want : cases[i].details);
    }
    /* An upload's: the message past the limit is its largest. */
    client_reply_set(&r, CLIENT_RESOURCE_EXHAUSTED,
                     "Received message larger than max (5000007 vs. "
                     "4194304)");
    client_reply_sized(&r, 5000007, CLIENT_SIZED_UPLOAD);
    assert_int_equal(r.code, CLIENT_INVALID_ARGUMENT);
    assert_string_equal(r.details,
                        "a message of the upload: 5000007 bytes, more than "
                        "reeld takes in one message (its "
                        "--max-message-bytes), at most 4194304; send an "
                        "artifact's bytes in chunks of at most 1 MiB");
    /* A stream's: one of its messages, not "the answer". */
    client_reply_set(&r, CLIENT_RESOURCE_EXHAUSTED,
                     "Received message larger than max (5000 vs. 1000)");
    client_reply_sized(&r, 20, CLIENT_SIZED_STREAM);
    assert_int_equal(r.code, CLIENT_RESOURCE_EXHAUSTED);
    assert_string_equal(r.details,
                        "a message of the stream: 5000 bytes, more than "
                        "this client takes in one message "
                        "(max_receive_bytes), at most 1000");
    reel_reply_fini(&r);
}

/* What an UNAVAILABLE means, by what gRPC said and how the client was
 * made: by flag or by variable; nothing for other codes or messages. */
static void test_hints_name_the_options_a_tls_mistake_needs(void **state) {
    static const char *const closed =
        "failed to connect to all addresses; last error: UNAVAILABLE: "
        "ipv4:127.0.0.1:1: Socket closed";
    reel_client_opts_t o = REEL_CLIENT_OPTS_INIT;
    reel_client_t *plain, *tls;
    reel_reply_t r;
    char buf[512];

    (void)state;
    assert_int_equal(reel_client_create("127.0.0.1:1", NULL, &plain, &r), 0);
    o.tls = 1;
    assert_int_equal(reel_client_create("127.0.0.1:1", &o, &tls, &r), 0);
    assert_string_equal(reel_client_hint(plain, CLIENT_UNAVAILABLE, closed, 1,
                                         buf, sizeof(buf)),
                        "127.0.0.1:1 closed the connection: if reeld serves "
                        "TLS there, give --tls-ca (or REEL_TLS=1), and "
                        "--tls-cert and --tls-key if it asks for a client "
                        "certificate; or reeld is at its --max-connections "
                        "(its log says so)");
    assert_string_equal(reel_client_hint(tls, CLIENT_UNAVAILABLE, closed, 0,
                                         buf, sizeof(buf)),
                        "127.0.0.1:1 closed the connection: if reeld asks "
                        "for a client certificate there, give REEL_TLS_CERT "
                        "and REEL_TLS_KEY");
    assert_string_equal(
        reel_client_hint(tls, CLIENT_UNAVAILABLE,
                         "failed to connect to all addresses; last error: "
                         "UNKNOWN: Peer name 127.0.0.1 is not in peer "
                         "certificate",
                         0, buf, sizeof(buf)),
        "reeld's certificate does not name the host of 127.0.0.1:1: connect "
        "by a name or address its certificate holds (its subjectAltName)");
    assert_string_equal(reel_client_hint(plain, CLIENT_UNAVAILABLE,
                                         "Socket closed", 1, buf,
                                         sizeof(buf)),
                        "127.0.0.1:1 closed the connection: did reeld stop?");
    assert_null(reel_client_hint(plain, CLIENT_INTERNAL, closed, 1, buf,
                                 sizeof(buf)));
    assert_null(reel_client_hint(plain, CLIENT_UNAVAILABLE, "draining", 1,
                                 buf, sizeof(buf)));
    assert_null(reel_client_hint(NULL, CLIENT_UNAVAILABLE, closed, 1, buf,
                                 sizeof(buf)));
    /* A log line's note: in parentheses, or nothing. */
    assert_string_equal(reel_client_hint_note(plain, CLIENT_UNAVAILABLE,
                                              "Socket closed", buf,
                                              sizeof(buf)),
                        " (127.0.0.1:1 closed the connection: did reeld "
                        "stop?)");
    assert_string_equal(reel_client_hint_note(plain, CLIENT_INTERNAL, closed,
                                              buf, sizeof(buf)),
                        "");
    reel_client_destroy(plain);
    reel_client_destroy(tls);
}

/* A call's own arguments are checked before anything is sent. */
static void test_calls_name_a_missing_argument(void **state) {
    reel_client_t *c;
    reel_reply_t r;

    (void)state;
    assert_int_equal(reel_client_create("127.0.0.1:1", NULL, &c, &r), 0);
    assert_int_equal(reel_client_unary(c, NULL, "", 0, 100, &r), 3);
    assert_non_null(strstr(r.details, "method: "));
    reel_reply_fini(&r);
    assert_int_equal(reel_client_unary(c, "GetHead", "", 0, 100, &r), 3);
    assert_non_null(strstr(r.details, "method: "));
    reel_reply_fini(&r);
    assert_int_equal(reel_client_unary(c, "/reel.v1.Wal/GetHead", NULL, 4,
                                       100, &r),
                     3);
    assert_non_null(strstr(r.details, "req: "));
    reel_reply_fini(&r);
    assert_int_equal(reel_client_stream(c, "/reel.v1.Wal/SubscribeEvents", "",
                                        0, 100, NULL, NULL, &r),
                     3);
    assert_non_null(strstr(r.details, "on_msg: "));
    reel_reply_fini(&r);
    assert_int_equal(reel_client_stream(c, NULL, "", 0, 100, no_msg, NULL,
                                        &r),
                     3);
    reel_reply_fini(&r);
    assert_int_equal(reel_client_upload(c, "/reel.v1.Workspace/PutArtifact",
                                        100, NULL, NULL, &r),
                     3);
    assert_non_null(strstr(r.details, "next: "));
    reel_reply_fini(&r);
    reel_client_destroy(c);
}

typedef struct retries {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    int64_t delays[8];
    int codes[8];
    reel_consumer_t *k;
    int rc;
} retries_t;

/* May run on another thread than the test's: records, asserts nothing. */
static void count_retry(void *arg, int code, const char *details,
                        int64_t delay_ms) {
    retries_t *t = arg;

    (void)details;
    pthread_mutex_lock(&t->mu);
    if (t->n < 8) {
        t->delays[t->n] = delay_ms;
        t->codes[t->n] = code;
    }
    t->n++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void test_consumer_gives_up_after_max_attempts_with_the_status(
    void **state) {
    int fd;
    reel_client_t *c = client_of_nothing(&fd, 5, 40, 1000);
    reel_consumer_opts_t o = REEL_CONSUMER_OPTS_INIT;
    retries_t t = {.mu = PTHREAD_MUTEX_INITIALIZER,
                   .cv = PTHREAD_COND_INITIALIZER};
    reel_consumer_stats_t s;
    reel_consumer_t *k;
    reel_reply_t why;

    (void)state;
    o.consumer = "indexer";
    o.on_batch = never;
    o.on_retry = count_retry;
    o.arg = &t;
    o.max_attempts = 3;
    assert_int_equal(reel_consumer_create(c, &o, &k, NULL), 0);
    assert_int_equal(reel_consumer_run(k, &why), 14);
    /* Three attempts, two waits between them, growing. */
    assert_int_equal(t.n, 2);
    assert_int_equal(t.codes[0], 14);
    assert_true(t.delays[0] >= 30 && t.delays[0] <= 50);
    assert_true(t.delays[1] >= 60 && t.delays[1] <= 100);
    reel_consumer_stats(k, &s);
    assert_int_equal(s.reconnects, 2);
    assert_int_equal(s.events, 0);
    reel_reply_fini(&why);
    /* A loop runs once. */
    assert_int_equal(reel_consumer_run(k, &why), 9);
    assert_non_null(strstr(why.details, "indexer"));
    reel_reply_fini(&why);
    reel_consumer_destroy(k);
    reel_client_destroy(c);
    close(fd);
}

static void *run_thread(void *arg) {
    retries_t *t = arg;

    t->rc = reel_consumer_run(t->k, NULL);
    return NULL;
}

static void test_consumer_stop_from_another_thread_ends_a_backoff_wait(
    void **state) {
    int fd;
    /* Waits of a minute: only the stop can end the loop in time. */
    reel_client_t *c = client_of_nothing(&fd, 5, 60000, 60000);
    reel_consumer_opts_t o = REEL_CONSUMER_OPTS_INIT;
    retries_t t = {.mu = PTHREAD_MUTEX_INITIALIZER,
                   .cv = PTHREAD_COND_INITIALIZER};
    pthread_t th;
    int64_t t0;

    (void)state;
    o.consumer = "indexer";
    o.on_batch = never;
    o.on_retry = count_retry;
    o.arg = &t;
    assert_int_equal(reel_consumer_create(c, &o, &t.k, NULL), 0);
    t.rc = -1;
    assert_int_equal(pthread_create(&th, NULL, run_thread, &t), 0);
    pthread_mutex_lock(&t.mu);
    while (t.n == 0)
        pthread_cond_wait(&t.cv, &t.mu);
    pthread_mutex_unlock(&t.mu);
    t0 = client_now_ms();
    reel_consumer_stop(t.k);
    reel_consumer_stop(t.k); /* twice is fine */
    pthread_join(th, NULL);
    assert_true(client_now_ms() - t0 < 5000);
    assert_int_equal(t.rc, 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.codes[0], 14);
    reel_consumer_destroy(t.k);
    reel_client_destroy(c);
    close(fd);
}

static void test_consumer_stopped_before_it_runs_returns_at_once(
    void **state) {
    int fd;
    reel_client_t *c = client_of_nothing(&fd, 5, 40, 1000);
    reel_consumer_opts_t o = REEL_CONSUMER_OPTS_INIT;
    reel_consumer_stats_t s;
    reel_consumer_t *k;

    (void)state;
    o.consumer = "indexer";
    o.on_batch = never;
    assert_int_equal(reel_consumer_create(c, &o, &k, NULL), 0);
    reel_consumer_stop(k);
    assert_int_equal(reel_consumer_run(k, NULL), 0);
    reel_consumer_stats(k, &s);
    assert_int_equal(s.reconnects, 0);
    reel_consumer_destroy(k);
    reel_consumer_destroy(NULL);
    reel_client_destroy(c);
    reel_client_destroy(NULL);
    close(fd);
}

static void test_opts_from_env_sets_what_is_set_and_keeps_the_rest(void **st) {
    reel_client_opts_t o = REEL_CLIENT_OPTS_INIT;
    reel_reply_t err = {0};

    (void)st;
    o.tls_ca_file = "default-ca.pem";
    o.token = "flag-token";
    setenv("REEL_TLS", "1", 1);
    setenv("REEL_TLS_CA", "", 1); /* empty: as if unset */
    setenv("REEL_TLS_CERT", "c.pem", 1);
    setenv("REEL_TLS_KEY", "k.pem", 1);
    unsetenv("REEL_TOKEN");
    assert_int_equal(reel_client_opts_from_env(&o, &err), 0);
    assert_int_equal(o.tls, 1);
    assert_string_equal(o.tls_ca_file, "default-ca.pem");
    assert_string_equal(o.tls_cert_file, "c.pem");
    assert_string_equal(o.tls_key_file, "k.pem");
    assert_string_equal(o.token, "flag-token");
    setenv("REEL_TLS", "0", 1);
    setenv("REEL_TOKEN", "env-token", 1);
    assert_int_equal(reel_client_opts_from_env(&o, &err), 0);
    assert_int_equal(o.tls, 0);
    assert_string_equal(o.token, "env-token");
    /* The words too, in any case; anything else is refused, not read as
     * off (which would send the token in the clear). */
    setenv("REEL_TLS", "True", 1);
    assert_int_equal(reel_client_opts_from_env(&o, &err), 0);
    assert_int_equal(o.tls, 1);
    setenv("REEL_TLS", "off", 1);
    assert_int_equal(reel_client_opts_from_env(&o, &err), 0);
    assert_int_equal(o.tls, 0);
    o.tls = 1;
    setenv("REEL_TLS", "ture", 1);
    assert_int_equal(reel_client_opts_from_env(&o, &err),
                     CLIENT_INVALID_ARGUMENT);
    assert_int_equal(o.tls, 1);
    assert_non_null(strstr(err.details, "REEL_TLS: \"ture\""));
    reel_reply_fini(&err);
    unsetenv("REEL_TLS");
    unsetenv("REEL_TLS_CA");
    unsetenv("REEL_TLS_CERT");
    unsetenv("REEL_TLS_KEY");
    unsetenv("REEL_TOKEN");
}

/* ---- Against a real reeld ------------------------------------------------ */

/*
 * One reeld per test, on a fresh data dir and a free port: api/reeld from
 * the test's runfiles (data in BUILD), or $REELD. Started by the test's
 * setup, killed by its teardown however the test ended (SIGKILL reaches a
 * stopped process too), its directory removed.
 */
typedef struct reeld {
    pid_t pid;
    char dir[512]; /* data/ and reeld.log inside */
    char addr[32];
} reeld_t;

static reeld_t g_reeld;

static int free_port(void) {
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t n = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &n) != 0)
        return -1;
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void print_log_tail(const reeld_t *d) {
    char path[sizeof(d->dir) + 16], buf[4096];
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "%s/reeld.log", d->dir);
    if ((f = fopen(path, "rb")) == NULL)
        return;
    if (fseek(f, -(long)sizeof(buf) + 1, SEEK_END) != 0)
        rewind(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    print_message("reeld's log ends:\n%s\n", buf);
}

static void reeld_kill(reeld_t *d) {
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
    }
}

/* Setup: a reeld that answers health checks (up to a minute: ASan on a
 * loaded machine starts slowly). */
static int reeld_up(void **state) {
    reeld_t *d = &g_reeld;
    const char *bin = getenv("REELD") ? getenv("REELD") : "api/reeld";
    const char *tmp = getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp";
    char data[sizeof(d->dir) + 64], log[sizeof(d->dir) + 64];
    posix_spawn_file_actions_t fa;
    reel_client_t *c;
    int64_t t0;
    int port;

    memset(d, 0, sizeof(*d));
    if ((size_t)snprintf(d->dir, sizeof(d->dir), "%s/reeld.XXXXXX", tmp) >=
            sizeof(d->dir) ||
        mkdtemp(d->dir) == NULL || (port = free_port()) < 0)
        return -1;
    snprintf(d->addr, sizeof(d->addr), "127.0.0.1:%d", port);
    snprintf(data, sizeof(data), "%s/data", d->dir);
    snprintf(log, sizeof(log), "%s/reeld.log", d->dir);
    {
        char *argv[] = {(char *)bin, "--data-dir", data, "--listen", d->addr,
                        NULL};
        extern char **environ;

        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, log,
                                         O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        if (posix_spawn(&d->pid, bin, &fa, NULL, argv, environ) != 0) {
            print_message("cannot start %s\n", bin);
            posix_spawn_file_actions_destroy(&fa);
            d->pid = 0;
            return -1;
        }
        posix_spawn_file_actions_destroy(&fa);
    }
    if (reel_client_create(d->addr, NULL, &c, NULL) != 0)
        return -1;
    for (t0 = client_now_ms();;) {
        reel_reply_t r;
        int rc = reel_client_unary(c, "/grpc.health.v1.Health/Check", "", 0,
                                   1000, &r);

        reel_reply_fini(&r);
        if (rc == 0)
            break;
        if (waitpid(d->pid, NULL, WNOHANG) == d->pid ||
            client_now_ms() - t0 > 60000) {
            d->pid = waitpid(d->pid, NULL, WNOHANG) == 0 ? d->pid : 0;
            print_message("reeld did not come up on %s\n", d->addr);
            print_log_tail(d);
            reeld_kill(d);
            reel_client_destroy(c);
            return -1;
        }
        usleep(50 * 1000);
    }
    reel_client_destroy(c);
    *state = d;
    return 0;
}

static int reeld_down(void **state) {
    reeld_t *d = &g_reeld;

    (void)state;
    reeld_kill(d);
    if (d->dir[0] != '\0')
        nftw(d->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    memset(d, 0, sizeof(*d));
    return 0;
}

static uint8_t *pack_set(const char *ns, const char *key, const char *value,
                         size_t *len) {
    Reel__V1__SetValueRequest q = REEL__V1__SET_VALUE_REQUEST__INIT;
    uint8_t *b;

    q.namespace_ = (char *)ns;
    q.key = (char *)key;
    q.value = (char *)value;
    *len = reel__v1__set_value_request__get_packed_size(&q);
    b = malloc(*len + 1);
    assert_non_null(b);
    reel__v1__set_value_request__pack(&q, b);
    return b;
}

static uint8_t *pack_watch(const char *ns, const char *key, size_t *len) {
    Reel__V1__WatchValueRequest q = REEL__V1__WATCH_VALUE_REQUEST__INIT;
    uint8_t *b;

    q.namespace_ = (char *)ns;
    q.key = (char *)key;
    *len = reel__v1__watch_value_request__get_packed_size(&q);
    b = malloc(*len + 1);
    assert_non_null(b);
    reel__v1__watch_value_request__pack(&q, b);
    return b;
}

/* Sets ns/key to a JSON string of n bytes in all. */
static void set_value(reel_client_t *c, const char *ns, const char *key,
                      size_t n) {
    char *v = malloc(n + 1);
    reel_reply_t r;
    uint8_t *q;
    size_t len;

    assert_non_null(v);
    memset(v, 'a', n);
    v[0] = v[n - 1] = '"';
    v[n] = '\0';
    q = pack_set(ns, key, v, &len);
    if (reel_client_unary(c, "/reel.v1.KV/SetValue", q, len, 20000, &r) != 0)
        fail_msg("SetValue: %s", r.details ? r.details : "");
    reel_reply_fini(&r);
    free(q);
    free(v);
}

static int count_msgs(void *arg, const uint8_t *msg, size_t len) {
    (void)msg, (void)len;
    if (arg != NULL)
        ++*(int *)arg;
    return 0;
}

/* A request past reeld's --max-message-bytes, and an answer past the
 * client's max_receive_bytes, on a stream and in the consumer loop: each
 * said as the unary path says it, naming the limit, not gRPC's bare
 * "Received message larger than max". */
static void test_a_stream_past_a_size_limit_says_whose(void **state) {
    reeld_t *d = *state;
    reel_client_opts_t o = REEL_CLIENT_OPTS_INIT;
    reel_consumer_opts_t co = REEL_CONSUMER_OPTS_INIT;
    reel_client_t *c, *small;
    reel_consumer_t *k;
    reel_reply_t r;
    size_t n = (size_t)5 << 20, len;
    uint8_t *big = calloc(n, 1), *q;
    int msgs = 0;

    assert_non_null(big);
    assert_int_equal(reel_client_create(d->addr, NULL, &c, NULL), 0);
    assert_int_equal(reel_client_stream(c, "/reel.v1.KV/WatchValue", big, n,
                                        20000, count_msgs, &msgs, &r),
                     CLIENT_INVALID_ARGUMENT);
    if (strstr(r.details, "--max-message-bytes") == NULL)
        fail_msg("\"%s\" does not name --max-message-bytes", r.details);
    reel_reply_fini(&r);
    free(big);
    set_value(c, "app", "big", 5000);
    o.max_receive_bytes = 1000;
    assert_int_equal(reel_client_create(d->addr, &o, &small, NULL), 0);
    q = pack_watch("app", "big", &len);
    assert_int_equal(reel_client_stream(small, "/reel.v1.KV/WatchValue", q,
                                        len, 20000, count_msgs, &msgs, &r),
                     CLIENT_RESOURCE_EXHAUSTED);
    if (strstr(r.details, "max_receive_bytes") == NULL)
        fail_msg("\"%s\" does not name max_receive_bytes", r.details);
    reel_reply_fini(&r);
    free(q);
    /* The consumer's first batch holds the 5000-byte value. */
    co.consumer = "sized";
    co.on_batch = never;
    co.max_attempts = 3;
    assert_int_equal(reel_consumer_create(small, &co, &k, NULL), 0);
    assert_int_equal(reel_consumer_run(k, &r), CLIENT_RESOURCE_EXHAUSTED);
    if (strstr(r.details, "max_receive_bytes") == NULL)
        fail_msg("\"%s\" does not name max_receive_bytes", r.details);
    reel_reply_fini(&r);
    reel_consumer_destroy(k);
    reel_client_destroy(small);
    reel_client_destroy(c);
}

/* Finishes nothing: every event stays the callback's. */
static int keep_all(void *arg, const reel_event_t *ev, size_t n,
                    uint64_t *finished) {
    (void)arg, (void)ev, (void)n;
    *finished = 0;
    return 0;
}

static int finish_all(void *arg, const reel_event_t *ev, size_t n,
                      uint64_t *finished) {
    (void)arg, (void)ev, (void)n, (void)finished;
    return 0;
}


typedef struct running {
    reel_consumer_t *k;
    reel_reply_t why;
    int rc;
} running_t;

static void *run_thread_why(void *arg) {
    running_t *t = arg;

    t->rc = reel_consumer_run(t->k, &t->why);
    return NULL;
}

/* Polls stats until cond holds, up to ms; 1 if it did. */
static int wait_stats(reel_consumer_t *k,
                      int (*cond)(const reel_consumer_stats_t *),
                      int64_t ms) {
    int64_t t0 = client_now_ms();
    reel_consumer_stats_t s;

    for (;;) {
        reel_consumer_stats(k, &s);
        if (cond(&s))
            return 1;
        if (client_now_ms() - t0 > ms)
            return 0;
        usleep(20 * 1000);
    }
}

static int delivered_some(const reel_consumer_stats_t *s) {
    return s->delivered > 0;
}

static int is_streaming(const reel_consumer_stats_t *s) {
    return s->streaming;
}

/*
 * reeld hangs (SIGSTOP) while an ack is on its way: the stop cancels that
 * ack with the stream, and the final ack gives up after its own short
 * deadline, not the client's (20 s here: a stop used to wait out one ack
 * and then another, 40 s).
 */
static void test_consumer_stop_is_prompt_while_reeld_hangs(void **state) {
    reeld_t *d = *state;
    reel_client_opts_t o = REEL_CLIENT_OPTS_INIT;
    reel_consumer_opts_t co = REEL_CONSUMER_OPTS_INIT;
    running_t t = {0};
    reel_client_t *c;
    pthread_t th;
    int64_t t0, took;

    o.deadline_ms = 20000;
    assert_int_equal(reel_client_create(d->addr, &o, &c, NULL), 0);
    set_value(c, "app", "a", 8);
    co.consumer = "hang";
    co.on_batch = keep_all;
    co.ack_interval_ms = 200;
    assert_int_equal(reel_consumer_create(c, &co, &t.k, NULL), 0);
    assert_int_equal(pthread_create(&th, NULL, run_thread_why, &t), 0);
    if (!wait_stats(t.k, delivered_some, 30000)) {
        reel_consumer_stop(t.k);
        pthread_join(th, NULL);
        fail_msg("nothing delivered in 30 s");
    }
    kill(d->pid, SIGSTOP);
    /* Now finished: the next idle tick acks, and the ack hangs. */
    reel_consumer_finish(t.k, UINT64_MAX);
    usleep(1500 * 1000);
    t0 = client_now_ms();
    reel_consumer_stop(t.k);
    pthread_join(th, NULL);
    took = client_now_ms() - t0;
    if (took > 10000)
        fail_msg("the stop took %lld ms", (long long)took);
    /* The final ack could not go: said so. */
    assert_int_equal(t.rc, CLIENT_DEADLINE_EXCEEDED);
    assert_non_null(strstr(t.why.details, "come again"));
    reel_reply_fini(&t.why);
    reel_consumer_destroy(t.k);
    kill(d->pid, SIGCONT);
    reel_client_destroy(c);
}

/*
 * With every option at its default, a reeld that goes silent (SIGSTOP: the
 * connection stays up, nothing comes) is taken for gone after several
 * PROGRESS periods: the stream ends UNAVAILABLE, on_retry is told, and the
 * loop subscribes again, and streams once reeld is back.
 */
static void test_consumer_takes_a_silent_reeld_for_gone(void **state) {
    reeld_t *d = *state;
    reel_consumer_opts_t co = REEL_CONSUMER_OPTS_INIT;
    retries_t t = {.mu = PTHREAD_MUTEX_INITIALIZER,
                   .cv = PTHREAD_COND_INITIALIZER};
    reel_consumer_stats_t s;
    struct timespec until;
    reel_client_t *c;
    pthread_t th;
    int n;

    assert_int_equal(reel_client_create(d->addr, NULL, &c, NULL), 0);
    co.consumer = "silent";
    co.silence_timeout_ms = 3000; /* the default, 30 s, works the same */
    co.on_batch = finish_all;
    co.on_retry = count_retry;
    co.arg = &t;
    assert_int_equal(reel_consumer_create(c, &co, &t.k, NULL), 0);
    assert_int_equal(pthread_create(&th, NULL, run_thread, &t), 0);
    if (!wait_stats(t.k, is_streaming, 30000)) {
        reel_consumer_stop(t.k);
        pthread_join(th, NULL);
        fail_msg("not streaming after 30 s");
    }
    kill(d->pid, SIGSTOP);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    pthread_mutex_lock(&t.mu);
    while (t.n == 0 && pthread_cond_timedwait(&t.cv, &t.mu, &until) == 0) {
    }
    n = t.n;
    pthread_mutex_unlock(&t.mu);
    kill(d->pid, SIGCONT);
    if (n == 0) {
        reel_consumer_stop(t.k);
        pthread_join(th, NULL);
        fail_msg("a silent reeld went unnoticed for 60 s");
    }
    assert_int_equal(t.codes[0], CLIENT_UNAVAILABLE);
    /* Back: the loop streams again. */
    if (!wait_stats(t.k, is_streaming, 60000)) {
        reel_consumer_stop(t.k);
        pthread_join(th, NULL);
        fail_msg("not streaming again 60 s after reeld came back");
    }
    reel_consumer_stop(t.k);
    pthread_join(th, NULL);
    assert_int_equal(t.rc, 0);
    reel_consumer_stats(t.k, &s);
    assert_true(s.reconnects >= 1);
    reel_consumer_destroy(t.k);
    reel_client_destroy(c);
}

typedef struct open_stream {
    reel_client_t *c;
    int idle; /* reel_client_stream_idle, not reel_client_stream */
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int opened, returned, rc;
} open_stream_t;

static int stream_opened(void *arg, const uint8_t *msg, size_t len) {
    open_stream_t *s = arg;

    (void)msg, (void)len;
    pthread_mutex_lock(s->mu);
    s->opened = 1;
    pthread_cond_broadcast(s->cv);
    pthread_mutex_unlock(s->mu);
    return 0;
}

static int idle_goes_on(void *arg) {
    (void)arg;
    return 0;
}

/* A watch of a key nobody sets: its first message (the end of the
 * snapshot), then nothing, for ever. */
static void *open_stream_main(void *arg) {
    open_stream_t *s = arg;
    reel_reply_t r;
    size_t len;
    uint8_t *q = pack_watch("app", "nobody", &len);
    int rc = s->idle ? reel_client_stream_idle(s->c, "/reel.v1.KV/WatchValue",
                                               q, len, 0, stream_opened,
                                               idle_goes_on, 100, s, &r)
                     : reel_client_stream(s->c, "/reel.v1.KV/WatchValue", q,
                                          len, 0, stream_opened, s, &r);

    reel_reply_fini(&r);
    free(q);
    pthread_mutex_lock(s->mu);
    s->returned = 1;
    s->rc = rc;
    pthread_cond_broadcast(s->cv);
    pthread_mutex_unlock(s->mu);
    return NULL;
}

/* reel_client_destroy with streams open on other threads: it ends them
 * (they return CANCELLED) and waits for them before it frees the client. */
static void test_destroy_ends_the_calls_open_on_the_client(void **state) {
    reeld_t *d = *state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    open_stream_t s[2];
    struct timespec until;
    reel_client_t *c;
    pthread_t th[2];
    int64_t t0, took;
    int opened = 0, returned;

    assert_int_equal(reel_client_create(d->addr, NULL, &c, NULL), 0);
    for (int i = 0; i < 2; i++) {
        s[i] = (open_stream_t){.c = c, .idle = i, .mu = &mu, .cv = &cv};
        assert_int_equal(pthread_create(&th[i], NULL, open_stream_main, &s[i]),
                         0);
    }
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&mu);
    while (!(opened = s[0].opened && s[1].opened) &&
           pthread_cond_timedwait(&cv, &mu, &until) == 0) {
    }
    pthread_mutex_unlock(&mu);
    assert_true(opened);
    t0 = client_now_ms();
    reel_client_destroy(c);
    took = client_now_ms() - t0;
    /* The calls have left the client (ASan would see a use of it freed
     * otherwise); their threads may still be on their way out of
     * reel_client_stream, so they are given seconds, where before the
     * fix the streams stayed blocked. */
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&mu);
    while (!(returned = s[0].returned && s[1].returned) &&
           pthread_cond_timedwait(&cv, &mu, &until) == 0) {
    }
    pthread_mutex_unlock(&mu);
    if (!returned)
        fail_msg("reel_client_destroy returned with its streams open");
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(s[i].rc, CLIENT_CANCELLED);
    }
    if (took > 10000)
        fail_msg("reel_client_destroy took %lld ms", (long long)took);
}

/*
 * reel_client_shutdown from another thread: a stream blocked waiting for
 * its next message and a consumer loop on the client end CANCELLED, saying
 * the client was shut down; a call after it is refused the same way; the
 * client is still there for destroy.
 */
static void test_shutdown_ends_the_calls_open_and_refuses_new_ones(
    void **state) {
    reeld_t *d = *state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    reel_consumer_opts_t co = REEL_CONSUMER_OPTS_INIT;
    open_stream_t s = {0};
    running_t t = {0};
    struct timespec until;
    reel_client_t *c;
    reel_reply_t r;
    pthread_t th, run;
    int64_t t0;
    int opened, returned;

    assert_int_equal(reel_client_create(d->addr, NULL, &c, NULL), 0);
    s = (open_stream_t){.c = c, .mu = &mu, .cv = &cv};
    assert_int_equal(pthread_create(&th, NULL, open_stream_main, &s), 0);
    co.consumer = "shut";
    co.on_batch = finish_all;
    assert_int_equal(reel_consumer_create(c, &co, &t.k, NULL), 0);
    assert_int_equal(pthread_create(&run, NULL, run_thread_why, &t), 0);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    pthread_mutex_lock(&mu);
    while (!(opened = s.opened) &&
           pthread_cond_timedwait(&cv, &mu, &until) == 0) {
    }
    pthread_mutex_unlock(&mu);
    assert_true(opened);
    assert_true(wait_stats(t.k, is_streaming, 30000));
    t0 = client_now_ms();
    reel_client_shutdown(c);
    reel_client_shutdown(c); /* twice is fine */
    pthread_join(run, NULL);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&mu);
    while (!(returned = s.returned) &&
           pthread_cond_timedwait(&cv, &mu, &until) == 0) {
    }
    pthread_mutex_unlock(&mu);
    if (!returned)
        fail_msg("the stream is still open 10 s after the shutdown");
    pthread_join(th, NULL);
    if (client_now_ms() - t0 > 10000)
        fail_msg("the shutdown took %lld ms to end its calls",
                 (long long)(client_now_ms() - t0));
    assert_int_equal(s.rc, CLIENT_CANCELLED);
    assert_int_equal(t.rc, CLIENT_CANCELLED);
    assert_non_null(strstr(t.why.details, "shut down"));
    reel_reply_fini(&t.why);
    assert_int_equal(reel_client_unary(c, "/reel.v1.Wal/GetHead", "", 0, 0,
                                       &r),
                     CLIENT_CANCELLED);
    assert_non_null(strstr(r.details, "shut down"));
    reel_reply_fini(&r);
    reel_consumer_destroy(t.k);
    reel_client_destroy(c);
}

static uint8_t *pack_header(const char *ns, const char *key, size_t *len) {
    Reel__V1__ArtifactHeader h = REEL__V1__ARTIFACT_HEADER__INIT;
    Reel__V1__PutArtifactRequest q = REEL__V1__PUT_ARTIFACT_REQUEST__INIT;
    uint8_t *b;

    h.namespace_ = (char *)ns;
    h.key = (char *)key;
    q.part_case = REEL__V1__PUT_ARTIFACT_REQUEST__PART_HEADER;
    q.header = &h;
    *len = reel__v1__put_artifact_request__get_packed_size(&q);
    b = malloc(*len + 1);
    assert_non_null(b);
    reel__v1__put_artifact_request__pack(&q, b);
    return b;
}

/* The header, then a message NULL with a length: a mistake of next's. */
static int next_null_with_length(void *arg, uint8_t **msg, size_t *len) {
    int *calls = arg;

    switch ((*calls)++) {
    case 0:
        *msg = pack_header("app", "file", len);
        return 1;
    case 1:
        *msg = NULL;
        *len = 1000;
        return 1;
    default:
        return 0;
    }
}

/* An upload's next() that gives msg NULL with len 1000 is refused naming
 * both, not sent as an empty chunk (which stored an empty artifact). */
static void test_upload_refuses_a_null_message_with_a_length(void **state) {
    reeld_t *d = *state;
    reel_client_t *c;
    reel_reply_t r;
    int calls = 0;

    assert_int_equal(reel_client_create(d->addr, NULL, &c, NULL), 0);
    assert_int_equal(reel_client_upload(c, "/reel.v1.Workspace/PutArtifact",
                                        20000, next_null_with_length, &calls,
                                        &r),
                     CLIENT_INVALID_ARGUMENT);
    if (strstr(r.details, "msg") == NULL || strstr(r.details, "1000") == NULL)
        fail_msg("\"%s\" does not name msg and len", r.details);
    reel_reply_fini(&r);
    reel_client_destroy(c);
}

/* ---- Arguments, addresses, the process's gRPC ---------------------------- */

/* NULL where a pointer is needed: INVALID_ARGUMENT naming it (a reply of
 * NULL cannot be named in itself: the code says it), never a crash. */
static void test_null_arguments_are_refused_naming_them(void **state) {
    reel_consumer_opts_t co = REEL_CONSUMER_OPTS_INIT;
    reel_client_t *c;
    reel_reply_t r;
    int fd;

    (void)state;
    c = client_of_nothing(&fd, 1, 10, 10);
    assert_int_equal(reel_client_create("127.0.0.1:1", NULL, NULL, &r),
                     CLIENT_INVALID_ARGUMENT);
    assert_non_null(strstr(r.details, "out: NULL"));
    reel_reply_fini(&r);
    assert_int_equal(reel_client_unary(c, "/reel.v1.Wal/GetHead", "", 0, 100,
                                       NULL),
                     CLIENT_INVALID_ARGUMENT);
    assert_int_equal(reel_client_unary_retry(c, "/reel.v1.Wal/GetHead", "", 0,
                                             100, NULL),
                     CLIENT_INVALID_ARGUMENT);
    assert_int_equal(reel_client_stream(c, "/reel.v1.Wal/SubscribeEvents", "",
                                        0, 100, no_msg, NULL, NULL),
                     CLIENT_INVALID_ARGUMENT);
    assert_int_equal(reel_client_stream_idle(c, "/reel.v1.Wal/SubscribeEvents",
                                             "", 0, 100, no_msg, NULL, 10,
                                             NULL, NULL),
                     CLIENT_INVALID_ARGUMENT);
    assert_int_equal(reel_client_upload(c, "/reel.v1.Workspace/PutArtifact",
                                        100, next_null_with_length, NULL,
                                        NULL),
                     CLIENT_INVALID_ARGUMENT);
    assert_int_equal(reel_client_unary(NULL, "/reel.v1.Wal/GetHead", "", 0,
                                       100, &r),
                     CLIENT_INVALID_ARGUMENT);
    assert_non_null(strstr(r.details, "client: NULL"));
    reel_reply_fini(&r);
    assert_int_equal(reel_client_unary_retry(NULL, "/reel.v1.Wal/GetHead", "",
                                             0, 100, &r),
                     CLIENT_INVALID_ARGUMENT);
    assert_non_null(strstr(r.details, "client: NULL"));
    reel_reply_fini(&r);
    assert_int_equal(reel_client_stream(NULL, "/reel.v1.Wal/SubscribeEvents",
                                        "", 0, 100, no_msg, NULL, &r),
                     CLIENT_INVALID_ARGUMENT);
    assert_non_null(strstr(r.details, "client: NULL"));
    reel_reply_fini(&r);
    assert_int_equal(reel_client_upload(NULL, "/reel.v1.Workspace/PutArtifact",
                                        100, next_null_with_length, NULL, &r),
                     CLIENT_INVALID_ARGUMENT);
    assert_non_null(strstr(r.details, "client: NULL"));
    reel_reply_fini(&r);
    co.consumer = "indexer";
    co.on_batch = never;
    assert_int_equal(reel_consumer_create(c, &co, NULL, &r),
                     CLIENT_INVALID_ARGUMENT);
    assert_non_null(strstr(r.details, "out: NULL"));
    reel_reply_fini(&r);
    assert_int_equal(reel_consumer_run(NULL, &r), CLIENT_INVALID_ARGUMENT);
    assert_non_null(strstr(r.details, "consumer: NULL"));
    reel_reply_fini(&r);
    reel_client_destroy(c);
    close(fd);
}

/* What reelctl and the Python client refuse, as they say it: a port alone
 * (a host named "17878" to gRPC: a DNS failure) and a URL. gRPC's own
 * target forms still pass. */
static void test_create_refuses_a_port_alone_or_a_url(void **state) {
    reel_client_t *c;
    reel_reply_t r;

    (void)state;
    expect_refused(NULL, "17878", "addr: \"17878\" is a port alone");
    expect_refused(NULL, "http://127.0.0.1:17878",
                   "addr: \"http://127.0.0.1:17878\" is a URL");
    assert_int_equal(reel_client_create("dns:localhost:1", NULL, &c, &r), 0);
    reel_client_destroy(c);
    assert_int_equal(reel_client_create("dns:///localhost:1", NULL, &c, &r),
                     0);
    reel_client_destroy(c);
}

static int app_log_lines;

/* Counts, and says it as gRPC would (it stays the process's: gRPC has no
 * way to set its own back). */
static void app_log(gpr_log_func_args *a) {
    app_log_lines++;
    fprintf(stderr, "grpc: %s\n", a->message);
}

/* A library leaves the process's gRPC log function as the application set
 * it. */
static void test_create_leaves_the_grpc_log_function_alone(void **state) {
    reel_client_t *c;

    (void)state;
    gpr_set_log_function(app_log);
    assert_int_equal(reel_client_create("127.0.0.1:1", NULL, &c, NULL), 0);
    gpr_log(GPR_ERROR, "a line of the application's");
    reel_client_destroy(c);
    assert_int_equal(app_log_lines, 1);
}

/* A run that ends OK says so with a message, "" (details is NULL only
 * when out of memory, as for any reply). */
static void test_a_run_that_ends_ok_has_details(void **state) {
    reel_consumer_opts_t co = REEL_CONSUMER_OPTS_INIT;
    reel_consumer_t *k;
    reel_client_t *c;
    reel_reply_t why;
    int fd;

    (void)state;
    c = client_of_nothing(&fd, 1, 10, 10);
    co.consumer = "indexer";
    co.on_batch = never;
    assert_int_equal(reel_consumer_create(c, &co, &k, NULL), 0);
    reel_consumer_stop(k);
    assert_int_equal(reel_consumer_run(k, &why), 0);
    assert_non_null(why.details);
    assert_string_equal(why.details, "");
    reel_reply_fini(&why);
    reel_consumer_destroy(k);
    reel_client_destroy(c);
    close(fd);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opts_from_env_sets_what_is_set_and_keeps_the_rest),
        cmocka_unit_test(test_a_message_past_a_size_limit_says_whose),
        cmocka_unit_test(test_hints_name_the_options_a_tls_mistake_needs),
        cmocka_unit_test(test_calls_name_a_missing_argument),
        cmocka_unit_test(
            test_backoff_grows_by_the_multiplier_within_jitter_up_to_max),
        cmocka_unit_test(
            test_backoff_jitter_spreads_the_waits_over_its_whole_range),
        cmocka_unit_test(test_backoff_stays_at_max_however_many_attempts),
        cmocka_unit_test(
            test_rng_seeds_differ_and_draws_stay_in_the_unit_range),
        cmocka_unit_test(
            test_batch_decode_splits_events_and_keeps_their_stored_bytes),
        cmocka_unit_test(
            test_batch_decode_passes_over_fields_it_does_not_know),
        cmocka_unit_test(
            test_batch_decode_refuses_malformed_bytes_and_says_where),
        cmocka_unit_test(
            test_cursor_hands_out_each_revision_once_across_a_reconnect),
        cmocka_unit_test(
            test_cursor_refuses_a_revision_that_falls_within_a_stream),
        cmocka_unit_test(
            test_cursor_acks_progress_once_all_handed_out_is_finished),
        cmocka_unit_test(
            test_cursor_events_given_back_are_handed_out_again_not_acked),
        cmocka_unit_test(
            test_cursor_answers_never_move_back_nor_past_the_last_event),
        cmocka_unit_test(
            test_cursor_async_answers_finish_what_was_handed_out_only),
        cmocka_unit_test(
            test_cursor_ack_is_due_by_count_or_by_time_never_per_event),
        cmocka_unit_test(
            test_client_options_outside_their_limits_name_the_field),
        cmocka_unit_test(test_consumer_options_are_checked_naming_the_field),
        cmocka_unit_test(
            test_unary_retry_waits_between_attempts_and_stops_at_the_bound),
        cmocka_unit_test(
            test_consumer_gives_up_after_max_attempts_with_the_status),
        cmocka_unit_test(
            test_consumer_stop_from_another_thread_ends_a_backoff_wait),
        cmocka_unit_test(test_consumer_stopped_before_it_runs_returns_at_once),
        cmocka_unit_test(test_null_arguments_are_refused_naming_them),
        cmocka_unit_test(test_create_refuses_a_port_alone_or_a_url),
        cmocka_unit_test(test_create_leaves_the_grpc_log_function_alone),
        cmocka_unit_test(test_a_run_that_ends_ok_has_details),
        cmocka_unit_test_setup_teardown(
            test_a_stream_past_a_size_limit_says_whose, reeld_up, reeld_down),
        cmocka_unit_test_setup_teardown(
            test_consumer_stop_is_prompt_while_reeld_hangs, reeld_up,
            reeld_down),
        cmocka_unit_test_setup_teardown(
            test_consumer_takes_a_silent_reeld_for_gone, reeld_up,
            reeld_down),
        cmocka_unit_test_setup_teardown(
            test_destroy_ends_the_calls_open_on_the_client, reeld_up,
            reeld_down),
        cmocka_unit_test_setup_teardown(
            test_upload_refuses_a_null_message_with_a_length, reeld_up,
            reeld_down),
        cmocka_unit_test_setup_teardown(
            test_shutdown_ends_the_calls_open_and_refuses_new_ones, reeld_up,
            reeld_down),
    };
    const char *only = getenv("TESTBRIDGE_TEST_ONLY");

    /* bazel test --test_filter=NAME */
    if (only != NULL && *only != '\0')
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
