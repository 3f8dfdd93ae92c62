/*
 * sink/window.c: the ring of held events and the ack frontier; see
 * window.h.
 */
#include "sink/window.h"

#include <stdlib.h>
#include <string.h>

int sink_window_init(sink_window_t *w, size_t cap) {
    memset(w, 0, sizeof(*w));
    if ((w->items = calloc(cap, sizeof(*w->items))) == NULL)
        return -1;
    w->cap = cap;
    return 0;
}

static void item_free(sink_item_t *it) {
    free(it->bytes); /* the subject is in the same block */
    it->subject = NULL;
    it->bytes = NULL;
}

void sink_window_fini(sink_window_t *w) {
    if (w == NULL || w->items == NULL)
        return;
    for (uint64_t p = w->head; p < w->tail; p++)
        item_free(&w->items[p % w->cap]);
    free(w->items);
    memset(w, 0, sizeof(*w));
}

int sink_window_full(const sink_window_t *w, size_t len, size_t max_bytes) {
    if (w->tail - w->head >= w->cap)
        return 1;
    return w->bytes > 0 && w->bytes + len > max_bytes;
}

void sink_window_push(sink_window_t *w, uint64_t revision, int type,
                      uint8_t *block, size_t len) {
    sink_item_t *it = &w->items[w->tail % w->cap];

    it->revision = revision;
    it->type = type;
    it->bytes = block;
    it->subject = (char *)block + len;
    it->len = len;
    it->state = SINK_ITEM_QUEUED;
    w->tail++;
    w->bytes += len;
    w->last_revision = revision;
}

void sink_window_pass(sink_window_t *w, uint64_t revision) {
    if (revision > w->last_revision)
        w->last_revision = revision;
}

sink_item_t *sink_window_at(sink_window_t *w, uint64_t pos) {
    return &w->items[pos % w->cap];
}

size_t sink_window_count(const sink_window_t *w) {
    return (size_t)(w->tail - w->head);
}

size_t sink_window_queued(const sink_window_t *w) {
    return (size_t)(w->tail - w->next);
}

void sink_window_done(sink_window_t *w, uint64_t pos) {
    sink_item_t *it = &w->items[pos % w->cap];

    if (it->state == SINK_ITEM_DONE)
        return;
    it->state = SINK_ITEM_DONE;
    w->bytes -= it->len;
    item_free(it);
}

uint64_t sink_window_advance(sink_window_t *w) {
    while (w->head < w->tail &&
           w->items[w->head % w->cap].state == SINK_ITEM_DONE) {
        w->head++;
        if (w->next < w->head)
            w->next = w->head;
    }
    if (w->head < w->tail)
        return w->items[w->head % w->cap].revision - 1;
    return w->last_revision;
}

void sink_window_requeue(sink_window_t *w) {
    for (uint64_t p = w->head; p < w->next; p++) {
        sink_item_t *it = &w->items[p % w->cap];

        if (it->state == SINK_ITEM_TAKEN)
            it->state = SINK_ITEM_QUEUED;
    }
    w->next = w->head;
}

uint64_t sink_window_find_after(const sink_window_t *w, uint64_t rev) {
    uint64_t lo = w->head, hi = w->tail;

    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;

        if (w->items[mid % w->cap].revision <= rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}
