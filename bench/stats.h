/*
 * bench/stats.h: latency samples and their percentiles.
 *
 * Every sample is kept (a few million at most per point), so percentiles
 * are exact, not estimated from buckets. Thread-safe.
 */
#ifndef REEL_BENCH_STATS_H
#define REEL_BENCH_STATS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lat {
    pthread_mutex_t mu;
    int64_t *ns;
    size_t n, cap;
    int sorted;
} lat_t;

void lat_init(lat_t *l);
void lat_fini(lat_t *l);
void lat_reset(lat_t *l);
void lat_add(lat_t *l, int64_t ns);
size_t lat_count(lat_t *l);
/* The q-quantile (0..1) in microseconds; 0 with no samples. */
double lat_quantile_us(lat_t *l, double q);

#endif
