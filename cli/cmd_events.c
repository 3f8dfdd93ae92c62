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
 * CTL_IDLE_MS: exit 0, after acknowledging what the reader took; or after
 * --count N events: exit 0 once the reader took them (or left).
 *
 * --ack acknowledges for --consumer what stdout's reader took, in batches:
 * a line written to a pipe counts once it left the pipe (FIONREAD), so
 * lines waiting in it when the reader quits come again next time; to a
 * file or a terminal, once written. A reader that reads ahead and quits
 * (`head -5` takes a bufferful) took more than it used: --count N prints
 * N events and ends. Acks go once 100 events are unacknowledged, or once
 * 500 ms passed since the last ack
 * (looked at on each message and every CTL_IDLE_MS without one), and what
 * the reader took when the stream ends. Killed (Ctrl-C), tail may leave up to
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
 * the first 10,000 revisions only (or past the 100,000 events one listing
 * reads for all its consumers); behind, shown when it differs, counts
 * every revision after the cursor; holding, the bytes of its
 * unacknowledged events when it is what keeps events past the retention
 * limits.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
    EF_MAX_EVENTS,
    EF_COUNT
};

static const ctl_flag_spec_t events_flags[EF_COUNT] = {
    [EF_FROM] = {"--from", CTL_NUM, "REV", UINT64_MAX, 0},
    [EF_SUBJECT] = {"--subject", CTL_STR, "PATTERN", 0, 0},
    [EF_CONSUMER] = {"--consumer", CTL_STR, "NAME", 0, 0},
    [EF_ACK] = {"--ack", CTL_BOOL, NULL, 0, 0},
    [EF_PROGRESS] = {"--progress", CTL_BOOL, NULL, 0, 0},
    [EF_TAKEOVER] = {"--takeover", CTL_BOOL, NULL, 0, 0},
    [EF_MAX_EVENTS] = {"--count", CTL_NUM, "N", UINT64_MAX, 0},
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

/* A revision printed (or a PROGRESS passed) and where its line ends in
 * what tail wrote: the reader has it once it took that many bytes. */
typedef struct tail_mark {
    uint64_t end;
    uint64_t revision;
} tail_mark_t;

typedef struct tail {
    ctl_t *ctl;
    const char *consumer; /* --ack: whose cursor to advance; else NULL */
    int progress;         /* --progress: print PROGRESS events too */
    uint64_t max_events;  /* --count: end after printing this many; 0 none */
    uint64_t events;      /* events printed */
    uint64_t printed;     /* the revision of the last event printed */
    int fifo;             /* stdout is a pipe: lines wait in its buffer */
    uint64_t written;     /* bytes written to stdout */
    tail_mark_t *marks;   /* --ack: revisions the reader may not have yet */
    size_t n_marks, cap_marks;
    uint64_t taken;       /* the last revision the reader has taken */
    uint64_t acked;       /* the last revision acknowledged */
    unsigned unacked;     /* revisions taken since the last ack */
    int64_t acked_at_ms;  /* monotonic: the last ack, or the start */
    int ack_failed;       /* said why; no more acks */
    int failed;           /* we cancelled: the reason is already printed */
    int gone;             /* we cancelled: stdout's reader left */
    int done;             /* we cancelled: --count events were printed */
} tail_t;

static int64_t mono_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * What the reader has taken: every line whose bytes left stdout's pipe (a
 * pipe's FIONREAD counts what is still in it, from either end), or every
 * line written when stdout is a file or a terminal. A line still in the
 * pipe when its reader leaves was never read, so it is never acknowledged.
 */
static void tail_take(tail_t *t) {
    uint64_t read = t->written;
    size_t i = 0;
    int unread = 0;

    if (t->fifo && ioctl(STDOUT_FILENO, FIONREAD, &unread) == 0 && unread > 0)
        read -= (uint64_t)unread < read ? (uint64_t)unread : read;
    while (i < t->n_marks && t->marks[i].end <= read) {
        t->taken = t->marks[i].revision;
        t->unacked++;
        i++;
    }
    if (i == 0)
        return; /* the reader took none since: nothing moves */
    memmove(t->marks, t->marks + i, (t->n_marks - i) * sizeof(*t->marks));
    t->n_marks -= i;
}

/* Notes a revision as passed once the bytes written so far are read; -1
 * (said) out of memory. */
static int tail_mark(tail_t *t, uint64_t revision) {
    if (t->consumer == NULL)
        return 0;
    if (t->n_marks > 0 && t->marks[t->n_marks - 1].end == t->written) {
        t->marks[t->n_marks - 1].revision = revision; /* same place */
        return 0;
    }
    if (t->n_marks == t->cap_marks) {
        size_t cap = t->cap_marks ? 2 * t->cap_marks : 64;
        tail_mark_t *m = realloc(t->marks, cap * sizeof(*m));

        if (m == NULL) {
            fprintf(stderr, "reelctl: out of memory\n");
            return -1;
        }
        t->marks = m;
        t->cap_marks = cap;
    }
    t->marks[t->n_marks].end = t->written;
    t->marks[t->n_marks++].revision = revision;
    return 0;
}

/* Acknowledges what the reader has taken; EXIT_FAIL (said) if it failed. */
static int tail_ack(tail_t *t) {
    Reel__V1__AckEventsRequest req = REEL__V1__ACK_EVENTS_REQUEST__INIT;
    Reel__V1__AckEventsResponse *resp;
    int rc;

    req.consumer = (char *)t->consumer;
    req.revision = t->taken;
    resp = ctl_unary(t->ctl, "events tail: ack", "/reel.v1.Wal/AckEvents",
                     &req, &reel__v1__ack_events_response__descriptor, &rc);
    if (resp == NULL) {
        t->ack_failed = 1;
        return rc;
    }
    reel__v1__ack_events_response__free_unpacked(resp, NULL);
    t->acked = t->taken;
    t->unacked = 0;
    t->acked_at_ms = mono_ms();
    return EXIT_OK;
}

/* Acks when a batch is due; non-zero (and t->failed) if the ack failed. */
static int tail_maybe_ack(tail_t *t) {
    if (t->consumer == NULL || t->ack_failed)
        return 0;
    tail_take(t);
    if (t->taken <= t->acked)
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
    int progress = ev->type == REEL__V1__EVENT__TYPE__PROGRESS;
    int out;

    if (!progress || t->progress) {
        cJSON *o = event_json(ev);
        char *line = o != NULL ? cJSON_PrintUnformatted(o) : NULL;

        cJSON_Delete(o);
        if (line == NULL) {
            fprintf(stderr, "reelctl: out of memory\n");
            t->failed = 1;
            return 1;
        }
        printf("%s\n", line);
        out = ctl_flush();
        if (out == 0)
            t->written += strlen(line) + 1;
        free(line);
        if (out != 0) {
            t->gone = out > 0;
            t->failed = out < 0;
            return 1;
        }
        if (!progress)
            t->events++;
    }
    /* A PROGRESS revision is safe to acknowledge too: everything up to it
     * was sent (and printed) or did not match the filter, which keeps a
     * filtered consumer's cursor moving. */
    if (ev->revision > t->printed) {
        t->printed = ev->revision;
        if (tail_mark(t, ev->revision) != 0) {
            t->failed = 1;
            return 1;
        }
    }
    if (t->max_events > 0 && t->events == t->max_events) {
        t->done = 1;
        return 1;
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
    if (ctl_has(a, EF_MAX_EVENTS) && a->num[EF_MAX_EVENTS] == 0)
        return ctl_usage_error(a, "--count must be 1 or more");
    req.from_revision = a->num[EF_FROM];
    if (ctl_has(a, EF_SUBJECT))
        req.subject_pattern = a->str[EF_SUBJECT];
    if (ctl_has(a, EF_CONSUMER))
        req.consumer = a->str[EF_CONSUMER];
    req.takeover = ctl_has(a, EF_TAKEOVER);
    t.ctl = ctl;
    t.consumer = ctl_has(a, EF_ACK) ? a->str[EF_CONSUMER] : NULL;
    t.progress = ctl_has(a, EF_PROGRESS);
    t.max_events = ctl_has(a, EF_MAX_EVENTS) ? a->num[EF_MAX_EVENTS] : 0;
    {
        struct stat sb;

        t.fifo = fstat(STDOUT_FILENO, &sb) == 0 && S_ISFIFO(sb.st_mode);
    }
    t.acked_at_ms = mono_ms();
    if ((buf = ctl_pack(&req, &len)) == NULL)
        goto out;
    /* The stream ends when the server ends it: no deadline. */
    reel_client_stream_idle(ctl->client, "/reel.v1.Wal/SubscribeEventBatches",
                            buf, len, 0, tail_batch, tail_idle, CTL_IDLE_MS,
                            &t, &r);
    if (t.failed)
        rc = EXIT_FAIL;
    else if (t.gone || t.done)
        rc = EXIT_OK; /* `events tail | head`: the reader had what it wanted */
    else if (r.code != 0)
        rc = ctl_report_error(ctl, "events tail", &r);
    else
        rc = EXIT_OK;
    /* What the reader took was handled, however the stream ended. Lines
     * still in the pipe are waited for while the reader is there: once
     * it takes them they are acknowledged, once it leaves they are not. */
    if (t.consumer != NULL && !t.ack_failed) {
        tail_take(&t);
        while (t.fifo && !t.gone && !t.failed && t.n_marks > 0 &&
               !ctl_stdout_gone()) {
            struct timespec ts = {0, 10 * 1000000};

            nanosleep(&ts, NULL);
            tail_take(&t);
        }
        tail_take(&t);
        if (t.taken > t.acked && tail_ack(&t) != EXIT_OK)
            rc = EXIT_FAIL;
    }
out:
    free(t.marks);
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
         EF(EF_PROGRESS) | EF(EF_TAKEOVER) | EF(EF_MAX_EVENTS),
     0,
     "print every event after --from REV (default 0), then new ones as they\n"
     "      commit, one JSON line each, until the server ends the stream or\n"
     "      Ctrl-C (no deadline); --subject: only those matching, a.*.c or\n"
     "      kv.>; --consumer: a durable consumer, resumed after its acked\n"
     "      revision; --ack: acknowledge what stdout's reader took, in\n"
     "      batches (a pipe's reader that reads ahead, as head does, takes\n"
     "      more than it prints: use --count); --count N: end after N events\n"
     "      (PROGRESS not counted); --progress: print the idle PROGRESS\n"
     "      events too; --takeover:\n"
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
