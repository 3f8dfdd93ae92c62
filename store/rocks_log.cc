/*
 * store/rocks_log.cc: RocksDB's info log, sent to reel's log; its
 * background errors, said to the store (store_rocks_on_error).
 *
 * Why not RocksDB's own LOG file: it sits in the data directory, so when
 * that disk fills up, its writer fails too, and Debian's librocksdb (built
 * with assertions) aborts the process on the next line logged to a writer
 * that has failed (WritableFileWriter::AssertFalseAndGetStatusForPrevError,
 * reached from the no-space recovery thread's own log line). A full disk
 * must refuse writes with a clear error, not kill reeld. reel_log() writes
 * each line to stderr with one write(2) and shrugs off a failed one.
 *
 * RocksDB's C API (7.8) can install a logger but not make one, so this file
 * makes one in C++ and hands it over in the C API's own wrapper, whose one
 * member is the logger's shared_ptr (as rocksdb's c.cc declares it).
 */
#include "store/rocks_log.h"

#include <rocksdb/env.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>

extern "C" {
#include "base/log.h"
}

struct rocksdb_logger_t {
    std::shared_ptr<rocksdb::Logger> rep;
};

/* As rocksdb's c.cc declares it: the options are its one member. */
struct rocksdb_options_t {
    rocksdb::Options rep;
};

namespace {

class ReelLogger : public rocksdb::Logger {
  public:
    explicit ReelLogger(rocksdb::InfoLogLevel level) : rocksdb::Logger(level) {}

    using rocksdb::Logger::Logv;

    /* The options dump at open (some 800 lines): the data dir's OPTIONS
     * file holds the same. */
    void LogHeader(const char *format, va_list ap) override {
        (void)format;
        (void)ap;
    }

    void Logv(const char *format, va_list ap) override {
        Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
    }

    void Logv(const rocksdb::InfoLogLevel level, const char *format,
              va_list ap) override {
        reel_log_level_t to;
        char line[2048];

        if (level < GetInfoLogLevel())
            return;
        switch (level) {
        case rocksdb::InfoLogLevel::WARN_LEVEL:
            to = REEL_LOG_WARN;
            break;
        case rocksdb::InfoLogLevel::ERROR_LEVEL:
        case rocksdb::InfoLogLevel::FATAL_LEVEL:
            to = REEL_LOG_ERROR;
            break;
        default: /* DEBUG, INFO, HEADER (the options dump at open) */
            to = REEL_LOG_DEBUG;
            break;
        }
        if (!reel_log_enabled(to))
            return;
        vsnprintf(line, sizeof(line), format, ap);
        /* reel's log is one event per line: a multi-line message (the
         * periodic stats dump) becomes one log line per line. */
        for (char *p = line, *nl; *p != '\0'; p = nl + 1) {
            if ((nl = strchr(p, '\n')) != NULL)
                *nl = '\0';
            if (*p != '\0')
                reel_log(to, "rocksdb", "%s", p);
            if (nl == NULL)
                break;
        }
    }
};

/* A background error, said to the store: RocksDB's C API has no
 * listeners. */
class ReelListener : public rocksdb::EventListener {
  public:
    ReelListener(store_rocks_error_fn fn, void *arg) : fn_(fn), arg_(arg) {}

    void OnBackgroundError(rocksdb::BackgroundErrorReason reason,
                           rocksdb::Status *bg_error) override {
        char why[1024];

        /* Work cut short by a close is not a failure of the disk. */
        if (bg_error == nullptr || bg_error->ok() ||
            bg_error->IsShutdownInProgress() ||
            bg_error->IsColumnFamilyDropped())
            return;
        snprintf(why, sizeof(why), "RocksDB's background %s failed: %s",
                 work(reason), bg_error->ToString().c_str());
        fn_(arg_, why);
    }

  private:
    static const char *work(rocksdb::BackgroundErrorReason r) {
        switch (r) {
        case rocksdb::BackgroundErrorReason::kFlush:
        case rocksdb::BackgroundErrorReason::kFlushNoWAL:
            return "flush";
        case rocksdb::BackgroundErrorReason::kCompaction:
            return "compaction";
        case rocksdb::BackgroundErrorReason::kManifestWrite:
        case rocksdb::BackgroundErrorReason::kManifestWriteNoWAL:
            return "MANIFEST write";
        default:
            return "write";
        }
    }

    store_rocks_error_fn fn_;
    void *arg_;
};

} // namespace

extern "C" void store_rocks_on_error(rocksdb_options_t *opts,
                                     store_rocks_error_fn fn, void *arg) {
    opts->rep.listeners.push_back(std::make_shared<ReelListener>(fn, arg));
}

extern "C" void store_rocks_log(rocksdb_options_t *opts) {
    /* Below reel's level, RocksDB need not even format the line. */
    rocksdb::InfoLogLevel level = reel_log_enabled(REEL_LOG_DEBUG)
                                      ? rocksdb::InfoLogLevel::DEBUG_LEVEL
                                      : rocksdb::InfoLogLevel::WARN_LEVEL;
    rocksdb_logger_t l{std::make_shared<ReelLogger>(level)};

    rocksdb_options_set_info_log(opts, &l); /* copies the shared_ptr */
    rocksdb_options_set_info_log_level(opts, static_cast<int>(level));
}
