/*
 * store/rocks_rate.cc: a rate limiter's rate, changed while it runs.
 *
 * RocksDB's C API (7.8) makes a rate limiter but cannot change its rate;
 * the C++ RateLimiter can (SetBytesPerSecond, thread-safe). The C API's
 * wrapper holds the limiter's shared_ptr as its one member (as rocksdb's
 * c.cc declares it), which is how this reaches it.
 */
#include "store/rocks_rate.h"

#include <rocksdb/rate_limiter.h>

#include <memory>

struct rocksdb_ratelimiter_t {
    std::shared_ptr<rocksdb::RateLimiter> rep;
};

void store_ratelimiter_set_rate(rocksdb_ratelimiter_t *rl, int64_t rate) {
    if (rl != nullptr && rl->rep != nullptr && rate > 0)
        rl->rep->SetBytesPerSecond(rate);
}
