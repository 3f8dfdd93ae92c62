/*
 * client/batch.h: what the consumer loop does without a server (private to
 * client/): splitting an EventBatch into its events, and the bookkeeping of
 * what was delivered, finished and acknowledged.
 *
 * Decoding reads the protobuf wire format directly: an EventBatch is field
 * 1 (length-delimited) once per event, and an event's bytes go to the
 * callback as the server stored them, so a sink can forward them without
 * decoding and encoding each one again. Of an event only revision (field
 * 1), subject (2) and type (3) are read; other fields are passed over, as
 * protobuf does with fields it does not know.
 */
#ifndef REEL_CLIENT_BATCH_H
#define REEL_CLIENT_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "client/client.h"

/* reel.v1.Event.Type.PROGRESS */
#define CLIENT_EVENT_PROGRESS 6

/* The events of one batch; they point into the message's bytes. */
typedef struct client_batch {
    reel_event_t *events;
    size_t n, cap;
} client_batch_t;

/*
 * Splits msg into b's events (PROGRESS ones included), replacing what b
 * held. 0, or -1 with why in err (a truncated or malformed message, an
 * event without a revision, revisions not ascending, or out of memory).
 */
int client_batch_decode(const uint8_t *msg, size_t len, client_batch_t *b,
                        char *err, size_t errlen);
void client_batch_fini(client_batch_t *b);

/*
 * Where one run of the consumer loop stands. Revisions only grow.
 *   delivered: the last event handed to the callback;
 *   finished:  everything handed out up to it is finished;
 *   seen:      nothing up to it is owed to the callback (events handed out,
 *              and PROGRESS: everything up to it was sent or filtered out);
 *   acked:     the last revision the server acknowledged.
 * What may be acknowledged: everything seen once all that was handed out
 * is finished, else what is finished.
 */
typedef struct client_cursor {
    uint64_t delivered, finished, seen, acked;
    uint64_t since_ack;     /* events handed out since the last ack */
    int64_t acked_at_ms;    /* when the last ack (or the run) began */
    uint64_t stream_last;   /* the last revision of the current stream */
} client_cursor_t;

/* A run starting at now_ms. */
void client_cursor_init(client_cursor_t *c, int64_t now_ms);

/* A new stream: its revisions start over from the server's cursor. */
void client_cursor_new_stream(client_cursor_t *c);

/*
 * Takes batch b's events in order: PROGRESS moves seen; an event at or
 * below delivered (sent again after a reconnect) is dropped and counted in
 * *skipped; the others are moved to the front of b->events (b->n becomes
 * their number) for the callback. -1 (with err) if an event's revision
 * does not rise within the stream: the server never does that, and
 * passing over it could hide a lost event.
 */
int client_cursor_take(client_cursor_t *c, client_batch_t *b,
                       uint64_t *skipped, char *err, size_t errlen);

/*
 * The callback's answer for the events just handed out (up to last):
 * delivered becomes last, finished the answer if it is higher (at most
 * last).
 */
void client_cursor_finish(client_cursor_t *c, uint64_t last,
                          uint64_t answer);

/*
 * reel_consumer_finish's answer: everything handed out up to answer is
 * finished (an answer past delivered counts as delivered).
 */
void client_cursor_finish_async(client_cursor_t *c, uint64_t answer);

/*
 * The callback keeps what was handed out up to upto and gives the rest
 * back: delivered, finished and seen come down to upto (at most), so the
 * events above it are handed out again when a new stream sends them and
 * nothing above it is acknowledged meanwhile. upto must be at least what
 * was delivered before the last batch: what was acknowledged stays so.
 */
void client_cursor_hand_back(client_cursor_t *c, uint64_t upto);

/* The revision that may be acknowledged now (0: none above acked). */
uint64_t client_cursor_ackable(const client_cursor_t *c);

/* Whether an ack is due at now_ms: something to acknowledge, and every
 * events handed out since the last ack or interval_ms passed. */
int client_cursor_ack_due(const client_cursor_t *c, int64_t now_ms,
                          uint64_t every, int64_t interval_ms);

/* The server acknowledged revision at now_ms. */
void client_cursor_acked(client_cursor_t *c, uint64_t revision,
                         int64_t now_ms);

#endif
