/*
 * store/log_check.c: a hole in RocksDB's write-ahead log, found before
 * RocksDB replays it (see log_check.h for why).
 *
 * The log format (RocksDB's db/log_format.h): the file is cut in blocks
 * of 32 KiB; each block holds records and ends in zeros when fewer bytes
 * are left than a header. A record's header is its masked CRC-32C (4
 * bytes), its length (2, little-endian) and its type (1); a "recyclable"
 * record, the kind written when log files are reused, adds its log's
 * number (4), which the CRC covers with the type and the data. A commit
 * bigger than what is left of a block goes in fragments: FIRST,
 * MIDDLE..., LAST; one that fits is a FULL record.
 *
 * reel's logs are never reused (RocksDB turns reuse off under its
 * point-in-time recovery), so a previous use's record ends a log only
 * once a recyclable record of the log's own number has read: before
 * that, a recyclable type is a damaged byte, not a reused file's
 * leftovers, and a commit of either kind that reads after it is one the
 * replay would drop.
 * Zeros where a header belongs, with a commit after them, are damage
 * too: RocksDB's writer leaves none (only a block's last few bytes, too
 * few for a header, are zeros), and its reader skips the rest of such a
 * block, or stops there inside a commit's fragments. Zeros to the end of
 * a log are a write a crash cut short, in any log.
 */
#include "store/log_check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/rocks_crc.h"

#define BLOCK 32768
#define HEADER 7
#define RECYCLABLE_HEADER 11
#define MASK_DELTA 0xa282ead8u

enum {
    TYPE_ZERO = 0, /* with length 0: zeros (an mmap writer's preallocation) */
    TYPE_FULL = 1,
    TYPE_FIRST = 2,
    TYPE_LAST = 4,
    TYPE_RECYCLABLE_FULL = 5,
    TYPE_RECYCLABLE_FIRST = 6,
    TYPE_RECYCLABLE_LAST = 8,
};

typedef enum {
    REC_OK,
    REC_ZERO,  /* zeros where a header belongs */
    REC_OLD,   /* a previous use's record: the end of this one's */
    REC_SHORT, /* cut short by the file's end: a write the crash stopped */
    REC_BAD,   /* does not read */
} rec_t;

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint32_t unmask(uint32_t masked) {
    uint32_t rot = masked - MASK_DELTA;

    return (rot >> 17) | (rot << 15);
}

static int recyclable(unsigned type) {
    return type >= TYPE_RECYCLABLE_FULL && type <= TYPE_RECYCLABLE_LAST;
}

/* The record at buf[off], in a block that ends at lim (len: the file's
 * size); *size: its bytes, header included, when it reads. */
static rec_t record_at(const unsigned char *buf, size_t off, size_t lim,
                       size_t len, uint64_t number, size_t *size) {
    const unsigned char *h = buf + off;
    unsigned type = h[6], n = (unsigned)h[4] | (unsigned)h[5] << 8;
    size_t hs = recyclable(type) ? RECYCLABLE_HEADER : HEADER;
    uint32_t crc;

    if (type == TYPE_ZERO && n == 0)
        return REC_ZERO;
    if (lim - off < hs)
        return lim == len ? REC_SHORT : REC_BAD;
    if (hs == RECYCLABLE_HEADER && le32(h + 7) != (uint32_t)number)
        return REC_OLD;
    if (lim - off - hs < n)
        return lim == len ? REC_SHORT : REC_BAD;
    crc = store_crc32c(0, h + 6, hs - 6 + n);
    if (crc != unmask(le32(h)))
        return REC_BAD;
    *size = hs + n;
    return REC_OK;
}

static size_t block_end(size_t off, size_t len) {
    size_t end = (off / BLOCK + 1) * BLOCK;

    return end < len ? end : len;
}

/* A record at buf[off] that reads and begins a commit of this log (a
 * FULL or FIRST record, of the log's kind, or of either kind when
 * recycled is -1: no record read to tell): not a fragment continuing
 * one, nor a previous use's record. */
static int commit_at(const unsigned char *buf, size_t off, size_t len,
                     uint64_t number, int recycled, size_t *size) {
    unsigned type = buf[off + 6];
    int plain = type == TYPE_FULL || type == TYPE_FIRST;
    int reused = type == TYPE_RECYCLABLE_FULL || type == TYPE_RECYCLABLE_FIRST;
    int begins = recycled == 1 ? reused : recycled == 0 ? plain
                                                         : plain || reused;

    return begins &&
           record_at(buf, off, block_end(off, len), len, number, size) ==
               REC_OK;
}

/*
 * The first commit that begins past the record that does not read at
 * `from`, or UINT64_MAX. In the rest of its block, where that record's
 * length cannot be trusted, at any byte; then block by block, as
 * RocksDB's reader finds its way again: a block begins with a record's
 * header, and records follow one another to its end.
 */
static uint64_t later_commit(const unsigned char *buf, size_t len,
                             size_t from, uint64_t number, int recycled) {
    size_t lim = block_end(from, len), size;

    for (size_t q = from + 1; q + HEADER <= lim; q++)
        if (commit_at(buf, q, len, number, recycled, &size))
            return q;
    for (size_t b = lim; b < len; b = block_end(b, len)) {
        size_t off = b, end = block_end(b, len);

        while (end - off >= HEADER) {
            if (commit_at(buf, off, len, number, recycled, &size))
                return off;
            if (record_at(buf, off, end, len, number, &size) != REC_OK)
                break; /* on to the next block */
            off += size;
        }
    }
    return UINT64_MAX;
}

void store_log_scan(const unsigned char *buf, size_t len, uint64_t number,
                    store_log_scan_t *out) {
    size_t off = 0, size = 0;
    int recycled = -1; /* the kind of records, once one read */

    memset(out, 0, sizeof(*out));
    out->end = len;
    out->later = UINT64_MAX;
    while (off < len) {
        size_t lim = block_end(off, len);
        rec_t r;

        if (lim - off < HEADER) { /* the block's trailer */
            off = lim;
            continue;
        }
        r = record_at(buf, off, lim, len, number, &size);
        if (r == REC_OK) {
            if (recycled < 0)
                recycled = recyclable(buf[off + 6]);
            out->records++;
            off += size;
        } else {
            /* A previous use's record ends a reused log; in any other,
             * what reads as one is a damaged header. Zeros are damage
             * when a commit follows them (below); zeros to the end are
             * pages a crash left unwritten, a write cut short. */
            out->end = off;
            out->damaged = r == REC_BAD || (r == REC_OLD && recycled != 1);
            break;
        }
    }
    if (out->end < len)
        out->later = later_commit(buf, len, out->end, number, recycled);
    if (out->end < len && out->later != UINT64_MAX)
        out->damaged = 1;
}

/* ---- The data dir's logs ------------------------------------------------- */

typedef struct {
    uint64_t number;
    char name[32];
    store_log_scan_t scan;
} log_file_t;

static int by_number(const void *a, const void *b) {
    uint64_t x = ((const log_file_t *)a)->number,
             y = ((const log_file_t *)b)->number;

    return x < y ? -1 : x > y;
}

/* A RocksDB log's name: digits, then ".log". */
static int log_number(const char *name, uint64_t *out) {
    size_t n = strlen(name), digits = n > 4 ? n - 4 : 0;
    uint64_t v = 0;

    if (digits == 0 || digits > 19 || strcmp(name + digits, ".log") != 0)
        return 0;
    for (size_t i = 0; i < digits; i++) {
        if (name[i] < '0' || name[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *out = v;
    return 1;
}

static reel_code_t scan_file(const char *dir, log_file_t *f,
                             reel_status_t *st) {
    char path[4096];
    struct stat sb;
    void *map;
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, f->name);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &sb) != 0) {
        int e = errno;

        if (fd >= 0)
            close(fd);
        return reel_status_set(st, REEL_UNAVAILABLE, "read %s: %s", path,
                               strerror(e));
    }
    if (sb.st_size == 0) {
        close(fd);
        store_log_scan(NULL, 0, f->number, &f->scan);
        return REEL_OK;
    }
    map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return reel_status_set(st, REEL_UNAVAILABLE, "read %s: %s", path,
                               strerror(errno));
    madvise(map, (size_t)sb.st_size, MADV_SEQUENTIAL);
    store_log_scan(map, (size_t)sb.st_size, f->number, &f->scan);
    munmap(map, (size_t)sb.st_size);
    return REEL_OK;
}

reel_code_t store_logs_check(const char *dir, reel_status_t *st) {
    DIR *d = opendir(dir);
    struct dirent *e;
    log_file_t *files = NULL;
    size_t n = 0, cap = 0;
    reel_code_t rc = REEL_OK;

    if (d == NULL)
        return reel_status_set(st, REEL_UNAVAILABLE, "read %s: %s", dir,
                               strerror(errno));
    while ((e = readdir(d)) != NULL) {
        uint64_t number;

        if (!log_number(e->d_name, &number))
            continue;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 8;
            log_file_t *p = realloc(files, c * sizeof(*files));

            if (p == NULL) {
                rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                     "out of memory");
                goto out;
            }
            files = p, cap = c;
        }
        files[n].number = number;
        /* log_number() took at most 19 digits and ".log". */
        memcpy(files[n].name, e->d_name, strlen(e->d_name) + 1);
        n++;
    }
    if (n > 1)
        qsort(files, n, sizeof(*files), by_number);
    for (size_t i = 0; i < n && rc == REEL_OK; i++)
        rc = scan_file(dir, &files[i], st);
    for (size_t i = 0; i < n && rc == REEL_OK; i++) {
        const store_log_scan_t *s = &files[i].scan;

        if (s->later != UINT64_MAX) {
            rc = reel_status_set(
                st, REEL_DATA_LOSS,
                "the data dir is corrupted; refusing to open it: its "
                "write-ahead log %s has a record that does not read at byte "
                "%" PRIu64 ", and committed records after it (from byte "
                "%" PRIu64 ") that opening would drop; restore a backup",
                files[i].name, s->end, s->later);
            break;
        }
        if (!s->damaged)
            continue;
        for (size_t j = i + 1; j < n; j++)
            if (files[j].scan.records > 0) {
                rc = reel_status_set(
                    st, REEL_DATA_LOSS,
                    "the data dir is corrupted; refusing to open it: its "
                    "write-ahead log %s has a record that does not read at "
                    "byte %" PRIu64 ", and the later log %s holds commits "
                    "that opening would drop; restore a backup",
                    files[i].name, s->end, files[j].name);
                break;
            }
    }
out:
    closedir(d);
    free(files);
    return rc;
}
