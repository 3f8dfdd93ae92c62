/*
 * sink/event.c: events as JSON; see event.h.
 *
 * cJSON builds the tree; stored JSON goes in as a raw item once
 * base/json.h has checked it (the server stores only valid JSON, so the
 * string fallback is for an event stored by something else), and 64-bit
 * integers go in raw too, printed exactly instead of through a double.
 * Each record has the fields reelctl prints, by its names and in its
 * order (cli/ctl.c, cli/cmd_ws.c); test_sink_webhook.py compares the two.
 */
#include "sink/event.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "base/fault.h"
#include "base/json.h"
#include "base/text.h"
#include "reel/v1/wal.pb-c.h"
#include "sink/sign.h"

/*
 * An allocation that failed while an event was turned into JSON: cJSON's
 * adders say so only in a result nobody could check at every field, and
 * an event sent without some of its fields would be delivered as if
 * whole. So the allocators note it, and the event is out of memory as a
 * whole (sink_event_init installs them for cJSON; protobuf-c gets them
 * per unpack).
 */
static _Thread_local int json_oom;

static void *json_malloc(size_t n) {
    void *p = REEL_FAULT("sink.event_alloc") ? NULL : malloc(n);

    if (p == NULL)
        json_oom = 1;
    return p;
}

static void *pb_alloc(void *data, size_t n) {
    (void)data;
    return json_malloc(n);
}

static void pb_free(void *data, void *p) {
    (void)data;
    free(p);
}

static ProtobufCAllocator pb_allocator = {pb_alloc, pb_free, NULL};

void sink_event_init(void) {
    cJSON_Hooks h = {json_malloc, free};

    cJSON_InitHooks(&h);
}

/* item into o under k, or freed: the add fails only short of memory (or
 * with o missing, for the same reason), which json_oom says already. */
static void add_item(cJSON *o, const char *k, cJSON *item) {
    if (item != NULL && (o == NULL || !cJSON_AddItemToObject(o, k, item)))
        cJSON_Delete(item);
}

static void add_u64(cJSON *o, const char *k, uint64_t v) {
    char buf[24];

    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    cJSON_AddRawToObject(o, k, buf);
}

static void add_i64(cJSON *o, const char *k, int64_t v) {
    char buf[24];

    snprintf(buf, sizeof(buf), "%" PRId64, v);
    cJSON_AddRawToObject(o, k, buf);
}

/* Stored JSON as it is; "" (none) as null. */
static void add_json(cJSON *o, const char *k, const char *text) {
    if (text == NULL || *text == '\0')
        cJSON_AddNullToObject(o, k);
    else if (reel_json_validate(text, strlen(text), NULL, NULL) == 0)
        cJSON_AddRawToObject(o, k, text);
    else
        cJSON_AddStringToObject(o, k, text);
}

static const char *enum_name(const ProtobufCEnumDescriptor *d, int v) {
    const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(d, v);

    return e != NULL ? e->name : "UNKNOWN";
}

static cJSON *run_json(const Reel__V1__Run *r) {
    cJSON *o = cJSON_CreateObject(), *labels = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "run_id", r->run_id);
    cJSON_AddStringToObject(o, "app", r->app);
    cJSON_AddStringToObject(o, "user", r->user);
    cJSON_AddStringToObject(o, "session", r->session);
    cJSON_AddStringToObject(o, "invocation_id", r->invocation_id);
    cJSON_AddStringToObject(
        o, "status", enum_name(&reel__v1__run__status__descriptor, r->status));
    add_u64(o, "next_seq", r->next_seq);
    cJSON_AddStringToObject(o, "lease_owner", r->lease_owner);
    add_u64(o, "lease_epoch", r->lease_epoch);
    add_i64(o, "lease_expires_at_ms", r->lease_expires_at_ms);
    cJSON_AddStringToObject(o, "waiting_on", r->waiting_on);
    for (size_t i = 0; i < r->n_labels; i++)
        cJSON_AddStringToObject(labels, r->labels[i]->key,
                                r->labels[i]->value);
    add_item(o, "labels", labels);
    add_json(o, "result", r->result);
    add_i64(o, "created_at_ms", r->created_at_ms);
    add_i64(o, "updated_at_ms", r->updated_at_ms);
    add_i64(o, "ended_at_ms", r->ended_at_ms);
    cJSON_AddBoolToObject(o, "resumed", r->resumed);
    add_u64(o, "attempt", r->attempt);
    add_i64(o, "not_before_ms", r->not_before_ms);
    cJSON_AddStringToObject(o, "reason", r->reason);
    return o;
}

static cJSON *entry_json(const Reel__V1__JournalEntry *e) {
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "run_id", e->run_id);
    add_u64(o, "seq", e->seq);
    cJSON_AddStringToObject(o, "kind", e->kind);
    add_json(o, "payload", e->payload);
    cJSON_AddStringToObject(o, "idempotency_key", e->idempotency_key);
    add_u64(o, "lease_epoch", e->lease_epoch);
    add_u64(o, "revision", e->revision);
    add_i64(o, "ts_ms", e->ts_ms);
    return o;
}

static cJSON *value_json(const Reel__V1__ValueEvent *v) {
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(
        o, "type",
        enum_name(&reel__v1__value_event__type__descriptor, v->type));
    cJSON_AddStringToObject(o, "namespace", v->namespace_);
    cJSON_AddStringToObject(o, "key", v->key);
    add_json(o, "value", v->value);
    add_u64(o, "version", v->version);
    add_json(o, "prev_value", v->prev_value);
    add_u64(o, "prev_version", v->prev_version);
    cJSON_AddBoolToObject(o, "deleted", v->deleted);
    add_u64(o, "revision", v->revision);
    add_i64(o, "ts_ms", v->ts_ms);
    cJSON_AddStringToObject(o, "writer", v->writer);
    return o;
}

static cJSON *signal_json(const Reel__V1__Signal *s) {
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "run_id", s->run_id);
    cJSON_AddStringToObject(o, "name", s->name);
    add_json(o, "payload", s->payload);
    cJSON_AddStringToObject(o, "signal_id", s->signal_id);
    add_u64(o, "seq", s->seq);
    add_u64(o, "revision", s->revision);
    add_i64(o, "sent_at_ms", s->sent_at_ms);
    add_i64(o, "consumed_at_ms", s->consumed_at_ms);
    add_u64(o, "journal_seq", s->journal_seq);
    cJSON_AddBoolToObject(o, "scheduled", s->scheduled);
    add_i64(o, "deliver_at_ms", s->deliver_at_ms);
    return o;
}

/* The record, never the bytes: the digest in hex, as reelctl prints it. */
static cJSON *artifact_json(const Reel__V1__Artifact *a) {
    cJSON *o = cJSON_CreateObject(), *meta = cJSON_CreateObject();
    char sha[65] = "";

    if (a->sha256.len == 32)
        reel_hex(a->sha256.data, 32, sha);
    cJSON_AddStringToObject(o, "namespace", a->namespace_);
    cJSON_AddStringToObject(o, "key", a->key);
    add_u64(o, "version", a->version);
    add_u64(o, "size", a->size);
    cJSON_AddStringToObject(o, "sha256", sha);
    cJSON_AddStringToObject(o, "content_type", a->content_type);
    for (size_t i = 0; i < a->n_metadata; i++)
        cJSON_AddStringToObject(meta, a->metadata[i]->key,
                                a->metadata[i]->value);
    add_item(o, "metadata", meta);
    add_u64(o, "revision", a->revision);
    add_i64(o, "created_at_ms", a->created_at_ms);
    add_i64(o, "updated_at_ms", a->updated_at_ms);
    cJSON_AddBoolToObject(o, "deleted", a->deleted);
    add_u64(o, "chunk_size", a->chunk_size);
    return o;
}

static cJSON *data_json(const sink_item_t *it, int64_t *ts_ms) {
    Reel__V1__Event *ev =
        reel__v1__event__unpack(&pb_allocator, it->len, it->bytes);
    cJSON *o = cJSON_CreateObject();

    if (o == NULL) {
        reel__v1__event__free_unpacked(ev, &pb_allocator);
        return NULL;
    }
    add_u64(o, "revision", it->revision);
    cJSON_AddStringToObject(o, "subject", it->subject);
    cJSON_AddStringToObject(
        o, "type", enum_name(&reel__v1__event__type__descriptor, it->type));
    if (ev == NULL) {
        char *b64 = json_oom ? NULL : sink_base64(it->bytes, it->len);

        if (b64 == NULL)
            json_oom = 1; /* not undecodable: unread for want of memory */
        cJSON_AddBoolToObject(o, "undecodable", 1);
        cJSON_AddStringToObject(o, "event", b64 != NULL ? b64 : "");
        free(b64);
        return o;
    }
    add_i64(o, "ts_ms", ev->ts_ms);
    if (ts_ms != NULL)
        *ts_ms = ev->ts_ms;
    switch (ev->body_case) {
    case REEL__V1__EVENT__BODY_ENTRY:
        add_item(o, "entry", entry_json(ev->entry));
        break;
    case REEL__V1__EVENT__BODY_RUN:
        add_item(o, "run", run_json(ev->run));
        break;
    case REEL__V1__EVENT__BODY_VALUE:
        add_item(o, "value", value_json(ev->value));
        break;
    case REEL__V1__EVENT__BODY_SIGNAL:
        add_item(o, "signal", signal_json(ev->signal));
        break;
    case REEL__V1__EVENT__BODY_ARTIFACT:
        add_item(o, "artifact", artifact_json(ev->artifact));
        break;
    default:
        break;
    }
    reel__v1__event__free_unpacked(ev, &pb_allocator);
    return o;
}

static char *print(cJSON *o, size_t *len) {
    char *s = o != NULL ? cJSON_PrintUnformatted(o) : NULL;

    cJSON_Delete(o);
    if (s != NULL && len != NULL)
        *len = strlen(s);
    return s;
}

const char *sink_event_type_name(int type) {
    switch (type) {
    case REEL__V1__EVENT__TYPE__JOURNAL_APPENDED:
        return "reel.journal_appended";
    case REEL__V1__EVENT__TYPE__RUN_CHANGED:
        return "reel.run_changed";
    case REEL__V1__EVENT__TYPE__VALUE_CHANGED:
        return "reel.value_changed";
    case REEL__V1__EVENT__TYPE__SIGNAL_SENT:
        return "reel.signal_sent";
    case REEL__V1__EVENT__TYPE__SIGNAL_CONSUMED:
        return "reel.signal_consumed";
    case REEL__V1__EVENT__TYPE__ARTIFACT_CHANGED:
        return "reel.artifact_changed";
    default:
        return "reel.event";
    }
}

char *sink_event_data(const sink_item_t *it, size_t *len, int64_t *ts_ms) {
    cJSON *o;
    char *text;

    json_oom = 0;
    o = data_json(it, ts_ms);
    text = print(o, len);
    if (json_oom) { /* some field went missing: none of it */
        free(text);
        return NULL;
    }
    return text;
}

/* ts_ms as RFC 3339 in UTC with milliseconds (0: now). */
static void rfc3339(int64_t ms, char *buf, size_t cap) {
    time_t secs;
    struct tm tm;
    size_t n;

    if (ms <= 0) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    secs = (time_t)(ms / 1000);
    gmtime_r(&secs, &tm);
    n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%03dZ", (int)(ms % 1000));
}

char *sink_event_wrap(int type, int64_t ts_ms, char *const *datas,
                      const size_t *lens, size_t n, int batch, size_t *len) {
    const char *tname = batch ? "reel.batch" : sink_event_type_name(type);
    char ts[40], head[160], *out, *p;
    size_t hlen, total;

    rfc3339(ts_ms, ts, sizeof(ts));
    hlen = (size_t)snprintf(head, sizeof(head),
                            "{\"type\":\"%s\",\"timestamp\":\"%s\",\"data\":",
                            tname, ts);
    total = hlen + (batch ? 2 + n : 0) + 2;
    for (size_t i = 0; i < n; i++)
        total += lens[i];
    if ((out = malloc(total)) == NULL)
        return NULL;
    memcpy(out, head, hlen);
    p = out + hlen;
    if (batch)
        *p++ = '[';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *p++ = ',';
        memcpy(p, datas[i], lens[i]);
        p += lens[i];
    }
    if (batch)
        *p++ = ']';
    *p++ = '}';
    *p = '\0';
    *len = (size_t)(p - out);
    return out;
}

char *sink_event_body(const sink_item_t *it, size_t *len) {
    int64_t ts = 0;
    size_t dlen;
    char *data = sink_event_data(it, &dlen, &ts), *body;

    if (data == NULL)
        return NULL;
    body = sink_event_wrap(it->type, ts, &data, &dlen, 1, 0, len);
    free(data);
    return body;
}
