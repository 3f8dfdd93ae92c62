/*
 * wal/wal_int.h: the decoders of what the WAL stores, private to wal/ and
 * exposed for its fuzz target (fuzz/fuzz_wal_records.c): a damaged data
 * dir feeds them any bytes, and they must reject what is malformed, never
 * read past it. Any thread; no state.
 */
#ifndef REEL_WAL_WAL_INT_H
#define REEL_WAL_WAL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "wal/wal.h"

/*
 * An event record ('e' rev -> i64 ts_ms, u16 subject length, subject,
 * event bytes): points *subject and *event into rec. 0, or -1 if
 * malformed.
 */
int wal_record_split(const void *rec, size_t len, const char **subject,
                     size_t *subject_len, const uint8_t **event,
                     size_t *event_len);

/*
 * The record of consumer name ('c' name -> ...): fills *c (to
 * wal_consumer_fini). DATA_LOSS if corrupt, RESOURCE_EXHAUSTED out of
 * memory, each naming the consumer.
 */
reel_code_t wal_consumer_record_decode(const char *name, const void *rec,
                                       size_t len, wal_consumer_t *c,
                                       reel_status_t *st);

#endif
