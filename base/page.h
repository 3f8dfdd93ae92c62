/*
 * base/page.h: one page of a paged read, bounded by bytes as well as by
 * count.
 *
 * A paged read (kv_list, kv_history, journal_read, journal_list_runs,
 * journal_list_recoverable, signals_list, wal_consumers) fills a page in
 * order and ends it at the first of: the end of what it lists, its count
 * limit, or the element that would take the page past max_bytes. The
 * byte budget keeps a response within what a client can receive (a gRPC
 * client takes 4 MiB by default), and keeps the server from building in
 * memory a page of a hundred 1 MiB values it could never send.
 *
 * Modules do not know the wire format, so the caller measures: size()
 * says how many bytes one element adds to the response, its framing
 * included. A page always takes its first element, whatever its size, so
 * a reader always moves forward; it is the caller's business that one
 * element fits (reeld refuses, at start, limits under which one could
 * not).
 *
 * Pure and thread-safe: a reel_page_t is read, never written.
 */
#ifndef REEL_BASE_PAGE_H
#define REEL_BASE_PAGE_H

#include <stddef.h>

/* The bytes elem adds to the response (e.g. its encoding and framing). */
typedef size_t (*reel_page_size_fn)(void *arg, const void *elem);

typedef struct reel_page {
    size_t max_bytes;       /* 0: no byte bound, only the count limit */
    reel_page_size_fn size; /* required when max_bytes > 0 */
    void *arg;
} reel_page_t;

/*
 * Whether elem goes on a page that holds `taken` elements adding up to
 * *used bytes: 1, and *used grows by its size; 0 if it would take the page
 * past max_bytes (never when taken is 0). p NULL or max_bytes 0: always 1.
 */
int reel_page_take(const reel_page_t *p, size_t taken, size_t *used,
                   const void *elem);

#endif
