/*
 * bench/suite_write.c: durable writes. `set` (reel SetValue or etcd Put of
 * distinct keys) and `append` (journal Append spread over runs), each at
 * every --concurrency: ops/s and latency quantiles.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reel/v1/journal.pb-c.h"
#include "reel/v1/kv.pb-c.h"
#include "bench/bench.h"
#include "bench/etcd.pb-c.h"

typedef struct write_ctx {
    const bench_opts_t *o;
    char prefix[64];
    char *value;
    size_t value_len;
    char **runs; /* append: run ids */
    uint64_t *epochs;
    int n_runs;
} write_ctx_t;

static size_t make_set(void *arg, uint64_t i, uint8_t *buf, size_t cap) {
    write_ctx_t *w = arg;
    char key[96];

    (void)cap;
    snprintf(key, sizeof(key), "%s.%llu", w->prefix, (unsigned long long)i);
    if (w->o->target == TARGET_ETCD) {
        Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;

        r.key.data = (uint8_t *)key;
        r.key.len = strlen(key);
        r.value.data = (uint8_t *)w->value;
        r.value.len = w->value_len;
        return etcdserverpb__put_request__pack(&r, buf);
    } else {
        Reel__V1__SetValueRequest r = REEL__V1__SET_VALUE_REQUEST__INIT;

        r.namespace_ = "bench";
        r.key = key;
        r.value = w->value;
        return reel__v1__set_value_request__pack(&r, buf);
    }
}

static size_t make_get(void *arg, uint64_t i, uint8_t *buf, size_t cap) {
    write_ctx_t *w = arg;
    Reel__V1__GetValueRequest r = REEL__V1__GET_VALUE_REQUEST__INIT;
    char key[96];

    (void)cap;
    snprintf(key, sizeof(key), "%s.%llu", w->prefix, (unsigned long long)i);
    r.namespace_ = "bench";
    r.key = key;
    return reel__v1__get_value_request__pack(&r, buf);
}

static size_t make_append(void *arg, uint64_t i, uint8_t *buf, size_t cap) {
    write_ctx_t *w = arg;
    Reel__V1__AppendRequest r = REEL__V1__APPEND_REQUEST__INIT;
    int k = (int)(i % (uint64_t)w->n_runs);

    (void)cap;
    r.run_id = w->runs[k];
    r.lease_epoch = w->epochs[k];
    r.kind = "step";
    r.payload = w->value;
    return reel__v1__append_request__pack(&r, buf);
}

static int ctx_init(write_ctx_t *w, const bench_opts_t *o, const char *tag) {
    memset(w, 0, sizeof(*w));
    w->o = o;
    /* Keys and runs unique to this process: reruns never overwrite. */
    snprintf(w->prefix, sizeof(w->prefix), "%s.%ld.%lld", tag, (long)getpid(),
             (long long)(ac_now_ns() / 1000000));
    w->value = malloc((size_t)o->value_bytes + 64);
    if (w->value == NULL)
        return -1;
    w->value_len = bench_value(w->value, (size_t)o->value_bytes, 0);
    return 0;
}

static void ctx_fini(write_ctx_t *w) {
    for (int i = 0; i < w->n_runs; i++)
        free(w->runs[i]);
    free(w->runs);
    free(w->epochs);
    free(w->value);
}

/* Begins n runs leased to reel-bench for a day. */
static int begin_runs(write_ctx_t *w, ac_t *ac, int n) {
    int m = ac_method(ac, "/reel.v1.Journal/BeginRun");

    w->runs = calloc((size_t)n, sizeof(*w->runs));
    w->epochs = calloc((size_t)n, sizeof(*w->epochs));
    if (w->runs == NULL || w->epochs == NULL)
        return -1;
    for (int i = 0; i < n; i++) {
        Reel__V1__BeginRunRequest r = REEL__V1__BEGIN_RUN_REQUEST__INIT;
        Reel__V1__Run *run;
        char session[32];
        uint8_t buf[512], *resp = NULL;
        size_t len, rlen = 0;
        int code;

        snprintf(session, sizeof(session), "s%d", i);
        r.app = "reel-bench";
        r.user = w->prefix;
        r.session = session;
        r.invocation_id = "1";
        r.lease_owner = "reel-bench";
        r.lease_ttl_ms = 24LL * 3600 * 1000;
        len = reel__v1__begin_run_request__pack(&r, buf);
        code = bench_call(ac, m, buf, len, 10000, &resp, &rlen);
        run = code == 0 ? reel__v1__run__unpack(NULL, rlen, resp) : NULL;
        free(resp);
        if (run == NULL) {
            fprintf(stderr, "reel-bench: BeginRun failed (code %d)\n", code);
            return -1;
        }
        w->runs[i] = strdup(run->run_id);
        w->epochs[i] = run->lease_epoch;
        w->n_runs++;
        reel__v1__run__free_unpacked(run, NULL);
    }
    return 0;
}

static int run_points(const bench_opts_t *o, const char *bench, ac_t *ac,
                      int method, bench_make_fn make, write_ctx_t *w) {
    report_t rep;
    lat_t lat;
    int failed = 0;

    report_init(&rep, bench, o);
    if (w->n_runs > 0)
        cJSON_AddNumberToObject(rep.params, "runs", w->n_runs);
    lat_init(&lat);
    /* Warm up (connections, RocksDB, allocator) outside the measurement. */
    {
        bench_load_result_t res;
        int64_t warm = (int64_t)(o->duration_s * 1e9 / 5);

        bench_load(o, ac, method, 16, warm > 1000000000 ? 1000000000 : warm,
                   0, make, w, NULL, &res);
    }
    for (int k = 0; k < o->n_conc; k++) {
        bench_load_result_t res;
        bench_cpu_t c0, c1;
        cJSON *row;

        lat_reset(&lat);
        bench_cpu_sample(o, &c0);
        bench_load(o, ac, method, o->conc[k], (int64_t)(o->duration_s * 1e9),
                   0, make, w, &lat, &res);
        bench_cpu_sample(o, &c1);
        row = report_row(&rep);
        cJSON_AddNumberToObject(row, "concurrency", o->conc[k]);
        cJSON_AddNumberToObject(row, "ops", (double)res.ok);
        cJSON_AddNumberToObject(row, "errors", (double)res.errors);
        cJSON_AddNumberToObject(row, "seconds", res.seconds);
        cJSON_AddNumberToObject(row, "ops_per_s", (double)res.ok / res.seconds);
        cJSON_AddNumberToObject(row, "p50_us", lat_quantile_us(&lat, 0.50));
        cJSON_AddNumberToObject(row, "p99_us", lat_quantile_us(&lat, 0.99));
        cJSON_AddNumberToObject(row, "p999_us", lat_quantile_us(&lat, 0.999));
        bench_cpu_report(row, &c0, &c1, res.ok);
        if (res.errors > 0) {
            fprintf(stderr,
                    "reel-bench: %s: %llu errors at concurrency %d (first: "
                    "%s: %s)\n",
                    bench, (unsigned long long)res.errors, o->conc[k],
                    reel_grpc_code_name(res.first_error),
                    res.first_details);
            failed = 1;
        }
        if (res.ok == 0)
            failed = 1;
    }
    lat_fini(&lat);
    return report_finish(&rep) || failed;
}

int bench_set(const bench_opts_t *o) {
    ac_t *ac = ac_create(o->addr, o->connections, o->threads);
    write_ctx_t w;
    int rc = 1, m;

    if (ac == NULL || ctx_init(&w, o, "set") != 0)
        return 1;
    m = ac_method(ac, o->target == TARGET_ETCD ? "/etcdserverpb.KV/Put"
                                               : "/reel.v1.KV/SetValue");
    rc = run_points(o, "set", ac, m, make_set, &w);
    ctx_fini(&w);
    ac_destroy(ac);
    return rc;
}

/* Reads of keys that do not exist: the cost of a call without a write. */
int bench_get(const bench_opts_t *o) {
    ac_t *ac;
    write_ctx_t w;
    int rc;

    if (o->target != TARGET_REEL) {
        fprintf(stderr, "reel-bench: get: reel only\n");
        return 2;
    }
    ac = ac_create(o->addr, o->connections, o->threads);
    if (ac == NULL || ctx_init(&w, o, "get") != 0)
        return 1;
    rc = run_points(o, "get", ac, ac_method(ac, "/reel.v1.KV/GetValue"),
                    make_get, &w);
    ctx_fini(&w);
    ac_destroy(ac);
    return rc;
}

int bench_append(const bench_opts_t *o) {
    ac_t *ac;
    write_ctx_t w;
    int rc = 1;

    if (o->target != TARGET_REEL) {
        fprintf(stderr, "reel-bench: append: reel only\n");
        return 2;
    }
    ac = ac_create(o->addr, o->connections, o->threads);
    if (ac == NULL || ctx_init(&w, o, "append") != 0)
        return 1;
    if (begin_runs(&w, ac, o->runs) == 0)
        rc = run_points(o, "append", ac, ac_method(ac, "/reel.v1.Journal/Append"),
                        make_append, &w);
    ctx_fini(&w);
    ac_destroy(ac);
    return rc;
}

/* ---- Bulk loading (tail, restart) ---------------------------------------- */

int bench_fill(const bench_opts_t *o, long keys, long entries) {
    ac_t *ac = ac_create(o->addr, o->connections, o->threads);
    write_ctx_t w;
    bench_load_result_t res;
    int rc = 0;

    if (ac == NULL || ctx_init(&w, o, "fill") != 0)
        return 1;
    if (keys > 0) {
        bench_load(o, ac, ac_method(ac, "/reel.v1.KV/SetValue"), 256, 0,
                   (uint64_t)keys, make_set, &w, NULL, &res);
        if (res.errors > 0 || res.ok != (uint64_t)keys) {
            fprintf(stderr, "reel-bench: loading keys: %llu errors (first: "
                    "%s: %s)\n",
                    (unsigned long long)res.errors,
                    reel_grpc_code_name(res.first_error), res.first_details);
            rc = 1;
        }
    }
    if (rc == 0 && entries > 0) {
        if (begin_runs(&w, ac, 64) != 0) {
            rc = 1;
        } else {
            bench_load(o, ac, ac_method(ac, "/reel.v1.Journal/Append"), 256, 0,
                       (uint64_t)entries, make_append, &w, NULL, &res);
            if (res.errors > 0 || res.ok != (uint64_t)entries) {
                fprintf(stderr,
                        "reel-bench: loading entries: %llu errors (first: "
                        "%s: %s)\n",
                        (unsigned long long)res.errors,
                        reel_grpc_code_name(res.first_error),
                        res.first_details);
                rc = 1;
            }
        }
    }
    ctx_fini(&w);
    ac_destroy(ac);
    return rc;
}
