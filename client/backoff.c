/*
 * client/backoff.c: the wait between attempts; see backoff.h.
 */
#include "client/backoff.h"

#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

int64_t client_backoff_delay(const client_backoff_t *b, unsigned k,
                             uint64_t *rng) {
    double base = (double)b->initial_ms, d;

    /* Stops growing at max: no overflow however many attempts. */
    for (unsigned i = 0; i < k && base < (double)b->max_ms; i++)
        base *= b->multiplier;
    if (base > (double)b->max_ms)
        base = (double)b->max_ms;
    d = base * (1.0 + b->jitter * (2.0 * client_rng_unit(rng) - 1.0));
    if (d > (double)b->max_ms)
        d = (double)b->max_ms;
    return d < 1.0 ? 1 : (int64_t)d;
}

uint64_t client_rng_seed(void) {
    static atomic_uint_fast64_t counter;
    struct timespec ts;
    uint64_t s;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
        ((uint64_t)getpid() << 16) ^
        (atomic_fetch_add(&counter, 1) * 0x9E3779B97F4A7C15ull);
    return s != 0 ? s : 0x9E3779B97F4A7C15ull;
}

double client_rng_unit(uint64_t *rng) {
    uint64_t x = *rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    /* The top 53 bits: every double in [0, 1) this can give is exact. */
    return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}
