/*
 * store/log_check.h: RocksDB's write-ahead log files read before RocksDB
 * opens them, for a hole: a damaged record with committed records after
 * it (private to store/).
 *
 * RocksDB recovers "to a point in time": it replays each log up to the
 * first record that does not read, and drops everything after, committed
 * or not, logging a warning. After a crash that point is the end of what
 * was written: reel syncs every commit before it answers, so at most the
 * one commit that was never acknowledged is cut short there, and what
 * follows in a reused (recycled) log file is its previous use's records,
 * which carry another log number. A damaged byte in the middle of a log
 * (a bad sector, a bad copy) ends the replay too, and then every commit
 * after it that reel acknowledged would vanish, with the data dir opening
 * as if nothing had happened. What tells the two apart is what follows:
 * a record of this log's own number that reads is a commit the replay
 * would drop.
 */
#ifndef REEL_STORE_LOG_CHECK_H
#define REEL_STORE_LOG_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* One log file's records, as RocksDB's log reader would take them. */
typedef struct {
    uint64_t records;  /* records that read, up to the end */
    uint64_t end;      /* the byte where reading ends */
    int damaged;       /* the end is a record that does not read (not the
                          file's end, nor a previous use's record) */
    uint64_t later;    /* a record of this log that reads past `end`, or
                          UINT64_MAX when there is none */
} store_log_scan_t;

/* Reads the log in buf[0..len), file number `number`, into *out. */
void store_log_scan(const unsigned char *buf, size_t len, uint64_t number,
                    store_log_scan_t *out);

/*
 * Checks every NNNNNN.log file in dir: OK, or DATA_LOSS "the data dir is
 * corrupted; refusing to open it: ..." naming the file and the bytes when
 * a log has a record that does not read followed by one that does, or
 * when a log ends on a damaged record and a later log holds records (its
 * commits came after the damage). UNAVAILABLE when a log cannot be read.
 */
reel_code_t store_logs_check(const char *dir, reel_status_t *st);

#endif
