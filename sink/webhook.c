/*
 * sink/webhook.c: the webhook engine: Standard Webhooks requests over
 * libcurl's multi interface, on the engine thread.
 *
 * Units. The engine takes events from the window in revision order and
 * makes each request a unit: one event (webhook-id evt_<revision>), or
 * with batch_max_events > 1 up to that many (and batch_max_bytes of JSON)
 * in one request whose data is an array (webhook-id
 * evt_<first>_<last>). A unit keeps its id, body and events until it is
 * delivered or dead-lettered, so every retry is the same request,
 * re-signed with the attempt's timestamp.
 *
 * Modes. ordered: at most one unit exists, so requests go one at a time
 * in revision order and a failing one holds the rest back. concurrent: up
 * to max_in_flight units exist (on the wire or waiting for their retry),
 * each retried on its own; the window's frontier acknowledges only up to
 * the first event not done. Connections are kept alive and reused by the
 * multi handle.
 *
 * Answers. 2xx: delivered. 410: the sink is disabled (a KV record,
 * see state.h), nothing is sent until `reel-sink enable` deletes it, then
 * the same unit goes again. 429, 502, 503, 504: the whole sink waits
 * (throttled) before its next request, at least the Retry-After the
 * receiver asked for (capped at retry_after_max_ms), and the unit counts
 * a failed attempt. Any other status (3xx included: redirects are not
 * followed), a timeout, a refused or reset connection: a failed attempt,
 * tried again after the schedule's next wait (retry.h). When the
 * schedule runs out, each event of the unit is stored as a dead letter
 * and counts as done; with on_exhausted "block" the schedule never runs
 * out.
 *
 * Stopping: no unit starts; those on the wire may finish until the grace
 * period ends; what did not is not done, so it comes again.
 *
 * Secrets: they go only into the HMAC. Neither the signature nor the URL
 * (which may carry a token) is ever logged or shown.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "base/log.h"
#include "base/text.h"
#include "base/version.h"
#include "sink/event.h"
#include "sink/http.h"
#include "sink/retry.h"
#include "sink/sign.h"
#include "sink/sink.h"
#include "sink/state.h"

#define POLL_MAX_MS 1000
#define ENABLE_CHECK_MS 1000
#define STATE_RETRY_MS 1000
/* The longest wait between tries of a dead letter's write (from
 * STATE_RETRY_MS, doubling), and the slice a wait is slept in, so a stop
 * is not held by it. */
#define DEAD_RETRY_MAX_MS 30000
#define DEAD_SLEEP_SLICE_MS 100

typedef struct unit {
    struct unit *next;
    uint64_t *pos; /* the events' window positions */
    size_t n;
    uint64_t first_rev, last_rev;
    int type;
    char id[64];
    char *body;
    size_t len;
    unsigned failures;
    int64_t first_ms; /* monotonic, of the first attempt; 0 before it */
    int64_t first_wall_ms, last_wall_ms;
    int64_t next_ms;  /* monotonic: not before */
    int in_flight;
    CURL *easy;
    struct curl_slist *hdrs;
    char errbuf[CURL_ERROR_SIZE];
    sink_http_answer_t ans; /* the last answer's headers */
    char last_error[256];
} unit_t;

typedef struct webhook {
    sink_runner_t *r;
    const sink_config_t *cfg;
    CURLM *multi;
    unit_t *units, *last;
    size_t n_units;
    int in_flight;
    int64_t paused_until_ms;
    int64_t enable_check_ms;
    uint64_t rng;
    size_t value_max; /* reeld's value limit, once learned (state.h) */
} webhook_t;

/* ---- Units ---------------------------------------------------------------- */

static void unit_free(unit_t *u) {
    if (u == NULL)
        return;
    if (u->easy != NULL)
        curl_easy_cleanup(u->easy);
    curl_slist_free_all(u->hdrs);
    free(u->pos);
    free(u->body);
    free(u);
}

/*
 * The next unit from the window's queued events, or NULL when none is
 * queued (or out of memory, said in the log and status; the engine tries
 * again at its next turn). Items in [next, tail) belong to the engine: the
 * callback only writes past tail, so they are read without the lock.
 */
/* What sink_event_wrap puts around a batch's events: its head (with a
 * 24-byte timestamp), the brackets and the closing brace. */
#define BATCH_ENVELOPE                                                     \
    (sizeof("{\"type\":\"reel.batch\",\"timestamp\":\"\",\"data\":[]}") - 1 + \
     24)

static unit_t *take(webhook_t *w) {
    sink_runner_t *r = w->r;
    size_t max = (size_t)w->cfg->batch_max_events, n = 0,
           total = BATCH_ENVELOPE;
    int batch = max > 1;
    uint64_t pos, tail, p;
    char **datas = NULL;
    size_t *lens = NULL;
    int64_t ts = 0;
    unit_t *u = NULL;

    pthread_mutex_lock(&r->mu);
    pos = r->win.next;
    tail = r->win.tail;
    pthread_mutex_unlock(&r->mu);
    if (pos == tail)
        return NULL;
    if (tail - pos < max)
        max = (size_t)(tail - pos);
    if ((u = calloc(1, sizeof(*u))) == NULL ||
        (u->pos = calloc(max, sizeof(*u->pos))) == NULL ||
        (datas = calloc(max, sizeof(*datas))) == NULL ||
        (lens = calloc(max, sizeof(*lens))) == NULL)
        goto oom;
    for (p = pos; p < tail && n < max; p++) {
        sink_item_t *it = sink_window_at(&r->win, p);
        size_t len;
        char *d = sink_event_data(it, &len, &ts);

        if (d == NULL)
            goto oom;
        /* The whole body within batch_max_bytes, envelope and commas
         * included; a first event larger than that goes alone. */
        if (n > 0 && total + 1 + len > w->cfg->batch_max_bytes) {
            free(d);
            break;
        }
        datas[n] = d;
        lens[n] = len;
        total += len + (n > 0);
        u->pos[n++] = p;
    }
    u->n = n;
    u->first_rev = sink_window_at(&r->win, pos)->revision;
    u->last_rev = sink_window_at(&r->win, pos + n - 1)->revision;
    u->type = sink_window_at(&r->win, pos)->type;
    if (batch)
        snprintf(u->id, sizeof(u->id), "evt_%" PRIu64 "_%" PRIu64,
                 u->first_rev, u->last_rev);
    else
        snprintf(u->id, sizeof(u->id), "evt_%" PRIu64, u->first_rev);
    if ((u->body = sink_event_wrap(u->type, ts, datas, lens, n, batch,
                                   &u->len)) == NULL)
        goto oom;
    for (size_t i = 0; i < n; i++)
        free(datas[i]);
    free(datas);
    free(lens);
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < n; i++)
        sink_window_at(&r->win, u->pos[i])->state = SINK_ITEM_TAKEN;
    r->win.next = pos + n;
    pthread_mutex_unlock(&r->mu);
    return u;
oom:
    for (size_t i = 0; datas != NULL && i < n; i++)
        free(datas[i]);
    free(datas);
    free(lens);
    unit_free(u);
    sink_runner_error(r, "out of memory building a request");
    REEL_ERROR("sink", "sink %s: out of memory building a request; trying "
               "again",
               w->cfg->name);
    return NULL;
}

static void unit_append(webhook_t *w, unit_t *u) {
    if (w->last != NULL)
        w->last->next = u;
    else
        w->units = u;
    w->last = u;
    w->n_units++;
}

static void unit_remove(webhook_t *w, unit_t *u) {
    unit_t **pp = &w->units, *prev = NULL;

    for (; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
        if (*pp == u) {
            *pp = u->next;
            if (w->last == u)
                w->last = prev;
            w->n_units--;
            return;
        }
    }
}

/* ---- One request ------------------------------------------------------------ */

/* Starts u's next attempt. 0, or -1 (out of memory: said, retried at the
 * next turn). */
static int start(webhook_t *w, unit_t *u) {
    const sink_config_t *cfg = w->cfg;
    sink_http_post_t p = {0};

    if (u->easy == NULL && (u->easy = curl_easy_init()) == NULL)
        goto oom;
    p.url = cfg->url;
    p.secrets = cfg->secrets;
    p.n_secrets = cfg->n_secrets;
    p.headers = cfg->headers;
    p.n_headers = cfg->n_headers;
    p.user_agent = "reel-sink/" REEL_VERSION;
    p.id = u->id;
    p.body = u->body;
    p.len = u->len;
    p.timeout_ms = cfg->timeout_ms;
    p.connect_timeout_ms = cfg->connect_timeout_ms;
    if (sink_http_prepare(u->easy, &p, sink_wall_ms() / 1000, &u->hdrs,
                          u->errbuf, &u->ans) != 0)
        goto oom;
    curl_easy_setopt(u->easy, CURLOPT_PRIVATE, u);
    if (curl_multi_add_handle(w->multi, u->easy) != CURLM_OK)
        goto oom;
    if (u->first_ms == 0) {
        u->first_ms = sink_now_ms();
        u->first_wall_ms = sink_wall_ms();
    }
    u->in_flight = 1;
    w->in_flight++;
    pthread_mutex_lock(&w->r->mu);
    w->r->in_flight++;
    pthread_mutex_unlock(&w->r->mu);
    return 0;
oom:
    sink_runner_error(w->r, "out of memory starting a request");
    REEL_ERROR("sink", "sink %s: out of memory starting the request of "
               "revision %" PRIu64 "; trying again",
               cfg->name, u->first_rev);
    u->next_ms = sink_now_ms() + STATE_RETRY_MS;
    return -1;
}

/* ---- Outcomes ----------------------------------------------------------------- */

/* "revision 12" or "revisions 12-40 (8 events)" */
static void describe(const unit_t *u, char *buf, size_t cap) {
    if (u->n == 1)
        snprintf(buf, cap, "revision %" PRIu64 " (%s)", u->first_rev, u->id);
    else
        snprintf(buf, cap, "revisions %" PRIu64 "-%" PRIu64 " (%zu events, "
                 "%s)", u->first_rev, u->last_rev, u->n, u->id);
}

/* Marks u's events done, frees u and reports the frontier. */
static void unit_done(webhook_t *w, unit_t *u, int dead) {
    sink_runner_t *r = w->r;

    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < u->n; i++)
        sink_window_done(&r->win, u->pos[i]);
    if (dead)
        r->dead_lettered += u->n;
    else
        r->delivered += u->n;
    if (u->failures > 0)
        r->failing--;
    sink_runner_report_locked(r);
    pthread_mutex_unlock(&r->mu);
    unit_remove(w, u);
    unit_free(u);
}

static int stopping(webhook_t *w) {
    int s;

    pthread_mutex_lock(&w->r->mu);
    s = w->r->stopping;
    pthread_mutex_unlock(&w->r->mu);
    return s;
}

/* The token is refused (UNAUTHENTICATED, or PERMISSION_DENIED: kv:write
 * missing): trying again would never store anything. */
static int token_refused(const reel_status_t *st) {
    return st->code == REEL_UNAUTHENTICATED ||
           st->code == REEL_PERMISSION_DENIED;
}

/*
 * Stores every event of u as a dead letter, then counts them done. A
 * write reel refuses for a while (reel restarting or away) is tried again,
 * from STATE_RETRY_MS doubling to DEAD_RETRY_MAX_MS, until it is stored or
 * the sink stops: an event is never done without its record. A refusal
 * that asking again cannot change stops the sink (exit 1), as a refused
 * token does at its start: a refused token, or INVALID_ARGUMENT (the
 * letter does not fit reeld's value limit even in parts). Retried, it held
 * every later event behind it for good while saying so once a second;
 * skipped, the event would be lost. Stopped, the event comes again after
 * the restart, once reeld's limit or the token is right.
 */
static void dead_letter(webhook_t *w, unit_t *u) {
    sink_runner_t *r = w->r;
    char what[160];

    describe(u, what, sizeof(what));
    for (size_t i = 0; i < u->n; i++) {
        sink_item_t *it = sink_window_at(&r->win, u->pos[i]);
        reel_status_t st = REEL_STATUS_INIT;
        int64_t wait = STATE_RETRY_MS;

        while (sink_state_dead_put(r->client, r->o.state_ns, w->cfg->name, it,
                                   u->failures, u->first_wall_ms,
                                   u->last_wall_ms, u->last_error,
                                   &w->value_max, &st) != REEL_OK) {
            if (token_refused(&st) || st.code == REEL_INVALID_ARGUMENT) {
                /* Not done: it comes again after the restart. */
                sink_runner_fatal(r, "storing the dead letter of revision "
                                  "%" PRIu64 ": %s", it->revision,
                                  reel_status_message(&st));
                reel_status_fini(&st);
                return;
            }
            REEL_ERROR("sink", "sink %s: storing the dead letter of revision "
                       "%" PRIu64 ": %s; trying again in %.1f s",
                       w->cfg->name, it->revision, reel_status_message(&st),
                       (double)wait / 1000.0);
            sink_runner_error(r, "storing a dead letter: %s",
                              reel_status_message(&st));
            reel_status_fini(&st);
            for (int64_t slept = 0; slept < wait;
                 slept += DEAD_SLEEP_SLICE_MS) {
                if (stopping(w))
                    return; /* not done: it comes again */
                usleep(DEAD_SLEEP_SLICE_MS * 1000);
            }
            if (stopping(w))
                return;
            wait = wait * 2 < DEAD_RETRY_MAX_MS ? wait * 2 : DEAD_RETRY_MAX_MS;
        }
    }
    REEL_ERROR("sink", "sink %s: %s is a dead letter after %u attempts over "
               "%.1f s; last error: %s (reel-sink replay %s)",
               w->cfg->name, what, u->failures,
               (double)(u->last_wall_ms - u->first_wall_ms) / 1000.0,
               u->last_error, w->cfg->name);
    unit_done(w, u, 1);
}

/* 410 Gone: the receiver says it wants nothing more. */
static void disable(webhook_t *w, unit_t *u) {
    sink_runner_t *r = w->r;
    reel_status_t st = REEL_STATUS_INIT;
    char reason[256];

    snprintf(reason, sizeof(reason),
             "the receiver answered 410 Gone to revision %" PRIu64,
             u->first_rev);
    pthread_mutex_lock(&r->mu);
    r->disabled = 1;
    snprintf(r->disabled_reason, sizeof(r->disabled_reason), "%s", reason);
    pthread_mutex_unlock(&r->mu);
    while (sink_state_disable(r->client, r->o.state_ns, w->cfg->name, reason,
                              410, u->first_rev, &st) != REEL_OK) {
        if (token_refused(&st)) {
            sink_runner_fatal(r, "recording that it is disabled: %s",
                              reel_status_message(&st));
            reel_status_fini(&st);
            return;
        }
        REEL_ERROR("sink", "sink %s: recording that it is disabled: %s; "
                   "trying again",
                   w->cfg->name, reel_status_message(&st));
        reel_status_fini(&st);
        /* Not recorded: the next run delivers it again and hears 410. */
        if (stopping(w))
            return;
        usleep(STATE_RETRY_MS * 1000);
    }
    REEL_ERROR("sink", "sink %s: disabled: %s; it delivers nothing until "
               "`reel-sink enable %s`",
               w->cfg->name, reason, w->cfg->name);
    /* The same request goes again once enabled. */
    u->next_ms = 0;
    w->enable_check_ms = sink_now_ms() + ENABLE_CHECK_MS;
}

static void finished(webhook_t *w, unit_t *u, CURLcode cc) {
    sink_runner_t *r = w->r;
    const sink_config_t *cfg = w->cfg;
    long status = 0;
    int64_t now = sink_now_ms(), wait, scheduled, ra = -1;
    char what[160], next[128];

    cc = sink_http_result(&u->ans, cc, u->errbuf);
    curl_easy_getinfo(u->easy, CURLINFO_RESPONSE_CODE, &status);
    if (cc == CURLE_OK) {
        curl_off_t us = 0;

        /* Answered (whatever the status): the receiver's time. */
        if (curl_easy_getinfo(u->easy, CURLINFO_TOTAL_TIME_T, &us) ==
            CURLE_OK)
            metrics_histogram_observe(r->m_delivery, (double)us / 1e6);
    }
    curl_multi_remove_handle(w->multi, u->easy);
    u->in_flight = 0;
    w->in_flight--;
    u->last_wall_ms = sink_wall_ms();
    pthread_mutex_lock(&r->mu);
    r->in_flight--;
    pthread_mutex_unlock(&r->mu);
    describe(u, what, sizeof(what));
    if (cc == CURLE_OK && status >= 200 && status < 300) {
        if (u->failures > 0)
            REEL_INFO("sink", "sink %s: %s delivered after %u failed "
                      "attempts",
                      cfg->name, what, u->failures);
        else
            REEL_DEBUG("sink", "sink %s: %s delivered", cfg->name, what);
        unit_done(w, u, 0);
        return;
    }
    if (cc == CURLE_OK && status == 410) {
        disable(w, u);
        return;
    }
    if (cc != CURLE_OK)
        snprintf(u->last_error, sizeof(u->last_error), "%s",
                 u->errbuf[0] ? u->errbuf : curl_easy_strerror(cc));
    else if (status >= 300 && status < 400)
        snprintf(u->last_error, sizeof(u->last_error),
                 "HTTP %ld (redirects are not followed)", status);
    else
        snprintf(u->last_error, sizeof(u->last_error), "HTTP %ld", status);
    /* curl's message may carry bytes that are not UTF-8 (a name from
     * the receiver), or be cut inside a character: reeld would refuse the
     * dead letter (INVALID_ARGUMENT, which stops the sink). */
    reel_utf8_scrub(u->last_error);
    if (u->failures++ == 0) {
        pthread_mutex_lock(&r->mu);
        r->failing++;
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_lock(&r->mu);
    sink_runner_failed_locked(
        r, cc == CURLE_OPERATION_TIMEDOUT ? SINK_FAIL_TIMEOUT
           : cc != CURLE_OK               ? SINK_FAIL_NETWORK
           : status >= 300 && status < 400 ? SINK_FAIL_REDIRECT
           : status == 429                 ? SINK_FAIL_THROTTLED
           : status >= 400 && status < 500 ? SINK_FAIL_CLIENT
                                           : SINK_FAIL_SERVER);
    pthread_mutex_unlock(&r->mu);
    sink_runner_error(r, "%s: %s", what, u->last_error);
    if (stopping(w)) {
        REEL_WARN("sink", "sink %s: %s attempt %u failed: %s; stopping, so "
                  "it comes again after the restart",
                  cfg->name, what, u->failures, u->last_error);
        return;
    }
    wait = scheduled = sink_retry_next(
        &cfg->retry, u->failures, u->first_ms, now,
        cfg->on_exhausted == SINK_EXHAUSTED_BLOCK, &w->rng);
    if (cc == CURLE_OK && sink_retry_throttles(status)) {
        if (u->ans.retry_after[0] != '\0' &&
            sink_retry_after_parse(u->ans.retry_after, sink_wall_ms(),
                                   cfg->retry.retry_after_max_ms, &ra) == 0)
            wait = sink_retry_with_after(
                &cfg->retry, wait, ra, u->first_ms, now,
                cfg->on_exhausted == SINK_EXHAUSTED_BLOCK);
        if (wait >= 0 && now + wait > w->paused_until_ms)
            w->paused_until_ms = now + wait;
    }
    if (wait < 0) {
        dead_letter(w, u);
        return;
    }
    u->next_ms = now + wait;
    sink_retry_describe(next, sizeof(next), wait, scheduled, ra,
                        cc == CURLE_OK && sink_retry_throttles(status));
    REEL_WARN("sink", "sink %s: %s attempt %u failed: %s; next attempt in "
              "%s",
              cfg->name, what, u->failures, u->last_error, next);
}

/* Disabled: has `reel-sink enable` deleted the record? */
static void check_enabled(webhook_t *w) {
    sink_runner_t *r = w->r;
    reel_status_t st = REEL_STATUS_INIT;
    int disabled = 1;

    if (sink_state_disabled(r->client, r->o.state_ns, w->cfg->name, &disabled,
                            NULL, &st) != REEL_OK) {
        reel_status_fini(&st);
        return;
    }
    if (disabled)
        return;
    pthread_mutex_lock(&r->mu);
    r->disabled = 0;
    r->disabled_reason[0] = '\0';
    pthread_mutex_unlock(&r->mu);
    REEL_INFO("sink", "sink %s: enabled again; delivering", w->cfg->name);
}

/* ---- The engine thread ---------------------------------------------------------- */

static void run(void *arg) {
    webhook_t *w = arg;
    sink_runner_t *r = w->r;
    size_t max_units = w->cfg->mode == SINK_ORDERED
                           ? 1
                           : (size_t)w->cfg->max_in_flight;

    for (;;) {
        int64_t now = sink_now_ms(), timeout = POLL_MAX_MS, deadline;
        int stop, disabled, running;
        CURLMsg *msg;
        unit_t *u;

        pthread_mutex_lock(&r->mu);
        /* Stopped for good (fatal): no request starts, as when stopping;
         * the process is on its way out. */
        stop = r->stopping || r->fatal;
        deadline = r->stop_deadline_ms;
        disabled = r->disabled;
        pthread_mutex_unlock(&r->mu);
        if (stop && (w->in_flight == 0 || now >= deadline))
            break;
        if (disabled && now >= w->enable_check_ms) {
            check_enabled(w);
            w->enable_check_ms = now + ENABLE_CHECK_MS;
            pthread_mutex_lock(&r->mu);
            disabled = r->disabled;
            pthread_mutex_unlock(&r->mu);
        }
        if (!stop && !disabled) {
            while (w->n_units < max_units && (u = take(w)) != NULL)
                unit_append(w, u);
            for (u = w->units; u != NULL && now >= w->paused_until_ms;
                 u = u->next)
                if (!u->in_flight && u->next_ms <= now)
                    (void)start(w, u);
        }
        curl_multi_perform(w->multi, &running);
        while ((msg = curl_multi_info_read(w->multi, &running)) != NULL) {
            if (msg->msg == CURLMSG_DONE) {
                unit_t *done = NULL;

                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
                                  (char **)&done);
                if (done != NULL)
                    finished(w, done, msg->data.result);
            }
        }
        /* Sleep until the next due retry, the end of a throttle, the next
         * enable check, the end of the grace period, or a wake. */
        now = sink_now_ms();
        if (disabled)
            timeout = w->enable_check_ms - now;
        else if (w->paused_until_ms > now)
            timeout = w->paused_until_ms - now;
        else
            for (u = w->units; u != NULL; u = u->next)
                if (!u->in_flight && u->next_ms - now < timeout)
                    timeout = u->next_ms - now;
        if (stop && deadline - now < timeout)
            timeout = deadline - now;
        if (timeout > POLL_MAX_MS)
            timeout = POLL_MAX_MS;
        if (timeout < 0)
            timeout = 0;
        /* Work may be waiting already (a unit freed a slot). */
        if (!stop && !disabled && w->n_units < max_units) {
            pthread_mutex_lock(&r->mu);
            if (sink_window_queued(&r->win) > 0)
                timeout = 0;
            pthread_mutex_unlock(&r->mu);
        }
        curl_multi_poll(w->multi, NULL, 0, (int)timeout, NULL);
    }
    /* What is still on the wire is abandoned: not done, so it comes
     * again (with the same webhook-id). */
    while (w->units != NULL) {
        unit_t *u = w->units;

        if (u->in_flight) {
            curl_multi_remove_handle(w->multi, u->easy);
            pthread_mutex_lock(&r->mu);
            r->in_flight--;
            pthread_mutex_unlock(&r->mu);
            REEL_WARN("sink", "sink %s: revision %" PRIu64 " still in flight "
                      "at the end of the stop's grace period; it comes "
                      "again",
                      w->cfg->name, u->first_rev);
        }
        unit_remove(w, u);
        unit_free(u);
    }
}

static void wake(void *arg) {
    webhook_t *w = arg;

    curl_multi_wakeup(w->multi);
}

static reel_code_t create(sink_runner_t *r, void **out, reel_status_t *st) {
    webhook_t *w = calloc(1, sizeof(*w));

    *out = NULL;
    if (w == NULL || (w->multi = curl_multi_init()) == NULL) {
        free(w);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "sink %s: out of memory", r->cfg->name);
    }
    w->r = r;
    w->cfg = r->cfg;
    w->rng = sink_rng_seed();
    curl_multi_setopt(w->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      (long)w->cfg->max_in_flight);
    *out = w;
    return REEL_OK;
}

static void destroy(void *arg) {
    webhook_t *w = arg;

    if (w == NULL)
        return;
    while (w->units != NULL) {
        unit_t *u = w->units;

        if (u->in_flight)
            curl_multi_remove_handle(w->multi, u->easy);
        unit_remove(w, u);
        unit_free(u);
    }
    curl_multi_cleanup(w->multi);
    free(w);
}

const sink_engine_ops_t sink_webhook_ops = {"webhook", create, run, wake,
                                            destroy};
