/*
 * cli/reelctl.c: reel's command-line client.
 *
 *   reelctl [--addr HOST:PORT] [--timeout DURATION] [--json] COMMAND [ARGS]
 *   reelctl kv set|get|del|ls|history|watch ...
 *
 * Global flags may appear anywhere on the line. Exit status: 0 on success,
 * 1 when the server answered with an error (or is unreachable, or not
 * serving), 2 for a usage error.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api/health.pb-c.h"
#include "api/kv.pb-c.h"
#include "api/reel.pb-c.h"
#include "base/version.h"
#include "cli/client.h"

#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

typedef struct ctl {
    const char *addr;
    int64_t timeout_ms;
    int json;
    reel_client_t *client;
} ctl_t;

typedef struct command {
    const char *name;
    const char *args;
    const char *help;
    int (*run)(ctl_t *ctl, int argc, char **argv);
} command_t;

static const command_t commands[];

/* ---- Helpers ------------------------------------------------------------ */

/* Prints a failed call the way every command does, and returns EXIT_FAIL. */
static int report_error(ctl_t *ctl, const char *what, const reel_reply_t *r) {
    const char *details = r->details && *r->details ? r->details : "";

    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();
        char *s;

        cJSON_AddStringToObject(o, "error", reel_grpc_code_name(r->code));
        cJSON_AddStringToObject(o, "message", details);
        s = cJSON_PrintUnformatted(o);
        fprintf(stderr, "%s\n", s);
        free(s);
        cJSON_Delete(o);
    } else {
        fprintf(stderr, "reelctl: %s: %s: %s\n", what,
                reel_grpc_code_name(r->code), details);
        if (r->code == 14 /* UNAVAILABLE */ && strstr(details, "connect"))
            fprintf(stderr, "reelctl: is reeld running on %s?\n", ctl->addr);
    }
    return EXIT_FAIL;
}

static void print_json(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);

    printf("%s\n", s);
    free(s);
}

/* "250ms", "5s", "2m", or plain milliseconds. -1 if malformed. */
static int64_t parse_duration_ms(const char *s) {
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || v < 0)
        return -1;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        return (int64_t)v;
    if (strcmp(end, "s") == 0)
        return (int64_t)(v * 1000);
    if (strcmp(end, "m") == 0)
        return (int64_t)(v * 60000);
    return -1;
}

static int no_args(const char *cmd, int argc, char **argv) {
    if (argc > 1) {
        fprintf(stderr, "reelctl %s: unexpected argument \"%s\"\n", cmd,
                argv[1]);
        return -1;
    }
    return 0;
}

/* ---- Commands ----------------------------------------------------------- */

static int cmd_health(ctl_t *ctl, int argc, char **argv) {
    Grpc__Health__V1__HealthCheckRequest req =
        GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp;
    reel_reply_t r;
    uint8_t buf[512];
    const char *status;
    size_t n;
    int rc;

    if (argc > 2) {
        fprintf(stderr, "reelctl health: unexpected argument \"%s\"\n",
                argv[2]);
        return EXIT_USAGE;
    }
    req.service = argc == 2 ? argv[1] : "";
    if (strlen(req.service) > 256) {
        fprintf(stderr, "reelctl health: service: at most 256 bytes\n");
        return EXIT_USAGE;
    }
    n = grpc__health__v1__health_check_request__pack(&req, buf);
    if (reel_client_unary(ctl->client, "/grpc.health.v1.Health/Check", buf, n,
                          ctl->timeout_ms, &r) != 0) {
        rc = report_error(ctl, "health", &r);
        reel_reply_fini(&r);
        return rc;
    }
    resp = grpc__health__v1__health_check_response__unpack(NULL, r.len,
                                                          r.body);
    reel_reply_fini(&r);
    if (resp == NULL) {
        fprintf(stderr, "reelctl: health: malformed response\n");
        return EXIT_FAIL;
    }
    switch (resp->status) {
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING:
        status = "SERVING";
        break;
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING:
        status = "NOT_SERVING";
        break;
    default:
        status = "UNKNOWN";
    }
    rc = resp->status ==
                 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
             ? EXIT_OK
             : EXIT_FAIL;
    grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "status", status);
        print_json(o);
        cJSON_Delete(o);
    } else {
        printf("%s\n", status);
    }
    return rc;
}

static int cmd_status(ctl_t *ctl, int argc, char **argv) {
    Reel__V1__GetStatusRequest req = REEL__V1__GET_STATUS_REQUEST__INIT;
    Reel__V1__GetStatusResponse *s;
    reel_reply_t r;
    uint8_t buf[16];
    size_t n;
    int rc;

    if (no_args("status", argc, argv) != 0)
        return EXIT_USAGE;
    n = reel__v1__get_status_request__pack(&req, buf);
    if (reel_client_unary(ctl->client, "/reel.v1.Admin/GetStatus", buf, n,
                          ctl->timeout_ms, &r) != 0) {
        rc = report_error(ctl, "status", &r);
        reel_reply_fini(&r);
        return rc;
    }
    s = reel__v1__get_status_response__unpack(NULL, r.len, r.body);
    reel_reply_fini(&r);
    if (s == NULL) {
        fprintf(stderr, "reelctl: status: malformed response\n");
        return EXIT_FAIL;
    }
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "version", s->version);
        cJSON_AddNumberToObject(o, "format_version", s->format_version);
        cJSON_AddNumberToObject(o, "revision", (double)s->revision);
        cJSON_AddStringToObject(o, "data_dir", s->data_dir);
        cJSON_AddNumberToObject(o, "started_at_ms", (double)s->started_at_ms);
        cJSON_AddNumberToObject(o, "uptime_ms", (double)s->uptime_ms);
        cJSON_AddBoolToObject(o, "writable", s->writable);
        if (!s->writable)
            cJSON_AddStringToObject(o, "write_error", s->write_error);
        print_json(o);
        cJSON_Delete(o);
    } else {
        printf("version:   %s\n", s->version);
        printf("format:    %u\n", s->format_version);
        printf("revision:  %llu\n", (unsigned long long)s->revision);
        printf("data dir:  %s\n", s->data_dir);
        printf("uptime:    %.1fs\n", (double)s->uptime_ms / 1000.0);
        printf("writable:  %s%s%s\n", s->writable ? "yes" : "no",
               s->writable ? "" : ": ", s->writable ? "" : s->write_error);
    }
    rc = s->writable ? EXIT_OK : EXIT_FAIL;
    reel__v1__get_status_response__free_unpacked(s, NULL);
    return rc;
}

/* ---- kv: versioned key-value state -------------------------------------- */

/*
 * The flags of the kv subcommands. Each subcommand lists the ones it takes;
 * they may appear anywhere after "kv", and "--" ends them (so a key may
 * start with "--"). The order here is the order of the usage text.
 */
enum kv_flag {
    KF_CREATE,
    KF_IF_VERSION,
    KF_WRITER,
    KF_FROM_VERSION,
    KF_FROM_REVISION,
    KF_NOW,
    KF_LIMIT,
    KF_START_AFTER,
    KF_ALL,
    KF_DELETED,
    KF_COUNT
};

#define KF(f) (1u << (f))

typedef enum { KV_BOOL, KV_NUM, KV_STR } kv_flag_kind_t;

typedef struct kv_flag_spec {
    const char *name;
    kv_flag_kind_t kind;
    const char *arg; /* the value's name in the usage text */
    uint64_t max;    /* KV_NUM: the range of the request field */
} kv_flag_spec_t;

static const kv_flag_spec_t kv_flags[KF_COUNT] = {
    [KF_CREATE] = {"--create", KV_BOOL, NULL, 0},
    [KF_IF_VERSION] = {"--if-version", KV_NUM, "N", UINT64_MAX},
    [KF_WRITER] = {"--writer", KV_STR, "NAME", 0},
    [KF_FROM_VERSION] = {"--from-version", KV_NUM, "N", UINT64_MAX},
    [KF_FROM_REVISION] = {"--from-revision", KV_NUM, "N", UINT64_MAX},
    [KF_NOW] = {"--now", KV_BOOL, NULL, 0},
    [KF_LIMIT] = {"--limit", KV_NUM, "N", UINT32_MAX},
    [KF_START_AFTER] = {"--start-after", KV_STR, "KEY", 0},
    [KF_ALL] = {"--all", KV_BOOL, NULL, 0},
    [KF_DELETED] = {"--deleted", KV_BOOL, NULL, 0},
};

#define KV_MAX_POS 3

typedef struct kv_command kv_command_t;

/* One kv command line, parsed. Strings point into argv. */
typedef struct kv_args {
    const kv_command_t *cmd;
    char *pos[KV_MAX_POS];
    int npos;
    unsigned seen; /* KF() bits of the flags given */
    uint64_t num[KF_COUNT];
    char *str[KF_COUNT];
} kv_args_t;

struct kv_command {
    const char *name;
    const char *pos[KV_MAX_POS]; /* positional names, NULL-padded */
    int min_pos;                 /* the rest are optional */
    unsigned flags;              /* KF() bits it takes */
    const char *help;
    int (*run)(ctl_t *ctl, const kv_args_t *a);
};

static const kv_command_t kv_commands[];

static int kv_has(const kv_args_t *a, enum kv_flag f) {
    return (a->seen & KF(f)) != 0;
}

/* "set NAMESPACE KEY VALUE [--create] ...": for help and usage errors. */
static void kv_synopsis(const kv_command_t *c, char *buf, size_t size) {
    size_t n = (size_t)snprintf(buf, size, "%s", c->name);

    for (int i = 0; i < KV_MAX_POS && c->pos[i] != NULL && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n,
                              i < c->min_pos ? " %s" : " [%s]", c->pos[i]);
    for (int f = 0; f < KF_COUNT && n < size; f++) {
        if (!(c->flags & KF(f)))
            continue;
        n += (size_t)snprintf(buf + n, size - n, " [%s%s%s]", kv_flags[f].name,
                              kv_flags[f].arg ? " " : "",
                              kv_flags[f].arg ? kv_flags[f].arg : "");
    }
}

static void kv_usage(FILE *out) {
    char syn[160];

    fprintf(out, "\nkv subcommands (flags may come anywhere after kv):\n");
    for (const kv_command_t *c = kv_commands; c->name != NULL; c++) {
        kv_synopsis(c, syn, sizeof(syn));
        fprintf(out, "  kv %s\n      %s\n", syn, c->help);
    }
}

__attribute__((format(printf, 2, 3))) static int
kv_usage_error(const kv_args_t *a, const char *fmt, ...) {
    char syn[160];
    va_list ap;

    fprintf(stderr, "reelctl kv %s: ", a->cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    kv_synopsis(a->cmd, syn, sizeof(syn));
    fprintf(stderr, "\nusage: reelctl kv %s\n", syn);
    return EXIT_USAGE;
}

/*
 * Digits only (strtoull alone would take "-1", " 7" and "+7"). -1 if s is
 * not a whole number, -2 if it is above max.
 */
static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
    unsigned long long v;
    char *end;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (*end != '\0')
        return -1;
    if (errno == ERANGE || v > max)
        return -2;
    *out = v;
    return 0;
}

/* The index of the flag that "--name" or "--name=value" names, or -1. */
static int kv_flag_lookup(const char *arg) {
    size_t len = strcspn(arg, "=");

    for (int f = 0; f < KF_COUNT; f++)
        if (strlen(kv_flags[f].name) == len &&
            strncmp(arg, kv_flags[f].name, len) == 0)
            return f;
    return -1;
}

/* Takes the flag at argv[*i], and its value from argv[*i + 1] if needed. */
static int kv_take_flag(kv_args_t *a, int argc, char **argv, int *i) {
    char *arg = argv[*i], *eq = strchr(arg, '='), *val = NULL;
    int f = kv_flag_lookup(arg);
    const kv_flag_spec_t *spec;

    if (f < 0 || !(a->cmd->flags & KF(f)))
        return kv_usage_error(a, "unknown flag \"%.*s\"",
                              (int)strcspn(arg, "="), arg);
    spec = &kv_flags[f];
    if (spec->kind == KV_BOOL && eq != NULL)
        return kv_usage_error(a, "%s takes no value", spec->name);
    if (spec->kind != KV_BOOL) {
        if (eq != NULL)
            val = eq + 1;
        else if (*i + 1 < argc)
            val = argv[++*i];
        else
            return kv_usage_error(a, "%s needs a value (%s)", spec->name,
                                  spec->arg);
    }
    if (spec->kind == KV_NUM) {
        int bad = parse_u64(val, spec->max, &a->num[f]);

        if (bad == -1)
            return kv_usage_error(a, "%s: \"%s\" is not a whole number",
                                  spec->name, val);
        if (bad == -2)
            return kv_usage_error(a, "%s: %s is too large (at most %llu)",
                                  spec->name, val,
                                  (unsigned long long)spec->max);
    }
    a->str[f] = val;
    a->seen |= KF(f);
    return 0;
}

static int kv_max_pos(const kv_command_t *c) {
    int n = 0;

    while (n < KV_MAX_POS && c->pos[n] != NULL)
        n++;
    return n;
}

/*
 * Parses argv (argv[0] is "kv") for cmd, whose name is argv[skip]. Returns
 * 0, or EXIT_USAGE after saying what is wrong.
 */
static int kv_parse(const kv_command_t *cmd, int argc, char **argv, int skip,
                    kv_args_t *a) {
    int only_pos = 0;

    memset(a, 0, sizeof(*a));
    a->cmd = cmd;
    for (int i = 1; i < argc; i++) {
        if (i == skip)
            continue;
        if (!only_pos && strcmp(argv[i], "--") == 0) {
            only_pos = 1;
        } else if (!only_pos && strncmp(argv[i], "--", 2) == 0) {
            if (kv_take_flag(a, argc, argv, &i) != 0)
                return EXIT_USAGE;
        } else if (a->npos == kv_max_pos(cmd)) {
            return kv_usage_error(a, "unexpected argument \"%s\"", argv[i]);
        } else {
            a->pos[a->npos++] = argv[i];
        }
    }
    if (a->npos < cmd->min_pos) {
        char missing[64] = "";
        size_t n = 0;

        for (int i = a->npos; i < cmd->min_pos && n < sizeof(missing); i++)
            n += (size_t)snprintf(missing + n, sizeof(missing) - n, " %s",
                                  cmd->pos[i]);
        return kv_usage_error(a, "missing%s", missing);
    }
    return 0;
}

/*
 * The index of the subcommand's name: the first argument that is neither a
 * flag nor a flag's value. -1 if there is none.
 */
static int kv_find_subcommand(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int f;

        if (strcmp(argv[i], "--") == 0)
            return i + 1 < argc ? i + 1 : -1;
        if (strncmp(argv[i], "--", 2) != 0)
            return i;
        f = kv_flag_lookup(argv[i]);
        if (f >= 0 && kv_flags[f].kind != KV_BOOL && !strchr(argv[i], '='))
            i++;
    }
    return -1;
}

/* -- Printing entries and events, shared by the subcommands -- */

/* A stored value as JSON: parsed if it parses, else the text as a string. */
static cJSON *json_value(const char *text) {
    cJSON *v = cJSON_ParseWithOpts(text, NULL, 1);

    return v != NULL ? v : cJSON_CreateString(text);
}

static cJSON *entry_json(const Reel__V1__Entry *e) {
    cJSON *o;

    if (e == NULL)
        return cJSON_CreateNull();
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "namespace", e->namespace_);
    cJSON_AddStringToObject(o, "key", e->key);
    cJSON_AddItemToObject(o, "value", json_value(e->value));
    cJSON_AddNumberToObject(o, "version", (double)e->version);
    cJSON_AddBoolToObject(o, "deleted", e->deleted);
    cJSON_AddNumberToObject(o, "revision", (double)e->revision);
    cJSON_AddNumberToObject(o, "updated_at_ms", (double)e->updated_at_ms);
    cJSON_AddStringToObject(o, "writer", e->writer);
    return o;
}

static const char *event_type_name(const Reel__V1__ValueEvent *ev) {
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &reel__v1__value_event__type__descriptor, (int)ev->type);

    return v != NULL ? v->name : "UNKNOWN";
}

static cJSON *event_json(const Reel__V1__ValueEvent *ev) {
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "type", event_type_name(ev));
    cJSON_AddStringToObject(o, "namespace", ev->namespace_);
    cJSON_AddStringToObject(o, "key", ev->key);
    cJSON_AddItemToObject(o, "value", json_value(ev->value));
    cJSON_AddNumberToObject(o, "version", (double)ev->version);
    cJSON_AddItemToObject(o, "prev_value", json_value(ev->prev_value));
    cJSON_AddNumberToObject(o, "prev_version", (double)ev->prev_version);
    cJSON_AddBoolToObject(o, "deleted", ev->deleted);
    cJSON_AddNumberToObject(o, "revision", (double)ev->revision);
    cJSON_AddNumberToObject(o, "ts_ms", (double)ev->ts_ms);
    cJSON_AddStringToObject(o, "writer", ev->writer);
    return o;
}

/* Prints o on one line, and frees it. */
static void print_json_line(cJSON *o) {
    print_json(o);
    cJSON_Delete(o);
}

/* "ns/key = VALUE (version 3, revision 17)", or short: "key = VALUE (...)" */
static void print_entry(const Reel__V1__Entry *e, int full) {
    if (full)
        printf("%s/", e->namespace_);
    if (e->deleted)
        printf("%s (deleted, version %llu", e->key,
               (unsigned long long)e->version);
    else
        printf("%s = %s (version %llu", e->key, e->value,
               (unsigned long long)e->version);
    if (full)
        printf(", revision %llu", (unsigned long long)e->revision);
    printf(")\n");
}

/* " (was v2: {"a":0})"; nothing when the key had no version before. */
static void print_prev(const char *label, const Reel__V1__ValueEvent *ev) {
    if (ev->prev_version == 0)
        return;
    /* A tombstone has no value; "deleted" cannot be mistaken for JSON. */
    printf(" (%s v%llu: %s)", label, (unsigned long long)ev->prev_version,
           *ev->prev_value ? ev->prev_value : "deleted");
}

/* "v3 PUT {"a":1} (prev v2: {"a":0}) rev 17" */
static void print_history_event(const Reel__V1__ValueEvent *ev) {
    printf("v%llu %s", (unsigned long long)ev->version, event_type_name(ev));
    if (ev->type == REEL__V1__VALUE_EVENT__TYPE__PUT)
        printf(" %s", ev->value);
    print_prev("prev", ev);
    printf(" rev %llu\n", (unsigned long long)ev->revision);
}

/* "PUT ns/key v3 rev 17: {"a":1} (was v2: {"a":0})" */
static void print_watch_event(const Reel__V1__ValueEvent *ev) {
    if (ev->type == REEL__V1__VALUE_EVENT__TYPE__BOOTSTRAP_DONE) {
        printf("BOOTSTRAP_DONE rev %llu\n", (unsigned long long)ev->revision);
        return;
    }
    printf("%s %s/%s v%llu rev %llu", event_type_name(ev), ev->namespace_,
           ev->key, (unsigned long long)ev->version,
           (unsigned long long)ev->revision);
    if (ev->type == REEL__V1__VALUE_EVENT__TYPE__PUT)
        printf(": %s", ev->value);
    print_prev("was", ev);
    printf("\n");
}

/* -- Calls -- */

/* The packed message in a malloc'd buffer, or NULL when out of memory. */
static uint8_t *kv_pack(const void *msg, size_t *len) {
    const ProtobufCMessage *m = msg;
    uint8_t *buf;

    *len = protobuf_c_message_get_packed_size(m);
    buf = malloc(*len ? *len : 1);
    if (buf != NULL)
        protobuf_c_message_pack(m, buf);
    else
        fprintf(stderr, "reelctl: out of memory\n");
    return buf;
}

/*
 * Calls KV/rpc and unpacks the answer as desc. On failure says why, sets
 * *rc to the exit status and returns NULL.
 */
static void *kv_unary(ctl_t *ctl, const kv_args_t *a, const char *rpc,
                      const void *req, const ProtobufCMessageDescriptor *desc,
                      int *rc) {
    ProtobufCMessage *resp = NULL;
    reel_reply_t r = {0};
    char method[64], what[32];
    uint8_t *buf;
    size_t len;

    *rc = EXIT_FAIL;
    snprintf(method, sizeof(method), "/reel.v1.KV/%s", rpc);
    snprintf(what, sizeof(what), "kv %s", a->cmd->name);
    if ((buf = kv_pack(req, &len)) == NULL)
        goto out;
    if (reel_client_unary(ctl->client, method, buf, len, ctl->timeout_ms,
                          &r) != 0) {
        *rc = report_error(ctl, what, &r);
        goto out;
    }
    resp = protobuf_c_message_unpack(desc, NULL, r.len, r.body);
    if (resp == NULL)
        fprintf(stderr, "reelctl: %s: malformed response\n", what);
    else
        *rc = EXIT_OK;
out:
    reel_reply_fini(&r);
    free(buf);
    return resp;
}

/* Says on stderr where more is to be had, after what stdout already has. */
__attribute__((format(printf, 1, 2))) static void kv_hint(const char *fmt,
                                                          ...) {
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "reelctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}

/* Why NAMESPACE KEY has no value: never set, or deleted (e, the tombstone). */
static void kv_say_absent(const kv_args_t *a, const Reel__V1__Entry *e) {
    if (e != NULL && e->deleted)
        fprintf(stderr, "reelctl: %s/%s: not found (deleted at version %llu)\n",
                a->pos[0], a->pos[1], (unsigned long long)e->version);
    else
        fprintf(stderr, "reelctl: %s/%s: not found\n", a->pos[0], a->pos[1]);
}

static int kv_missing_entry(const kv_args_t *a) {
    fprintf(stderr, "reelctl: kv %s: malformed response (no entry)\n",
            a->cmd->name);
    return EXIT_FAIL;
}

/* -- Subcommands -- */

static int kv_set(ctl_t *ctl, const kv_args_t *a) {
    Reel__V1__SetValueRequest req = REEL__V1__SET_VALUE_REQUEST__INIT;
    Reel__V1__SetValueResponse *resp;
    int rc;

    if (kv_has(a, KF_CREATE) && kv_has(a, KF_IF_VERSION))
        return kv_usage_error(a, "--create and --if-version exclude each "
                                 "other");
    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    req.value = a->pos[2];
    if (kv_has(a, KF_CREATE))
        req.precondition = REEL__V1__PRECONDITION__PRECONDITION_ABSENT;
    if (kv_has(a, KF_IF_VERSION)) {
        req.precondition = REEL__V1__PRECONDITION__PRECONDITION_VERSION;
        req.expected_version = a->num[KF_IF_VERSION];
    }
    if (kv_has(a, KF_WRITER))
        req.writer = a->str[KF_WRITER];
    resp = kv_unary(ctl, a, "SetValue", &req,
                    &reel__v1__set_value_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    if (resp->entry == NULL) {
        rc = kv_missing_entry(a);
    } else if (ctl->json) {
        cJSON *o = entry_json(resp->entry);

        cJSON_AddNumberToObject(o, "prev_version", (double)resp->prev_version);
        print_json_line(o);
    } else {
        print_entry(resp->entry, 1);
    }
    reel__v1__set_value_response__free_unpacked(resp, NULL);
    return rc;
}

static int kv_get(ctl_t *ctl, const kv_args_t *a) {
    Reel__V1__GetValueRequest req = REEL__V1__GET_VALUE_REQUEST__INIT;
    Reel__V1__GetValueResponse *resp;
    const Reel__V1__Entry *e;
    int rc;

    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    resp = kv_unary(ctl, a, "GetValue", &req,
                    &reel__v1__get_value_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    e = resp->entry;
    rc = resp->found ? EXIT_OK : EXIT_FAIL;
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddBoolToObject(o, "found", resp->found);
        cJSON_AddItemToObject(o, "entry", entry_json(e));
        print_json_line(o);
    } else if (resp->found && e == NULL) {
        rc = kv_missing_entry(a);
    } else if (resp->found) {
        printf("%s\n", e->value);
    } else {
        kv_say_absent(a, e);
    }
    reel__v1__get_value_response__free_unpacked(resp, NULL);
    return rc;
}

static int kv_del(ctl_t *ctl, const kv_args_t *a) {
    Reel__V1__DeleteValueRequest req = REEL__V1__DELETE_VALUE_REQUEST__INIT;
    Reel__V1__DeleteValueResponse *resp;
    int rc;

    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    if (kv_has(a, KF_IF_VERSION)) {
        req.precondition = REEL__V1__PRECONDITION__PRECONDITION_VERSION;
        req.expected_version = a->num[KF_IF_VERSION];
    }
    if (kv_has(a, KF_WRITER))
        req.writer = a->str[KF_WRITER];
    resp = kv_unary(ctl, a, "DeleteValue", &req,
                    &reel__v1__delete_value_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    rc = resp->existed ? EXIT_OK : EXIT_FAIL;
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddBoolToObject(o, "existed", resp->existed);
        cJSON_AddItemToObject(o, "entry", entry_json(resp->entry));
        print_json_line(o);
    } else if (resp->existed && resp->entry == NULL) {
        rc = kv_missing_entry(a);
    } else if (resp->existed) {
        printf("deleted %s/%s (version %llu)\n", a->pos[0], a->pos[1],
               (unsigned long long)resp->entry->version);
    } else {
        kv_say_absent(a, resp->entry);
    }
    reel__v1__delete_value_response__free_unpacked(resp, NULL);
    return rc;
}

/*
 * Prints one page and says where the next one starts: a malloc'd cursor in
 * *next, or NULL when this was the last page (or --all was not given).
 */
static int kv_ls_page(ctl_t *ctl, const kv_args_t *a,
                      Reel__V1__ListValuesRequest *req, char **next) {
    Reel__V1__ListValuesResponse *resp;
    int rc;

    *next = NULL;
    resp = kv_unary(ctl, a, "ListValues", req,
                    &reel__v1__list_values_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    for (size_t i = 0; i < resp->n_entries; i++) {
        if (ctl->json)
            print_json_line(entry_json(resp->entries[i]));
        else
            print_entry(resp->entries[i], 0);
    }
    if (!resp->more) {
        /* done */
    } else if (!kv_has(a, KF_ALL)) {
        if (!ctl->json)
            kv_hint("more keys: --start-after %s, or --all",
                    resp->next_start_after);
    } else if (*resp->next_start_after == '\0' ||
               strcmp(resp->next_start_after, req->start_after) == 0) {
        /* Following it would ask for the same page forever. */
        fprintf(stderr, "reelctl: kv ls: the server said more but gave no "
                        "new cursor\n");
        rc = EXIT_FAIL;
    } else if ((*next = strdup(resp->next_start_after)) == NULL) {
        fprintf(stderr, "reelctl: out of memory\n");
        rc = EXIT_FAIL;
    }
    reel__v1__list_values_response__free_unpacked(resp, NULL);
    return rc;
}

static int kv_ls(ctl_t *ctl, const kv_args_t *a) {
    Reel__V1__ListValuesRequest req = REEL__V1__LIST_VALUES_REQUEST__INIT;
    char *cursor = NULL, *next;
    int rc;

    req.namespace_ = a->pos[0];
    if (a->npos > 1)
        req.prefix = a->pos[1];
    if (kv_has(a, KF_START_AFTER))
        req.start_after = a->str[KF_START_AFTER];
    req.limit = (uint32_t)a->num[KF_LIMIT];
    req.include_deleted = kv_has(a, KF_DELETED);
    for (;;) {
        rc = kv_ls_page(ctl, a, &req, &next);
        free(cursor);
        cursor = next;
        if (rc != EXIT_OK || cursor == NULL)
            break;
        req.start_after = cursor;
    }
    free(cursor);
    return rc;
}

static int kv_history(ctl_t *ctl, const kv_args_t *a) {
    Reel__V1__ValueHistoryRequest req = REEL__V1__VALUE_HISTORY_REQUEST__INIT;
    Reel__V1__ValueHistoryResponse *resp;
    int rc;

    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    req.from_version = a->num[KF_FROM_VERSION];
    req.limit = (uint32_t)a->num[KF_LIMIT];
    resp = kv_unary(ctl, a, "ValueHistory", &req,
                    &reel__v1__value_history_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    for (size_t i = 0; i < resp->n_events; i++) {
        if (ctl->json)
            print_json_line(event_json(resp->events[i]));
        else
            print_history_event(resp->events[i]);
    }
    if (resp->more && !ctl->json)
        kv_hint("more history: --from-version %llu",
                (unsigned long long)resp->next_from_version);
    reel__v1__value_history_response__free_unpacked(resp, NULL);
    return rc;
}

typedef struct kv_watch_state {
    const ctl_t *ctl;
    int failed; /* we cancelled: the reason is already printed */
} kv_watch_state_t;

static int kv_watch_event(void *arg, const uint8_t *msg, size_t len) {
    kv_watch_state_t *w = arg;
    Reel__V1__ValueEvent *ev;

    ev = reel__v1__value_event__unpack(NULL, len, msg);
    if (ev == NULL) {
        fprintf(stderr, "reelctl: kv watch: malformed event\n");
        w->failed = 1;
        return 1;
    }
    if (w->ctl->json)
        print_json_line(event_json(ev));
    else
        print_watch_event(ev);
    reel__v1__value_event__free_unpacked(ev, NULL);
    /* Line by line, so a pipe's reader sees each event as it happens. */
    if (fflush(stdout) != 0) {
        w->failed = 1;
        return 1;
    }
    return 0;
}

static int kv_watch(ctl_t *ctl, const kv_args_t *a) {
    Reel__V1__WatchValueRequest req = REEL__V1__WATCH_VALUE_REQUEST__INIT;
    kv_watch_state_t w = {ctl, 0};
    reel_reply_t r = {0};
    uint8_t *buf;
    size_t len;
    int rc = EXIT_FAIL;

    if (kv_has(a, KF_FROM_VERSION) + kv_has(a, KF_FROM_REVISION) +
            kv_has(a, KF_NOW) > 1)
        return kv_usage_error(a, "use one of --from-version, --from-revision "
                                 "and --now");
    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    if (kv_has(a, KF_NOW))
        req.start = REEL__V1__WATCH_VALUE_REQUEST__START__NOW;
    if (kv_has(a, KF_FROM_VERSION)) {
        req.start = REEL__V1__WATCH_VALUE_REQUEST__START__FROM_VERSION;
        req.from_version = a->num[KF_FROM_VERSION];
    }
    if (kv_has(a, KF_FROM_REVISION)) {
        req.start = REEL__V1__WATCH_VALUE_REQUEST__START__FROM_REVISION;
        req.from_revision = a->num[KF_FROM_REVISION];
    }
    if ((buf = kv_pack(&req, &len)) == NULL)
        goto out;
    /* A watch runs until interrupted: no deadline, whatever --timeout says. */
    reel_client_stream(ctl->client, "/reel.v1.KV/WatchValue", buf, len, 0,
                       kv_watch_event, &w, &r);
    if (w.failed)
        rc = EXIT_FAIL;
    else if (r.code != 0)
        rc = report_error(ctl, "kv watch", &r);
    else
        rc = EXIT_OK;
out:
    reel_reply_fini(&r);
    free(buf);
    return rc;
}

static const kv_command_t kv_commands[] = {
    {"set", {"NAMESPACE", "KEY", "VALUE"}, 3,
     KF(KF_CREATE) | KF(KF_IF_VERSION) | KF(KF_WRITER),
     "set KEY to VALUE, JSON text: '{\"n\":1}', '\"text\"', 42\n"
     "      --create: only if absent; --if-version: only if at version N",
     kv_set},
    {"get", {"NAMESPACE", "KEY"}, 2, 0,
     "print KEY's value (exit 1 if it is missing or deleted)", kv_get},
    {"del", {"NAMESPACE", "KEY"}, 2, KF(KF_IF_VERSION) | KF(KF_WRITER),
     "delete KEY, leaving a tombstone (exit 1 if there was nothing)", kv_del},
    {"ls", {"NAMESPACE", "PREFIX"}, 1,
     KF(KF_LIMIT) | KF(KF_START_AFTER) | KF(KF_ALL) | KF(KF_DELETED),
     "list keys in key order\n"
     "      --limit: page size; --all: every page; --deleted: tombstones too",
     kv_ls},
    {"history", {"NAMESPACE", "KEY"}, 2, KF(KF_FROM_VERSION) | KF(KF_LIMIT),
     "show KEY's retained versions after --from-version N", kv_history},
    {"watch", {"NAMESPACE", "KEY_OR_PATTERN"}, 2,
     KF(KF_FROM_VERSION) | KF(KF_FROM_REVISION) | KF(KF_NOW),
     "print current values, then changes as they happen, until Ctrl-C\n"
     "      (no deadline); KEY_OR_PATTERN: a key, a.*.c or orders.>",
     kv_watch},
    {NULL, {NULL}, 0, 0, NULL, NULL},
};

static int cmd_kv(ctl_t *ctl, int argc, char **argv) {
    int sub = kv_find_subcommand(argc, argv);
    kv_args_t a;
    int rc;

    for (const kv_command_t *c = kv_commands; sub > 0 && c->name != NULL;
         c++) {
        if (strcmp(argv[sub], c->name) != 0)
            continue;
        if ((rc = kv_parse(c, argc, argv, sub, &a)) != 0)
            return rc;
        return c->run(ctl, &a);
    }
    if (sub > 0)
        fprintf(stderr, "reelctl kv: unknown subcommand \"%s\"\n", argv[sub]);
    else
        fprintf(stderr, "reelctl kv: missing subcommand\n");
    fprintf(stderr, "expected one of:");
    for (const kv_command_t *c = kv_commands; c->name != NULL; c++)
        fprintf(stderr, " %s", c->name);
    fprintf(stderr, " (try reelctl help)\n");
    return EXIT_USAGE;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: reelctl [--addr HOST:PORT] [--timeout DURATION] [--json] "
            "COMMAND [ARGS]\n\n"
            "commands:\n");
    for (const command_t *c = commands; c->name != NULL; c++)
        fprintf(out, "  %-8s %-12s %s\n", c->name, c->args, c->help);
    kv_usage(out);
    fprintf(out,
            "\nflags (anywhere on the line):\n"
            "  --addr HOST:PORT     server address [REEL_ADDR] (default "
            "127.0.0.1:7878)\n"
            "  --timeout DURATION   per-call deadline: 500ms, 5s, 1m "
            "(default 5s)\n"
            "  --json               print JSON instead of text\n"
            "  -h, --help           show this help\n"
            "  -V, --version        show the version\n"
            "\nexit status: 0 success, 1 the server answered with an error "
            "or is unreachable, 2 usage error\n");
}

static int cmd_help(ctl_t *ctl, int argc, char **argv) {
    (void)ctl;
    (void)argc;
    (void)argv;
    usage(stdout);
    return EXIT_OK;
}

static const command_t commands[] = {
    {"health", "[SERVICE]", "check the server's health (exit 0 when SERVING)",
     cmd_health},
    {"status", "", "show the server's version, revision and data dir",
     cmd_status},
    {"kv", "SUBCOMMAND", "versioned key-value state (subcommands below)",
     cmd_kv},
    {"help", "", "show this help", cmd_help},
    {NULL, NULL, NULL, NULL},
};

/*
 * Takes the global flags out of argv wherever they are, leaving the command
 * and its own arguments in order. Returns the new argc, or -1.
 */
static int take_global_flags(ctl_t *ctl, int argc, char **argv) {
    int out = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        size_t flen = 0;

        if (strcmp(a, "--") == 0) {
            while (i < argc)
                argv[out++] = argv[i++];
            break;
        }
        if (strcmp(a, "--json") == 0) {
            ctl->json = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(EXIT_OK);
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("reelctl %s\n", REEL_VERSION);
            exit(EXIT_OK);
        }
        if (strncmp(a, "--addr", 6) == 0 && (a[6] == '\0' || a[6] == '='))
            flen = 6;
        else if (strncmp(a, "--timeout", 9) == 0 &&
                 (a[9] == '\0' || a[9] == '='))
            flen = 9;
        if (flen == 0) {
            argv[out++] = argv[i];
            continue;
        }
        if (a[flen] == '=')
            val = a + flen + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            fprintf(stderr, "reelctl: %.*s needs a value\n", (int)flen, a);
            return -1;
        }
        if (flen == 6) {
            ctl->addr = val;
        } else if ((ctl->timeout_ms = parse_duration_ms(val)) <= 0) {
            fprintf(stderr,
                    "reelctl: --timeout: \"%s\" is not a positive duration "
                    "(e.g. 500ms, 5s, 1m)\n",
                    val);
            return -1;
        }
    }
    argv[out] = NULL;
    return out;
}

int main(int argc, char **argv) {
    ctl_t ctl = {0};
    int rc;

    ctl.addr = getenv("REEL_ADDR") ? getenv("REEL_ADDR") : "127.0.0.1:7878";
    ctl.timeout_ms = 5000;
    argc = take_global_flags(&ctl, argc, argv);
    if (argc < 0)
        return EXIT_USAGE;
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    for (const command_t *c = commands; c->name != NULL; c++) {
        if (strcmp(argv[1], c->name) != 0)
            continue;
        ctl.client = reel_client_create(ctl.addr);
        if (ctl.client == NULL) {
            fprintf(stderr, "reelctl: out of memory\n");
            return EXIT_FAIL;
        }
        rc = c->run(&ctl, argc - 1, argv + 1);
        reel_client_destroy(ctl.client);
        return rc;
    }
    fprintf(stderr, "reelctl: unknown command \"%s\" (try reelctl help)\n",
            argv[1]);
    return EXIT_USAGE;
}
