/*
 * reactor/dispatch.c: reading runs from their wire bytes, the claimable
 * rules, dispatch ids and bodies, the table of dispatches; see dispatch.h.
 *
 * The scanner reads protobuf's wire format directly (varints, and
 * length-delimited fields; 32- and 64-bit fixed fields are skipped). It
 * checks every length against the bytes left, so malformed input is an
 * error, never a read past the end.
 */
#include "reactor/dispatch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

/* ---- The wire format -------------------------------------------------------- */

typedef struct field {
    uint32_t num;
    int wire;          /* 0 varint, 1 fixed64, 2 bytes, 5 fixed32 */
    uint64_t v;        /* a varint's value */
    const uint8_t *p;  /* bytes' start */
    size_t n;          /* bytes' length */
} field_t;

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;

    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        v |= (uint64_t)(**p & 0x7f) << shift;
        if ((*(*p)++ & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* The next field at *p; 1 at the end, 0 and *f, -1 when malformed. */
static int next_field(const uint8_t **p, const uint8_t *end, field_t *f) {
    uint64_t key, n;

    if (*p == end)
        return 1;
    if (varint(p, end, &key) != 0 || (key >> 3) == 0 ||
        (key >> 3) > UINT32_MAX)
        return -1;
    f->num = (uint32_t)(key >> 3);
    f->wire = (int)(key & 7);
    f->v = 0;
    f->p = NULL;
    f->n = 0;
    switch (f->wire) {
    case 0:
        return varint(p, end, &f->v);
    case 1:
        if (end - *p < 8)
            return -1;
        *p += 8;
        return 0;
    case 2:
        if (varint(p, end, &n) != 0 || n > (uint64_t)(end - *p))
            return -1;
        f->p = *p;
        f->n = (size_t)n;
        *p += n;
        return 0;
    case 5:
        if (end - *p < 4)
            return -1;
        *p += 4;
        return 0;
    default:
        return -1;
    }
}

int reactor_run_scan(const uint8_t *b, size_t len, reactor_run_t *out) {
    const uint8_t *p = b, *end = b + len;
    field_t f;
    int rc;

    memset(out, 0, sizeof(*out));
    out->run_id = out->app = out->reason = "";
    while ((rc = next_field(&p, end, &f)) == 0) {
        switch (f.num) {
        case 1:
            if (f.wire != 2)
                return -1;
            out->run_id = (const char *)f.p;
            out->run_id_len = f.n;
            break;
        case 2:
            if (f.wire != 2)
                return -1;
            out->app = (const char *)f.p;
            out->app_len = f.n;
            break;
        case 6:
            if (f.wire != 0)
                return -1;
            out->status = (int)(int32_t)f.v;
            break;
        case 9:
            if (f.wire != 0)
                return -1;
            out->epoch = f.v;
            break;
        case 18:
            if (f.wire != 0)
                return -1;
            out->attempt = (uint32_t)f.v;
            break;
        case 19:
            if (f.wire != 0)
                return -1;
            out->not_before_ms = (int64_t)f.v;
            break;
        case 20:
            if (f.wire != 2)
                return -1;
            out->reason = (const char *)f.p;
            out->reason_len = f.n;
            break;
        default:
            break;
        }
    }
    if (rc < 0 || out->run_id_len == 0 ||
        out->run_id_len > REACTOR_RUN_ID_MAX)
        return -1;
    return 0;
}

int reactor_event_scan(const uint8_t *b, size_t len, int *type,
                       int64_t *ts_ms, const uint8_t **run, size_t *run_len) {
    const uint8_t *p = b, *end = b + len;
    field_t f;
    int rc;

    *type = 0;
    *ts_ms = 0;
    *run = NULL;
    *run_len = 0;
    while ((rc = next_field(&p, end, &f)) == 0) {
        if (f.num == 3 && f.wire == 0)
            *type = (int)(int32_t)f.v;
        else if (f.num == 4 && f.wire == 0)
            *ts_ms = (int64_t)f.v;
        else if (f.num == 11 && f.wire == 2) {
            *run = f.p;
            *run_len = f.n;
        }
    }
    if (rc < 0)
        return -1;
    if (*type != REACTOR_RUN_CHANGED)
        *run = NULL;
    else if (*run == NULL)
        return -1; /* a run change without its run */
    return 0;
}

int reactor_recover_scan(const uint8_t *b, size_t len,
                         int (*fn)(void *arg, const uint8_t *run, size_t n),
                         void *arg, const char **next, size_t *next_len,
                         int *more) {
    const uint8_t *p = b, *end = b + len;
    field_t f;
    int rc;

    *next = "";
    *next_len = 0;
    *more = 0;
    while ((rc = next_field(&p, end, &f)) == 0) {
        if (f.num == 1 && f.wire == 2) {
            if (fn(arg, f.p, f.n) != 0)
                return -1;
        } else if (f.num == 2 && f.wire == 2) {
            *next = (const char *)f.p;
            *next_len = f.n;
        } else if (f.num == 3 && f.wire == 0)
            *more = f.v != 0;
    }
    return rc < 0 ? -1 : 0;
}

/* ---- Decisions ------------------------------------------------------------------ */

int reactor_event_claimable(const reactor_run_t *r, int64_t ts_ms) {
    return r->status == REACTOR_RUNNABLE && r->not_before_ms <= ts_ms;
}

int reactor_sweep_claimable(const reactor_run_t *r, int64_t now_ms) {
    if (r->status == REACTOR_RUNNING)
        return 1;
    return r->status == REACTOR_RUNNABLE && r->not_before_ms <= now_ms;
}

void reactor_dispatch_id(const reactor_run_t *r, char *buf, size_t cap) {
    snprintf(buf, cap, "%.*s:%" PRIu64 ":%" PRIu32, (int)r->run_id_len,
             r->run_id, r->epoch, r->attempt);
}

/* Adds name: the exact decimal v (cJSON's doubles would round past 2^53). */
static int add_u64(cJSON *o, const char *name, uint64_t v, int sign) {
    char buf[32];

    if (sign)
        snprintf(buf, sizeof(buf), "%" PRId64, (int64_t)v);
    else
        snprintf(buf, sizeof(buf), "%" PRIu64, v);
    return cJSON_AddRawToObject(o, name, buf) != NULL ? 0 : -1;
}

/* Adds name: the string s[0..n) (not NUL-terminated). */
static int add_str(cJSON *o, const char *name, const char *s, size_t n) {
    char *c = strndup(s, n);
    int rc;

    if (c == NULL)
        return -1;
    rc = cJSON_AddStringToObject(o, name, c) != NULL ? 0 : -1;
    free(c);
    return rc;
}

char *reactor_dispatch_body(const reactor_run_t *r, uint64_t revision,
                            int64_t ts_ms, int from_sweep, size_t *len) {
    cJSON *o = cJSON_CreateObject(), *d = NULL;
    char when[64], day[32], *text = NULL;
    time_t secs;
    struct tm tm;

    if (ts_ms < 0)
        ts_ms = 0;
    secs = (time_t)(ts_ms / 1000);
    gmtime_r(&secs, &tm);
    strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when, sizeof(when), "%s.%03dZ", day, (int)(ts_ms % 1000));
    if (o == NULL ||
        cJSON_AddStringToObject(o, "type", "reel.run_claimable") == NULL ||
        cJSON_AddStringToObject(o, "timestamp", when) == NULL ||
        (d = cJSON_AddObjectToObject(o, "data")) == NULL ||
        add_str(d, "run_id", r->run_id, r->run_id_len) != 0 ||
        add_str(d, "app", r->app, r->app_len) != 0 ||
        add_u64(d, "attempt", r->attempt, 0) != 0 ||
        add_u64(d, "epoch", r->epoch, 0) != 0 ||
        add_str(d, "reason", r->reason, r->reason_len) != 0 ||
        add_u64(d, "not_before_ms", (uint64_t)r->not_before_ms, 1) != 0 ||
        add_u64(d, "revision", revision, 0) != 0 ||
        cJSON_AddStringToObject(d, "source", from_sweep ? "sweep" : "event") ==
            NULL)
        goto out;
    text = cJSON_PrintUnformatted(o);
    if (text != NULL)
        *len = strlen(text);
out:
    cJSON_Delete(o);
    return text;
}

/* ---- The table --------------------------------------------------------------------- */

reactor_dispatch_t *reactor_table_find(reactor_table_t *t, const char *id) {
    reactor_dispatch_t *d = NULL;

    HASH_FIND_STR(t->by_id, id, d);
    return d;
}

static int add_pos(reactor_dispatch_t *d, uint64_t pos) {
    if (pos == UINT64_MAX)
        return 0;
    if (d->n_pos == d->cap_pos) {
        size_t cap = d->cap_pos ? d->cap_pos * 2 : 1;
        uint64_t *p = realloc(d->pos, cap * sizeof(*p));

        if (p == NULL)
            return -1;
        d->pos = p;
        d->cap_pos = cap;
    }
    d->pos[d->n_pos++] = pos;
    return 0;
}

reactor_dispatch_t *reactor_table_offer(reactor_table_t *t,
                                        const reactor_run_t *r, size_t app,
                                        uint64_t pos, uint64_t revision,
                                        int64_t ts_ms, int *added) {
    char id[REACTOR_ID_MAX];
    reactor_dispatch_t *d;

    *added = 0;
    reactor_dispatch_id(r, id, sizeof(id));
    if ((d = reactor_table_find(t, id)) != NULL)
        return add_pos(d, pos) == 0 ? d : NULL;
    if ((d = calloc(1, sizeof(*d))) == NULL)
        return NULL;
    memcpy(d->id, id, sizeof(id));
    memcpy(d->run_id, r->run_id, r->run_id_len);
    d->app = app;
    if ((d->body = reactor_dispatch_body(r, revision, ts_ms,
                                         pos == UINT64_MAX, &d->len)) ==
            NULL ||
        add_pos(d, pos) != 0) {
        reactor_dispatch_free(d);
        return NULL;
    }
    HASH_ADD_STR(t->by_id, id, d);
    if (t->last != NULL)
        t->last->next = d;
    else
        t->first = d;
    t->last = d;
    t->n++;
    *added = 1;
    return d;
}

void reactor_table_remove(reactor_table_t *t, reactor_dispatch_t *d) {
    reactor_dispatch_t **pp = &t->first, *prev = NULL;

    HASH_DEL(t->by_id, d);
    for (; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            if (t->last == d)
                t->last = prev;
            t->n--;
            break;
        }
    }
    d->next = NULL;
}

void reactor_dispatch_free(reactor_dispatch_t *d) {
    if (d == NULL)
        return;
    if (d->easy != NULL)
        curl_easy_cleanup(d->easy);
    curl_slist_free_all(d->hdrs);
    free(d->pos);
    free(d->body);
    free(d);
}

void reactor_table_fini(reactor_table_t *t) {
    while (t->first != NULL) {
        reactor_dispatch_t *d = t->first;

        reactor_table_remove(t, d);
        reactor_dispatch_free(d);
    }
    memset(t, 0, sizeof(*t));
}

/* ---- Events held ------------------------------------------------------------------ */

reactor_dispatch_t *reactor_hold(reactor_table_t *t, sink_window_t *w,
                                 const reactor_run_t *r, size_t app,
                                 uint64_t revision, int type, int64_t ts_ms,
                                 int *added) {
    /* The window's item owns a block; an empty subject is enough. */
    uint8_t *block = calloc(1, 1);
    reactor_dispatch_t *d;

    *added = 0;
    if (block == NULL)
        return NULL;
    if ((d = reactor_table_offer(t, r, app, w->tail, revision, ts_ms,
                                 added)) == NULL) {
        free(block);
        return NULL;
    }
    sink_window_push(w, revision, type, block, 0);
    /* The dispatch settles it; nothing takes it from the window's queue. */
    sink_window_at(w, w->tail - 1)->state = SINK_ITEM_TAKEN;
    w->next = w->tail;
    return d;
}

void reactor_settle(reactor_table_t *t, sink_window_t *w,
                    reactor_dispatch_t *d) {
    for (size_t i = 0; i < d->n_pos; i++)
        sink_window_done(w, d->pos[i]);
    reactor_table_remove(t, d);
}
