/*
 * sink/state.h: what reel-sink keeps in reel itself (private to sink/).
 *
 * Nothing lives in a local file: a sink's cursor is its durable consumer
 * (sink.<name>), and the rest is in one KV namespace (reel-sink unless
 * --state-namespace says otherwise), so any machine can read, replay or
 * re-enable a sink:
 *
 *   disabled.<sink>            {"sink", "reason", "http_status", "revision",
 *                               "at_ms"}: the sink got 410 Gone; it
 *                               delivers nothing until `reel-sink enable`
 *                               deletes the record.
 *   dead.<sink>.<revision>     one dead letter, the revision zero-padded to
 *                               20 digits so keys sort by revision:
 *                               {"sink", "revision", "subject", "type",
 *                                "attempts", "first_attempt_ms",
 *                                "last_attempt_ms", "last_error",
 *                                "event": base64 of the stored
 *                                reel.v1.Event} or, when the record
 *                               would not fit reeld's value limit,
 *                               "parts": N and
 *   deadpart.<sink>.<revision>.<i>  {"data": base64 of part i} (i < N),
 *                               each sized to fit that limit.
 *
 * Parts are written before their dead letter and deleted after it, so a
 * dead letter never lacks its parts (a crash between may leave parts
 * without a letter; the next dead letter of that revision overwrites them).
 * These records are writes like any other, so they are events too: every
 * sink leaves kv.<namespace>.> out unless deliver_own_records.
 *
 * Every call is a unary call on the client, retried while UNAVAILABLE
 * (writing the same record twice leaves the same record); errors come back
 * as reel statuses naming the record. Thread-safe (the client is).
 */
#ifndef REEL_SINK_STATE_H
#define REEL_SINK_STATE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/status.h"
#include "client/client.h"
#include "sink/window.h"

#define SINK_STATE_NAMESPACE "reel-sink"

typedef struct sink_dead {
    uint64_t revision;
    char *subject;
    int type;
    unsigned attempts;
    int64_t first_attempt_ms, last_attempt_ms;
    char *last_error;
    unsigned parts;  /* 0: the event is inline */
    uint8_t *bytes;  /* the event, once sink_state_dead_load read it */
    size_t len;
} sink_dead_t;

void sink_dead_fini(sink_dead_t *d);

/*
 * Stores it's dead letter. *value_max is reeld's value limit as last
 * learned (0: not yet, its default 1 MiB is assumed); when reeld refuses a
 * record naming a smaller limit, the letter is sized again for that one
 * and *value_max remembers it, so later letters fit at the first try. The
 * caller owns *value_max (one thread at a time). INVALID_ARGUMENT when no
 * split fits (a limit too small even for the letter without its event):
 * asking again would be refused again.
 */
reel_code_t sink_state_dead_put(reel_client_t *c, const char *ns,
                                const char *sink, const sink_item_t *it,
                                unsigned attempts, int64_t first_ms,
                                int64_t last_ms, const char *last_error,
                                size_t *value_max, reel_status_t *st);

/*
 * Lists the dead letters with from <= revision <= to, in revision order,
 * a page at a time: fn gets each (without its event bytes) and returns 0
 * to go on. OK, or the error of a read.
 */
reel_code_t sink_state_dead_list(reel_client_t *c, const char *ns,
                                 const char *sink, uint64_t from, uint64_t to,
                                 int (*fn)(void *arg, sink_dead_t *d),
                                 void *arg, reel_status_t *st);

/* Reads d's event bytes (inline or from its parts) into d. */
reel_code_t sink_state_dead_load(reel_client_t *c, const char *ns,
                                 const char *sink, sink_dead_t *d,
                                 reel_status_t *st);

/* Deletes the dead letter, then its parts. */
reel_code_t sink_state_dead_delete(reel_client_t *c, const char *ns,
                                   const char *sink, const sink_dead_t *d,
                                   reel_status_t *st);

reel_code_t sink_state_disable(reel_client_t *c, const char *ns,
                               const char *sink, const char *reason,
                               long http_status, uint64_t revision,
                               reel_status_t *st);

/* *reason: malloc'd when disabled, else NULL. */
reel_code_t sink_state_disabled(reel_client_t *c, const char *ns,
                                const char *sink, int *disabled,
                                char **reason, reel_status_t *st);

/* Deletes disabled.<sink>; *was says whether it existed. */
reel_code_t sink_state_enable(reel_client_t *c, const char *ns,
                              const char *sink, int *was, reel_status_t *st);

#endif
