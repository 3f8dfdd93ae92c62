/*
 * api/workspace_service.c: reel.v1.Workspace over the workspace module.
 *
 * PutArtifact is client-streaming: the handler asks for one message at a
 * time (rpc_call_read) and asks for the next only once the last is stored,
 * so a client that sends faster than the disk takes is held back by
 * HTTP/2 flow control, and an upload holds one chunk buffer in reeld. Each
 * message is stored by one of the workspace's workers (ws_run), not on the
 * poller it arrived on: a chunk write may wait for a flush, and the pollers
 * serve every other call. The header begins the upload; each chunk is
 * written as it comes; the end of
 * the client's stream commits, and the answer goes from the writer thread
 * once the commit is synced. Any other end (a bad message, the client
 * gone, the server stopping) aborts the upload: nothing is visible and its
 * chunks are reclaimed.
 *
 * GetArtifact streams the record, then one chunk at a time: the next chunk
 * is read only when the call's send queue has drained (its drain hook),
 * so a slow reader holds one chunk in reeld, never the file.
 *
 * WatchArtifacts wires a workspace watch (feed/) to the call as KV's
 * WatchValue does: a full send queue drops the watch back to storage, and
 * the drain hook pumps it again.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reel/v1/wal.pb-c.h"
#include "reel/v1/workspace.pb-c.h"
#include "api/convert.h"
#include "api/page.h"
#include "api/reply.h"
#include "api/services.h"
#include "api/tenant.h"
#include "api/timer.h"
#include "api/wire.h"
#include "base/clock.h"
#include "workspace/workspace.h"

/* ---- Conversions ----------------------------------------------------------- */

/* An Artifact message; its metadata needs arrays of its own. Points into
 * the record. */
typedef struct artifact_pb {
    Reel__V1__Artifact msg;
    Reel__V1__Artifact__MetadataEntry *entries;
    Reel__V1__Artifact__MetadataEntry **ptrs;
} artifact_pb_t;

static void artifact_pb_fini(artifact_pb_t *pb) {
    free(pb->entries);
    free(pb->ptrs);
    pb->entries = NULL;
    pb->ptrs = NULL;
}

/* 0, or -1 if out of memory; artifact_pb_fini either way. For a call, the
 * namespace is shown as its tenant gave it; NULL: as stored. */
static int artifact_to_pb(rpc_call_t *call, const ws_artifact_t *a,
                          artifact_pb_t *pb) {
    Reel__V1__Artifact *m = &pb->msg;

    reel__v1__artifact__init(m);
    pb->entries = NULL;
    pb->ptrs = NULL;
    m->namespace_ = (char *)(call ? api_tenant_name_out(call, a->ns) : a->ns);
    m->key = (char *)a->key;
    m->version = a->version;
    m->size = a->size;
    if (!a->deleted) {
        m->sha256.data = (uint8_t *)a->sha256;
        m->sha256.len = WS_SHA256_LEN;
    }
    m->content_type = (char *)(a->content_type ? a->content_type : "");
    m->revision = a->revision;
    m->created_at_ms = a->created_at_ms;
    m->updated_at_ms = a->updated_at_ms;
    m->deleted = a->deleted;
    m->chunk_size = a->deleted ? 0 : a->chunk_size;
    if (a->n_meta == 0)
        return 0;
    pb->entries = calloc(a->n_meta, sizeof(*pb->entries));
    pb->ptrs = calloc(a->n_meta, sizeof(*pb->ptrs));
    if (pb->entries == NULL || pb->ptrs == NULL)
        return -1;
    for (size_t i = 0; i < a->n_meta; i++) {
        reel__v1__artifact__metadata_entry__init(&pb->entries[i]);
        pb->entries[i].key = (char *)a->meta_keys[i];
        pb->entries[i].value = (char *)a->meta_vals[i];
        pb->ptrs[i] = &pb->entries[i];
    }
    m->n_metadata = a->n_meta;
    m->metadata = pb->ptrs;
    return 0;
}

/* A namespace as stored (api/tenant.h): a tenant's as ::<tenant>:<ns>,
 * as the KV's; the limit counts the prefix. */
static reel_code_t ns_in(rpc_call_t *call, api_ctx_t *ctx, const char *field,
                         const char *ns, char **owned, const char **out,
                         reel_status_t *st) {
    size_t max = ctx->limits.ws.max_namespace ? ctx->limits.ws.max_namespace
                                              : WS_DEFAULT_MAX_NAMESPACE;

    return api_tenant_charset_in(call, field, ns, max,
                                 "--kv-max-namespace-bytes", WS_NAMESPACE_CHARS,
                                 owned, out, st);
}

static int precond_from_pb(Reel__V1__Precondition p, ws_precond_t *out) {
    switch (p) {
    case REEL__V1__PRECONDITION__PRECONDITION_NONE:
        *out = WS_PRECOND_NONE;
        return 0;
    case REEL__V1__PRECONDITION__PRECONDITION_ABSENT:
        *out = WS_PRECOND_ABSENT;
        return 0;
    case REEL__V1__PRECONDITION__PRECONDITION_VERSION:
        *out = WS_PRECOND_VERSION;
        return 0;
    default:
        return -1;
    }
}

/* Answers with a message holding one Artifact as field 1 (the
 * Put/Stat responses), or its error. */
static void finish_artifact(rpc_call_t *call, const ws_artifact_t *a) {
    Reel__V1__StatArtifactResponse out = REEL__V1__STAT_ARTIFACT_RESPONSE__INIT;
    artifact_pb_t pb;
    uint8_t *buf = NULL;
    size_t len = 0;

    if (artifact_to_pb(call, a, &pb) == 0) {
        out.artifact = &pb.msg;
        /* PutArtifactResponse has the same one field. */
        API_PACK(reel__v1__stat_artifact_response, &out, &buf, &len);
    }
    artifact_pb_fini(&pb);
    api_finish_packed(call, buf, len);
}

/* ---- PutArtifact --------------------------------------------------------------- */

enum { PUT_READING, PUT_COMMITTING, PUT_ENDED };

typedef struct put {
    api_ctx_t *ctx;
    rpc_call_t *call; /* its tenant's namespace */
    ws_upload_t *u; /* owned by whoever runs put_read */
    atomic_int state;
    /* Armed while a read waits on the client (put_wait), stopped when it
     * completes: the thread that reads owns it, as it owns u. */
    api_timer_t *idle;
} put_t;

static void put_cleanup(void *arg) {
    put_t *p = arg;

    /* No hook runs any more: an upload still here was never ended. */
    ws_upload_abort(p->u);
    if (p->idle != NULL) /* every read has completed: not running */
        api_timer_stop(p->ctx->timers, p->idle);
    free(p);
}

/* The client left or the server is stopping. While reading, the upload
 * ends here (the outstanding read then fails and aborts it); once the
 * commit is queued, its outcome answers the call. */
static void put_cancel(rpc_call_t *call, void *arg, reel_code_t why) {
    put_t *p = arg;
    int reading = PUT_READING;

    if (atomic_compare_exchange_strong(&p->state, &reading, PUT_ENDED))
        api_finish_cancelled(call, why);
}

/* Ends the call with st, whose message names the tenant's namespaces as
 * it gave them (the store's names carry its prefix). */
static void finish_status(rpc_call_t *call, const reel_status_t *st) {
    reel_status_t own = REEL_STATUS_INIT;

    reel_status_set(&own, st->code, "%s", reel_status_message(st));
    api_tenant_status_out(call, &own);
    rpc_call_finish_status(call, &own);
    reel_status_fini(&own);
}

/* Ends the upload with st's error. */
static void put_fail(rpc_call_t *call, put_t *p, const reel_status_t *st) {
    atomic_store(&p->state, PUT_ENDED);
    ws_upload_abort(p->u);
    p->u = NULL;
    finish_status(call, st);
}

static void put_done(void *arg, ws_write_result_t *res) {
    rpc_call_t *call = arg;

    if (res->status.code != REEL_OK)
        finish_status(call, &res->status);
    else
        finish_artifact(call, &res->artifact);
}

static void put_header(put_t *p, const Reel__V1__ArtifactHeader *h,
                       reel_status_t *st) {
    ws_header_t wh = {0};
    const char **keys = NULL, **vals = NULL;
    char *ns_owned = NULL;
    const char *ns;

    if (p->u != NULL) {
        reel_status_set(st, REEL_INVALID_ARGUMENT,
                        "header: sent twice; a PutArtifact stream has one "
                        "header, first, then chunks");
        return;
    }
    if (ns_in(p->call, p->ctx, "header.namespace", h->namespace_, &ns_owned,
              &ns, st) != REEL_OK)
        return;
    wh.ns = ns, wh.ns_len = strlen(ns);
    wh.key = h->key, wh.key_len = strlen(h->key);
    wh.content_type = h->content_type;
    if (precond_from_pb(h->precondition, &wh.precond) != 0) {
        reel_status_set(st, REEL_INVALID_ARGUMENT,
                        "header.precondition: unknown value %d",
                        (int)h->precondition);
        goto out;
    }
    wh.version = h->expected_version;
    wh.has_size = h->has_size;
    wh.size = h->size;
    if (h->sha256.len != 0 && h->sha256.len != WS_SHA256_LEN) {
        reel_status_set(st, REEL_INVALID_ARGUMENT,
                        "header.sha256: %zu bytes; a SHA-256 is %d bytes "
                        "(or empty: none)",
                        h->sha256.len, WS_SHA256_LEN);
        goto out;
    }
    wh.sha256 = h->sha256.len ? h->sha256.data : NULL;
    if (h->n_metadata > 0) {
        keys = calloc(h->n_metadata, sizeof(*keys));
        vals = calloc(h->n_metadata, sizeof(*vals));
        if (keys == NULL || vals == NULL) {
            reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < h->n_metadata; i++) {
            keys[i] = h->metadata[i]->key;
            vals[i] = h->metadata[i]->value;
        }
    }
    wh.n_meta = h->n_metadata;
    wh.meta_keys = keys;
    wh.meta_vals = vals;
    ws_upload_begin(p->ctx->ws, &wh, &p->u, st);
out:
    free(ns_owned);
    free(keys);
    free(vals);
}

static void put_read(rpc_call_t *call, void *arg, reel_code_t code,
                     const uint8_t *msg, size_t len);

/* The timer thread: the client sent nothing for upload_idle_ms while
 * reeld waited. Ended as put_cancel ends it: the outstanding read then
 * fails, and its handler aborts the upload. */
static void put_idle(void *arg) {
    put_t *p = arg;
    int reading = PUT_READING;
    long long ms = (long long)p->ctx->limits.upload_idle_ms;
    char msg[160];

    if (ms % 1000 == 0)
        snprintf(msg, sizeof(msg), "upload: the client sent nothing for "
                 "%lld s (--workspace-upload-idle-timeout)", ms / 1000);
    else
        snprintf(msg, sizeof(msg), "upload: the client sent nothing for "
                 "%lld ms (--workspace-upload-idle-timeout)", ms);
    if (atomic_compare_exchange_strong(&p->state, &reading, PUT_ENDED))
        rpc_call_finish(p->call, REEL_DEADLINE_EXCEEDED, msg, NULL, 0);
}

/*
 * Asks for the client's next message, with the idle timer armed while it
 * waits. 0, or -1 when the call is over (then nothing is armed).
 */
static int put_wait(rpc_call_t *call, put_t *p) {
    int64_t ms = p->ctx->limits.upload_idle_ms;

    /* Out of memory arms nothing: the upload then waits as the client's
     * keepalive allows, as before there was a timer. */
    p->idle = api_timer_start(p->ctx->timers,
                              reel_clock_mono_ns() + ms * 1000000, put_idle,
                              p);
    if (rpc_call_read(call, put_read, p) == REEL_OK)
        return 0;
    if (p->idle != NULL)
        api_timer_stop(p->ctx->timers, p->idle);
    p->idle = NULL;
    return -1;
}

/*
 * The message (or end) put_read hands to a workspace worker, decoded
 * there (the decoded copy is the only one made: a chunk is stored from
 * it), or why it did not decode.
 */
typedef struct put_msg {
    rpc_call_t *call;
    put_t *p;
    reel_code_t code;
    int has_msg;
    Reel__V1__PutArtifactRequest *in; /* NULL: has_msg 0, or bad says */
    reel_status_t bad;
} put_msg_t;

/* A workspace worker: stores one message, or commits at the end, then
 * asks for the next. */
static void put_handle(rpc_call_t *call, put_t *p, reel_code_t code,
                       int has_msg, const Reel__V1__PutArtifactRequest *in,
                       const reel_status_t *bad) {
    reel_status_t st = REEL_STATUS_INIT;
    int reading = PUT_READING;

    if (code != REEL_OK || atomic_load(&p->state) != PUT_READING) {
        /* The call is over (put_cancel answered it, or it broke). */
        atomic_store(&p->state, PUT_ENDED);
        ws_upload_abort(p->u);
        p->u = NULL;
        api_finish_cancelled(call, REEL_CANCELLED);
        return;
    }
    if (!has_msg) { /* the client's last message: commit */
        if (p->u == NULL) {
            reel_status_set(&st, REEL_INVALID_ARGUMENT,
                            "header: the stream ended before a header was "
                            "sent");
            put_fail(call, p, &st);
        } else if (atomic_compare_exchange_strong(&p->state, &reading,
                                                  PUT_COMMITTING)) {
            ws_upload_t *u = p->u;

            p->u = NULL;
            if (ws_upload_commit(u, put_done, call, &st) != REEL_OK)
                finish_status(call, &st);
        } else {
            put_fail(call, p, &st);
        }
        goto out;
    }
    if (in == NULL) {
        put_fail(call, p, bad);
        goto out;
    }
    switch (in->part_case) {
    case REEL__V1__PUT_ARTIFACT_REQUEST__PART_HEADER:
        put_header(p, in->header, &st);
        break;
    case REEL__V1__PUT_ARTIFACT_REQUEST__PART_CHUNK:
        if (p->u == NULL)
            reel_status_set(&st, REEL_INVALID_ARGUMENT,
                            "chunk: sent before the header; the first "
                            "message must be the header");
        else if (in->chunk.len > WS_CHUNK)
            reel_status_set(&st, REEL_INVALID_ARGUMENT,
                            "chunk: %zu bytes, at most %zu", in->chunk.len,
                            WS_CHUNK);
        else
            ws_upload_write(p->u, in->chunk.data, in->chunk.len, &st);
        break;
    default:
        reel_status_set(&st, REEL_INVALID_ARGUMENT,
                        "part: neither a header nor a chunk");
        break;
    }
    if (st.code != REEL_OK) {
        put_fail(call, p, &st);
        goto out;
    }
    if (put_wait(call, p) != 0) {
        atomic_store(&p->state, PUT_ENDED);
        ws_upload_abort(p->u);
        p->u = NULL;
        api_finish_cancelled(call, REEL_CANCELLED);
    }
out:
    reel_status_fini(&st);
}

static void put_msg_free(put_msg_t *m) {
    if (m->in != NULL)
        reel__v1__put_artifact_request__free_unpacked(m->in, NULL);
    reel_status_fini(&m->bad);
    free(m);
}

static void put_work(void *arg) {
    put_msg_t *m = arg;

    put_handle(m->call, m->p, m->code, m->has_msg, m->in, &m->bad);
    rpc_call_unref(m->call);
    put_msg_free(m);
}

/*
 * A poller thread: the next message arrived (or the end, or the call
 * broke). Storing it waits on the disk, so a workspace worker does it
 * (ws_run), and asks for the next message when done: one message per
 * upload is in reeld at a time.
 */
static void put_read(rpc_call_t *call, void *arg, reel_code_t code,
                     const uint8_t *msg, size_t len) {
    put_t *p = arg;
    reel_status_t st = REEL_STATUS_INIT;
    put_msg_t *m;

    if (p->idle != NULL) { /* waits for put_idle if it runs */
        api_timer_stop(p->ctx->timers, p->idle);
        p->idle = NULL;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        reel_status_set(&st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        put_fail(call, p, &st);
        reel_status_fini(&st);
        return;
    }
    m->call = call;
    m->p = p;
    m->code = code;
    m->has_msg = msg != NULL;
    if (code == REEL_OK && msg != NULL &&
        api_wire_check(&reel__v1__put_artifact_request__descriptor, msg, len,
                       &m->bad) == REEL_OK &&
        (m->in = reel__v1__put_artifact_request__unpack(NULL, len, msg)) ==
            NULL)
        reel_status_set(&m->bad, REEL_INVALID_ARGUMENT,
                        "request: not a valid PutArtifactRequest message");
    rpc_call_ref(call);
    if (ws_run(p->ctx->ws, put_work, m, &st) != REEL_OK) {
        put_fail(call, p, &st);
        rpc_call_unref(call);
        put_msg_free(m);
    }
    reel_status_fini(&st);
}

static void ws_put_artifact(rpc_call_t *call, void *arg, const uint8_t *req,
                            size_t len) {
    put_t *p = calloc(1, sizeof(*p));

    (void)req;
    (void)len;
    if (p == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL,
                        0);
        return;
    }
    p->ctx = arg;
    p->call = call;
    atomic_init(&p->state, PUT_READING);
    /* Held while the hooks go in, as the other streams do: a client that
     * already left fires put_cancel at once, which finishes the call, and
     * without this reference the call's cleanup freed p before the state
     * below was read (ASan: heap-use-after-free, an abandoned upload). */
    rpc_call_ref(call);
    rpc_call_on_cleanup(call, put_cleanup, p);
    rpc_call_on_cancel(call, put_cancel, p);
    if (atomic_load(&p->state) == PUT_READING && put_wait(call, p) != 0)
        api_finish_cancelled(call, REEL_CANCELLED);
    rpc_call_unref(call);
}

/* ---- GetArtifact ---------------------------------------------------------------- */

typedef struct get {
    pthread_mutex_t mu;
    ws_reader_t *r;
    int ended;
    /* What is sent next, once there is room (a send refused for room is
     * tried again at the next drain): the record, then each piece the
     * reader holds, behind its field's tag and length. */
    uint8_t *record;
    size_t record_len;
    const void *piece;
    size_t piece_len, hlen;
    uint8_t head[11];
} get_t;

static void get_cleanup(void *arg) {
    get_t *g = arg;

    free(g->record);
    ws_reader_destroy(g->r);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static void get_cancel(rpc_call_t *call, void *arg, reel_code_t why) {
    get_t *g = arg;

    pthread_mutex_lock(&g->mu);
    g->ended = 1;
    pthread_mutex_unlock(&g->mu);
    api_finish_cancelled(call, why);
}

/* The last message went out (or there is room again): send the next one,
 * or end the stream. */
static void get_drain(rpc_call_t *call, void *arg) {
    get_t *g = arg;
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc;
    int end = 0;

    pthread_mutex_lock(&g->mu);
    if (g->ended) {
        pthread_mutex_unlock(&g->mu);
        return;
    }
    if (g->record != NULL) {
        if ((rc = rpc_call_send(call, g->record, g->record_len)) == REEL_OK) {
            free(g->record);
            g->record = NULL;
        } else if (rc != REEL_RESOURCE_EXHAUSTED) {
            g->ended = 1; /* the call is over */
        }
        pthread_mutex_unlock(&g->mu);
        return;
    }
    if (g->piece == NULL) {
        const void *p;
        size_t n;

        /* Nothing is read before there is room to send it: a reader
         * waiting for room holds none of the file. */
        if (!rpc_call_room(call, WS_CHUNK + WS_CHUNK_FRAMING)) {
            pthread_mutex_unlock(&g->mu);
            return;
        }
        if (ws_read_next(g->r, &p, &n, &st) != REEL_OK || n == 0) {
            g->ended = end = 1;
        } else {
            uint64_t v = n;

            /* GetArtifactResponse.chunk (field 2, bytes): tag, length,
             * bytes, sent straight from the chunk the reader holds. */
            g->hlen = 0;
            g->head[g->hlen++] = 0x12;
            do {
                g->head[g->hlen++] =
                    (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
                v >>= 7;
            } while (v != 0);
            g->piece = p;
            g->piece_len = n;
        }
    }
    if (!end) {
        rc = rpc_call_send2(call, g->head, g->hlen, g->piece, g->piece_len);
        if (rc == REEL_OK) {
            g->piece = NULL;
            ws_read_release(g->r); /* sent: the bytes are the call's now */
        } else if (rc != REEL_RESOURCE_EXHAUSTED) {
            g->ended = 1; /* the call is over */
        }
    }
    pthread_mutex_unlock(&g->mu);
    if (end)
        finish_status(call, &st);
    reel_status_fini(&st);
}

static void ws_get_artifact(rpc_call_t *call, void *arg, const uint8_t *req,
                            size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__GetArtifactRequest *in =
        reel__v1__get_artifact_request__unpack(NULL, len, req);
    Reel__V1__GetArtifactResponse first =
        REEL__V1__GET_ARTIFACT_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    ws_artifact_t a = {0};
    artifact_pb_t pb = {0};
    get_t *g = NULL;
    uint8_t *buf = NULL;
    size_t blen = 0;
    char *ns_owned = NULL;
    const char *ns;

    if (in == NULL) {
        api_bad_request(call, "GetArtifactRequest");
        return;
    }
    if ((g = calloc(1, sizeof(*g))) == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL,
                        0);
        goto out;
    }
    pthread_mutex_init(&g->mu, NULL);
    if (ns_in(call, ctx, "namespace", in->namespace_, &ns_owned, &ns,
              &st) != REEL_OK ||
        ws_read_open(ctx->ws, ns, strlen(ns), in->key, strlen(in->key),
                     in->version, in->offset, in->length, &a, &g->r,
                     &st) != REEL_OK) {
        finish_status(call, &st);
        get_cleanup(g);
        goto out;
    }
    /* Each message within --max-response-bytes, a chunk in pieces when
     * the budget is smaller than one. */
    if (ctx->max_response_bytes < WS_CHUNK + WS_CHUNK_FRAMING)
        ws_reader_set_piece(g->r,
                            ctx->max_response_bytes - WS_CHUNK_FRAMING);
    if (artifact_to_pb(call, &a, &pb) == 0) {
        first.part_case = REEL__V1__GET_ARTIFACT_RESPONSE__PART_ARTIFACT;
        first.artifact = &pb.msg;
        API_PACK(reel__v1__get_artifact_response, &first, &buf, &blen);
    }
    if (buf == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL,
                        0);
        get_cleanup(g);
        goto out;
    }
    rpc_call_ref(call);
    g->record = buf;
    g->record_len = blen;
    buf = NULL;
    rpc_call_on_cleanup(call, get_cleanup, g);
    rpc_call_on_drain(call, get_drain, g);
    rpc_call_on_cancel(call, get_cancel, g);
    /* The record now; its completion drains the queue, and the drain
     * sends the first chunk. */
    get_drain(call, g);
    rpc_call_unref(call);
out:
    free(buf);
    free(ns_owned);
    artifact_pb_fini(&pb);
    ws_artifact_fini(&a);
    reel_status_fini(&st);
    reel__v1__get_artifact_request__free_unpacked(in, NULL);
}

/* ---- StatArtifact, ListArtifacts, DeleteArtifact, usage ------------------------- */

static void ws_stat_artifact(rpc_call_t *call, void *arg, const uint8_t *req,
                             size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__StatArtifactRequest *in =
        reel__v1__stat_artifact_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    ws_artifact_t a = {0};
    char *ns_owned = NULL;
    const char *ns;

    if (in == NULL) {
        api_bad_request(call, "StatArtifactRequest");
        return;
    }
    if (ns_in(call, ctx, "namespace", in->namespace_, &ns_owned, &ns,
              &st) != REEL_OK ||
        ws_stat(ctx->ws, ns, strlen(ns), in->key, strlen(in->key),
                in->version, &a, &st) != REEL_OK)
        finish_status(call, &st);
    else
        finish_artifact(call, &a);
    free(ns_owned);
    ws_artifact_fini(&a);
    reel_status_fini(&st);
    reel__v1__stat_artifact_request__free_unpacked(in, NULL);
}

static size_t list_item_size(void *arg, const void *elem) {
    artifact_pb_t pb;
    size_t n;

    (void)arg;
    if (artifact_to_pb(NULL, elem, &pb) != 0) {
        artifact_pb_fini(&pb);
        return SIZE_MAX / 2; /* out of memory: ends the page */
    }
    n = api_page_elem_size(reel__v1__artifact__get_packed_size(&pb.msg)) +
        strlen(((const ws_artifact_t *)elem)->key) + 8; /* the cursor */
    artifact_pb_fini(&pb);
    return n;
}

static void ws_list_artifacts(rpc_call_t *call, void *arg, const uint8_t *req,
                              size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__ListArtifactsRequest *in =
        reel__v1__list_artifacts_request__unpack(NULL, len, req);
    Reel__V1__ListArtifactsResponse out =
        REEL__V1__LIST_ARTIFACTS_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    reel_page_t page = api_page(ctx, list_item_size, NULL);
    ws_artifact_t *items = NULL;
    artifact_pb_t *pbs = NULL;
    Reel__V1__Artifact **ptrs = NULL;
    size_t n = 0, blen = 0;
    uint8_t *buf = NULL;
    int more = 0, oom = 0;
    char *ns_owned = NULL;
    const char *ns;

    if (in == NULL) {
        api_bad_request(call, "ListArtifactsRequest");
        return;
    }
    if (ns_in(call, ctx, "namespace", in->namespace_, &ns_owned, &ns,
              &st) != REEL_OK ||
        ws_list(ctx->ws, ns, strlen(ns), in->prefix,
                strlen(in->prefix), in->start_after, strlen(in->start_after),
                in->limit, in->include_deleted, &page, &items, &n, &more,
                &st) != REEL_OK) {
        finish_status(call, &st);
        goto out;
    }
    pbs = calloc(n ? n : 1, sizeof(*pbs));
    ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    oom = pbs == NULL || ptrs == NULL;
    for (size_t i = 0; !oom && i < n; i++) {
        oom = artifact_to_pb(call, &items[i], &pbs[i]) != 0;
        ptrs[i] = &pbs[i].msg;
    }
    if (!oom) {
        out.n_artifacts = n;
        out.artifacts = ptrs;
        out.more = more;
        out.next_start_after = n > 0 ? (char *)items[n - 1].key : "";
        API_PACK(reel__v1__list_artifacts_response, &out, &buf, &blen);
    }
    api_finish_packed(call, buf, blen);
out:
    for (size_t i = 0; i < n; i++) {
        if (pbs != NULL)
            artifact_pb_fini(&pbs[i]);
        ws_artifact_fini(&items[i]);
    }
    free(items);
    free(pbs);
    free(ptrs);
    free(ns_owned);
    reel_status_fini(&st);
    reel__v1__list_artifacts_request__free_unpacked(in, NULL);
}

static void delete_done(void *arg, ws_write_result_t *res) {
    rpc_call_t *call = arg;
    Reel__V1__DeleteArtifactResponse out =
        REEL__V1__DELETE_ARTIFACT_RESPONSE__INIT;
    artifact_pb_t pb = {0};
    uint8_t *buf = NULL;
    size_t len = 0;

    if (res->status.code != REEL_OK) {
        finish_status(call, &res->status);
        return;
    }
    out.existed = res->existed;
    if (res->artifact.version == 0 ||
        artifact_to_pb(call, &res->artifact, &pb) == 0) {
        if (res->artifact.version != 0)
            out.artifact = &pb.msg;
        API_PACK(reel__v1__delete_artifact_response, &out, &buf, &len);
    }
    artifact_pb_fini(&pb);
    api_finish_packed(call, buf, len);
}

static void ws_delete_artifact(rpc_call_t *call, void *arg, const uint8_t *req,
                               size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__DeleteArtifactRequest *in =
        reel__v1__delete_artifact_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    ws_precond_t pc;
    char *ns_owned = NULL;
    const char *ns;

    if (in == NULL) {
        api_bad_request(call, "DeleteArtifactRequest");
        return;
    }
    if (precond_from_pb(in->precondition, &pc) != 0)
        reel_status_set(&st, REEL_INVALID_ARGUMENT,
                        "precondition: unknown value %d",
                        (int)in->precondition);
    else if (ns_in(call, ctx, "namespace", in->namespace_, &ns_owned, &ns,
                   &st) == REEL_OK)
        ws_delete_submit(ctx->ws, ns, strlen(ns), in->key, strlen(in->key),
                         pc, in->expected_version, delete_done, call, &st);
    if (st.code != REEL_OK)
        finish_status(call, &st);
    free(ns_owned);
    reel_status_fini(&st);
    reel__v1__delete_artifact_request__free_unpacked(in, NULL);
}

static void ws_get_usage(rpc_call_t *call, void *arg, const uint8_t *req,
                         size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__GetWorkspaceUsageRequest *in =
        reel__v1__get_workspace_usage_request__unpack(NULL, len, req);
    Reel__V1__GetWorkspaceUsageResponse out =
        REEL__V1__GET_WORKSPACE_USAGE_RESPONSE__INIT;
    uint8_t *buf;
    size_t blen;

    if (in == NULL) {
        api_bad_request(call, "GetWorkspaceUsageRequest");
        return;
    }
    reel__v1__get_workspace_usage_request__free_unpacked(in, NULL);
    ws_usage(ctx->ws, &out.chunk_bytes, &out.staged_uploads);
    API_PACK(reel__v1__get_workspace_usage_response, &out, &buf, &blen);
    api_finish_packed(call, buf, blen);
}

/* ---- WatchArtifacts ------------------------------------------------------------ */

typedef struct watch_call {
    rpc_call_t *call;
    ws_watch_t *watch;
} watch_call_t;

/* Writer or pump thread. */
static int watch_deliver(void *arg, ws_watch_kind_t kind, uint64_t revision,
                         const ws_artifact_t *a) {
    watch_call_t *wc = arg;
    Reel__V1__ArtifactEvent ev = REEL__V1__ARTIFACT_EVENT__INIT;
    artifact_pb_t pb = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    int full = 1;

    ev.type = (Reel__V1__ArtifactEvent__Type)kind;
    ev.revision = revision;
    if (a == NULL || artifact_to_pb(wc->call, a, &pb) == 0) {
        if (a != NULL)
            ev.artifact = &pb.msg;
        API_PACK(reel__v1__artifact_event, &ev, &buf, &len);
    }
    /* Out of memory counts as full: the watch reads it again from
     * storage on its next pump. */
    if (buf != NULL)
        full = rpc_call_send(wc->call, buf, len) != REEL_OK;
    free(buf);
    artifact_pb_fini(&pb);
    return full;
}

static void watch_end(void *arg, const reel_status_t *st) {
    watch_call_t *wc = arg;

    ws_watch_cancel(wc->watch);
    finish_status(wc->call, st);
}

static void watch_cancel(rpc_call_t *call, void *arg, reel_code_t why) {
    watch_call_t *wc = arg;

    ws_watch_cancel(wc->watch);
    api_finish_cancelled(call, why);
}

static void watch_drain(rpc_call_t *call, void *arg) {
    watch_call_t *wc = arg;

    (void)call;
    ws_watch_pump(wc->watch);
}

/* A queue that still holds messages will drain, and its drain pumps. */
static void watch_woken(rpc_call_t *call, void *arg) {
    if (rpc_call_queued(call) == 0)
        watch_drain(call, arg);
}

/* Under the feed's locks: only posts. */
static void watch_wake(void *arg) {
    watch_call_t *wc = arg;

    rpc_call_wake(wc->call, watch_woken, wc);
}

static void watch_cleanup(void *arg) {
    watch_call_t *wc = arg;

    ws_watch_destroy(wc->watch);
    free(wc);
}

static const ws_watch_sink_t watch_sink = {
    .deliver = watch_deliver, .end = watch_end, .wake = watch_wake};

static void ws_watch_artifacts(rpc_call_t *call, void *arg,
                               const uint8_t *req, size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__WatchArtifactsRequest *in =
        reel__v1__watch_artifacts_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    ws_watch_args_t a = {0};
    watch_call_t *wc;
    char *ns_owned = NULL;
    const char *ns;

    if (in == NULL) {
        api_bad_request(call, "WatchArtifactsRequest");
        return;
    }
    if (ns_in(call, ctx, "namespace", in->namespace_, &ns_owned, &ns, &st) !=
        REEL_OK) {
        finish_status(call, &st);
        goto out;
    }
    if ((wc = calloc(1, sizeof(*wc))) == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL,
                        0);
        goto out;
    }
    wc->call = call;
    a.ns = ns, a.ns_len = strlen(ns);
    a.prefix = in->prefix, a.prefix_len = strlen(in->prefix);
    a.start = (ws_watch_start_t)in->start;
    a.from_revision = in->from_revision;
    if (ws_watch_create(ctx->ws, &a, &watch_sink, wc, &wc->watch, &st) !=
        REEL_OK) {
        finish_status(call, &st);
        free(wc);
        goto out;
    }
    rpc_call_ref(call);
    rpc_call_on_cleanup(call, watch_cleanup, wc);
    rpc_call_on_drain(call, watch_drain, wc);
    rpc_call_on_cancel(call, watch_cancel, wc);
    ws_watch_pump(wc->watch);
    rpc_call_unref(call);
out:
    free(ns_owned);
    reel_status_fini(&st);
    reel__v1__watch_artifacts_request__free_unpacked(in, NULL);
}

static int api_workspace_register(rpc_server_t *srv, api_ctx_t *ctx) {
    static const struct {
        const char *path;
        rpc_kind_t kind;
        rpc_handler_fn fn;
        const ProtobufCMessageDescriptor *input;
    } methods[] = {
        /* Its messages are checked one by one, as they come. */
        {"/reel.v1.Workspace/PutArtifact", RPC_CLIENT_STREAM, ws_put_artifact,
         NULL},
        {"/reel.v1.Workspace/GetArtifact", RPC_SERVER_STREAM, ws_get_artifact,
         &reel__v1__get_artifact_request__descriptor},
        {"/reel.v1.Workspace/StatArtifact", RPC_UNARY, ws_stat_artifact,
         &reel__v1__stat_artifact_request__descriptor},
        {"/reel.v1.Workspace/ListArtifacts", RPC_UNARY, ws_list_artifacts,
         &reel__v1__list_artifacts_request__descriptor},
        {"/reel.v1.Workspace/DeleteArtifact", RPC_UNARY, ws_delete_artifact,
         &reel__v1__delete_artifact_request__descriptor},
        {"/reel.v1.Workspace/GetWorkspaceUsage", RPC_UNARY, ws_get_usage,
         &reel__v1__get_workspace_usage_request__descriptor},
        {"/reel.v1.Workspace/WatchArtifacts", RPC_SERVER_STREAM,
         ws_watch_artifacts, &reel__v1__watch_artifacts_request__descriptor},
    };

    for (size_t i = 0; i < sizeof(methods) / sizeof(*methods); i++) {
        rpc_method_t m = {methods[i].path, methods[i].kind, methods[i].fn, ctx,
                          methods[i].input};

        if (rpc_server_add_method(srv, &m) != 0)
            return -1;
    }
    return 0;
}

int api_workspace_check_request_budget(size_t budget, char *why,
                                       size_t whylen) {
    if (budget >= WS_CHUNK + WS_CHUNK_FRAMING)
        return 0;
    snprintf(why, whylen,
             "--max-message-bytes %zu cannot carry one workspace chunk (%zu "
             "bytes with its framing): an upload sends up to 1 MiB a "
             "message; raise it to at least that",
             budget, WS_CHUNK + WS_CHUNK_FRAMING);
    return -1;
}

int api_workspace_check_budget(size_t budget, const ws_limits_t *lim,
                               char *why, size_t whylen) {
    size_t ns = lim->max_namespace ? lim->max_namespace
                                   : WS_DEFAULT_MAX_NAMESPACE;
    size_t key = lim->max_key ? lim->max_key : WS_DEFAULT_MAX_KEY;
    /* Each field's tag and length (at most 11 bytes), the strings, each
     * metadata entry's framing, the digest; then, at most, the key again
     * (a page's cursor, a WAL subject) and the reserve of a page. */
    size_t record = 16 * 11 + ns + key + WS_MAX_CONTENT_TYPE +
                    WS_MAX_METADATA_BYTES + WS_MAX_METADATA * 8 +
                    WS_SHA256_LEN;
    size_t need = record + key + ns + 16 + API_PAGE_RESERVE;

    if (need <= budget)
        return 0;
    snprintf(why, whylen,
             "--max-response-bytes %zu cannot hold one artifact record: "
             "with --kv-max-namespace-bytes %zu and --kv-max-key-bytes %zu "
             "and up to %d bytes of metadata, one can be %zu bytes encoded; "
             "raise --max-response-bytes",
             budget, ns, key, WS_MAX_METADATA_BYTES, need);
    return -1;
}

/* ---- The module ---------------------------------------------------------------- */

/* artifact.<namespace>.<key, '/' read as '.'> with the record. */
static reel_code_t ws_module_encode(const store_change_t *c, char **subject,
                                    uint8_t **bytes, size_t *len,
                                    reel_status_t *st) {
    Reel__V1__Event ev = REEL__V1__EVENT__INIT;
    artifact_pb_t pb;
    ws_artifact_t a;
    char *skey = NULL;
    int r = ws_change_decode(c, &a);
    reel_code_t rc;

    if (r != 1)
        return api_change_unknown(c, r, st);
    if (artifact_to_pb(NULL, &a, &pb) != 0 ||
        (skey = malloc(strlen(a.key) + 1)) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    ws_subject_key(a.key, strlen(a.key), skey);
    ev.type = REEL__V1__EVENT__TYPE__ARTIFACT_CHANGED;
    ev.body_case = REEL__V1__EVENT__BODY_ARTIFACT;
    ev.artifact = &pb.msg;
    rc = api_event_pack(c, &ev, subject, bytes, len, st, "artifact.%s.%s",
                        a.ns, skey);
out:
    free(skey);
    artifact_pb_fini(&pb);
    ws_artifact_fini(&a);
    return rc;
}

static reel_code_t ws_module_start(api_ctx_t *ctx, reel_status_t *st) {
    /* A tenant's uploads are capped apart: its namespaces share its
     * prefix. */
    ctx->limits.ws.ns_scope = api_tenant_prefix_len;
    if (ctx->limits.upload_idle_ms <= 0)
        ctx->limits.upload_idle_ms = API_DEFAULT_UPLOAD_IDLE_MS;
    return ws_create(ctx->store, &ctx->limits.ws, &ctx->ws, st);
}

/* Once every module has started; emits no change. */
static reel_code_t ws_module_ready(api_ctx_t *ctx, reel_status_t *st) {
    return ws_upgrade(ctx->ws, store_format_opened(ctx->store), st);
}

static void ws_module_stop(api_ctx_t *ctx) { ws_stop(ctx->ws); }

static void ws_module_destroy(api_ctx_t *ctx) {
    ws_destroy(ctx->ws);
    ctx->ws = NULL;
}

static void ws_module_publish(api_ctx_t *ctx, const store_change_t *changes,
                              size_t n) {
    if (ctx->ws != NULL)
        ws_publish(ctx->ws, changes, n);
}

static const char *const ws_subjects[] = {"artifact", NULL};

const api_module_t api_workspace_module = {
    .name = "workspace",
    .id = WS_MODULE_ID,
    .cfs = ws_cfs,
    .subjects = ws_subjects,
    .serve = api_workspace_register,
    .start = ws_module_start,
    .ready = ws_module_ready,
    .stop = ws_module_stop,
    .destroy = ws_module_destroy,
    .encode = ws_module_encode,
    .publish = ws_module_publish,
};
