/*
 * store/rocks_log.h: RocksDB's info log, sent to reel's log (private to
 * store/).
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

#ifdef __cplusplus
}
#endif

#endif
