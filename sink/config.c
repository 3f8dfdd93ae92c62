/*
 * sink/config.c: reading reel-sink's JSON configuration; see config.h and
 * docs/sinks.md for every key.
 *
 * Every check happens here, before a sink starts, so a running sink never
 * finds its configuration wrong: unknown keys are refused too (a typo such
 * as "secret" for "secrets" would otherwise send unsigned requests).
 * Messages name the sink by index and name, then the field:
 *   sinks[1] "fanout": stream: missing (a nats sink needs one)
 */
#include "sink/config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "base/pattern.h"
#include "base/text.h"
#include "sink/conf.h"
#include "sink/sign.h"

#define DEFAULT_TIMEOUT_MS 15000
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define MAX_TIMEOUT_MS 3600000
#define DEFAULT_MAX_IN_FLIGHT 16
#define MAX_IN_FLIGHT 1024
#define MAX_BATCH_EVENTS 10000
#define DEFAULT_BATCH_BYTES (1u << 20)
#define MAX_BATCH_BYTES (64u << 20)
#define DEFAULT_QUEUE_EVENTS 10000
#define MAX_QUEUE_EVENTS 1000000
#define DEFAULT_QUEUE_BYTES (64u << 20)
#define MAX_QUEUE_BYTES (1u << 30)
#define DEFAULT_MAX_PENDING 4096
#define MAX_PENDING 65536
#define DEFAULT_DUP_WINDOW_MS 120000

/* The keys a sink may have; anything else is refused. */
static const char *const known_keys[] = {
    "name", "type", "subjects", "exclude", "deliver_own_records", "from",
    "queue_max_events", "queue_max_bytes",
    /* webhook */
    "url", "secrets", "headers", "mode", "max_in_flight", "batch_max_events",
    "batch_max_bytes", "timeout_ms", "connect_timeout_ms",
    "retry_schedule_ms", "max_age_ms", "retry_jitter", "retry_after_max_ms",
    "on_exhausted",
    /* nats */
    "servers", "stream", "subject_prefix", "max_pending",
    "duplicate_window_ms", "format", NULL};

static const char *const webhook_only[] = {
    "url", "secrets", "headers", "mode", "max_in_flight", "batch_max_events",
    "batch_max_bytes", "timeout_ms", "connect_timeout_ms",
    "retry_schedule_ms", "max_age_ms", "retry_jitter", "retry_after_max_ms",
    "on_exhausted", NULL};

static const char *const nats_only[] = {"servers", "stream",
                                        "subject_prefix", "max_pending",
                                        "duplicate_window_ms", "format",
                                        NULL};

/* ---- Checks -------------------------------------------------------------- */

/* Each sink is an object of the array "sinks" (sink/conf.h). */
typedef sink_conf_ctx_t ctx_t;

/* p for a message: bytes outside printable ASCII as \xNN, so a pattern
 * that is not UTF-8 is shown, not passed on to a terminal or a log. */
static void shown(const char *p, char *out, size_t cap) {
    size_t o = 0;

    for (const unsigned char *b = (const unsigned char *)p;
         *b != '\0' && o + 5 < cap; b++) {
        if (*b >= 0x20 && *b < 0x7f)
            out[o++] = (char)*b;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", *b);
    }
    out[o] = '\0';
}

static reel_code_t check_pattern(const ctx_t *c, const char *field,
                                 const char *p) {
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc;
    char show[204];

    /* reel_pattern_validate() below refuses it too (reeld's check): said
     * first to show the bytes escaped. Passed, reeld would refuse it at
     * subscribe time (the sink stopped, the process with it), or, one of
     * several patterns filtered here, it would never match. */
    if (!reel_utf8_valid(p, strlen(p))) {
        shown(p, show, sizeof(show));
        return sink_conf_bad(c, field,
                             "\"%s\" is not valid UTF-8 (reeld refuses "
                             "such a pattern; no subject could match it)",
                             show);
    }
    if (reel_pattern_validate(p, strlen(p), field, &st) != REEL_OK) {
        /* The pattern check's message names the field already. */
        rc = sink_conf_bad(c, field, "\"%s\" is not a valid pattern (%s)", p,
                           reel_status_message(&st));
        reel_status_fini(&st);
        return rc;
    }
    /* No subject has an empty token (reel refuses such names), so a
     * pattern with one would never match: a mistake to say now. */
    if (reel_pattern_has_empty_token(p, strlen(p)))
        return sink_conf_bad(c, field, "\"%.200s\" has an empty token (\"..\", "
                             "or a leading or trailing \".\"): no subject "
                             "has one, so it would never match",
                             p);
    return REEL_OK;
}

static const char *const nats_schemes[] = {"nats", "tls", NULL};
static const char *const http_schemes[] = {"http", "https", NULL};

/* A NATS URL has no path: a '/', '?' or '#' before an '@' is in its
 * credential, which NATS's client and the check here (libcurl) read
 * apart, so the log could show a piece of it as the host. */
static reel_code_t check_server(const ctx_t *c, const char *field,
                                const char *s) {
    const char *auth = strstr(s, "://");

    if (auth != NULL) {
        const char *end = auth + 3 + strcspn(auth + 3, "/?#");

        if (*end != '\0' && strchr(end, '@') != NULL)
            return sink_conf_bad(c, field,
                                 "a user, password or token with '/', '?' "
                                 "or '#' in it, which a NATS URL cannot "
                                 "carry (the URL is not repeated: it may "
                                 "hold a credential)");
    }
    return sink_conf_url(c, field, s, nats_schemes);
}

/* A NATS subject prefix: tokens of printable ASCII, none empty or a
 * wildcard, so every published subject is valid. */
static reel_code_t check_prefix(const ctx_t *c, const char *field,
                                const char *p) {
    size_t n = strlen(p), tok = 0;

    if (n > 256)
        return sink_conf_bad(c, field, "%zu bytes exceed the limit of 256", n);
    for (size_t i = 0; i <= n; i++) {
        if (i == n || p[i] == '.') {
            if (i == tok)
                return sink_conf_bad(c, field, "\"%s\" has an empty token", p);
            if (i - tok == 1 && (p[tok] == '*' || p[tok] == '>'))
                return sink_conf_bad(c, field, "\"%s\" has a wildcard token",
                                     p);
            tok = i + 1;
        } else if ((unsigned char)p[i] <= 0x20 ||
                   (unsigned char)p[i] >= 0x7f) {
            return sink_conf_bad(
                c, field, "\"%s\" has a byte outside printable ASCII at %zu",
                p, i);
        }
    }
    return REEL_OK;
}

/*
 * Headers a sink's configuration may not set, whatever their case: the
 * ones reel-sink or libcurl writes itself (a second would go out beside
 * it, or change what the signature covers), and the ones that govern the
 * request's framing or its connection rather than say something to the
 * receiver (RFC 9110 7.6.1): "Expect: 100-continue" brings back the round
 * trip sink/http.c turns off, "Transfer-Encoding: chunked" changes how
 * the body is sent. A name ending in '-' is a prefix.
 */
static const struct {
    const char *name;
    const char *why;
} refused_headers[] = {
    {"webhook-", "reel-sink sets the webhook-* headers itself (the "
                 "signature)"},
    {"content-type", "reel-sink sets this header itself"},
    {"content-length", "reel-sink sets this header itself (the body's "
                       "length)"},
    {"user-agent", "reel-sink sets this header itself (a second would go "
                   "out beside it)"},
    {"transfer-encoding", "it sets how the body is framed, which is "
                          "reel-sink's (a Content-Length)"},
    {"te", "a hop-by-hop header: it governs the connection, not the "
           "request"},
    {"trailer", "it announces trailer fields, which reel-sink does not "
                "send"},
    {"expect", "it makes each request wait for a 100 Continue, the "
               "round trip reel-sink turns off"},
    {"connection", "a hop-by-hop header: reel-sink manages the connection "
                   "(it keeps it open)"},
    {"keep-alive", "a hop-by-hop header: reel-sink manages the connection "
                   "(it keeps it open)"},
    {"upgrade", "a hop-by-hop header: it asks to switch protocols"},
    {"proxy-", "a proxy's header, not the receiver's"},
};

/* Why name may not be set in "headers", or NULL. */
static const char *refused_header(const char *name) {
    for (size_t i = 0; i < sizeof(refused_headers) / sizeof(*refused_headers);
         i++) {
        const char *r = refused_headers[i].name;
        size_t n = strlen(r);

        if (r[n - 1] == '-' ? strncasecmp(name, r, n) == 0
                            : strcasecmp(name, r) == 0)
            return refused_headers[i].why;
    }
    return NULL;
}

static reel_code_t get_headers(const ctx_t *c, const cJSON *o,
                               sink_config_t *s) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "headers"), *e;
    char fname[300];
    size_t i = 0;

    if (v == NULL)
        return REEL_OK;
    if (!cJSON_IsObject(v))
        return sink_conf_bad(c, "headers", "must be an object of strings");
    if ((s->headers = calloc((size_t)cJSON_GetArraySize(v) + 1,
                             sizeof(char *))) == NULL)
        return reel_status_set(c->st, REEL_RESOURCE_EXHAUSTED,
                               "out of memory");
    cJSON_ArrayForEach(e, v) {
        const char *why;
        size_t len;

        snprintf(fname, sizeof(fname), "headers.%.200s", e->string);
        if (!cJSON_IsString(e))
            return sink_conf_bad(c, fname, "must be a string");
        if (reel_check_charset(fname, e->string, strlen(e->string), 128,
                               "A-Za-z0-9-_", NULL) != REEL_OK)
            return sink_conf_bad(c, fname,
                                 "a header name is 1-128 bytes of "
                                 "[A-Za-z0-9-_]");
        if ((why = refused_header(e->string)) != NULL)
            return sink_conf_bad(c, fname, "not allowed: %s", why);
        if (strpbrk(e->valuestring, "\r\n") != NULL)
            return sink_conf_bad(c, fname, "a line break in a header value");
        /* HTTP takes visible bytes, spaces and tabs in a value (RFC 9110,
         * field-value): no other control byte. */
        for (const unsigned char *b = (const unsigned char *)e->valuestring;
             *b != '\0'; b++)
            if ((*b < 0x20 && *b != '\t') || *b == 0x7f)
                return sink_conf_bad(c, fname,
                                     "a control byte (0x%02x) in a header "
                                     "value",
                                     *b);
        /* Names are one whatever their case: a second would be sent
         * beside the first. */
        for (size_t j = 0; j < i; j++)
            if (strncasecmp(s->headers[j], e->string, strlen(e->string)) ==
                    0 &&
                s->headers[j][strlen(e->string)] == ':')
                return sink_conf_bad(c, fname,
                                     "also a header above, in another case "
                                     "(header names are one whatever their "
                                     "case)");
        len = strlen(e->string) + strlen(e->valuestring) + 3;
        if ((s->headers[i] = malloc(len)) == NULL)
            return reel_status_set(c->st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        snprintf(s->headers[i], len, "%s: %s", e->string, e->valuestring);
        s->n_headers = ++i;
    }
    return REEL_OK;
}

static reel_code_t get_from(const ctx_t *c, const cJSON *o,
                            sink_config_t *s) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "from");

    s->from = SINK_FROM_OLDEST;
    if (v == NULL)
        return REEL_OK;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "oldest") == 0)
        return REEL_OK;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "now") == 0) {
        s->from = SINK_FROM_NOW;
        return REEL_OK;
    }
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 &&
        v->valuedouble < 18446744073709551616.0 &&
        v->valuedouble == floor(v->valuedouble)) {
        s->from = SINK_FROM_REVISION;
        s->from_revision = (uint64_t)v->valuedouble;
        return REEL_OK;
    }
    return sink_conf_bad(c, "from",
                         "must be \"oldest\", \"now\" or a revision "
                         "(an integer >= 0)");
}

/* One sink object. */
static reel_code_t parse_sink(const ctx_t *c0, const cJSON *o,
                              sink_config_t *s) {
    ctx_t c = *c0;
    const cJSON *e;
    char *type = NULL, *mode = NULL, *exhausted = NULL, *format = NULL;
    int64_t v;
    reel_code_t rc;

    if (!cJSON_IsObject(o))
        return sink_conf_bad(&c, "sink", "must be an object");
    if ((rc = sink_conf_string(&c, o, "name", 1, &s->name)) != REEL_OK)
        return rc;
    if (reel_check_charset("name", s->name, strlen(s->name), SINK_NAME_MAX,
                           "A-Za-z0-9_-", NULL) != REEL_OK)
        return sink_conf_bad(
            &c, "name",
            "\"%.80s\" is not 1-%d bytes of "
            "[A-Za-z0-9_-] (it names the consumer sink.<name> and "
            "the sink's records)",
            s->name, SINK_NAME_MAX);
    c.name = s->name;
    cJSON_ArrayForEach(e, o) {
        if (!sink_conf_listed(known_keys, e->string))
            return sink_conf_bad(&c, e->string,
                                 "unknown key (docs/sinks.md lists "
                                 "every key)");
    }
    if ((rc = sink_conf_string(&c, o, "type", 1, &type)) != REEL_OK)
        return rc;
    if (strcmp(type, "webhook") == 0)
        s->type = SINK_WEBHOOK;
    else if (strcmp(type, "nats") == 0)
        s->type = SINK_NATS;
    else
        rc = sink_conf_bad(&c, "type",
                           "\"%.80s\" is not a sink type (webhook or "
                           "nats)",
                           type);
    free(type);
    if (rc != REEL_OK)
        return rc;
    cJSON_ArrayForEach(e, o) {
        if (sink_conf_listed(
                s->type == SINK_WEBHOOK ? nats_only : webhook_only, e->string))
            return sink_conf_bad(&c, e->string, "not a key of a %s sink",
                                 s->type == SINK_WEBHOOK ? "webhook" : "nats");
    }
    if ((rc = sink_conf_strings(&c, o, "subjects", 64, &s->subjects,
                                &s->n_subjects, check_pattern)) != REEL_OK ||
        (rc = sink_conf_strings(&c, o, "exclude", 64, &s->exclude,
                                &s->n_exclude, check_pattern)) != REEL_OK ||
        (rc = sink_conf_bool(&c, o, "deliver_own_records",
                             &s->deliver_own_records)) != REEL_OK ||
        (rc = get_from(&c, o, s)) != REEL_OK)
        return rc;
    if (cJSON_GetObjectItemCaseSensitive(o, "subjects") != NULL &&
        s->n_subjects == 0)
        return sink_conf_bad(&c, "subjects",
                             "empty (leave it out for every event: "
                             "[\">\"])");
    v = DEFAULT_QUEUE_EVENTS;
    if ((rc = sink_conf_int(&c, o, "queue_max_events", 1, MAX_QUEUE_EVENTS,
                            &v)) != REEL_OK)
        return rc;
    s->queue_max_events = (size_t)v;
    v = DEFAULT_QUEUE_BYTES;
    if ((rc = sink_conf_int(&c, o, "queue_max_bytes", 1 << 20, MAX_QUEUE_BYTES,
                            &v)) != REEL_OK)
        return rc;
    s->queue_max_bytes = (size_t)v;

    if (s->type == SINK_NATS) {
        if ((rc = sink_conf_strings(&c, o, "servers", 32, &s->servers,
                                    &s->n_servers, check_server)) != REEL_OK)
            return rc;
        if (s->n_servers == 0)
            return sink_conf_bad(&c, "servers",
                                 "missing (a nats sink needs one: "
                                 "[\"nats://127.0.0.1:4222\"])");
        if ((rc = sink_conf_string(&c, o, "stream", 0, &s->stream)) != REEL_OK)
            return rc;
        if (s->stream == NULL)
            return sink_conf_bad(&c, "stream",
                                 "missing (a nats sink needs one)");
        if (reel_check_charset("stream", s->stream, strlen(s->stream), 256,
                               "A-Za-z0-9_-", NULL) != REEL_OK)
            return sink_conf_bad(&c, "stream",
                                 "\"%.80s\" is not 1-256 bytes of "
                                 "[A-Za-z0-9_-]",
                                 s->stream);
        if ((rc = sink_conf_string(&c, o, "subject_prefix", 0,
                                   &s->subject_prefix)) != REEL_OK)
            return rc;
        if (s->subject_prefix == NULL &&
            (s->subject_prefix = strdup("reel")) == NULL)
            return reel_status_set(c.st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        if ((rc = check_prefix(&c, "subject_prefix", s->subject_prefix)) !=
            REEL_OK)
            return rc;
        v = DEFAULT_MAX_PENDING;
        if ((rc = sink_conf_int(&c, o, "max_pending", 1, MAX_PENDING, &v)) !=
            REEL_OK)
            return rc;
        s->max_pending = (int)v;
        s->duplicate_window_ms = DEFAULT_DUP_WINDOW_MS;
        if ((rc = sink_conf_int(&c, o, "duplicate_window_ms", 1000,
                                7LL * 24 * 3600 * 1000,
                                &s->duplicate_window_ms)) != REEL_OK)
            return rc;
        if ((rc = sink_conf_string(&c, o, "format", 0, &format)) != REEL_OK)
            return rc;
        if (format != NULL && strcmp(format, "protobuf") == 0)
            s->format_protobuf = 1;
        else if (format != NULL && strcmp(format, "json") != 0)
            rc = sink_conf_bad(&c, "format",
                               "\"%.80s\" is not json or protobuf", format);
        free(format);
        return rc;
    }

    /* webhook */
    if ((rc = sink_conf_string(&c, o, "url", 0, &s->url)) != REEL_OK)
        return rc;
    if (s->url == NULL)
        return sink_conf_bad(&c, "url", "missing (a webhook sink needs one)");
    if ((rc = sink_conf_url(&c, "url", s->url, http_schemes)) != REEL_OK)
        return rc;
    if ((rc = sink_conf_secrets(&c, o,
                                "missing (a webhook sink signs "
                                "every request with each of its secrets: "
                                "[\"whsec_...\"])",
                                &s->secrets, &s->n_secrets)) != REEL_OK ||
        (rc = get_headers(&c, o, s)) != REEL_OK)
        return rc;
    if ((rc = sink_conf_string(&c, o, "mode", 0, &mode)) != REEL_OK)
        return rc;
    s->mode = SINK_ORDERED;
    if (mode != NULL && strcmp(mode, "concurrent") == 0)
        s->mode = SINK_CONCURRENT;
    else if (mode != NULL && strcmp(mode, "ordered") != 0)
        rc = sink_conf_bad(&c, "mode",
                           "\"%.80s\" is not ordered or concurrent", mode);
    free(mode);
    if (rc != REEL_OK)
        return rc;
    v = s->mode == SINK_ORDERED ? 1 : DEFAULT_MAX_IN_FLIGHT;
    if (s->mode == SINK_ORDERED &&
        cJSON_GetObjectItemCaseSensitive(o, "max_in_flight") != NULL)
        return sink_conf_bad(&c, "max_in_flight",
                             "only for mode \"concurrent\" "
                             "(ordered sends one request at a time)");
    if ((rc = sink_conf_int(&c, o, "max_in_flight", 1, MAX_IN_FLIGHT, &v)) !=
        REEL_OK)
        return rc;
    s->max_in_flight = (int)v;
    v = 1;
    if ((rc = sink_conf_int(&c, o, "batch_max_events", 1, MAX_BATCH_EVENTS,
                            &v)) != REEL_OK)
        return rc;
    s->batch_max_events = (int)v;
    v = DEFAULT_BATCH_BYTES;
    if ((rc = sink_conf_int(&c, o, "batch_max_bytes", 1024, MAX_BATCH_BYTES,
                            &v)) != REEL_OK)
        return rc;
    s->batch_max_bytes = (size_t)v;
    s->timeout_ms = DEFAULT_TIMEOUT_MS;
    if ((rc = sink_conf_int(&c, o, "timeout_ms", 1, MAX_TIMEOUT_MS,
                            &s->timeout_ms)) != REEL_OK)
        return rc;
    s->connect_timeout_ms = s->timeout_ms < DEFAULT_CONNECT_TIMEOUT_MS
                                ? s->timeout_ms
                                : DEFAULT_CONNECT_TIMEOUT_MS;
    sink_retry_defaults(&s->retry);
    if ((rc = sink_conf_int(&c, o, "connect_timeout_ms", 1, MAX_TIMEOUT_MS,
                            &s->connect_timeout_ms)) != REEL_OK ||
        (rc = sink_conf_retry(&c, o, &s->retry)) != REEL_OK)
        return rc;
    if ((rc = sink_conf_string(&c, o, "on_exhausted", 0, &exhausted)) !=
        REEL_OK)
        return rc;
    if (exhausted != NULL && strcmp(exhausted, "block") == 0)
        s->on_exhausted = SINK_EXHAUSTED_BLOCK;
    else if (exhausted != NULL && strcmp(exhausted, "dead_letter") != 0)
        rc = sink_conf_bad(&c, "on_exhausted",
                           "\"%.80s\" is not dead_letter or block", exhausted);
    free(exhausted);
    if (rc == REEL_OK && s->on_exhausted == SINK_EXHAUSTED_BLOCK &&
        s->mode != SINK_ORDERED)
        rc = sink_conf_bad(&c, "on_exhausted",
                           "\"block\" is only for mode "
                           "\"ordered\"");
    /* A blocked head is tried for ever: the age limit could not end it,
     * and a sink that took both would ignore one without a word. */
    if (rc == REEL_OK && s->on_exhausted == SINK_EXHAUSTED_BLOCK &&
        s->retry.max_age_ms > 0)
        rc = sink_conf_bad(&c, "on_exhausted",
                           "\"block\" never gives up, so max_age_ms "
                           "(%" PRId64 ") would never apply: leave out "
                           "one of them",
                           s->retry.max_age_ms);
    return rc;
}

static void free_strings(char **v, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void config_fini(sink_config_t *s) {
    free(s->name);
    free_strings(s->subjects, s->n_subjects);
    free_strings(s->exclude, s->n_exclude);
    free(s->url);
    if (s->secrets != NULL)
        memset(s->secrets, 0, s->n_secrets * sizeof(*s->secrets));
    free(s->secrets);
    free_strings(s->headers, s->n_headers);
    free_strings(s->servers, s->n_servers);
    free(s->stream);
    free(s->subject_prefix);
    memset(s, 0, sizeof(*s));
}

void sink_config_set_fini(sink_config_set_t *set) {
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->n; i++)
        config_fini(&set->sinks[i]);
    free(set->sinks);
    memset(set, 0, sizeof(*set));
}

/* The index in b's servers of one a names too (in any order, spelled
 * either way sink_conf_url_endpoint() makes one), or -1. */
static int share_a_server(const sink_config_t *a, const sink_config_t *b) {
    char ka[300], kb[300];

    for (size_t i = 0; i < a->n_servers; i++) {
        sink_conf_url_endpoint(a->servers[i], "4222", ka, sizeof(ka));
        for (size_t j = 0; j < b->n_servers; j++) {
            sink_conf_url_endpoint(b->servers[j], "4222", kb, sizeof(kb));
            if (strcmp(ka, kb) == 0)
                return (int)j;
        }
    }
    return -1;
}

reel_code_t sink_config_parse(const char *text, size_t len,
                              sink_config_set_t *out, reel_status_t *st) {
    cJSON *root, *sinks, *e;
    reel_code_t rc = REEL_OK;
    size_t n;

    memset(out, 0, sizeof(*out));
    if ((root = sink_conf_parse(text, len, st)) == NULL)
        return st->code;
    if (!cJSON_IsObject(root)) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "config: not a JSON object (one object with "
                             "\"sinks\")");
        goto out;
    }
    sinks = cJSON_GetObjectItemCaseSensitive(root, "sinks");
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string != NULL ? e->string : "", "sinks") != 0) {
            rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                 "config: unknown key \"%.80s\" (it holds "
                                 "\"sinks\")",
                                 e->string != NULL ? e->string : "");
            goto out;
        }
    }
    if (!cJSON_IsArray(sinks) ||
        (n = (size_t)cJSON_GetArraySize(sinks)) == 0) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "config: sinks: must be a non-empty array of "
                             "sinks");
        goto out;
    }
    if (n > 256) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "config: sinks: %zu sinks exceed the limit of "
                             "256",
                             n);
        goto out;
    }
    if ((out->sinks = calloc(n, sizeof(*out->sinks))) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    out->n = n;
    for (size_t i = 0; i < n; i++) {
        ctx_t c = {st, "sinks", i, NULL};

        if ((rc = parse_sink(&c, cJSON_GetArrayItem(sinks, (int)i),
                             &out->sinks[i])) != REEL_OK)
            goto out;
        for (size_t j = 0; j < i; j++) {
            const sink_config_t *a = &out->sinks[j], *b = &out->sinks[i];
            int shared;

            c.name = b->name;
            if (strcmp(a->name, b->name) == 0) {
                rc = sink_conf_bad(&c, "name", "also the name of sinks[%zu]",
                                   j);
                goto out;
            }
            /* Each NATS sink keeps its stream's order with the stream's
             * last message id, so two sinks cannot share a stream: one
             * whose servers share one with the other's is refused. */
            if (a->type == SINK_NATS && b->type == SINK_NATS &&
                strcmp(a->stream, b->stream) == 0 &&
                (shared = share_a_server(a, b)) >= 0) {
                char *where = sink_conf_url_public(b->servers[shared]);

                rc = sink_conf_bad(&c, "stream",
                                   "\"%s\" on %s is also sinks[%zu]'s "
                                   "(a stream takes one sink)",
                                   b->stream, where ? where : "?", j);
                free(where);
                goto out;
            }
        }
    }
out:
    cJSON_Delete(root);
    if (rc != REEL_OK)
        sink_config_set_fini(out);
    return rc;
}

reel_code_t sink_config_load(const char *path, sink_config_set_t *out,
                             reel_status_t *st) {
    char *text;
    size_t len;
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if ((rc = sink_conf_read_file(path, &text, &len, st)) != REEL_OK)
        return rc;
    rc = sink_config_parse(text, len, out, st);
    free(text);
    return rc;
}

const sink_config_t *sink_config_find(const sink_config_set_t *set,
                                      const char *name) {
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->sinks[i].name, name) == 0)
            return &set->sinks[i];
    return NULL;
}

size_t sink_config_connections(const sink_config_set_t *set) {
    size_t n = 0;

    for (size_t i = 0; i < set->n; i++) {
        const sink_config_t *s = &set->sinks[i];

        n += s->type == SINK_WEBHOOK && s->mode == SINK_CONCURRENT
                 ? (size_t)s->max_in_flight
                 : 1;
    }
    return n;
}

reel_code_t sink_config_check_open_files(const sink_config_set_t *set,
                                         uint64_t limit, reel_status_t *st) {
    size_t conns = sink_config_connections(set);
    uint64_t need = (uint64_t)conns + SINK_OWN_OPEN_FILES;
    const sink_config_t *most = NULL;
    char largest[SINK_NAME_MAX + 64] = "";

    if (need <= limit)
        return REEL_OK;
    /* The sink with the largest max_in_flight is the one to lower. */
    for (size_t i = 0; i < set->n; i++) {
        const sink_config_t *s = &set->sinks[i];

        if (s->type == SINK_WEBHOOK && s->mode == SINK_CONCURRENT &&
            (most == NULL || s->max_in_flight > most->max_in_flight))
            most = s;
    }
    if (most != NULL)
        snprintf(largest, sizeof(largest), " (\"%s\": %d)", most->name,
                 most->max_in_flight);
    return reel_status_set(
        st, REEL_INVALID_ARGUMENT,
        "max_in_flight: the sinks need up to %" PRIu64 " open files at once "
        "(%zu connections: each concurrent webhook sink's max_in_flight%s, "
        "1 per other sink; and %d for reel-sink's own), more than the "
        "open-files limit of %" PRIu64 " (ulimit -n; reel-sink raised it to "
        "the hard limit, ulimit -Hn): lower max_in_flight or raise the hard "
        "limit (LimitNOFILE= under systemd)",
        need, conns, largest, SINK_OWN_OPEN_FILES, limit);
}
