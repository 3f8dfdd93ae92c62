/*
 * store/rocks_rate.h: changing a RocksDB rate limiter's rate while the
 * database runs (private to store/).
 */
#ifndef REEL_STORE_ROCKS_RATE_H
#define REEL_STORE_ROCKS_RATE_H

#include <stdint.h>

#include <rocksdb/c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sets rl's rate (bytes a second, > 0); thread-safe, takes effect at the
 * limiter's next refill. */
void store_ratelimiter_set_rate(rocksdb_ratelimiter_t *rl, int64_t rate);

#ifdef __cplusplus
}
#endif

#endif
