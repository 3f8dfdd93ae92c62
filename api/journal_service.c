/*
 * api/journal_service.c: reel.v1.Journal over the journal module.
 *
 * Mutations are queued to the store's writer and answered from its thread
 * once durable; reads run on the poller thread. SubscribeRun wires a
 * journal subscription to the call the same way WatchValue wires a KV watch
 * (see kv_service.c): bounded send queue, drain hook pumps, cleanup frees.
 *
 * Tenants (api/tenant.h): a tenant's app is stored as "::T:app" and shown
 * back as given; its runs are those of its apps. Every call naming a
 * run_id first checks that the run is the caller's (api_run_check), and a
 * listing skips other tenants' runs (api_run_keep): another tenant's run
 * is answered as a missing one.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reel/v1/journal.pb-c.h"
#include "api/convert.h"
#include "api/cursor.h"
#include "api/page.h"
#include "api/reply.h"
#include "api/services.h"
#include "api/tenant.h"
#include "api/timer.h"
#include "auth/auth.h"
#include "base/clock.h"
#include "journal/journal.h"

/* ---- Conversions ---------------------------------------------------------- */

/* A Run message pointing into r; labels need their own arrays. */
int api_run_to_pb(const run_t *r, api_run_pb_t *pb) {
    Reel__V1__Run *m = &pb->msg;

    reel__v1__run__init(m);
    pb->entries = calloc(r->n_labels ? r->n_labels : 1, sizeof(*pb->entries));
    pb->ptrs = calloc(r->n_labels ? r->n_labels : 1, sizeof(*pb->ptrs));
    if (pb->entries == NULL || pb->ptrs == NULL)
        return -1;
    for (size_t i = 0; i < r->n_labels; i++) {
        reel__v1__run__labels_entry__init(&pb->entries[i]);
        pb->entries[i].key = (char *)r->labels[i].key;
        pb->entries[i].value = (char *)r->labels[i].value;
        pb->ptrs[i] = &pb->entries[i];
    }
    m->run_id = (char *)r->run_id;
    m->app = (char *)r->app;
    m->user = (char *)r->user;
    m->session = (char *)r->session;
    m->invocation_id = (char *)r->invocation_id;
    m->status = (Reel__V1__Run__Status)r->status;
    m->next_seq = r->next_seq;
    m->lease_owner = (char *)r->lease_owner;
    m->lease_epoch = r->lease_epoch;
    m->lease_expires_at_ms = r->lease_expires_at_ms;
    m->waiting_on = (char *)r->waiting_on;
    m->n_labels = r->n_labels;
    m->labels = pb->ptrs;
    m->result = (char *)r->result;
    m->created_at_ms = r->created_at_ms;
    m->updated_at_ms = r->updated_at_ms;
    m->ended_at_ms = r->ended_at_ms;
    m->resumed = r->resumed;
    m->attempt = r->attempt;
    m->not_before_ms = r->not_before_ms;
    m->reason = (char *)(r->reason ? r->reason : "");
    return 0;
}

void api_run_pb_fini(api_run_pb_t *pb) {
    free(pb->entries);
    free(pb->ptrs);
}

void api_entry_to_pb(const journal_entry_t *e, Reel__V1__JournalEntry *m) {
    reel__v1__journal_entry__init(m);
    m->run_id = (char *)e->run_id;
    m->seq = e->seq;
    m->kind = (char *)e->kind;
    m->payload = (char *)e->payload;
    m->idempotency_key = (char *)e->idempotency_key;
    m->lease_epoch = e->lease_epoch;
    m->revision = e->revision;
    m->ts_ms = e->ts_ms;
}

/* ---- Tenants ------------------------------------------------------------ */

reel_code_t api_run_check(rpc_call_t *call, api_ctx_t *ctx,
                          const char *run_id, reel_status_t *st) {
    run_t r;
    reel_code_t rc;

    if (api_tenant_sees_all(call))
        return REEL_OK;
    if ((rc = journal_get_run(ctx->journal, run_id, &r, st)) != REEL_OK)
        return rc;
    if (!api_tenant_owns(call, r.app))
        rc = reel_status_set(st, REEL_NOT_FOUND, "run %s not found", run_id);
    run_fini(&r);
    return rc;
}

int api_run_keep(void *arg, const run_t *r) {
    return api_tenant_owns(arg, r->app);
}

/* The call's app as stored, into *owned (or NULL: as given). */
static reel_code_t app_in(rpc_call_t *call, const char *field,
                          const char *app, char **owned, const char **out,
                          reel_status_t *st) {
    *owned = NULL;
    *out = app;
    if (app == NULL || *app == '\0')
        return REEL_OK; /* "" = any: api_run_keep keeps the tenant's */
    return api_tenant_name_in(call, field, app, JOURNAL_MAX_NAME, owned, out,
                              st);
}

/* A run's message for the call: its app as the tenant gave it. */
static int run_to_pb_for(rpc_call_t *call, const run_t *r, api_run_pb_t *pb) {
    if (api_run_to_pb(r, pb) != 0)
        return -1;
    pb->msg.app = (char *)api_tenant_name_out(call, r->app);
    return 0;
}

static void finish_run(rpc_call_t *call, const run_t *r) {
    api_run_pb_t pb = {0};
    uint8_t *buf = NULL;
    size_t len = 0;

    if (run_to_pb_for(call, r, &pb) == 0)
        API_PACK(reel__v1__run, &pb.msg, &buf, &len);
    api_run_pb_fini(&pb);
    api_finish_packed(call, buf, len);
}

/* ---- Mutations ------------------------------------------------------------ */

static void run_done(void *arg, journal_result_t *res) {
    rpc_call_t *call = arg;

    if (res->status.code != REEL_OK) {
        api_tenant_status_out(call, &res->status);
        rpc_call_finish_status(call, &res->status);
    } else {
        finish_run(call, &res->run);
    }
}

static void append_done(void *arg, journal_result_t *res) {
    rpc_call_t *call = arg;
    Reel__V1__AppendResponse out = REEL__V1__APPEND_RESPONSE__INIT;
    Reel__V1__JournalEntry entry;
    uint8_t *buf;
    size_t len;

    if (res->status.code != REEL_OK) {
        rpc_call_finish_status(call, &res->status);
        return;
    }
    api_entry_to_pb(&res->entry, &entry);
    out.entry = &entry;
    out.duplicate = res->duplicate;
    API_PACK(reel__v1__append_response, &out, &buf, &len);
    api_finish_packed(call, buf, len);
}

/* Queues q once the run it names (if any) is the caller's. */
static void submit(rpc_call_t *call, api_ctx_t *ctx, const journal_req_t *q,
                   journal_done_fn done) {
    reel_status_t st = REEL_STATUS_INIT;

    if ((q->op != JOURNAL_BEGIN &&
         api_run_check(call, ctx, q->run_id, &st) != REEL_OK) ||
        journal_submit(ctx->journal, q, done, call, &st) != REEL_OK)
        rpc_call_finish_status(call, &st);
    reel_status_fini(&st);
}

static void j_begin_run(rpc_call_t *call, void *arg, const uint8_t *req,
                        size_t len) {
    Reel__V1__BeginRunRequest *in =
        reel__v1__begin_run_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    journal_req_t q = {0};
    journal_retry_t retry;
    run_label_t *labels;
    char *app_owned = NULL;
    const char *app;

    if (in == NULL) {
        api_bad_request(call, "BeginRunRequest");
        return;
    }
    labels = calloc(in->n_labels ? in->n_labels : 1, sizeof(*labels));
    if (app_in(call, "app", in->app, &app_owned, &app, &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
    } else if (labels == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    } else {
        for (size_t i = 0; i < in->n_labels; i++) {
            labels[i].key = in->labels[i]->key;
            labels[i].value = in->labels[i]->value;
        }
        q.op = JOURNAL_BEGIN;
        q.app = app, q.user = in->user, q.session = in->session;
        q.invocation_id = in->invocation_id;
        q.lease_owner = in->lease_owner;
        q.lease_ttl_ms = in->lease_ttl_ms;
        q.labels = labels;
        q.n_labels = in->n_labels;
        if (in->retry != NULL) {
            retry.initial_ms = in->retry->initial_interval_ms;
            retry.multiplier = in->retry->multiplier;
            retry.max_interval_ms = in->retry->max_interval_ms;
            retry.max_attempts = in->retry->max_attempts;
            q.retry = &retry;
        }
        submit(call, arg, &q, run_done);
    }
    free(labels);
    free(app_owned);
    reel_status_fini(&st);
    reel__v1__begin_run_request__free_unpacked(in, NULL);
}

static void j_heartbeat(rpc_call_t *call, void *arg, const uint8_t *req,
                        size_t len) {
    Reel__V1__HeartbeatRequest *in =
        reel__v1__heartbeat_request__unpack(NULL, len, req);
    journal_req_t q = {0};

    if (in == NULL) {
        api_bad_request(call, "HeartbeatRequest");
        return;
    }
    q.op = JOURNAL_HEARTBEAT;
    q.run_id = in->run_id;
    q.lease_epoch = in->lease_epoch;
    q.lease_ttl_ms = in->lease_ttl_ms;
    submit(call, arg, &q, run_done);
    reel__v1__heartbeat_request__free_unpacked(in, NULL);
}

static void j_append(rpc_call_t *call, void *arg, const uint8_t *req,
                     size_t len) {
    Reel__V1__AppendRequest *in =
        reel__v1__append_request__unpack(NULL, len, req);
    journal_req_t q = {0};

    if (in == NULL) {
        api_bad_request(call, "AppendRequest");
        return;
    }
    q.op = JOURNAL_APPEND;
    q.run_id = in->run_id;
    q.lease_epoch = in->lease_epoch;
    q.kind = in->kind;
    q.payload = in->payload;
    q.idempotency_key = in->idempotency_key;
    q.expected_seq = in->expected_seq;
    submit(call, arg, &q, append_done);
    reel__v1__append_request__free_unpacked(in, NULL);
}

static void j_end_run(rpc_call_t *call, void *arg, const uint8_t *req,
                      size_t len) {
    Reel__V1__EndRunRequest *in =
        reel__v1__end_run_request__unpack(NULL, len, req);
    journal_req_t q = {0};

    if (in == NULL) {
        api_bad_request(call, "EndRunRequest");
        return;
    }
    q.op = JOURNAL_END;
    q.run_id = in->run_id;
    q.lease_epoch = in->lease_epoch;
    q.end_status = (run_status_t)in->status;
    q.result = in->result;
    submit(call, arg, &q, run_done);
    reel__v1__end_run_request__free_unpacked(in, NULL);
}

static void j_suspend_run(rpc_call_t *call, void *arg, const uint8_t *req,
                          size_t len) {
    Reel__V1__SuspendRunRequest *in =
        reel__v1__suspend_run_request__unpack(NULL, len, req);
    journal_req_t q = {0};

    if (in == NULL) {
        api_bad_request(call, "SuspendRunRequest");
        return;
    }
    q.op = JOURNAL_SUSPEND;
    q.run_id = in->run_id;
    q.lease_epoch = in->lease_epoch;
    q.waiting_on = in->waiting_on;
    q.timeout_ms = in->timeout_ms;
    submit(call, arg, &q, run_done);
    reel__v1__suspend_run_request__free_unpacked(in, NULL);
}

static void j_claim_run(rpc_call_t *call, void *arg, const uint8_t *req,
                        size_t len) {
    Reel__V1__ClaimRunRequest *in =
        reel__v1__claim_run_request__unpack(NULL, len, req);
    journal_req_t q = {0};

    if (in == NULL) {
        api_bad_request(call, "ClaimRunRequest");
        return;
    }
    q.op = JOURNAL_CLAIM;
    q.run_id = in->run_id;
    q.lease_owner = in->lease_owner;
    q.lease_ttl_ms = in->lease_ttl_ms;
    q.expected_epoch = in->expected_epoch;
    submit(call, arg, &q, run_done);
    reel__v1__claim_run_request__free_unpacked(in, NULL);
}

static void j_resume_run(rpc_call_t *call, void *arg, const uint8_t *req,
                         size_t len) {
    Reel__V1__ResumeRunRequest *in =
        reel__v1__resume_run_request__unpack(NULL, len, req);
    journal_req_t q = {0};

    if (in == NULL) {
        api_bad_request(call, "ResumeRunRequest");
        return;
    }
    q.op = JOURNAL_RESUME;
    q.run_id = in->run_id;
    submit(call, arg, &q, run_done);
    reel__v1__resume_run_request__free_unpacked(in, NULL);
}

/* ---- Reads ---------------------------------------------------------------- */

static void j_get_run(rpc_call_t *call, void *arg, const uint8_t *req,
                      size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__GetRunRequest *in =
        reel__v1__get_run_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    run_t r;

    if (in == NULL) {
        api_bad_request(call, "GetRunRequest");
        return;
    }
    if (journal_get_run(ctx->journal, in->run_id, &r, &st) != REEL_OK)
        rpc_call_finish_status(call, &st);
    else if (!api_tenant_owns(call, r.app) &&
             reel_status_set(&st, REEL_NOT_FOUND, "run %s not found",
                             in->run_id) == REEL_NOT_FOUND)
        rpc_call_finish_status(call, &st); /* worded as api_run_check's */
    else
        finish_run(call, &r);
    run_fini(&r);
    reel_status_fini(&st);
    reel__v1__get_run_request__free_unpacked(in, NULL);
}

/* A run's share of a ListRuns or ListRunsToRecover response. */
static size_t run_size(void *arg, const void *elem) {
    api_run_pb_t pb = {0};
    size_t n = SIZE_MAX; /* out of memory: it ends the page */

    (void)arg;
    if (api_run_to_pb(elem, &pb) == 0)
        n = api_page_elem_size(reel__v1__run__get_packed_size(&pb.msg));
    api_run_pb_fini(&pb);
    return n;
}

static size_t entry_size(void *arg, const void *elem) {
    Reel__V1__JournalEntry pb;

    (void)arg;
    api_entry_to_pb(elem, &pb);
    return api_page_elem_size(reel__v1__journal_entry__get_packed_size(&pb));
}

/* Packs runs into a message whose repeated field is (n_field, field). */
static int runs_to_pb(rpc_call_t *call, const run_t *runs, size_t n,
                      api_run_pb_t **pbs_out, Reel__V1__Run ***ptrs_out) {
    api_run_pb_t *pbs = calloc(n ? n : 1, sizeof(*pbs));
    Reel__V1__Run **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    int rc = pbs && ptrs ? 0 : -1;

    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = run_to_pb_for(call, &runs[i], &pbs[i]);
        ptrs[i] = &pbs[i].msg;
    }
    *pbs_out = pbs;
    *ptrs_out = ptrs;
    return rc;
}

static void free_runs(run_t *runs, size_t n, api_run_pb_t *pbs,
                      Reel__V1__Run **ptrs) {
    for (size_t i = 0; i < n; i++) {
        run_fini(&runs[i]);
        if (pbs)
            api_run_pb_fini(&pbs[i]);
    }
    free(runs);
    free(pbs);
    free(ptrs);
}

/*
 * Scopes a listing of runs to the caller's tenant: only its runs (keep),
 * and, without an app, only its apps' indexes: a tenant's share the
 * prefix "::T:" (into buf); the default tenant's are every app but those
 * under "::".
 */
static void scope_runs(rpc_call_t *call, run_filter_t *f, char *buf,
                       size_t cap) {
    if (api_tenant_sees_all(call))
        return;
    f->keep = api_run_keep;
    f->keep_arg = call;
    if (f->app && *f->app)
        return;
    if (api_tenant_scoped(call) != NULL) {
        snprintf(buf, cap, "%s%s:", API_TENANT_MARK, api_tenant_scoped(call));
        f->app_prefix = buf;
    } else {
        f->app_exclude = API_TENANT_MARK;
    }
}

/* Where the next page starts: after the last run a page stepped over
 * when the scan bound ended it (past every run it holds), else after its
 * last run. A stepped-over run the caller cannot see (another tenant's)
 * goes out sealed into sealed (api/cursor.h). NULL: the seal failed. */
static char *next_after(api_ctx_t *ctx, rpc_call_t *call, const run_t *runs,
                        size_t n, char *resume,
                        char sealed[API_SEALED_CURSOR_LEN + 1]) {
    run_t r = {0};
    int mine;

    if (resume[0] == '\0')
        return n > 0 ? (char *)runs[n - 1].run_id : "";
    mine = journal_get_run(ctx->journal, resume, &r, NULL) == REEL_OK &&
           api_tenant_owns(call, r.app);
    run_fini(&r);
    if (mine)
        return resume;
    return api_cursor_seal(resume, sealed) == 0 ? sealed : NULL;
}

/* A request's start_after, unsealed into buf when it is a sealed cursor. */
static reel_code_t start_after_in(const char *in, char buf[27],
                                  const char **out, reel_status_t *st) {
    *out = in;
    if (!api_cursor_is_sealed(in))
        return REEL_OK;
    *out = buf;
    return api_cursor_unseal("start_after", in, buf, st);
}

static void j_list_runs(rpc_call_t *call, void *arg, const uint8_t *req,
                        size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__ListRunsRequest *in =
        reel__v1__list_runs_request__unpack(NULL, len, req);
    Reel__V1__ListRunsResponse out = REEL__V1__LIST_RUNS_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    reel_page_t page = api_page(ctx, run_size, NULL);
    run_filter_t f = {0};
    api_run_pb_t *pbs = NULL;
    Reel__V1__Run **ptrs = NULL;
    run_t *runs = NULL;
    size_t n = 0, blen;
    uint8_t *buf = NULL;
    char *app_owned = NULL;
    char tenant_apps[AUTH_TENANT_MAX + 8];
    char resume[JOURNAL_RUN_ID_LEN + 1], after[JOURNAL_RUN_ID_LEN + 1];
    char sealed[API_SEALED_CURSOR_LEN + 1];
    int more = 0;

    if (in == NULL) {
        api_bad_request(call, "ListRunsRequest");
        return;
    }
    if (app_in(call, "app", in->app, &app_owned, &f.app, &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
        goto out;
    }
    scope_runs(call, &f, tenant_apps, sizeof(tenant_apps));
    f.user = in->user, f.session = in->session;
    f.status = (run_status_t)in->status;
    f.limit = in->limit;
    f.page = &page;
    f.resume = resume;
    if (start_after_in(in->start_after, after, &f.start_after, &st) !=
            REEL_OK ||
        journal_list_runs(ctx->journal, &f, &runs, &n, &more, &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
    } else if (runs_to_pb(call, runs, n, &pbs, &ptrs) != 0 ||
               (out.next_start_after = next_after(ctx, call, runs, n, resume, sealed)) ==
                   NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    } else {
        out.n_runs = n;
        out.runs = ptrs;
        out.more = more;
        API_PACK(reel__v1__list_runs_response, &out, &buf, &blen);
        api_finish_packed(call, buf, blen);
    }
out:
    free_runs(runs, n, pbs, ptrs);
    free(app_owned);
    reel_status_fini(&st);
    reel__v1__list_runs_request__free_unpacked(in, NULL);
}

static void j_list_recoverable(rpc_call_t *call, void *arg,
                               const uint8_t *req, size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__ListRunsToRecoverRequest *in =
        reel__v1__list_runs_to_recover_request__unpack(NULL, len, req);
    Reel__V1__ListRunsToRecoverResponse out =
        REEL__V1__LIST_RUNS_TO_RECOVER_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    reel_page_t page = api_page(ctx, run_size, NULL);
    api_run_pb_t *pbs = NULL;
    Reel__V1__Run **ptrs = NULL;
    run_t *runs = NULL;
    size_t n = 0, blen;
    uint8_t *buf = NULL;
    char *app_owned = NULL, tenant_apps[AUTH_TENANT_MAX + 8];
    char resume[JOURNAL_RUN_ID_LEN + 1], after[JOURNAL_RUN_ID_LEN + 1];
    char sealed[API_SEALED_CURSOR_LEN + 1];
    run_filter_t f = {0};
    int more = 0;

    if (in == NULL) {
        api_bad_request(call, "ListRunsToRecoverRequest");
        return;
    }
    if (app_in(call, "app", in->app, &app_owned, &f.app, &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
        goto out;
    }
    scope_runs(call, &f, tenant_apps, sizeof(tenant_apps));
    f.limit = in->limit;
    f.page = &page;
    f.resume = resume;
    if (start_after_in(in->start_after, after, &f.start_after, &st) !=
            REEL_OK ||
        journal_list_recoverable_kept(ctx->journal, &f, &runs, &n, &more,
                                      &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
    } else if (runs_to_pb(call, runs, n, &pbs, &ptrs) != 0 ||
               (out.next_start_after = next_after(ctx, call, runs, n, resume, sealed)) ==
                   NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    } else {
        out.n_runs = n;
        out.runs = ptrs;
        out.more = more;
        API_PACK(reel__v1__list_runs_to_recover_response, &out, &buf, &blen);
        api_finish_packed(call, buf, blen);
    }
out:
    free_runs(runs, n, pbs, ptrs);
    free(app_owned);
    reel_status_fini(&st);
    reel__v1__list_runs_to_recover_request__free_unpacked(in, NULL);
}

static void j_read_journal(rpc_call_t *call, void *arg, const uint8_t *req,
                           size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__ReadJournalRequest *in =
        reel__v1__read_journal_request__unpack(NULL, len, req);
    Reel__V1__ReadJournalResponse out = REEL__V1__READ_JOURNAL_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    reel_page_t page = api_page(ctx, entry_size, NULL);
    Reel__V1__JournalEntry *pbs = NULL, **ptrs = NULL;
    journal_entry_t *es = NULL;
    size_t n = 0, blen;
    uint8_t *buf = NULL;
    int more = 0;

    if (in == NULL) {
        api_bad_request(call, "ReadJournalRequest");
        return;
    }
    if (api_run_check(call, ctx, in->run_id, &st) != REEL_OK ||
        journal_read(ctx->journal, in->run_id, in->from_seq, in->limit, &page,
                     &es, &n, &more, &st) != REEL_OK) {
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
        api_entry_to_pb(&es[i], &pbs[i]);
        ptrs[i] = &pbs[i];
    }
    out.n_entries = n;
    out.entries = ptrs;
    out.more = more;
    out.next_from_seq = n > 0 ? es[n - 1].seq : in->from_seq;
    API_PACK(reel__v1__read_journal_response, &out, &buf, &blen);
    api_finish_packed(call, buf, blen);
out:
    for (size_t i = 0; i < n; i++)
        journal_entry_fini(&es[i]);
    free(es);
    free(pbs);
    free(ptrs);
    reel_status_fini(&st);
    reel__v1__read_journal_request__free_unpacked(in, NULL);
}

/* ---- SubscribeRun --------------------------------------------------------- */

typedef struct sub_call {
    rpc_call_t *call;
    journal_sub_t *sub;
} sub_call_t;

static int sub_deliver(void *arg, journal_entry_t *e) {
    sub_call_t *sc = arg;
    Reel__V1__JournalEntry m;
    uint8_t *buf;
    size_t len;
    int rc;

    api_entry_to_pb(e, &m);
    API_PACK(reel__v1__journal_entry, &m, &buf, &len);
    if (buf == NULL)
        return 1;
    rc = rpc_call_send(sc->call, buf, len) == REEL_OK ? 0 : 1;
    free(buf);
    return rc;
}

/* Runs with no journal lock held; finishing may free the call, whose
 * cleanup destroys the subscription (the journal holds a reference). */
static void sub_end(void *arg, const reel_status_t *st) {
    sub_call_t *sc = arg;

    rpc_call_finish(sc->call, st->code,
                    st->code == REEL_OK ? "the run has ended"
                                        : reel_status_message(st),
                    NULL, 0);
}

static void sub_cancel(rpc_call_t *call, void *arg, reel_code_t why) {
    (void)arg;
    api_finish_cancelled(call, why);
}

static void sub_drain(rpc_call_t *call, void *arg) {
    sub_call_t *sc = arg;

    (void)call;
    journal_sub_pump(sc->sub);
}

/* Poller thread, woken: a queue that still holds messages will drain, and
 * its drain pumps; one that holds none has no drain coming. */
static void sub_woken(rpc_call_t *call, void *arg) {
    if (rpc_call_queued(call) == 0)
        sub_drain(call, arg);
}

/* Under journal locks (the subscription fell out of live delivery): only
 * posts. The call is alive: its cleanup destroys the subscription, which
 * waits for them. */
static void sub_wake(void *arg) {
    sub_call_t *sc = arg;

    rpc_call_wake(sc->call, sub_woken, sc);
}

static void sub_cleanup(void *arg) {
    sub_call_t *sc = arg;

    journal_sub_destroy(sc->sub);
    free(sc);
}

static const journal_sink_t sub_sink = {sub_deliver, sub_end, sub_wake};

static void j_subscribe_run(rpc_call_t *call, void *arg, const uint8_t *req,
                            size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__SubscribeRunRequest *in =
        reel__v1__subscribe_run_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    sub_call_t *sc;

    if (in == NULL) {
        api_bad_request(call, "SubscribeRunRequest");
        return;
    }
    if (api_run_check(call, ctx, in->run_id, &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
        goto out;
    }
    sc = calloc(1, sizeof(*sc));
    if (sc == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        goto out;
    }
    sc->call = call;
    if (journal_sub_create(ctx->journal, in->run_id, in->from_seq, &sub_sink,
                           sc, &sc->sub, &st) != REEL_OK) {
        free(sc);
        rpc_call_finish_status(call, &st);
        goto out;
    }
    rpc_call_ref(call);
    rpc_call_on_cleanup(call, sub_cleanup, sc);
    rpc_call_on_drain(call, sub_drain, sc);
    rpc_call_on_cancel(call, sub_cancel, sc);
    journal_sub_pump(sc->sub);
    rpc_call_unref(call);
out:
    reel_status_fini(&st);
    reel__v1__subscribe_run_request__free_unpacked(in, NULL);
}

/* ---- ClaimNextRun ----------------------------------------------------------- */

/*
 * A long poll without polling, as AwaitSignal's (signals_service.c): the
 * claimer registers as a waiter of its app, then queues one attempt to
 * the writer (the oldest due run of the app's claimable index, claimed in
 * the apply). When it finds nothing, the call waits. The publish step of
 * any commit that makes a run of the app claimable wakes it (through
 * rpc_call_wake, onto a poller thread) to try again; a claimer busy with
 * an attempt then tries once more after it. Every claim happens in the
 * writer, so each claimable run goes to exactly one claimer. A timer ends
 * the call with found=false at wait_ms, or sooner, ahead of the client's
 * deadline (rpc_call_wait_until_ns); a client that leaves sets
 * `abandoned`, so an attempt still queued claims nothing.
 *
 * Locking: a claimer's state changes under its mutex; finishing the call
 * and queueing attempts happen after it is released. Every queued attempt
 * holds a call reference.
 */
typedef struct claimer {
    api_ctx_t *ctx;
    rpc_call_t *call;
    char app[JOURNAL_MAX_NAME + 1];
    char owner[JOURNAL_MAX_NAME + 1];
    int64_t ttl_ms, wait_ms;
    atomic_int abandoned;
    journal_claim_waiter_t *waiter;
    api_timer_t *timer;

    pthread_mutex_t mu;
    int inflight; /* an attempt is queued or applying */
    int again;    /* a wake came while one was: try once more */
    int timed_out;
    int over;           /* the call is (being) finished */
    int64_t arrived_ms; /* reeld's clock when the call came */
} claimer_t;

static void try_claim(claimer_t *cl);

/* r claimed (NULL: none) for a call that arrived at arrived_ms (reeld's
 * clock); the answer says how long after its arrival the lease began. */
static void finish_claimed(rpc_call_t *call, const run_t *r, int64_t ttl_ms,
                           int64_t arrived_ms) {
    Reel__V1__ClaimNextRunResponse out =
        REEL__V1__CLAIM_NEXT_RUN_RESPONSE__INIT;
    api_run_pb_t pb = {0};
    uint8_t *buf = NULL;
    size_t len = 0;

    out.found = r != NULL;
    if (r != NULL && r->lease_expires_at_ms - ttl_ms > arrived_ms)
        out.waited_ms = r->lease_expires_at_ms - ttl_ms - arrived_ms;
    if (r != NULL && run_to_pb_for(call, r, &pb) != 0) {
        api_run_pb_fini(&pb);
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL,
                        0);
        return;
    }
    out.run = r != NULL ? &pb.msg : NULL;
    API_PACK(reel__v1__claim_next_run_response, &out, &buf, &len);
    api_run_pb_fini(&pb);
    api_finish_packed(call, buf, len);
}

enum { CL_NONE, CL_ERROR, CL_FOUND, CL_EMPTY, CL_RETRY };

/* Writer thread: one attempt's outcome. */
static void claim_done(void *arg, journal_result_t *res) {
    claimer_t *cl = arg;
    int act = CL_NONE;

    pthread_mutex_lock(&cl->mu);
    cl->inflight = 0;
    if (cl->over)
        act = CL_NONE; /* already answered (cancelled, shut down) */
    else if (res->status.code != REEL_OK)
        act = CL_ERROR;
    else if (res->found)
        act = CL_FOUND;
    else if (cl->timed_out || cl->wait_ms == 0)
        act = CL_EMPTY; /* the wait is over: no attempt after it */
    else if (cl->again)
        act = CL_RETRY;
    if (act == CL_ERROR || act == CL_FOUND || act == CL_EMPTY)
        cl->over = 1;
    pthread_mutex_unlock(&cl->mu);

    switch (act) {
    case CL_ERROR:
        api_tenant_status_out(cl->call, &res->status);
        rpc_call_finish_status(cl->call, &res->status);
        break;
    case CL_FOUND:
        finish_claimed(cl->call, &res->run, cl->ttl_ms, cl->arrived_ms);
        break;
    case CL_EMPTY:
        finish_claimed(cl->call, NULL, 0, 0);
        break;
    case CL_RETRY:
        try_claim(cl);
        break;
    }
    rpc_call_unref(cl->call); /* the attempt's reference */
}

static void try_claim(claimer_t *cl) {
    reel_status_t st = REEL_STATUS_INIT;
    journal_req_t q = {0};
    int go;

    pthread_mutex_lock(&cl->mu);
    go = !cl->over && !cl->inflight;
    if (cl->inflight)
        cl->again = 1;
    if (go) {
        cl->inflight = 1;
        cl->again = 0;
    }
    pthread_mutex_unlock(&cl->mu);
    if (!go)
        return;
    q.op = JOURNAL_CLAIM_NEXT;
    q.app = cl->app;
    q.lease_owner = cl->owner;
    q.lease_ttl_ms = cl->ttl_ms;
    q.abandoned = &cl->abandoned;
    rpc_call_ref(cl->call);
    if (journal_submit(cl->ctx->journal, &q, claim_done, cl, &st) !=
        REEL_OK) {
        int finish;

        pthread_mutex_lock(&cl->mu);
        cl->inflight = 0;
        finish = !cl->over;
        cl->over = 1;
        pthread_mutex_unlock(&cl->mu);
        if (finish)
            rpc_call_finish_status(cl->call, &st);
        rpc_call_unref(cl->call);
    }
    reel_status_fini(&st);
}

/* Poller thread: a run became claimable, or the timer fired. */
static void claimer_woken(rpc_call_t *call, void *arg) {
    claimer_t *cl = arg;
    int empty = 0;

    pthread_mutex_lock(&cl->mu);
    if (cl->over) {
        pthread_mutex_unlock(&cl->mu);
        return;
    }
    if (cl->timed_out && !cl->inflight) {
        cl->over = 1;
        empty = 1;
    }
    pthread_mutex_unlock(&cl->mu);
    if (empty)
        finish_claimed(call, NULL, 0, 0);
    else
        try_claim(cl);
}

/* Writer thread, under the journal's waiter lock: only post. */
static void claimer_wake(void *arg) {
    claimer_t *cl = arg;

    rpc_call_wake(cl->call, claimer_woken, cl);
}

/* Timer thread. */
static void claimer_timeout(void *arg) {
    claimer_t *cl = arg;

    pthread_mutex_lock(&cl->mu);
    cl->timed_out = 1;
    pthread_mutex_unlock(&cl->mu);
    rpc_call_wake(cl->call, claimer_woken, cl);
}

static void claimer_cancel(rpc_call_t *call, void *arg, reel_code_t why) {
    claimer_t *cl = arg;
    int finish;

    atomic_store(&cl->abandoned, 1);
    pthread_mutex_lock(&cl->mu);
    finish = !cl->over;
    cl->over = 1;
    pthread_mutex_unlock(&cl->mu);
    if (finish)
        rpc_call_finish(call, why,
                        why == REEL_UNAVAILABLE
                            ? "the server is shutting down; nothing was "
                              "claimed"
                            : "the client went away",
                        NULL, 0);
}

static void claimer_cleanup(void *arg) {
    claimer_t *cl = arg;

    journal_claim_unwait(cl->ctx->journal, cl->waiter);
    api_timer_stop(cl->ctx->timers, cl->timer);
    pthread_mutex_destroy(&cl->mu);
    free(cl);
}

static void j_claim_next_run(rpc_call_t *call, void *arg, const uint8_t *req,
                             size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__ClaimNextRunRequest *in =
        reel__v1__claim_next_run_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    journal_req_t q = {0};
    claimer_t *cl;
    int64_t until_ns;
    char *app_owned = NULL;
    const char *app;

    if (in == NULL) {
        api_bad_request(call, "ClaimNextRunRequest");
        return;
    }
    /* A tenant claims from its own app's index: ::T:app. */
    if (app_in(call, "app", in->app, &app_owned, &app, &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
        goto out;
    }
    q.op = JOURNAL_CLAIM_NEXT;
    q.app = app;
    q.lease_owner = in->lease_owner;
    q.lease_ttl_ms = in->lease_ttl_ms;
    if (in->wait_ms < 0 || in->wait_ms > JOURNAL_MAX_CLAIM_WAIT_MS) {
        reel_status_set(&st, REEL_INVALID_ARGUMENT,
                        "wait_ms: must be 0 (answer at once) to %d (got "
                        "%lld)",
                        JOURNAL_MAX_CLAIM_WAIT_MS, (long long)in->wait_ms);
        rpc_call_finish_status(call, &st);
        goto out;
    }
    /* Checked before registering: a bad app never waits. */
    if (journal_validate(&q, 0, &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
        goto out;
    }
    cl = calloc(1, sizeof(*cl));
    if (cl == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL,
                        0);
        goto out;
    }
    cl->ctx = ctx;
    cl->call = call;
    snprintf(cl->app, sizeof(cl->app), "%s", app);
    snprintf(cl->owner, sizeof(cl->owner), "%s", in->lease_owner);
    cl->ttl_ms = q.lease_ttl_ms; /* defaulted by journal_validate */
    /* Ends ahead of the client's deadline, so "found=false" reaches it
     * and no run is leased to a client that gave up. */
    until_ns = rpc_call_wait_until_ns(call, in->wait_ms);
    cl->wait_ms = until_ns != 0 ? in->wait_ms : 0;
    cl->arrived_ms = reel_clock_now_ms();
    pthread_mutex_init(&cl->mu, NULL);
    /* Register before the first attempt, so no commit falls in between. */
    cl->waiter = journal_claim_wait(ctx->journal, cl->app, claimer_wake, cl);
    if (cl->waiter == NULL) {
        pthread_mutex_destroy(&cl->mu);
        free(cl);
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL,
                        0);
        goto out;
    }
    rpc_call_ref(call);
    rpc_call_on_cleanup(call, claimer_cleanup, cl);
    if (until_ns != 0)
        cl->timer = api_timer_start(ctx->timers, until_ns, claimer_timeout,
                                    cl);
    rpc_call_on_cancel(call, claimer_cancel, cl);
    try_claim(cl);
    rpc_call_unref(call);
out:
    free(app_owned);
    reel_status_fini(&st);
    reel__v1__claim_next_run_request__free_unpacked(in, NULL);
}

int api_journal_register(rpc_server_t *srv, api_ctx_t *ctx) {
    static const struct {
        const char *path;
        rpc_kind_t kind;
        rpc_handler_fn fn;
        const ProtobufCMessageDescriptor *input;
    } methods[] = {
        {"/reel.v1.Journal/BeginRun", RPC_UNARY, j_begin_run,
         &reel__v1__begin_run_request__descriptor},
        {"/reel.v1.Journal/Heartbeat", RPC_UNARY, j_heartbeat,
         &reel__v1__heartbeat_request__descriptor},
        {"/reel.v1.Journal/Append", RPC_UNARY, j_append,
         &reel__v1__append_request__descriptor},
        {"/reel.v1.Journal/ReadJournal", RPC_UNARY, j_read_journal,
         &reel__v1__read_journal_request__descriptor},
        {"/reel.v1.Journal/SubscribeRun", RPC_SERVER_STREAM, j_subscribe_run,
         &reel__v1__subscribe_run_request__descriptor},
        {"/reel.v1.Journal/EndRun", RPC_UNARY, j_end_run,
         &reel__v1__end_run_request__descriptor},
        {"/reel.v1.Journal/SuspendRun", RPC_UNARY, j_suspend_run,
         &reel__v1__suspend_run_request__descriptor},
        {"/reel.v1.Journal/GetRun", RPC_UNARY, j_get_run,
         &reel__v1__get_run_request__descriptor},
        {"/reel.v1.Journal/ListRuns", RPC_UNARY, j_list_runs,
         &reel__v1__list_runs_request__descriptor},
        {"/reel.v1.Journal/ListRunsToRecover", RPC_UNARY, j_list_recoverable,
         &reel__v1__list_runs_to_recover_request__descriptor},
        {"/reel.v1.Journal/ClaimRun", RPC_UNARY, j_claim_run,
         &reel__v1__claim_run_request__descriptor},
        {"/reel.v1.Journal/ClaimNextRun", RPC_UNARY, j_claim_next_run,
         &reel__v1__claim_next_run_request__descriptor},
        {"/reel.v1.Journal/ResumeRun", RPC_UNARY, j_resume_run,
         &reel__v1__resume_run_request__descriptor},
    };

    for (size_t i = 0; i < sizeof(methods) / sizeof(*methods); i++) {
        rpc_method_t m = {methods[i].path, methods[i].kind, methods[i].fn, ctx,
                          methods[i].input};

        if (rpc_server_add_method(srv, &m) != 0)
            return -1;
    }
    return 0;
}

/* ---- The module ---------------------------------------------------------- */

/* A run's change as run.<run_id>.<STATUS>, an entry as
 * journal.<run_id>.<kind>; a tenant's run_id token carries its prefix,
 * run.::T:<run_id>.<STATUS> (api/tenant.h), told from the run's app,
 * which an entry's change carries. */
static reel_code_t journal_module_encode(const store_change_t *c,
                                         char **subject, uint8_t **bytes,
                                         size_t *len, reel_status_t *st) {
    Reel__V1__Event ev = REEL__V1__EVENT__INIT;
    Reel__V1__JournalEntry entry_pb;
    api_run_pb_t run_pb = {0};
    run_t run = {0};
    journal_entry_t entry = {0};
    int r = journal_change_decode(c, &run, &entry);
    reel_code_t rc;

    if (r == 1) {
        ev.type = REEL__V1__EVENT__TYPE__RUN_CHANGED;
        ev.body_case = REEL__V1__EVENT__BODY_RUN;
        ev.run = &run_pb.msg;
        rc = api_run_to_pb(&run, &run_pb) != 0
                 ? reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory")
                 : api_event_pack(c, &ev, subject, bytes, len, st,
                                  "run.%.*s%s.%s",
                                  (int)api_tenant_prefix_len(run.app),
                                  run.app, run.run_id,
                                  run_status_name(run.status));
    } else if (r == 2) {
        api_entry_to_pb(&entry, &entry_pb);
        ev.type = REEL__V1__EVENT__TYPE__JOURNAL_APPENDED;
        ev.body_case = REEL__V1__EVENT__BODY_ENTRY;
        ev.entry = &entry_pb;
        rc = api_event_pack(c, &ev, subject, bytes, len, st,
                            "journal.%.*s%s.%s",
                            (int)api_tenant_prefix_len(entry.app), entry.app,
                            entry.run_id, entry.kind);
    } else {
        rc = api_change_unknown(c, r, st);
    }
    api_run_pb_fini(&run_pb);
    run_fini(&run);
    journal_entry_fini(&entry);
    return rc;
}

static reel_code_t journal_module_start(api_ctx_t *ctx, reel_status_t *st) {
    return journal_create(ctx->store, &ctx->limits.journal, &ctx->journal,
                          st);
}

static void journal_module_destroy(api_ctx_t *ctx) {
    journal_destroy(ctx->journal);
    ctx->journal = NULL;
}

static void journal_module_publish(api_ctx_t *ctx,
                                   const store_change_t *changes, size_t n) {
    if (ctx->journal != NULL)
        journal_publish(ctx->journal, changes, n);
}

static const char *const journal_subjects[] = {"journal", "run", NULL};

const api_module_t api_journal_module = {
    .name = "journal",
    .id = JOURNAL_MODULE_ID,
    .cfs = journal_cfs,
    .subjects = journal_subjects,
    .serve = api_journal_register,
    .start = journal_module_start,
    .destroy = journal_module_destroy,
    .encode = journal_module_encode,
    .publish = journal_module_publish,
};
