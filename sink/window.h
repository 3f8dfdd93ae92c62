/*
 * sink/window.h: the events a sink holds, in revision order, and the
 * revision it may acknowledge (reel-sink's and reel-reactor's).
 *
 * A ring of items: the consumer loop's callback pushes each event it
 * receives at the tail; the engine takes them from `next` in order (alone
 * or several to a request) and marks each done once it is delivered or
 * recorded as a dead letter, in any order; done items leave from the head.
 * The frontier, the revision the sink may acknowledge, is the highest
 * below which everything is done:
 *
 *   head item pending:  its revision - 1
 *   window empty:       the last revision pushed or passed over
 *
 * so in concurrent mode an event that keeps failing holds the cursor while
 * the ones after it are delivered, and at most `cap` items (and
 * max_bytes of undone events) are held at once: the callback waits for
 * room, which stops the sink reading its stream and lets gRPC's flow
 * control keep the rest in reel (for a while: see sink.h).
 *
 * Positions only grow (uint64). Not thread-safe: the runner holds its lock
 * around every call.
 */
#ifndef REEL_SINK_WINDOW_H
#define REEL_SINK_WINDOW_H

#include <stddef.h>
#include <stdint.h>

typedef enum sink_item_state {
    SINK_ITEM_QUEUED, /* waiting for the engine */
    SINK_ITEM_TAKEN,  /* in a request, or waiting to be retried */
    SINK_ITEM_DONE    /* delivered or dead-lettered */
} sink_item_state_t;

typedef struct sink_item {
    uint64_t revision;
    int type;          /* reel.v1.Event.Type */
    char *subject;     /* NUL-terminated, inside the bytes' block */
    uint8_t *bytes;    /* the stored reel.v1.Event, then the subject */
    size_t len;
    sink_item_state_t state;
} sink_item_t;

typedef struct sink_window {
    sink_item_t *items;
    size_t cap;
    uint64_t head, next, tail; /* held: [head, tail); queued: [next, tail) */
    uint64_t last_revision;    /* pushed or passed over */
    size_t bytes;              /* of the events not done */
} sink_window_t;

/* 0, or -1 when out of memory. */
int sink_window_init(sink_window_t *w, size_t cap);
void sink_window_fini(sink_window_t *w);

/* Whether an event of len bytes must wait: the ring is full, or it would
 * take the undone bytes past max_bytes (an empty window takes any one). */
int sink_window_full(const sink_window_t *w, size_t len, size_t max_bytes);

/* Pushes an event. block is one malloc'd block of len event bytes and then
 * the NUL-terminated subject; the window takes it. Its revision must be
 * above every earlier one. The caller checked room. */
void sink_window_push(sink_window_t *w, uint64_t revision, int type,
                      uint8_t *block, size_t len);

/* A revision the sink passes over (filtered out): done at once. */
void sink_window_pass(sink_window_t *w, uint64_t revision);

sink_item_t *sink_window_at(sink_window_t *w, uint64_t pos);
size_t sink_window_count(const sink_window_t *w);
size_t sink_window_queued(const sink_window_t *w);

/* Marks the item at pos done and frees its event. */
void sink_window_done(sink_window_t *w, uint64_t pos);

/* Frees the done items at the head; returns the frontier. */
uint64_t sink_window_advance(sink_window_t *w);

/* Every taken item that is not done is queued again, from the head: for
 * an engine that starts over (a NATS reconnect, a takeover). */
void sink_window_requeue(sink_window_t *w);

/* The position of the first held item with revision > rev (tail if none). */
uint64_t sink_window_find_after(const sink_window_t *w, uint64_t rev);

#endif
