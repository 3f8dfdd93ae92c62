/*
 * bench/bench.h: what reel-bench's subcommands share.
 *
 * Each subcommand (bench/suite_*.c) measures one thing against one server
 * and fills a report: a table printed on stdout and, with --json, a file
 * other tools read (bench/report.py). Requests are built with protobuf-c
 * and sent through the asynchronous client (bench/aclient.h).
 */
#ifndef REEL_BENCH_BENCH_H
#define REEL_BENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "bench/aclient.h"
#include "bench/stats.h"

#define BENCH_MAX_POINTS 16

typedef enum { TARGET_REEL, TARGET_ETCD } bench_target_t;

typedef struct bench_opts {
    const char *addr;
    bench_target_t target;
    double duration_s;
    int conc[BENCH_MAX_POINTS], n_conc;       /* --concurrency */
    int watchers[BENCH_MAX_POINTS], n_watchers; /* --watchers */
    int value_bytes;
    int connections;
    int threads;
    int rate;          /* watch: writes per second */
    long fanout_cap;   /* watch: deliveries per second at most */
    int pattern_keys;  /* watch: keys under the pattern watcher */
    int batched;       /* watch: KV.WatchValueBatches streams */
    int shared;        /* watch: watchers per stream (0: one each) */
    int runs;          /* append: runs written to */
    long events;       /* tail */
    long keys, entries; /* restart */
    int pid;           /* the server's pid: memory's RSS, writes' CPU */
    int idle_watchers, subscribers; /* memory */
    int per_stream;    /* memory: watches per KV.WatchValues stream */
    long writes;       /* memory */
    const char *reeld, *data_dir; /* restart */
    const char *json;
    int progress;      /* stderr is a terminal */
    int strict;        /* smoke: every watch event must arrive */
    int workers;       /* dispatch: ClaimNextRun workers */
    long claim_runs;   /* dispatch: runs made claimable together */
    long timers;       /* timers: delayed signals scheduled */
    int sizes[BENCH_MAX_POINTS], n_sizes; /* ws: artifact sizes, MiB */
    int slow_ms;       /* ws: the slow reader's pause per chunk */
} bench_opts_t;

/* A report: rows of name/value pairs, printed as a table and as JSON. */
typedef struct report {
    const char *bench;
    const bench_opts_t *o;
    cJSON *root, *params, *rows;
} report_t;

void report_init(report_t *r, const char *bench, const bench_opts_t *o);
cJSON *report_row(report_t *r);
/* Prints the table (columns: the first row's keys) and writes --json. */
int report_finish(report_t *r);

/* A value of exactly n bytes of JSON: {"t":<stamp>,"p":"xxx..."}. */
size_t bench_value(char *buf, size_t n, int64_t stamp);
/* The stamp back from such a value, or -1. */
int64_t bench_value_stamp(const char *v, size_t len);

/* Progress on stderr (only when it is a terminal). */
void bench_progress(const bench_opts_t *o, const char *fmt, ...);
void bench_progress_done(const bench_opts_t *o);

void bench_sleep_ms(int64_t ms);

/*
 * CPU used around a measurement: the server's (o->pid, from /proc; -1 when
 * there is no pid or it cannot be read), reel-bench's own (every thread,
 * gRPC's included) and the whole machine's busy and total jiffies.
 */
typedef struct bench_cpu {
    double server_s, client_s;
    unsigned long long busy, total;
} bench_cpu_t;

void bench_cpu_sample(const bench_opts_t *o, bench_cpu_t *c);
/* Adds server_cpu_us_per_op (with a pid), client_cpu_us_per_op and
 * machine_busy_pct for the ops done between a and b to row. */
void bench_cpu_report(cJSON *row, const bench_cpu_t *a, const bench_cpu_t *b,
                      uint64_t ops);

/*
 * Closed-loop load: `concurrency` requests in flight until stop_ns (or
 * until `total` requests were made); make() builds request i into buf
 * and returns its length.
 */
typedef size_t (*bench_make_fn)(void *ctx, uint64_t i, uint8_t *buf,
                                size_t cap);
typedef struct bench_load_result {
    uint64_t ok, errors;
    int first_error;
    char first_details[256]; /* the first error's message */
    double seconds;
} bench_load_result_t;

void bench_load(const bench_opts_t *o, ac_t *ac, int method, int concurrency,
                int64_t duration_ns, uint64_t total, bench_make_fn make,
                void *ctx, lat_t *lat, bench_load_result_t *res);

/* One blocking unary call through ac; returns the code; *resp malloc'd. */
int bench_call(ac_t *ac, int method, const void *req, size_t len,
               int64_t timeout_ms, uint8_t **resp, size_t *resp_len);

/* Health Check answered SERVING within timeout_ms (fresh channel). */
int bench_wait_serving(const char *addr, int64_t timeout_ms);

/* Stores keys distinct keys and entries journal entries (64 runs). */
int bench_fill(const bench_opts_t *o, long keys, long entries);

/* The subcommands. Each returns 0, or non-zero when a measurement failed. */
int bench_set(const bench_opts_t *o);
int bench_get(const bench_opts_t *o);
int bench_append(const bench_opts_t *o);
int bench_watch(const bench_opts_t *o);
int bench_signal(const bench_opts_t *o);
/* Issue 21 (bench/suite_recovery.c). */
int bench_recovery(const bench_opts_t *o);
int bench_dispatch(const bench_opts_t *o);
int bench_timers(const bench_opts_t *o);
int bench_tail(const bench_opts_t *o);
int bench_memory(const bench_opts_t *o);
int bench_restart(const bench_opts_t *o);
int bench_ws(const bench_opts_t *o);

#endif
