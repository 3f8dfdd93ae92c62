/*
 * base/clock.h: the two clocks reel uses.
 */
#ifndef REEL_BASE_CLOCK_H
#define REEL_BASE_CLOCK_H

#include <stdint.h>

/* Wall-clock milliseconds since the Unix epoch: timestamps users see. */
int64_t reel_clock_now_ms(void);

/* Monotonic nanoseconds: for timeouts and durations only. */
int64_t reel_clock_mono_ns(void);

#endif
