/*
 * api/wal_service.c: reel.v1.Wal, and the WAL's module descriptor (it
 * stores every module's events, each encoded by its own module: see
 * api/publish.c).
 *
 * SubscribeEvents wires a WAL subscription to the call like WatchValue
 * (bounded queue, drain hook pumps, cleanup frees); SubscribeEventBatches
 * is the same subscription, its events framed as EventBatch elements that
 * merge while they wait in the call's queue. A timer ticks every
 * progress interval; a tick that finds nothing sent since the last one
 * sends a PROGRESS event with the subscription's cursor: every time when
 * it is caught up (the head revision), so an idle consumer knows it is
 * current, and while it catches up whenever the cursor moved, so a
 * consumer whose pattern refuses a long backlog hears of the scan (and
 * may acknowledge it) instead of a silence. The WAL reads a catch-up in
 * parts, each pump one part, so ticks come between them.
 *
 * A durable consumer's subscription holds the consumer until the call is
 * freed (its cleanup destroys the subscription). When the WAL ends it
 * from outside (a takeover, or retention invalidating the consumer), or
 * a subscription drops out of live delivery, it asks for a pump through
 * the call's wake, the same wake the ticks use (a call has one): the pump
 * then ends the call with the WAL's status, or catches up.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/convert.h"
#include "api/page.h"
#include "api/reply.h"
#include "api/services.h"
#include "api/tenant.h"
#include "reel/v1/wal.pb-c.h"
#include "auth/auth.h"
#include "base/clock.h"
#include "base/text.h"
#include "wal/wal.h"

#define PROGRESS_MS 1000

/* ---- GetHead ------------------------------------------------------------- */

static void w_get_head(rpc_call_t *call, void *arg, const uint8_t *req,
                       size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__GetHeadRequest *in =
        reel__v1__get_head_request__unpack(NULL, len, req);
    Reel__V1__GetHeadResponse out = REEL__V1__GET_HEAD_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    uint8_t *buf;
    size_t blen;

    if (in == NULL) {
        api_bad_request(call, "GetHeadRequest");
        return;
    }
    reel__v1__get_head_request__free_unpacked(in, NULL);
    if (wal_head(ctx->wal, &out.head_revision, &out.oldest_revision, &st) !=
        REEL_OK) {
        rpc_call_finish_status(call, &st);
        reel_status_fini(&st);
        return;
    }
    API_PACK(reel__v1__get_head_response, &out, &buf, &blen);
    api_finish_packed(call, buf, blen);
}

/* ---- Tenants -------------------------------------------------------------- */

/*
 * A durable consumer's name as stored (api/tenant.h): "::T:name" for a
 * tenant T, as given otherwise. A caller that does not see every tenant
 * gives a name of WAL_CONSUMER_CHARS (so no ':' and no other tenant's
 * prefix), its limit counting the prefix.
 */
static reel_code_t consumer_in(rpc_call_t *call, const char *field,
                               const char *name, char **owned,
                               const char **out, reel_status_t *st) {
    size_t pre;
    reel_code_t rc;

    *owned = NULL;
    *out = name;
    /* Checked here too, so the message names the request's field. */
    if (api_tenant_sees_all(call))
        return reel_check_charset(field, name, strlen(name),
                                  WAL_CONSUMER_MAX,
                                  WAL_CONSUMER_STORED_CHARS, st);
    if ((rc = api_tenant_name_in(call, field, name, WAL_CONSUMER_MAX, owned,
                                 out, st)) != REEL_OK)
        return rc;
    pre = strlen(*out) - strlen(name);
    return reel_check_charset(field, name, strlen(name),
                              WAL_CONSUMER_MAX - pre, WAL_CONSUMER_CHARS, st);
}

/* ---- SubscribeEvents ------------------------------------------------------ */

typedef struct tail {
    api_ctx_t *ctx;
    rpc_call_t *call;
    wal_sub_t *sub;
    atomic_uint sent; /* events sent since the last tick */
    atomic_int tick_due;
    uint64_t reported; /* the last PROGRESS's revision (ticks only) */
    pthread_mutex_t mu;
    api_timer_t *timer;
    int over;
    int batch; /* SubscribeEventBatches: events are EventBatch.events */
    int hide_scoped; /* the default tenant's: other tenants' events skipped */
    int scoped;      /* a tenant with a prefix: its own KV events only */
} tail_t;

/*
 * Queues one stored Event. For SubscribeEventBatches it is framed as one
 * element of EventBatch.events (field 1, length-delimited), which merges
 * into the message still waiting in the call's queue: a subscriber that
 * keeps up gets each event at once, one catching up gets them by the
 * hundred.
 */
static reel_code_t tail_send(tail_t *t, const uint8_t *bytes, size_t len) {
    if (!t->batch)
        return rpc_call_send(t->call, bytes, len);
    return api_send_element(t->call, NULL, 0, bytes, len);
}

static int tail_deliver(void *arg, const uint8_t *bytes, size_t len,
                        uint64_t revision) {
    tail_t *t = arg;

    (void)revision;
    /* Another tenant's event: taken, not sent (api/tenant.h). */
    if (t->hide_scoped && api_tenant_event_is_scoped(bytes, len))
        return WAL_SINK_SKIPPED;
    if (t->scoped) {
        uint8_t *own;
        size_t olen;
        int r = api_tenant_event_out(t->call, bytes, len, &own, &olen);
        reel_code_t rc;

        if (r == 0)
            return WAL_SINK_SKIPPED;
        if (r < 0)
            return 1; /* out of memory: delivered again from storage */
        rc = tail_send(t, own, olen);
        free(own);
        if (rc != REEL_OK)
            return 1;
        atomic_fetch_add(&t->sent, 1);
        return 0;
    }
    if (tail_send(t, bytes, len) != REEL_OK)
        return 1;
    atomic_fetch_add(&t->sent, 1);
    return 0;
}

/* From a pump (which holds a call reference), with no WAL lock held. */
static void tail_end(void *arg, const reel_status_t *st) {
    tail_t *t = arg;
    reel_status_t own = REEL_STATUS_INIT;

    pthread_mutex_lock(&t->mu);
    t->over = 1;
    pthread_mutex_unlock(&t->mu);
    if (!t->scoped) {
        rpc_call_finish_status(t->call, st);
        return;
    }
    /* A tenant's consumer is named in it as the tenant gave it. */
    reel_status_set(&own, st->code, "%s", reel_status_message(st));
    api_tenant_status_out(t->call, &own);
    rpc_call_finish_status(t->call, &own);
    reel_status_fini(&own);
}

static void tail_wake(rpc_call_t *call, void *arg);

/* Under WAL locks: the subscription must end (its consumer was taken over
 * or invalidated), or must catch up (it dropped out of live delivery).
 * Only posts to the call, whose wake pumps it. The call is still
 * allocated: its cleanup destroys the subscription, which waits for the
 * WAL locks held here; once finished, the call runs no wake. */
static void tail_wake_sink(void *arg) {
    tail_t *t = arg;

    rpc_call_wake(t->call, tail_wake, t);
}

static const wal_sink_t tail_sink = {tail_deliver, tail_end, tail_wake_sink,
                                     NULL};

static void on_tick(void *arg);

/* A tick came due: a PROGRESS event if idle and caught up, and the next
 * tick. */
static void tail_tick(tail_t *t) {
    Reel__V1__Event ev = REEL__V1__EVENT__INIT;
    uint8_t *buf;
    size_t len;

    if (atomic_exchange(&t->sent, 0) == 0) {
        int live = wal_sub_live(t->sub);
        uint64_t cursor;

        /* A pump at work (a part of a catch-up) has the cursor: the next
         * tick reads it, rather than holding every publish behind it. */
        if (wal_sub_cursor_try(t->sub, &cursor) != 0)
            goto next;

        /* Everything up to the cursor was sent or filtered out, so a
         * durable consumer may acknowledge it: caught up (every tick, so
         * an idle subscriber hears from reeld), or part way through a
         * catch-up that sent nothing since the last tick (a backlog its
         * pattern refuses, each time it gets further). */
        if (!live && cursor <= t->reported)
            goto next;
        t->reported = cursor;
        ev.type = REEL__V1__EVENT__TYPE__PROGRESS;
        ev.revision = cursor;
        ev.ts_ms = reel_clock_now_ms();
        API_PACK(reel__v1__event, &ev, &buf, &len);
        if (buf != NULL) {
            tail_send(t, buf, len); /* a full queue needs no PROGRESS */
            free(buf);
        }
    }
next:
    pthread_mutex_lock(&t->mu);
    if (!t->over) {
        api_timer_stop(t->ctx->timers, t->timer);
        t->timer = api_timer_start(t->ctx->timers,
                                   reel_clock_mono_ns() +
                                       (int64_t)PROGRESS_MS * 1000000,
                                   on_tick, t);
    }
    pthread_mutex_unlock(&t->mu);
}

/* Poller thread: the one wake of the call (a call has one wake slot), for
 * both ticks and ends. The pump ends the subscription if it must. */
static void tail_wake(rpc_call_t *call, void *arg) {
    tail_t *t = arg;

    (void)call;
    wal_sub_pump(t->sub);
    if (atomic_exchange(&t->tick_due, 0))
        tail_tick(t);
}

/* Timer thread: only post to the call. */
static void on_tick(void *arg) {
    tail_t *t = arg;

    atomic_store(&t->tick_due, 1);
    rpc_call_wake(t->call, tail_wake, t);
}

static void tail_drain(rpc_call_t *call, void *arg) {
    tail_t *t = arg;

    (void)call;
    wal_sub_pump(t->sub);
}

static void tail_cancel(rpc_call_t *call, void *arg, reel_code_t why) {
    tail_t *t = arg;

    pthread_mutex_lock(&t->mu);
    t->over = 1;
    pthread_mutex_unlock(&t->mu);
    api_finish_cancelled(call, why);
}

/* Once the call is freed: also releases the subscription's consumer. */
static void tail_cleanup(void *arg) {
    tail_t *t = arg;
    api_timer_t *tm;

    pthread_mutex_lock(&t->mu);
    t->over = 1;
    tm = t->timer;
    t->timer = NULL;
    pthread_mutex_unlock(&t->mu);
    api_timer_stop(t->ctx->timers, tm);
    wal_sub_destroy(t->sub);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static void subscribe(rpc_call_t *call, api_ctx_t *ctx, const uint8_t *req,
                      size_t len, int batch) {
    Reel__V1__SubscribeEventsRequest *in =
        reel__v1__subscribe_events_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc;
    tail_t *t;
    const char *pattern, *consumer = "";
    char *pattern_owned = NULL, *consumer_owned = NULL;
    char mark[AUTH_TENANT_MAX + 8];
    wal_sink_t sink;

    if (in == NULL) {
        api_bad_request(call, "SubscribeEventsRequest");
        return;
    }
    if ((*in->consumer &&
         consumer_in(call, "consumer", in->consumer, &consumer_owned,
                     &consumer, &st) != REEL_OK) ||
        api_tenant_pattern_in(call, in->subject_pattern, &pattern_owned,
                              &pattern, &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
        goto out;
    }
    if (in->takeover && !*in->consumer) {
        rpc_call_finish(call, REEL_INVALID_ARGUMENT,
                        "takeover: only a durable consumer (consumer) can "
                        "be taken over",
                        NULL, 0);
        goto out;
    }
    if (in->resume_after != 0 && !*in->consumer) {
        rpc_call_finish(call, REEL_INVALID_ARGUMENT,
                        "resume_after: only with a durable consumer "
                        "(consumer); without one, from_revision says where "
                        "to start",
                        NULL, 0);
        goto out;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        goto out;
    }
    t->ctx = ctx;
    t->call = call;
    t->batch = batch;
    t->hide_scoped = api_tenant_hides_scoped(call);
    t->scoped = api_tenant_scoped(call) != NULL;
    pthread_mutex_init(&t->mu, NULL);
    /* Before the subscription exists: once it does, a takeover may end
     * the call at any moment, and only the cleanup may free t. */
    rpc_call_ref(call);
    rpc_call_on_cleanup(call, tail_cleanup, t);
    /* A tenant's tail is offered its own events alone. */
    sink = tail_sink;
    sink.scope = api_tenant_mark(call, mark, sizeof(mark));
    if (*in->consumer)
        rc = wal_consumer_subscribe(ctx->wal, consumer, in->from_revision,
                                    in->resume_after, pattern, in->takeover,
                                    &sink, t, &t->sub, &st);
    else
        rc = wal_sub_create(ctx->wal, in->from_revision, pattern, &sink, t,
                            &t->sub, &st);
    if (rc != REEL_OK) {
        api_tenant_status_out(call, &st);
        rpc_call_finish_status(call, &st);
        rpc_call_unref(call);
        goto out;
    }
    rpc_call_on_drain(call, tail_drain, t);
    pthread_mutex_lock(&t->mu);
    if (!t->over)
        t->timer = api_timer_start(ctx->timers,
                                   reel_clock_mono_ns() +
                                       (int64_t)PROGRESS_MS * 1000000,
                                   on_tick, t);
    pthread_mutex_unlock(&t->mu);
    rpc_call_on_cancel(call, tail_cancel, t);
    wal_sub_pump(t->sub);
    rpc_call_unref(call);
out:
    free(pattern_owned);
    free(consumer_owned);
    reel_status_fini(&st);
    reel__v1__subscribe_events_request__free_unpacked(in, NULL);
}

static void w_subscribe_events(rpc_call_t *call, void *arg, const uint8_t *req,
                               size_t len) {
    subscribe(call, arg, req, len, 0);
}

static void w_subscribe_event_batches(rpc_call_t *call, void *arg,
                                      const uint8_t *req, size_t len) {
    subscribe(call, arg, req, len, 1);
}

/* ---- Consumers ------------------------------------------------------------ */

/* The pattern's owned copy, shown to a tenant as given, is *pattern_out
 * (free it; NULL when none was needed or out of memory). */
static void consumer_to_pb(rpc_call_t *call, const wal_consumer_t *c,
                           uint64_t head, Reel__V1__Consumer *m,
                           char **pattern_out) {
    *pattern_out = NULL;
    reel__v1__consumer__init(m);
    m->name = c->name == NULL ? ""
              : call != NULL  ? (char *)api_tenant_name_out(call, c->name)
                              : c->name;
    m->acked_revision = c->acked;
    m->pending = c->pending;
    m->pending_exact = c->pending_exact;
    m->behind_revisions = head > c->acked ? head - c->acked : 0;
    m->holding_bytes = c->holding_bytes;
    m->active = c->active;
    m->subject_pattern = c->pattern ? c->pattern : "";
    if (call != NULL && c->pattern != NULL &&
        api_tenant_scoped(call) != NULL &&
        (*pattern_out = api_tenant_pattern_out(call, c->pattern)) != NULL)
        m->subject_pattern = *pattern_out;
    m->created_at_ms = c->created_at_ms;
    m->acked_at_ms = c->acked_at_ms;
    m->invalidated = c->invalidated_at_ms != 0;
    m->invalidated_at_ms = c->invalidated_at_ms;
    m->invalidated_reason =
        c->invalidated_reason ? c->invalidated_reason : "";
}

static void w_ack_events(rpc_call_t *call, void *arg, const uint8_t *req,
                         size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__AckEventsRequest *in =
        reel__v1__ack_events_request__unpack(NULL, len, req);
    Reel__V1__AckEventsResponse out = REEL__V1__ACK_EVENTS_RESPONSE__INIT;
    Reel__V1__Consumer cm;
    reel_status_t st = REEL_STATUS_INIT;
    wal_consumer_t c = {0};
    uint64_t head, oldest;
    uint8_t *buf;
    size_t blen;
    char *name_owned = NULL, *pattern = NULL;
    const char *name;

    if (in == NULL) {
        api_bad_request(call, "AckEventsRequest");
        return;
    }
    if (consumer_in(call, "consumer", in->consumer, &name_owned, &name,
                    &st) != REEL_OK ||
        wal_ack(ctx->wal, name, in->revision, &c, &st) != REEL_OK ||
        wal_head(ctx->wal, &head, &oldest, &st) != REEL_OK) {
        api_tenant_status_out(call, &st);
        rpc_call_finish_status(call, &st);
    } else {
        consumer_to_pb(call, &c, head, &cm, &pattern);
        out.consumer = &cm;
        API_PACK(reel__v1__ack_events_response, &out, &buf, &blen);
        api_finish_packed(call, buf, blen);
    }
    free(pattern);
    free(name_owned);
    wal_consumer_fini(&c);
    reel_status_fini(&st);
    reel__v1__ack_events_request__free_unpacked(in, NULL);
}

/* Room for numbers a consumer's message gets after its page is read. */
#define CONSUMER_SLACK 64

/* A consumer's share of a ListConsumers response, at most: what is filled
 * in after the page is read (how far behind it is, whether a subscriber is
 * attached) is counted at its largest, with CONSUMER_SLACK to spare. */
static size_t consumer_size(void *arg, const void *elem) {
    Reel__V1__Consumer pb;
    char *pattern;

    (void)arg;
    /* As stored: a tenant's name and pattern only shrink when shown. */
    consumer_to_pb(NULL, elem, UINT64_MAX, &pb, &pattern);
    pb.pending = UINT64_MAX;
    pb.pending_exact = 1;
    pb.behind_revisions = UINT64_MAX;
    pb.holding_bytes = UINT64_MAX;
    pb.active = 1;
    return api_page_elem_size(reel__v1__consumer__get_packed_size(&pb)) +
           CONSUMER_SLACK;
}

/*
 * A tenant's consumers are the names with its prefix, one run of the
 * sorted names from "::T:": its page is cut at the first name past them.
 * The default tenant's are the names without "::" in front, which sort
 * before and after that run: its page is cut at the first tenant's name,
 * and a page that would start there starts past every tenant's name
 * instead (";" sorts right after ':').
 */
static reel_code_t list_own(rpc_call_t *call, api_ctx_t *ctx,
                            const char *start_after, uint32_t limit,
                            reel_page_t *page, wal_consumer_t **cs,
                            size_t *n, size_t *shown, int *more,
                            reel_status_t *st) {
    char pre[AUTH_TENANT_MAX + 8], *after = NULL;
    const char *t = api_tenant_scoped(call);
    reel_code_t rc;
    size_t i;

    *shown = 0;
    if (api_tenant_sees_all(call)) {
        rc = wal_consumers(ctx->wal, start_after, limit, page, cs, n, more,
                           st);
        *shown = *n;
        return rc;
    }
    if (t != NULL) {
        snprintf(pre, sizeof(pre), "%s%s:", API_TENANT_MARK, t);
        if ((after = malloc(strlen(pre) + strlen(start_after) + 1)) ==
            NULL)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        strcpy(after, pre);
        strcat(after, start_after);
        rc = wal_consumers(ctx->wal, after, limit, page, cs, n, more, st);
        free(after);
        if (rc != REEL_OK)
            return rc;
        for (i = 0; i < *n && strncmp((*cs)[i].name, pre, strlen(pre)) == 0;
             i++)
            ;
        if (i < *n)
            *more = 0;
        *shown = i;
        return REEL_OK;
    }
    if (strncmp(start_after, API_TENANT_MARK, 2) == 0)
        start_after = ";";
    for (int pass = 0; pass < 2; pass++) {
        if ((rc = wal_consumers(ctx->wal, start_after, limit, page, cs, n,
                                more, st)) != REEL_OK)
            return rc;
        for (i = 0; i < *n &&
                    strncmp((*cs)[i].name, API_TENANT_MARK, 2) != 0;
             i++)
            ;
        if (i > 0 || *n == 0 || pass == 1) {
            if (i < *n)
                *more = 1;
            *shown = i;
            return REEL_OK;
        }
        for (i = 0; i < *n; i++)
            wal_consumer_fini(&(*cs)[i]);
        free(*cs);
        *cs = NULL;
        *n = 0;
        start_after = ";";
    }
    return REEL_OK;
}

static void w_list_consumers(rpc_call_t *call, void *arg, const uint8_t *req,
                             size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__ListConsumersRequest *in =
        reel__v1__list_consumers_request__unpack(NULL, len, req);
    Reel__V1__ListConsumersResponse out =
        REEL__V1__LIST_CONSUMERS_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    reel_page_t page = api_page(ctx, consumer_size, NULL);
    Reel__V1__Consumer *pbs = NULL, **ptrs = NULL;
    wal_consumer_t *cs = NULL;
    uint64_t head, oldest;
    size_t n = 0, shown = 0, blen;
    uint8_t *buf;
    char **patterns = NULL;
    int more = 0;

    if (in == NULL) {
        api_bad_request(call, "ListConsumersRequest");
        return;
    }
    if (list_own(call, ctx, in->start_after, in->limit, &page, &cs, &n,
                 &shown, &more, &st) != REEL_OK ||
        wal_head(ctx->wal, &head, &oldest, &st) != REEL_OK) {
        api_tenant_status_out(call, &st);
        rpc_call_finish_status(call, &st);
        goto out;
    }
    pbs = calloc(shown ? shown : 1, sizeof(*pbs));
    ptrs = calloc(shown ? shown : 1, sizeof(*ptrs));
    patterns = calloc(shown ? shown : 1, sizeof(*patterns));
    if (pbs == NULL || ptrs == NULL || patterns == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        goto out;
    }
    for (size_t i = 0; i < shown; i++) {
        consumer_to_pb(call, &cs[i], head, &pbs[i], &patterns[i]);
        ptrs[i] = &pbs[i];
    }
    out.n_consumers = shown;
    out.consumers = ptrs;
    out.more = more;
    out.next_start_after = shown > 0 ? pbs[shown - 1].name : "";
    API_PACK(reel__v1__list_consumers_response, &out, &buf, &blen);
    api_finish_packed(call, buf, blen);
out:
    for (size_t i = 0; i < n; i++)
        wal_consumer_fini(&cs[i]);
    for (size_t i = 0; patterns != NULL && i < shown; i++)
        free(patterns[i]);
    free(patterns);
    free(cs);
    free(pbs);
    free(ptrs);
    reel_status_fini(&st);
    reel__v1__list_consumers_request__free_unpacked(in, NULL);
}

static void w_delete_consumer(rpc_call_t *call, void *arg, const uint8_t *req,
                              size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__DeleteConsumerRequest *in =
        reel__v1__delete_consumer_request__unpack(NULL, len, req);
    Reel__V1__DeleteConsumerResponse out =
        REEL__V1__DELETE_CONSUMER_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    uint8_t *buf;
    size_t blen;
    char *name_owned = NULL;
    const char *name;

    if (in == NULL) {
        api_bad_request(call, "DeleteConsumerRequest");
        return;
    }
    if (consumer_in(call, "name", in->name, &name_owned, &name, &st) !=
            REEL_OK ||
        wal_consumer_delete(ctx->wal, name, &st) != REEL_OK) {
        api_tenant_status_out(call, &st);
        rpc_call_finish_status(call, &st);
    } else {
        API_PACK(reel__v1__delete_consumer_response, &out, &buf, &blen);
        api_finish_packed(call, buf, blen);
    }
    free(name_owned);
    reel_status_fini(&st);
    reel__v1__delete_consumer_request__free_unpacked(in, NULL);
}

int api_wal_register(rpc_server_t *srv, api_ctx_t *ctx) {
    rpc_method_t ms[] = {
        {"/reel.v1.Wal/SubscribeEvents", RPC_SERVER_STREAM, w_subscribe_events,
         ctx, &reel__v1__subscribe_events_request__descriptor},
        {"/reel.v1.Wal/SubscribeEventBatches", RPC_SERVER_STREAM,
         w_subscribe_event_batches, ctx,
         &reel__v1__subscribe_events_request__descriptor},
        {"/reel.v1.Wal/GetHead", RPC_UNARY, w_get_head, ctx,
         &reel__v1__get_head_request__descriptor},
        {"/reel.v1.Wal/AckEvents", RPC_UNARY, w_ack_events, ctx,
         &reel__v1__ack_events_request__descriptor},
        {"/reel.v1.Wal/ListConsumers", RPC_UNARY, w_list_consumers, ctx,
         &reel__v1__list_consumers_request__descriptor},
        {"/reel.v1.Wal/DeleteConsumer", RPC_UNARY, w_delete_consumer, ctx,
         &reel__v1__delete_consumer_request__descriptor},
    };

    for (size_t i = 0; i < sizeof(ms) / sizeof(*ms); i++)
        if (rpc_server_add_method(srv, &ms[i]) != 0)
            return -1;
    return 0;
}

/* ---- The module ---------------------------------------------------------- */

static reel_code_t wal_module_start(api_ctx_t *ctx, reel_status_t *st) {
    /* A tenant's consumers are capped apart: they share its prefix. */
    ctx->limits.wal.consumer_scope = api_tenant_prefix_len;
    return wal_create(ctx->store, api_wal_encode, ctx, &ctx->limits.wal,
                      &ctx->wal, st);
}

static void wal_module_stop(api_ctx_t *ctx) {
    wal_stop(ctx->wal); /* its trimmer writes through the store */
}

static void wal_module_destroy(api_ctx_t *ctx) {
    wal_destroy(ctx->wal);
    ctx->wal = NULL;
}

static reel_code_t wal_module_before_commit(api_ctx_t *ctx, store_txn_t *txn,
                                            const store_change_t *changes,
                                            size_t n, reel_status_t *st) {
    /* A change committed without its event would be a hole in the WAL
     * for good: refused, so that the group fails instead. Before the WAL
     * starts nothing may commit a change (api_module_t.ready). */
    if (ctx->wal == NULL)
        return n == 0 ? REEL_OK
                      : reel_status_set(st, REEL_INTERNAL,
                                        "a change (revision %llu) was "
                                        "committed before the WAL started",
                                        (unsigned long long)changes[0].revision);
    return wal_before_commit(ctx->wal, txn, changes, n, st);
}

static void wal_module_publish(api_ctx_t *ctx, const store_change_t *changes,
                               size_t n) {
    if (ctx->wal != NULL)
        wal_publish(ctx->wal, changes, n);
}

/* It emits no changes of its own: it stores everyone's (so it comes last
 * in reeld's table, after the modules whose events it sends). */
const api_module_t api_wal_module = {
    .name = "wal",
    .cfs = wal_cfs,
    .serve = api_wal_register,
    .start = wal_module_start,
    .stop = wal_module_stop,
    .destroy = wal_module_destroy,
    .before_commit = wal_module_before_commit,
    .publish = wal_module_publish,
};
