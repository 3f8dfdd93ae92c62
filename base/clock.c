#include "base/clock.h"

#include <time.h>

int64_t reel_clock_now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t reel_clock_mono_ns(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void reel_cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

struct timespec reel_clock_mono_at(int64_t mono_ns) {
    struct timespec ts;

    ts.tv_sec = (time_t)(mono_ns / 1000000000LL);
    ts.tv_nsec = (long)(mono_ns % 1000000000LL);
    return ts;
}

struct timespec reel_clock_mono_after(int64_t ms) {
    if (ms < 0)
        ms = 0;
    if (ms > INT64_MAX / 2000000LL) /* far enough: no overflow below */
        ms = INT64_MAX / 2000000LL;
    return reel_clock_mono_at(reel_clock_mono_ns() + ms * 1000000LL);
}
