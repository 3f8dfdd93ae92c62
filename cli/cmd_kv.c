/*
 * cli/cmd_kv.c: reelctl kv set|get|del|ls|history|watch, on reel.v1.KV.
 *
 * Values print as stored, each on one line (ctl_put_value), in text and
 * JSON alike. set answers with the version and revision it wrote, not the
 * value the user just gave (--json: the whole entry; -q: the version
 * alone, for scripts). watch of several keys or patterns names each
 * line's watch: "[orders.>] PUT ns/orders.1 ...", "watch" in JSON.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "reel/v1/kv.pb-c.h"
#include "client/client.h"
#include "cli/ctl.h"

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
    KF_QUIET,
    KF_COUNT
};

static const ctl_flag_spec_t kv_flags[KF_COUNT] = {
    [KF_CREATE] = {"--create", CTL_BOOL, NULL, 0, 0},
    [KF_IF_VERSION] = {"--if-version", CTL_NUM, "N", UINT64_MAX, 0},
    [KF_WRITER] = {"--writer", CTL_STR, "NAME", 0, 0},
    [KF_FROM_VERSION] = {"--from-version", CTL_NUM, "N", UINT64_MAX, 0},
    [KF_FROM_REVISION] = {"--from-revision", CTL_NUM, "N", UINT64_MAX, 0},
    [KF_NOW] = {"--now", CTL_BOOL, NULL, 0, 0},
    [KF_LIMIT] = {"--limit", CTL_NUM, "N", UINT32_MAX, 0},
    [KF_START_AFTER] = {"--start-after", CTL_STR, "KEY", 0, 0},
    [KF_ALL] = {"--all", CTL_BOOL, NULL, 0, 0},
    [KF_DELETED] = {"--deleted", CTL_BOOL, NULL, 0, 0},
    [KF_QUIET] = {"--quiet", CTL_BOOL, NULL, 0, 0, "-q"},
};

/* -- Printing entries and events, shared by the subcommands -- */

static cJSON *entry_json(const Reel__V1__Entry *e) {
    cJSON *o;

    if (e == NULL)
        return cJSON_CreateNull();
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "namespace", e->namespace_);
    cJSON_AddStringToObject(o, "key", e->key);
    cJSON_AddItemToObject(o, "value", ctl_json_value(e->value));
    cJSON_AddNumberToObject(o, "version", (double)e->version);
    cJSON_AddBoolToObject(o, "deleted", e->deleted);
    cJSON_AddNumberToObject(o, "revision", (double)e->revision);
    cJSON_AddNumberToObject(o, "updated_at_ms", (double)e->updated_at_ms);
    cJSON_AddStringToObject(o, "writer", e->writer);
    return o;
}

static const char *event_type_name(const Reel__V1__ValueEvent *ev) {
    return ctl_enum_name(&reel__v1__value_event__type__descriptor,
                         (int)ev->type);
}

/* "key = VALUE (version 3)", or "key (deleted, version 3)" */
static void print_entry(const Reel__V1__Entry *e) {
    if (e->deleted) {
        printf("%s (deleted, version %llu)\n", ctl_name(e->key),
               (unsigned long long)e->version);
        return;
    }
    printf("%s = ", ctl_name(e->key));
    ctl_put_value(e->value);
    printf(" (version %llu)\n", (unsigned long long)e->version);
}

/* " (was v2: {"a":0})"; nothing when the key had no version before. */
static void print_prev(const char *label, const Reel__V1__ValueEvent *ev) {
    if (ev->prev_version == 0)
        return;
    printf(" (%s v%llu: ", label, (unsigned long long)ev->prev_version);
    /* A tombstone has no value; "deleted" cannot be mistaken for JSON. */
    if (*ev->prev_value)
        ctl_put_value(ev->prev_value);
    else
        printf("deleted");
    printf(")");
}

/* "v3 PUT {"a":1} (prev v2: {"a":0}) rev 17" */
static void print_history_event(const Reel__V1__ValueEvent *ev) {
    printf("v%llu %s", (unsigned long long)ev->version, event_type_name(ev));
    if (ev->type == REEL__V1__VALUE_EVENT__TYPE__PUT) {
        printf(" ");
        ctl_put_value(ev->value);
    }
    print_prev("prev", ev);
    printf(" rev %llu\n", (unsigned long long)ev->revision);
}

/*
 * "PUT ns/key v3 rev 17: {"a":1} (was v2: {"a":0})", after "[WATCH] "
 * when the stream has several watches.
 */
static void print_watch_event(const Reel__V1__ValueEvent *ev,
                              const char *watched) {
    if (watched != NULL)
        printf("[%s] ", ctl_name(watched));
    if (ev->type == REEL__V1__VALUE_EVENT__TYPE__BOOTSTRAP_DONE) {
        printf("BOOTSTRAP_DONE rev %llu\n", (unsigned long long)ev->revision);
        return;
    }
    printf("%s %s/%s v%llu rev %llu", event_type_name(ev), ev->namespace_,
           ctl_name(ev->key), (unsigned long long)ev->version,
           (unsigned long long)ev->revision);
    if (ev->type == REEL__V1__VALUE_EVENT__TYPE__PUT) {
        printf(": ");
        ctl_put_value(ev->value);
    }
    print_prev("was", ev);
    printf("\n");
}


/* Why NAMESPACE KEY has no value: never set, or deleted (e, the tombstone). */
static void kv_say_absent(const ctl_args_t *a, const Reel__V1__Entry *e) {
    if (e != NULL && e->deleted)
        fprintf(stderr, "reelctl: %s/%s: not found (deleted at version %llu)\n",
                ctl_name(a->pos[0]), ctl_name(a->pos[1]),
                (unsigned long long)e->version);
    else
        fprintf(stderr, "reelctl: %s/%s: not found\n", ctl_name(a->pos[0]),
                ctl_name(a->pos[1]));
}

static int kv_missing_entry(const ctl_args_t *a) {
    fprintf(stderr, "reelctl: kv %s: malformed response (no entry)\n",
            a->cmd->name);
    return EXIT_FAIL;
}

/* -- Subcommands -- */

static int kv_set(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__SetValueRequest req = REEL__V1__SET_VALUE_REQUEST__INIT;
    Reel__V1__SetValueResponse *resp;
    const char *value;
    char *buf;
    int rc;

    if (ctl_has(a, KF_CREATE) && ctl_has(a, KF_IF_VERSION))
        return ctl_usage_error(a, "--create and --if-version exclude each "
                                 "other");
    if (ctl_has(a, KF_QUIET) && ctl->json)
        return ctl_usage_error(a, "--quiet and --json exclude each other");
    if ((rc = ctl_read_json_arg(a, "VALUE", a->pos[2], &buf, &value)) != 0)
        return rc;
    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    req.value = (char *)value;
    ctl->typed_json = value;
    ctl->typed_json_name = "VALUE";
    if (ctl_has(a, KF_CREATE))
        req.precondition = REEL__V1__PRECONDITION__PRECONDITION_ABSENT;
    if (ctl_has(a, KF_IF_VERSION)) {
        req.precondition = REEL__V1__PRECONDITION__PRECONDITION_VERSION;
        req.expected_version = a->num[KF_IF_VERSION];
    }
    if (ctl_has(a, KF_WRITER))
        req.writer = a->str[KF_WRITER];
    resp = ctl_call(ctl, a, "SetValue", &req,
                    &reel__v1__set_value_response__descriptor, &rc);
    ctl->typed_json = NULL;
    if (resp == NULL)
        goto out;
    if (resp->entry == NULL) {
        rc = kv_missing_entry(a);
    } else if (ctl->json) {
        cJSON *o = entry_json(resp->entry);

        cJSON_AddNumberToObject(o, "prev_version", (double)resp->prev_version);
        ctl_print_json_line(o);
    } else if (ctl_has(a, KF_QUIET)) {
        printf("%llu\n", (unsigned long long)resp->entry->version);
    } else {
        /* The value is what the user just gave: not worth a megabyte. */
        printf("set %s/%s version %llu (revision %llu)\n",
               ctl_name(resp->entry->namespace_), ctl_name(resp->entry->key),
               (unsigned long long)resp->entry->version,
               (unsigned long long)resp->entry->revision);
    }
    reel__v1__set_value_response__free_unpacked(resp, NULL);
out:
    free(buf);
    return rc;
}

static int kv_get(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__GetValueRequest req = REEL__V1__GET_VALUE_REQUEST__INIT;
    Reel__V1__GetValueResponse *resp;
    const Reel__V1__Entry *e;
    int rc;

    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    resp = ctl_call(ctl, a, "GetValue", &req,
                    &reel__v1__get_value_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    e = resp->entry;
    rc = resp->found ? EXIT_OK : EXIT_FAIL;
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddBoolToObject(o, "found", resp->found);
        cJSON_AddItemToObject(o, "entry", entry_json(e));
        ctl_print_json_line(o);
    } else if (resp->found && e == NULL) {
        rc = kv_missing_entry(a);
    } else if (resp->found) {
        ctl_put_value(e->value);
        printf("\n");
    } else {
        kv_say_absent(a, e);
    }
    reel__v1__get_value_response__free_unpacked(resp, NULL);
    return rc;
}

static int kv_del(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__DeleteValueRequest req = REEL__V1__DELETE_VALUE_REQUEST__INIT;
    Reel__V1__DeleteValueResponse *resp;
    int rc;

    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    if (ctl_has(a, KF_IF_VERSION)) {
        req.precondition = REEL__V1__PRECONDITION__PRECONDITION_VERSION;
        req.expected_version = a->num[KF_IF_VERSION];
    }
    if (ctl_has(a, KF_WRITER))
        req.writer = a->str[KF_WRITER];
    resp = ctl_call(ctl, a, "DeleteValue", &req,
                    &reel__v1__delete_value_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    rc = resp->existed ? EXIT_OK : EXIT_FAIL;
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddBoolToObject(o, "existed", resp->existed);
        cJSON_AddItemToObject(o, "entry", entry_json(resp->entry));
        ctl_print_json_line(o);
    } else if (resp->existed && resp->entry == NULL) {
        rc = kv_missing_entry(a);
    } else if (resp->existed) {
        printf("deleted %s/%s (version %llu)\n", ctl_name(a->pos[0]),
               ctl_name(a->pos[1]),
               (unsigned long long)resp->entry->version);
    } else {
        kv_say_absent(a, resp->entry);
    }
    reel__v1__delete_value_response__free_unpacked(resp, NULL);
    return rc;
}

/*
 * Prints one page and says where the next one starts: a malloc'd cursor in
 * *next, or NULL when this was the last page or --limit asked for one
 * (without --all). Pages end by bytes too, so any page may say more.
 */
static int kv_ls_page(ctl_t *ctl, const ctl_args_t *a,
                      Reel__V1__ListValuesRequest *req, char **next) {
    Reel__V1__ListValuesResponse *resp;
    int rc;

    *next = NULL;
    resp = ctl_call(ctl, a, "ListValues", req,
                    &reel__v1__list_values_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    for (size_t i = 0; i < resp->n_entries; i++) {
        if (ctl->json)
            ctl_print_json_line(entry_json(resp->entries[i]));
        else
            print_entry(resp->entries[i]);
    }
    if (!resp->more) {
        /* done */
    } else if (ctl_has(a, KF_LIMIT) && !ctl_has(a, KF_ALL)) {
        if (!ctl->json)
            ctl_hint("more keys: --start-after %s, or --all",
                     ctl_name(resp->next_start_after));
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

static int kv_ls(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ListValuesRequest req = REEL__V1__LIST_VALUES_REQUEST__INIT;
    char *cursor = NULL, *next;
    int rc;

    req.namespace_ = a->pos[0];
    if (a->npos > 1)
        req.prefix = a->pos[1];
    if (ctl_has(a, KF_START_AFTER))
        req.start_after = a->str[KF_START_AFTER];
    req.limit = (uint32_t)a->num[KF_LIMIT];
    req.include_deleted = ctl_has(a, KF_DELETED);
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

/*
 * Prints one page; *more says whether to ask for another from
 * req->from_version, which it advances: every page, unless --limit asked
 * for one.
 */
static int kv_history_page(ctl_t *ctl, const ctl_args_t *a,
                           Reel__V1__ValueHistoryRequest *req, int *more) {
    Reel__V1__ValueHistoryResponse *resp;
    int rc;

    *more = 0;
    resp = ctl_call(ctl, a, "ValueHistory", req,
                    &reel__v1__value_history_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    for (size_t i = 0; i < resp->n_events; i++) {
        if (ctl->json)
            ctl_print_json_line(ctl_value_event_json(resp->events[i]));
        else
            print_history_event(resp->events[i]);
    }
    if (!resp->more) {
        /* done */
    } else if (ctl_has(a, KF_LIMIT) && !ctl_has(a, KF_ALL)) {
        if (!ctl->json)
            ctl_hint("more history: --from-version %llu, or --all",
                     (unsigned long long)resp->next_from_version);
    } else if (resp->next_from_version <= req->from_version) {
        /* Following it would ask for the same page forever. */
        fprintf(stderr, "reelctl: kv history: the server said more but "
                        "gave no new cursor\n");
        rc = EXIT_FAIL;
    } else {
        req->from_version = resp->next_from_version;
        *more = 1;
    }
    reel__v1__value_history_response__free_unpacked(resp, NULL);
    return rc;
}

static int kv_history(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ValueHistoryRequest req = REEL__V1__VALUE_HISTORY_REQUEST__INIT;
    int rc, more;

    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    req.from_version = a->num[KF_FROM_VERSION];
    req.limit = (uint32_t)a->num[KF_LIMIT];
    do
        rc = kv_history_page(ctl, a, &req, &more);
    while (rc == EXIT_OK && more);
    return rc;
}

typedef struct kv_watch_state {
    const ctl_t *ctl;
    char **watched; /* several watches: the key or pattern of each */
    size_t n_watched;
    int failed;     /* we cancelled: the reason is already printed */
    int gone;       /* we cancelled: stdout's reader left */
} kv_watch_state_t;

/* One event as a line; `watched` names its watch when there are several. */
static int kv_watch_print(kv_watch_state_t *w, const Reel__V1__ValueEvent *ev,
                          const char *watched) {
    int out;

    if (w->ctl->json) {
        cJSON *o = ctl_value_event_json(ev);

        if (o != NULL && watched != NULL)
            cJSON_AddStringToObject(o, "watch", watched);
        ctl_print_json_line(o);
    } else {
        print_watch_event(ev, watched);
    }
    /* Line by line, so a pipe's reader sees each event as it happens. */
    if ((out = ctl_flush()) != 0) {
        w->gone = out > 0;
        w->failed = out < 0;
        return 1;
    }
    return 0;
}

/* Between events: a reader that left ends the watch now, not at the next. */
static int kv_watch_idle(void *arg) {
    kv_watch_state_t *w = arg;

    w->gone = ctl_stdout_gone();
    return w->gone;
}

/* A KV.WatchValueBatches message: its events in order. */
static int kv_watch_event(void *arg, const uint8_t *msg, size_t len) {
    kv_watch_state_t *w = arg;
    Reel__V1__ValueEventBatch *b;
    int rc = 0;

    b = reel__v1__value_event_batch__unpack(NULL, len, msg);
    if (b == NULL) {
        fprintf(stderr, "reelctl: kv watch: malformed event\n");
        w->failed = 1;
        return 1;
    }
    for (size_t i = 0; i < b->n_events && rc == 0; i++)
        rc = kv_watch_print(w, b->events[i], NULL);
    reel__v1__value_event_batch__free_unpacked(b, NULL);
    return rc;
}

/* A KV.WatchValuesBatches message: each event names its watch. */
static int kv_watches_event(void *arg, const uint8_t *msg, size_t len) {
    kv_watch_state_t *w = arg;
    Reel__V1__WatchValuesEventBatch *b;
    int rc = 0;

    b = reel__v1__watch_values_event_batch__unpack(NULL, len, msg);
    for (size_t i = 0; b != NULL && i < b->n_events; i++)
        if (b->events[i]->event == NULL || b->events[i]->watch >= w->n_watched)
            rc = -1;
    if (b == NULL || rc != 0) {
        fprintf(stderr, "reelctl: kv watch: malformed event\n");
        if (b != NULL)
            reel__v1__watch_values_event_batch__free_unpacked(b, NULL);
        w->failed = 1;
        return 1;
    }
    for (size_t i = 0; i < b->n_events && rc == 0; i++)
        rc = kv_watch_print(w, b->events[i]->event,
                            w->watched[b->events[i]->watch]);
    reel__v1__watch_values_event_batch__free_unpacked(b, NULL);
    return rc;
}

static int kv_watch(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__WatchValueRequest req = REEL__V1__WATCH_VALUE_REQUEST__INIT;
    Reel__V1__WatchValuesRequest many = REEL__V1__WATCH_VALUES_REQUEST__INIT;
    Reel__V1__WatchValueRequest *each = NULL, **ptrs = NULL;
    char **watched = NULL;
    kv_watch_state_t w = {ctl, NULL, 0, 0, 0};
    reel_reply_t r = {0};
    uint8_t *buf = NULL;
    size_t len;
    int rc = EXIT_FAIL;

    if (ctl_has(a, KF_FROM_VERSION) + ctl_has(a, KF_FROM_REVISION) +
            ctl_has(a, KF_NOW) > 1)
        return ctl_usage_error(a, "use one of --from-version, --from-revision "
                                 "and --now");
    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    if (ctl_has(a, KF_NOW))
        req.start = REEL__V1__WATCH_VALUE_REQUEST__START__NOW;
    if (ctl_has(a, KF_FROM_VERSION)) {
        req.start = REEL__V1__WATCH_VALUE_REQUEST__START__FROM_VERSION;
        req.from_version = a->num[KF_FROM_VERSION];
    }
    if (ctl_has(a, KF_FROM_REVISION)) {
        req.start = REEL__V1__WATCH_VALUE_REQUEST__START__FROM_REVISION;
        req.from_revision = a->num[KF_FROM_REVISION];
    }
    if (a->nrest == 0) {
        if ((buf = ctl_pack(&req, &len)) == NULL)
            goto out;
        /* A watch runs until interrupted: no deadline, whatever --timeout
         * says. */
        reel_client_stream_idle(ctl->client, "/reel.v1.KV/WatchValueBatches",
                                buf, len, 0, kv_watch_event, kv_watch_idle,
                                CTL_IDLE_MS, &w, &r);
    } else {
        /* Several keys or patterns: one KV.WatchValuesBatches stream, a
         * watch each, all starting alike. */
        size_t n = a->nrest + 1;

        each = calloc(n, sizeof(*each));
        ptrs = calloc(n, sizeof(*ptrs));
        watched = calloc(n, sizeof(*watched));
        if (each == NULL || ptrs == NULL || watched == NULL) {
            fprintf(stderr, "reelctl: out of memory\n");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            each[i] = req;
            each[i].key = watched[i] = i == 0 ? a->pos[1] : a->rest[i - 1];
            ptrs[i] = &each[i];
        }
        many.n_watches = n;
        many.watches = ptrs;
        w.watched = watched;
        w.n_watched = n;
        if ((buf = ctl_pack(&many, &len)) == NULL)
            goto out;
        reel_client_stream_idle(ctl->client, "/reel.v1.KV/WatchValuesBatches",
                                buf, len, 0, kv_watches_event, kv_watch_idle,
                                CTL_IDLE_MS, &w, &r);
    }
    if (w.failed)
        rc = EXIT_FAIL;
    else if (w.gone)
        rc = EXIT_OK; /* `kv watch | head`: the reader had what it wanted */
    else if (r.code != 0)
        rc = ctl_report_error(ctl, "kv watch", &r);
    else
        rc = EXIT_OK;
out:
    reel_reply_fini(&r);
    free(buf);
    free(each);
    free(ptrs);
    free(watched);
    return rc;
}

static const ctl_command_t kv_commands[] = {
    {"set", {"NAMESPACE", "KEY", "VALUE"}, 3,
     CTL_F(KF_CREATE) | CTL_F(KF_IF_VERSION) | CTL_F(KF_WRITER) |
         CTL_F(KF_QUIET),
     0,
     "set KEY to VALUE, JSON text: '{\"n\":1}', '\"text\"', 42; - reads it "
     "from\n"
     "      standard input, @FILE from a file; prints the version written\n"
     "      --create: only if absent (else ALREADY_EXISTS); --if-version: "
     "only\n"
     "      if at version N (else ABORTED); -q, --quiet: print the version "
     "alone",
     kv_set},
    {"get", {"NAMESPACE", "KEY"}, 2, 0, 0,
     "print KEY's value (exit 1 if it is missing or deleted)", kv_get},
    {"del", {"NAMESPACE", "KEY"}, 2, CTL_F(KF_IF_VERSION) | CTL_F(KF_WRITER),
     0, "delete KEY, leaving a tombstone (exit 1 if there was nothing)",
     kv_del},
    {"ls", {"NAMESPACE", "PREFIX"}, 1,
     CTL_F(KF_LIMIT) | CTL_F(KF_START_AFTER) | CTL_F(KF_ALL) |
         CTL_F(KF_DELETED),
     0,
     "list keys in key order, every page\n"
     "      --limit N: one page of at most N (--all: every page, N at a "
     "time);\n"
     "      --deleted: tombstones too",
     kv_ls},
    {"history", {"NAMESPACE", "KEY"}, 2,
     CTL_F(KF_FROM_VERSION) | CTL_F(KF_LIMIT) | CTL_F(KF_ALL), 0,
     "show KEY's retained versions after --from-version N\n"
     "      --limit N: one page of at most N (--all: every page, N at a "
     "time)",
     kv_history},
    {"watch", {"NAMESPACE", "KEY_OR_PATTERN..."}, 2,
     CTL_F(KF_FROM_VERSION) | CTL_F(KF_FROM_REVISION) | CTL_F(KF_NOW), 0,
     "print current values, then changes as they happen, until Ctrl-C\n"
     "      or stdout's reader leaves (no deadline); KEY_OR_PATTERN: a key,\n"
     "      a.*.c or orders.>; several share one stream, each line naming its\n"
     "      watch: [orders.>] PUT ...; --from-version/--from-revision 0:\n"
     "      from the oldest retained",
     kv_watch},
    {NULL, {NULL}, 0, 0, 0, NULL, NULL},
};

const ctl_group_t ctl_kv_group = {
    "kv", "reel.v1.KV", kv_flags, KF_COUNT, kv_commands,
};
