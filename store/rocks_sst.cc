/*
 * store/rocks_sst.cc: a table file written outside the database, with the
 * database's file options (store/rocks_sst.h).
 *
 * The C API's options wrapper holds the Options as its one member (as
 * rocksdb's c.cc declares it, like the rate limiter's in rocks_rate.cc).
 */
#include "store/rocks_sst.h"

#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_writer.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

struct rocksdb_options_t {
    rocksdb::Options rep;
};

struct store_sst {
    rocksdb::SstFileWriter writer;

    /* EnvOptions(DBOptions) carries the rate limiter and bytes_per_sync;
     * IO_HIGH charges the limiter as a flush would be. */
    explicit store_sst(const rocksdb::Options &o)
        : writer(rocksdb::EnvOptions(o), o, nullptr, true,
                 rocksdb::Env::IO_HIGH) {}
};

static int failed(const rocksdb::Status &s, char **err) {
    *err = strdup(s.ToString().c_str());
    return -1;
}

store_sst_t *store_sst_open(const rocksdb_options_t *opts, const char *path,
                            char **err) {
    store_sst_t *f = new (std::nothrow) store_sst(opts->rep);

    if (f == nullptr) {
        *err = strdup("out of memory");
        return nullptr;
    }
    rocksdb::Status s = f->writer.Open(path);
    if (!s.ok()) {
        failed(s, err);
        delete f;
        return nullptr;
    }
    return f;
}

int store_sst_put(store_sst_t *f, const void *key, size_t klen,
                  const void *val, size_t vlen, char **err) {
    rocksdb::Status s =
        f->writer.Put(rocksdb::Slice(static_cast<const char *>(key), klen),
                      rocksdb::Slice(static_cast<const char *>(val), vlen));
    return s.ok() ? 0 : failed(s, err);
}

int store_sst_finish(store_sst_t *f, char **err) {
    rocksdb::Status s = f->writer.Finish();
    return s.ok() ? 0 : failed(s, err);
}

void store_sst_destroy(store_sst_t *f) { delete f; }
