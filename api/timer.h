/*
 * api/timer.h: one thread that calls functions at deadlines (the C core has
 * no alarm API). Timers are kept in a heap: arming and disarming are
 * O(log n) in the number armed (every open WAL tail keeps one armed).
 * Timers of one deadline run in the order they were armed. Thread-safe.
 */
#ifndef REEL_API_TIMER_H
#define REEL_API_TIMER_H

#include <stdint.h>

typedef struct api_timers api_timers_t;
typedef struct api_timer api_timer_t;

api_timers_t *api_timers_create(void);
/* Stops the thread; timers still armed are dropped without running. */
void api_timers_destroy(api_timers_t *t);

/*
 * Calls fn(arg) once, on the timer thread, at deadline_ns (monotonic
 * clock), unless stopped first. The caller owns the handle and must pass
 * it to api_timer_stop() exactly once, whether or not fn ran.
 */
api_timer_t *api_timer_start(api_timers_t *t, int64_t deadline_ns,
                             void (*fn)(void *arg), void *arg);

/*
 * Disarms tm (fn will not run if it had not started), waits for fn if it
 * is running, and frees tm. Must not be called from inside fn.
 */
void api_timer_stop(api_timers_t *t, api_timer_t *tm);

#endif
