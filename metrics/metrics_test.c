/*
 * metrics/metrics_test.c: the exposition format, histogram buckets,
 * counting from many threads at once, registration checks, and the HTTP
 * endpoint's three paths.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics/http.h"
#include "metrics/metrics.h"

static metrics_registry_t *reg_new(void) {
    metrics_registry_t *r = NULL;

    assert_int_equal(metrics_registry_create(&r, NULL), REEL_OK);
    return r;
}

static char *render(metrics_registry_t *r) {
    reel_status_t st = REEL_STATUS_INIT;
    char *out = NULL;
    size_t len = 0;

    if (metrics_render(r, &out, &len, &st) != REEL_OK)
        fail_msg("render: %s", reel_status_message(&st));
    assert_int_equal(strlen(out), len);
    return out;
}

static double forty_two(void *arg) {
    (void)arg;
    return 42.5;
}

static void test_render_writes_help_type_and_series_in_order(void **state) {
    metrics_registry_t *r = reg_new();
    metrics_counter_t *c1, *c2;
    metrics_gauge_t *g;
    const char *a[] = {"sink", "a", NULL};
    const char *b[] = {"sink", "b", NULL};
    char *out;

    (void)state;
    assert_int_equal(metrics_reg_counter(r, NULL, "x_total", "Things.", a, &c1,
                                         NULL),
                     REEL_OK);
    assert_int_equal(metrics_reg_counter(r, NULL, "x_total", "Things.", b, &c2,
                                         NULL),
                     REEL_OK);
    assert_int_equal(metrics_reg_gauge(r, NULL, "depth", "Depth.\nNow \\.",
                                       NULL, &g, NULL),
                     REEL_OK);
    assert_int_equal(metrics_reg_fn(r, NULL, METRICS_GAUGE, "fn_value", "F.",
                                    NULL, forty_two, NULL, NULL),
                     REEL_OK);
    metrics_counter_add(c1, 3);
    metrics_counter_inc(c2);
    metrics_gauge_set(g, -2.25);
    out = render(r);
    assert_string_equal(out, "# HELP x_total Things.\n"
                             "# TYPE x_total counter\n"
                             "x_total{sink=\"a\"} 3\n"
                             "x_total{sink=\"b\"} 1\n"
                             "# HELP depth Depth.\\nNow \\\\.\n"
                             "# TYPE depth gauge\n"
                             "depth -2.25\n"
                             "# HELP fn_value F.\n"
                             "# TYPE fn_value gauge\n"
                             "fn_value 42.5\n");
    free(out);
    metrics_registry_destroy(r);
}

static void test_label_values_are_escaped(void **state) {
    metrics_registry_t *r = reg_new();
    metrics_gauge_t *g;
    const char *l[] = {"path", "a\"b\\c\nd", NULL};
    char *out;

    (void)state;
    assert_int_equal(metrics_reg_gauge(r, NULL, "g", "G.", l, &g, NULL),
                     REEL_OK);
    out = render(r);
    assert_non_null(strstr(out, "g{path=\"a\\\"b\\\\c\\nd\"} 0\n"));
    free(out);
    metrics_registry_destroy(r);
}

static void test_histogram_counts_each_value_in_its_bucket(void **state) {
    metrics_registry_t *r = reg_new();
    metrics_histogram_t *h;
    const double bounds[] = {0.1, 1, 10};
    const char *l[] = {"method", "Set", NULL};
    char *out;

    (void)state;
    assert_int_equal(metrics_reg_histogram(r, NULL, "lat_seconds", "L.", l,
                                           bounds, 3, &h, NULL),
                     REEL_OK);
    /* A value equal to a bound is in that bound's bucket (le: <=). */
    metrics_histogram_observe(h, 0.1);
    metrics_histogram_observe(h, 0.05);
    metrics_histogram_observe(h, 1);
    metrics_histogram_observe(h, 5);
    metrics_histogram_observe(h, 11);
    metrics_histogram_observe(h, 0.0 / 0.0); /* NaN: not counted */
    assert_int_equal(metrics_histogram_count(h), 5);
    assert_true(metrics_histogram_sum(h) == 0.1 + 0.05 + 1 + 5 + 11);
    out = render(r);
    assert_non_null(strstr(out,
                           "# TYPE lat_seconds histogram\n"
                           "lat_seconds_bucket{method=\"Set\",le=\"0.1\"} 2\n"
                           "lat_seconds_bucket{method=\"Set\",le=\"1\"} 3\n"
                           "lat_seconds_bucket{method=\"Set\",le=\"10\"} 4\n"
                           "lat_seconds_bucket{method=\"Set\",le=\"+Inf\"} 5\n"
                           "lat_seconds_sum{method=\"Set\"} 17.15\n"
                           "lat_seconds_count{method=\"Set\"} 5\n"));
    free(out);
    metrics_registry_destroy(r);
}

static void test_bounds_print_in_shortest_form(void **state) {
    metrics_registry_t *r = reg_new();
    metrics_histogram_t *h;
    char *out;

    (void)state;
    assert_int_equal(metrics_reg_histogram(r, NULL, "d_seconds", "D.", NULL,
                                           metrics_buckets_seconds,
                                           metrics_buckets_seconds_n, &h,
                                           NULL),
                     REEL_OK);
    out = render(r);
    assert_non_null(strstr(out, "d_seconds_bucket{le=\"5e-05\"} 0\n"));
    assert_non_null(strstr(out, "d_seconds_bucket{le=\"0.0025\"} 0\n"));
    assert_non_null(strstr(out, "d_seconds_bucket{le=\"10\"} 0\n"));
    assert_non_null(strstr(out, "d_seconds_count 0\n"));
    free(out);
    metrics_registry_destroy(r);
}

#define THREADS 8
#define PER_THREAD 200000

typedef struct hammer {
    metrics_counter_t *c;
    metrics_histogram_t *h;
    metrics_gauge_t *g;
} hammer_t;

static void *hammer_main(void *arg) {
    hammer_t *hm = arg;

    for (int i = 0; i < PER_THREAD; i++) {
        metrics_counter_inc(hm->c);
        metrics_histogram_observe(hm->h, (double)(i % 4));
        metrics_gauge_add(hm->g, 1);
    }
    return NULL;
}

static void *scrape_main(void *arg) {
    metrics_registry_t *r = arg;

    for (int i = 0; i < 50; i++)
        free(render(r));
    return NULL;
}

static void test_concurrent_updates_lose_nothing(void **state) {
    metrics_registry_t *r = reg_new();
    const double bounds[] = {0, 1, 2};
    hammer_t hm;
    pthread_t th[THREADS + 1];
    char *out, want[128];

    (void)state;
    assert_int_equal(metrics_reg_counter(r, NULL, "n_total", "N.", NULL, &hm.c,
                                         NULL),
                     REEL_OK);
    assert_int_equal(metrics_reg_histogram(r, NULL, "v", "V.", NULL, bounds, 3,
                                           &hm.h, NULL),
                     REEL_OK);
    assert_int_equal(metrics_reg_gauge(r, NULL, "g", "G.", NULL, &hm.g, NULL),
                     REEL_OK);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &hm), 0);
    /* A scraper renders while they count: it must neither block them nor
     * see a torn family. */
    assert_int_equal(pthread_create(&th[THREADS], NULL, scrape_main, r), 0);
    for (int i = 0; i <= THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(metrics_counter_value(hm.c),
                     (uint64_t)THREADS * PER_THREAD);
    assert_int_equal(metrics_histogram_count(hm.h),
                     (uint64_t)THREADS * PER_THREAD);
    /* Each thread observes 0,1,2,3 in turn: sum = THREADS * PER_THREAD / 4
     * * 6, exact in a double. */
    assert_true(metrics_histogram_sum(hm.h) ==
                (double)THREADS * PER_THREAD / 4 * 6);
    assert_true(metrics_gauge_value(hm.g) == (double)THREADS * PER_THREAD);
    out = render(r);
    snprintf(want, sizeof(want), "v_bucket{le=\"+Inf\"} %d\n",
             THREADS * PER_THREAD);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof(want), "v_bucket{le=\"0\"} %d\n",
             THREADS * PER_THREAD / 4);
    assert_non_null(strstr(out, want));
    free(out);
    metrics_registry_destroy(r);
}

static void expect_invalid(reel_code_t rc, reel_status_t *st,
                           const char *needle) {
    assert_int_equal(rc, REEL_INVALID_ARGUMENT);
    if (strstr(reel_status_message(st), needle) == NULL)
        fail_msg("\"%s\" does not name \"%s\"", reel_status_message(st),
                 needle);
    reel_status_fini(st);
}

static void test_bad_registrations_are_refused_naming_the_rule(void **state) {
    metrics_registry_t *r = reg_new();
    reel_status_t st = REEL_STATUS_INIT;
    metrics_counter_t *c;
    metrics_gauge_t *g;
    metrics_histogram_t *h;
    const char *dunder[] = {"__x", "v", NULL};
    const char *le[] = {"le", "1", NULL};
    const char *same[] = {"a", "1", NULL};
    const double bad_bounds[] = {1, 1};
    char *out;

    (void)state;
    expect_invalid(metrics_reg_counter(r, NULL, "9bad", "", NULL, &c, &st),
                   &st, "[a-zA-Z_:][a-zA-Z0-9_:]*");
    assert_null(c);
    expect_invalid(metrics_reg_counter(r, NULL, "ok", "", dunder, &c, &st),
                   &st, "label name \"__x\"");
    expect_invalid(metrics_reg_histogram(r, NULL, "h", "", le, (double[]){1},
                                         1, &h, &st),
                   &st, "\"le\"");
    expect_invalid(metrics_reg_histogram(r, NULL, "h", "", NULL, bad_bounds, 2,
                                         &h, &st),
                   &st, "bound 1");
    assert_int_equal(metrics_reg_counter(r, NULL, "c", "C.", same, &c, &st),
                     REEL_OK);
    expect_invalid(metrics_reg_counter(r, NULL, "c", "C.", same, &c, &st), &st,
                   "registered twice");
    expect_invalid(metrics_reg_gauge(r, NULL, "c", "C.", NULL, &g, &st), &st,
                   "another type");
    /* Nothing of the refused ones shows. */
    out = render(r);
    assert_string_equal(out,
                        "# HELP c C.\n# TYPE c counter\nc{a=\"1\"} 0\n");
    free(out);
    metrics_registry_destroy(r);
}

static void test_a_null_registry_registers_nothing_and_counts_nowhere(
    void **state) {
    metrics_counter_t *c = (metrics_counter_t *)1;

    (void)state;
    assert_int_equal(metrics_reg_counter(NULL, NULL, "c", "", NULL, &c, NULL),
                     REEL_OK);
    assert_null(c);
    metrics_counter_inc(c);
    metrics_histogram_observe(NULL, 1);
    metrics_gauge_set(NULL, 1);
    assert_int_equal(metrics_counter_value(c), 0);
}

static void collect_two(void *arg, metrics_emit_t *e) {
    (void)arg;
    metrics_emit(e, (const char *[]){"consumer", "a", NULL}, 3);
    metrics_emit(e, (const char *[]){"consumer", "b", NULL}, 0);
}

static void collect_fail(void *arg, metrics_emit_t *e) {
    reel_status_t why = REEL_STATUS_INIT;

    (void)arg;
    reel_status_set(&why, REEL_INTERNAL, "the disk said no");
    metrics_emit_fail(e, &why);
    reel_status_fini(&why);
}

static void test_collectors_emit_series_or_fail_the_scrape(void **state) {
    metrics_registry_t *r = reg_new();
    reel_status_t st = REEL_STATUS_INIT;
    char *out;
    size_t len;
    int owner;

    (void)state;
    assert_int_equal(metrics_reg_collector(r, NULL, METRICS_GAUGE, "lag",
                                           "Lag.", collect_two, NULL, NULL),
                     REEL_OK);
    out = render(r);
    assert_string_equal(out, "# HELP lag Lag.\n# TYPE lag gauge\n"
                             "lag{consumer=\"a\"} 3\nlag{consumer=\"b\"} 0\n");
    free(out);
    assert_int_equal(metrics_reg_collector(r, &owner, METRICS_GAUGE, "broken",
                                           "B.", collect_fail, NULL, NULL),
                     REEL_OK);
    assert_int_equal(metrics_render(r, &out, &len, &st), REEL_INTERNAL);
    assert_null(out);
    assert_string_equal(reel_status_message(&st),
                        "collecting broken: the disk said no");
    reel_status_fini(&st);
    /* Its owner drops it: scrapes work again. */
    metrics_registry_drop(r, &owner);
    out = render(r);
    assert_null(strstr(out, "broken"));
    free(out);
    metrics_registry_destroy(r);
}

static void test_drop_removes_an_owners_series_only(void **state) {
    metrics_registry_t *r = reg_new();
    metrics_counter_t *c;
    int a, b;
    char *out;

    (void)state;
    assert_int_equal(metrics_reg_counter(r, &a, "x", "X.",
                                         (const char *[]){"o", "a", NULL}, &c,
                                         NULL),
                     REEL_OK);
    assert_int_equal(metrics_reg_counter(r, &b, "x", "X.",
                                         (const char *[]){"o", "b", NULL}, &c,
                                         NULL),
                     REEL_OK);
    assert_int_equal(metrics_reg_counter(r, &a, "y", "Y.", NULL, &c, NULL),
                     REEL_OK);
    metrics_registry_drop(r, &a);
    out = render(r);
    assert_string_equal(out, "# HELP x X.\n# TYPE x counter\nx{o=\"b\"} 0\n");
    free(out);
    /* The family can be added to again after a drop. */
    assert_int_equal(metrics_reg_counter(r, &a, "y", "Y.", NULL, &c, NULL),
                     REEL_OK);
    metrics_registry_destroy(r);
}

/* ---- HTTP ------------------------------------------------------------------ */

static int ready_flag;

static int ready(void *arg, char *why, size_t cap) {
    (void)arg;
    if (!ready_flag)
        snprintf(why, cap, "writes refused: disk full");
    return ready_flag;
}

/* GET path on 127.0.0.1:port; the whole answer, malloc'd. */
static char *http_get(int port, const char *path) {
    struct sockaddr_in sa = {0};
    char req[256], *buf = calloc(1, 1 << 16);
    size_t len = 0;
    ssize_t n;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    while ((n = read(fd, buf + len, (1 << 16) - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    return buf;
}

static void test_http_serves_metrics_health_and_readiness(void **state) {
    metrics_registry_t *r = reg_new();
    metrics_http_t *h = NULL;
    metrics_counter_t *c;
    reel_status_t st = REEL_STATUS_INIT;
    char *resp;

    (void)state;
    assert_int_equal(metrics_reg_counter(r, NULL, "hits_total", "Hits.", NULL,
                                         &c, NULL),
                     REEL_OK);
    metrics_counter_add(c, 7);
    if (metrics_http_start("--metrics-listen", "127.0.0.1:0", r, ready, NULL,
                           &h, &st) != REEL_OK)
        fail_msg("start: %s", reel_status_message(&st));
    assert_true(metrics_http_port(h) > 0);

    resp = http_get(metrics_http_port(h), "/metrics");
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    assert_non_null(strstr(resp, "text/plain; version=0.0.4"));
    assert_non_null(strstr(resp, "\r\n\r\n# HELP hits_total Hits.\n"));
    assert_non_null(strstr(resp, "hits_total 7\n"));
    free(resp);

    resp = http_get(metrics_http_port(h), "/healthz");
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    free(resp);

    ready_flag = 0;
    resp = http_get(metrics_http_port(h), "/readyz");
    assert_non_null(strstr(resp, "HTTP/1.1 503"));
    assert_non_null(strstr(resp, "writes refused: disk full"));
    free(resp);
    ready_flag = 1;
    resp = http_get(metrics_http_port(h), "/readyz");
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    free(resp);

    resp = http_get(metrics_http_port(h), "/nope");
    assert_non_null(strstr(resp, "HTTP/1.1 404"));
    free(resp);
    metrics_http_stop(h);
    metrics_registry_destroy(r);
}

static void test_http_refuses_bad_addresses_naming_the_flag(void **state) {
    metrics_registry_t *r = reg_new();
    metrics_http_t *h = NULL, *h2 = NULL;
    reel_status_t st = REEL_STATUS_INIT;
    char addr[64];

    (void)state;
    expect_invalid(metrics_http_start("--metrics-listen", "localhost", r, NULL,
                                      NULL, &h, &st),
                   &st, "--metrics-listen: \"localhost\" is not HOST:PORT");
    expect_invalid(metrics_http_start("--metrics-listen", "127.0.0.1:70000",
                                      r, NULL, NULL, &h, &st),
                   &st, "port 0-65535");
    assert_null(h);
    /* A port in use: UNAVAILABLE with the system's reason. */
    assert_int_equal(metrics_http_start("--metrics-listen", "127.0.0.1:0", r,
                                        NULL, NULL, &h, &st),
                     REEL_OK);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", metrics_http_port(h));
    assert_int_equal(metrics_http_start("--metrics-listen", addr, r, NULL,
                                        NULL, &h2, &st),
                     REEL_UNAVAILABLE);
    assert_non_null(strstr(reel_status_message(&st), "in use"));
    reel_status_fini(&st);
    metrics_http_stop(h);
    metrics_registry_destroy(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_writes_help_type_and_series_in_order),
        cmocka_unit_test(test_label_values_are_escaped),
        cmocka_unit_test(test_histogram_counts_each_value_in_its_bucket),
        cmocka_unit_test(test_bounds_print_in_shortest_form),
        cmocka_unit_test(test_concurrent_updates_lose_nothing),
        cmocka_unit_test(test_bad_registrations_are_refused_naming_the_rule),
        cmocka_unit_test(
            test_a_null_registry_registers_nothing_and_counts_nowhere),
        cmocka_unit_test(test_collectors_emit_series_or_fail_the_scrape),
        cmocka_unit_test(test_drop_removes_an_owners_series_only),
        cmocka_unit_test(test_http_serves_metrics_health_and_readiness),
        cmocka_unit_test(test_http_refuses_bad_addresses_naming_the_flag),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
