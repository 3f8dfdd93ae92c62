/*
 * client/batch.c: EventBatch decoding and the consumer's cursor; see
 * batch.h.
 */
#include "client/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Wire format ----------------------------------------------------------
 *
 * A field is a key varint (number << 3 | wire type) and a value: a varint
 * (type 0), 8 bytes (1), a length varint and that many bytes (2), or 4
 * bytes (5). Groups (3, 4) are not proto3 and are refused.
 */

typedef struct rd {
    const uint8_t *p, *end, *start;
} rd_t;

static int rd_varint(rd_t *r, uint64_t *v) {
    uint64_t x = 0;

    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b;

        if (r->p == r->end)
            return -1;
        b = *r->p++;
        /* The tenth byte holds bit 63 alone. */
        if (shift == 63 && b > 1)
            return -1;
        x |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* One field: its number, wire type, and (types 0 and 2) its value. */
typedef struct field {
    uint32_t num;
    int wt;
    uint64_t v;
    const uint8_t *data;
    size_t len;
} field_t;

static int rd_field(rd_t *r, field_t *f) {
    uint64_t key;

    if (rd_varint(r, &key) != 0 || (key >> 3) == 0 || (key >> 3) > UINT32_MAX)
        return -1;
    f->num = (uint32_t)(key >> 3);
    f->wt = (int)(key & 7);
    switch (f->wt) {
    case 0:
        return rd_varint(r, &f->v);
    case 1:
    case 5: {
        size_t n = f->wt == 1 ? 8 : 4;

        if ((size_t)(r->end - r->p) < n)
            return -1;
        r->p += n;
        return 0;
    }
    case 2:
        if (rd_varint(r, &f->v) != 0 || f->v > (uint64_t)(r->end - r->p))
            return -1;
        f->data = r->p;
        f->len = (size_t)f->v;
        r->p += f->len;
        return 0;
    default:
        return -1;
    }
}

/* An Event's revision, subject and type; the rest is passed over. */
static int decode_event(const uint8_t *p, size_t len, reel_event_t *ev) {
    rd_t r = {p, p + len, p};
    field_t f;

    memset(ev, 0, sizeof(*ev));
    ev->bytes = p;
    ev->len = len;
    ev->subject = "";
    while (r.p < r.end) {
        if (rd_field(&r, &f) != 0)
            return -1;
        if ((f.num == 1 || f.num == 3) && f.wt != 0)
            return -1;
        if (f.num == 2 && f.wt != 2)
            return -1;
        if (f.num == 1)
            ev->revision = f.v;
        else if (f.num == 3)
            ev->type = (int)(int32_t)f.v; /* an enum is an int32 */
        else if (f.num == 2) {
            ev->subject = (const char *)f.data;
            ev->subject_len = f.len;
        }
    }
    return 0;
}

int client_batch_decode(const uint8_t *msg, size_t len, client_batch_t *b,
                        char *err, size_t errlen) {
    rd_t r = {msg, msg + len, msg};
    field_t f;

    b->n = 0;
    while (r.p < r.end) {
        size_t at = (size_t)(r.p - r.start);

        if (rd_field(&r, &f) != 0) {
            snprintf(err, errlen, "malformed EventBatch (%zu bytes): bad "
                     "field at byte %zu", len, at);
            return -1;
        }
        if (f.num != 1)
            continue;
        if (f.wt != 2) {
            snprintf(err, errlen, "malformed EventBatch: events (field 1) "
                     "at byte %zu has wire type %d, not 2", at, f.wt);
            return -1;
        }
        if (b->n == b->cap) {
            size_t cap = b->cap ? b->cap * 2 : 64;
            reel_event_t *e = realloc(b->events, cap * sizeof(*e));

            if (e == NULL) {
                snprintf(err, errlen, "out of memory decoding an EventBatch "
                         "of %zu bytes", len);
                return -1;
            }
            b->events = e;
            b->cap = cap;
        }
        if (decode_event(f.data, f.len, &b->events[b->n]) != 0) {
            snprintf(err, errlen, "malformed Event at byte %zu of an "
                     "EventBatch (%zu bytes)", at, len);
            return -1;
        }
        if (b->events[b->n].revision == 0 &&
            b->events[b->n].type != CLIENT_EVENT_PROGRESS) {
            snprintf(err, errlen, "malformed Event at byte %zu of an "
                     "EventBatch: no revision", at);
            return -1;
        }
        b->n++;
    }
    return 0;
}

void client_batch_fini(client_batch_t *b) {
    if (b == NULL)
        return;
    free(b->events);
    memset(b, 0, sizeof(*b));
}

/* ---- The cursor ---------------------------------------------------------- */

void client_cursor_init(client_cursor_t *c, int64_t now_ms) {
    memset(c, 0, sizeof(*c));
    c->acked_at_ms = now_ms;
}

void client_cursor_new_stream(client_cursor_t *c) {
    c->stream_last = 0;
}

int client_cursor_take(client_cursor_t *c, client_batch_t *b,
                       uint64_t *skipped, char *err, size_t errlen) {
    size_t kept = 0;

    for (size_t i = 0; i < b->n; i++) {
        reel_event_t *ev = &b->events[i];

        /* A PROGRESS is not ordered with the events around it: the server
         * reads its cursor, and a live event may be queued before it. It
         * says only that nothing up to it is owed. */
        if (ev->type == CLIENT_EVENT_PROGRESS) {
            if (ev->revision > c->seen)
                c->seen = ev->revision;
            continue;
        }
        if (ev->revision <= c->stream_last) {
            snprintf(err, errlen, "the server sent revision %llu after "
                     "%llu on one stream",
                     (unsigned long long)ev->revision,
                     (unsigned long long)c->stream_last);
            return -1;
        }
        c->stream_last = ev->revision;
        if (ev->revision <= c->delivered) {
            (*skipped)++;
            continue;
        }
        b->events[kept++] = *ev;
        c->since_ack++;
    }
    b->n = kept;
    return 0;
}

void client_cursor_finish(client_cursor_t *c, uint64_t last,
                          uint64_t answer) {
    if (last <= c->delivered)
        return;
    c->delivered = last;
    if (last > c->seen)
        c->seen = last;
    if (answer > last)
        answer = last;
    if (answer > c->finished)
        c->finished = answer;
}

void client_cursor_finish_async(client_cursor_t *c, uint64_t answer) {
    if (answer > c->delivered)
        answer = c->delivered;
    if (answer > c->finished)
        c->finished = answer;
}

void client_cursor_hand_back(client_cursor_t *c, uint64_t upto) {
    if (upto >= c->delivered)
        return;
    c->delivered = upto;
    if (c->finished > upto)
        c->finished = upto;
    /* A PROGRESS past upto no longer says nothing is owed: the events
     * given back are. */
    if (c->seen > upto)
        c->seen = upto;
}

uint64_t client_cursor_ackable(const client_cursor_t *c) {
    uint64_t r = c->finished >= c->delivered ? c->seen : c->finished;

    return r > c->acked ? r : 0;
}

int client_cursor_ack_due(const client_cursor_t *c, int64_t now_ms,
                          uint64_t every, int64_t interval_ms) {
    if (client_cursor_ackable(c) == 0)
        return 0;
    return c->since_ack >= every || now_ms - c->acked_at_ms >= interval_ms;
}

void client_cursor_acked(client_cursor_t *c, uint64_t revision,
                         int64_t now_ms) {
    if (revision > c->acked)
        c->acked = revision;
    c->since_ack = 0;
    c->acked_at_ms = now_ms;
}
