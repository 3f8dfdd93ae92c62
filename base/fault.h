/*
 * base/fault.h: fault injection for tests.
 *
 * Code that can fail in ways a test cannot provoke from outside (an
 * allocation, a RocksDB read or write, an iterator error) names the spot
 * with REEL_FAULT("store.get"): normally false, it is true when a test has
 * armed that point. The caller then takes the same path as the real
 * failure, so that path is tested, not assumed.
 *
 * Arming: unit tests call reel_fault_arm(); an end-to-end test starts
 * reeld with REEL_TEST_FAULTS="point[@skip][*count],..." (reeld logs a
 * warning naming every armed point, so no production server runs with one
 * by accident). skip: hits that pass before the first failure (default 0);
 * count: failures after that (default 1; 0 means every hit from then on).
 *
 * Cost when nothing is armed: one relaxed atomic load per point.
 * Thread-safe.
 */
#ifndef REEL_BASE_FAULT_H
#define REEL_BASE_FAULT_H

#include <stdatomic.h>
#include <stdint.h>

#include "base/status.h"

extern atomic_int reel_fault_armed_;

/* 1 if the point should fail now (the hit is counted), else 0. */
int reel_fault_hit(const char *point);

#define REEL_FAULT(point)                                                    \
    (atomic_load_explicit(&reel_fault_armed_, memory_order_relaxed) &&       \
     reel_fault_hit(point))

/* Arms point: skip hits pass, then count fail (0 = all of them). Returns 0,
 * or -1 when the table of armed points (32) is full. */
int reel_fault_arm(const char *point, uint64_t skip, uint64_t count);

/* Parses "a.b@3*2,c.d" and arms each; INVALID_ARGUMENT on a bad spec. */
reel_code_t reel_fault_arm_spec(const char *spec, reel_status_t *st);

/* How many times point has failed so far. */
uint64_t reel_fault_fired(const char *point);

/* Disarms every point and forgets the counts. */
void reel_fault_reset(void);

#endif
