/*
 * api/convert.h: module records to protobuf messages (private to api/).
 * The messages point into the records: valid while the records are.
 */
#ifndef REEL_API_CONVERT_H
#define REEL_API_CONVERT_H

#include "reel/v1/journal.pb-c.h"
#include "reel/v1/kv.pb-c.h"
#include "reel/v1/signals.pb-c.h"
#include "reel/v1/wal.pb-c.h"
#include "journal/journal.h"
#include "kv/kv.h"
#include "signals/signals.h"
#include "store/store.h"

void api_value_event_to_pb(const kv_event_t *ev, Reel__V1__ValueEvent *pb);
void api_entry_to_pb(const journal_entry_t *e, Reel__V1__JournalEntry *m);
void api_signal_to_pb(const signal_t *g, Reel__V1__Signal *m);

/* A Run message; its labels need arrays of their own. */
typedef struct api_run_pb {
    Reel__V1__Run msg;
    Reel__V1__Run__LabelsEntry *entries;
    Reel__V1__Run__LabelsEntry **ptrs;
} api_run_pb_t;

/* 0, or -1 if out of memory; call api_run_pb_fini either way. */
int api_run_to_pb(const run_t *r, api_run_pb_t *pb);
void api_run_pb_fini(api_run_pb_t *pb);

/* ---- For the modules' WAL encoders (api/publish.c) ----------------------- */

/* A change its module's decoder did not take (decoded: what it answered):
 * DATA_LOSS when it did not decode (< 0), INTERNAL for a change type it
 * does not know (0). */
reel_code_t api_change_unknown(const store_change_t *c, int decoded,
                               reel_status_t *st);

/* Sets ev's revision, ts_ms and subject (printed from fmt into *subject)
 * and packs it into *bytes: OK, or RESOURCE_EXHAUSTED with both NULL. */
reel_code_t api_event_pack(const store_change_t *c, Reel__V1__Event *ev,
                           char **subject, uint8_t **bytes, size_t *len,
                           reel_status_t *st, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

#endif
