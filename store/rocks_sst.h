/*
 * store/rocks_sst.h: a table file written outside the database.
 *
 * RocksDB's C API (7.8) writes table files (SstFileWriter) with default
 * file options: no rate limiter and no incremental sync. These take them
 * from the database's options, so the file's writes are paced by the same
 * limiter as flushes (at flush priority) and written out a bytes_per_sync
 * at a time.
 */
#ifndef REEL_STORE_ROCKS_SST_H
#define REEL_STORE_ROCKS_SST_H

#include <stddef.h>

#include <rocksdb/c.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct store_sst store_sst_t;

/* A new table file at path, for a family with opts; NULL with *err set
 * (free it with rocksdb_free). */
store_sst_t *store_sst_open(const rocksdb_options_t *opts, const char *path,
                            char **err);
/* Appends key -> val; keys must ascend. 0, or -1 with *err set. */
int store_sst_put(store_sst_t *f, const void *key, size_t klen,
                  const void *val, size_t vlen, char **err);
/* Ends the file and syncs it. 0, or -1 with *err set. */
int store_sst_finish(store_sst_t *f, char **err);
/* Frees f; a file not finished is abandoned (not deleted). */
void store_sst_destroy(store_sst_t *f);

#ifdef __cplusplus
}
#endif

#endif
