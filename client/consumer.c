/*
 * client/consumer.c: the durable WAL consumer loop (client.h says what it
 * promises; this is how).
 *
 * One run is a sequence of streams. Each subscribes to
 * Wal.SubscribeEventBatches as the consumer and goes on until the stream
 * ends; between streams the loop waits a backoff delay (on the cancel
 * switch's condition, so a stop wakes it) unless the end was final.
 *
 *   subscribe --> batches --> callback --> ack when due --> ...
 *       ^                                                  | stream ends
 *       +------------ backoff wait <-- retryable? ---------+
 *                                          | no, or stopped
 *                                          v
 *                               ack what was finished, return
 *
 * The bookkeeping is in batch.c (client_cursor_t): the loop hands the
 * callback only events above the last revision it handed out, so a
 * stream that starts again from the server's cursor (the last ack) gives
 * the callback nothing twice, and acknowledges only what the callback
 * finished, or a PROGRESS revision once everything handed out is finished.
 * The cursor lives for one run: a new process starts from the server's
 * cursor, which is where at-least-once comes from.
 *
 * A callback that cannot take more for a while calls reel_consumer_restart:
 * the cursor gives back what it did not take (client_cursor_hand_back),
 * the stream is cancelled once the callback returns and the next one is
 * subscribed at once (reeld's refusals while it lets go of the last one
 * are waited out quietly). The events given back come again on it.
 *
 * Stopping: reel_consumer_stop fires the cancel switch, which cancels the
 * calls registered in it, the stream and an ack on its way (or the next
 * one before it is sent), and wakes a backoff wait. The receive then ends,
 * the stream returns, the loop sees the switch and leaves through the
 * final ack, which is not on the switch (it would be refused) but has a
 * short deadline of its own, so a stop returns soon even when reeld
 * hangs. A callback that is running finishes first; its answer counts.
 * The run is inside its client (client_enter) with that switch, so a
 * shutdown of the client fires it too, and the run then ends CANCELLED.
 *
 * Silence: a server stopped, or a network that drops packets without a
 * reset, leaves the stream open with nothing coming, and gRPC notices
 * only with keepalive on. reeld sends a PROGRESS every second while it has
 * nothing else, so the idle tick (often enough for that) ends a stream
 * that delivered nothing for silence_timeout_ms, as UNAVAILABLE.
 *
 * Which ends are retryable is client.h's table. One needs a question: a
 * subscribe refused FAILED_PRECONDITION is either a consumer another
 * stream holds (worth waiting for when it may be this loop's own earlier
 * stream, not yet noticed gone) or an invalidated one (final). An
 * AckEvents of revision 0, which moves nothing, tells them apart without
 * reading the message: invalidated, it fails; else it says whether a
 * subscriber is active.
 *
 * Threading: everything but stop and stats runs on the thread in
 * reel_consumer_run; the cancel switch has its own lock, and stats_mu
 * guards the counters reel_consumer_stats copies.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reel/v1/wal.pb-c.h"
#include "client/batch.h"
#include "client/client.h"
#include "client/client_impl.h"

#define DEFAULT_ACK_INTERVAL_MS 1000
#define MAX_ACK_INTERVAL_MS 3600000
#define DEFAULT_ACK_EVERY 1000
/* After reel_consumer_restart, reeld's refusals while it lets go of the
 * stream just cancelled: waited out this often, this long apart, without
 * a word (about a second), before they count as any other. */
#define RESTART_QUIET_ATTEMPTS 20
#define RESTART_WAIT_MS 50
/* The last ack's deadline (or the client's, if shorter): a stop returns
 * within it even when reeld hangs. */
#define FINAL_ACK_MS 5000
/* A stream without a message this long is taken for a server gone silent
 * (reeld sends a PROGRESS every second while it has nothing else, a scan
 * of a backlog the pattern refuses included). */
#define DEFAULT_SILENCE_MS 30000
#define MIN_SILENCE_MS 2000
#define MAX_SILENCE_MS 3600000
#define WHY_STOP "the consumer was stopped (reel_consumer_stop)"

struct reel_consumer {
    reel_client_t *client;
    reel_consumer_opts_t o; /* its strings point to name and pattern */
    char *name, *pattern;
    client_cancel_t cancel;
    pthread_mutex_t stats_mu;
    reel_consumer_stats_t stats;
    uint64_t async_finished; /* reel_consumer_finish's answer (stats_mu) */
    uint64_t handed;         /* the last revision handed out (stats_mu) */
    int ran;
    int stopped; /* by reel_consumer_stop, not a shutdown (cancel.mu) */
    /* The run's state: the run's thread only. */
    client_cursor_t cur;
    client_batch_t batch;
    int got_message;   /* this stream delivered a message */
    int held;          /* reeld may hold a stream of this run */
    int callback_done; /* the callback asked to end */
    int ack_failed;    /* an ack failed for good (fail says why) */
    int restart;       /* the callback asked for a new stream */
    uint64_t restart_taken; /* ... keeping the events up to this one */
    int restarting;    /* until that stream gets a message */
    int64_t heard_ms;  /* when this stream last delivered, or opened */
    int64_t silence_ms; /* this stream's silence_timeout_ms */
    int silent;        /* the stream was ended for its silence */
    reel_reply_t fail; /* what ended the stream from this side */
};

static void stats_update(reel_consumer_t *k, uint64_t events,
                         uint64_t skipped, uint64_t acks) {
    pthread_mutex_lock(&k->stats_mu);
    k->stats.delivered = k->cur.delivered;
    k->stats.finished = k->cur.finished;
    k->stats.acked = k->cur.acked;
    k->stats.events += events;
    k->stats.skipped += skipped;
    k->stats.acks += acks;
    pthread_mutex_unlock(&k->stats_mu);
}

/* Takes reel_consumer_finish's answer into the run's cursor. */
static void take_async_finished(reel_consumer_t *k) {
    uint64_t v;

    pthread_mutex_lock(&k->stats_mu);
    v = k->async_finished;
    pthread_mutex_unlock(&k->stats_mu);
    client_cursor_finish_async(&k->cur, v);
}

/* ---- Acknowledging ------------------------------------------------------- */

/* AckEvents for revision; fills r. A consumer that is not found, or
 * invalidated, answers an error, like any other. A stop cancels every ack
 * but the final one, which has a short deadline of its own instead. */
static int ack_call(reel_consumer_t *k, uint64_t revision, int final,
                    reel_reply_t *r) {
    Reel__V1__AckEventsRequest req = REEL__V1__ACK_EVENTS_REQUEST__INIT;
    uint8_t *buf;
    size_t len;
    int rc;

    req.consumer = k->name;
    req.revision = revision;
    len = reel__v1__ack_events_request__get_packed_size(&req);
    if ((buf = malloc(len ? len : 1)) == NULL)
        return client_reply_set(r, CLIENT_RESOURCE_EXHAUSTED,
                                "out of memory");
    reel__v1__ack_events_request__pack(&req, buf);
    /* Acks are idempotent (the cursor never moves back): safe to resend. */
    if (final)
        rc = client_unary(k->client, "/reel.v1.Wal/AckEvents", buf, len,
                          client_deadline_ms(k->client) < FINAL_ACK_MS
                              ? client_deadline_ms(k->client)
                              : FINAL_ACK_MS,
                          1, NULL, r);
    else
        rc = client_unary(k->client, "/reel.v1.Wal/AckEvents", buf, len,
                          REEL_TIMEOUT_DEFAULT, 1, &k->cancel, r);
    free(buf);
    return rc;
}

/* Failures an ack may meet and get past at the next one. */
static int ack_retryable(int code) {
    return code == CLIENT_UNAVAILABLE || code == CLIENT_DEADLINE_EXCEEDED ||
           code == CLIENT_RESOURCE_EXHAUSTED || code == CLIENT_CANCELLED;
}

/*
 * Acknowledges what may be, if due (or force). 0 when done or put off
 * (a retryable failure: the next one tries again); -1 when the ack failed
 * for good, with k->fail saying why.
 */
static int ack_now(reel_consumer_t *k, int force) {
    reel_reply_t r = {0};
    uint64_t rev;
    int64_t now = client_now_ms();

    take_async_finished(k);
    if (!force && !client_cursor_ack_due(&k->cur, now, k->o.ack_every,
                                         k->o.ack_interval_ms))
        return 0;
    if ((rev = client_cursor_ackable(&k->cur)) == 0)
        return 0;
    if (ack_call(k, rev, force, &r) == CLIENT_OK) {
        client_cursor_acked(&k->cur, rev, client_now_ms());
        stats_update(k, 0, 0, 1);
        reel_reply_fini(&r);
        return 0;
    }
    if (!force && ack_retryable(r.code)) {
        /* Not at every message while the server is away: at the next
         * interval, or after the reconnect. */
        k->cur.since_ack = 0;
        k->cur.acked_at_ms = client_now_ms();
        reel_reply_fini(&r);
        return 0;
    }
    client_reply_set(&k->fail, r.code,
                     "consumer \"%s\": acknowledging revision %llu: %s",
                     k->name, (unsigned long long)rev,
                     r.details ? r.details : "");
    k->ack_failed = 1;
    reel_reply_fini(&r);
    return -1;
}

/* ---- One stream ---------------------------------------------------------- */

static int on_message(void *arg, const uint8_t *msg, size_t len) {
    reel_consumer_t *k = arg;
    uint64_t skipped = 0, last, finished;
    char err[160];
    size_t n;

    if (!k->got_message) {
        pthread_mutex_lock(&k->stats_mu);
        k->stats.streaming = 1;
        pthread_mutex_unlock(&k->stats_mu);
    }
    k->got_message = 1;
    if (client_batch_decode(msg, len, &k->batch, err, sizeof(err)) != 0 ||
        client_cursor_take(&k->cur, &k->batch, &skipped, err,
                           sizeof(err)) != 0) {
        client_reply_set(&k->fail, CLIENT_INTERNAL, "consumer \"%s\": %s",
                         k->name, err);
        return 1;
    }
    if ((n = k->batch.n) > 0) {
        uint64_t before = k->cur.delivered;

        last = finished = k->batch.events[n - 1].revision;
        pthread_mutex_lock(&k->stats_mu);
        k->handed = last;
        pthread_mutex_unlock(&k->stats_mu);
        if (k->o.on_batch(k->o.arg, k->batch.events, n, &finished) != 0)
            k->callback_done = 1;
        client_cursor_finish(&k->cur, last, finished);
        if (k->restart) {
            client_cursor_hand_back(&k->cur, k->restart_taken > before
                                                 ? k->restart_taken
                                                 : before);
            pthread_mutex_lock(&k->stats_mu);
            k->handed = k->cur.delivered;
            pthread_mutex_unlock(&k->stats_mu);
        }
    }
    stats_update(k, n, skipped, 0);
    /* From here: the callback's time is not the server's silence. */
    k->heard_ms = client_now_ms();
    if (k->callback_done)
        return 1;
    if (k->restart) {
        /* An ack that fails for good sets fail, which the loop sees
         * first. */
        (void)ack_now(k, 0);
        return 1;
    }
    return ack_now(k, 0) != 0;
}

static int on_idle(void *arg) {
    reel_consumer_t *k = arg;

    if (k->silence_ms > 0 && client_now_ms() - k->heard_ms >= k->silence_ms) {
        k->silent = 1;
        return 1;
    }
    return ack_now(k, 0) != 0;
}

/*
 * Streams that end like this are opened again: lost, ended by the server,
 * or cancelled by reeld because this side read nothing of its last message
 * for a while when other streams waited for room (api/rpc.c, the stream
 * budget: a callback that takes its time, a sink whose receiver is down).
 * That one says so in its status message, which is how it is told from a
 * RESOURCE_EXHAUSTED that refuses the subscribe itself.
 */
static int stream_retryable(const reel_reply_t *r) {
    return r->code == CLIENT_OK || r->code == CLIENT_UNAVAILABLE ||
           r->code == CLIENT_CANCELLED ||
           r->code == CLIENT_DEADLINE_EXCEEDED ||
           (r->code == CLIENT_RESOURCE_EXHAUSTED && r->details != NULL &&
            strstr(r->details, CLIENT_EVICTED) != NULL);
}

/*
 * The subscribe was refused FAILED_PRECONDITION: the consumer is held by
 * another stream (which may be this loop's last one, not yet noticed
 * gone), or invalidated. An ack of revision 0 moves nothing and tells them
 * apart: invalidated answers FAILED_PRECONDITION, else it says whether a
 * subscriber is active. 1 if the loop should try again.
 */
static int busy_retry(reel_consumer_t *k) {
    Reel__V1__AckEventsResponse *resp;
    reel_reply_t r = {0};
    int retry;

    if (ack_call(k, 0, 0, &r) != CLIENT_OK) {
        retry = r.code != CLIENT_FAILED_PRECONDITION &&
                ack_retryable(r.code);
        reel_reply_fini(&r);
        return retry;
    }
    resp = reel__v1__ack_events_response__unpack(NULL, r.len, r.body);
    /* Held: only this loop's own stream is worth waiting for. Free now:
     * the holder went meanwhile. */
    retry = resp == NULL || resp->consumer == NULL || !resp->consumer->active
                ? 1
                : k->held || k->o.standby;
    reel__v1__ack_events_response__free_unpacked(resp, NULL);
    reel_reply_fini(&r);
    return retry;
}

/* ---- The loop ------------------------------------------------------------ */

int reel_consumer_create(reel_client_t *c, const reel_consumer_opts_t *opts,
                         reel_consumer_t **out, reel_reply_t *err) {
    reel_consumer_t *k;

    if (err != NULL)
        memset(err, 0, sizeof(*err));
    if (out == NULL)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "out: NULL (where the consumer goes)");
    *out = NULL;
    if (c == NULL || opts == NULL)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "%s: NULL", c == NULL ? "client" : "opts");
    if (opts->consumer == NULL || *opts->consumer == '\0')
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "consumer: empty (a durable consumer needs "
                                "a name)");
    if (opts->on_batch == NULL)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "on_batch: NULL (the loop hands events to "
                                "it)");
    if (opts->ack_interval_ms < 0 ||
        opts->ack_interval_ms > MAX_ACK_INTERVAL_MS)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "ack_interval_ms: %lld is outside 0 to %d",
                                (long long)opts->ack_interval_ms,
                                MAX_ACK_INTERVAL_MS);
    if (opts->max_attempts < 0)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "max_attempts: %d is negative (0: no bound)",
                                opts->max_attempts);
    if (opts->silence_timeout_ms > 0 &&
        (opts->silence_timeout_ms < MIN_SILENCE_MS ||
         opts->silence_timeout_ms > MAX_SILENCE_MS))
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "silence_timeout_ms: %lld is outside %d to "
                                "%d (0: %d; negative: never)",
                                (long long)opts->silence_timeout_ms,
                                MIN_SILENCE_MS, MAX_SILENCE_MS,
                                DEFAULT_SILENCE_MS);
    if ((k = calloc(1, sizeof(*k))) == NULL ||
        (k->name = strdup(opts->consumer)) == NULL ||
        (k->pattern = strdup(opts->subject_pattern ? opts->subject_pattern
                                                   : "")) == NULL) {
        if (k != NULL)
            free(k->name);
        free(k);
        return client_reply_set(err, CLIENT_RESOURCE_EXHAUSTED,
                                "out of memory");
    }
    k->client = c;
    k->o = *opts;
    k->o.consumer = k->name;
    k->o.subject_pattern = k->pattern;
    if (k->o.ack_interval_ms == 0)
        k->o.ack_interval_ms = DEFAULT_ACK_INTERVAL_MS;
    if (k->o.ack_every == 0)
        k->o.ack_every = DEFAULT_ACK_EVERY;
    if (k->o.silence_timeout_ms == 0)
        k->o.silence_timeout_ms = DEFAULT_SILENCE_MS;
    client_cancel_init(&k->cancel);
    pthread_mutex_init(&k->stats_mu, NULL);
    *out = k;
    return CLIENT_OK;
}

void reel_consumer_destroy(reel_consumer_t *k) {
    if (k == NULL)
        return;
    client_batch_fini(&k->batch);
    reel_reply_fini(&k->fail);
    pthread_mutex_destroy(&k->stats_mu);
    client_cancel_fini(&k->cancel);
    free(k->pattern);
    free(k->name);
    free(k);
}

void reel_consumer_stop(reel_consumer_t *k) {
    if (k == NULL)
        return;
    pthread_mutex_lock(&k->cancel.mu);
    k->stopped = 1;
    pthread_mutex_unlock(&k->cancel.mu);
    client_cancel_fire(&k->cancel, WHY_STOP);
}

/* Fired by a shutdown of the client, not by a stop: the reason, or NULL. */
static const char *shut_down(reel_consumer_t *k) {
    const char *why;

    pthread_mutex_lock(&k->cancel.mu);
    why = k->cancel.fired && !k->stopped ? k->cancel.why : NULL;
    pthread_mutex_unlock(&k->cancel.mu);
    return why;
}

void reel_consumer_restart(reel_consumer_t *k, uint64_t taken) {
    k->restart = 1;
    k->restart_taken = taken;
}

void reel_consumer_finish(reel_consumer_t *k, uint64_t revision) {
    pthread_mutex_lock(&k->stats_mu);
    /* What was handed out when it is said, not what comes later. */
    if (revision > k->handed)
        revision = k->handed;
    if (revision > k->async_finished)
        k->async_finished = revision;
    pthread_mutex_unlock(&k->stats_mu);
}

void reel_consumer_stats(reel_consumer_t *k, reel_consumer_stats_t *out) {
    pthread_mutex_lock(&k->stats_mu);
    *out = k->stats;
    pthread_mutex_unlock(&k->stats_mu);
}

/* The SubscribeEventsRequest of the run's next stream: after what the
 * callback holds already (resume_after), so that a stream started again
 * does not send it all again only to be skipped. */
static uint8_t *subscribe_request(reel_consumer_t *k, size_t *len) {
    Reel__V1__SubscribeEventsRequest req =
        REEL__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    uint8_t *buf;

    req.from_revision = k->o.from_revision;
    req.subject_pattern = k->pattern;
    req.consumer = k->name;
    req.takeover = k->o.takeover != 0;
    req.resume_after =
        k->cur.seen > k->cur.delivered ? k->cur.seen : k->cur.delivered;
    *len = reel__v1__subscribe_events_request__get_packed_size(&req);
    if ((buf = malloc(*len ? *len : 1)) != NULL)
        reel__v1__subscribe_events_request__pack(&req, buf);
    return buf;
}

/*
 * The last ack, however the loop ended (end: how; OK for a stop). If it
 * fails, the loop's status says so: an OK end becomes the ack's failure,
 * another gets it added to its message.
 */
static void final_ack(reel_consumer_t *k, reel_reply_t *end) {
    uint64_t rev;
    char *was;

    take_async_finished(k);
    rev = client_cursor_ackable(&k->cur);
    /* An ack that failed for good is why the loop ended: end says so. */
    if (rev == 0 || k->ack_failed || ack_now(k, 1) == 0)
        return;
    was = end->details;
    end->details = NULL;
    client_reply_set(end, end->code == CLIENT_OK ? k->fail.code : end->code,
                     "%s%s%s (events after revision %llu come again)",
                     end->code == CLIENT_OK ? "" : (was ? was : ""),
                     end->code == CLIENT_OK ? "" : "; and ",
                     k->fail.details ? k->fail.details : "",
                     (unsigned long long)k->cur.acked);
    free(was);
}

int reel_consumer_run(reel_consumer_t *k, reel_reply_t *why) {
    reel_reply_t end = {0}, r;
    uint64_t rng = client_rng_seed();
    unsigned attempts = 0, streams = 0;
    uint8_t *req = NULL;
    client_user_t user;
    const char *shut;
    int64_t idle_ms;
    size_t len;
    int code;

    if (why != NULL)
        memset(why, 0, sizeof(*why));
    if (k == NULL)
        return client_reply_set(why, CLIENT_INVALID_ARGUMENT,
                                "consumer: NULL");
    if (k->ran)
        return client_reply_set(why, CLIENT_FAILED_PRECONDITION,
                                "consumer \"%s\": this loop has run; create "
                                "another to run again",
                                k->name);
    k->ran = 1;
    /* Inside the client for the whole run: a shutdown of the client ends
     * the loop as a stop does, and destroy waits for it to return. */
    if ((code = client_enter(k->client, &user, &k->cancel, why)) !=
        CLIENT_OK)
        return code;
    /* Idle ticks often enough to notice silence; acks still go only when
     * due. */
    idle_ms = k->o.ack_interval_ms;
    if (k->o.silence_timeout_ms > 0 && idle_ms > k->o.silence_timeout_ms / 4)
        idle_ms = k->o.silence_timeout_ms / 4;
    k->silence_ms = k->o.silence_timeout_ms;
    client_cursor_init(&k->cur, client_now_ms());
    while (!client_cancel_fired(&k->cancel)) {
        int64_t delay;
        int retry, started, quiet;

        if (streams++ > 0) {
            pthread_mutex_lock(&k->stats_mu);
            k->stats.reconnects++;
            pthread_mutex_unlock(&k->stats_mu);
        }
        free(req);
        if ((req = subscribe_request(k, &len)) == NULL) {
            client_reply_set(&end, CLIENT_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        client_cursor_new_stream(&k->cur);
        k->got_message = 0;
        k->silent = 0;
        k->heard_ms = client_now_ms();
        /* The stream has no deadline; it is acked on between messages
         * too, every ack interval, and ended if it goes silent. */
        client_stream(k->client, "/reel.v1.Wal/SubscribeEventBatches", req,
                      len, 0, on_message, on_idle, idle_ms, k, &k->cancel,
                      &started, &r);
        /* Sent, then lost rather than refused: reeld may hold the
         * consumer for this stream a while yet, messages or not. */
        if (started && stream_retryable(&r))
            k->held = 1;
        if (k->got_message) {
            k->held = 1;
            k->restarting = 0;
            attempts = 0;
            pthread_mutex_lock(&k->stats_mu);
            k->stats.streaming = 0;
            pthread_mutex_unlock(&k->stats_mu);
        }
        /* A failure on this side first: a stop meanwhile must not hide
         * it. */
        if (k->fail.code != CLIENT_OK) {
            reel_reply_fini(&r);
            end = k->fail;
            memset(&k->fail, 0, sizeof(k->fail));
            break;
        }
        if (k->callback_done || client_cancel_fired(&k->cancel)) {
            reel_reply_fini(&r);
            break;
        }
        if (k->restart) {
            /* The callback ended this stream: the next one comes at once.
             * reeld may not have let go of this one yet: that refusal is
             * waited out below, quietly and briefly. Not by taking the
             * consumer over, which would end a standby that took it in
             * between (it then stands by again here, as any refused). */
            k->restart = 0;
            k->restarting = 1;
            reel_reply_fini(&r);
            continue;
        }
        if (k->silent) {
            k->held = 1; /* the request may have reached reeld */
            /* Its connection may look fine (a server stopped, a network
             * that drops everything): as if lost, so subscribed again. */
            client_reply_set(&r, CLIENT_UNAVAILABLE,
                             "consumer \"%s\": no message from reeld for "
                             "%lld ms (silence_timeout_ms; it sends a "
                             "PROGRESS every second): taken for gone",
                             k->name, (long long)k->silence_ms);
            /* A stream that got nothing at all (a reeld too loaded to
             * tick, say) waits twice as long next time. */
            if (!k->got_message)
                k->silence_ms = k->silence_ms > MAX_SILENCE_MS / 2
                                    ? MAX_SILENCE_MS
                                    : 2 * k->silence_ms;
        }
        if (k->got_message)
            k->silence_ms = k->o.silence_timeout_ms;
        retry = stream_retryable(&r) ||
                (r.code == CLIENT_FAILED_PRECONDITION && !k->got_message &&
                 busy_retry(k));
        attempts++;
        if (!retry ||
            (k->o.max_attempts > 0 &&
             attempts >= (unsigned)k->o.max_attempts)) {
            end = r;
            break;
        }
        delay = client_backoff_delay(client_backoff_of(k->client),
                                     attempts - 1, &rng);
        quiet = k->restarting && r.code == CLIENT_FAILED_PRECONDITION &&
                attempts <= RESTART_QUIET_ATTEMPTS;
        if (quiet)
            delay = RESTART_WAIT_MS;
        else if (k->o.on_retry != NULL)
            k->o.on_retry(k->o.arg, r.code, r.details ? r.details : "",
                          delay);
        /* After UNAVAILABLE (reeld away, restarting), as soon as the
         * channel is back; after anything else, the whole delay. */
        if (r.code == CLIENT_UNAVAILABLE)
            client_reconnect_wait(k->client, &k->cancel, delay / 4, delay);
        else
            client_cancel_wait(&k->cancel, delay);
        reel_reply_fini(&r);
    }
    free(req);
    if (end.code == CLIENT_OK && (shut = shut_down(k)) != NULL)
        client_reply_set(&end, CLIENT_CANCELLED, "consumer \"%s\": %s",
                         k->name, shut);
    final_ack(k, &end);
    stats_update(k, 0, 0, 0);
    client_leave(k->client, &user);
    /* details is "" on OK too, as in any reply. */
    if (end.code == CLIENT_OK && end.details == NULL)
        client_reply_set(&end, CLIENT_OK, "%s", "");
    code = end.code;
    if (why != NULL)
        *why = end;
    else
        reel_reply_fini(&end);
    return code;
}
