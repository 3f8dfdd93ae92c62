/*
 * sink/event.h: an event as JSON, the way a webhook or a NATS message
 * carries it (private to sink/).
 *
 * One event's `data`:
 *
 *   {"revision": 42, "subject": "kv.shop.orders.1", "type": "VALUE_CHANGED",
 *    "ts_ms": 1764740000000, "value": { ...the module's record... }}
 *
 * the record under the name of the Event's body field (entry, run, value,
 * signal, artifact), with the fields reelctl prints, stored JSON (values,
 * payloads, results) embedded as stored, 64-bit numbers exact. A
 * request's body is the Standard Webhooks envelope:
 *
 *   {"type": "reel.value_changed", "timestamp": "2026-12-03T09:13:20.000Z",
 *    "data": {...}}
 *
 * and for a batch {"type": "reel.batch", "timestamp": <the last event's>,
 * "data": [{...}, ...]}. An event whose stored bytes do not decode keeps
 * revision, subject and type and says "undecodable": true with the bytes
 * in base64 under "event", so it is delivered, not dropped. Pure;
 * thread-safe.
 */
#ifndef REEL_SINK_EVENT_H
#define REEL_SINK_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "sink/window.h"

/* Installs the allocators that let sink_event_data tell an event it
 * could not write whole: once, before any thread renders events. */
void sink_event_init(void);

/* The `data` object of one event as JSON text, malloc'd (NULL: out of
 * memory, whichever of its fields it struck); *ts_ms (may be NULL) gets
 * the event's commit time. */
char *sink_event_data(const sink_item_t *it, size_t *len, int64_t *ts_ms);

/*
 * The envelope around n (>= 1) events' data texts: type is the first
 * event's (or reel.batch), timestamp ts_ms's; batch: data is an array,
 * even of one. malloc'd (NULL: out of memory).
 */
char *sink_event_wrap(int type, int64_t ts_ms, char *const *datas,
                      const size_t *lens, size_t n, int batch, size_t *len);

/* sink_event_data and sink_event_wrap for one event, not batched. */
char *sink_event_body(const sink_item_t *it, size_t *len);

/* "reel.value_changed" for VALUE_CHANGED; "reel.event" for a type it does
 * not know. */
const char *sink_event_type_name(int type);

#endif
