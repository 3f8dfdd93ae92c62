/*
 * api/signals_service.c: reel.v1.Signals over the signals module.
 *
 * AwaitSignal is a long poll without polling. The awaiter registers with
 * the signals module, then queues one consume attempt to the writer. When
 * the attempt finds nothing, the call just waits. A later send of that
 * (run, name) claims the idle awaiter and consumes the signal for it in
 * the send's own write, so one commit sends and delivers; the send's wake
 * (through rpc_call_wake, onto a poller thread) makes an awaiter that was
 * busy try again. A timer ends the call with delivered=false at
 * timeout_ms, or sooner, ahead of the client's deadline
 * (rpc_call_wait_until_ns), and from then on the awaiter takes nothing.
 * A client that leaves, or a server that stops, sets `abandoned`, which
 * makes any attempt still queued consume nothing.
 *
 * Locking: an awaiter's state changes under its mutex; finishing the call
 * and queueing attempts happen after it is released. Every queued attempt
 * holds a call reference, so the awaiter (freed by the call's cleanup)
 * outlives it.
 *
 * Tenants: signals belong to their run, so every call checks that the run
 * it names is the caller's (api_run_check: another tenant's run is a
 * missing one); a send by session names the tenant's app as stored.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/convert.h"
#include "api/page.h"
#include "api/reply.h"
#include "api/services.h"
#include "api/tenant.h"
#include "reel/v1/signals.pb-c.h"
#include "api/timer.h"
#include "base/clock.h"
#include "signals/signals.h"

void api_signal_to_pb(const signal_t *g, Reel__V1__Signal *m) {
    reel__v1__signal__init(m);
    m->run_id = (char *)g->run_id;
    m->name = (char *)g->name;
    m->payload = (char *)g->payload;
    m->signal_id = (char *)g->signal_id;
    m->seq = g->seq;
    m->revision = g->revision;
    m->sent_at_ms = g->sent_at_ms;
    m->consumed_at_ms = g->consumed_at_ms;
    m->journal_seq = g->journal_seq;
    m->scheduled = g->scheduled;
    m->deliver_at_ms = g->deliver_at_ms;
}

/* ---- SendSignal ------------------------------------------------------------ */

static void send_done(void *arg, signals_send_result_t *res) {
    rpc_call_t *call = arg;
    Reel__V1__SendSignalResponse out = REEL__V1__SEND_SIGNAL_RESPONSE__INIT;
    Reel__V1__Signal sig;
    uint8_t *buf;
    size_t len;

    if (res->status.code != REEL_OK) {
        api_tenant_status_out(call, &res->status); /* names its app */
        rpc_call_finish_status(call, &res->status);
        return;
    }
    api_signal_to_pb(&res->signal, &sig);
    out.accepted = 1;
    out.duplicate = res->duplicate;
    out.signal = &sig;
    out.run_status = (Reel__V1__Run__Status)res->run_status;
    API_PACK(reel__v1__send_signal_response, &out, &buf, &len);
    api_finish_packed(call, buf, len);
}

static void s_send_signal(rpc_call_t *call, void *arg, const uint8_t *req,
                          size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__SendSignalRequest *in =
        reel__v1__send_signal_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    signals_send_args_t a;
    char *app_owned = NULL;
    const char *app = "";

    if (in == NULL) {
        api_bad_request(call, "SendSignalRequest");
        return;
    }
    a.run_id = in->run_id;
    a.user = in->user, a.session = in->session;
    a.name = in->name;
    a.payload = in->payload;
    a.signal_id = in->signal_id;
    a.deliver_at_ms = in->deliver_at_ms;
    /* By run_id: the run must be the caller's; by session: in its app. */
    if ((*in->run_id ? api_run_check(call, ctx, in->run_id, &st)
                     : *in->app ? api_tenant_name_in(call, "app", in->app,
                                                     JOURNAL_MAX_NAME,
                                                     &app_owned, &app, &st)
                                : REEL_OK) != REEL_OK) {
        rpc_call_finish_status(call, &st);
        goto out;
    }
    /* With run_id, app is only looked at to refuse it beside the run. */
    a.app = *in->run_id ? in->app : app;
    if (signals_send(ctx->signals, &a, send_done, call, &st) != REEL_OK) {
        api_tenant_status_out(call, &st);
        rpc_call_finish_status(call, &st);
    }
out:
    free(app_owned);
    reel_status_fini(&st);
    reel__v1__send_signal_request__free_unpacked(in, NULL);
}

/* ---- CancelSignal ---------------------------------------------------------- */

static void cancel_done(void *arg, signals_send_result_t *res) {
    rpc_call_t *call = arg;
    Reel__V1__Signal sig;
    uint8_t *buf;
    size_t len;

    if (res->status.code != REEL_OK) {
        rpc_call_finish_status(call, &res->status);
        return;
    }
    api_signal_to_pb(&res->signal, &sig);
    API_PACK(reel__v1__signal, &sig, &buf, &len);
    api_finish_packed(call, buf, len);
}

static void s_cancel_signal(rpc_call_t *call, void *arg, const uint8_t *req,
                            size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__CancelSignalRequest *in =
        reel__v1__cancel_signal_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;

    if (in == NULL) {
        api_bad_request(call, "CancelSignalRequest");
        return;
    }
    if (api_run_check(call, ctx, in->run_id, &st) != REEL_OK ||
        signals_cancel(ctx->signals, in->run_id, in->signal_id, cancel_done,
                       call, &st) != REEL_OK)
        rpc_call_finish_status(call, &st);
    reel_status_fini(&st);
    reel__v1__cancel_signal_request__free_unpacked(in, NULL);
}

/* ---- AwaitSignal ----------------------------------------------------------- */

typedef struct awaiter {
    api_ctx_t *ctx;
    rpc_call_t *call;
    char run_id[JOURNAL_RUN_ID_LEN + 1];
    char name[JOURNAL_MAX_SIGNAL_NAME + 1];
    uint64_t epoch;
    int64_t timeout_ms;
    atomic_int abandoned;
    signals_waiter_t *waiter;
    api_timer_t *timer;

    pthread_mutex_t mu;
    int inflight;  /* an attempt is queued or applying */
    int again;     /* a signal came while one was: try once more */
    int timed_out;
    int over;      /* the call is (being) finished */
} awaiter_t;

static void try_consume(awaiter_t *aw);

static void finish_undelivered(rpc_call_t *call) {
    Reel__V1__AwaitSignalResponse out = REEL__V1__AWAIT_SIGNAL_RESPONSE__INIT;
    uint8_t *buf;
    size_t len;

    out.delivered = 0;
    API_PACK(reel__v1__await_signal_response, &out, &buf, &len);
    api_finish_packed(call, buf, len);
}

static void finish_delivered(rpc_call_t *call, const signal_t *g) {
    Reel__V1__AwaitSignalResponse out = REEL__V1__AWAIT_SIGNAL_RESPONSE__INIT;
    Reel__V1__Signal sig;
    uint8_t *buf;
    size_t len;

    api_signal_to_pb(g, &sig);
    out.delivered = 1;
    out.signal = &sig;
    out.journal_seq = g->journal_seq;
    API_PACK(reel__v1__await_signal_response, &out, &buf, &len);
    api_finish_packed(call, buf, len);
}

enum { ACT_NONE, ACT_ERROR, ACT_DELIVER, ACT_EMPTY, ACT_RETRY };

/* Writer thread: one attempt's outcome. */
static void consumed(void *arg, signals_consume_result_t *res) {
    awaiter_t *aw = arg;
    int act = ACT_NONE;

    pthread_mutex_lock(&aw->mu);
    aw->inflight = 0;
    if (aw->over)
        act = ACT_NONE; /* already answered (cancelled, shut down) */
    else if (res->status.code != REEL_OK)
        act = ACT_ERROR;
    else if (res->delivered)
        act = ACT_DELIVER;
    else if (aw->timed_out || aw->timeout_ms == 0)
        act = ACT_EMPTY; /* the wait is over: no attempt after it */
    else if (aw->again)
        act = ACT_RETRY;
    if (act == ACT_ERROR || act == ACT_DELIVER || act == ACT_EMPTY)
        aw->over = 1;
    pthread_mutex_unlock(&aw->mu);

    switch (act) {
    case ACT_ERROR:
        rpc_call_finish_status(aw->call, &res->status);
        break;
    case ACT_DELIVER:
        finish_delivered(aw->call, &res->signal);
        break;
    case ACT_EMPTY:
        finish_undelivered(aw->call);
        break;
    case ACT_RETRY:
        try_consume(aw);
        break;
    }
    rpc_call_unref(aw->call); /* the attempt's reference */
}

static void try_consume(awaiter_t *aw) {
    reel_status_t st = REEL_STATUS_INIT;
    int go;

    pthread_mutex_lock(&aw->mu);
    go = !aw->over && !aw->inflight;
    if (aw->inflight)
        aw->again = 1;
    if (go) {
        aw->inflight = 1;
        aw->again = 0;
    }
    pthread_mutex_unlock(&aw->mu);
    if (!go)
        return;
    rpc_call_ref(aw->call);
    if (signals_consume(aw->ctx->signals, aw->run_id, aw->name, aw->epoch,
                        &aw->abandoned, consumed, aw, &st) != REEL_OK) {
        int finish;

        pthread_mutex_lock(&aw->mu);
        aw->inflight = 0;
        finish = !aw->over;
        aw->over = 1;
        pthread_mutex_unlock(&aw->mu);
        if (finish)
            rpc_call_finish_status(aw->call, &st);
        rpc_call_unref(aw->call);
    }
    reel_status_fini(&st);
}

/* Poller thread: a signal was sent, or the timer fired. */
static void on_wake(rpc_call_t *call, void *arg) {
    awaiter_t *aw = arg;
    int empty = 0;

    pthread_mutex_lock(&aw->mu);
    if (aw->over) {
        pthread_mutex_unlock(&aw->mu);
        return;
    }
    if (aw->timed_out && !aw->inflight) {
        aw->over = 1;
        empty = 1;
    }
    pthread_mutex_unlock(&aw->mu);
    if (empty)
        finish_undelivered(call);
    else
        try_consume(aw);
}

/* Writer thread, under the signals registry lock: a signal was sent, or
 * the lease the await holds ended (its next attempt then fails the lease
 * check). Only post. */
static void on_signal(void *arg) {
    awaiter_t *aw = arg;

    rpc_call_wake(aw->call, on_wake, aw);
}

/* Writer thread, under the signals registry lock: a send offers its
 * signal. An idle awaiter whose wait is not over takes it as its attempt
 * (with the attempt's call reference); consumed() then runs with the
 * outcome. One whose timer has fired takes nothing, even before its
 * answer is sent: its client may have stopped listening. */
static int on_claim(void *arg, signals_claim_t *out) {
    awaiter_t *aw = arg;
    int take;

    pthread_mutex_lock(&aw->mu);
    take = !aw->over && !aw->inflight && !aw->timed_out;
    if (take) {
        aw->inflight = 1;
        aw->again = 0;
    }
    pthread_mutex_unlock(&aw->mu);
    if (!take)
        return 0;
    rpc_call_ref(aw->call);
    out->epoch = aw->epoch;
    out->abandoned = &aw->abandoned;
    out->done = consumed;
    out->arg = aw;
    return 1;
}

/* Timer thread. */
static void on_timeout(void *arg) {
    awaiter_t *aw = arg;

    pthread_mutex_lock(&aw->mu);
    aw->timed_out = 1;
    pthread_mutex_unlock(&aw->mu);
    rpc_call_wake(aw->call, on_wake, aw);
}

static void on_cancel(rpc_call_t *call, void *arg, reel_code_t why) {
    awaiter_t *aw = arg;
    int finish;

    atomic_store(&aw->abandoned, 1);
    pthread_mutex_lock(&aw->mu);
    finish = !aw->over;
    aw->over = 1;
    pthread_mutex_unlock(&aw->mu);
    if (finish)
        rpc_call_finish(call, why,
                        why == REEL_UNAVAILABLE
                            ? "the server is shutting down; nothing was "
                              "consumed"
                            : "the client went away",
                        NULL, 0);
}

static void on_cleanup(void *arg) {
    awaiter_t *aw = arg;

    signals_unwait(aw->ctx->signals, aw->waiter);
    api_timer_stop(aw->ctx->timers, aw->timer);
    pthread_mutex_destroy(&aw->mu);
    free(aw);
}

static void s_await_signal(rpc_call_t *call, void *arg, const uint8_t *req,
                           size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__AwaitSignalRequest *in =
        reel__v1__await_signal_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    int64_t timeout_ms, until_ns;
    awaiter_t *aw;

    if (in == NULL) {
        api_bad_request(call, "AwaitSignalRequest");
        return;
    }
    timeout_ms = in->timeout_ms;
    if (signals_check_await(ctx->signals, in->run_id, in->name, &timeout_ms,
                            &st) != REEL_OK ||
        api_run_check(call, ctx, in->run_id, &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
        goto out;
    }
    aw = calloc(1, sizeof(*aw));
    if (aw == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        goto out;
    }
    aw->ctx = ctx;
    aw->call = call;
    snprintf(aw->run_id, sizeof(aw->run_id), "%s", in->run_id);
    snprintf(aw->name, sizeof(aw->name), "%s", in->name);
    aw->epoch = in->lease_epoch;
    /* Ends ahead of the client's deadline, so "nothing came" reaches it. */
    until_ns = rpc_call_wait_until_ns(call, timeout_ms);
    aw->timeout_ms = until_ns != 0 ? timeout_ms : 0;
    pthread_mutex_init(&aw->mu, NULL);
    /* Register before the first attempt, so no send falls in between. */
    aw->waiter = signals_wait(ctx->signals, aw->run_id, aw->name, aw->epoch,
                              on_signal, on_claim, aw);
    if (aw->waiter == NULL) {
        pthread_mutex_destroy(&aw->mu);
        free(aw);
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        goto out;
    }
    rpc_call_ref(call);
    rpc_call_on_cleanup(call, on_cleanup, aw);
    if (until_ns != 0)
        aw->timer = api_timer_start(ctx->timers, until_ns, on_timeout, aw);
    rpc_call_on_cancel(call, on_cancel, aw);
    try_consume(aw);
    rpc_call_unref(call);
out:
    reel_status_fini(&st);
    reel__v1__await_signal_request__free_unpacked(in, NULL);
}

/* ---- ListSignals ------------------------------------------------------------ */

static size_t signal_size(void *arg, const void *elem) {
    Reel__V1__Signal pb;

    (void)arg;
    api_signal_to_pb(elem, &pb);
    return api_page_elem_size(reel__v1__signal__get_packed_size(&pb));
}

static void s_list_signals(rpc_call_t *call, void *arg, const uint8_t *req,
                           size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__ListSignalsRequest *in =
        reel__v1__list_signals_request__unpack(NULL, len, req);
    Reel__V1__ListSignalsResponse out = REEL__V1__LIST_SIGNALS_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    reel_page_t page = api_page(ctx, signal_size, NULL);
    signals_list_args_t a = {0};
    Reel__V1__Signal *pbs = NULL, **ptrs = NULL;
    signal_t *gs = NULL;
    size_t n = 0, blen;
    uint8_t *buf = NULL;
    int more = 0;

    if (in == NULL) {
        api_bad_request(call, "ListSignalsRequest");
        return;
    }
    a.run_id = in->run_id;
    a.name = in->name;
    a.include_consumed = in->include_consumed;
    a.limit = in->limit;
    a.after_seq = in->after_seq;
    a.after_consumed = in->after_consumed;
    a.page = &page;
    if (api_run_check(call, ctx, in->run_id, &st) != REEL_OK ||
        signals_list(ctx->signals, &a, &gs, &n, &more, &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
        goto out;
    }
    pbs = calloc(n ? n : 1, sizeof(*pbs));
    ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (pbs == NULL || ptrs == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        api_signal_to_pb(&gs[i], &pbs[i]);
        ptrs[i] = &pbs[i];
    }
    out.n_signals = n;
    out.signals = ptrs;
    out.more = more;
    /* The cursor stays where it was when the page is empty. */
    out.next_after_seq = n > 0 ? gs[n - 1].seq : in->after_seq;
    out.next_after_consumed =
        n > 0 ? gs[n - 1].consumed_at_ms > 0 : in->after_consumed;
    API_PACK(reel__v1__list_signals_response, &out, &buf, &blen);
    api_finish_packed(call, buf, blen);
out:
    for (size_t i = 0; i < n; i++)
        signal_fini(&gs[i]);
    free(gs);
    free(pbs);
    free(ptrs);
    reel_status_fini(&st);
    reel__v1__list_signals_request__free_unpacked(in, NULL);
}

int api_signals_register(rpc_server_t *srv, api_ctx_t *ctx) {
    rpc_method_t ms[] = {
        {"/reel.v1.Signals/SendSignal", RPC_UNARY, s_send_signal, ctx,
         &reel__v1__send_signal_request__descriptor},
        {"/reel.v1.Signals/AwaitSignal", RPC_UNARY, s_await_signal, ctx,
         &reel__v1__await_signal_request__descriptor},
        {"/reel.v1.Signals/ListSignals", RPC_UNARY, s_list_signals, ctx,
         &reel__v1__list_signals_request__descriptor},
        {"/reel.v1.Signals/CancelSignal", RPC_UNARY, s_cancel_signal, ctx,
         &reel__v1__cancel_signal_request__descriptor},
    };

    for (size_t i = 0; i < sizeof(ms) / sizeof(*ms); i++)
        if (rpc_server_add_method(srv, &ms[i]) != 0)
            return -1;
    return 0;
}

/* ---- The module ---------------------------------------------------------- */

/* signal.<run_id>.<name>.<sent|consumed>; a tenant's run_id token
 * carries its prefix, told from the change's app (api/tenant.h). */
static reel_code_t signals_module_encode(const store_change_t *c,
                                         char **subject, uint8_t **bytes,
                                         size_t *len, reel_status_t *st) {
    Reel__V1__Event ev = REEL__V1__EVENT__INIT;
    Reel__V1__Signal signal_pb;
    signal_t sig = {0};
    int consumed = 0, r = signals_change_decode(c, &sig, &consumed);
    reel_code_t rc;

    if (r != 1)
        return api_change_unknown(c, r, st);
    api_signal_to_pb(&sig, &signal_pb);
    ev.type = consumed ? REEL__V1__EVENT__TYPE__SIGNAL_CONSUMED
                       : REEL__V1__EVENT__TYPE__SIGNAL_SENT;
    ev.body_case = REEL__V1__EVENT__BODY_SIGNAL;
    ev.signal = &signal_pb;
    rc = api_event_pack(c, &ev, subject, bytes, len, st, "signal.%.*s%s.%s.%s",
                        (int)api_tenant_prefix_len(sig.app), sig.app,
                        sig.run_id, sig.name, consumed ? "consumed" : "sent");
    signal_fini(&sig);
    return rc;
}

/* After the journal in reeld's table: it checks and writes runs. */
static reel_code_t signals_module_start(api_ctx_t *ctx, reel_status_t *st) {
    if (ctx->journal == NULL)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "module signals: the journal module must "
                               "start before it");
    return signals_create(ctx->store, ctx->journal, &ctx->limits.signals,
                          &ctx->signals, st);
}

static void signals_module_destroy(api_ctx_t *ctx) {
    signals_destroy(ctx->signals);
    ctx->signals = NULL;
}

static void signals_module_publish(api_ctx_t *ctx,
                                   const store_change_t *changes, size_t n) {
    if (ctx->signals != NULL)
        signals_publish(ctx->signals, changes, n);
}

static const char *const signals_subjects[] = {"signal", NULL};

const api_module_t api_signals_module = {
    .name = "signals",
    .id = SIGNALS_MODULE_ID,
    .cfs = signals_cfs,
    .subjects = signals_subjects,
    .serve = api_signals_register,
    .start = signals_module_start,
    .destroy = signals_module_destroy,
    .encode = signals_module_encode,
    .publish = signals_module_publish,
};
