/*
 * sink/state.c: dead letters and the disabled mark, as KV records in reel;
 * see state.h for the keys and why they are written in this order.
 */
#include "sink/state.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "reel/v1/kv.pb-c.h"
#include "sink/sign.h"

/* reeld's default --kv-max-value-bytes: what a dead letter's records are
 * sized for until reeld names its own limit (see learn_value_max). */
#define DEAD_VALUE_MAX_DEFAULT ((size_t)1 << 20)
/* {"data":""}: a part's bytes besides its base64. */
#define PART_OVERHEAD 11
/* Past this many parts a limit is too small to be worth splitting for:
 * the letter would cost more writes than it is worth (a 1 MiB event under
 * a 1 KiB limit is 1,400 of them). */
#define DEAD_PARTS_MAX 4096
#define LIST_PAGE 100

/* The reel code of a gRPC status code. */
static reel_code_t from_grpc(int g) {
    for (int c = 0; c < REEL_CODE__COUNT; c++)
        if (reel_code_grpc((reel_code_t)c) == g)
            return (reel_code_t)c;
    return REEL_INTERNAL;
}

static int64_t wall_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A unary call with a packed request; the reply's body on OK. */
static reel_code_t call(reel_client_t *c, const char *method,
                        const ProtobufCMessage *req, reel_reply_t *r,
                        const char *what, reel_status_t *st) {
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    int code;

    memset(r, 0, sizeof(*r));
    if (buf == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    protobuf_c_message_pack(req, buf);
    /* Each call here writes or reads whole records: sending one again
     * leaves the same record. */
    code = reel_client_unary_retry(c, method, buf, len, REEL_TIMEOUT_DEFAULT,
                                   r);
    free(buf);
    if (code != 0) {
        reel_code_t rc = reel_status_set(st, from_grpc(code), "%s: %s: %s",
                                         what, reel_grpc_code_name(code),
                                         r->details ? r->details : "");
        reel_reply_fini(r);
        return rc;
    }
    return REEL_OK;
}

static reel_code_t set_value(reel_client_t *c, const char *ns,
                             const char *key, const char *value,
                             reel_status_t *st) {
    Reel__V1__SetValueRequest req = REEL__V1__SET_VALUE_REQUEST__INIT;
    reel_reply_t r;
    char what[300];
    reel_code_t rc;

    req.namespace_ = (char *)ns;
    req.key = (char *)key;
    req.value = (char *)value;
    req.writer = "reel-sink";
    snprintf(what, sizeof(what), "writing %s/%s", ns, key);
    rc = call(c, "/reel.v1.KV/SetValue", &req.base, &r, what, st);
    reel_reply_fini(&r);
    return rc;
}

static reel_code_t delete_value(reel_client_t *c, const char *ns,
                                const char *key, int *existed,
                                reel_status_t *st) {
    Reel__V1__DeleteValueRequest req = REEL__V1__DELETE_VALUE_REQUEST__INIT;
    Reel__V1__DeleteValueResponse *resp;
    reel_reply_t r;
    char what[300];
    reel_code_t rc;

    req.namespace_ = (char *)ns;
    req.key = (char *)key;
    req.writer = "reel-sink";
    snprintf(what, sizeof(what), "deleting %s/%s", ns, key);
    if ((rc = call(c, "/reel.v1.KV/DeleteValue", &req.base, &r, what, st)) !=
        REEL_OK)
        return rc;
    resp = reel__v1__delete_value_response__unpack(NULL, r.len, r.body);
    if (existed != NULL)
        *existed = resp != NULL && resp->existed;
    reel__v1__delete_value_response__free_unpacked(resp, NULL);
    reel_reply_fini(&r);
    return REEL_OK;
}

/* The value of ns/key, malloc'd, or NULL when missing. */
static reel_code_t get_value(reel_client_t *c, const char *ns,
                             const char *key, char **value,
                             reel_status_t *st) {
    Reel__V1__GetValueRequest req = REEL__V1__GET_VALUE_REQUEST__INIT;
    Reel__V1__GetValueResponse *resp;
    reel_reply_t r;
    char what[300];
    reel_code_t rc;

    *value = NULL;
    req.namespace_ = (char *)ns;
    req.key = (char *)key;
    snprintf(what, sizeof(what), "reading %s/%s", ns, key);
    if ((rc = call(c, "/reel.v1.KV/GetValue", &req.base, &r, what, st)) !=
        REEL_OK)
        return rc;
    resp = reel__v1__get_value_response__unpack(NULL, r.len, r.body);
    reel_reply_fini(&r);
    if (resp == NULL)
        return reel_status_set(st, REEL_INTERNAL, "%s: a malformed answer",
                               what);
    if (resp->found && resp->entry != NULL &&
        (*value = strdup(resp->entry->value)) == NULL)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    reel__v1__get_value_response__free_unpacked(resp, NULL);
    return rc;
}

static void dead_key(char *buf, size_t cap, const char *sink, uint64_t rev) {
    snprintf(buf, cap, "dead.%s.%020" PRIu64, sink, rev);
}

static void part_key(char *buf, size_t cap, const char *sink, uint64_t rev,
                     unsigned i) {
    snprintf(buf, cap, "deadpart.%s.%020" PRIu64 ".%u", sink, rev, i);
}

/* Prints o and stores it at ns/key. */
static reel_code_t put_json(reel_client_t *c, const char *ns,
                            const char *key, cJSON *o, reel_status_t *st) {
    char *text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
    reel_code_t rc;

    if (text == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = set_value(c, ns, key, text, st);
    free(text);
    return rc;
}

/* The value limit an INVALID_ARGUMENT from reeld names ("value: N bytes
 * exceeds the limit of M bytes"), or 0 when it names none. */
static size_t learn_value_max(const char *msg) {
    const char *p = msg;
    size_t n, m;

    while ((p = strstr(p, "value: ")) != NULL) {
        p += strlen("value: ");
        if (sscanf(p, "%zu bytes exceeds the limit of %zu", &n, &m) == 2)
            return m;
    }
    return 0;
}

/* Stores the parts of it's event, each a value of at most max bytes. */
static reel_code_t put_parts(reel_client_t *c, const char *ns,
                             const char *sink, const sink_item_t *it,
                             size_t max, unsigned *parts, reel_status_t *st) {
    size_t each = max > PART_OVERHEAD ? (max - PART_OVERHEAD) / 4 * 3 : 0;
    reel_code_t rc = REEL_OK;
    char key[256];

    if (each == 0 || (it->len + each - 1) / each > DEAD_PARTS_MAX)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "dead letter of revision %" PRIu64 ": its "
                               "event of %zu bytes would need more than %d "
                               "parts under reeld's value limit of %zu bytes "
                               "(--kv-max-value-bytes)",
                               it->revision, it->len, DEAD_PARTS_MAX, max);
    *parts = (unsigned)((it->len + each - 1) / each);
    for (unsigned i = 0; i < *parts && rc == REEL_OK; i++) {
        size_t off = (size_t)i * each;
        size_t n = it->len - off < each ? it->len - off : each;
        cJSON *p = cJSON_CreateObject();
        char *b64 = sink_base64(it->bytes + off, n);

        if (b64 == NULL || p == NULL ||
            cJSON_AddStringToObject(p, "data", b64) == NULL)
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                 "out of memory");
        else {
            part_key(key, sizeof(key), sink, it->revision, i);
            rc = put_json(c, ns, key, p, st);
        }
        cJSON_Delete(p);
        free(b64);
    }
    return rc;
}

/* One try at storing the dead letter with values of at most max bytes:
 * its event inline when the whole record fits, else in parts. */
static reel_code_t dead_put_sized(reel_client_t *c, const char *ns,
                                  const char *sink, const sink_item_t *it,
                                  unsigned attempts, int64_t first_ms,
                                  int64_t last_ms, const char *last_error,
                                  size_t max, reel_status_t *st) {
    cJSON *o = cJSON_CreateObject();
    char key[256], rev[24], *b64 = NULL, *text = NULL;
    unsigned parts = 0;
    reel_code_t rc = REEL_OK;

    /* Every field or none: a letter stored without its event would move
     * the cursor past an event it lost. */
    snprintf(rev, sizeof(rev), "%" PRIu64, it->revision);
    if (o == NULL || cJSON_AddStringToObject(o, "sink", sink) == NULL ||
        cJSON_AddRawToObject(o, "revision", rev) == NULL ||
        cJSON_AddStringToObject(o, "subject", it->subject) == NULL ||
        cJSON_AddNumberToObject(o, "type", it->type) == NULL ||
        cJSON_AddNumberToObject(o, "attempts", attempts) == NULL ||
        cJSON_AddNumberToObject(o, "first_attempt_ms", (double)first_ms) ==
            NULL ||
        cJSON_AddNumberToObject(o, "last_attempt_ms", (double)last_ms) ==
            NULL ||
        cJSON_AddStringToObject(o, "last_error", last_error) == NULL ||
        (b64 = sink_base64(it->bytes, it->len)) == NULL ||
        cJSON_AddStringToObject(o, "event", b64) == NULL ||
        (text = cJSON_PrintUnformatted(o)) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (strlen(text) > max) {
        /* Measured as printed: escaping in the subject or the error
         * counts too. */
        free(text);
        text = NULL;
        cJSON_DeleteItemFromObjectCaseSensitive(o, "event");
        if ((rc = put_parts(c, ns, sink, it, max, &parts, st)) != REEL_OK)
            goto out;
        if (cJSON_AddNumberToObject(o, "parts", parts) == NULL ||
            (text = cJSON_PrintUnformatted(o)) == NULL) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                 "out of memory");
            goto out;
        }
    }
    dead_key(key, sizeof(key), sink, it->revision);
    rc = set_value(c, ns, key, text, st);
out:
    free(text);
    free(b64);
    cJSON_Delete(o);
    return rc;
}

reel_code_t sink_state_dead_put(reel_client_t *c, const char *ns,
                                const char *sink, const sink_item_t *it,
                                unsigned attempts, int64_t first_ms,
                                int64_t last_ms, const char *last_error,
                                size_t *value_max, reel_status_t *st) {
    size_t max = *value_max != 0 ? *value_max : DEAD_VALUE_MAX_DEFAULT;
    reel_code_t rc;

    for (;;) {
        size_t learned;

        rc = dead_put_sized(c, ns, sink, it, attempts, first_ms, last_ms,
                            last_error, max, st);
        if (rc != REEL_INVALID_ARGUMENT)
            return rc;
        /* reeld's limit is below what the records were sized for: size
         * them again for it. A limit no smaller than that is not what
         * refused them, and asking again would be refused again. */
        learned = learn_value_max(reel_status_message(st));
        if (learned == 0 || learned >= max)
            return rc;
        REEL_INFO("sink", "sink %s: reeld's value limit is %zu bytes "
                  "(--kv-max-value-bytes): dead letters are split to fit it",
                  sink, learned);
        *value_max = max = learned;
        reel_status_fini(st);
    }
}

void sink_dead_fini(sink_dead_t *d) {
    if (d == NULL)
        return;
    free(d->subject);
    free(d->last_error);
    free(d->bytes);
    memset(d, 0, sizeof(*d));
}

static int64_t num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

/* A dead letter's record; its event stays in o ("event") for load. */
static reel_code_t dead_parse(const char *key, const char *value,
                              sink_dead_t *d, cJSON **keep,
                              reel_status_t *st) {
    cJSON *o = cJSON_Parse(value);
    const cJSON *s, *e;
    const char *dot = strrchr(key, '.');

    memset(d, 0, sizeof(*d));
    if (o == NULL || dot == NULL)
        goto bad;
    d->revision = strtoull(dot + 1, NULL, 10);
    s = cJSON_GetObjectItemCaseSensitive(o, "subject");
    e = cJSON_GetObjectItemCaseSensitive(o, "last_error");
    d->subject = strdup(cJSON_IsString(s) ? s->valuestring : "");
    d->last_error = strdup(cJSON_IsString(e) ? e->valuestring : "");
    d->type = (int)num(o, "type");
    d->attempts = (unsigned)num(o, "attempts");
    d->first_attempt_ms = num(o, "first_attempt_ms");
    d->last_attempt_ms = num(o, "last_attempt_ms");
    d->parts = (unsigned)num(o, "parts");
    if (d->subject == NULL || d->last_error == NULL) {
        cJSON_Delete(o);
        sink_dead_fini(d);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (keep != NULL)
        *keep = o;
    else
        cJSON_Delete(o);
    return REEL_OK;
bad:
    cJSON_Delete(o);
    return reel_status_set(st, REEL_DATA_LOSS,
                           "dead letter %s: not a dead letter record", key);
}

reel_code_t sink_state_dead_list(reel_client_t *c, const char *ns,
                                 const char *sink, uint64_t from, uint64_t to,
                                 int (*fn)(void *arg, sink_dead_t *d),
                                 void *arg, reel_status_t *st) {
    Reel__V1__ListValuesRequest req = REEL__V1__LIST_VALUES_REQUEST__INIT;
    char prefix[128], after[256] = "";
    reel_code_t rc = REEL_OK;

    snprintf(prefix, sizeof(prefix), "dead.%s.", sink);
    if (from > 0)
        dead_key(after, sizeof(after), sink, from - 1);
    req.namespace_ = (char *)ns;
    req.prefix = prefix;
    req.limit = LIST_PAGE;
    for (;;) {
        Reel__V1__ListValuesResponse *resp;
        reel_reply_t r;
        int more, stop = 0;

        req.start_after = after;
        if ((rc = call(c, "/reel.v1.KV/ListValues", &req.base, &r,
                       "listing dead letters", st)) != REEL_OK)
            return rc;
        resp = reel__v1__list_values_response__unpack(NULL, r.len, r.body);
        reel_reply_fini(&r);
        if (resp == NULL)
            return reel_status_set(st, REEL_INTERNAL,
                                   "listing dead letters: a malformed answer");
        for (size_t i = 0; i < resp->n_entries && !stop; i++) {
            sink_dead_t d;

            if ((rc = dead_parse(resp->entries[i]->key,
                                 resp->entries[i]->value, &d, NULL, st)) !=
                REEL_OK) {
                stop = 1;
                break;
            }
            if (d.revision > to) {
                sink_dead_fini(&d);
                stop = 1;
                break;
            }
            if (d.revision >= from && fn(arg, &d) != 0)
                stop = 1;
            sink_dead_fini(&d);
        }
        more = resp->more;
        snprintf(after, sizeof(after), "%s", resp->next_start_after);
        reel__v1__list_values_response__free_unpacked(resp, NULL);
        if (rc != REEL_OK || stop || !more)
            return rc;
    }
}

/* Appends base64 text to d's bytes. */
static int append_b64(sink_dead_t *d, const char *b64) {
    uint8_t *bytes, *grown;
    size_t n;

    if (sink_unbase64(b64, strlen(b64), &bytes, &n) != 0)
        return -1;
    if ((grown = realloc(d->bytes, d->len + n + 1)) == NULL) {
        free(bytes);
        return -1;
    }
    memcpy(grown + d->len, bytes, n);
    d->bytes = grown;
    d->len += n;
    free(bytes);
    return 0;
}

reel_code_t sink_state_dead_load(reel_client_t *c, const char *ns,
                                 const char *sink, sink_dead_t *d,
                                 reel_status_t *st) {
    char key[256], *value = NULL;
    cJSON *o = NULL;
    const cJSON *e;
    sink_dead_t fresh;
    reel_code_t rc;

    dead_key(key, sizeof(key), sink, d->revision);
    if ((rc = get_value(c, ns, key, &value, st)) != REEL_OK)
        return rc;
    if (value == NULL)
        return reel_status_set(st, REEL_NOT_FOUND,
                               "dead letter %s/%s not found", ns, key);
    rc = dead_parse(key, value, &fresh, &o, st);
    free(value);
    if (rc != REEL_OK)
        return rc;
    sink_dead_fini(d);
    *d = fresh;
    e = cJSON_GetObjectItemCaseSensitive(o, "event");
    if (d->parts == 0) {
        if (!cJSON_IsString(e) || append_b64(d, e->valuestring) != 0)
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "dead letter %s/%s: its event is not "
                                 "base64", ns, key);
    }
    for (unsigned i = 0; rc == REEL_OK && i < d->parts; i++) {
        cJSON *p;
        const cJSON *data;

        part_key(key, sizeof(key), sink, d->revision, i);
        if ((rc = get_value(c, ns, key, &value, st)) != REEL_OK)
            break;
        if (value == NULL) {
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "dead letter of revision %" PRIu64
                                 ": part %s/%s is missing",
                                 d->revision, ns, key);
            break;
        }
        p = cJSON_Parse(value);
        free(value);
        data = cJSON_GetObjectItemCaseSensitive(p, "data");
        if (!cJSON_IsString(data) || append_b64(d, data->valuestring) != 0)
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "dead letter part %s/%s: not base64", ns,
                                 key);
        cJSON_Delete(p);
    }
    cJSON_Delete(o);
    return rc;
}

reel_code_t sink_state_dead_delete(reel_client_t *c, const char *ns,
                                   const char *sink, const sink_dead_t *d,
                                   reel_status_t *st) {
    char key[256];
    reel_code_t rc;

    dead_key(key, sizeof(key), sink, d->revision);
    if ((rc = delete_value(c, ns, key, NULL, st)) != REEL_OK)
        return rc;
    for (unsigned i = 0; i < d->parts && rc == REEL_OK; i++) {
        part_key(key, sizeof(key), sink, d->revision, i);
        rc = delete_value(c, ns, key, NULL, st);
    }
    return rc;
}

reel_code_t sink_state_disable(reel_client_t *c, const char *ns,
                               const char *sink, const char *reason,
                               long http_status, uint64_t revision,
                               reel_status_t *st) {
    cJSON *o = cJSON_CreateObject();
    char key[128], rev[24];
    reel_code_t rc;

    if (o == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    snprintf(key, sizeof(key), "disabled.%s", sink);
    snprintf(rev, sizeof(rev), "%" PRIu64, revision);
    cJSON_AddStringToObject(o, "sink", sink);
    cJSON_AddStringToObject(o, "reason", reason);
    cJSON_AddNumberToObject(o, "http_status", (double)http_status);
    cJSON_AddRawToObject(o, "revision", rev);
    cJSON_AddNumberToObject(o, "at_ms", (double)wall_ms());
    rc = put_json(c, ns, key, o, st);
    cJSON_Delete(o);
    return rc;
}

reel_code_t sink_state_disabled(reel_client_t *c, const char *ns,
                                const char *sink, int *disabled,
                                char **reason, reel_status_t *st) {
    char key[128], *value;
    cJSON *o;
    const cJSON *r;
    reel_code_t rc;

    *disabled = 0;
    if (reason != NULL)
        *reason = NULL;
    snprintf(key, sizeof(key), "disabled.%s", sink);
    if ((rc = get_value(c, ns, key, &value, st)) != REEL_OK || value == NULL)
        return rc;
    *disabled = 1;
    o = cJSON_Parse(value);
    r = cJSON_GetObjectItemCaseSensitive(o, "reason");
    if (reason != NULL)
        *reason = strdup(cJSON_IsString(r) ? r->valuestring : value);
    cJSON_Delete(o);
    free(value);
    return REEL_OK;
}

reel_code_t sink_state_enable(reel_client_t *c, const char *ns,
                              const char *sink, int *was, reel_status_t *st) {
    char key[128];

    snprintf(key, sizeof(key), "disabled.%s", sink);
    return delete_value(c, ns, key, was, st);
}
