/*
 * bench/stats.c: latency samples, sorted once when a quantile is asked.
 */
#include "bench/stats.h"

#include <stdlib.h>

void lat_init(lat_t *l) {
    pthread_mutex_init(&l->mu, NULL);
    l->ns = NULL;
    l->n = l->cap = 0;
    l->sorted = 1;
}

void lat_fini(lat_t *l) {
    free(l->ns);
    pthread_mutex_destroy(&l->mu);
}

void lat_reset(lat_t *l) {
    pthread_mutex_lock(&l->mu);
    l->n = 0;
    l->sorted = 1;
    pthread_mutex_unlock(&l->mu);
}

void lat_add(lat_t *l, int64_t ns) {
    pthread_mutex_lock(&l->mu);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        int64_t *p = realloc(l->ns, cap * sizeof(*p));

        if (p == NULL) {
            pthread_mutex_unlock(&l->mu);
            return;
        }
        l->ns = p;
        l->cap = cap;
    }
    l->ns[l->n++] = ns;
    l->sorted = 0;
    pthread_mutex_unlock(&l->mu);
}

size_t lat_count(lat_t *l) {
    size_t n;

    pthread_mutex_lock(&l->mu);
    n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

double lat_quantile_us(lat_t *l, double q) {
    double r = 0;

    pthread_mutex_lock(&l->mu);
    if (l->n > 0) {
        size_t i;

        if (!l->sorted) {
            qsort(l->ns, l->n, sizeof(*l->ns), cmp_i64);
            l->sorted = 1;
        }
        /* Nearest rank: the smallest sample with at least q of them at or
         * below it. */
        i = (size_t)(q * (double)l->n + 0.999999);
        if (i > 0)
            i--;
        if (i >= l->n)
            i = l->n - 1;
        r = (double)l->ns[i] / 1000.0;
    }
    pthread_mutex_unlock(&l->mu);
    return r;
}
