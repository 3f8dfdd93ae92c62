/*
 * bench/suite_ws.c: reel-bench ws: artifact upload and download throughput,
 * and reeld's RSS while it streams the largest one to a slow reader.
 *
 * For each size of --sizes (MiB), one PutArtifact of that many bytes in
 * 1 MiB chunks (acknowledged = synced) and one GetArtifact reading them all
 * back, each timed end to end: MB/s (10^6 bytes a second, as dd says).
 * With --pid, the largest artifact is then read by a reader that sleeps
 * --slow-ms between chunks while reeld's VmRSS is sampled: its growth over
 * the start shows whether reeld buffers what the reader does not take.
 * Calls go through client/ (one call at a time: throughput of one stream).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc.h>

#include "reel/v1/workspace.pb-c.h"
#include "api/grpc_init.h"
#include "bench/aclient.h"
#include "bench/bench.h"
#include "client/client.h"

#define CHUNK ((size_t)1 << 20)

typedef struct up {
    uint64_t left;
    int header_sent;
    const char *key;
    uint8_t *chunk;
} up_t;

static int up_next(void *arg, uint8_t **msg, size_t *len) {
    up_t *u = arg;
    Reel__V1__PutArtifactRequest req = REEL__V1__PUT_ARTIFACT_REQUEST__INIT;
    Reel__V1__ArtifactHeader h = REEL__V1__ARTIFACT_HEADER__INIT;

    if (!u->header_sent) {
        h.namespace_ = "bench";
        h.key = (char *)u->key;
        req.part_case = REEL__V1__PUT_ARTIFACT_REQUEST__PART_HEADER;
        req.header = &h;
        u->header_sent = 1;
    } else if (u->left == 0) {
        return 0;
    } else {
        size_t n = u->left < CHUNK ? (size_t)u->left : CHUNK;

        /* A different first word per chunk: no two chunks alike. */
        memcpy(u->chunk, &u->left, sizeof(u->left));
        req.part_case = REEL__V1__PUT_ARTIFACT_REQUEST__PART_CHUNK;
        req.chunk.data = u->chunk;
        req.chunk.len = n;
        u->left -= n;
    }
    *len = reel__v1__put_artifact_request__get_packed_size(&req);
    if ((*msg = malloc(*len)) == NULL)
        return -1;
    reel__v1__put_artifact_request__pack(&req, *msg);
    return 1;
}

typedef struct down {
    uint64_t got;
    int slow_ms;
    int pid;
    long rss_max;
} down_t;

static long rss_kib(int pid) {
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static int down_msg(void *arg, const uint8_t *msg, size_t len) {
    down_t *d = arg;

    (void)msg;
    d->got += len > 8 ? len - 8 : 0; /* less the framing, about */
    if (d->slow_ms > 0) {
        long k = rss_kib(d->pid);

        if (k > d->rss_max)
            d->rss_max = k;
        bench_sleep_ms(d->slow_ms);
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int get_all(reel_client_t *c, const char *key, down_t *d,
                   reel_reply_t *r) {
    Reel__V1__GetArtifactRequest req = REEL__V1__GET_ARTIFACT_REQUEST__INIT;
    uint8_t buf[256];
    size_t len;

    req.namespace_ = "bench";
    req.key = (char *)key;
    len = reel__v1__get_artifact_request__pack(&req, buf);
    return reel_client_stream(c, "/reel.v1.Workspace/GetArtifact", buf, len,
                              0, down_msg, d, r);
}

int bench_ws(const bench_opts_t *o) {
    reel_client_t *c = NULL;
    reel_reply_t r = {0};
    report_t rep;
    uint8_t *chunk = malloc(CHUNK);
    char key[64];
    int rc = 0, biggest = 0;

    reel_client_opts_t co = REEL_CLIENT_OPTS_INIT;

    ac_client_opts(&co); /* --tls-ca and --token, as the other suites */
    reel_grpc_init(); /* as the other suites' (bench/aclient.c) */
    if (chunk == NULL || reel_client_create(o->addr, &co, &c, &r) != 0) {
        fprintf(stderr, "reel-bench ws: cannot make a client: %s\n",
                r.details ? r.details : "out of memory");
        free(chunk);
        grpc_shutdown();
        return 1;
    }
    for (size_t i = 0; i < CHUNK; i++)
        chunk[i] = (uint8_t)(i * 2654435761u >> 13);
    report_init(&rep, "ws", o);
    for (int i = 0; i < o->n_sizes && rc == 0; i++) {
        uint64_t bytes = (uint64_t)o->sizes[i] << 20;
        up_t u = {bytes, 0, key, chunk};
        down_t d = {0, 0, 0, 0};
        double t0, up_s, down_s;
        cJSON *row;

        snprintf(key, sizeof(key), "size-%d-MiB", o->sizes[i]);
        bench_progress(o, "ws: %d MiB up", o->sizes[i]);
        t0 = now_s();
        if (reel_client_upload(c, "/reel.v1.Workspace/PutArtifact", 0,
                               up_next, &u, &r) != 0) {
            fprintf(stderr, "reel-bench ws: upload of %d MiB: %s\n",
                    o->sizes[i], r.details ? r.details : "?");
            rc = 1;
            break;
        }
        up_s = now_s() - t0;
        reel_reply_fini(&r);
        bench_progress(o, "ws: %d MiB down", o->sizes[i]);
        t0 = now_s();
        if (get_all(c, key, &d, &r) != 0) {
            fprintf(stderr, "reel-bench ws: download of %d MiB: %s\n",
                    o->sizes[i], r.details ? r.details : "?");
            rc = 1;
            break;
        }
        down_s = now_s() - t0;
        reel_reply_fini(&r);
        row = report_row(&rep);
        cJSON_AddNumberToObject(row, "mib", o->sizes[i]);
        cJSON_AddNumberToObject(row, "upload_mb_s", (double)bytes / up_s / 1e6);
        cJSON_AddNumberToObject(row, "download_mb_s",
                                (double)bytes / down_s / 1e6);
        cJSON_AddNumberToObject(row, "upload_s", up_s);
        cJSON_AddNumberToObject(row, "download_s", down_s);
        if (o->sizes[i] > o->sizes[biggest])
            biggest = i;
    }
    if (rc == 0 && o->pid > 0 && o->n_sizes > 0) {
        down_t d = {0, o->slow_ms, o->pid, 0};
        long start;
        cJSON *row;

        snprintf(key, sizeof(key), "size-%d-MiB", o->sizes[biggest]);
        bench_progress(o, "ws: %d MiB to a slow reader", o->sizes[biggest]);
        start = rss_kib(o->pid);
        d.rss_max = start;
        if (get_all(c, key, &d, &r) != 0) {
            fprintf(stderr, "reel-bench ws: slow download: %s\n",
                    r.details ? r.details : "?");
            rc = 1;
        } else {
            row = report_row(&rep);
            cJSON_AddNumberToObject(row, "mib", o->sizes[biggest]);
            cJSON_AddNumberToObject(row, "slow_reader_ms_per_chunk",
                                    o->slow_ms);
            cJSON_AddNumberToObject(row, "rss_start_mib", start / 1024.0);
            cJSON_AddNumberToObject(row, "rss_growth_mib",
                                    (d.rss_max - start) / 1024.0);
        }
        reel_reply_fini(&r);
    }
    bench_progress_done(o);
    if (report_finish(&rep) != 0)
        rc = 1;
    reel_client_destroy(c);
    grpc_shutdown();
    free(chunk);
    return rc;
}
