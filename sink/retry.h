/*
 * sink/retry.h: when a failed delivery is tried again (reel-sink's and
 * reel-reactor's: part of //sink:http).
 *
 * After the k-th failed attempt (k = 1, 2, ...) the next comes
 * steps_ms[k-1] later, spread by up to +-jitter of itself so that many
 * sinks that lost one receiver do not all come back at the same moment;
 * after the last step there is no attempt left, and none either once the
 * next one would start more than max_age_ms (when set) after the first.
 * The default schedule is the Standard Webhooks one: immediately, then 5 s,
 * 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 27.6 hours in all).
 *
 * A receiver that answers 429, 502, 503 or 504 with Retry-After sets the
 * wait itself (delta-seconds or an HTTP-date), capped at
 * retry_after_max_ms. Pure functions: the caller keeps the random state.
 */
#ifndef REEL_SINK_RETRY_H
#define REEL_SINK_RETRY_H

#include <stdint.h>

#include <stddef.h>

#define SINK_RETRY_STEPS_MAX 64

/* When to try again after a failed attempt. */
typedef struct sink_retry {
    int64_t steps_ms[SINK_RETRY_STEPS_MAX]; /* delay before attempt 2, 3 .. */
    size_t n_steps;
    int64_t max_age_ms;      /* 0: the schedule alone bounds the attempts */
    double jitter;           /* each delay spread by up to +-jitter */
    int64_t retry_after_max_ms; /* cap on a receiver's Retry-After */
} sink_retry_t;

/* The default retry schedule (the Standard Webhooks one): 5 s, 5 min,
 * 30 min, 2 h, 5 h, 10 h, 10 h after the first attempt. */
void sink_retry_defaults(sink_retry_t *r);

/*
 * The wait (ms, >= 0) before the attempt after `failures` failed ones of a
 * delivery first tried at first_ms, now being now_ms; -1 when none is
 * left. block: the schedule never runs out (on_exhausted "block"): past
 * its end every wait is its last step.
 */
int64_t sink_retry_next(const sink_retry_t *r, unsigned failures,
                        int64_t first_ms, int64_t now_ms, int block,
                        uint64_t *rng);

/*
 * The wait sink_retry_next() gave (-1: none left) with the receiver's
 * Retry-After (after_ms, -1 when none), which may only lengthen it: the
 * longer of the two, or -1 when that would start the attempt more than
 * max_age_ms after the first (unless block).
 */
int64_t sink_retry_with_after(const sink_retry_t *r, int64_t wait,
                              int64_t after_ms, int64_t first_ms,
                              int64_t now_ms, int block);

/*
 * Writes to buf (cap bytes) the wait before the next attempt and what set
 * it, for a failed attempt's log line: scheduled is sink_retry_next()'s
 * wait, after_ms the receiver's Retry-After (-1: none), wait the one taken
 * (sink_retry_with_after()'s, >= 0), throttled whether the status
 * throttles the sink. The Retry-After is credited only when it was the
 * later of the two:
 *   "2.5 s (the receiver's Retry-After)"
 *   "2.5 s (the retry schedule's; the receiver's Retry-After asked for 1 s)"
 *   "20 ms (throttled: the sink waits)"    (no Retry-After to read)
 *   "5.0 s"                                (neither)
 */
void sink_retry_describe(char *buf, size_t cap, int64_t wait,
                         int64_t scheduled, int64_t after_ms, int throttled);

/* Whether an HTTP status throttles the sink (429, 502, 503, 504). */
int sink_retry_throttles(long http_status);

/*
 * A Retry-After value: delta-seconds ("120") or an HTTP-date
 * ("Wed, 21 Oct 2015 07:28:00 GMT"), now_unix_ms being the time now. 0 and
 * *ms (0 .. cap_ms), or -1 when it cannot be read.
 */
int sink_retry_after_parse(const char *value, int64_t now_unix_ms,
                           int64_t cap_ms, int64_t *ms);

/* A seed for the random state, and the next number in [0, 1). */
uint64_t sink_rng_seed(void);
double sink_rng_unit(uint64_t *rng);

#endif
