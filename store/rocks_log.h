/*
 * store/rocks_log.h: RocksDB's info log, sent to reel's log, and its
 * background errors, said to the store (private to store/).
 */
#ifndef REEL_STORE_ROCKS_LOG_H
#define REEL_STORE_ROCKS_LOG_H

#include <rocksdb/c.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Makes the database opened with opts log through reel_log() (module
 * "rocksdb") instead of a LOG file in its directory: RocksDB's warnings and
 * errors at those levels, the rest at DEBUG (kept only with --log-level
 * debug) except the options dump at open (the OPTIONS file has them).
 */
void store_rocks_log(rocksdb_options_t *opts);

/*
 * Makes the database opened with opts call fn(arg, why) when its
 * background work fails (a flush or compaction that hit a full disk, a
 * MANIFEST write): RocksDB then refuses every write, though no write of
 * the caller's failed yet. why names the work and RocksDB's status. fn
 * runs on RocksDB's thread, possibly inside a write: it must not block,
 * nor call into the database.
 */
typedef void (*store_rocks_error_fn)(void *arg, const char *why);
void store_rocks_on_error(rocksdb_options_t *opts, store_rocks_error_fn fn,
                          void *arg);

#ifdef __cplusplus
}
#endif

#endif
