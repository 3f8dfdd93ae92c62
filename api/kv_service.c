/*
 * api/kv_service.c: reel.v1.KV over the kv module.
 *
 * Writes are asynchronous: the handler validates and queues the write, and
 * the answer is sent from the store's writer thread once the write is
 * durable. Reads run on the poller thread. WatchValue wires a kv watch to
 * the call: the watch delivers into the call's bounded send queue; when the
 * queue is full the watch stops and the call's drain hook pumps it again,
 * so a slow client makes the watch read from storage instead of piling up
 * memory. WatchValues puts many watches on one call. WatchValueBatches and
 * WatchValuesBatches are the same streams with each event framed as an
 * element of a repeated field, merged into the message still queued.
 *
 * Tenants (api/tenant.h): each handler turns the namespace a call gives
 * into its stored form and every namespace it answers with back into the
 * call's own; a watch of a tenant with a prefix encodes its events for
 * itself instead of sharing kv's encoding with other watchers.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reel/v1/kv.pb-c.h"
#include "api/convert.h"
#include "api/page.h"
#include "api/reply.h"
#include "api/services.h"
#include "api/tenant.h"
#include "api/wire.h"
#include "kv/kv.h"

/* ---- Conversions ---------------------------------------------------------- */

/* The pb structs point into e: they are valid while e is. */
static void entry_to_pb(const kv_entry_t *e, Reel__V1__Entry *pb) {
    reel__v1__entry__init(pb);
    pb->namespace_ = (char *)e->ns;
    pb->key = (char *)e->key;
    pb->value = (char *)e->value;
    pb->version = e->version;
    pb->deleted = e->deleted;
    pb->revision = e->revision;
    pb->updated_at_ms = e->updated_at_ms;
    pb->writer = (char *)e->writer;
}

/* entry_to_pb() with the namespace as the call's tenant sees it. */
static void entry_to_pb_for(rpc_call_t *call, const kv_entry_t *e,
                            Reel__V1__Entry *pb) {
    entry_to_pb(e, pb);
    pb->namespace_ = (char *)api_tenant_name_out(call, pb->namespace_);
}

/* The stored form of a request's namespace; *owned is what to free. On
 * error the call is finished. */
static int ns_in(rpc_call_t *call, api_ctx_t *ctx, const char *field,
                 const char *ns, const char **out, char **owned) {
    reel_status_t st = REEL_STATUS_INIT;

    if (api_tenant_charset_in(call, field, ns, ctx->limits.kv.max_namespace,
                              "--kv-max-namespace-bytes", KV_NAMESPACE_CHARS,
                              owned, out, &st) != REEL_OK) {
        rpc_call_finish_status(call, &st);
        reel_status_fini(&st);
        return -1;
    }
    return 0;
}

void api_value_event_to_pb(const kv_event_t *ev, Reel__V1__ValueEvent *pb) {
    reel__v1__value_event__init(pb);
    pb->type = (Reel__V1__ValueEvent__Type)ev->type;
    pb->namespace_ = (char *)(ev->ns ? ev->ns : "");
    pb->key = (char *)(ev->key ? ev->key : "");
    pb->value = (char *)(ev->value ? ev->value : "");
    pb->version = ev->version;
    pb->prev_value = (char *)(ev->prev_value ? ev->prev_value : "");
    pb->prev_version = ev->prev_version;
    pb->deleted = ev->deleted;
    pb->revision = ev->revision;
    pb->ts_ms = ev->ts_ms;
    pb->writer = (char *)(ev->writer ? ev->writer : "");
}

static int precond_from_pb(Reel__V1__Precondition p, kv_precond_t *out) {
    switch (p) {
    case REEL__V1__PRECONDITION__PRECONDITION_NONE:
        *out = KV_PRECOND_NONE;
        return 0;
    case REEL__V1__PRECONDITION__PRECONDITION_ABSENT:
        *out = KV_PRECOND_ABSENT;
        return 0;
    case REEL__V1__PRECONDITION__PRECONDITION_VERSION:
        *out = KV_PRECOND_VERSION;
        return 0;
    default:
        return -1;
    }
}

/* ---- SetValue, DeleteValue -------------------------------------------- */

static void set_done(void *arg, kv_write_result_t *res) {
    rpc_call_t *call = arg;
    Reel__V1__SetValueResponse out = REEL__V1__SET_VALUE_RESPONSE__INIT;
    Reel__V1__Entry entry;
    uint8_t *buf;
    size_t len;

    if (res->status.code != REEL_OK) {
        rpc_call_finish_status(call, &res->status);
        return;
    }
    entry_to_pb_for(call, &res->entry, &entry);
    out.entry = &entry;
    out.prev_version = res->prev_version;
    API_PACK(reel__v1__set_value_response, &out, &buf, &len);
    api_finish_packed(call, buf, len);
}

static void delete_done(void *arg, kv_write_result_t *res) {
    rpc_call_t *call = arg;
    Reel__V1__DeleteValueResponse out = REEL__V1__DELETE_VALUE_RESPONSE__INIT;
    Reel__V1__Entry entry;
    uint8_t *buf;
    size_t len;

    if (res->status.code != REEL_OK) {
        rpc_call_finish_status(call, &res->status);
        return;
    }
    out.existed = res->existed;
    if (res->entry.version != 0) { /* the tombstone, new or already there */
        entry_to_pb_for(call, &res->entry, &entry);
        out.entry = &entry;
    }
    API_PACK(reel__v1__delete_value_response, &out, &buf, &len);
    api_finish_packed(call, buf, len);
}

static void submit(rpc_call_t *call, kv_t *kv, const kv_write_args_t *a,
                   kv_write_done_fn done) {
    reel_status_t st = REEL_STATUS_INIT;

    if (kv_write_submit(kv, a, done, call, &st) != REEL_OK)
        rpc_call_finish_status(call, &st);
    reel_status_fini(&st);
}

static void kv_set_value(rpc_call_t *call, void *arg, const uint8_t *req,
                         size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__SetValueRequest *in =
        reel__v1__set_value_request__unpack(NULL, len, req);
    kv_write_args_t a = {0};
    char *owned = NULL;

    if (in == NULL) {
        api_bad_request(call, "SetValueRequest");
        return;
    }
    if (ns_in(call, ctx, "namespace", in->namespace_, &a.ns, &owned) != 0)
        goto out;
    a.ns_len = strlen(a.ns);
    a.key = in->key, a.key_len = strlen(in->key);
    a.value = in->value, a.value_len = strlen(in->value);
    a.writer = in->writer, a.writer_len = strlen(in->writer);
    a.expected_version = in->expected_version;
    if (precond_from_pb(in->precondition, &a.precond) != 0)
        rpc_call_finish(call, REEL_INVALID_ARGUMENT,
                        "precondition: unknown value", NULL, 0);
    else
        submit(call, ctx->kv, &a, set_done);
out:
    free(owned);
    reel__v1__set_value_request__free_unpacked(in, NULL);
}

static void kv_delete_value(rpc_call_t *call, void *arg, const uint8_t *req,
                            size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__DeleteValueRequest *in =
        reel__v1__delete_value_request__unpack(NULL, len, req);
    kv_write_args_t a = {0};
    char *owned = NULL;

    if (in == NULL) {
        api_bad_request(call, "DeleteValueRequest");
        return;
    }
    a.is_delete = 1;
    if (ns_in(call, ctx, "namespace", in->namespace_, &a.ns, &owned) != 0)
        goto out;
    a.ns_len = strlen(a.ns);
    a.key = in->key, a.key_len = strlen(in->key);
    a.writer = in->writer, a.writer_len = strlen(in->writer);
    a.expected_version = in->expected_version;
    if (precond_from_pb(in->precondition, &a.precond) != 0)
        rpc_call_finish(call, REEL_INVALID_ARGUMENT,
                        "precondition: unknown value", NULL, 0);
    else
        submit(call, ctx->kv, &a, delete_done);
out:
    free(owned);
    reel__v1__delete_value_request__free_unpacked(in, NULL);
}

/* ---- Reads ---------------------------------------------------------------- */

/* An entry's share of a ListValues response: the entry, and its key once
 * more, since the last one's key is also next_start_after. */
static size_t list_entry_size(void *arg, const void *elem) {
    const kv_entry_t *e = elem;
    Reel__V1__Entry pb;

    (void)arg;
    entry_to_pb(e, &pb);
    return api_page_elem_size(reel__v1__entry__get_packed_size(&pb)) +
           api_page_elem_size(e->key_len);
}

static size_t history_event_size(void *arg, const void *elem) {
    Reel__V1__ValueEvent pb;

    (void)arg;
    api_value_event_to_pb(elem, &pb);
    return api_page_elem_size(reel__v1__value_event__get_packed_size(&pb));
}

static void kv_get_value(rpc_call_t *call, void *arg, const uint8_t *req,
                         size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__GetValueRequest *in =
        reel__v1__get_value_request__unpack(NULL, len, req);
    Reel__V1__GetValueResponse out = REEL__V1__GET_VALUE_RESPONSE__INIT;
    Reel__V1__Entry entry;
    reel_status_t st = REEL_STATUS_INIT;
    kv_entry_t e;
    reel_code_t rc;
    uint8_t *buf;
    size_t blen;
    const char *ns;
    char *owned = NULL;

    if (in == NULL) {
        api_bad_request(call, "GetValueRequest");
        return;
    }
    if (ns_in(call, ctx, "namespace", in->namespace_, &ns, &owned) != 0) {
        reel__v1__get_value_request__free_unpacked(in, NULL);
        return;
    }
    rc = kv_get(ctx->kv, ns, strlen(ns), in->key, strlen(in->key), &e, &st);
    free(owned);
    reel__v1__get_value_request__free_unpacked(in, NULL);
    if (rc != REEL_OK && rc != REEL_NOT_FOUND) {
        rpc_call_finish_status(call, &st);
        reel_status_fini(&st);
        return;
    }
    out.found = rc == REEL_OK;
    if (e.version != 0) { /* live, or a tombstone */
        entry_to_pb_for(call, &e, &entry);
        out.entry = &entry;
    }
    API_PACK(reel__v1__get_value_response, &out, &buf, &blen);
    kv_entry_fini(&e);
    reel_status_fini(&st);
    api_finish_packed(call, buf, blen);
}

static void kv_list_values(rpc_call_t *call, void *arg, const uint8_t *req,
                           size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__ListValuesRequest *in =
        reel__v1__list_values_request__unpack(NULL, len, req);
    Reel__V1__ListValuesResponse out = REEL__V1__LIST_VALUES_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    reel_page_t page = api_page(ctx, list_entry_size, NULL);
    kv_list_args_t a = {0};
    Reel__V1__Entry *pbs = NULL, **ptrs = NULL;
    kv_entry_t *es = NULL;
    size_t n = 0, blen;
    uint8_t *buf = NULL;
    int more = 0;
    char *owned = NULL;

    if (in == NULL) {
        api_bad_request(call, "ListValuesRequest");
        return;
    }
    if (ns_in(call, ctx, "namespace", in->namespace_, &a.ns, &owned) != 0)
        goto out;
    a.ns_len = strlen(a.ns);
    a.prefix = in->prefix, a.prefix_len = strlen(in->prefix);
    a.start_after = in->start_after, a.start_after_len = strlen(in->start_after);
    a.limit = in->limit;
    a.include_deleted = in->include_deleted;
    a.page = &page;
    if (kv_list(ctx->kv, &a, &es, &n, &more, &st) != REEL_OK) {
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
        entry_to_pb_for(call, &es[i], &pbs[i]);
        ptrs[i] = &pbs[i];
    }
    out.n_entries = n;
    out.entries = ptrs;
    out.more = more;
    out.next_start_after = n > 0 ? (char *)es[n - 1].key : "";
    API_PACK(reel__v1__list_values_response, &out, &buf, &blen);
    api_finish_packed(call, buf, blen);
out:
    for (size_t i = 0; i < n; i++)
        kv_entry_fini(&es[i]);
    free(es);
    free(pbs);
    free(ptrs);
    free(owned);
    reel_status_fini(&st);
    reel__v1__list_values_request__free_unpacked(in, NULL);
}

static void kv_value_history(rpc_call_t *call, void *arg, const uint8_t *req,
                             size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__ValueHistoryRequest *in =
        reel__v1__value_history_request__unpack(NULL, len, req);
    Reel__V1__ValueHistoryResponse out =
        REEL__V1__VALUE_HISTORY_RESPONSE__INIT;
    reel_status_t st = REEL_STATUS_INIT;
    reel_page_t page = api_page(ctx, history_event_size, NULL);
    Reel__V1__ValueEvent *pbs = NULL, **ptrs = NULL;
    kv_event_t *evs = NULL;
    size_t n = 0, blen;
    uint8_t *buf = NULL;
    int more = 0;
    const char *ns;
    char *owned = NULL;

    if (in == NULL) {
        api_bad_request(call, "ValueHistoryRequest");
        return;
    }
    if (ns_in(call, ctx, "namespace", in->namespace_, &ns, &owned) != 0)
        goto out;
    if (kv_history(ctx->kv, ns, strlen(ns), in->key,
                   strlen(in->key), in->from_version, in->limit, &page, &evs,
                   &n, &more, &st) != REEL_OK) {
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
        api_value_event_to_pb(&evs[i], &pbs[i]);
        pbs[i].namespace_ =
            (char *)api_tenant_name_out(call, pbs[i].namespace_);
        ptrs[i] = &pbs[i];
    }
    out.n_events = n;
    out.events = ptrs;
    out.more = more;
    out.next_from_version = n > 0 ? evs[n - 1].version : in->from_version;
    API_PACK(reel__v1__value_history_response, &out, &buf, &blen);
    api_finish_packed(call, buf, blen);
out:
    for (size_t i = 0; i < n; i++)
        kv_event_fini(&evs[i]);
    free(evs);
    free(pbs);
    free(ptrs);
    free(owned);
    reel_status_fini(&st);
    reel__v1__value_history_request__free_unpacked(in, NULL);
}

/* ---- WatchValue ---------------------------------------------------------- */

typedef struct watch_call {
    rpc_call_t *call;
    kv_watch_t *watch;
    int batched; /* WatchValueBatches: events are ValueEventBatch.events */
    int scoped;  /* a tenant with a prefix: events encoded for this call */
} watch_call_t;

/* Encodes ev once into the cache kv shares among the watchers it reaches. */
static int watch_deliver_encode(const kv_event_t *ev, kv_sink_cache_t *c) {
    Reel__V1__ValueEvent pb;

    api_value_event_to_pb(ev, &pb);
    c->len = reel__v1__value_event__get_packed_size(&pb);
    c->bytes = malloc(c->len ? c->len : 1);
    if (c->bytes == NULL)
        return -1;
    reel__v1__value_event__pack(&pb, c->bytes);
    return 0;
}

/*
 * A tenant's watch sees its namespace without its prefix: its own
 * encoding, in *own (the caller frees own->bytes), instead of kv's shared
 * one. Returns the encoding to send, or NULL out of memory.
 */
static const kv_sink_cache_t *encode_for(rpc_call_t *call, int scoped,
                                         const kv_event_t *ev,
                                         kv_sink_cache_t *cache,
                                         kv_sink_cache_t *own) {
    Reel__V1__ValueEvent pb;

    if (!scoped) {
        if (cache->bytes == NULL && watch_deliver_encode(ev, cache) != 0)
            return NULL;
        return cache;
    }
    api_value_event_to_pb(ev, &pb);
    pb.namespace_ = (char *)api_tenant_name_out(call, pb.namespace_);
    own->len = reel__v1__value_event__get_packed_size(&pb);
    if ((own->bytes = malloc(own->len ? own->len : 1)) == NULL)
        return NULL;
    reel__v1__value_event__pack(&pb, own->bytes);
    return own;
}

/* Writer or pump thread: encode once per event, share across watchers. */
static int watch_deliver(void *arg, const kv_event_t *ev,
                         kv_sink_cache_t *shared) {
    watch_call_t *wc = arg;
    kv_sink_cache_t own = {0};
    const kv_sink_cache_t *cache =
        encode_for(wc->call, wc->scoped, ev, shared, &own);
    int rc;

    if (cache == NULL)
        return 1;
    rc = wc->batched ? api_send_element(wc->call, NULL, 0, cache->bytes,
                                        cache->len) != REEL_OK
                     : rpc_call_send(wc->call, cache->bytes, cache->len) !=
                           REEL_OK;
    free(own.bytes);
    return rc;
}

static void watch_end(void *arg, const reel_status_t *st) {
    watch_call_t *wc = arg;

    kv_watch_cancel(wc->watch);
    rpc_call_finish_status(wc->call, st);
}

static void watch_cancel(rpc_call_t *call, void *arg, reel_code_t why) {
    watch_call_t *wc = arg;

    kv_watch_cancel(wc->watch);
    api_finish_cancelled(call, why);
}

static void watch_drain(rpc_call_t *call, void *arg) {
    watch_call_t *wc = arg;

    (void)call;
    kv_watch_pump(wc->watch);
}

/* Poller thread, woken: a queue that still holds messages will drain, and
 * its drain pumps; one that holds none has no drain coming. */
static void watch_woken(rpc_call_t *call, void *arg) {
    if (rpc_call_queued(call) == 0)
        watch_drain(call, arg);
}

/* Under kv's locks (the watch fell out of live delivery): only posts. The
 * call is alive: its cleanup destroys the watch, which waits for them. */
static void watch_wake(void *arg) {
    watch_call_t *wc = arg;

    rpc_call_wake(wc->call, watch_woken, wc);
}

static void watch_cleanup(void *arg) {
    watch_call_t *wc = arg;

    kv_watch_destroy(wc->watch);
    free(wc);
}

static const kv_watch_sink_t watch_sink = {.deliver = watch_deliver,
                                           .end = watch_end,
                                           .wake = watch_wake};

static void watch_value_start(rpc_call_t *call, api_ctx_t *ctx,
                              const uint8_t *req, size_t len, int batched) {
    Reel__V1__WatchValueRequest *in =
        reel__v1__watch_value_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    kv_watch_args_t a = {0};
    watch_call_t *wc;
    char *owned = NULL;

    if (in == NULL) {
        api_bad_request(call, "WatchValueRequest");
        return;
    }
    if (ns_in(call, ctx, "namespace", in->namespace_, &a.ns, &owned) != 0)
        goto out;
    a.ns_len = strlen(a.ns);
    a.key = in->key, a.key_len = strlen(in->key);
    a.start = (kv_watch_start_t)in->start;
    a.from_version = in->from_version;
    a.from_revision = in->from_revision;
    wc = calloc(1, sizeof(*wc));
    if (wc == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        goto out;
    }
    wc->call = call;
    wc->batched = batched;
    wc->scoped = api_tenant_scoped(call) != NULL;
    if (kv_watch_create(ctx->kv, &a, &watch_sink, wc, &wc->watch, &st) !=
        REEL_OK) {
        free(wc);
        rpc_call_finish_status(call, &st);
        goto out;
    }
    /* From here the call may end on another thread at any moment; the ref
     * keeps it (and so wc) alive until this handler is done with it. */
    rpc_call_ref(call);
    rpc_call_on_cleanup(call, watch_cleanup, wc);
    rpc_call_on_drain(call, watch_drain, wc);
    rpc_call_on_cancel(call, watch_cancel, wc);
    kv_watch_pump(wc->watch);
    rpc_call_unref(call);
out:
    free(owned);
    reel_status_fini(&st);
    reel__v1__watch_value_request__free_unpacked(in, NULL);
}

static void kv_watch_value(rpc_call_t *call, void *arg, const uint8_t *req,
                           size_t len) {
    watch_value_start(call, arg, req, len, 0);
}

static void kv_watch_value_batches(rpc_call_t *call, void *arg,
                                   const uint8_t *req, size_t len) {
    watch_value_start(call, arg, req, len, 1);
}

/* ---- WatchValues ---------------------------------------------------------- */

#define MAX_WATCHES_PER_STREAM API_MAX_WATCHES_PER_STREAM

typedef struct multi_watch multi_watch_t;

typedef struct multi_item {
    multi_watch_t *m;
    uint32_t index;
    kv_watch_t *watch;
} multi_item_t;

struct multi_watch {
    rpc_call_t *call;
    int batched; /* WatchValuesBatches */
    int scoped;  /* a tenant with a prefix: events encoded for this call */
    size_t n;
    atomic_size_t next; /* where the next drain starts: no watch starves */
    multi_item_t items[];
};

/*
 * WatchValuesEvent{watch = index, also = [...], event = <ValueEvent bytes>}
 * for n watches of the stream (n > 1 only when coalesced): watch = the
 * first, also = the rest (packed). Framed by hand around the event's shared
 * encoding, so each watcher adds a few bytes instead of encoding the event
 * again; protobuf fields may come in any order, so that encoding stays the
 * body. WatchValuesBatches sends it as one element of
 * WatchValuesEventBatch.events.
 */
static int multi_deliver_group(void *const *args, size_t n,
                               const kv_event_t *ev, kv_sink_cache_t *shared) {
    multi_item_t *first = args[0];
    uint8_t small[256], *head = small;
    size_t cap = 24 + 5 * n, len = 0, packed = 0;
    kv_sink_cache_t own = {0};
    const kv_sink_cache_t *cache =
        encode_for(first->m->call, first->m->scoped, ev, shared, &own);
    int rc;

    if (cache == NULL)
        return 1;
    if (cap > sizeof(small) && (head = malloc(cap)) == NULL) {
        free(own.bytes);
        return 1;
    }
    if (first->index > 0) {
        head[len++] = 0x08; /* field 1, varint */
        len += api_wire_put_varint(head + len, first->index);
    }
    for (size_t i = 1; i < n; i++)
        packed += api_wire_varint_size(((multi_item_t *)args[i])->index);
    if (packed > 0) {
        head[len++] = 0x1a; /* field 3, packed */
        len += api_wire_put_varint(head + len, packed);
        for (size_t i = 1; i < n; i++)
            len += api_wire_put_varint(head + len,
                                       ((multi_item_t *)args[i])->index);
    }
    head[len++] = 0x12; /* field 2, length-delimited */
    len += api_wire_put_varint(head + len, cache->len);
    if (first->m->batched)
        rc = api_send_element(first->m->call, head, len, cache->bytes,
                              cache->len);
    else
        rc = rpc_call_send2(first->m->call, head, len, cache->bytes,
                            cache->len);
    if (head != small)
        free(head);
    free(own.bytes);
    return rc == REEL_OK ? 0 : 1;
}

/* One watch's event: the same framing, for it alone. */
static int multi_deliver(void *arg, const kv_event_t *ev,
                         kv_sink_cache_t *cache) {
    return multi_deliver_group(&arg, 1, ev, cache);
}

static void multi_cancel_all(multi_watch_t *m) {
    for (size_t i = 0; i < m->n; i++)
        kv_watch_cancel(m->items[i].watch);
}

/* One watch must end: the stream ends with its status, naming it. */
static void multi_end(void *arg, const reel_status_t *st) {
    multi_item_t *it = arg;
    char msg[1024];

    multi_cancel_all(it->m);
    snprintf(msg, sizeof(msg), "watches[%u]: %s", (unsigned)it->index,
             reel_status_message(st));
    rpc_call_finish(it->m->call, st->code, msg, NULL, 0);
}

static void multi_cancel(rpc_call_t *call, void *arg, reel_code_t why) {
    multi_cancel_all(arg);
    api_finish_cancelled(call, why);
}

/*
 * The queue drained: the watches that stopped for it catch up, in turn,
 * until the queue is half full again; the next drain goes on from there.
 */
static void multi_drain(rpc_call_t *call, void *arg) {
    multi_watch_t *m = arg;
    size_t start = atomic_load(&m->next), k = 0;

    for (; k < m->n && rpc_call_queued(call) < rpc_call_queue_max(call) / 2;
         k++)
        kv_watch_pump(m->items[(start + k) % m->n].watch);
    atomic_store(&m->next, (start + k) % m->n);
}

/* Poller thread, woken: pumps as a drain does (no further than half the
 * queue, so a full queue leaves it to the drain to come). */
static void multi_woken(rpc_call_t *call, void *arg) { multi_drain(call, arg); }

/* Under kv's locks: only posts (see watch_wake). */
static void multi_wake(void *arg) {
    multi_item_t *it = arg;

    rpc_call_wake(it->m->call, multi_woken, it->m);
}

static void multi_cleanup(void *arg) {
    multi_watch_t *m = arg;

    for (size_t i = 0; i < m->n; i++)
        kv_watch_destroy(m->items[i].watch);
    free(m);
}

static const kv_watch_sink_t multi_sink = {
    .deliver = multi_deliver,
    .deliver_group = multi_deliver_group,
    .end = multi_end,
    .wake = multi_wake,
};

static void watch_values_start(rpc_call_t *call, api_ctx_t *ctx,
                               const uint8_t *req, size_t len, int batched) {
    Reel__V1__WatchValuesRequest *in =
        reel__v1__watch_values_request__unpack(NULL, len, req);
    reel_status_t st = REEL_STATUS_INIT;
    multi_watch_t *m = NULL;
    reel_code_t rc;

    if (in == NULL) {
        api_bad_request(call, "WatchValuesRequest");
        return;
    }
    if (in->n_watches == 0 || in->n_watches > MAX_WATCHES_PER_STREAM) {
        char msg[160];

        snprintf(msg, sizeof(msg),
                 "watches: %zu given; a stream holds 1 to %d watches",
                 in->n_watches, MAX_WATCHES_PER_STREAM);
        rpc_call_finish(call, REEL_INVALID_ARGUMENT, msg, NULL, 0);
        goto out;
    }
    m = calloc(1, sizeof(*m) + in->n_watches * sizeof(m->items[0]));
    if (m == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        goto out;
    }
    m->call = call;
    m->batched = batched;
    m->scoped = api_tenant_scoped(call) != NULL;
    for (size_t i = 0; i < in->n_watches; i++) {
        const Reel__V1__WatchValueRequest *w = in->watches[i];
        kv_watch_args_t a = {0};
        char field[48], *owned = NULL;

        snprintf(field, sizeof(field), "watches[%zu].namespace", i);
        if (ns_in(call, ctx, field, w->namespace_, &a.ns, &owned) != 0) {
            multi_cleanup(m);
            goto out;
        }
        a.ns_len = strlen(a.ns);
        a.key = w->key, a.key_len = strlen(w->key);
        a.start = (kv_watch_start_t)w->start;
        a.from_version = w->from_version;
        a.from_revision = w->from_revision;
        a.group = in->coalesce ? m : NULL;
        m->items[i].m = m;
        m->items[i].index = (uint32_t)i;
        rc = kv_watch_create(ctx->kv, &a, &multi_sink, &m->items[i],
                             &m->items[i].watch, &st);
        free(owned);
        if (rc != REEL_OK) {
            char msg[1024];

            snprintf(msg, sizeof(msg), "watches[%zu]: %s", i,
                     reel_status_message(&st));
            rpc_call_finish(call, st.code, msg, NULL, 0);
            multi_cleanup(m);
            goto out;
        }
        m->n++;
    }
    rpc_call_ref(call);
    rpc_call_on_cleanup(call, multi_cleanup, m);
    rpc_call_on_drain(call, multi_drain, m);
    rpc_call_on_cancel(call, multi_cancel, m);
    for (size_t i = 0; i < m->n; i++)
        kv_watch_pump(m->items[i].watch);
    rpc_call_unref(call);
out:
    reel_status_fini(&st);
    reel__v1__watch_values_request__free_unpacked(in, NULL);
}

static void kv_watch_values(rpc_call_t *call, void *arg, const uint8_t *req,
                            size_t len) {
    watch_values_start(call, arg, req, len, 0);
}

static void kv_watch_values_batches(rpc_call_t *call, void *arg,
                                    const uint8_t *req, size_t len) {
    watch_values_start(call, arg, req, len, 1);
}

int api_kv_register(rpc_server_t *srv, api_ctx_t *ctx) {
    static const struct {
        const char *path;
        rpc_kind_t kind;
        rpc_handler_fn fn;
        const ProtobufCMessageDescriptor *input;
    } methods[] = {
        {"/reel.v1.KV/SetValue", RPC_UNARY, kv_set_value,
         &reel__v1__set_value_request__descriptor},
        {"/reel.v1.KV/GetValue", RPC_UNARY, kv_get_value,
         &reel__v1__get_value_request__descriptor},
        {"/reel.v1.KV/DeleteValue", RPC_UNARY, kv_delete_value,
         &reel__v1__delete_value_request__descriptor},
        {"/reel.v1.KV/ListValues", RPC_UNARY, kv_list_values,
         &reel__v1__list_values_request__descriptor},
        {"/reel.v1.KV/ValueHistory", RPC_UNARY, kv_value_history,
         &reel__v1__value_history_request__descriptor},
        {"/reel.v1.KV/WatchValue", RPC_SERVER_STREAM, kv_watch_value,
         &reel__v1__watch_value_request__descriptor},
        {"/reel.v1.KV/WatchValues", RPC_SERVER_STREAM, kv_watch_values,
         &reel__v1__watch_values_request__descriptor},
        {"/reel.v1.KV/WatchValueBatches", RPC_SERVER_STREAM,
         kv_watch_value_batches, &reel__v1__watch_value_request__descriptor},
        {"/reel.v1.KV/WatchValuesBatches", RPC_SERVER_STREAM,
         kv_watch_values_batches, &reel__v1__watch_values_request__descriptor},
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

/* kv.<namespace>.<key> with the transition and the values before and
 * after. */
static reel_code_t kv_module_encode(const store_change_t *c, char **subject,
                                    uint8_t **bytes, size_t *len,
                                    reel_status_t *st) {
    Reel__V1__Event ev = REEL__V1__EVENT__INIT;
    Reel__V1__ValueEvent value;
    kv_event_t kv = {0};
    int r = kv_change_decode(c, &kv);
    reel_code_t rc;

    if (r != 1)
        return api_change_unknown(c, r, st);
    api_value_event_to_pb(&kv, &value);
    ev.type = REEL__V1__EVENT__TYPE__VALUE_CHANGED;
    ev.body_case = REEL__V1__EVENT__BODY_VALUE;
    ev.value = &value;
    rc = api_event_pack(c, &ev, subject, bytes, len, st, "kv.%s.%s", kv.ns,
                        kv.key);
    kv_event_fini(&kv);
    return rc;
}

static reel_code_t kv_module_start(api_ctx_t *ctx, reel_status_t *st) {
    return kv_create(ctx->store, &ctx->limits.kv, &ctx->kv, st);
}

/* Once every module has started; emits no change. */
static reel_code_t kv_module_ready(api_ctx_t *ctx, reel_status_t *st) {
    return kv_upgrade(ctx->kv, store_format_opened(ctx->store), st);
}

/* Its purge writes through the store. */
static void kv_module_stop(api_ctx_t *ctx) { kv_stop(ctx->kv); }

static void kv_module_destroy(api_ctx_t *ctx) {
    kv_destroy(ctx->kv);
    ctx->kv = NULL;
}

static void kv_module_publish(api_ctx_t *ctx, const store_change_t *changes,
                              size_t n) {
    if (ctx->kv != NULL)
        kv_publish(ctx->kv, changes, n);
}

static const char *const kv_subjects[] = {"kv", NULL};

const api_module_t api_kv_module = {
    .name = "kv",
    .id = KV_MODULE_ID,
    .cfs = kv_cfs,
    .subjects = kv_subjects,
    .serve = api_kv_register,
    .start = kv_module_start,
    .ready = kv_module_ready,
    .stop = kv_module_stop,
    .destroy = kv_module_destroy,
    .encode = kv_module_encode,
    .publish = kv_module_publish,
};
