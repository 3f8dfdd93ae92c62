/*
 * api/auth_service.c: token auth for every call, the method-to-scope
 * table, and reel.v1.Admin's token methods, over the auth module.
 *
 * With reeld --auth token, rpc.c hands every call of a registered method
 * to api_authorize() before its request is decoded: a public method
 * (health) passes; any other needs a valid bearer token (UNAUTHENTICATED
 * otherwise), and its row in the table below says which scope the token
 * must hold (PERMISSION_DENIED naming it otherwise). The table fails
 * closed: a method registered without a row is PERMISSION_DENIED for
 * every token, and api/auth_test.c walks every registered method and
 * fails when one has no row, so a new RPC cannot ship without deciding
 * its scope. The admin scope holds every other scope.
 *
 * Revoking a token ends its open streams and long polls at once
 * (rpc_server_end_calls, UNAUTHENTICATED) so a revocation is never
 * outlived by a watch opened before it. Expiry likewise: a sweeper thread
 * ends, once a second, the open streams of tokens whose time has passed.
 *
 * First start: with --auth token and no token stored, start creates an
 * admin token (tenant admin, scope admin) and writes it to
 * <data dir>/admin.token (mode 0600, written to a temporary file first and
 * renamed, then synced) before the token is stored; the log names the
 * file, never the token. If the file cannot be written, or the token
 * cannot be stored after it, reeld does not start and no token is left
 * stored without its file, so nobody is left without a way in.
 */
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reel/v1/admin.pb-c.h"
#include "api/reply.h"
#include "api/services.h"
#include "api/tenant.h"
#include "auth/auth.h"
#include "base/clock.h"
#include "base/file.h"
#include "base/log.h"

/* ---- The method-to-scope table --------------------------------------------- */

#define RULE_PUBLIC (-2) /* no token needed */
#define RULE_ANY (-1)    /* any valid token */
#define S(b) AUTH_SCOPE_BIT_##b

static const api_scope_rule_t rules[] = {
    {"/grpc.health.v1.Health/Check", RULE_PUBLIC, 0},
    {"/grpc.health.v1.Health/Watch", RULE_PUBLIC, 0},
    /* Status for any token; its details (the data dir) only for admin. */
    {"/reel.v1.Admin/GetStatus", RULE_ANY, 0},
    {"/reel.v1.Admin/CreateToken", S(ADMIN), 0},
    {"/reel.v1.Admin/ListTokens", S(ADMIN), 0},
    {"/reel.v1.Admin/RevokeToken", S(ADMIN), 0},
    {"/reel.v1.KV/SetValue", S(KV_WRITE), 1},
    {"/reel.v1.KV/DeleteValue", S(KV_WRITE), 1},
    {"/reel.v1.KV/GetValue", S(KV_READ), 0},
    {"/reel.v1.KV/ListValues", S(KV_READ), 0},
    {"/reel.v1.KV/ValueHistory", S(KV_READ), 0},
    {"/reel.v1.KV/WatchValue", S(KV_READ), 0},
    {"/reel.v1.KV/WatchValues", S(KV_READ), 0},
    {"/reel.v1.KV/WatchValueBatches", S(KV_READ), 0},
    {"/reel.v1.KV/WatchValuesBatches", S(KV_READ), 0},
    {"/reel.v1.Journal/BeginRun", S(JOURNAL_WRITE), 1},
    {"/reel.v1.Journal/Heartbeat", S(JOURNAL_WRITE), 1},
    {"/reel.v1.Journal/Append", S(JOURNAL_WRITE), 1},
    {"/reel.v1.Journal/EndRun", S(JOURNAL_WRITE), 1},
    {"/reel.v1.Journal/SuspendRun", S(JOURNAL_WRITE), 1},
    {"/reel.v1.Journal/ClaimRun", S(JOURNAL_WRITE), 1},
    {"/reel.v1.Journal/ClaimNextRun", S(JOURNAL_WRITE), 0},
    {"/reel.v1.Journal/ResumeRun", S(JOURNAL_WRITE), 1},
    {"/reel.v1.Journal/ReadJournal", S(JOURNAL_READ), 0},
    {"/reel.v1.Journal/SubscribeRun", S(JOURNAL_READ), 0},
    {"/reel.v1.Journal/GetRun", S(JOURNAL_READ), 0},
    {"/reel.v1.Journal/ListRuns", S(JOURNAL_READ), 0},
    {"/reel.v1.Journal/ListRunsToRecover", S(JOURNAL_READ), 0},
    {"/reel.v1.Signals/SendSignal", S(SIGNALS_SEND), 1},
    {"/reel.v1.Signals/CancelSignal", S(SIGNALS_SEND), 1},
    {"/reel.v1.Signals/AwaitSignal", S(SIGNALS_AWAIT), 0},
    {"/reel.v1.Signals/ListSignals", S(SIGNALS_AWAIT), 0},
    {"/reel.v1.Wal/SubscribeEvents", S(WAL_READ), 0},
    {"/reel.v1.Wal/SubscribeEventBatches", S(WAL_READ), 0},
    {"/reel.v1.Wal/GetHead", S(WAL_READ), 0},
    {"/reel.v1.Wal/AckEvents", S(WAL_CONSUME), 1},
    {"/reel.v1.Wal/ListConsumers", S(WAL_CONSUME), 0},
    {"/reel.v1.Wal/DeleteConsumer", S(WAL_CONSUME), 1},
    {"/reel.v1.Workspace/PutArtifact", S(WORKSPACE_WRITE), 0},
    {"/reel.v1.Workspace/DeleteArtifact", S(WORKSPACE_WRITE), 1},
    {"/reel.v1.Workspace/GetArtifact", S(WORKSPACE_READ), 0},
    {"/reel.v1.Workspace/StatArtifact", S(WORKSPACE_READ), 0},
    {"/reel.v1.Workspace/ListArtifacts", S(WORKSPACE_READ), 0},
    {"/reel.v1.Workspace/WatchArtifacts", S(WORKSPACE_READ), 0},
    {"/reel.v1.Workspace/GetWorkspaceUsage", S(WORKSPACE_READ), 0},
};

#define N_RULES (sizeof(rules) / sizeof(*rules))

/* ---- Each tenant's calls open, and writes in flight ------------------------ */

typedef struct tenant_load {
    struct tenant_load *next;
    size_t calls;  /* calls open (under the table's mu) */
    size_t writes; /* of them, unary writes in flight */
    rpc_share_t streams; /* its streams' bytes queued (api/rpc.c) */
    char tenant[AUTH_TENANT_MAX + 1];
} tenant_load_t;

#define LOAD_BUCKETS 64

struct api_tenant_calls {
    pthread_mutex_t mu;
    size_t max_calls, max_writes;
    tenant_load_t *buckets[LOAD_BUCKETS];
};

/* What api_authorize leaves on a call: who calls, and the places it holds
 * among its tenant's calls (and writes). */
typedef struct call_principal {
    auth_principal_t who; /* first: rpc_call_principal() is read as it */
    tenant_load_t *load;  /* NULL: it holds none */
    int write;            /* it holds one of load's writes too */
} call_principal_t;

struct api_tenant_calls *api_tenant_calls_create(size_t max_calls,
                                                 size_t max_writes) {
    struct api_tenant_calls *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    w->max_calls = max_calls;
    w->max_writes = max_writes;
    return w;
}

void api_tenant_calls_destroy(struct api_tenant_calls *w) {
    if (w == NULL)
        return;
    for (size_t i = 0; i < LOAD_BUCKETS; i++)
        while (w->buckets[i] != NULL) {
            tenant_load_t *l = w->buckets[i];

            w->buckets[i] = l->next;
            free(l);
        }
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* A place among tenant's calls (and writes, for a write): its entry (kept
 * while reeld runs: tenants are the tokens' few), or NULL with st set
 * when it holds the most it may. */
static tenant_load_t *load_take(struct api_tenant_calls *w,
                                const char *tenant, int write,
                                reel_status_t *st) {
    size_t h = 5381;
    tenant_load_t *l;

    for (const char *c = tenant; *c; c++)
        h = h * 33 + (unsigned char)*c;
    pthread_mutex_lock(&w->mu);
    for (l = w->buckets[h % LOAD_BUCKETS]; l; l = l->next)
        if (strcmp(l->tenant, tenant) == 0)
            break;
    if (l == NULL && (l = calloc(1, sizeof(*l))) != NULL) {
        snprintf(l->tenant, sizeof(l->tenant), "%s", tenant);
        l->next = w->buckets[h % LOAD_BUCKETS];
        w->buckets[h % LOAD_BUCKETS] = l;
    }
    if (l == NULL) {
        reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    } else if (l->calls >= w->max_calls) {
        /* Each open call costs reeld memory: streams and long polls. */
        reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                        "tenant %s has %zu calls open, at most %zu "
                        "(--max-calls-per-tenant): end streams or long "
                        "polls it no longer reads (one WatchValues stream "
                        "holds up to 10,000 watches)",
                        tenant, l->calls, w->max_calls);
        l = NULL;
    } else if (write && l->writes >= w->max_writes) {
        /* Worded as the store's full queue: refused before anything was
         * written, and retried as it is. */
        reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                        "write queue is full for tenant %s (%zu of its "
                        "writes in flight, at most %zu: "
                        "--write-queue-per-tenant); retry later",
                        tenant, l->writes, w->max_writes);
        l = NULL;
    } else {
        l->calls++;
        l->writes += write != 0;
    }
    pthread_mutex_unlock(&w->mu);
    return l;
}

rpc_share_t *api_principal_share(void *arg, const void *principal) {
    const call_principal_t *p = principal;

    (void)arg;
    /* The operator's tenants hold no load: the total bounds them alone. */
    return p != NULL && p->load != NULL ? &p->load->streams : NULL;
}

void api_principal_free(void *arg, void *principal) {
    api_ctx_t *ctx = arg;
    call_principal_t *p = principal;

    if (p->load != NULL) {
        pthread_mutex_lock(&ctx->tenant_calls->mu);
        p->load->calls--;
        p->load->writes -= p->write != 0;
        pthread_mutex_unlock(&ctx->tenant_calls->mu);
    }
    free(p);
}

/* The rows by path, sorted once: every call looks its method up here. */
static const api_scope_rule_t *by_path[N_RULES];
static pthread_once_t by_path_once = PTHREAD_ONCE_INIT;

static int rule_cmp(const void *a, const void *b) {
    return strcmp((*(const api_scope_rule_t *const *)a)->path,
                  (*(const api_scope_rule_t *const *)b)->path);
}

static int path_cmp(const void *path, const void *elem) {
    return strcmp(path, (*(const api_scope_rule_t *const *)elem)->path);
}

static void sort_rules(void) {
    for (size_t i = 0; i < N_RULES; i++)
        by_path[i] = &rules[i];
    qsort(by_path, N_RULES, sizeof(*by_path), rule_cmp);
}

const api_scope_rule_t *api_scope_rule(const char *path) {
    const api_scope_rule_t *const *r;

    pthread_once(&by_path_once, sort_rules);
    r = bsearch(path, by_path, N_RULES, sizeof(*by_path), path_cmp);
    return r != NULL ? *r : NULL;
}

const api_scope_rule_t *api_scope_rules(size_t *n) {
    *n = N_RULES;
    return rules;
}

/* ---- Every call ------------------------------------------------------------ */

static reel_code_t authorize_call(api_ctx_t *ctx, const char *path,
                                  const char *val, size_t len, size_t sent,
                                  void **principal, reel_status_t *st) {
    const api_scope_rule_t *r = api_scope_rule(path);
    auth_principal_t who;
    call_principal_t *copy;
    const char *tok;
    size_t tlen;
    reel_code_t rc;

    if (r != NULL && r->rule == RULE_PUBLIC)
        return REEL_OK;
    if (val == NULL)
        return reel_status_set(st, REEL_UNAUTHENTICATED,
                               "authorization: no token: send the metadata "
                               "\"authorization: Bearer <token>\"");
    /* Which of two credentials counts is a guess no server should make
     * (a proxy's and the client's, say): refused, naming the count. */
    if (sent > 1)
        return reel_status_set(st, REEL_UNAUTHENTICATED,
                               "authorization: sent %zu times: send one "
                               "\"authorization: Bearer <token>\"",
                               sent);
    if ((tok = auth_bearer(val, len, &tlen)) == NULL)
        return reel_status_set(st, REEL_UNAUTHENTICATED,
                               "authorization: not a Bearer credential "
                               "(\"Bearer <token>\")");
    if ((rc = auth_check(ctx->auth, tok, tlen, reel_clock_now_ms(), &who,
                         st)) != REEL_OK)
        return rc;
    if (r == NULL)
        return reel_status_set(st, REEL_PERMISSION_DENIED,
                               "%s has no scope in reeld's table: no token "
                               "may call it",
                               path);
    /* Fail closed: a tenant with a prefix reaches only what keeps its
     * names apart (api/tenant.h); the token methods are admin's. */
    if (strcmp(who.tenant, AUTH_DEFAULT_TENANT) != 0 &&
        strcmp(who.tenant, AUTH_ADMIN_TENANT) != 0 &&
        !api_tenant_keeps_apart(path))
        return reel_status_set(st, REEL_PERMISSION_DENIED,
                               "%s is not a tenant's to call: tenant %s of "
                               "token %s cannot call it",
                               path, who.tenant, who.id);
    if (r->rule >= 0 && !(who.scopes & ((auth_scopes_t)1 << r->rule)) &&
        !(who.scopes & AUTH_SCOPE(ADMIN)))
        return reel_status_set(st, REEL_PERMISSION_DENIED,
                               "%s needs scope %s, which token %s does not "
                               "hold",
                               path, auth_scope_name(r->rule), who.id);
    if ((copy = calloc(1, sizeof(*copy))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    copy->who = who;
    /* A tenant's call takes one of its places (a write one more), given
     * back when the call is freed (api_principal_free); the operator's
     * tenants are not counted. */
    if (ctx->tenant_calls != NULL &&
        strcmp(who.tenant, AUTH_DEFAULT_TENANT) != 0 &&
        strcmp(who.tenant, AUTH_ADMIN_TENANT) != 0) {
        copy->write = r->write;
        if ((copy->load = load_take(ctx->tenant_calls, who.tenant, r->write,
                                    st)) == NULL) {
            free(copy);
            return st->code;
        }
    }
    *principal = copy;
    return REEL_OK;
}

reel_code_t api_authorize(void *arg, const char *path, const char *val,
                          size_t len, size_t sent, void **principal,
                          reel_status_t *st) {
    api_ctx_t *ctx = arg;
    reel_code_t rc = authorize_call(ctx, path, val, len, sent, principal, st);

    /* reel_auth_failures_total: one relaxed add, only on a refusal. */
    if (rc == REEL_UNAUTHENTICATED)
        metrics_counter_inc(ctx->m_auth_unauthenticated);
    else if (rc == REEL_PERMISSION_DENIED)
        metrics_counter_inc(ctx->m_auth_denied);
    return rc;
}

int api_is_admin(rpc_call_t *call) {
    const auth_principal_t *who = rpc_call_principal(call);

    /* Without --auth token there is no principal: everyone is. With it,
     * admin is the scope held by a token of the admin or the default
     * tenant: a tenant with a prefix holding the scope is admin of its
     * own names only (authorize_call), and sees nothing of the server's. */
    return who == NULL || ((who->scopes & AUTH_SCOPE(ADMIN)) != 0 &&
                           (strcmp(who->tenant, AUTH_ADMIN_TENANT) == 0 ||
                            strcmp(who->tenant, AUTH_DEFAULT_TENANT) == 0));
}

/* ---- Admin's token methods --------------------------------------------------- */

/* Without --auth token nobody's token is checked, so nobody may make,
 * list or revoke one: a token planted then would be a working admin
 * credential once auth is on, and would keep the first start with auth
 * from writing admin.token for the operator. */
#define NO_TOKENS                                                          \
    "tokens need reeld --auth token: without it no call is checked, and " \
    "no token may be created, listed or revoked"

static void info_to_pb(const auth_info_t *in, Reel__V1__TokenInfo *pb,
                       char **scopes) {
    size_t n = 0;

    reel__v1__token_info__init(pb);
    pb->id = (char *)in->id;
    pb->tenant = (char *)in->tenant;
    pb->name = (char *)in->name;
    pb->created_ms = in->created_ms;
    pb->expires_ms = in->expires_ms;
    for (int i = 0; i < AUTH_SCOPE__COUNT; i++)
        if (in->scopes & ((auth_scopes_t)1 << i))
            scopes[n++] = (char *)auth_scope_name((auth_scope_bit_t)i);
    pb->scopes = scopes;
    pb->n_scopes = n;
}

/* A module's limit as it applies it: 0 is its default. */
static size_t ns_limit(size_t set, size_t dflt) {
    return set != 0 ? set : dflt;
}

static void admin_create_token(rpc_call_t *call, void *arg, const uint8_t *req,
                               size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__CreateTokenRequest *in =
        reel__v1__create_token_request__unpack(NULL, len, req);
    Reel__V1__CreateTokenResponse out = REEL__V1__CREATE_TOKEN_RESPONSE__INIT;
    Reel__V1__TokenInfo info_pb;
    char *scopes[AUTH_SCOPE__COUNT];
    char tok[AUTH_TOKEN_LEN + 1];
    reel_status_t st = REEL_STATUS_INIT;
    auth_scopes_t sc = 0;
    auth_info_t info;
    uint8_t *buf;
    size_t n;

    if (in == NULL) {
        api_bad_request(call, "CreateTokenRequest");
        return;
    }
    for (size_t i = 0; i < in->n_scopes; i++) {
        int bit = auth_scope_lookup(in->scopes[i], strlen(in->scopes[i]));

        if (bit < 0) {
            reel_status_set(&st, REEL_INVALID_ARGUMENT,
                            "scopes[%zu]: \"%.64s\" is not a scope", i,
                            in->scopes[i]);
            goto out;
        }
        sc |= (auth_scopes_t)1 << bit;
    }
    if (!ctx->auth_token) {
        reel_status_set(&st, REEL_FAILED_PRECONDITION, NO_TOKENS);
        goto out;
    }
    /* A tenant whose prefix fills the namespace limit would get a token
     * every KV and workspace call of which is refused: refused here
     * instead (the workspace's limit follows the KV's, or its default).
     * A malformed tenant is told so first, as auth_token_create would. */
    if (auth_check_tenant("tenant", in->tenant, &st) != REEL_OK ||
        api_tenant_check_room(in->tenant, ns_limit(ctx->limits.kv.max_namespace,
                                                   KV_DEFAULT_MAX_NAMESPACE),
                              "--kv-max-namespace-bytes", &st) != REEL_OK ||
        api_tenant_check_room(in->tenant, ns_limit(ctx->limits.ws.max_namespace,
                                                   WS_DEFAULT_MAX_NAMESPACE),
                              "--kv-max-namespace-bytes", &st) != REEL_OK)
        goto out;
    /* A rare, small synced write: waited for on this poller thread. */
    if (auth_token_create(ctx->auth, in->tenant, sc, in->name, in->ttl_ms,
                          tok, &info, &st) != REEL_OK)
        goto out;
    REEL_INFO("auth", "token %s created (tenant %s, name \"%s\")", info.id,
              info.tenant, info.name);
    info_to_pb(&info, &info_pb, scopes);
    out.token = tok;
    out.info = &info_pb;
    API_PACK(reel__v1__create_token_response, &out, &buf, &n);
    memset(tok, 0, sizeof(tok));
    reel__v1__create_token_request__free_unpacked(in, NULL);
    if (buf == NULL) {
        api_finish_packed(call, NULL, 0);
        return;
    }
    rpc_call_finish(call, REEL_OK, NULL, buf, n);
    memset(buf, 0, n); /* the token's last copy here */
    free(buf);
    return;
out:
    reel__v1__create_token_request__free_unpacked(in, NULL);
    rpc_call_finish_status(call, &st);
    reel_status_fini(&st);
}

static void admin_list_tokens(rpc_call_t *call, void *arg, const uint8_t *req,
                              size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__ListTokensRequest *in =
        reel__v1__list_tokens_request__unpack(NULL, len, req);
    Reel__V1__ListTokensResponse out = REEL__V1__LIST_TOKENS_RESPONSE__INIT;
    Reel__V1__TokenInfo *infos = NULL, **ptrs = NULL;
    char(*scopes)[AUTH_SCOPE__COUNT] = NULL;
    reel_status_t st = REEL_STATUS_INIT;
    auth_info_t *list = NULL;
    size_t n = 0, k = 0, blen;
    uint8_t *buf;

    if (in == NULL) {
        api_bad_request(call, "ListTokensRequest");
        return;
    }
    if (!ctx->auth_token) {
        reel_status_set(&st, REEL_FAILED_PRECONDITION, NO_TOKENS);
        goto out;
    }
    if (auth_token_list(ctx->auth, &list, &n, &st) != REEL_OK)
        goto out;
    infos = calloc(n ? n : 1, sizeof(*infos));
    ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    scopes = calloc(n ? n : 1, sizeof(char *) * AUTH_SCOPE__COUNT);
    if (infos == NULL || ptrs == NULL || scopes == NULL) {
        reel_status_set(&st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (*in->tenant && strcmp(in->tenant, list[i].tenant) != 0)
            continue;
        info_to_pb(&list[i], &infos[k], (char **)scopes + i * AUTH_SCOPE__COUNT);
        ptrs[k] = &infos[k];
        k++;
    }
    out.tokens = ptrs;
    out.n_tokens = k;
    API_PACK(reel__v1__list_tokens_response, &out, &buf, &blen);
    api_finish_packed(call, buf, blen);
    goto done;
out:
    rpc_call_finish_status(call, &st);
done:
    reel_status_fini(&st);
    free(scopes);
    free(ptrs);
    free(infos);
    free(list);
    reel__v1__list_tokens_request__free_unpacked(in, NULL);
}

static int same_token(const void *principal, void *arg) {
    const auth_principal_t *who = principal;

    return who != NULL && strcmp(who->id, arg) == 0;
}

static void admin_revoke_token(rpc_call_t *call, void *arg, const uint8_t *req,
                               size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__RevokeTokenRequest *in =
        reel__v1__revoke_token_request__unpack(NULL, len, req);
    Reel__V1__RevokeTokenResponse out = REEL__V1__REVOKE_TOKEN_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    char msg[128];
    uint8_t *buf;
    size_t n;

    if (in == NULL) {
        api_bad_request(call, "RevokeTokenRequest");
        return;
    }
    if (!ctx->auth_token) {
        reel_status_set(&st, REEL_FAILED_PRECONDITION, NO_TOKENS);
        goto out;
    }
    if (auth_token_revoke(ctx->auth, in->id, &st) != REEL_OK)
        goto out;
    snprintf(msg, sizeof(msg), "authorization: token %s was revoked",
             in->id);
    out.streams_ended = rpc_server_end_calls(ctx->server, same_token, in->id,
                                             REEL_UNAUTHENTICATED, msg);
    REEL_INFO("auth", "token %s revoked (%llu open streams ended)", in->id,
              (unsigned long long)out.streams_ended);
    API_PACK(reel__v1__revoke_token_response, &out, &buf, &n);
    reel__v1__revoke_token_request__free_unpacked(in, NULL);
    api_finish_packed(call, buf, n);
    return;
out:
    reel__v1__revoke_token_request__free_unpacked(in, NULL);
    rpc_call_finish_status(call, &st);
    reel_status_fini(&st);
}

static int auth_serve(rpc_server_t *srv, api_ctx_t *ctx) {
    const rpc_method_t m[] = {
        {"/reel.v1.Admin/CreateToken", RPC_UNARY, admin_create_token, ctx,
         &reel__v1__create_token_request__descriptor},
        {"/reel.v1.Admin/ListTokens", RPC_UNARY, admin_list_tokens, ctx,
         &reel__v1__list_tokens_request__descriptor},
        {"/reel.v1.Admin/RevokeToken", RPC_UNARY, admin_revoke_token, ctx,
         &reel__v1__revoke_token_request__descriptor},
    };

    for (size_t i = 0; i < sizeof(m) / sizeof(*m); i++)
        if (rpc_server_add_method(srv, &m[i]) != 0)
            return -1;
    return 0;
}

/* ---- The first admin token --------------------------------------------------- */

static reel_code_t bootstrap(api_ctx_t *ctx, reel_status_t *st) {
    char tok[AUTH_TOKEN_LEN + 1], path[4096];
    auth_info_t info;
    reel_code_t rc;

    if (auth_count(ctx->auth) > 0)
        return REEL_OK;
    if (snprintf(path, sizeof(path), "%s/admin.token", ctx->data_dir) >=
        (int)sizeof(path))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "data dir: path too long for admin.token");
    /* The file first, the token stored second: a token stored without
     * its file would lock everyone out for good (the next start sees a
     * token and makes none), while a file whose token was never stored
     * is overwritten by the next start, which still finds no token. So
     * the file stays when the store fails: a write that failed its sync
     * may still be on disk. */
    if ((rc = auth_token_new(tok, st)) != REEL_OK)
        return rc;
    tok[AUTH_TOKEN_LEN] = '\n'; /* the file is the token and a newline */
    rc = reel_file_replace(path, tok, AUTH_TOKEN_LEN + 1, 0600, st);
    tok[AUTH_TOKEN_LEN] = '\0';
    if (rc == REEL_OK)
        rc = auth_token_store(ctx->auth, AUTH_ADMIN_TENANT, AUTH_SCOPE(ADMIN),
                              "first admin", 0, tok, &info, st);
    memset(tok, 0, sizeof(tok));
    if (rc != REEL_OK)
        return rc;
    REEL_INFO("auth",
              "no token was stored: created admin token %s and wrote it to "
              "%s (readable by its owner only); create others with reelctl "
              "token create, then remove the file",
              info.id, path);
    return REEL_OK;
}

/* ---- Expiry of open streams ------------------------------------------------- */

#define SWEEP_MS 1000

/* The thread that ends expired tokens' streams (ctx->auth_sweep). */
struct api_auth_sweep {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    int stop;          /* under mu */
    pthread_t thread;
    api_ctx_t *ctx;
};

static int expired(const void *principal, void *arg) {
    const auth_principal_t *who = principal;
    int64_t now = *(const int64_t *)arg;

    return who != NULL && who->expires_ms != 0 && now >= who->expires_ms;
}

/* rpc_server_on_stale's check: the call's token revoked or expired since
 * it was let in. */
static int stale_token(const void *principal, void *arg, char *why,
                       size_t cap) {
    const auth_principal_t *who = principal;
    api_ctx_t *ctx = arg;

    if (auth_is_live(ctx->auth, who->id, reel_clock_now_ms()))
        return 0;
    snprintf(why, cap, "authorization: token %s was revoked or has expired",
             who->id);
    return 1;
}

static void *sweeper(void *arg) {
    struct api_auth_sweep *w = arg;
    struct timespec ts;

    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        int64_t now;

        ts = reel_clock_mono_after(SWEEP_MS);
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        if (w->stop)
            break;
        pthread_mutex_unlock(&w->mu);
        now = reel_clock_now_ms();
        rpc_server_end_calls(w->ctx->server, expired, &now,
                             REEL_UNAUTHENTICATED,
                             "authorization: the token expired");
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static reel_code_t auth_module_start(api_ctx_t *ctx, reel_status_t *st) {
    struct api_auth_sweep *w;
    reel_code_t rc;

    if ((rc = auth_create(ctx->store, &ctx->auth, st)) != REEL_OK)
        return rc;
    if (!ctx->auth_token || ctx->server == NULL)
        return REEL_OK;
    if ((rc = bootstrap(ctx, st)) != REEL_OK)
        return rc;
    rpc_server_on_stale(ctx->server, stale_token, ctx);
    if ((w = calloc(1, sizeof(*w))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    w->ctx = ctx;
    pthread_mutex_init(&w->mu, NULL);
    reel_cond_init_mono(&w->cv);
    if (pthread_create(&w->thread, NULL, sweeper, w) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return reel_status_set(st, REEL_INTERNAL,
                               "cannot start the token expiry thread");
    }
    ctx->auth_sweep = w;
    return REEL_OK;
}

/* Joined before the server is destroyed (a stream the stop ended is
 * never ended again: rpc_server_end_calls skips it). */
static void auth_module_stop(api_ctx_t *ctx) {
    struct api_auth_sweep *w = ctx->auth_sweep;

    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    ctx->auth_sweep = NULL;
}

static void auth_module_destroy(api_ctx_t *ctx) {
    auth_module_stop(ctx);
    auth_destroy(ctx->auth);
    ctx->auth = NULL;
}

const api_module_t api_auth_module = {
    .name = "auth",
    .cfs = auth_cfs,
    .serve = auth_serve,
    .start = auth_module_start,
    .stop = auth_module_stop,
    .destroy = auth_module_destroy,
};
