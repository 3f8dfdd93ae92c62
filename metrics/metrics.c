/*
 * metrics/metrics.c: the registry, the metrics and the text exposition.
 *
 * Design
 *   A registry is a list of families under one mutex; a family a list of
 *   series. The mutex guards the lists only: registration, drop and render
 *   take it, updates never do. A series' label set is rendered once, at
 *   registration (`k="v",k2="v2"`, values escaped), and kept as that
 *   string, so rendering copies it and two registrations compare it.
 *
 *   Each counter, gauge and histogram is its own allocation, aligned to a
 *   cache line, so threads updating different metrics never share a line.
 *   A counter is one atomic uint64 added to with relaxed order. A gauge
 *   and a histogram's sum are doubles kept as their bits in an atomic
 *   uint64 (set by a store, added to by a compare-and-swap loop). A
 *   histogram keeps one atomic count per bucket, not cumulative: an
 *   observation touches one bucket and the sum, and render accumulates.
 *   Render reads without stopping writers, so a scrape may see an
 *   observation's bucket and not yet its sum; _count is computed from the
 *   buckets read, so it always equals the +Inf bucket.
 *
 * Exposition (text format 0.0.4): per family `# HELP name help` (help
 * escapes \ and newline), `# TYPE name type`, then one line per series:
 * `name{labels} value`; a histogram gives name_bucket{...,le="b"} for each
 * bound and +Inf, name_sum and name_count. Values print in the shortest
 * form that reads back to the same double; counters as integers.
 */
#include "metrics/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_LINE 64

const double metrics_buckets_seconds[] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,
    2.5,     5,      10,
};
const size_t metrics_buckets_seconds_n =
    sizeof(metrics_buckets_seconds) / sizeof(metrics_buckets_seconds[0]);

const double metrics_buckets_count[] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
};
const size_t metrics_buckets_count_n =
    sizeof(metrics_buckets_count) / sizeof(metrics_buckets_count[0]);

struct metrics_counter {
    _Atomic uint64_t v;
};

struct metrics_gauge {
    _Atomic uint64_t bits; /* a double's bits */
};

struct metrics_histogram {
    size_t n; /* finite bounds; counts has n + 1 (the last is +Inf) */
    double bounds[METRICS_BUCKETS_MAX];
    _Atomic uint64_t sum_bits;
    _Atomic uint64_t counts[METRICS_BUCKETS_MAX + 1];
};

typedef enum series_kind {
    SERIES_COUNTER,
    SERIES_GAUGE,
    SERIES_HISTOGRAM,
    SERIES_FN,
    SERIES_COLLECTOR,
} series_kind_t;

typedef struct series {
    struct series *next;
    const void *owner;
    series_kind_t kind;
    char *labels; /* rendered, without braces; "" for none */
    void *metric; /* the counter, gauge or histogram */
    metrics_value_fn fn;
    metrics_collect_fn collect;
    void *arg;
} series_t;

typedef struct family {
    struct family *next;
    char *name;
    char *help;
    metrics_type_t type;
    series_t *series, *tail;
} family_t;

struct metrics_registry {
    pthread_mutex_t mu;
    family_t *families, *tail;
};

/* A growing output buffer; failed is sticky (out of memory). */
typedef struct obuf {
    char *p;
    size_t len, cap;
    int failed;
} obuf_t;

struct metrics_emit {
    obuf_t *out;
    const family_t *fam;
    reel_status_t *st; /* the first failure */
};

/* ---- Doubles as atomic bits ---------------------------------------------- */

static uint64_t dbits(double v) {
    uint64_t b;

    memcpy(&b, &v, sizeof(b));
    return b;
}

static double bitsd(uint64_t b) {
    double v;

    memcpy(&v, &b, sizeof(v));
    return v;
}

static void atomic_add_double(_Atomic uint64_t *a, double d) {
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);

    while (!atomic_compare_exchange_weak_explicit(
        a, &old, dbits(bitsd(old) + d), memory_order_relaxed,
        memory_order_relaxed))
        ;
}

/* ---- Output ---------------------------------------------------------------- */

static void out_raw(obuf_t *o, const char *s, size_t n) {
    if (o->failed)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t nc = o->cap ? o->cap : 4096;
        char *np;

        while (nc < o->len + n + 1)
            nc *= 2;
        np = realloc(o->p, nc);
        if (np == NULL) {
            o->failed = 1;
            return;
        }
        o->p = np;
        o->cap = nc;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void out_str(obuf_t *o, const char *s) { out_raw(o, s, strlen(s)); }

/* The shortest %g form of v that reads back to v (with every integer
 * digit: 10, not 1e+01); Prometheus spells the infinities +Inf and -Inf
 * and not-a-number NaN. */
static void fmt_double(char *buf, size_t cap, double v) {
    int start = 1;

    if (isnan(v)) {
        snprintf(buf, cap, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (fabs(v) >= 1 && fabs(v) < 1e17)
        start = (int)floor(log10(fabs(v))) + 1;
    for (int prec = start; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void out_double(obuf_t *o, double v) {
    char buf[64];

    fmt_double(buf, sizeof(buf), v);
    out_str(o, buf);
}

static void out_u64(obuf_t *o, uint64_t v) {
    char buf[32];

    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    out_str(o, buf);
}

/* s with the escapes the format asks for: \\ and \n always, \" in label
 * values (quote != 0). */
static void out_escaped(obuf_t *o, const char *s, int quote) {
    for (; *s; s++) {
        if (*s == '\\')
            out_raw(o, "\\\\", 2);
        else if (*s == '\n')
            out_raw(o, "\\n", 2);
        else if (*s == '"' && quote)
            out_raw(o, "\\\"", 2);
        else
            out_raw(o, s, 1);
    }
}

/* ---- Checks ---------------------------------------------------------------- */

static int name_ok(const char *s, int colons) {
    size_t n = strlen(s);

    if (n == 0 || n > METRICS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    c == '_' || (colons && c == ':');

        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

/*
 * Renders labels (pairs ended by NULL) into *out (malloc'd) after checking
 * them; is_hist forbids "le", which the histogram's buckets use.
 */
static reel_code_t render_labels(const char *metric, const char *const *labels,
                                 int is_hist, char **out, reel_status_t *st) {
    obuf_t o = {0};
    size_t n = 0;

    *out = NULL;
    for (; labels != NULL && labels[0] != NULL; labels += 2, n++) {
        const char *k = labels[0], *v = labels[1];

        if (n == METRICS_LABELS_MAX)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "metric %s: more than %d labels", metric,
                                   METRICS_LABELS_MAX);
        if (!name_ok(k, 0) || strncmp(k, "__", 2) == 0 ||
            (is_hist && strcmp(k, "le") == 0)) {
            free(o.p);
            return reel_status_set(
                st, REEL_INVALID_ARGUMENT,
                "metric %s: label name \"%.*s\" must match "
                "[a-zA-Z_][a-zA-Z0-9_]* in 1-%d bytes, not start with \"__\" "
                "(nor be \"le\" on a histogram)",
                metric, METRICS_NAME_MAX, k, METRICS_NAME_MAX);
        }
        if (v == NULL || strlen(v) > METRICS_VALUE_MAX) {
            free(o.p);
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "metric %s: label %s: value %s over %d "
                                   "bytes",
                                   metric, k, v == NULL ? "missing or" : "is",
                                   METRICS_VALUE_MAX);
        }
        if (n > 0)
            out_raw(&o, ",", 1);
        out_str(&o, k);
        out_raw(&o, "=\"", 2);
        out_escaped(&o, v, 1);
        out_raw(&o, "\"", 1);
    }
    out_raw(&o, "", 0);
    if (o.failed || o.p == NULL) {
        free(o.p);
        if (o.failed)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "metric %s: out of memory", metric);
        o.p = strdup("");
        if (o.p == NULL)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "metric %s: out of memory", metric);
    }
    *out = o.p;
    return REEL_OK;
}

static const char *type_name(metrics_type_t t) {
    switch (t) {
    case METRICS_COUNTER:
        return "counter";
    case METRICS_GAUGE:
        return "gauge";
    case METRICS_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

/* ---- The registry ---------------------------------------------------------- */

reel_code_t metrics_registry_create(metrics_registry_t **out,
                                    reel_status_t *st) {
    metrics_registry_t *r = calloc(1, sizeof(*r));

    *out = NULL;
    if (r == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "out of memory creating the metrics registry");
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return REEL_OK;
}

static void series_free(series_t *s) {
    free(s->metric);
    free(s->labels);
    free(s);
}

static void family_free(family_t *f) {
    for (series_t *s = f->series, *next; s != NULL; s = next) {
        next = s->next;
        series_free(s);
    }
    free(f->name);
    free(f->help);
    free(f);
}

void metrics_registry_destroy(metrics_registry_t *r) {
    if (r == NULL)
        return;
    for (family_t *f = r->families, *next; f != NULL; f = next) {
        next = f->next;
        family_free(f);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void metrics_registry_drop(metrics_registry_t *r, const void *owner) {
    family_t **fp;

    if (r == NULL || owner == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    for (fp = &r->families; *fp != NULL;) {
        family_t *f = *fp;
        series_t **sp = &f->series;

        f->tail = NULL;
        while (*sp != NULL) {
            series_t *s = *sp;

            if (s->owner == owner) {
                *sp = s->next;
                series_free(s);
            } else {
                f->tail = s;
                sp = &s->next;
            }
        }
        if (f->series == NULL) {
            *fp = f->next;
            family_free(f);
        } else
            fp = &f->next;
    }
    r->tail = NULL;
    for (family_t *f = r->families; f != NULL; f = f->next)
        r->tail = f;
    pthread_mutex_unlock(&r->mu);
}

/* A cache-line aligned, zeroed allocation. */
static void *alloc_line(size_t size) {
    size_t n = (size + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    void *p = aligned_alloc(CACHE_LINE, n);

    if (p != NULL)
        memset(p, 0, n);
    return p;
}

/*
 * Adds a series to family name (creating it), under r->mu. On success the
 * series owns metric (freed with it); on an error the caller frees it.
 */
static reel_code_t add_series(metrics_registry_t *r, const void *owner,
                              metrics_type_t type, const char *name,
                              const char *help, const char *const *labels,
                              series_t *proto, reel_status_t *st) {
    family_t *f;
    series_t *s = NULL;
    char *lab = NULL;
    reel_code_t rc;

    if (name == NULL || !name_ok(name, 1))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "metric name \"%.*s\" must match "
                               "[a-zA-Z_:][a-zA-Z0-9_:]* in 1-%d bytes",
                               METRICS_NAME_MAX, name ? name : "",
                               METRICS_NAME_MAX);
    if (help == NULL)
        help = "";
    if ((rc = render_labels(name, labels, type == METRICS_HISTOGRAM, &lab,
                            st)) != REEL_OK)
        return rc;

    pthread_mutex_lock(&r->mu);
    for (f = r->families; f != NULL; f = f->next)
        if (strcmp(f->name, name) == 0)
            break;
    if (f != NULL) {
        if (f->type != type || strcmp(f->help, help) != 0) {
            rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                 "metric %s: registered again with another "
                                 "type or help text",
                                 name);
            goto out;
        }
        if (proto->kind == SERIES_COLLECTOR ||
            f->series->kind == SERIES_COLLECTOR) {
            rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                 "metric %s: a collected family has no "
                                 "other series",
                                 name);
            goto out;
        }
        for (series_t *o = f->series; o != NULL; o = o->next)
            if (strcmp(o->labels, lab) == 0) {
                rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                     "metric %s: labels {%s} registered "
                                     "twice",
                                     name, lab);
                goto out;
            }
    }
    s = malloc(sizeof(*s));
    if (s == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                             "metric %s: out of memory", name);
        goto out;
    }
    *s = *proto;
    s->next = NULL;
    s->owner = owner;
    s->labels = lab;
    if (f == NULL) {
        f = calloc(1, sizeof(*f));
        if (f == NULL || (f->name = strdup(name)) == NULL ||
            (f->help = strdup(help)) == NULL) {
            if (f != NULL) {
                free(f->name);
                free(f);
            }
            free(s);
            s = NULL;
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                 "metric %s: out of memory", name);
            goto out;
        }
        f->type = type;
        if (r->tail != NULL)
            r->tail->next = f;
        else
            r->families = f;
        r->tail = f;
    }
    if (f->tail != NULL)
        f->tail->next = s;
    else
        f->series = s;
    f->tail = s;
    lab = NULL; /* the series owns it */
    rc = REEL_OK;
out:
    pthread_mutex_unlock(&r->mu);
    free(lab);
    return rc;
}

reel_code_t metrics_reg_counter(metrics_registry_t *r, const void *owner,
                                const char *name, const char *help,
                                const char *const *labels,
                                metrics_counter_t **out, reel_status_t *st) {
    series_t proto = {.kind = SERIES_COUNTER};
    reel_code_t rc;

    *out = NULL;
    if (r == NULL)
        return REEL_OK;
    if ((proto.metric = alloc_line(sizeof(metrics_counter_t))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "metric %s: out of memory", name);
    rc = add_series(r, owner, METRICS_COUNTER, name, help, labels, &proto, st);
    if (rc != REEL_OK) {
        free(proto.metric);
        return rc;
    }
    *out = proto.metric;
    return REEL_OK;
}

reel_code_t metrics_reg_gauge(metrics_registry_t *r, const void *owner,
                              const char *name, const char *help,
                              const char *const *labels, metrics_gauge_t **out,
                              reel_status_t *st) {
    series_t proto = {.kind = SERIES_GAUGE};
    reel_code_t rc;

    *out = NULL;
    if (r == NULL)
        return REEL_OK;
    if ((proto.metric = alloc_line(sizeof(metrics_gauge_t))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "metric %s: out of memory", name);
    rc = add_series(r, owner, METRICS_GAUGE, name, help, labels, &proto, st);
    if (rc != REEL_OK) {
        free(proto.metric);
        return rc;
    }
    *out = proto.metric;
    return REEL_OK;
}

reel_code_t metrics_reg_histogram(metrics_registry_t *r, const void *owner,
                                  const char *name, const char *help,
                                  const char *const *labels,
                                  const double *bounds, size_t n_bounds,
                                  metrics_histogram_t **out,
                                  reel_status_t *st) {
    series_t proto = {.kind = SERIES_HISTOGRAM};
    metrics_histogram_t *h;
    reel_code_t rc;

    *out = NULL;
    if (r == NULL)
        return REEL_OK;
    if (bounds == NULL || n_bounds == 0 || n_bounds > METRICS_BUCKETS_MAX)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "metric %s: buckets: %zu bounds, outside "
                               "1-%d",
                               name ? name : "", n_bounds, METRICS_BUCKETS_MAX);
    for (size_t i = 0; i < n_bounds; i++)
        if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "metric %s: buckets: bound %zu is not "
                                   "finite or not above the one before",
                                   name ? name : "", i);
    if ((h = alloc_line(sizeof(*h))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "metric %s: out of memory", name);
    h->n = n_bounds;
    memcpy(h->bounds, bounds, n_bounds * sizeof(*bounds));
    proto.metric = h;
    rc = add_series(r, owner, METRICS_HISTOGRAM, name, help, labels, &proto,
                    st);
    if (rc != REEL_OK) {
        free(h);
        return rc;
    }
    *out = h;
    return REEL_OK;
}

reel_code_t metrics_reg_fn(metrics_registry_t *r, const void *owner,
                           metrics_type_t type, const char *name,
                           const char *help, const char *const *labels,
                           metrics_value_fn fn, void *arg, reel_status_t *st) {
    series_t proto = {.kind = SERIES_FN, .fn = fn, .arg = arg};

    if (r == NULL)
        return REEL_OK;
    if (type == METRICS_HISTOGRAM || fn == NULL)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "metric %s: a value function needs a counter "
                               "or gauge type and a function",
                               name ? name : "");
    return add_series(r, owner, type, name, help, labels, &proto, st);
}

reel_code_t metrics_reg_collector(metrics_registry_t *r, const void *owner,
                                  metrics_type_t type, const char *name,
                                  const char *help, metrics_collect_fn fn,
                                  void *arg, reel_status_t *st) {
    series_t proto = {.kind = SERIES_COLLECTOR, .collect = fn, .arg = arg};

    if (r == NULL)
        return REEL_OK;
    if (type == METRICS_HISTOGRAM || fn == NULL)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "metric %s: a collector needs a counter or "
                               "gauge type and a function",
                               name ? name : "");
    return add_series(r, owner, type, name, help, NULL, &proto, st);
}

/* ---- Updates ------------------------------------------------------------- */

void metrics_counter_inc(metrics_counter_t *c) { metrics_counter_add(c, 1); }

void metrics_counter_add(metrics_counter_t *c, uint64_t n) {
    if (c != NULL)
        atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

uint64_t metrics_counter_value(const metrics_counter_t *c) {
    return c != NULL ? atomic_load_explicit(&((metrics_counter_t *)c)->v,
                                            memory_order_relaxed)
                     : 0;
}

void metrics_gauge_set(metrics_gauge_t *g, double v) {
    if (g != NULL)
        atomic_store_explicit(&g->bits, dbits(v), memory_order_relaxed);
}

void metrics_gauge_add(metrics_gauge_t *g, double delta) {
    if (g != NULL)
        atomic_add_double(&g->bits, delta);
}

double metrics_gauge_value(const metrics_gauge_t *g) {
    return g != NULL ? bitsd(atomic_load_explicit(
                           &((metrics_gauge_t *)g)->bits,
                           memory_order_relaxed))
                     : 0;
}

void metrics_histogram_observe(metrics_histogram_t *h, double v) {
    size_t i = 0;

    if (h == NULL || isnan(v))
        return;
    /* A handful of bounds: a linear scan beats a search's branches. */
    while (i < h->n && v > h->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_add_double(&h->sum_bits, v);
}

uint64_t metrics_histogram_count(const metrics_histogram_t *h) {
    uint64_t n = 0;

    if (h == NULL)
        return 0;
    for (size_t i = 0; i <= h->n; i++)
        n += atomic_load_explicit(&((metrics_histogram_t *)h)->counts[i],
                                  memory_order_relaxed);
    return n;
}

double metrics_histogram_sum(const metrics_histogram_t *h) {
    return h != NULL ? bitsd(atomic_load_explicit(
                           &((metrics_histogram_t *)h)->sum_bits,
                           memory_order_relaxed))
                     : 0;
}

/* ---- Rendering ------------------------------------------------------------ */

/* name{labels} or name{labels,extra} or name{extra} or name, then " ". */
static void out_series_name(obuf_t *o, const char *name, const char *suffix,
                            const char *labels, const char *extra) {
    out_str(o, name);
    out_str(o, suffix);
    if (*labels || extra != NULL) {
        out_raw(o, "{", 1);
        out_str(o, labels);
        if (extra != NULL) {
            if (*labels)
                out_raw(o, ",", 1);
            out_str(o, extra);
        }
        out_raw(o, "}", 1);
    }
    out_raw(o, " ", 1);
}

static void render_histogram(obuf_t *o, const char *name, const char *labels,
                             metrics_histogram_t *h) {
    uint64_t cum = 0;
    char le[80], b[64];

    for (size_t i = 0; i <= h->n; i++) {
        cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (i < h->n)
            fmt_double(b, sizeof(b), h->bounds[i]);
        else
            snprintf(b, sizeof(b), "+Inf");
        snprintf(le, sizeof(le), "le=\"%s\"", b);
        out_series_name(o, name, "_bucket", labels, le);
        out_u64(o, cum);
        out_raw(o, "\n", 1);
    }
    out_series_name(o, name, "_sum", labels, NULL);
    out_double(o, metrics_histogram_sum(h));
    out_raw(o, "\n", 1);
    out_series_name(o, name, "_count", labels, NULL);
    out_u64(o, cum);
    out_raw(o, "\n", 1);
}

void metrics_emit(metrics_emit_t *e, const char *const *labels, double value) {
    reel_status_t bad = REEL_STATUS_INIT;
    char *lab = NULL;

    if (e->st->code != REEL_OK)
        return;
    if (render_labels(e->fam->name, labels, 0, &lab, &bad) != REEL_OK) {
        reel_status_move(e->st, &bad);
        return;
    }
    out_series_name(e->out, e->fam->name, "", lab, NULL);
    out_double(e->out, value);
    out_raw(e->out, "\n", 1);
    free(lab);
}

void metrics_emit_fail(metrics_emit_t *e, const reel_status_t *why) {
    if (e->st->code != REEL_OK)
        return;
    reel_status_set(e->st, why->code != REEL_OK ? why->code : REEL_INTERNAL,
                    "collecting %s: %s", e->fam->name,
                    reel_status_message(why));
}

reel_code_t metrics_render(metrics_registry_t *r, char **out, size_t *len,
                           reel_status_t *st) {
    obuf_t o = {0};
    reel_status_t cst = REEL_STATUS_INIT;
    reel_code_t rc = REEL_OK;

    *out = NULL;
    *len = 0;
    pthread_mutex_lock(&r->mu);
    for (family_t *f = r->families; f != NULL && !o.failed; f = f->next) {
        out_raw(&o, "# HELP ", 7);
        out_str(&o, f->name);
        out_raw(&o, " ", 1);
        out_escaped(&o, f->help, 0);
        out_raw(&o, "\n# TYPE ", 8);
        out_str(&o, f->name);
        out_raw(&o, " ", 1);
        out_str(&o, type_name(f->type));
        out_raw(&o, "\n", 1);
        for (series_t *s = f->series; s != NULL; s = s->next) {
            switch (s->kind) {
            case SERIES_COUNTER:
                out_series_name(&o, f->name, "", s->labels, NULL);
                out_u64(&o, metrics_counter_value(s->metric));
                out_raw(&o, "\n", 1);
                break;
            case SERIES_GAUGE:
                out_series_name(&o, f->name, "", s->labels, NULL);
                out_double(&o, metrics_gauge_value(s->metric));
                out_raw(&o, "\n", 1);
                break;
            case SERIES_HISTOGRAM:
                render_histogram(&o, f->name, s->labels, s->metric);
                break;
            case SERIES_FN:
                out_series_name(&o, f->name, "", s->labels, NULL);
                out_double(&o, s->fn(s->arg));
                out_raw(&o, "\n", 1);
                break;
            case SERIES_COLLECTOR: {
                metrics_emit_t e = {&o, f, &cst};

                s->collect(s->arg, &e);
                break;
            }
            }
        }
        if (cst.code != REEL_OK)
            break;
    }
    pthread_mutex_unlock(&r->mu);
    if (cst.code != REEL_OK) {
        rc = cst.code;
        reel_status_move(st, &cst);
        reel_status_fini(&cst);
    } else if (o.failed)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                             "out of memory rendering the metrics");
    else if (o.p == NULL && (o.p = strdup("")) == NULL)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                             "out of memory rendering the metrics");
    if (rc != REEL_OK) {
        free(o.p);
        return rc;
    }
    *out = o.p;
    *len = o.len;
    return REEL_OK;
}
