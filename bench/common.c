/*
 * bench/common.c: reports, values, closed-loop load and blocking calls.
 */
#include "bench/bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "base/version.h"

/* ---- Reports ------------------------------------------------------------- */

void report_init(report_t *r, const char *bench, const bench_opts_t *o) {
    r->bench = bench;
    r->o = o;
    r->root = cJSON_CreateObject();
    cJSON_AddStringToObject(r->root, "tool", "reel-bench");
    cJSON_AddStringToObject(r->root, "version", REEL_VERSION);
    cJSON_AddStringToObject(r->root, "bench", bench);
    cJSON_AddStringToObject(r->root, "target",
                            o->target == TARGET_ETCD ? "etcd" : "reel");
    cJSON_AddStringToObject(r->root, "addr", o->addr);
    r->params = cJSON_AddObjectToObject(r->root, "params");
    cJSON_AddNumberToObject(r->params, "value_bytes", o->value_bytes);
    cJSON_AddNumberToObject(r->params, "connections", o->connections);
    cJSON_AddNumberToObject(r->params, "client_threads", o->threads);
    cJSON_AddNumberToObject(r->params, "duration_s", o->duration_s);
    r->rows = cJSON_AddArrayToObject(r->root, "rows");
}

cJSON *report_row(report_t *r) {
    cJSON *row = cJSON_CreateObject();

    cJSON_AddItemToArray(r->rows, row);
    return row;
}

/* A column is as wide as its name, and at least 14. */
static int col_width(const cJSON *col) {
    size_t n = strlen(col->string);

    return n > 14 ? (int)n : 14;
}

static void print_cell(const cJSON *v) {
    int w = col_width(v);

    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;

        if (d == (double)(int64_t)d && d < 1e15 && d > -1e15)
            printf(" %*lld", w, (long long)d);
        else
            printf(" %*.1f", w, d);
    } else if (cJSON_IsString(v)) {
        printf(" %*s", w, v->valuestring);
    } else {
        printf(" %*s", w, "-");
    }
}

int report_finish(report_t *r) {
    const cJSON *first = NULL, *row, *col;
    int rc = 0;

    printf("%s (%s, %s)\n", r->bench,
           r->o->target == TARGET_ETCD ? "etcd" : "reel", r->o->addr);
    /* A header before the first row and before any row whose columns
     * differ from the row above. */
    cJSON_ArrayForEach(row, r->rows) {
        int same = first != NULL && first != row &&
                   cJSON_GetArraySize(first) == cJSON_GetArraySize(row);

        cJSON_ArrayForEach(col, row) {
            if (same && cJSON_GetObjectItemCaseSensitive(first, col->string) ==
                            NULL)
                same = 0;
        }
        if (!same) {
            cJSON_ArrayForEach(col, row) {
                if (!cJSON_IsArray(col))
                    printf(" %*s", col_width(col), col->string);
            }
            printf("\n");
        }
        cJSON_ArrayForEach(col, row) {
            if (!cJSON_IsArray(col))
                print_cell(col);
        }
        printf("\n");
        first = row;
    }
    fflush(stdout);
    if (r->o->json != NULL) {
        char *text = cJSON_Print(r->root);
        FILE *f = fopen(r->o->json, "w");

        if (text == NULL || f == NULL || fputs(text, f) < 0 ||
            fputc('\n', f) == EOF) {
            fprintf(stderr, "reel-bench: cannot write %s: %s\n", r->o->json,
                    strerror(errno));
            rc = 1;
        }
        if (f != NULL && fclose(f) != 0)
            rc = 1;
        free(text);
    }
    cJSON_Delete(r->root);
    return rc;
}

/* ---- Values -------------------------------------------------------------- */

size_t bench_value(char *buf, size_t n, int64_t stamp) {
    int k = snprintf(buf, n + 1, "{\"t\":%lld,\"p\":\"", (long long)stamp);
    size_t len = (size_t)k;

    /* At least the stamp and an empty pad: a value never comes out short
     * of valid JSON, only longer than asked when n is tiny. */
    while (len + 2 < n)
        buf[len++] = 'x';
    buf[len++] = '"';
    buf[len++] = '}';
    buf[len] = '\0';
    return len;
}

int64_t bench_value_stamp(const char *v, size_t len) {
    int64_t t = 0;
    size_t i = 5;

    if (len < 6 || memcmp(v, "{\"t\":", 5) != 0)
        return -1;
    for (; i < len && v[i] >= '0' && v[i] <= '9'; i++)
        t = t * 10 + (v[i] - '0');
    return i > 5 ? t : -1;
}

/* ---- Progress ------------------------------------------------------------ */

void bench_progress(const bench_opts_t *o, const char *fmt, ...) {
    va_list ap;

    if (!o->progress)
        return;
    fputs("\r\033[K", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

void bench_progress_done(const bench_opts_t *o) {
    if (o->progress)
        fputs("\r\033[K", stderr);
}

void bench_sleep_ms(int64_t ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- CPU ----------------------------------------------------------------- */

/* utime + stime of pid in seconds, or -1. comm may hold spaces and ')'. */
static double proc_cpu_s(int pid) {
    char path[64], buf[1024], *p;
    unsigned long long ut, st;
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* after "pid (comm) ": state ppid pgrp session tty tpgid flags minflt
     * cminflt majflt cmajflt utime stime */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

void bench_cpu_sample(const bench_opts_t *o, bench_cpu_t *c) {
    unsigned long long v[8] = {0};
    struct rusage ru;
    FILE *f;

    memset(c, 0, sizeof(*c));
    c->server_s = o->pid > 0 ? proc_cpu_s(o->pid) : -1;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        c->client_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                      (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    /* cpu user nice system idle iowait irq softirq steal */
    if ((f = fopen("/proc/stat", "r")) != NULL) {
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
                   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
            for (int i = 0; i < 8; i++)
                c->total += v[i];
            c->busy = c->total - v[3] - v[4];
        }
        fclose(f);
    }
}

void bench_cpu_report(cJSON *row, const bench_cpu_t *a, const bench_cpu_t *b,
                      uint64_t ops) {
    if (ops == 0)
        return;
    if (a->server_s >= 0 && b->server_s >= a->server_s)
        cJSON_AddNumberToObject(row, "server_cpu_us_per_op",
                                (b->server_s - a->server_s) * 1e6 / (double)ops);
    cJSON_AddNumberToObject(row, "client_cpu_us_per_op",
                            (b->client_s - a->client_s) * 1e6 / (double)ops);
    if (b->total > a->total)
        cJSON_AddNumberToObject(row, "machine_busy_pct",
                                100.0 * (double)(b->busy - a->busy) /
                                    (double)(b->total - a->total));
}

/* ---- Closed-loop load ---------------------------------------------------- */

typedef struct load {
    const bench_opts_t *o;
    ac_t *ac;
    int method;
    int64_t stop_ns;
    uint64_t total;
    bench_make_fn make;
    void *ctx;
    lat_t *lat;
    atomic_uint_fast64_t next, ok, errors;
    atomic_int first_error;
    char first_details[256]; /* written once, by whoever set first_error */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active;
    size_t slot_cap; /* a request's buffer: its value and the rest */
} load_t;

typedef struct slot {
    load_t *l;
    int64_t t0;
    uint8_t buf[];
} slot_t;

/* A request's buffer: the value (--value-bytes, up to 1 MiB) and room for
 * the rest of the request. */
#define SLOT_CAP (64u << 10)
#define SLOT_ROOM 4096u

static int issue(slot_t *s);

static void slot_done(void *arg, int code, const uint8_t *resp, size_t len) {
    slot_t *s = arg;
    load_t *l = s->l;

    if (code == 0) {
        atomic_fetch_add(&l->ok, 1);
        if (l->lat != NULL)
            lat_add(l->lat, ac_now_ns() - s->t0);
    } else {
        int none = 0;

        atomic_fetch_add(&l->errors, 1);
        if (atomic_compare_exchange_strong(&l->first_error, &none, code))
            snprintf(l->first_details, sizeof(l->first_details), "%.*s",
                     (int)(len < 255 ? len : 255), (const char *)resp);
    }
    if (issue(s) != 0) {
        pthread_mutex_lock(&l->mu);
        if (--l->active == 0)
            pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        free(s);
    }
}

/* Starts the slot's next request; non-zero when the load is over. */
static int issue(slot_t *s) {
    load_t *l = s->l;
    uint64_t i;
    size_t len;

    if (l->stop_ns > 0 && ac_now_ns() >= l->stop_ns)
        return 1;
    i = atomic_fetch_add(&l->next, 1);
    if (l->total > 0 && i >= l->total)
        return 1;
    len = l->make(l->ctx, i, s->buf, l->slot_cap);
    s->t0 = ac_now_ns();
    return ac_unary(l->ac, l->method, s->buf, len, 60000, slot_done, s);
}

void bench_load(const bench_opts_t *o, ac_t *ac, int method, int concurrency,
                int64_t duration_ns, uint64_t total, bench_make_fn make,
                void *ctx, lat_t *lat, bench_load_result_t *res) {
    load_t l;
    int64_t t0;

    memset(&l, 0, sizeof(l));
    l.o = o;
    l.ac = ac;
    l.method = method;
    l.total = total;
    l.make = make;
    l.ctx = ctx;
    l.lat = lat;
    l.slot_cap = (size_t)o->value_bytes + SLOT_ROOM > SLOT_CAP
                     ? (size_t)o->value_bytes + SLOT_ROOM
                     : SLOT_CAP;
    atomic_init(&l.next, 0);
    atomic_init(&l.ok, 0);
    atomic_init(&l.errors, 0);
    atomic_init(&l.first_error, 0);
    pthread_mutex_init(&l.mu, NULL);
    pthread_cond_init(&l.cv, NULL);
    t0 = ac_now_ns();
    l.stop_ns = duration_ns > 0 ? t0 + duration_ns : 0;

    pthread_mutex_lock(&l.mu);
    for (int i = 0; i < concurrency; i++) {
        slot_t *s = malloc(sizeof(*s) + l.slot_cap);

        if (s == NULL)
            break;
        s->l = &l;
        l.active++;
        pthread_mutex_unlock(&l.mu);
        if (issue(s) != 0) {
            pthread_mutex_lock(&l.mu);
            l.active--;
            free(s);
            continue;
        }
        pthread_mutex_lock(&l.mu);
    }
    while (l.active > 0) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&l.cv, &l.mu, &ts);
        if (l.active > 0) {
            double el = (double)(ac_now_ns() - t0) / 1e9;

            bench_progress(o, "  c=%d: %llu ops in %.0f s (%.0f/s)",
                           concurrency,
                           (unsigned long long)atomic_load(&l.ok), el,
                           (double)atomic_load(&l.ok) / (el > 0 ? el : 1));
        }
    }
    pthread_mutex_unlock(&l.mu);
    bench_progress_done(o);
    res->seconds = (double)(ac_now_ns() - t0) / 1e9;
    res->ok = atomic_load(&l.ok);
    res->errors = atomic_load(&l.errors);
    res->first_error = atomic_load(&l.first_error);
    memcpy(res->first_details, l.first_details, sizeof(res->first_details));
    pthread_mutex_destroy(&l.mu);
    pthread_cond_destroy(&l.cv);
}

/* ---- Blocking calls ------------------------------------------------------ */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, code;
    uint8_t *resp;
    size_t len;
} waiter_t;

static void waiter_done(void *arg, int code, const uint8_t *resp, size_t len) {
    waiter_t *w = arg;

    pthread_mutex_lock(&w->mu);
    w->code = code;
    if (len > 0 && (w->resp = malloc(len)) != NULL) {
        memcpy(w->resp, resp, len);
        w->len = len;
    }
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int bench_call(ac_t *ac, int method, const void *req, size_t len,
               int64_t timeout_ms, uint8_t **resp, size_t *resp_len) {
    waiter_t w;

    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    if (ac_unary(ac, method, req, len, timeout_ms, waiter_done, &w) != 0)
        return 13; /* INTERNAL */
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    if (resp != NULL) {
        *resp = w.resp;
        *resp_len = w.len;
    } else {
        free(w.resp);
    }
    return w.code;
}

int bench_wait_serving(const char *addr, int64_t timeout_ms) {
    int64_t until = ac_now_ns() + timeout_ms * 1000000;
    Grpc__Health__V1__HealthCheckRequest req =
        GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = grpc__health__v1__health_check_request__pack(&req, buf);

    while (ac_now_ns() < until) {
        /* A fresh client per probe: a reused channel would wait out its own
         * reconnect backoff, measuring the client instead of the server. */
        ac_t *ac = ac_create(addr, 1, 1);
        int m = ac_method(ac, "/grpc.health.v1.Health/Check"), serving = 0;
        uint8_t *resp = NULL;
        size_t rlen = 0;

        if (bench_call(ac, m, buf, len, 200, &resp, &rlen) == 0) {
            Grpc__Health__V1__HealthCheckResponse *r =
                grpc__health__v1__health_check_response__unpack(NULL, rlen,
                                                               resp);
            serving =
                r != NULL &&
                r->status ==
                    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
            grpc__health__v1__health_check_response__free_unpacked(r, NULL);
        }
        free(resp);
        ac_destroy(ac);
        if (serving)
            return 1;
        bench_sleep_ms(2);
    }
    return 0;
}
