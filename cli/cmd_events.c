/*
 * cli/cmd_events.c: reelctl events tail|head|consumers|rm-consumer|ack, on
 * reel.v1.Wal.
 *
 * tail prints one JSON line per event, with or without --json:
 * {"revision", "subject", "type", "ts_ms", "body"}, the body as the run,
 * journal, kv and signal groups print it with --json (null when there is
 * none), stored JSON in it byte for byte. PROGRESS events are left out
 * unless --progress. Each line is flushed as it is printed, so a pipe's
 * reader sees each event at once. The stream has no deadline (--timeout
 * bounds only the acks); it ends when the server ends it: exit 0 if it
 * ended OK, 1 with its error; or when stdout's reader leaves (`events
 * tail | head -1`), noticed at the next write or, idle, within
 * CTL_IDLE_MS: exit 0, after acknowledging what was written.
 *
 * --ack acknowledges what tail printed for --consumer, in batches: once 100
 * events are unacknowledged, or once 500 ms passed since the last ack
 * (looked at on each message and every CTL_IDLE_MS without one), and the
 * last one printed when the stream ends. Killed (Ctrl-C), tail may leave up to
 * a batch unacknowledged: the consumer gets those again (at least once).
 * A PROGRESS event's revision is acknowledged like an event's: the server
 * sends it once everything up to it was sent or filtered out. An
 * ack is fail-stop: tail says why and exits 1 rather than print more that
 * it cannot acknowledge.
 *
 * --takeover (with --consumer) ends the stream of the subscriber holding
 * the consumer, if any (it ends ABORTED), and takes its place: for one
 * that hangs before the server finds it gone.
 *
 * A consumer is printed as "NAME acked REV pending N [behind R] [holding B
 * bytes] [active] [(pattern P)] [invalidated at TIME: WHY]" or, with
 * --json, as one object holding every field. pending is the events still
 * to receive (those matching the pattern), ">=N" when it was counted over
 * the first 10,000 revisions only; behind, shown when it differs, counts
 * every revision after the cursor; holding, the bytes of its
 * unacknowledged events when it is what keeps events past the retention
 * limits.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "reel/v1/wal.pb-c.h"
#include "client/client.h"
#include "cli/ctl.h"

/* The order here is the order of the usage text. */
enum events_flag {
    EF_FROM,
    EF_SUBJECT,
    EF_CONSUMER,
    EF_ACK,
    EF_PROGRESS,
    EF_TAKEOVER,
    EF_COUNT
};

static const ctl_flag_spec_t events_flags[EF_COUNT] = {
    [EF_FROM] = {"--from", CTL_NUM, "REV", UINT64_MAX, 0},
    [EF_SUBJECT] = {"--subject", CTL_STR, "PATTERN", 0, 0},
    [EF_CONSUMER] = {"--consumer", CTL_STR, "NAME", 0, 0},
    [EF_ACK] = {"--ack", CTL_BOOL, NULL, 0, 0},
    [EF_PROGRESS] = {"--progress", CTL_BOOL, NULL, 0, 0},
    [EF_TAKEOVER] = {"--takeover", CTL_BOOL, NULL, 0, 0},
};

#define EF(f) CTL_F(f)

/* tail --ack: at most this many events, or this long, between acks. */
#define ACK_EVERY_EVENTS 100
#define ACK_EVERY_MS 500

/* ---- Printing ------------------------------------------------------------ */

static cJSON *event_json(const Reel__V1__Event *ev) {
    cJSON *o = cJSON_CreateObject();
    cJSON *body = NULL;

    switch (ev->body_case) {
    case REEL__V1__EVENT__BODY_ENTRY:
        if (ev->entry != NULL)
            body = ctl_journal_entry_json(ev->entry);
        break;
    case REEL__V1__EVENT__BODY_RUN:
        if (ev->run != NULL)
            body = ctl_run_json(ev->run);
        break;
    case REEL__V1__EVENT__BODY_VALUE:
        if (ev->value != NULL)
            body = ctl_value_event_json(ev->value);
        break;
    case REEL__V1__EVENT__BODY_SIGNAL:
        if (ev->signal != NULL)
            body = ctl_signal_json(ev->signal);
        break;
    case REEL__V1__EVENT__BODY_ARTIFACT:
        if (ev->artifact != NULL)
            body = ctl_artifact_json(ev->artifact);
        break;
    default:
        break;
    }
    cJSON_AddNumberToObject(o, "revision", (double)ev->revision);
    cJSON_AddStringToObject(o, "subject", ev->subject);
    cJSON_AddStringToObject(
        o, "type",
        ctl_enum_name(&reel__v1__event__type__descriptor, (int)ev->type));
    cJSON_AddNumberToObject(o, "ts_ms", (double)ev->ts_ms);
    cJSON_AddItemToObject(o, "body", body != NULL ? body : cJSON_CreateNull());
    return o;
}

static cJSON *consumer_json(const Reel__V1__Consumer *c) {
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "name", c->name);
    cJSON_AddNumberToObject(o, "acked_revision", (double)c->acked_revision);
    cJSON_AddNumberToObject(o, "pending", (double)c->pending);
    cJSON_AddBoolToObject(o, "pending_exact", c->pending_exact);
    cJSON_AddNumberToObject(o, "behind_revisions",
                            (double)c->behind_revisions);
    cJSON_AddNumberToObject(o, "holding_bytes", (double)c->holding_bytes);
    cJSON_AddBoolToObject(o, "active", c->active);
    cJSON_AddStringToObject(o, "subject_pattern", c->subject_pattern);
    cJSON_AddNumberToObject(o, "created_at_ms", (double)c->created_at_ms);
    cJSON_AddNumberToObject(o, "acked_at_ms", (double)c->acked_at_ms);
    cJSON_AddBoolToObject(o, "invalidated", c->invalidated);
    if (c->invalidated) {
        cJSON_AddNumberToObject(o, "invalidated_at_ms",
                                (double)c->invalidated_at_ms);
        cJSON_AddStringToObject(o, "invalidated_reason",
                                c->invalidated_reason);
    }
    return o;
}

/* "c1 acked 17 pending 3 behind 40 active (pattern kv.>)", or one JSON
 * line. */
static void print_consumer(const ctl_t *ctl, const Reel__V1__Consumer *c) {
    char when[40];

    if (ctl->json) {
        ctl_print_json_line(consumer_json(c));
        return;
    }
    printf("%s acked %llu pending %s%llu", c->name,
           (unsigned long long)c->acked_revision,
           c->pending_exact || c->invalidated ? "" : ">=",
           (unsigned long long)c->pending);
    if (c->behind_revisions != c->pending && !c->invalidated)
        printf(" behind %llu", (unsigned long long)c->behind_revisions);
    if (c->holding_bytes > 0)
        printf(" holding %llu bytes", (unsigned long long)c->holding_bytes);
    if (c->active)
        printf(" active");
    /* No pattern is every event. */
    if (*c->subject_pattern)
        printf(" (pattern %s)", c->subject_pattern);
    if (c->invalidated)
        printf(" invalidated at %s: %s",
               ctl_iso_time(c->invalidated_at_ms, when, sizeof(when)),
               c->invalidated_reason);
    printf("\n");
}

/* ---- tail ---------------------------------------------------------------- */

typedef struct tail {
    ctl_t *ctl;
    const char *consumer; /* --ack: whose cursor to advance; else NULL */
    int progress;         /* --progress: print PROGRESS events too */
    uint64_t printed;     /* the revision of the last event printed */
    unsigned unacked;     /* events printed since the last ack */
    int64_t acked_at_ms;  /* monotonic: the last ack, or the start */
    int ack_failed;       /* said why; no more acks */
    int failed;           /* we cancelled: the reason is already printed */
    int gone;             /* we cancelled: stdout's reader left */
} tail_t;

static int64_t mono_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Acknowledges everything printed so far; EXIT_FAIL (said) if it failed. */
static int tail_ack(tail_t *t) {
    Reel__V1__AckEventsRequest req = REEL__V1__ACK_EVENTS_REQUEST__INIT;
    Reel__V1__AckEventsResponse *resp;
    int rc;

    req.consumer = (char *)t->consumer;
    req.revision = t->printed;
    resp = ctl_unary(t->ctl, "events tail: ack", "/reel.v1.Wal/AckEvents",
                     &req, &reel__v1__ack_events_response__descriptor, &rc);
    if (resp == NULL) {
        t->ack_failed = 1;
        return rc;
    }
    reel__v1__ack_events_response__free_unpacked(resp, NULL);
    t->unacked = 0;
    t->acked_at_ms = mono_ms();
    return EXIT_OK;
}

/* Acks when a batch is due; non-zero (and t->failed) if the ack failed. */
static int tail_maybe_ack(tail_t *t) {
    if (t->consumer == NULL || t->unacked == 0 || t->ack_failed)
        return 0;
    if (t->unacked < ACK_EVERY_EVENTS &&
        mono_ms() - t->acked_at_ms < ACK_EVERY_MS)
        return 0;
    if (tail_ack(t) != EXIT_OK) {
        t->failed = 1;
        return 1;
    }
    return 0;
}

static int tail_event(tail_t *t, const Reel__V1__Event *ev) {
    int out;

    if (ev->type != REEL__V1__EVENT__TYPE__PROGRESS || t->progress) {
        ctl_print_json_line(event_json(ev));
        if ((out = ctl_flush()) != 0) {
            t->gone = out > 0;
            t->failed = out < 0;
            return 1;
        }
    }
    /* A PROGRESS revision is safe to acknowledge too: everything up to it
     * was sent (and printed) or did not match the filter, which keeps a
     * filtered consumer's cursor moving. */
    if (ev->revision > t->printed) {
        t->printed = ev->revision;
        t->unacked++;
    }
    return tail_maybe_ack(t);
}

/* One EventBatch: a backlog arrives by the hundred, a live tail one by one. */
static int tail_batch(void *arg, const uint8_t *msg, size_t len) {
    tail_t *t = arg;
    Reel__V1__EventBatch *b = reel__v1__event_batch__unpack(NULL, len, msg);
    int rc = 0;

    if (b == NULL) {
        fprintf(stderr, "reelctl: events tail: malformed event batch\n");
        t->failed = 1;
        return 1;
    }
    for (size_t i = 0; i < b->n_events && rc == 0; i++)
        rc = tail_event(t, b->events[i]);
    reel__v1__event_batch__free_unpacked(b, NULL);
    return rc;
}

/* Between messages: a reader that left ends the tail; acks come due. */
static int tail_idle(void *arg) {
    tail_t *t = arg;

    if ((t->gone = ctl_stdout_gone()) != 0)
        return 1;
    return tail_maybe_ack(t);
}

static int events_tail(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__SubscribeEventsRequest req =
        REEL__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    tail_t t = {0};
    reel_reply_t r = {0};
    uint8_t *buf;
    size_t len;
    int rc = EXIT_FAIL;

    if (ctl_has(a, EF_ACK) && !ctl_has(a, EF_CONSUMER))
        return ctl_usage_error(a, "--ack needs --consumer (whose cursor to "
                                  "advance)");
    if (ctl_has(a, EF_TAKEOVER) && !ctl_has(a, EF_CONSUMER))
        return ctl_usage_error(a, "--takeover needs --consumer (whose "
                                  "subscriber to replace)");
    req.from_revision = a->num[EF_FROM];
    if (ctl_has(a, EF_SUBJECT))
        req.subject_pattern = a->str[EF_SUBJECT];
    if (ctl_has(a, EF_CONSUMER))
        req.consumer = a->str[EF_CONSUMER];
    req.takeover = ctl_has(a, EF_TAKEOVER);
    t.ctl = ctl;
    t.consumer = ctl_has(a, EF_ACK) ? a->str[EF_CONSUMER] : NULL;
    t.progress = ctl_has(a, EF_PROGRESS);
    t.acked_at_ms = mono_ms();
    if ((buf = ctl_pack(&req, &len)) == NULL)
        goto out;
    /* The stream ends when the server ends it: no deadline. */
    reel_client_stream_idle(ctl->client, "/reel.v1.Wal/SubscribeEventBatches",
                            buf, len, 0, tail_batch, tail_idle, CTL_IDLE_MS,
                            &t, &r);
    if (t.failed)
        rc = EXIT_FAIL;
    else if (t.gone)
        rc = EXIT_OK; /* `events tail | head`: the reader had what it wanted */
    else if (r.code != 0)
        rc = ctl_report_error(ctl, "events tail", &r);
    else
        rc = EXIT_OK;
    /* What was printed was handled, however the stream ended. */
    if (t.consumer != NULL && t.unacked > 0 && !t.ack_failed &&
        tail_ack(&t) != EXIT_OK)
        rc = EXIT_FAIL;
out:
    reel_reply_fini(&r);
    free(buf);
    return rc;
}

/* ---- head, consumers, rm-consumer, ack ----------------------------------- */

static int events_head(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__GetHeadRequest req = REEL__V1__GET_HEAD_REQUEST__INIT;
    Reel__V1__GetHeadResponse *resp;
    int rc;

    resp = ctl_call(ctl, a, "GetHead", &req,
                    &reel__v1__get_head_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddNumberToObject(o, "head_revision",
                                (double)resp->head_revision);
        cJSON_AddNumberToObject(o, "oldest_revision",
                                (double)resp->oldest_revision);
        ctl_print_json_line(o);
    } else if (resp->head_revision == 0) {
        printf("head 0 (no events yet)\n");
    } else if (resp->oldest_revision == 0) {
        /* The server's 0 means none retained, not an event 0. */
        printf("head %llu, none retained (every event up to %llu was "
               "trimmed)\n",
               (unsigned long long)resp->head_revision,
               (unsigned long long)resp->head_revision);
    } else {
        printf("head %llu, oldest %llu\n",
               (unsigned long long)resp->head_revision,
               (unsigned long long)resp->oldest_revision);
    }
    reel__v1__get_head_response__free_unpacked(resp, NULL);
    return EXIT_OK;
}

/*
 * Prints one page and says where the next one starts: a malloc'd cursor in
 * *next, or NULL when this was the last page.
 */
static int events_consumers_page(ctl_t *ctl, const ctl_args_t *a,
                                 Reel__V1__ListConsumersRequest *req,
                                 char **next) {
    Reel__V1__ListConsumersResponse *resp;
    int rc;

    *next = NULL;
    resp = ctl_call(ctl, a, "ListConsumers", req,
                    &reel__v1__list_consumers_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    for (size_t i = 0; i < resp->n_consumers; i++)
        print_consumer(ctl, resp->consumers[i]);
    if (!resp->more) {
        /* done */
    } else if (*resp->next_start_after == '\0' ||
               strcmp(resp->next_start_after, req->start_after) == 0) {
        /* Following it would ask for the same page forever. */
        fprintf(stderr, "reelctl: events consumers: the server said more "
                        "but gave no new cursor\n");
        rc = EXIT_FAIL;
    } else if ((*next = strdup(resp->next_start_after)) == NULL) {
        fprintf(stderr, "reelctl: out of memory\n");
        rc = EXIT_FAIL;
    }
    reel__v1__list_consumers_response__free_unpacked(resp, NULL);
    return rc;
}

static int events_consumers(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ListConsumersRequest req =
        REEL__V1__LIST_CONSUMERS_REQUEST__INIT;
    char *cursor = NULL, *next;
    int rc;

    for (;;) {
        rc = events_consumers_page(ctl, a, &req, &next);
        free(cursor);
        cursor = next;
        if (rc != EXIT_OK || cursor == NULL)
            break;
        req.start_after = cursor;
    }
    free(cursor);
    return rc;
}

static int events_rm_consumer(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__DeleteConsumerRequest req =
        REEL__V1__DELETE_CONSUMER_REQUEST__INIT;
    Reel__V1__DeleteConsumerResponse *resp;
    int rc;

    req.name = a->pos[0];
    resp = ctl_call(ctl, a, "DeleteConsumer", &req,
                    &reel__v1__delete_consumer_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "name", req.name);
        cJSON_AddBoolToObject(o, "deleted", 1);
        ctl_print_json_line(o);
    } else {
        printf("deleted consumer %s\n", req.name);
    }
    reel__v1__delete_consumer_response__free_unpacked(resp, NULL);
    return EXIT_OK;
}

static int events_ack(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__AckEventsRequest req = REEL__V1__ACK_EVENTS_REQUEST__INIT;
    Reel__V1__AckEventsResponse *resp;
    int bad, rc;

    bad = ctl_parse_u64(a->pos[1], UINT64_MAX, &req.revision);
    if (bad == -1)
        return ctl_usage_error(a, "REV: \"%s\" is not a whole number",
                               a->pos[1]);
    if (bad == -2)
        return ctl_usage_error(a, "REV: %s is too large", a->pos[1]);
    req.consumer = a->pos[0];
    resp = ctl_call(ctl, a, "AckEvents", &req,
                    &reel__v1__ack_events_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    if (resp->consumer == NULL) {
        fprintf(stderr, "reelctl: events ack: malformed response (no "
                        "consumer)\n");
        rc = EXIT_FAIL;
    } else {
        print_consumer(ctl, resp->consumer);
    }
    reel__v1__ack_events_response__free_unpacked(resp, NULL);
    return rc;
}

static const ctl_command_t events_commands[] = {
    {"tail", {NULL}, 0,
     EF(EF_FROM) | EF(EF_SUBJECT) | EF(EF_CONSUMER) | EF(EF_ACK) |
         EF(EF_PROGRESS) | EF(EF_TAKEOVER),
     0,
     "print every event after --from REV (default 0), then new ones as they\n"
     "      commit, one JSON line each, until the server ends the stream or\n"
     "      Ctrl-C (no deadline); --subject: only those matching, a.*.c or\n"
     "      kv.>; --consumer: a durable consumer, resumed after its acked\n"
     "      revision; --ack: acknowledge what was printed (in batches);\n"
     "      --progress: print the idle PROGRESS events too; --takeover:\n"
     "      end the consumer's current subscriber and take its place; ends\n"
     "      quietly once stdout's reader leaves (events tail | head -3)",
     events_tail},
    {"head", {NULL}, 0, 0, 0,
     "show the last committed revision and the oldest retained one (or\n"
     "      that none is retained)",
     events_head},
    {"consumers", {NULL}, 0, 0, 0,
     "list durable consumers by name, one per line: acked revision,\n"
     "      events pending (matching its pattern), revisions behind, bytes\n"
     "      it holds past retention, whether a subscriber is connected,\n"
     "      pattern, and when and why it was invalidated",
     events_consumers},
    {"rm-consumer", {"NAME"}, 1, 0, 0,
     "delete a durable consumer and its cursor", events_rm_consumer},
    {"ack", {"NAME", "REV"}, 2, 0, 0,
     "acknowledge every event up to REV for consumer NAME, and show it",
     events_ack},
    {NULL, {NULL}, 0, 0, 0, NULL, NULL},
};

const ctl_group_t ctl_events_group = {
    "events", "reel.v1.Wal", events_flags, EF_COUNT, events_commands,
};
