/* fuzz/fuzz_watch_values.c: a WatchValuesRequest's bytes through what
 * KV.WatchValues does before its first event (api/kv_service.c): the wire
 * checks, decoding, the bound on the number of watches, and each watch's
 * creation on a real KV, which validates namespace, key or pattern, start
 * mode and cursors against the store. The store (a fresh data dir, a few
 * keys written at start) lives for the whole run; watches are created,
 * never pumped, and destroyed. A refused watch is INVALID_ARGUMENT or
 * OUT_OF_RANGE (or RESOURCE_EXHAUSTED), with a message, as kv.h says. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reel/v1/kv.pb-c.h"
#include "api/wire.h"
#include "kv/kv.h"
#include "testing/fixture.h"

/* What a stream holds (API_MAX_WATCHES_PER_STREAM in api/page.h). */
#define MAX_WATCHES 10000

static char dir[512];
static store_t *store;
static kv_t *kv;

static void publish(void *arg, const store_change_t *c, size_t n) {
    (void)arg;
    if (kv != NULL)
        kv_publish(kv, c, n);
}

static void close_all(void) {
    kv_stop(kv);
    store_close(store);
    kv_destroy(kv);
    testing_dir_remove(dir);
}

static void must(reel_code_t rc, const reel_status_t *st, const char *what) {
    if (rc != REEL_OK) {
        fprintf(stderr, "fuzz_watch_values: %s: %s\n", what,
                reel_status_message(st));
        abort();
    }
}

static void write_value(const char *ns, const char *key, const char *value) {
    kv_write_args_t a = {0};
    kv_write_result_t res;

    a.ns = ns, a.ns_len = strlen(ns);
    a.key = key, a.key_len = strlen(key);
    a.is_delete = value == NULL;
    a.value = value, a.value_len = value ? strlen(value) : 0;
    a.writer = "fuzz", a.writer_len = 4;
    must(kv_write(kv, &a, &res), &res.status, key);
    kv_write_result_fini(&res);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    store_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;
    kv_limits_t lim = kv_limits_default();

    (void)argc, (void)argv;
    if (testing_dir_make(dir, sizeof(dir), "fuzz-watch") != 0)
        abort();
    o.data_dir = dir;
    o.cfs = (const store_cf_desc_t *const[]){kv_cfs, NULL};
    o.publish = publish;
    must(store_open(&o, &store, &st), &st, "store_open");
    lim.history_keep = 3; /* so a replay can ask for what is trimmed */
    must(kv_create(store, &lim, &kv, &st), &st, "kv_create");
    atexit(close_all);
    /* Versions, a tombstone, trimmed history and keys for patterns. */
    for (int i = 0; i < 5; i++)
        write_value("app", "config", "{\"mode\":\"fast\"}");
    write_value("app", "orders.eu.1", "{\"qty\":2}");
    write_value("app", "orders.us.2", "[1,2]");
    write_value("app", "orders.us.2", NULL);
    write_value("tenant-1:billing", "a", "1");
    return 0;
}

static int deliver(void *arg, const kv_event_t *ev, kv_sink_cache_t *cache) {
    (void)arg, (void)ev, (void)cache;
    return 1;
}

static int deliver_group(void *const *args, size_t n, const kv_event_t *ev,
                         kv_sink_cache_t *cache) {
    (void)args, (void)n, (void)ev, (void)cache;
    return 1;
}

static void end(void *arg, const reel_status_t *st) {
    (void)arg, (void)st;
}

/* As the service's: coalesced watches share deliver_group. Never called:
 * nothing is pumped. */
static const kv_watch_sink_t sink = {
    .deliver = deliver, .deliver_group = deliver_group, .end = end};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const ProtobufCMessageDescriptor *d =
        &reel__v1__watch_values_request__descriptor;
    Reel__V1__WatchValuesRequest *in;
    kv_watch_t **w = NULL;
    size_t made = 0;

    if (api_wire_check(d, data, size, NULL) != REEL_OK)
        return 0;
    in = reel__v1__watch_values_request__unpack(NULL, size, data);
    if (in == NULL)
        return 0;
    if (in->n_watches == 0 || in->n_watches > MAX_WATCHES ||
        (w = calloc(in->n_watches, sizeof(*w))) == NULL)
        goto out;
    for (; made < in->n_watches; made++) {
        const Reel__V1__WatchValueRequest *r = in->watches[made];
        reel_status_t st = REEL_STATUS_INIT;
        kv_watch_args_t a = {0};
        reel_code_t rc;

        a.ns = r->namespace_, a.ns_len = strlen(r->namespace_);
        a.key = r->key, a.key_len = strlen(r->key);
        a.start = (kv_watch_start_t)r->start;
        a.from_version = r->from_version;
        a.from_revision = r->from_revision;
        a.group = in->coalesce ? (void *)in : NULL;
        rc = kv_watch_create(kv, &a, &sink, NULL, &w[made], &st);
        if (rc != REEL_OK) {
            /* The stream ends here, with this status, as the service's. */
            if ((rc != REEL_INVALID_ARGUMENT && rc != REEL_OUT_OF_RANGE &&
                 rc != REEL_RESOURCE_EXHAUSTED) ||
                reel_status_message(&st)[0] == '\0' || w[made] != NULL)
                abort();
            reel_status_fini(&st);
            break;
        }
        reel_status_fini(&st);
    }
    while (made > 0)
        kv_watch_destroy(w[--made]);
out:
    free(w);
    reel__v1__watch_values_request__free_unpacked(in, NULL);
    return 0;
}
