/*
 * sink/runner.c: one sink at run time: the durable consumer, the window,
 * the engine thread. sink.h has the picture, the locking and how a stop
 * goes; this is the code.
 *
 * Which events a sink delivers: those whose subject matches one of
 * `subjects` (default every one) and none of `exclude`, and never the
 * sink's own records (kv.<state namespace>.>, the dead letters and
 * disabled marks reel-sink writes) unless deliver_own_records. With one
 * subject pattern the server filters; with several the sink subscribes to
 * everything and filters here. Either way a passed-over event counts as
 * done, so the cursor keeps moving.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/pattern.h"
#include "reel/v1/wal.pb-c.h"
#include "sink/sink.h"
#include "sink/state.h"

#define PREPARE_RETRY_MS 1000
#define ACK_INTERVAL_MS 250
#define ACK_EVERY 500
/* How long the callback waits for room before it starts its stream again
 * (see on_batch). */
#define STALL_RESTART_MS 2000

int64_t sink_now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sink_wall_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sink_runner_error(sink_runner_t *r, const char *fmt, ...) {
    va_list ap;

    pthread_mutex_lock(&r->mu);
    va_start(ap, fmt);
    vsnprintf(r->last_error, sizeof(r->last_error), fmt, ap);
    va_end(ap);
    r->last_error_ms = sink_wall_ms();
    pthread_mutex_unlock(&r->mu);
}

const char *sink_fail_label(sink_fail_t f) {
    static const char *const labels[] = {
#define SINK_FAIL_LABEL_(name, label) label,
        SINK_FAIL_CLASSES(SINK_FAIL_LABEL_)
#undef SINK_FAIL_LABEL_
    };

    return (unsigned)f < SINK_FAIL__COUNT ? labels[f] : "unknown";
}

void sink_runner_failed_locked(sink_runner_t *r, sink_fail_t f) {
    r->failed_attempts++;
    if ((unsigned)f < SINK_FAIL__COUNT)
        r->failures[f]++;
}

void sink_runner_report_locked(sink_runner_t *r) {
    uint64_t f = sink_window_advance(&r->win);

    pthread_cond_broadcast(&r->room);
    if (f > r->reported && r->consumer != NULL) {
        r->reported = f;
        reel_consumer_finish(r->consumer, f);
    }
}

void sink_runner_report(sink_runner_t *r) {
    pthread_mutex_lock(&r->mu);
    sink_runner_report_locked(r);
    pthread_mutex_unlock(&r->mu);
}

/* ---- The consumer's callback ---------------------------------------------- */

static int wants(const sink_runner_t *r, const char *s, size_t len) {
    const sink_config_t *cfg = r->cfg;
    size_t own = strlen(r->own_prefix);
    int match = cfg->n_subjects == 0;

    if (!cfg->deliver_own_records && len >= own &&
        memcmp(s, r->own_prefix, own) == 0)
        return 0;
    for (size_t i = 0; i < cfg->n_exclude; i++)
        if (reel_pattern_match(cfg->exclude[i], strlen(cfg->exclude[i]), s,
                               len))
            return 0;
    for (size_t i = 0; i < cfg->n_subjects && !match; i++)
        match = reel_pattern_match(cfg->subjects[i], strlen(cfg->subjects[i]),
                                   s, len);
    return match;
}

static int on_batch(void *arg, const reel_event_t *evs, size_t n,
                    uint64_t *finished) {
    sink_runner_t *r = arg;

    /* The engine says what is finished, through reel_consumer_finish. */
    *finished = 0;
    for (size_t i = 0; i < n; i++) {
        const reel_event_t *ev = &evs[i];
        uint8_t *block;

        if (!wants(r, ev->subject, ev->subject_len)) {
            pthread_mutex_lock(&r->mu);
            /* Stopping: nothing more counts as done, passed over or not,
             * or a later pass would cover an event dropped before it. */
            if (r->stopping) {
                pthread_mutex_unlock(&r->mu);
                break;
            }
            sink_window_pass(&r->win, ev->revision);
            pthread_mutex_unlock(&r->mu);
            continue;
        }
        /* One block: the event's bytes, then its subject. */
        while ((block = malloc(ev->len + ev->subject_len + 1)) == NULL) {
            /* Out of memory: wait for the engine to free some, never
             * drop the event. */
            REEL_ERROR("sink", "sink %s: out of memory holding revision "
                       "%" PRIu64 "; waiting",
                       r->cfg->name, ev->revision);
            usleep(100000);
        }
        memcpy(block, ev->bytes, ev->len);
        memcpy(block + ev->len, ev->subject, ev->subject_len);
        block[ev->len + ev->subject_len] = '\0';
        pthread_mutex_lock(&r->mu);
        if (!r->stopping &&
            sink_window_full(&r->win, ev->len, r->cfg->queue_max_bytes)) {
            struct timespec until = reel_clock_mono_after(STALL_RESTART_MS);

            while (!r->stopping &&
                   sink_window_full(&r->win, ev->len,
                                    r->cfg->queue_max_bytes) &&
                   pthread_cond_timedwait(&r->room, &r->mu, &until) == 0)
                ;
            if (!r->stopping &&
                sink_window_full(&r->win, ev->len, r->cfg->queue_max_bytes)) {
                /*
                 * Still full: the stream is given up and subscribed again
                 * (sink.h says why), this event and the rest of the batch
                 * handed out again on the new one, which starts after the
                 * last event pushed or passed over (nothing after it was,
                 * so order holds and the frontier stays below it).
                 */
                pthread_mutex_unlock(&r->mu);
                free(block);
                reel_consumer_restart(r->consumer,
                                      i > 0 ? evs[i - 1].revision : 0);
                break;
            }
        }
        if (r->stopping) {
            pthread_mutex_unlock(&r->mu);
            free(block);
            break;
        }
        sink_window_push(&r->win, ev->revision, ev->type, block, ev->len);
        pthread_mutex_unlock(&r->mu);
        if (r->ops->wake != NULL)
            r->ops->wake(r->engine);
    }
    sink_runner_report(r);
    return 0;
}

static void on_retry(void *arg, int code, const char *details,
                     int64_t delay_ms) {
    sink_runner_t *r = arg;
    char hint[512];

    if (code == 9) /* FAILED_PRECONDITION: held by another subscriber */
        REEL_INFO("sink", "sink %s: consumer %s is held by another "
                  "subscriber (another reel-sink, or one the server has not "
                  "yet found gone); standing by, next try in %.1f s",
                  r->cfg->name, r->consumer_name, (double)delay_ms / 1000.0);
    else
        REEL_WARN("sink", "sink %s: the stream from reel ended: %s: %s; "
                  "subscribing again in %.1f s%s",
                  r->cfg->name, reel_grpc_code_name(code), details,
                  (double)delay_ms / 1000.0,
                  reel_client_hint_note(r->client, code, details, hint,
                                        sizeof(hint)));
}

/* ---- The consumer thread ---------------------------------------------------- */

static int is_stopping(sink_runner_t *r) {
    int s;

    pthread_mutex_lock(&r->mu);
    s = r->stopping;
    pthread_mutex_unlock(&r->mu);
    return s;
}


/* gRPC's UNAUTHENTICATED and PERMISSION_DENIED: the token is wrong, and
 * asking again will not make it right. */
#define GRPC_CODE_PERMISSION_DENIED 7
#define GRPC_CODE_UNAUTHENTICATED 16

/* The head revision (for "from": "now", and the NATS engine's check of
 * its stream). sink.h. */
int sink_runner_head(sink_runner_t *r, uint64_t *head) {
    Reel__V1__GetHeadRequest req = REEL__V1__GET_HEAD_REQUEST__INIT;
    Reel__V1__GetHeadResponse *resp;
    reel_reply_t rep;
    char hint[512];
    uint8_t buf[8];
    size_t len = reel__v1__get_head_request__pack(&req, buf);

    if (reel_client_unary_retry(r->client, "/reel.v1.Wal/GetHead", buf, len,
                                REEL_TIMEOUT_DEFAULT, &rep) != 0) {
        int refused = rep.code == GRPC_CODE_UNAUTHENTICATED ||
                      rep.code == GRPC_CODE_PERMISSION_DENIED;

        if (refused)
            sink_runner_fatal(r, "reading reel's head revision: %s: %s",
                  reel_grpc_code_name(rep.code),
                  rep.details ? rep.details : "");
        else
            REEL_WARN("sink", "sink %s: reading reel's head revision: %s: "
                      "%s; trying again%s",
                      r->cfg->name, reel_grpc_code_name(rep.code),
                      rep.details ? rep.details : "",
                      reel_client_hint_note(r->client, rep.code, rep.details,
                                            hint, sizeof(hint)));
        reel_reply_fini(&rep);
        return refused ? -2 : -1;
    }
    resp = reel__v1__get_head_response__unpack(NULL, rep.len, rep.body);
    reel_reply_fini(&rep);
    if (resp == NULL)
        return -1;
    *head = resp->head_revision;
    reel__v1__get_head_response__free_unpacked(resp, NULL);
    return 0;
}

/* Before subscribing: is the sink disabled, and where would a new consumer
 * start? Retried until reel answers or the sink stops; a refused token
 * stops the sink, as it does the consumer's stream. */
static int prepare(sink_runner_t *r, uint64_t *from) {
    for (;;) {
        reel_status_t st = REEL_STATUS_INIT;
        char *reason = NULL, hint[512];
        int disabled = 0, ok = 1, h;
        reel_code_t rc;

        if (is_stopping(r))
            return -1;
        *from = r->cfg->from == SINK_FROM_REVISION ? r->cfg->from_revision
                                                   : 0;
        if (r->cfg->from == SINK_FROM_NOW &&
            (h = sink_runner_head(r, from)) != 0) {
            if (h == -2)
                return -1;
            ok = 0;
        }
        if (ok && (rc = sink_state_disabled(r->client, r->o.state_ns,
                                            r->cfg->name, &disabled, &reason,
                                            &st)) != REEL_OK) {
            if (rc == REEL_UNAUTHENTICATED || rc == REEL_PERMISSION_DENIED) {
                sink_runner_fatal(r, "%s", reel_status_message(&st));
                reel_status_fini(&st);
                return -1;
            }
            REEL_WARN("sink", "sink %s: %s; trying again%s", r->cfg->name,
                      reel_status_message(&st),
                      reel_client_hint_note(r->client, reel_code_grpc(rc),
                                            reel_status_message(&st), hint,
                                            sizeof(hint)));
            reel_status_fini(&st);
            ok = 0;
        }
        if (ok) {
            if (disabled) {
                pthread_mutex_lock(&r->mu);
                r->disabled = 1;
                snprintf(r->disabled_reason, sizeof(r->disabled_reason), "%s",
                         reason != NULL ? reason : "");
                pthread_mutex_unlock(&r->mu);
                REEL_WARN("sink", "sink %s: disabled (%s); it delivers "
                          "nothing until `reel-sink enable %s`",
                          r->cfg->name, reason != NULL ? reason : "",
                          r->cfg->name);
            }
            free(reason);
            return 0;
        }
        free(reason);
        usleep(PREPARE_RETRY_MS * 1000);
    }
}

void sink_runner_fatal(sink_runner_t *r, const char *fmt, ...) {
    va_list ap;

    pthread_mutex_lock(&r->mu);
    va_start(ap, fmt);
    vsnprintf(r->fatal_msg, sizeof(r->fatal_msg), fmt, ap);
    va_end(ap);
    r->fatal = 1;
    pthread_mutex_unlock(&r->mu);
    REEL_ERROR("sink", "sink %s: stopped: %s", r->cfg->name, r->fatal_msg);
    if (r->o.on_fatal != NULL)
        r->o.on_fatal(r->o.arg);
}

static void *consumer_main(void *arg) {
    sink_runner_t *r = arg;
    reel_consumer_opts_t co = REEL_CONSUMER_OPTS_INIT;
    reel_consumer_t *k = NULL;
    reel_reply_t why = {0};
    uint64_t from;
    int code, stopping;

    if (prepare(r, &from) != 0)
        return NULL;
    co.consumer = r->consumer_name;
    co.subject_pattern = r->cfg->n_subjects == 1 ? r->cfg->subjects[0] : "";
    co.from_revision = from;
    co.takeover = r->o.takeover;
    co.standby = 1;
    /* Acks are cheap next to deliveries; acking often keeps what a crash
     * sends again small. */
    co.ack_interval_ms = ACK_INTERVAL_MS;
    co.ack_every = ACK_EVERY;
    co.on_batch = on_batch;
    co.on_retry = on_retry;
    co.arg = r;
    if (reel_consumer_create(r->client, &co, &k, &why) != 0) {
        sink_runner_fatal(r, "%s: %s", reel_grpc_code_name(why.code),
              why.details ? why.details : "");
        reel_reply_fini(&why);
        return NULL;
    }
    pthread_mutex_lock(&r->mu);
    if (r->stopping) {
        pthread_mutex_unlock(&r->mu);
        reel_consumer_destroy(k);
        return NULL;
    }
    r->consumer = k;
    pthread_mutex_unlock(&r->mu);
    REEL_INFO("sink", "sink %s: %s sink consuming as %s%s%s", r->cfg->name,
              r->ops->type, r->consumer_name,
              r->o.takeover ? " (taking it over)" : "",
              r->cfg->from == SINK_FROM_NOW ? ", from now if new"
              : r->cfg->from == SINK_FROM_REVISION ? ", from a revision if new"
                                                   : "");
    code = reel_consumer_run(k, &why);
    pthread_mutex_lock(&r->mu);
    r->consumer = NULL;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&r->mu);
    stopping = r->stopping;
    pthread_mutex_unlock(&r->mu);
    if (code != 0 && stopping &&
        (code == reel_code_grpc(REEL_DEADLINE_EXCEEDED) ||
         code == reel_code_grpc(REEL_UNAVAILABLE) ||
         code == reel_code_grpc(REEL_CANCELLED))) {
        reel_consumer_stats_t s;

        /* Only the stop's last ack failed (reel hung or away): nothing is
         * lost, what it would have acknowledged comes again at the next
         * start (at-least-once), so the stop is still a clean one. */
        reel_consumer_stats(k, &s);
        REEL_WARN("sink", "sink %s: stopped; its last acknowledgement "
                  "failed (%s: %s): the events after revision %" PRIu64
                  " are delivered again at the next start",
                  r->cfg->name, reel_grpc_code_name(code),
                  why.details ? why.details : "", s.acked);
    } else if (code != 0)
        sink_runner_fatal(r, "consumer %s: %s: %s", r->consumer_name,
              reel_grpc_code_name(code), why.details ? why.details : "");
    else {
        reel_consumer_stats_t s;

        reel_consumer_stats(k, &s);
        REEL_INFO("sink", "sink %s: stopped; acknowledged up to revision "
                  "%" PRIu64,
                  r->cfg->name, s.acked);
    }
    reel_reply_fini(&why);
    reel_consumer_destroy(k);
    return NULL;
}

static void *engine_main(void *arg) {
    sink_runner_t *r = arg;

    r->ops->run(r->engine);
    return NULL;
}

/* ---- Life cycle -------------------------------------------------------------- */

reel_code_t sink_runner_create(const sink_config_t *cfg, reel_client_t *c,
                               const sink_runner_opts_t *o,
                               sink_runner_t **out, reel_status_t *st) {
    sink_runner_t *r = calloc(1, sizeof(*r));
    reel_code_t rc;

    *out = NULL;
    if (r == NULL || sink_window_init(&r->win, cfg->queue_max_events) != 0) {
        free(r);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "sink %s: out of memory", cfg->name);
    }
    r->cfg = cfg;
    r->client = c;
    r->o = *o;
    if (r->o.state_ns == NULL)
        r->o.state_ns = SINK_STATE_NAMESPACE;
    snprintf(r->consumer_name, sizeof(r->consumer_name), "sink.%s",
             cfg->name);
    snprintf(r->own_prefix, sizeof(r->own_prefix), "kv.%s.", r->o.state_ns);
    pthread_mutex_init(&r->mu, NULL);
    reel_cond_init_mono(&r->room); /* the stall's wait too */
    r->ops = cfg->type == SINK_NATS ? &sink_nats_ops : &sink_webhook_ops;
    if ((rc = r->ops->create(r, &r->engine, st)) != REEL_OK) {
        sink_runner_destroy(r);
        return rc;
    }
    *out = r;
    return REEL_OK;
}

reel_code_t sink_runner_start(sink_runner_t *r, reel_status_t *st) {
    if (pthread_create(&r->engine_thread, NULL, engine_main, r) != 0)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "sink %s: cannot start a thread",
                               r->cfg->name);
    r->threads = 1;
    if (pthread_create(&r->consumer_thread, NULL, consumer_main, r) != 0) {
        sink_runner_stop(r);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "sink %s: cannot start a thread",
                               r->cfg->name);
    }
    r->threads = 2;
    return REEL_OK;
}

void sink_runner_stop(sink_runner_t *r) {
    if (r == NULL || r->threads == 0)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    r->stop_deadline_ms = sink_now_ms() + r->o.grace_ms;
    pthread_cond_broadcast(&r->room);
    pthread_mutex_unlock(&r->mu);
    r->ops->wake(r->engine);
    /* Deliveries first, then the last report, then the loop's final ack. */
    pthread_join(r->engine_thread, NULL);
    sink_runner_report(r);
    pthread_mutex_lock(&r->mu);
    if (r->consumer != NULL)
        reel_consumer_stop(r->consumer);
    pthread_mutex_unlock(&r->mu);
    if (r->threads == 2)
        pthread_join(r->consumer_thread, NULL);
    r->threads = 0;
}

void sink_runner_destroy(sink_runner_t *r) {
    if (r == NULL)
        return;
    sink_runner_stop(r);
    if (r->engine != NULL)
        r->ops->destroy(r->engine);
    sink_window_fini(&r->win);
    pthread_cond_destroy(&r->room);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void add_u64(cJSON *o, const char *k, uint64_t v) {
    char buf[24];

    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    cJSON_AddRawToObject(o, k, buf);
}

cJSON *sink_runner_status(sink_runner_t *r) {
    cJSON *o = cJSON_CreateObject();
    reel_consumer_stats_t s = {0};
    const char *state;
    int have;

    if (o == NULL)
        return NULL;
    pthread_mutex_lock(&r->mu);
    have = r->consumer != NULL;
    if (have)
        reel_consumer_stats(r->consumer, &s);
    state = r->fatal       ? "failed"
            : r->stopping  ? "stopping"
            : r->disabled  ? "disabled"
            : !have        ? "starting"
            : s.streaming  ? "running"
                           : "standby";
    cJSON_AddStringToObject(o, "name", r->cfg->name);
    cJSON_AddStringToObject(o, "type", r->ops->type);
    cJSON_AddStringToObject(o, "consumer", r->consumer_name);
    cJSON_AddStringToObject(o, "state", state);
    cJSON_AddNumberToObject(o, "in_flight", r->in_flight);
    cJSON_AddNumberToObject(o, "failing", r->failing);
    cJSON_AddNumberToObject(o, "held", (double)sink_window_count(&r->win));
    cJSON_AddNumberToObject(o, "held_bytes", (double)r->win.bytes);
    add_u64(o, "delivered", r->delivered);
    add_u64(o, "dead_lettered", r->dead_lettered);
    add_u64(o, "failed_attempts", r->failed_attempts);
    {
        cJSON *by = cJSON_AddObjectToObject(o, "failures");

        for (int c = 0; c < SINK_FAIL__COUNT && by != NULL; c++)
            if (r->failures[c] > 0)
                add_u64(by, sink_fail_label((sink_fail_t)c), r->failures[c]);
    }
    add_u64(o, "done_revision", r->reported);
    add_u64(o, "acked_revision", s.acked);
    add_u64(o, "received_revision", s.delivered);
    add_u64(o, "reconnects", s.reconnects);
    cJSON_AddBoolToObject(o, "disabled", r->disabled);
    if (r->disabled)
        cJSON_AddStringToObject(o, "disabled_reason", r->disabled_reason);
    cJSON_AddStringToObject(o, "last_error", r->last_error);
    cJSON_AddNumberToObject(o, "last_error_at_ms", (double)r->last_error_ms);
    if (r->fatal)
        cJSON_AddStringToObject(o, "stopped_because", r->fatal_msg);
    pthread_mutex_unlock(&r->mu);
    return o;
}
