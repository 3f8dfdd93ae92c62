/*
 * reactor/reactor_test.c: what reel-reactor decides without a server:
 * configuration errors (naming the app and the field), runs read from
 * their wire bytes (with and without issue 21's fields), the claimable
 * rules, dispatch ids and bodies, the table of dispatches, and what may be
 * acknowledged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "reactor/config.h"
#include "reactor/dispatch.h"
#include "reel/v1/journal.pb-c.h"
#include "sink/window.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define APP(extra)                                                          \
    "{\"apps\": [{\"app\": \"shop\", \"url\": \"http://127.0.0.1:1/run\", " \
    "\"secrets\": [\"" SECRET "\"]" extra "}]}"

/* ---- Configuration ------------------------------------------------------- */

static void assert_refused(const char *text, const char *want) {
    reactor_config_t cfg;
    reel_status_t st = REEL_STATUS_INIT;

    assert_int_equal(reactor_config_parse(text, strlen(text), &cfg, &st),
                     REEL_INVALID_ARGUMENT);
    if (strstr(reel_status_message(&st), want) == NULL)
        fail_msg("message \"%s\" does not contain \"%s\"",
                 reel_status_message(&st), want);
    /* Secrets are described, never repeated. */
    assert_null(strstr(reel_status_message(&st), "MfKQ9r8"));
    assert_int_equal(cfg.n, 0);
    assert_null(cfg.apps);
    reel_status_fini(&st);
}

static void test_config_defaults(void **state) {
    const char *text = APP("");
    reactor_config_t cfg;
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    assert_int_equal(reactor_config_parse(text, strlen(text), &cfg, &st),
                     REEL_OK);
    assert_int_equal(cfg.n, 1);
    assert_string_equal(cfg.apps[0].app, "shop");
    assert_int_equal(cfg.apps[0].max_in_flight, 16);
    assert_int_equal(cfg.apps[0].n_secrets, 1);
    assert_int_equal(cfg.apps[0].secrets[0].len, 24);
    assert_int_equal(cfg.apps[0].retry.n_steps, 9);
    assert_int_equal(cfg.apps[0].retry.steps_ms[0], 500);
    assert_int_equal(cfg.sweep_interval_ms, 10000);
    assert_int_equal(cfg.queue_max_runs, 10000);
    assert_int_equal(reactor_config_find(&cfg, "shop", 4), 0);
    assert_int_equal(reactor_config_find(&cfg, "shopx", 5), -1);
    assert_int_equal(reactor_config_find(&cfg, "sho", 3), -1);
    reactor_config_fini(&cfg);
}

static void test_config_that_cannot_fit_the_open_files_limit(void **state) {
    const char *text = APP(", \"max_in_flight\": 1000");
    reactor_config_t cfg;
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    assert_int_equal(reactor_config_parse(text, strlen(text), &cfg, &st),
                     REEL_OK);
    /* 1000 connections and 64 of its own: 1064. */
    assert_int_equal(reactor_config_check_open_files(&cfg, 1064, &st),
                     REEL_OK);
    assert_int_equal(reactor_config_check_open_files(&cfg, UINT64_MAX, &st),
                     REEL_OK);
    assert_int_equal(reactor_config_check_open_files(&cfg, 1063, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st),
                           "max_in_flight: the apps need up to 1064 open "
                           "files at once (1000 connections: each app's "
                           "max_in_flight, the most \"shop\"'s 1000; and 64 "
                           "for reel-reactor's own), more than the "
                           "open-files limit of 1063"));
    reel_status_fini(&st);
    reactor_config_fini(&cfg);
}

static void test_config_errors_name_the_app_and_the_field(void **state) {
    (void)state;
    assert_refused("[]", "config: not a JSON object");
    assert_refused("{\"apps\": []}", "config: apps: must be a non-empty "
                   "array");
    assert_refused("{\"app\": []}", "config: unknown key \"app\"");
    assert_refused("{\"apps\": [{\"url\": \"http://x\"}]}",
                   "apps[0]: app: missing");
    assert_refused("{\"apps\": [{\"app\": \"shop\"}]}",
                   "apps[0] \"shop\": url: missing");
    assert_refused("{\"apps\": [{\"app\": \"shop\", \"url\": \"x\"}]}",
                   "apps[0] \"shop\": url: no scheme: it must start with "
                   "http:// or https://");
    assert_refused("{\"apps\": [{\"app\": \"shop\", \"url\": "
                   "\"shop-worker:8080/run\"}]}",
                   "apps[0] \"shop\": url: no scheme: it must start with "
                   "http:// or https://");
    assert_refused("{\"apps\": [{\"app\": \"shop\", \"url\": \"http://x\"}]}",
                   "apps[0] \"shop\": secrets: missing");
    assert_refused("{\"apps\": [{\"app\": \"shop\", \"url\": \"http://x\", "
                   "\"secrets\": [\"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]}]}",
                   "apps[0] \"shop\": secrets[0]:");
    assert_refused(APP(", \"secret\": 1"),
                   "apps[0] \"shop\": secret: unknown key");
    assert_refused(APP(", \"max_in_flight\": 0"),
                   "apps[0] \"shop\": max_in_flight: 0 is not an integer "
                   "from 1 to 1024");
    assert_refused(APP(", \"max_in_flight\": 1e300"),
                   "max_in_flight: 1.0000000000000001e+300 is not an "
                   "integer from 1 to 1024");
    assert_refused(APP(", \"timeout_ms\": -5"),
                   "apps[0] \"shop\": timeout_ms: -5 is not an integer");
    assert_refused(APP(", \"retry_schedule_ms\": [1, -1]"),
                   "retry_schedule_ms: step 1 is not an integer from 0");
    assert_refused(APP(", \"retry_jitter\": 0.9"),
                   "retry_jitter: must be a number from 0 to 0.5");
    assert_refused("{\"apps\": [{\"app\": \"a\", \"url\": \"http://x\", "
                   "\"secrets\": [\"" SECRET "\"]}, {\"app\": \"a\", "
                   "\"url\": \"http://y\", \"secrets\": [\"" SECRET "\"]}]}",
                   "apps[1] \"a\": app: also apps[0]");
    assert_refused("{\"sweep_interval_ms\": 50, \"apps\": [{\"app\": \"a\", "
                   "\"url\": \"http://x\", \"secrets\": [\"" SECRET "\"]}]}",
                   "config: sweep_interval_ms: must be 0 (no sweep) or an "
                   "integer from 100 to 3600000");
    assert_refused("{\"queue_max_runs\": 0, \"apps\": [{\"app\": \"a\", "
                   "\"url\": \"http://x\", \"secrets\": [\"" SECRET "\"]}]}",
                   "config: queue_max_runs: must be an integer from 1 to "
                   "1000000");
    /* A URL curl cannot use, a key given twice (cJSON finds the first and
     * the other was ignored), text after the object, an app name reeld
     * would refuse. */
    assert_refused("{\"apps\": [{\"app\": \"shop\", \"url\": "
                   "\"http://127.0.0.1:99999/\", \"secrets\": [\"" SECRET
                   "\"]}]}",
                   "apps[0] \"shop\": url: not a URL: Port number");
    assert_refused("{\"apps\": [{\"app\": \"shop\", \"url\": "
                   "\"http://h/\\r\\nX-Evil: 1\", \"secrets\": [\"" SECRET
                   "\"]}]}",
                   "url: a space or control character at byte 9");
    assert_refused(APP(", \"max_in_flight\": 1, \"max_in_flight\": 5000"),
                   "config: apps[0] \"shop\": \"max_in_flight\" appears twice");
    assert_refused("{\"sweep_interval_ms\": 1000, \"sweep_interval_ms\": 1, "
                   "\"apps\": []}",
                   "config: \"sweep_interval_ms\" appears twice");
    assert_refused(APP("") " garbage", "config: more after the JSON value");
    assert_refused("{\"apps\": [{\"app\": \"a\\u00ff\xff\", \"url\": "
                   "\"http://x\", \"secrets\": [\"" SECRET "\"]}]}",
                   "app: not valid UTF-8");
}

/* ---- Runs from their wire bytes ------------------------------------------- */

static size_t put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;

    do {
        p[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            p[n] |= 0x80;
        n++;
    } while (v);
    return n;
}

/*
 * A packed Run with the given fields, then (when extra) attempt = 18,
 * not_before_ms = 19 and reason = 20 appended as a reeld with issue 21's
 * contract writes them. Returns the length; buf holds 512 bytes.
 */
static size_t pack_run(uint8_t *buf, const char *app, int status,
                       uint64_t epoch, int extra, uint32_t attempt,
                       int64_t not_before, const char *reason) {
    Reel__V1__Run r = REEL__V1__RUN__INIT;
    size_t n;

    r.run_id = "01RUN";
    r.app = (char *)app;
    r.status = status;
    r.lease_epoch = epoch;
    r.lease_owner = "w";
    n = reel__v1__run__pack(&r, buf);
    if (extra) {
        n += put_varint(buf + n, (18 << 3) | 0);
        n += put_varint(buf + n, attempt);
        n += put_varint(buf + n, (19 << 3) | 0);
        n += put_varint(buf + n, (uint64_t)not_before);
        n += put_varint(buf + n, (20 << 3) | 2);
        n += put_varint(buf + n, strlen(reason));
        memcpy(buf + n, reason, strlen(reason));
        n += strlen(reason);
    }
    return n;
}

/* A packed Event: type, ts_ms and the run's bytes as field 11. */
static size_t pack_event(uint8_t *buf, int type, int64_t ts,
                         const uint8_t *run, size_t len) {
    size_t n = 0;

    n += put_varint(buf + n, (1 << 3) | 0);
    n += put_varint(buf + n, 42);
    n += put_varint(buf + n, (3 << 3) | 0);
    n += put_varint(buf + n, (uint64_t)type);
    n += put_varint(buf + n, (4 << 3) | 0);
    n += put_varint(buf + n, (uint64_t)ts);
    n += put_varint(buf + n, (11 << 3) | 2);
    n += put_varint(buf + n, len);
    memcpy(buf + n, run, len);
    return n + len;
}

static void test_a_run_is_read_with_and_without_the_new_fields(void **state) {
    uint8_t run[512], ev[700];
    const uint8_t *rb;
    size_t n, rl;
    reactor_run_t r;
    int64_t ts;
    int type;

    (void)state;
    n = pack_run(run, "shop", REACTOR_RUNNABLE, 7, 0, 0, 0, "");
    assert_int_equal(reactor_run_scan(run, n, &r), 0);
    assert_int_equal(r.run_id_len, 5);
    assert_memory_equal(r.run_id, "01RUN", 5);
    assert_int_equal(r.app_len, 4);
    assert_int_equal(r.status, REACTOR_RUNNABLE);
    assert_int_equal(r.epoch, 7);
    assert_int_equal(r.attempt, 0);
    assert_int_equal(r.not_before_ms, 0);
    assert_int_equal(r.reason_len, 0);

    n = pack_run(run, "shop", REACTOR_RUNNABLE, 7, 1, 3, 1796290050112LL,
                 "BACKOFF_ENDED");
    assert_int_equal(reactor_run_scan(run, n, &r), 0);
    assert_int_equal(r.attempt, 3);
    assert_int_equal(r.not_before_ms, 1796290050112LL);
    assert_int_equal(r.reason_len, 13);
    assert_memory_equal(r.reason, "BACKOFF_ENDED", 13);

    {
        /* A reason of any length is read (a later reeld may say more). */
        char longer[201];
        uint8_t big[512];
        size_t m;

        memset(longer, 'R', 200);
        longer[200] = '\0';
        m = pack_run(big, "shop", REACTOR_RUNNABLE, 7, 1, 1, 0, longer);
        assert_int_equal(reactor_run_scan(big, m, &r), 0);
        assert_int_equal(r.reason_len, 200);
        assert_int_equal(reactor_run_scan(run, n, &r), 0);
    }
    n = pack_event(ev, REACTOR_RUN_CHANGED, 1796290050112LL, run, n);
    assert_int_equal(reactor_event_scan(ev, n, &type, &ts, &rb, &rl), 0);
    assert_int_equal(type, REACTOR_RUN_CHANGED);
    assert_int_equal(ts, 1796290050112LL);
    assert_non_null(rb);
    assert_int_equal(reactor_run_scan(rb, rl, &r), 0);
    assert_int_equal(r.attempt, 3);
    /* Another type's body is no run. */
    n = pack_event(ev, 3, 1, run, 10);
    assert_int_equal(reactor_event_scan(ev, n, &type, &ts, &rb, &rl), 0);
    assert_null(rb);
}

static void test_malformed_bytes_are_refused_never_read_past(void **state) {
    uint8_t run[512], *cut;
    size_t n;
    reactor_run_t r;
    const uint8_t *rb;
    size_t rl;
    int64_t ts;
    int type;

    (void)state;
    n = pack_run(run, "shop", REACTOR_RUNNABLE, 7, 1, 3, 5, "LEASE_EXPIRED");
    /* Every cut short copy (on the heap, so ASan sees a read past it). */
    for (size_t k = 1; k < n; k++) {
        reactor_run_t tmp;

        cut = malloc(k);
        memcpy(cut, run, k);
        (void)reactor_run_scan(cut, k, &tmp);
        (void)reactor_event_scan(cut, k, &type, &ts, &rb, &rl);
        free(cut);
    }
    /* A length past the end, a bad wire type, no run id. */
    assert_int_equal(reactor_run_scan((const uint8_t *)"\x0a\x09" "ab", 4, &r),
                     -1);
    assert_int_equal(reactor_run_scan((const uint8_t *)"\x0b", 1, &r), -1);
    assert_int_equal(reactor_run_scan((const uint8_t *)"\x12\x01x", 3, &r),
                     -1);
    /* run_id as a varint is not a run. */
    assert_int_equal(reactor_run_scan((const uint8_t *)"\x08\x01", 2, &r), -1);
    assert_int_equal(reactor_event_scan((const uint8_t *)"\x5a\x7f", 2, &type,
                                        &ts, &rb, &rl),
                     -1);
    /* RUN_CHANGED without its run. */
    assert_int_equal(reactor_event_scan((const uint8_t *)"\x18\x02", 2, &type,
                                        &ts, &rb, &rl),
                     -1);
}

static void test_claimable_follows_the_contract(void **state) {
    reactor_run_t r = {0};

    (void)state;
    r.status = REACTOR_RUNNABLE;
    assert_true(reactor_event_claimable(&r, 1000));
    r.not_before_ms = 1000;
    assert_true(reactor_event_claimable(&r, 1000));
    /* A backoff: the timer's BACKOFF_ENDED event comes when it ends. */
    r.not_before_ms = 1001;
    assert_false(reactor_event_claimable(&r, 1000));
    assert_false(reactor_sweep_claimable(&r, 1000));
    assert_true(reactor_sweep_claimable(&r, 1001));
    r.status = REACTOR_RUNNING;
    assert_false(reactor_event_claimable(&r, 5000));
    /* The sweep lists RUNNING runs only once their lease expired. */
    assert_true(reactor_sweep_claimable(&r, 0));
    r.status = 7; /* PAUSED */
    r.not_before_ms = 0;
    assert_false(reactor_event_claimable(&r, 5000));
    assert_false(reactor_sweep_claimable(&r, 5000));
}

static void test_the_id_and_body_name_the_run(void **state) {
    uint8_t run[512];
    size_t n = pack_run(run, "sh\"op", REACTOR_RUNNABLE,
                        9007199254740993ULL, 1, 2, 0, "LEASE_EXPIRED");
    reactor_run_t r;
    char id[REACTOR_ID_MAX], *body;
    size_t len;
    cJSON *o, *d;

    (void)state;
    assert_int_equal(reactor_run_scan(run, n, &r), 0);
    reactor_dispatch_id(&r, id, sizeof(id));
    assert_string_equal(id, "01RUN:9007199254740993:2");
    body = reactor_dispatch_body(&r, 77, 1796290050112LL, 0, &len);
    assert_non_null(body);
    assert_int_equal(strlen(body), len);
    /* 64-bit numbers exactly (a double would print ...992). */
    assert_non_null(strstr(body, "\"epoch\":9007199254740993"));
    o = cJSON_Parse(body);
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItem(o, "type")->valuestring,
                        "reel.run_claimable");
    assert_string_equal(cJSON_GetObjectItem(o, "timestamp")->valuestring,
                        "2026-12-03T09:27:30.112Z");
    d = cJSON_GetObjectItem(o, "data");
    assert_string_equal(cJSON_GetObjectItem(d, "run_id")->valuestring,
                        "01RUN");
    assert_string_equal(cJSON_GetObjectItem(d, "app")->valuestring, "sh\"op");
    assert_int_equal(cJSON_GetObjectItem(d, "attempt")->valueint, 2);
    assert_string_equal(cJSON_GetObjectItem(d, "reason")->valuestring,
                        "LEASE_EXPIRED");
    assert_int_equal(cJSON_GetObjectItem(d, "revision")->valueint, 77);
    assert_string_equal(cJSON_GetObjectItem(d, "source")->valuestring,
                        "event");
    cJSON_Delete(o);
    free(body);
}

/* ---- The table ---------------------------------------------------------------- */

static void test_one_dispatch_per_id_holding_every_event(void **state) {
    uint8_t run[512];
    reactor_table_t t = {0};
    reactor_run_t r;
    reactor_dispatch_t *a, *b, *c;
    size_t n;
    int added;

    (void)state;
    n = pack_run(run, "shop", REACTOR_RUNNABLE, 4, 0, 0, 0, "");
    assert_int_equal(reactor_run_scan(run, n, &r), 0);
    a = reactor_table_offer(&t, &r, 0, 10, 100, 1, &added);
    assert_non_null(a);
    assert_true(added);
    /* The same run at the same epoch and attempt: the same dispatch, which
     * now settles both events; from the sweep: no window place. */
    b = reactor_table_offer(&t, &r, 0, 11, 101, 1, &added);
    assert_ptr_equal(a, b);
    assert_false(added);
    b = reactor_table_offer(&t, &r, 0, UINT64_MAX, 0, 1, &added);
    assert_ptr_equal(a, b);
    assert_int_equal(a->n_pos, 2);
    assert_int_equal(a->pos[0], 10);
    assert_int_equal(a->pos[1], 11);
    /* A newer epoch is another dispatch. */
    n = pack_run(run, "shop", REACTOR_RUNNABLE, 5, 0, 0, 0, "");
    assert_int_equal(reactor_run_scan(run, n, &r), 0);
    c = reactor_table_offer(&t, &r, 0, 12, 102, 1, &added);
    assert_true(added);
    assert_ptr_not_equal(a, c);
    assert_int_equal(t.n, 2);
    assert_ptr_equal(t.first, a);
    assert_ptr_equal(reactor_table_find(&t, "01RUN:5:0"), c);
    reactor_table_remove(&t, a);
    reactor_dispatch_free(a);
    assert_null(reactor_table_find(&t, "01RUN:4:0"));
    assert_ptr_equal(t.first, c);
    assert_ptr_equal(t.last, c);
    assert_int_equal(t.n, 1);
    /* A sweep-found dispatch says so in its body. */
    n = pack_run(run, "shop", REACTOR_RUNNING, 6, 0, 0, 0, "");
    assert_int_equal(reactor_run_scan(run, n, &r), 0);
    a = reactor_table_offer(&t, &r, 0, UINT64_MAX, 0, 1, &added);
    assert_int_equal(a->n_pos, 0);
    assert_non_null(strstr(a->body, "\"source\":\"sweep\""));
    reactor_table_fini(&t);
    assert_int_equal(t.n, 0);
}

/* ---- What may be acknowledged ------------------------------------------------- */

static void test_only_settled_events_are_acknowledged(void **state) {
    uint8_t run[512];
    reactor_table_t t = {0};
    sink_window_t w;
    reactor_run_t r;
    reactor_dispatch_t *a, *b, *c;
    size_t n;
    int added;

    (void)state;
    assert_int_equal(sink_window_init(&w, 3), 0);
    /* 5: run X at epoch 1; 6: another app's, passed over; 7: run Y; 8:
     * run X at epoch 1 again (a replay): the same dispatch as 5. */
    n = pack_run(run, "shop", REACTOR_RUNNABLE, 1, 0, 0, 0, "");
    assert_int_equal(reactor_run_scan(run, n, &r), 0);
    a = reactor_hold(&t, &w, &r, 0, 5, REACTOR_RUN_CHANGED, 1, &added);
    assert_non_null(a);
    assert_true(added);
    sink_window_pass(&w, 6);
    n = pack_run(run, "shop", REACTOR_RUNNABLE, 3, 0, 0, 0, "");
    memcpy(run + 2, "02", 2); /* another run id, same length */
    assert_int_equal(reactor_run_scan(run, n, &r), 0);
    b = reactor_hold(&t, &w, &r, 0, 7, REACTOR_RUN_CHANGED, 1, &added);
    assert_non_null(b);
    assert_true(added);
    n = pack_run(run, "shop", REACTOR_RUNNABLE, 1, 0, 0, 0, "");
    assert_int_equal(reactor_run_scan(run, n, &r), 0);
    c = reactor_hold(&t, &w, &r, 0, 8, REACTOR_RUN_CHANGED, 1, &added);
    assert_ptr_equal(c, a);
    assert_false(added);
    /* Three places held: the window (cap 3) is full. */
    assert_true(sink_window_full(&w, 0, SIZE_MAX));
    assert_int_equal(sink_window_advance(&w), 4);
    /* Y settles first: 5 still holds the frontier below it. */
    reactor_settle(&t, &w, b);
    reactor_dispatch_free(b);
    assert_int_equal(sink_window_advance(&w), 4);
    /* Places leave from the head only: the queue stays full behind X. */
    assert_true(sink_window_full(&w, 0, SIZE_MAX));
    /* X settles both of its events: everything up to 8 may be acked. */
    reactor_settle(&t, &w, a);
    reactor_dispatch_free(a);
    assert_int_equal(sink_window_advance(&w), 8);
    assert_false(sink_window_full(&w, 0, SIZE_MAX));
    assert_int_equal(t.n, 0);
    sink_window_pass(&w, 9);
    assert_int_equal(sink_window_advance(&w), 9);
    reactor_table_fini(&t);
    sink_window_fini(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_that_cannot_fit_the_open_files_limit),
        cmocka_unit_test(test_config_errors_name_the_app_and_the_field),
        cmocka_unit_test(test_a_run_is_read_with_and_without_the_new_fields),
        cmocka_unit_test(test_malformed_bytes_are_refused_never_read_past),
        cmocka_unit_test(test_claimable_follows_the_contract),
        cmocka_unit_test(test_the_id_and_body_name_the_run),
        cmocka_unit_test(test_one_dispatch_per_id_holding_every_event),
        cmocka_unit_test(test_only_settled_events_are_acknowledged),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
