/*
 * client/backoff.h: the wait between attempts (private to client/).
 *
 * Exponential with jitter, as gRPC's own connection backoff: the k-th wait
 * (k = 0 for the wait before the second attempt) is
 * base = min(max, initial * multiplier^k), spread uniformly over
 * [base * (1 - jitter), base * (1 + jitter)] and capped at max, so many
 * clients that lost the same server do not all come back at once, and no
 * wait exceeds max. Pure functions: the caller keeps the random state.
 */
#ifndef REEL_CLIENT_BACKOFF_H
#define REEL_CLIENT_BACKOFF_H

#include <stdint.h>

typedef struct client_backoff {
    int64_t initial_ms; /* >= 1 */
    int64_t max_ms;     /* >= initial_ms */
    double multiplier;  /* >= 1 */
    double jitter;      /* in [0, 1) */
} client_backoff_t;

/* The wait before attempt k + 2, in ms: at least 1, at most max_ms. */
int64_t client_backoff_delay(const client_backoff_t *b, unsigned k,
                             uint64_t *rng);

/* A seed for the random state: differs between threads and processes. */
uint64_t client_rng_seed(void);

/* The next number in [0, 1) (xorshift64*; *rng must not be 0). */
double client_rng_unit(uint64_t *rng);

#endif
