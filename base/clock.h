/*
 * base/clock.h: the two clocks reel uses.
 */
#ifndef REEL_BASE_CLOCK_H
#define REEL_BASE_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Wall-clock milliseconds since the Unix epoch: timestamps users see. */
int64_t reel_clock_now_ms(void);

/* Monotonic nanoseconds: for timeouts and durations only. */
int64_t reel_clock_mono_ns(void);

/*
 * Initializes cv so that its timed waits run on the monotonic clock: a step
 * of the wall clock (NTP, a VM resumed) neither stretches nor cuts them.
 * Every condition variable reel waits on with a timeout is made this way,
 * and its deadline comes from reel_clock_mono_after().
 */
void reel_cond_init_mono(pthread_cond_t *cv);

/* The monotonic instant ms milliseconds from now, as a timed wait takes it. */
struct timespec reel_clock_mono_after(int64_t ms);

/* The monotonic instant mono_ns (from reel_clock_mono_ns()), likewise. */
struct timespec reel_clock_mono_at(int64_t mono_ns);

#endif
