/*
 * metrics/metrics.h: counters, gauges and histograms any process and any
 * module registers into, rendered in the Prometheus text exposition format
 * (version 0.0.4).
 *
 * A registry holds metric families in registration order. A family is a
 * name, a help text, a type and its series: each series is one set of
 * label values. Registering the same name again with other label values
 * adds a series to the family (the help and type must match). A module
 * registers what it counts once, when it starts, and keeps the pointer:
 * updating a metric is then one relaxed atomic operation, with no lock and
 * no lookup, so counting never slows the path it counts.
 *
 * Figures that live elsewhere (a queue's depth, a property RocksDB keeps)
 * are read when a scrape renders them: a gauge or counter function returns
 * one value; a collector emits a whole family's series (for label sets that
 * change, such as one series per durable consumer), or fails the scrape
 * with a status that says what could not be read, rather than leave a
 * figure out silently.
 *
 * Labels are given as a list of name, value pairs ended by NULL:
 *     const char *l[] = {"sink", name, NULL};
 * NULL for no labels. Names and values are copied.
 *
 * Lifetime: everything registered is owned by the registry and freed by
 * metrics_registry_destroy(), or by metrics_registry_drop() with the owner
 * it was registered under; an update through a pointer after that is a use
 * after free. Functions and collectors run during metrics_render(), under
 * the registry's lock: what they read must outlive their registration, and
 * they must not call into the registry. Each owner drops its registrations
 * before it frees what they read.
 *
 * Threading: everything here is thread-safe. Updates take no lock; render,
 * registration and drop serialize on the registry's lock. Every update
 * function accepts a NULL metric and does nothing, so a module started
 * without a registry counts nothing and needs no checks.
 */
#ifndef REEL_METRICS_METRICS_H
#define REEL_METRICS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* Limits a registration is checked against. */
#define METRICS_NAME_MAX 128     /* bytes of a metric or label name */
#define METRICS_LABELS_MAX 8     /* label pairs per series */
#define METRICS_VALUE_MAX 256    /* bytes of a label value */
#define METRICS_BUCKETS_MAX 32   /* finite bucket bounds per histogram */

typedef struct metrics_registry metrics_registry_t;
typedef struct metrics_counter metrics_counter_t;
typedef struct metrics_gauge metrics_gauge_t;
typedef struct metrics_histogram metrics_histogram_t;
typedef struct metrics_emit metrics_emit_t;

typedef enum metrics_type {
    METRICS_COUNTER,
    METRICS_GAUGE,
    METRICS_HISTOGRAM,
} metrics_type_t;

/* Bucket bounds for durations in seconds: 50 us to 10 s. */
extern const double metrics_buckets_seconds[];
extern const size_t metrics_buckets_seconds_n;
/* Bucket bounds for counts: 1, 2, 4, ... 4096. */
extern const double metrics_buckets_count[];
extern const size_t metrics_buckets_count_n;

/* OK, or RESOURCE_EXHAUSTED. Destroy with metrics_registry_destroy(). */
reel_code_t metrics_registry_create(metrics_registry_t **out,
                                    reel_status_t *st);
/* Frees the registry and every metric in it. Accepts NULL. */
void metrics_registry_destroy(metrics_registry_t *r);

/*
 * Removes every series registered under owner (a family left without
 * series goes too). Registrations with a NULL owner stay until the
 * registry is destroyed. Accepts a NULL registry.
 */
void metrics_registry_drop(metrics_registry_t *r, const void *owner);

/*
 * Registration. Each adds one series to family `name` (created on first
 * use) and, for the first three, sets *out to it. A NULL registry is
 * accepted: *out is set to NULL and OK returned, so a module can register
 * unconditionally. INVALID_ARGUMENT, naming the field and the rule, for a
 * name outside [a-zA-Z_:][a-zA-Z0-9_:]*, a label name outside
 * [a-zA-Z_][a-zA-Z0-9_]* or starting with "__" (or "le" on a histogram),
 * more than METRICS_LABELS_MAX labels, a value over METRICS_VALUE_MAX
 * bytes, a help or type other than the family's, a label set the family
 * already has, or histogram bounds that are not finite and increasing
 * (1..METRICS_BUCKETS_MAX of them). RESOURCE_EXHAUSTED when out of memory.
 * Nothing is registered on an error.
 */
reel_code_t metrics_reg_counter(metrics_registry_t *r, const void *owner,
                                const char *name, const char *help,
                                const char *const *labels,
                                metrics_counter_t **out, reel_status_t *st);
reel_code_t metrics_reg_gauge(metrics_registry_t *r, const void *owner,
                              const char *name, const char *help,
                              const char *const *labels, metrics_gauge_t **out,
                              reel_status_t *st);
reel_code_t metrics_reg_histogram(metrics_registry_t *r, const void *owner,
                                  const char *name, const char *help,
                                  const char *const *labels,
                                  const double *bounds, size_t n_bounds,
                                  metrics_histogram_t **out,
                                  reel_status_t *st);

/* A value read at render time: fn(arg). type is COUNTER or GAUGE. */
typedef double (*metrics_value_fn)(void *arg);
reel_code_t metrics_reg_fn(metrics_registry_t *r, const void *owner,
                           metrics_type_t type, const char *name,
                           const char *help, const char *const *labels,
                           metrics_value_fn fn, void *arg, reel_status_t *st);

/*
 * A whole family produced at render time: fn calls metrics_emit() once per
 * series, or metrics_emit_fail() when it cannot read what it reports.
 * type is COUNTER or GAUGE. A collected family has no other series.
 */
typedef void (*metrics_collect_fn)(void *arg, metrics_emit_t *e);
reel_code_t metrics_reg_collector(metrics_registry_t *r, const void *owner,
                                  metrics_type_t type, const char *name,
                                  const char *help, metrics_collect_fn fn,
                                  void *arg, reel_status_t *st);

/* One series of a collected family; labels as at registration (values are
 * escaped here, and a label name outside the rules fails the scrape). */
void metrics_emit(metrics_emit_t *e, const char *const *labels, double value);
/* The collector cannot report: the whole render fails with why (copied),
 * prefixed with the family's name. */
void metrics_emit_fail(metrics_emit_t *e, const reel_status_t *why);

/* ---- Updates: no lock, any thread, NULL accepted ------------------------ */

void metrics_counter_inc(metrics_counter_t *c);
void metrics_counter_add(metrics_counter_t *c, uint64_t n);
uint64_t metrics_counter_value(const metrics_counter_t *c); /* 0 for NULL */

void metrics_gauge_set(metrics_gauge_t *g, double v);
void metrics_gauge_add(metrics_gauge_t *g, double delta);
double metrics_gauge_value(const metrics_gauge_t *g); /* 0 for NULL */

/* Counts v in the first bucket whose bound is >= v (+Inf past the last)
 * and adds it to the sum. A NaN is not counted. */
void metrics_histogram_observe(metrics_histogram_t *h, double v);
/* Observations so far, and their sum (0 for NULL). */
uint64_t metrics_histogram_count(const metrics_histogram_t *h);
double metrics_histogram_sum(const metrics_histogram_t *h);

/* ---- Rendering ----------------------------------------------------------- */

/* The content type of what metrics_render() writes. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/*
 * Renders every family in the text exposition format into *out (malloc'd,
 * NUL-terminated, free() it) and *len. A histogram's _count is the sum of
 * the buckets it renders, so it always equals the +Inf bucket. On an error
 * (a collector failed: its status, naming the family; out of memory) *out
 * is NULL.
 */
reel_code_t metrics_render(metrics_registry_t *r, char **out, size_t *len,
                           reel_status_t *st);

#endif
