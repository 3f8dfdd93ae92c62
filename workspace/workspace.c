/*
 * workspace/workspace.c: artifacts: records, staged uploads, the commit,
 * reads, deletes, and the reclaimer.
 *
 * Column families
 *   ws         (lookup)  records and staging marks:
 *              'c' ns \0 key             -> the current record of a
 *                                           live artifact
 *              't' ns \0 key             -> the current record of a
 *                                           deleted one, its tombstone:
 *                                           apart, so that a listing of
 *                                           live artifacts never walks
 *                                           them (since store format 5; a
 *                                           key is in one place only)
 *              'v' ns \0 key \0 ver:u64  -> a retained version's record
 *                                           (its bytes are kept)
 *              's' blob:u64              -> a staged upload's mark: its
 *                                           start time, ms (u64)
 *              'h' revision:u64          -> the record a change wrote, for
 *                                           watches that catch up (blind;
 *                                           the last WS_HISTORY_WINDOW
 *                                           revisions are kept)
 *              'H'                       -> u64: history before this
 *                                           revision is trimmed
 *   ws_chunks  (bulk)    blob:u64 index:u64 -> WS_CHUNK bytes (the last
 *                                           chunk of a blob may be shorter)
 *   Integers are big-endian. A record (codec.h): u8 format (1), u8 deleted,
 *   u64 version, u64 size, 32 bytes SHA-256, u64 blob, u32 chunk size, u64
 *   revision, u64 created ms, u64 updated ms, str ns, str key, str content
 *   type, u32 n, n x (str key, str value). A change's event is its record.
 *
 * An upload
 *   1. begin: a random 64-bit blob id (a collision with another blob is
 *      2^-64 per pair, and a begin refuses an id whose mark exists).
 *   2. write: bytes fill a WS_CHUNK buffer (the one buffer an upload
 *      holds); each full chunk goes to ws_chunks with store_bulk_put(),
 *      beside the writer and outside RocksDB's log: a synced KV commit
 *      never has to write a file's bytes out with it. Before the first,
 *      its mark 's' blob is written and synced, so from then on a crash
 *      leaves something the start-up sweep finds.
 *   3. commit: the last chunk, the size and digest checks, then
 *      store_bulk_sync() flushes ws_chunks to synced files, and only then
 *      one request through the writer reads the current record, checks the
 *      precondition, writes the new 'c' and 'v' records, deletes the mark,
 *      prunes versions past versions_keep (their 'v' record, and their
 *      chunks by a range tombstone) and emits the change: small, whatever
 *      the file's size. Acknowledged means that commit was synced.
 *      An artifact of at most WS_INLINE_MAX bytes stored no chunk before
 *      its commit: its one chunk is written by that commit, in the same
 *      synced batch as its record (no mark, no flush: one sync in all).
 *   An upload that ends any other way (the client gone, a check failed,
 *   the precondition failed) is aborted: the reclaimer deletes its chunks
 *   with one range tombstone and its mark, then compacts, once for all it
 *   took that round, so the disk space comes back soon. Until its chunks
 *   are deleted an aborted upload counts against max_uploads.
 *
 * Deletes and old versions
 *   The writer writes range tombstones over the blobs it drops (RocksDB's
 *   DeleteRange: one record, however large the file), then the reclaimer
 *   compacts each range: a blob file left with no live chunk goes. One
 *   holding another upload's chunks too keeps the deleted ones until they
 *   are a third of such files (store_bulk_collect() then rewrites the
 *   live ones). A compaction filter would have to ask the
 *   records family, from RocksDB's compaction threads, whether each chunk
 *   is still wanted; a range tombstone needs no such lookup, and a read at
 *   an older snapshot (a download under way) still sees its bytes until
 *   it ends.
 *
 * Recovery
 *   A committed version's chunks were synced before its commit, so a
 *   record never names bytes that are not there. A crash before the
 *   commit leaves a mark and perhaps some chunks (those flushed when the
 *   memtable filled): ws_create() deletes each marked blob before reeld
 *   serves, and queues one compaction of them all for the reclaimer (a
 *   stop does not wait for queued reclaims either: their marks stay, and
 *   this finds them). A crash after the commit is the commit: the mark
 *   went with it.
 */
#include "workspace/workspace.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>

#include "base/clock.h"
#include "base/codec.h"
#include "base/log.h"
#include "feed/feed.h"
#include "base/pattern.h"
#include "base/text.h"

#define REC_FORMAT 1
/* History is trimmed once this many revisions passed the last trim. */
#define HISTORY_TRIM_EVERY 4096

const store_cf_desc_t ws_cfs[] = {
    {"ws", STORE_CF_LOOKUP},
    {"ws_chunks", STORE_CF_BULK},
    {NULL, STORE_CF_PLAIN},
};

/* Blobs [blob, last] whose chunks the reclaimer deletes (staged: one
 * blob) or compacts. */
typedef struct reclaim {
    struct reclaim *next;
    uint64_t blob, last;
    int staged; /* 1: delete its chunks and mark first (-1 once that
                 * failed: nothing to compact) */
} reclaim_t;

/* A tenant's uploads under way (ws.tenants). */
typedef struct tenant_uploads {
    struct tenant_uploads *next;
    uint32_t n;
    size_t len;
    char prefix[]; /* the namespaces' tenant prefix, len bytes */
} tenant_uploads_t;

struct ws {
    store_t *store;
    store_cf_t *cf;     /* ws */
    store_cf_t *chunks; /* ws_chunks */
    ws_limits_t lim;
    atomic_uint uploads;
    atomic_ullong staged;
    atomic_uint aborted; /* staged uploads queued for deletion */
    /* The tenants with uploads under way, one entry each while it has
     * one at least (so at most max_uploads entries). */
    pthread_mutex_t tenants_mu;
    tenant_uploads_t *tenants;

    pthread_mutex_t mu; /* guards the reclaim queue and stop */
    pthread_cond_t cv;
    reclaim_t *head, *tail;
    int stopping;         /* no more ws_run jobs; the workers drain */
    int reclaim_stopping; /* the workers are gone: the reclaimer drains */
    pthread_t reclaimer;
    int started;

    feed_hub_t *hub;
    uint64_t trimmed_at; /* writer thread: the revision of the last trim */

    /* ws_run's jobs, guarded by mu (signalled on jobs_cv). */
    struct job *jobs_head, *jobs_tail;
    pthread_cond_t jobs_cv;
    pthread_t workers[WS_WORKERS];
    int n_workers;
};

typedef struct job {
    struct job *next;
    void (*fn)(void *arg);
    void *arg;
} job_t;

struct ws_upload {
    ws_t *ws;
    tenant_uploads_t *tenant; /* counted there, or NULL */
    store_req_t req;
    ws_done_fn done;
    void *done_arg;
    /* The header, copied: */
    char *ns, *key, *content_type;
    size_t ns_len, key_len, n_meta;
    char **meta_keys, **meta_vals;
    ws_precond_t precond;
    uint64_t version;
    int has_size, has_sha;
    uint64_t size;
    uint8_t sha[WS_SHA256_LEN];
    /* The bytes: */
    uint64_t blob;
    uint64_t received, next_index;
    unsigned char *buf;
    size_t buf_len;
    int marked; /* its mark is stored: chunks may be */
    int inline_; /* its bytes commit with its record (WS_INLINE_MAX) */
    EVP_MD_CTX *md;
    uint8_t digest[WS_SHA256_LEN];
    /* Filled by the apply: */
    ws_write_result_t res;
    uint64_t *pruned;
    size_t n_pruned, cap_pruned;
    /* A delete (no bytes): */
    int is_delete;
};

/* ---- Keys and records ------------------------------------------------------ */

static void blob_key(unsigned char out[16], uint64_t blob, uint64_t index) {
    reel_be64_put(out, blob);
    reel_be64_put(out + 8, index);
}

static void mark_key(unsigned char out[9], uint64_t blob) {
    out[0] = 's';
    reel_be64_put(out + 1, blob);
}

/* t ns \0 key [\0 version]: malloc'd, NULL when out of memory. */
static unsigned char *rec_key(char t, const char *ns, size_t ns_len,
                              const char *key, size_t key_len, int with_ver,
                              uint64_t ver, size_t *len) {
    size_t n = 1 + ns_len + 1 + key_len + (with_ver ? 9 : 0);
    unsigned char *k = malloc(n);

    if (k == NULL)
        return NULL;
    k[0] = (unsigned char)t;
    memcpy(k + 1, ns, ns_len);
    k[1 + ns_len] = 0;
    memcpy(k + 2 + ns_len, key, key_len);
    if (with_ver) {
        k[2 + ns_len + key_len] = 0;
        reel_be64_put(k + 3 + ns_len + key_len, ver);
    }
    *len = n;
    return k;
}

static int rec_encode(const ws_artifact_t *a, reel_wbuf_t *w) {
    reel_wbuf_u8(w, REC_FORMAT);
    reel_wbuf_u8(w, (uint8_t)(a->deleted != 0));
    reel_wbuf_u64(w, a->version);
    reel_wbuf_u64(w, a->size);
    reel_wbuf_raw(w, a->sha256, WS_SHA256_LEN);
    reel_wbuf_u64(w, a->blob_);
    reel_wbuf_u32(w, a->chunk_size);
    reel_wbuf_u64(w, a->revision);
    reel_wbuf_u64(w, (uint64_t)a->created_at_ms);
    reel_wbuf_u64(w, (uint64_t)a->updated_at_ms);
    reel_wbuf_str(w, a->ns);
    reel_wbuf_str(w, a->key);
    reel_wbuf_str(w, a->content_type);
    reel_wbuf_u32(w, (uint32_t)a->n_meta);
    for (size_t i = 0; i < a->n_meta; i++) {
        reel_wbuf_str(w, a->meta_keys[i]);
        reel_wbuf_str(w, a->meta_vals[i]);
    }
    return reel_wbuf_done(w);
}

/* Decodes a copy of bytes into *a: 0, or -1 (malformed or out of memory)
 * with *a zeroed. */
static int rec_decode(const void *bytes, size_t len, ws_artifact_t *a) {
    reel_rbuf_t r;
    unsigned char *mem;
    uint32_t n;
    const unsigned char *sha;

    memset(a, 0, sizeof(*a));
    if ((mem = malloc(len ? len : 1)) == NULL)
        return -1;
    memcpy(mem, bytes, len);
    reel_rbuf_init(&r, mem, len);
    if (reel_rbuf_u8(&r) != REC_FORMAT) {
        free(mem);
        return -1;
    }
    a->deleted = reel_rbuf_u8(&r);
    a->version = reel_rbuf_u64(&r);
    a->size = reel_rbuf_u64(&r);
    sha = r.p;
    if (r.end - r.p < WS_SHA256_LEN) {
        free(mem);
        return -1;
    }
    memcpy(a->sha256, sha, WS_SHA256_LEN);
    r.p += WS_SHA256_LEN;
    a->blob_ = reel_rbuf_u64(&r);
    a->chunk_size = reel_rbuf_u32(&r);
    a->revision = reel_rbuf_u64(&r);
    a->created_at_ms = (int64_t)reel_rbuf_u64(&r);
    a->updated_at_ms = (int64_t)reel_rbuf_u64(&r);
    a->ns = reel_rbuf_str(&r);
    a->key = reel_rbuf_str(&r);
    a->content_type = reel_rbuf_str(&r);
    n = reel_rbuf_u32(&r);
    /* Each entry takes at least 10 bytes: no count can outgrow the record. */
    if (reel_rbuf_ok(&r) != 0 || n > (size_t)(r.end - r.p) / 10) {
        free(mem);
        memset(a, 0, sizeof(*a));
        return -1;
    }
    if (n > 0) {
        a->meta_keys = calloc(2 * (size_t)n, sizeof(char *));
        if (a->meta_keys == NULL) {
            free(mem);
            memset(a, 0, sizeof(*a));
            return -1;
        }
        a->meta_vals = a->meta_keys + n;
        for (uint32_t i = 0; i < n; i++) {
            a->meta_keys[i] = reel_rbuf_str(&r);
            a->meta_vals[i] = reel_rbuf_str(&r);
        }
    }
    a->n_meta = n;
    a->mem_ = mem;
    if (reel_rbuf_ok(&r) != 0 || (a->chunk_size == 0 && a->size > 0)) {
        ws_artifact_fini(a);
        return -1;
    }
    return 0;
}

void ws_artifact_fini(ws_artifact_t *a) {
    if (a == NULL)
        return;
    free(a->meta_keys);
    free(a->mem_);
    memset(a, 0, sizeof(*a));
}

int ws_change_decode(const store_change_t *c, ws_artifact_t *a) {
    memset(a, 0, sizeof(*a));
    if (c->module != WS_MODULE_ID ||
        (c->type != WS_EVENT_PUT && c->type != WS_EVENT_DELETE))
        return 0;
    return rec_decode(c->event, c->len, a) == 0 ? 1 : -1;
}

void ws_subject_key(const char *key, size_t key_len, char *out) {
    for (size_t i = 0; i < key_len; i++)
        out[i] = key[i] == '/' ? '.' : key[i];
    out[key_len] = '\0';
}

/* ---- Validation ------------------------------------------------------------- */

static reel_code_t check_names(const ws_limits_t *lim, const char *ns,
                               size_t ns_len, const char *key, size_t key_len,
                               reel_status_t *st) {
    char *subj;
    reel_code_t rc;

    if ((rc = reel_check_charset("namespace", ns, ns_len, lim->max_namespace,
                                 WS_NAMESPACE_CHARS, st)) != REEL_OK)
        return rc;
    if ((rc = reel_check_name("key", key, key_len, lim->max_key, st)) !=
        REEL_OK)
        return rc;
    /* Each '/'- or '.'-separated part is a token of the WAL subject. */
    if ((subj = malloc(key_len + 1)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    ws_subject_key(key, key_len, subj);
    if (reel_pattern_has_empty_token(subj, key_len))
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "key: an empty part (a leading, trailing or "
                             "doubled \"/\" or \".\", as in \"/docs/a\"): each "
                             "'/'- or '.'-separated part becomes a token of "
                             "the WAL subject; write \"docs/a\"");
    else
        rc = reel_pattern_check_name("key (its '/'- and '.'-separated parts)",
                                     subj, key_len, st);
    free(subj);
    return rc;
}

static reel_code_t check_header(const ws_limits_t *lim, const ws_header_t *h,
                                reel_status_t *st) {
    size_t meta_bytes = 0, ct_len;
    reel_code_t rc;

    if ((rc = check_names(lim, h->ns, h->ns_len, h->key, h->key_len, st)) !=
        REEL_OK)
        return rc;
    ct_len = h->content_type ? strlen(h->content_type) : 0;
    if (ct_len > WS_MAX_CONTENT_TYPE)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "content_type: %zu bytes, at most %d",
                               ct_len, WS_MAX_CONTENT_TYPE);
    if (h->n_meta > WS_MAX_METADATA)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "metadata: %zu entries, at most %d", h->n_meta,
                               WS_MAX_METADATA);
    for (size_t i = 0; i < h->n_meta; i++) {
        size_t kl = strlen(h->meta_keys[i]);

        if (kl == 0)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "metadata: an empty key");
        /* A map holds each key once; which of two a reader saw would
         * depend on how it decoded the record. */
        for (size_t j = 0; j < i; j++)
            if (strcmp(h->meta_keys[j], h->meta_keys[i]) == 0)
                return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                       "metadata: key \"%.64s\" given twice",
                                       h->meta_keys[i]);
        meta_bytes += kl + strlen(h->meta_vals[i]);
    }
    if (meta_bytes > WS_MAX_METADATA_BYTES)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "metadata: %zu bytes of keys and values, at "
                               "most %d",
                               meta_bytes, WS_MAX_METADATA_BYTES);
    if (h->precond != WS_PRECOND_NONE && h->precond != WS_PRECOND_ABSENT &&
        h->precond != WS_PRECOND_VERSION)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "precondition: unknown value %d",
                               (int)h->precond);
    if (h->has_size && h->size > lim->max_artifact)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "size: %llu bytes, over "
                               "--workspace-max-artifact-bytes %llu",
                               (unsigned long long)h->size,
                               (unsigned long long)lim->max_artifact);
    return REEL_OK;
}

/* ---- The reclaimer ------------------------------------------------------------ */

/* Deletes a staged blob's chunks and its mark (one range tombstone, not
 * synced: deleting again after a crash is harmless). 0, or -1 (said: the
 * mark stays, and the next start's sweep deletes it again). */
static int delete_staged(ws_t *ws, uint64_t blob) {
    unsigned char lo[16], hi[16], mk[9];
    reel_status_t st = REEL_STATUS_INIT;

    blob_key(lo, blob, 0);
    blob_key(hi, blob + 1, 0);
    mark_key(mk, blob);
    if (store_delete_range(ws->store, ws->chunks, lo, 16, hi, 16, ws->cf, mk,
                           9, &st) != REEL_OK) {
        REEL_WARN("workspace",
                  "upload %016llx: its staged chunks stay until the next "
                  "start: %s",
                  (unsigned long long)blob, reel_status_message(&st));
        reel_status_fini(&st);
        return -1;
    }
    return 0;
}

/* Compacts the chunks of blobs [first, last], so what deletes covered
 * there gives its disk space back now. */
static void compact_blobs(ws_t *ws, uint64_t first, uint64_t last) {
    unsigned char lo[16], hi[16];
    reel_status_t st = REEL_STATUS_INIT;

    blob_key(lo, first, 0);
    blob_key(hi, last + 1, 0);
    /* The last blob id is all ones: its range's end wraps to 0, so the
     * compaction runs to the family's end instead. */
    if (store_compact_range(ws->store, ws->chunks, lo, 16,
                            last == UINT64_MAX ? NULL : hi,
                            last == UINT64_MAX ? 0 : 16, &st) != REEL_OK) {
        REEL_WARN("workspace", "compacting blobs %016llx-%016llx: %s (their "
                               "space comes back at a later compaction)",
                  (unsigned long long)first, (unsigned long long)last,
                  reel_status_message(&st));
        reel_status_fini(&st);
    }
}

/* A round of at most this many blobs compacts each one's range; a larger
 * one compacts the span of them all, once (blob ids are random: the span
 * is most of the family, which a compaction then rewrites). */
#define RECLAIM_EACH_MAX 4

/* After a round's compactions: the blob files that still hold deleted
 * chunks beside live ones (uploads flushed together) are rewritten once
 * their garbage is worth it (store_bulk_collect). */
static void collect_garbage(ws_t *ws) {
    reel_status_t st = REEL_STATUS_INIT;
    int ran;

    if (store_bulk_collect(ws->store, ws->chunks, &ran, &st) != REEL_OK) {
        REEL_WARN("workspace", "collecting the chunks' garbage: %s (tried "
                               "again after the next delete)",
                  reel_status_message(&st));
        reel_status_fini(&st);
    } else if (ran) {
        REEL_INFO("workspace", "rewrote the live chunks of the blob files "
                               "that held deleted ones beside them");
    }
}

/*
 * What was queued since the last round, taken at once: every staged blob
 * deleted first (small writes), then the compactions, then the garbage
 * they left beside live chunks, when worth it. One compaction per
 * blob cost about a second each on a loaded machine: a client whose
 * uploads were refused one after another queued them faster than that,
 * and the queue (and the disk) grew.
 */
static void reclaim_batch(ws_t *ws, reclaim_t *batch) {
    uint64_t first = UINT64_MAX, last = 0;
    size_t n = 0;

    for (reclaim_t *r = batch; r != NULL; r = r->next) {
        if (r->staged) {
            atomic_fetch_sub(&ws->aborted, 1);
            if (delete_staged(ws, r->blob) != 0) {
                r->staged = -1; /* not deleted: nothing to compact */
                continue;
            }
            atomic_fetch_sub(&ws->staged, 1);
        }
        first = r->blob < first ? r->blob : first;
        last = r->last > last ? r->last : last;
        n++;
    }
    if (n > RECLAIM_EACH_MAX) {
        compact_blobs(ws, first, last);
    } else {
        for (reclaim_t *r = batch; r != NULL; r = r->next)
            if (r->staged >= 0)
                compact_blobs(ws, r->blob, r->last);
    }
    if (n > 0)
        collect_garbage(ws);
}

static void *reclaimer_main(void *arg) {
    ws_t *ws = arg;

    pthread_mutex_lock(&ws->mu);
    for (;;) {
        reclaim_t *batch;

        while (ws->head == NULL && !ws->reclaim_stopping)
            pthread_cond_wait(&ws->cv, &ws->mu);
        /* Stopping: what is still queued waits for the next start (a
         * staged blob keeps its mark, which the sweep finds; a deleted
         * one's range tombstone frees its space at a later compaction). */
        if (ws->head == NULL || ws->reclaim_stopping)
            break;
        batch = ws->head;
        ws->head = ws->tail = NULL;
        pthread_mutex_unlock(&ws->mu);
        reclaim_batch(ws, batch);
        while (batch != NULL) {
            reclaim_t *next = batch->next;

            free(batch);
            batch = next;
        }
        pthread_mutex_lock(&ws->mu);
    }
    pthread_mutex_unlock(&ws->mu);
    return NULL;
}

/*
 * Queues a blob for the reclaimer; any thread, the writer's included (it
 * only takes a mutex). Without memory for the node a staged blob keeps
 * its mark (the next start reclaims it) and a committed delete's range
 * tombstone frees the space at a later compaction: late, never wrong.
 */
static void reclaim_queue_range(ws_t *ws, uint64_t blob, uint64_t last,
                                int staged) {
    reclaim_t *r = malloc(sizeof(*r));

    if (r == NULL) {
        REEL_WARN("workspace", "out of memory: blob %016llx is reclaimed "
                               "later",
                  (unsigned long long)blob);
        return;
    }
    r->next = NULL;
    r->blob = blob;
    r->last = last;
    r->staged = staged;
    if (staged)
        atomic_fetch_add(&ws->aborted, 1);
    pthread_mutex_lock(&ws->mu);
    if (ws->tail)
        ws->tail->next = r;
    else
        ws->head = r;
    ws->tail = r;
    pthread_cond_signal(&ws->cv);
    pthread_mutex_unlock(&ws->mu);
}

static void reclaim_queue(ws_t *ws, uint64_t blob, int staged) {
    reclaim_queue_range(ws, blob, blob, staged);
}

/* Deletes every staged blob a crash (or a stop with reclaims queued)
 * left: at start, before anything is served; their compaction is queued
 * for the reclaimer, as one, and runs once reeld serves. */
static reel_code_t sweep(ws_t *ws, reel_status_t *st) {
    store_iter_t *it = store_iter_create(ws->store, ws->cf, NULL);
    unsigned char first = 's';
    uint64_t *blobs = NULL;
    size_t n = 0, cap = 0;
    reel_code_t rc = REEL_OK;

    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (store_iter_seek(it, &first, 1); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);

        if (klen == 0 || k[0] != 's')
            break;
        if (klen != 9)
            continue;
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            uint64_t *nb = realloc(blobs, ncap * sizeof(*nb));

            if (nb == NULL) {
                rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                     "out of memory");
                goto out;
            }
            blobs = nb;
            cap = ncap;
        }
        blobs[n++] = reel_be64_get((const unsigned char *)k + 1);
    }
    if ((rc = store_iter_status(it, st)) != REEL_OK)
        goto out;
    {
        uint64_t first = UINT64_MAX, last = 0;
        size_t deleted = 0;

        for (size_t i = 0; i < n; i++) {
            if (delete_staged(ws, blobs[i]) != 0)
                continue;
            first = blobs[i] < first ? blobs[i] : first;
            last = blobs[i] > last ? blobs[i] : last;
            deleted++;
        }
        if (deleted > 0) {
            reclaim_queue_range(ws, first, last, 0);
            REEL_INFO("workspace",
                      "deleted %zu upload%s a crash or a stop left staged; "
                      "their space comes back at the compaction queued",
                      deleted, deleted == 1 ? "" : "s");
        }
    }
out:
    store_iter_destroy(it);
    free(blobs);
    return rc;
}

/* ---- Workers ------------------------------------------------------------------ */

static void *worker_main(void *arg) {
    ws_t *ws = arg;

    pthread_mutex_lock(&ws->mu);
    for (;;) {
        job_t *j;

        while (ws->jobs_head == NULL && !ws->stopping)
            pthread_cond_wait(&ws->jobs_cv, &ws->mu);
        if ((j = ws->jobs_head) == NULL)
            break;
        ws->jobs_head = j->next;
        if (ws->jobs_head == NULL)
            ws->jobs_tail = NULL;
        pthread_mutex_unlock(&ws->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&ws->mu);
    }
    pthread_mutex_unlock(&ws->mu);
    return NULL;
}

reel_code_t ws_run(ws_t *ws, void (*fn)(void *arg), void *arg,
                   reel_status_t *st) {
    job_t *j = malloc(sizeof(*j));

    if (j == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    j->next = NULL;
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_lock(&ws->mu);
    if (ws->stopping) {
        pthread_mutex_unlock(&ws->mu);
        free(j);
        return reel_status_set(st, REEL_UNAVAILABLE,
                               "the workspace is stopping");
    }
    if (ws->jobs_tail)
        ws->jobs_tail->next = j;
    else
        ws->jobs_head = j;
    ws->jobs_tail = j;
    pthread_cond_signal(&ws->jobs_cv);
    pthread_mutex_unlock(&ws->mu);
    return REEL_OK;
}

/* ---- Open and close ---------------------------------------------------------- */

reel_code_t ws_create(store_t *store, const ws_limits_t *limits, ws_t **out,
                      reel_status_t *st) {
    ws_t *ws;
    reel_code_t rc;

    *out = NULL;
    if ((ws = calloc(1, sizeof(*ws))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    ws->store = store;
    ws->lim = limits ? *limits : (ws_limits_t){0};
    if (ws->lim.max_artifact == 0)
        ws->lim.max_artifact = WS_DEFAULT_MAX_ARTIFACT;
    if (ws->lim.versions_keep == 0)
        ws->lim.versions_keep = WS_DEFAULT_VERSIONS_KEEP;
    if (ws->lim.max_uploads == 0)
        ws->lim.max_uploads = WS_DEFAULT_MAX_UPLOADS;
    if (ws->lim.max_tenant_uploads == 0)
        ws->lim.max_tenant_uploads = WS_DEFAULT_MAX_TENANT_UPLOADS;
    pthread_mutex_init(&ws->tenants_mu, NULL);
    if (ws->lim.max_namespace == 0)
        ws->lim.max_namespace = WS_DEFAULT_MAX_NAMESPACE;
    if (ws->lim.max_key == 0)
        ws->lim.max_key = WS_DEFAULT_MAX_KEY;
    pthread_mutex_init(&ws->mu, NULL);
    pthread_cond_init(&ws->cv, NULL);
    pthread_cond_init(&ws->jobs_cv, NULL);
    if ((rc = store_cf_lookup(store, "ws", &ws->cf, st)) != REEL_OK ||
        (rc = store_cf_lookup(store, "ws_chunks", &ws->chunks, st)) !=
            REEL_OK)
        goto fail;
    if ((rc = sweep(ws, st)) != REEL_OK)
        goto fail;
    if ((rc = feed_hub_create(store_revision(store), &ws->hub, st)) !=
        REEL_OK)
        goto fail;
    if (pthread_create(&ws->reclaimer, NULL, reclaimer_main, ws) != 0) {
        rc = reel_status_set(st, REEL_INTERNAL,
                             "cannot start the workspace reclaimer thread");
        goto fail;
    }
    ws->started = 1;
    for (; ws->n_workers < WS_WORKERS; ws->n_workers++)
        if (pthread_create(&ws->workers[ws->n_workers], NULL, worker_main,
                           ws) != 0) {
            rc = reel_status_set(st, REEL_INTERNAL,
                                 "cannot start the workspace's workers");
            goto fail;
        }
    *out = ws;
    return REEL_OK;
fail:
    ws_destroy(ws);
    return rc;
}

/* Every tombstone among the live records ('c') of an older dir moves to
 * its own place ('t'), in one commit. */
static reel_code_t upgrade_apply(store_txn_t *txn, void *arg,
                                 reel_status_t *st) {
    ws_t *ws = arg;
    const char live = 'c';
    store_iter_t *it = store_iter_prefix(ws->store, ws->cf, NULL, &live, 1);
    reel_code_t rc = REEL_OK;
    size_t n = 0;

    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (store_iter_seek(it, &live, 1); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        ws_artifact_t a;
        char *tk;

        if (rec_decode(v, vlen, &a) != 0) {
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "an artifact's record does not decode (key "
                                 "of %zu bytes)",
                                 klen);
            break;
        }
        if (a.deleted) {
            if ((tk = malloc(klen)) == NULL) {
                ws_artifact_fini(&a);
                rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                     "out of memory");
                break;
            }
            memcpy(tk, k, klen);
            tk[0] = 't';
            store_txn_put(txn, ws->cf, tk, klen, v, vlen);
            store_txn_delete(txn, ws->cf, k, klen);
            free(tk);
            n++;
        }
        ws_artifact_fini(&a);
    }
    if (rc == REEL_OK)
        rc = store_iter_status(it, st);
    store_iter_destroy(it);
    if (rc == REEL_OK && n > 0)
        REEL_INFO("workspace", "moved %zu deleted artifacts' records apart "
                               "from the live ones for the new format",
                  n);
    return rc;
}

reel_code_t ws_upgrade(ws_t *ws, int from, reel_status_t *st) {
    if (from >= 5)
        return REEL_OK;
    return store_exec(ws->store, upgrade_apply, ws, NULL, st);
}

void ws_stop(ws_t *ws) {
    if (ws == NULL || !ws->started)
        return;
    pthread_mutex_lock(&ws->mu);
    ws->stopping = 1;
    pthread_cond_broadcast(&ws->jobs_cv);
    pthread_mutex_unlock(&ws->mu);
    /* The workers first: what they finish may queue reclaims. */
    for (int i = 0; i < ws->n_workers; i++)
        pthread_join(ws->workers[i], NULL);
    ws->n_workers = 0;
    pthread_mutex_lock(&ws->mu);
    ws->reclaim_stopping = 1;
    pthread_cond_broadcast(&ws->cv);
    pthread_mutex_unlock(&ws->mu);
    /* A compaction under way would hold the stop for as long as it takes:
     * stopped, its space comes back at a later compaction. */
    store_manual_compactions(ws->store, 0);
    pthread_join(ws->reclaimer, NULL);
    store_manual_compactions(ws->store, 1);
    ws->started = 0;
}

void ws_destroy(ws_t *ws) {
    if (ws == NULL)
        return;
    ws_stop(ws);
    while (ws->head != NULL) {
        reclaim_t *r = ws->head;
        ws->head = r->next;
        free(r);
    }
    feed_hub_destroy(ws->hub);
    pthread_mutex_destroy(&ws->mu);
    pthread_mutex_destroy(&ws->tenants_mu);
    pthread_cond_destroy(&ws->cv);
    pthread_cond_destroy(&ws->jobs_cv);
    free(ws);
}

void ws_usage(ws_t *ws, uint64_t *chunk_bytes, uint64_t *staged) {
    *chunk_bytes = store_cf_bytes(ws->store, ws->chunks);
    *staged = atomic_load(&ws->staged);
}

/* ---- Uploads ----------------------------------------------------------------- */

static void tenant_leave(ws_t *ws, tenant_uploads_t *t);

static void upload_free(ws_upload_t *u) {
    if (u == NULL)
        return;
    for (size_t i = 0; i < u->n_meta; i++) {
        free(u->meta_keys[i]);
        free(u->meta_vals[i]);
    }
    free(u->meta_keys);
    free(u->meta_vals);
    free(u->ns);
    free(u->key);
    free(u->content_type);
    free(u->buf);
    free(u->pruned);
    if (u->md != NULL)
        EVP_MD_CTX_free(u->md);
    ws_artifact_fini(&u->res.artifact);
    reel_status_fini(&u->res.status);
    if (!u->is_delete)
        atomic_fetch_sub(&u->ws->uploads, 1);
    tenant_leave(u->ws, u->tenant);
    free(u);
}

/* Counts an upload of ns against its tenant's cap into *out (NULL: ns
 * has no tenant). RESOURCE_EXHAUSTED when the tenant has
 * max_tenant_uploads under way. */
static reel_code_t tenant_enter(ws_t *ws, const char *ns,
                                tenant_uploads_t **out, reel_status_t *st) {
    size_t len = ws->lim.ns_scope ? ws->lim.ns_scope(ns) : 0;
    tenant_uploads_t *t;
    reel_code_t rc = REEL_OK;

    *out = NULL;
    if (len == 0)
        return REEL_OK;
    pthread_mutex_lock(&ws->tenants_mu);
    for (t = ws->tenants; t != NULL; t = t->next)
        if (t->len == len && memcmp(t->prefix, ns, len) == 0)
            break;
    if (t == NULL && (t = calloc(1, sizeof(*t) + len)) != NULL) {
        memcpy(t->prefix, ns, len);
        t->len = len;
        t->next = ws->tenants;
        ws->tenants = t;
    }
    if (t == NULL)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    else if (t->n >= ws->lim.max_tenant_uploads)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                             "uploads: its tenant has %u under way, at most "
                             "--workspace-max-uploads-per-tenant %u",
                             t->n, ws->lim.max_tenant_uploads);
    else
        t->n++, *out = t;
    pthread_mutex_unlock(&ws->tenants_mu);
    return rc;
}

static void tenant_leave(ws_t *ws, tenant_uploads_t *t) {
    tenant_uploads_t **pp;

    if (t == NULL)
        return;
    pthread_mutex_lock(&ws->tenants_mu);
    if (--t->n == 0) {
        for (pp = &ws->tenants; *pp != t; pp = &(*pp)->next)
            ;
        *pp = t->next;
        free(t);
    }
    pthread_mutex_unlock(&ws->tenants_mu);
}

static char *copy_str(const char *s, size_t n) {
    char *p = malloc(n + 1);

    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

reel_code_t ws_upload_begin(ws_t *ws, const ws_header_t *h, ws_upload_t **out,
                            reel_status_t *st) {
    ws_upload_t *u = NULL;
    unsigned char mk[9];
    char *val = NULL;
    size_t vlen;
    reel_code_t rc;

    *out = NULL;
    if ((rc = check_header(&ws->lim, h, st)) != REEL_OK)
        return rc;
    /* Uploads that ended without a commit count until their staged
     * chunks are deleted: a client whose uploads are refused one after
     * another cannot stage more than the limit meanwhile. */
    if (atomic_fetch_add(&ws->uploads, 1) + atomic_load(&ws->aborted) >=
        ws->lim.max_uploads) {
        unsigned aborted = atomic_load(&ws->aborted);

        atomic_fetch_sub(&ws->uploads, 1);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "uploads: %u under way and %u ended ones "
                               "still being reclaimed, at most "
                               "--workspace-max-uploads %u",
                               atomic_load(&ws->uploads), aborted,
                               ws->lim.max_uploads);
    }
    if ((u = calloc(1, sizeof(*u))) == NULL) {
        atomic_fetch_sub(&ws->uploads, 1);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    u->ws = ws;
    u->ns = copy_str(h->ns, h->ns_len);
    u->key = copy_str(h->key, h->key_len);
    u->content_type = copy_str(h->content_type ? h->content_type : "",
                               h->content_type ? strlen(h->content_type) : 0);
    u->ns_len = h->ns_len;
    u->key_len = h->key_len;
    u->precond = h->precond;
    u->version = h->version;
    u->has_size = h->has_size;
    u->size = h->size;
    if (h->sha256 != NULL) {
        u->has_sha = 1;
        memcpy(u->sha, h->sha256, WS_SHA256_LEN);
    }
    u->buf = malloc(WS_CHUNK);
    u->md = EVP_MD_CTX_new();
    if (h->n_meta > 0) {
        u->meta_keys = calloc(h->n_meta, sizeof(char *));
        u->meta_vals = calloc(h->n_meta, sizeof(char *));
    }
    if (u->ns == NULL || u->key == NULL || u->content_type == NULL ||
        u->buf == NULL || u->md == NULL ||
        (h->n_meta > 0 && (u->meta_keys == NULL || u->meta_vals == NULL)))
        goto oom;
    if ((rc = tenant_enter(ws, u->ns, &u->tenant, st)) != REEL_OK)
        goto fail;
    for (size_t i = 0; i < h->n_meta; i++, u->n_meta++) {
        u->meta_keys[i] = strdup(h->meta_keys[i]);
        u->meta_vals[i] = strdup(h->meta_vals[i]);
        if (u->meta_keys[i] == NULL || u->meta_vals[i] == NULL) {
            u->n_meta++;
            goto oom;
        }
    }
    if (EVP_DigestInit_ex(u->md, EVP_sha256(), NULL) != 1)
        goto oom;
    /* A fresh id: nonzero, with no mark (a live blob with it would be a
     * 2^-64 coincidence; a staged one is refused here). */
    do {
        if (getrandom(&u->blob, sizeof(u->blob), 0) != sizeof(u->blob)) {
            rc = reel_status_set(st, REEL_INTERNAL,
                                 "cannot draw an upload id");
            goto fail;
        }
        mark_key(mk, u->blob);
        free(val);
        val = NULL;
        rc = u->blob == 0 ? REEL_OK
                          : store_get(ws->store, ws->cf, mk, 9, &val, &vlen,
                                      st);
        if (rc != REEL_OK && rc != REEL_NOT_FOUND)
            goto fail;
    } while (rc == REEL_OK);
    reel_status_fini(st);
    atomic_fetch_add(&ws->staged, 1);
    *out = u;
    return REEL_OK;
oom:
    rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
fail:
    free(val);
    upload_free(u);
    return rc;
}

/* Stores the next chunk, len bytes at p; the upload's mark first, synced,
 * so a crash from here on leaves something the start-up sweep finds. */
static reel_code_t put_chunk(ws_upload_t *u, const void *p, size_t len,
                             reel_status_t *st) {
    unsigned char k[16];

    if (!u->marked) {
        unsigned char mk[9], when[8];

        mark_key(mk, u->blob);
        reel_be64_put(when, (uint64_t)reel_clock_now_ms());
        if (store_put_synced(u->ws->store, u->ws->cf, mk, 9, when, 8, st) !=
            REEL_OK)
            return st->code;
        u->marked = 1;
    }

    blob_key(k, u->blob, u->next_index);
    if (store_bulk_put(u->ws->store, u->ws->chunks, k, 16, p, len, st) !=
        REEL_OK)
        return st->code;
    u->next_index++;
    return REEL_OK;
}

static reel_code_t flush_chunk(ws_upload_t *u, reel_status_t *st) {
    reel_code_t rc;

    if (u->buf_len == 0)
        return REEL_OK;
    if ((rc = put_chunk(u, u->buf, u->buf_len, st)) == REEL_OK)
        u->buf_len = 0;
    return rc;
}

reel_code_t ws_upload_write(ws_upload_t *u, const void *p, size_t n,
                            reel_status_t *st) {
    const unsigned char *b = p;
    reel_code_t rc;

    if (n > u->ws->lim.max_artifact - u->received)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "size: more than "
                               "--workspace-max-artifact-bytes %llu bytes "
                               "sent",
                               (unsigned long long)u->ws->lim.max_artifact);
    if (u->has_size && n > u->size - u->received)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "size: the header said %llu bytes; more were "
                               "sent",
                               (unsigned long long)u->size);
    if (n > 0 && EVP_DigestUpdate(u->md, p, n) != 1)
        return reel_status_set(st, REEL_INTERNAL, "SHA-256 failed");
    u->received += n;
    while (n > 0) {
        size_t take = WS_CHUNK - u->buf_len;

        if (u->buf_len == 0 && n >= WS_CHUNK) {
            /* A whole chunk where one starts (clients send chunks of
             * WS_CHUNK): stored from where it is, not copied first. */
            if ((rc = put_chunk(u, b, WS_CHUNK, st)) != REEL_OK)
                return rc;
            b += WS_CHUNK;
            n -= WS_CHUNK;
            continue;
        }

        if (take > n)
            take = n;
        memcpy(u->buf + u->buf_len, b, take);
        u->buf_len += take;
        b += take;
        n -= take;
        if (u->buf_len == WS_CHUNK && (rc = flush_chunk(u, st)) != REEL_OK)
            return rc;
    }
    return REEL_OK;
}

void ws_upload_abort(ws_upload_t *u) {
    if (u == NULL)
        return;
    reclaim_queue(u->ws, u->blob, 1);
    upload_free(u);
}

/* The current record of a key, live ('c') or deleted ('t'), into *val:
 * in txn, else at snap (NULL: now), as store_get_first reads it. */
static reel_code_t read_either(ws_t *ws, store_txn_t *txn,
                               const store_snapshot_t *snap, const char *ns,
                               size_t ns_len, const char *key, size_t key_len,
                               char **val, size_t *vlen, reel_status_t *st) {
    size_t klen; /* the two keys differ only in their tag */
    unsigned char *ck = rec_key('c', ns, ns_len, key, key_len, 0, 0, &klen);
    unsigned char *tk = rec_key('t', ns, ns_len, key, key_len, 0, 0, &klen);
    int which;
    reel_code_t rc;

    if (ck == NULL || tk == NULL)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    else
        rc = store_get_first(ws->store, txn, snap, ws->cf, ck, klen, tk, klen,
                             val, vlen, &which, st);
    free(ck);
    free(tk);
    return rc;
}

/* The current record of u's key as txn sees it: OK, NOT_FOUND (a zeroed
 * *cur), or an error. */
static reel_code_t read_current(store_txn_t *txn, ws_t *ws, const char *ns,
                                size_t ns_len, const char *key,
                                size_t key_len, ws_artifact_t *cur,
                                reel_status_t *st) {
    size_t vlen;
    char *val = NULL;
    reel_code_t rc;

    memset(cur, 0, sizeof(*cur));
    rc = read_either(ws, txn, NULL, ns, ns_len, key, key_len, &val, &vlen,
                     st);
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        return REEL_NOT_FOUND;
    }
    if (rc != REEL_OK)
        return rc;
    if (rec_decode(val, vlen, cur) != 0)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "artifact %s/%s: its record does not decode", ns,
                             key);
    free(val);
    return rc;
}

/*
 * Deletes retained versions of the key, oldest first, until `keep` are
 * left, range-deleting their chunks; their blobs go to u->pruned.
 */
static reel_code_t prune(store_txn_t *txn, ws_upload_t *u, uint32_t keep,
                         reel_status_t *st) {
    ws_t *ws = u->ws;
    size_t plen, total = 0;
    /* 'v' ns \0 key \0: the key's versions, which end in 8 bytes. */
    unsigned char *prefix =
        rec_key('v', u->ns, u->ns_len, u->key, u->key_len, 1, 0, &plen);
    store_iter_t *it = NULL;
    reel_code_t rc = REEL_OK;

    if (prefix == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    plen -= 8;
    if ((it = store_txn_iter_prefix(txn, ws->cf, prefix, plen)) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (store_iter_seek(it, prefix, plen); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);

        if (klen != plen + 8 || memcmp(k, prefix, plen) != 0)
            break;
        total++;
    }
    if ((rc = store_iter_status(it, st)) != REEL_OK)
        goto out;
    if (total <= keep)
        goto out;
    for (store_iter_seek(it, prefix, plen); store_iter_valid(it) &&
                                            total > keep;
         store_iter_next(it), total--) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        ws_artifact_t old;
        unsigned char lo[16], hi[16];

        if (klen != plen + 8 || memcmp(k, prefix, plen) != 0)
            break;
        if (rec_decode(v, vlen, &old) != 0) {
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "artifact %s/%s: a retained version's record "
                                 "does not decode",
                                 u->ns, u->key);
            goto out;
        }
        if (u->n_pruned == u->cap_pruned) {
            size_t ncap = u->cap_pruned ? 2 * u->cap_pruned : 4;
            uint64_t *np = realloc(u->pruned, ncap * sizeof(*np));

            if (np == NULL) {
                ws_artifact_fini(&old);
                rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                     "out of memory");
                goto out;
            }
            u->pruned = np;
            u->cap_pruned = ncap;
        }
        u->pruned[u->n_pruned++] = old.blob_;
        blob_key(lo, old.blob_, 0);
        blob_key(hi, old.blob_ + 1, 0);
        store_txn_delete_range_blind(txn, ws->chunks, lo, 16, hi, 16);
        store_txn_delete(txn, ws->cf, k, klen);
        ws_artifact_fini(&old);
    }
    rc = store_iter_status(it, st);
out:
    store_iter_destroy(it);
    free(prefix);
    return rc;
}

static reel_code_t check_precond(const ws_artifact_t *cur, int exists,
                                 ws_precond_t p, uint64_t want, const char *ns,
                                 const char *key, reel_status_t *st) {
    uint64_t have = exists ? cur->version : 0;

    if (p == WS_PRECOND_ABSENT && exists && !cur->deleted)
        return reel_status_set(st, REEL_ALREADY_EXISTS,
                               "artifact %s/%s already exists (current "
                               "version %llu)",
                               ns, key, (unsigned long long)have);
    if (p == WS_PRECOND_VERSION && have != want)
        return reel_status_set(st, REEL_ABORTED,
                               "version conflict on artifact %s/%s: expected "
                               "version %llu, current version %llu",
                               ns, key, (unsigned long long)want,
                               (unsigned long long)have);
    return REEL_OK;
}

static void history_write(store_txn_t *txn, ws_t *ws, uint64_t rev,
                          const reel_wbuf_t *w);

/* Writes rec as the key's current record, in its place ('t' when
 * deleted, else 'c'), and removes the one in the other place if prev (the
 * key's record before, or NULL) was there; for a version also its retained
 * record. Emits it. */
static reel_code_t commit_record(store_txn_t *txn, ws_upload_t *u,
                                 const ws_artifact_t *prev,
                                 ws_artifact_t *rec, uint32_t type,
                                 reel_status_t *st) {
    reel_wbuf_t w = {0};
    unsigned char *ck = NULL, *ok = NULL, *vk = NULL;
    size_t cklen, vklen;
    reel_code_t rc = REEL_OK;

    if (rec_encode(rec, &w) != 0 ||
        (ck = rec_key(rec->deleted ? 't' : 'c', u->ns, u->ns_len, u->key,
                      u->key_len, 0, 0, &cklen)) == NULL ||
        (prev != NULL && !prev->deleted != !rec->deleted &&
         (ok = rec_key(prev->deleted ? 't' : 'c', u->ns, u->ns_len, u->key,
                       u->key_len, 0, 0, &cklen)) == NULL) ||
        (!rec->deleted &&
         (vk = rec_key('v', u->ns, u->ns_len, u->key, u->key_len, 1,
                       rec->version, &vklen)) == NULL)) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    store_txn_put(txn, u->ws->cf, ck, cklen, w.p, w.len);
    if (ok != NULL) /* the same length: only the tag differs */
        store_txn_delete(txn, u->ws->cf, ok, cklen);
    if (vk != NULL)
        store_txn_put(txn, u->ws->cf, vk, vklen, w.p, w.len);
    store_txn_emit(txn, WS_MODULE_ID, type, w.p, w.len);
    history_write(txn, u->ws, rec->revision, &w);
    if (rec_decode(w.p, w.len, &u->res.artifact) != 0)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
out:
    reel_wbuf_fini(&w);
    free(ck);
    free(ok);
    free(vk);
    return rc;
}

/* The history entry of the change at rev, and, every HISTORY_TRIM_EVERY
 * revisions, a trim of what fell out of the window. */
static void history_write(store_txn_t *txn, ws_t *ws, uint64_t rev,
                          const reel_wbuf_t *w) {
    unsigned char hk[9], lo[9], hi[9], tk[1] = {'H'}, tv[8];

    hk[0] = 'h';
    reel_be64_put(hk + 1, rev);
    store_txn_put_blind(txn, ws->cf, hk, 9, w->p, w->len);
    if (rev <= WS_HISTORY_WINDOW || rev - ws->trimmed_at < HISTORY_TRIM_EVERY)
        return;
    ws->trimmed_at = rev;
    lo[0] = hi[0] = 'h';
    reel_be64_put(lo + 1, 0);
    reel_be64_put(hi + 1, rev - WS_HISTORY_WINDOW);
    store_txn_delete_range_blind(txn, ws->cf, lo, 9, hi, 9);
    reel_be64_put(tv, rev - WS_HISTORY_WINDOW);
    store_txn_put(txn, ws->cf, tk, 1, tv, 8);
}

static reel_code_t put_apply(store_txn_t *txn, void *arg, reel_status_t *st) {
    ws_upload_t *u = arg;
    ws_artifact_t cur, rec = {0};
    unsigned char mk[9];
    int exists;
    reel_code_t rc;

    u->n_pruned = 0;
    ws_artifact_fini(&u->res.artifact);
    rc = read_current(txn, u->ws, u->ns, u->ns_len, u->key, u->key_len, &cur,
                      st);
    if (rc != REEL_OK && rc != REEL_NOT_FOUND)
        return rc;
    exists = rc == REEL_OK;
    if ((rc = check_precond(&cur, exists, u->precond, u->version, u->ns,
                            u->key, st)) != REEL_OK)
        goto out;
    rec.ns = u->ns;
    rec.key = u->key;
    rec.content_type = u->content_type;
    rec.version = (exists ? cur.version : 0) + 1;
    rec.size = u->received;
    memcpy(rec.sha256, u->digest, WS_SHA256_LEN);
    rec.blob_ = u->blob;
    rec.chunk_size = (uint32_t)WS_CHUNK;
    rec.revision = store_txn_next_revision(txn);
    rec.updated_at_ms = store_txn_now_ms(txn);
    rec.created_at_ms =
        exists && !cur.deleted ? cur.created_at_ms : rec.updated_at_ms;
    rec.n_meta = u->n_meta;
    rec.meta_keys = (const char **)u->meta_keys;
    rec.meta_vals = (const char **)u->meta_vals;
    if ((rc = commit_record(txn, u, exists ? &cur : NULL, &rec, WS_EVENT_PUT,
                            st)) != REEL_OK)
        goto out;
    if (u->inline_) { /* in this commit's synced batch, with its record */
        unsigned char k[16];

        blob_key(k, u->blob, 0);
        store_txn_put_blind(txn, u->ws->chunks, k, 16, u->buf, u->buf_len);
    }
    if (u->marked) {
        mark_key(mk, u->blob);
        store_txn_delete(txn, u->ws->cf, mk, 9);
    }
    rc = prune(txn, u, u->ws->lim.versions_keep, st);
out:
    ws_artifact_fini(&cur);
    return rc;
}

static void commit_done(store_req_t *req) {
    ws_upload_t *u = req->arg;
    ws_t *ws = u->ws;

    reel_status_move(&u->res.status, &req->status);
    if (u->res.status.code == REEL_OK) {
        if (!u->is_delete)
            atomic_fetch_sub(&ws->staged, 1);
        for (size_t i = 0; i < u->n_pruned; i++)
            reclaim_queue(ws, u->pruned[i], 0);
    } else {
        ws_artifact_fini(&u->res.artifact);
        if (!u->is_delete)
            reclaim_queue(ws, u->blob, 1);
    }
    u->done(u->done_arg, &u->res);
    upload_free(u);
}

reel_code_t ws_upload_commit(ws_upload_t *u, ws_done_fn done, void *arg,
                             reel_status_t *st) {
    char have[2 * WS_SHA256_LEN + 1], want[2 * WS_SHA256_LEN + 1];
    unsigned int dlen = 0;
    reel_code_t rc;

    /* A small artifact's one chunk goes with its record, in the commit's
     * synced batch: no mark, no flush of the bulk family (a file and
     * several syncs for a few bytes). The others' last chunk joins them. */
    if (u->next_index == 0 && u->buf_len > 0 && u->buf_len <= WS_INLINE_MAX)
        u->inline_ = 1;
    else if ((rc = flush_chunk(u, st)) != REEL_OK)
        goto fail;
    if (u->has_size && u->received != u->size) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "size: the header said %llu bytes, %llu were "
                             "sent",
                             (unsigned long long)u->size,
                             (unsigned long long)u->received);
        goto fail;
    }
    if (EVP_DigestFinal_ex(u->md, u->digest, &dlen) != 1 ||
        dlen != WS_SHA256_LEN) {
        rc = reel_status_set(st, REEL_INTERNAL, "SHA-256 failed");
        goto fail;
    }
    if (u->has_sha && memcmp(u->sha, u->digest, WS_SHA256_LEN) != 0) {
        reel_hex(u->sha, WS_SHA256_LEN, want);
        reel_hex(u->digest, WS_SHA256_LEN, have);
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "sha256: the header said %s, the bytes received "
                             "hash to %s; nothing was stored",
                             want, have);
        goto fail;
    }
    /* The bytes are durable before any record can name them. */
    if (u->next_index > 0 &&
        (rc = store_bulk_sync(u->ws->store, u->ws->chunks, st)) != REEL_OK)
        goto fail;
    u->done = done;
    u->done_arg = arg;
    u->req.apply = put_apply;
    u->req.done = commit_done;
    u->req.arg = u;
    u->req.grows = 1;
    if ((rc = store_submit(u->ws->store, &u->req)) != REEL_OK) {
        reel_status_move(st, &u->req.status);
        goto fail;
    }
    return REEL_OK;
fail:
    ws_upload_abort(u);
    return rc;
}

/* ---- Deletes ---------------------------------------------------------------- */

static reel_code_t delete_apply(store_txn_t *txn, void *arg,
                                reel_status_t *st) {
    ws_upload_t *u = arg;
    ws_artifact_t cur, rec = {0};
    reel_code_t rc;

    u->n_pruned = 0;
    u->res.existed = 0;
    ws_artifact_fini(&u->res.artifact);
    rc = read_current(txn, u->ws, u->ns, u->ns_len, u->key, u->key_len, &cur,
                      st);
    if (rc != REEL_OK && rc != REEL_NOT_FOUND)
        return rc;
    if ((rc = check_precond(&cur, rc == REEL_OK, u->precond, u->version,
                            u->ns, u->key, st)) != REEL_OK)
        goto out;
    if (cur.mem_ == NULL || cur.deleted) {
        /* Nothing to delete: the tombstone there, if any, is the answer. */
        if (cur.mem_ != NULL) {
            u->res.artifact = cur;
            memset(&cur, 0, sizeof(cur));
        }
        goto out;
    }
    u->res.existed = 1;
    rec.ns = u->ns;
    rec.key = u->key;
    rec.content_type = "";
    rec.deleted = 1;
    rec.version = cur.version + 1;
    rec.revision = store_txn_next_revision(txn);
    rec.updated_at_ms = store_txn_now_ms(txn);
    rec.created_at_ms = rec.updated_at_ms;
    if ((rc = commit_record(txn, u, &cur, &rec, WS_EVENT_DELETE, st)) !=
        REEL_OK)
        goto out;
    rc = prune(txn, u, 0, st);
out:
    ws_artifact_fini(&cur);
    return rc;
}

reel_code_t ws_delete_submit(ws_t *ws, const char *ns, size_t ns_len,
                             const char *key, size_t key_len,
                             ws_precond_t precond, uint64_t version,
                             ws_done_fn done, void *arg, reel_status_t *st) {
    ws_upload_t *u;
    reel_code_t rc;

    if ((rc = check_names(&ws->lim, ns, ns_len, key, key_len, st)) != REEL_OK)
        return rc;
    if (precond != WS_PRECOND_NONE && precond != WS_PRECOND_VERSION)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "precondition: a delete takes NONE or VERSION");
    if ((u = calloc(1, sizeof(*u))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    u->ws = ws;
    u->is_delete = 1;
    u->ns = copy_str(ns, ns_len);
    u->key = copy_str(key, key_len);
    u->ns_len = ns_len;
    u->key_len = key_len;
    u->precond = precond;
    u->version = version;
    u->done = done;
    u->done_arg = arg;
    if (u->ns == NULL || u->key == NULL) {
        upload_free(u);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    u->req.apply = delete_apply;
    u->req.done = commit_done;
    u->req.arg = u;
    if ((rc = store_submit(ws->store, &u->req)) != REEL_OK) {
        reel_status_move(st, &u->req.status);
        upload_free(u);
    }
    return rc;
}

/* ---- Reads ------------------------------------------------------------------ */

struct ws_reader {
    ws_t *ws;
    store_snapshot_t *snap;
    store_iter_t *it;
    uint64_t blob, size, pos, end; /* bytes [pos, end) are still to go */
    uint32_t chunk;
    int started;
    uint64_t at;   /* the chunk the iterator is on, once started */
    size_t piece;  /* at most this many bytes a call (0: a chunk) */
    char what[96]; /* "artifact ns/key version N": in errors */
};

static reel_code_t get_record(ws_t *ws, const store_snapshot_t *snap,
                              const char *ns, size_t ns_len, const char *key,
                              size_t key_len, uint64_t version,
                              ws_artifact_t *out, reel_status_t *st) {
    unsigned char *k;
    size_t klen, vlen;
    char *val = NULL;
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if ((rc = check_names(&ws->lim, ns, ns_len, key, key_len, st)) != REEL_OK)
        return rc;
    if (version == 0) {
        rc = read_either(ws, NULL, snap, ns, ns_len, key, key_len, &val,
                         &vlen, st);
    } else {
        if ((k = rec_key('v', ns, ns_len, key, key_len, 1, version, &klen)) ==
            NULL)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        rc = store_snapshot_get(ws->store, snap, ws->cf, k, klen, &val, &vlen,
                                st);
        free(k);
    }
    if (rc == REEL_NOT_FOUND) {
        ws_artifact_t cur;

        reel_status_fini(st);
        /* Which: a version never written, the tombstone's, or one no
         * longer kept. The current record says. */
        if (version == 0)
            return reel_status_set(st, REEL_NOT_FOUND,
                                   "artifact %.*s/%.*s not found", (int)ns_len,
                                   ns, (int)key_len, key);
        /* Not found, or deleted (cur filled in, every version's bytes
         * freed): that message says it. */
        if (get_record(ws, snap, ns, ns_len, key, key_len, 0, &cur, st) !=
            REEL_OK) {
            ws_artifact_fini(&cur);
            return st->code;
        }
        rc = version > cur.version
                 ? reel_status_set(st, REEL_NOT_FOUND,
                                   "artifact %.*s/%.*s: version %llu was "
                                   "never written (the current version is "
                                   "%llu)",
                                   (int)ns_len, ns, (int)key_len, key,
                                   (unsigned long long)version,
                                   (unsigned long long)cur.version)
                 : reel_status_set(st, REEL_NOT_FOUND,
                                   "artifact %.*s/%.*s: version %llu is not "
                                   "retained (--workspace-versions-keep %u "
                                   "keeps the last versions' bytes)",
                                   (int)ns_len, ns, (int)key_len, key,
                                   (unsigned long long)version,
                                   ws->lim.versions_keep);
        ws_artifact_fini(&cur);
        return rc;
    }
    if (rc != REEL_OK)
        return rc;
    if (rec_decode(val, vlen, out) != 0)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "artifact %.*s/%.*s: its record does not decode",
                             (int)ns_len, ns, (int)key_len, key);
    else if (out->deleted)
        rc = reel_status_set(st, REEL_NOT_FOUND,
                             "artifact %.*s/%.*s not found: deleted at "
                             "version %llu",
                             (int)ns_len, ns, (int)key_len, key,
                             (unsigned long long)out->version);
    free(val);
    return rc;
}

reel_code_t ws_stat(ws_t *ws, const char *ns, size_t ns_len, const char *key,
                    size_t key_len, uint64_t version, ws_artifact_t *out,
                    reel_status_t *st) {
    return get_record(ws, NULL, ns, ns_len, key, key_len, version, out, st);
}

reel_code_t ws_read_open(ws_t *ws, const char *ns, size_t ns_len,
                         const char *key, size_t key_len, uint64_t version,
                         uint64_t offset, uint64_t length, ws_artifact_t *out,
                         ws_reader_t **rp, reel_status_t *st) {
    ws_reader_t *r;
    reel_code_t rc;

    *rp = NULL;
    memset(out, 0, sizeof(*out));
    if ((r = calloc(1, sizeof(*r))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    r->ws = ws;
    if ((rc = store_snapshot_create(ws->store, &r->snap, st)) != REEL_OK)
        goto fail;
    if ((rc = get_record(ws, r->snap, ns, ns_len, key, key_len, version, out,
                         st)) != REEL_OK)
        goto fail;
    if (offset > out->size) {
        rc = reel_status_set(st, REEL_OUT_OF_RANGE,
                             "offset: %llu, past the artifact's size %llu",
                             (unsigned long long)offset,
                             (unsigned long long)out->size);
        goto fail;
    }
    r->blob = out->blob_;
    r->size = out->size;
    r->chunk = out->chunk_size;
    r->pos = offset;
    r->end = length == 0 || length > out->size - offset ? out->size
                                                         : offset + length;
    snprintf(r->what, sizeof(r->what), "artifact %.*s/%.*s version %llu",
             (int)(ns_len > 32 ? 32 : ns_len), ns,
             (int)(key_len > 32 ? 32 : key_len), key,
             (unsigned long long)out->version);
    if (r->pos < r->end &&
        (r->it = store_iter_create(ws->store, ws->chunks, r->snap)) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    *rp = r;
    return REEL_OK;
fail:
    ws_artifact_fini(out);
    ws_reader_destroy(r);
    return rc;
}

reel_code_t ws_read_next(ws_reader_t *r, const void **p, size_t *n,
                         reel_status_t *st) {
    uint64_t index, skip, want;
    unsigned char k[16];
    size_t klen, vlen;
    const char *key, *val;

    *p = NULL;
    *n = 0;
    if (r->pos >= r->end)
        return REEL_OK;
    index = r->pos / r->chunk;
    skip = r->pos % r->chunk;
    blob_key(k, r->blob, index);
    if (r->it == NULL) { /* released between chunks */
        if ((r->it = store_iter_create(r->ws->store, r->ws->chunks,
                                       r->snap)) == NULL)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        r->started = 0;
    }
    /* A chunk read in pieces stays where it is until its last. */
    if (!r->started) {
        store_iter_seek(r->it, k, 16);
        r->started = 1;
    } else if (index != r->at) {
        store_iter_next(r->it);
    }
    r->at = index;
    if (!store_iter_valid(r->it)) {
        if (store_iter_status(r->it, st) != REEL_OK)
            return st->code;
        return reel_status_set(st, REEL_DATA_LOSS,
                               "%s: chunk %llu is missing", r->what,
                               (unsigned long long)index);
    }
    key = store_iter_key(r->it, &klen);
    val = store_iter_value(r->it, &vlen);
    want = r->size - index * r->chunk;
    if (want > r->chunk)
        want = r->chunk;
    if (klen != 16 || memcmp(key, k, 16) != 0)
        return reel_status_set(st, REEL_DATA_LOSS,
                               "%s: chunk %llu is missing", r->what,
                               (unsigned long long)index);
    if (vlen != want)
        return reel_status_set(st, REEL_DATA_LOSS,
                               "%s: chunk %llu holds %zu bytes, not %llu",
                               r->what, (unsigned long long)index, vlen,
                               (unsigned long long)want);
    *p = val + skip;
    *n = (size_t)(want - skip);
    if (*n > r->end - r->pos)
        *n = (size_t)(r->end - r->pos);
    if (r->piece > 0 && *n > r->piece)
        *n = r->piece;
    r->pos += *n;
    return REEL_OK;
}

void ws_read_release(ws_reader_t *r) {
    if (r->it != NULL && r->started && r->pos % r->chunk == 0) {
        store_iter_destroy(r->it);
        r->it = NULL;
    }
}

void ws_reader_set_piece(ws_reader_t *r, size_t max) {
    r->piece = max;
}

void ws_reader_destroy(ws_reader_t *r) {
    if (r == NULL)
        return;
    store_iter_destroy(r->it);
    if (r->snap != NULL)
        store_snapshot_release(r->ws->store, r->snap);
    free(r);
}

/* Byte order, a prefix first. */
static int key_cmp(const unsigned char *a, size_t alen, const unsigned char *b,
                   size_t blen) {
    int c = memcmp(a, b, alen < blen ? alen : blen);

    return c != 0 ? c : alen < blen ? -1 : alen > blen;
}

reel_code_t ws_list(ws_t *ws, const char *ns, size_t ns_len,
                    const char *prefix, size_t prefix_len,
                    const char *start_after, size_t start_after_len,
                    uint32_t limit, int include_deleted,
                    const reel_page_t *page, ws_artifact_t **items, size_t *n,
                    int *more, reel_status_t *st) {
    unsigned char *base = NULL, *seek = NULL, *tbase = NULL;
    size_t blen = 0, slen = 0, used = 0, cap;
    store_merge_t m = {{NULL, NULL}, {NULL, NULL}, {0, 0}, {0, 0}};
    store_snapshot_t *snap = NULL;
    ws_artifact_t *out = NULL;
    reel_code_t rc = REEL_OK;
    int from;

    *items = NULL;
    *n = 0;
    *more = 0;
    if ((rc = reel_check_charset("namespace", ns, ns_len, ws->lim.max_namespace,
                                 WS_NAMESPACE_CHARS, st)) != REEL_OK)
        return rc;
    if (limit > WS_LIST_MAX)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "limit: at most %d (got %u)", WS_LIST_MAX, limit);
    cap = limit ? limit : WS_LIST_DEFAULT;
    /* 'c' ns \0 prefix: every key with the prefix sorts from here; the
     * tombstones, with include_deleted, from 't' ns \0 prefix, merged in
     * key order at one snapshot (a key moves between the two). */
    base = rec_key('c', ns, ns_len, prefix, prefix_len, 0, 0, &blen);
    seek = rec_key('c', ns, ns_len, start_after, start_after_len, 0, 0, &slen);
    tbase = rec_key('t', ns, ns_len, prefix, prefix_len, 0, 0, &blen);
    out = calloc(cap, sizeof(*out));
    if (base == NULL || seek == NULL || tbase == NULL || out == NULL ||
        (include_deleted &&
         (rc = store_snapshot_create(ws->store, &snap, st)) != REEL_OK)) {
        if (rc == REEL_OK)
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                 "out of memory");
        goto out;
    }
    /* From start_after, or from the prefix when start_after sorts before
     * it; one past the prefix's keys leaves nothing to list. */
    from = start_after_len > 0 && key_cmp(seek, slen, base, blen) >= 0;
    for (int i = 0; i < 1 + include_deleted; i++) {
        unsigned char *b = i ? tbase : base;

        m.base[i] = (const char *)b, m.base_len[i] = blen, m.skip[i] = 1;
        m.it[i] = store_iter_prefix(ws->store, ws->cf, snap, b, blen);
        if (m.it[i] == NULL) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                 "out of memory");
            goto out;
        }
        seek[0] = i ? 't' : 'c';
        if (from)
            store_iter_seek(m.it[i], seek, slen);
        else
            store_iter_seek(m.it[i], b, blen);
    }
    for (;;) {
        size_t klen, vlen;
        const char *v;
        int place;
        const char *k = store_merge_key(&m, &klen, &v, &vlen, &place);
        ws_artifact_t a;

        if (k == NULL)
            break;
        if (start_after_len > 0 && klen == slen - 1 &&
            memcmp(k, seek + 1, klen) == 0) {
            store_iter_next(m.it[place]);
            continue;
        }
        if (rec_decode(v, vlen, &a) != 0 || a.deleted != place) {
            ws_artifact_fini(&a);
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "namespace %.*s: a record does not decode",
                                 (int)ns_len, ns);
            goto out;
        }
        if (*n == cap || !reel_page_take(page, *n, &used, &a)) {
            ws_artifact_fini(&a);
            *more = 1;
            break;
        }
        out[(*n)++] = a;
        store_iter_next(m.it[place]);
    }
    rc = store_merge_status(&m, st);
out:
    store_iter_destroy(m.it[0]);
    store_iter_destroy(m.it[1]);
    store_snapshot_release(ws->store, snap);
    free(base);
    free(tbase);
    free(seek);
    if (rc != REEL_OK) {
        for (size_t i = 0; i < *n; i++)
            ws_artifact_fini(&out[i]);
        free(out);
        *n = 0;
        out = NULL;
    }
    *items = out;
    return rc;
}

/* ---- Watches ------------------------------------------------------------------ */

enum { PHASE_SNAPSHOT, PHASE_TAIL };

struct ws_watch {
    ws_t *ws;
    feed_sub_t *sub;
    const ws_watch_sink_t *sink;
    void *arg;
    char *ns, *prefix;
    size_t ns_len, prefix_len;
    int phase;
    int marker; /* BOOTSTRAP_DONE is owed when it goes live */
    store_snapshot_t *snap; /* the snapshot phase's */
    unsigned char *last;    /* the last key the snapshot sent */
    size_t last_len;
};

static int watch_matches(const ws_watch_t *w, const ws_artifact_t *a) {
    return strlen(a->ns) == w->ns_len && memcmp(a->ns, w->ns, w->ns_len) == 0 &&
           strncmp(a->key, w->prefix, w->prefix_len) == 0;
}

/* Sends the current records after w->last at w->snap. */
static int watch_replay_snapshot(ws_watch_t *w, uint64_t *cursor,
                                 reel_status_t *why) {
    size_t blen;
    unsigned char *base = rec_key('c', w->ns, w->ns_len, w->prefix,
                                  w->prefix_len, 0, 0, &blen);
    store_iter_t *it =
        base ? store_iter_prefix(w->ws->store, w->ws->cf, w->snap, base, blen)
             : NULL;
    int r = FEED_OK;

    if (base == NULL || it == NULL) {
        reel_status_set(why, REEL_RESOURCE_EXHAUSTED, "out of memory");
        r = FEED_END;
        goto out;
    }
    if (w->last != NULL)
        store_iter_seek(it, w->last, w->last_len);
    else
        store_iter_seek(it, base, blen);
    for (; store_iter_valid(it); store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        ws_artifact_t a;
        unsigned char *nl;

        if (klen < blen || memcmp(k, base, blen) != 0)
            break;
        if (w->last != NULL && klen == w->last_len &&
            memcmp(k, w->last, klen) == 0)
            continue;
        if (rec_decode(v, vlen, &a) != 0) {
            reel_status_set(why, REEL_DATA_LOSS,
                            "namespace %s: a record does not decode", w->ns);
            r = FEED_END;
            goto out;
        }
        if (!a.deleted &&
            w->sink->deliver(w->arg, WS_WATCH_CURRENT, a.revision, &a) != 0) {
            ws_artifact_fini(&a);
            r = FEED_FULL;
            goto out;
        }
        ws_artifact_fini(&a);
        if ((nl = realloc(w->last, klen)) == NULL) {
            reel_status_set(why, REEL_RESOURCE_EXHAUSTED, "out of memory");
            r = FEED_END;
            goto out;
        }
        memcpy(nl, k, klen);
        w->last = nl;
        w->last_len = klen;
    }
    if (store_iter_status(it, why) != REEL_OK) {
        r = FEED_END;
        goto out;
    }
    *cursor = store_snapshot_revision(w->snap);
    store_snapshot_release(w->ws->store, w->snap);
    w->snap = NULL;
    w->phase = PHASE_TAIL;
out:
    store_iter_destroy(it);
    free(base);
    return r;
}

/* Sends the history after *cursor up to a snapshot taken now. */
static int watch_replay_tail(ws_watch_t *w, uint64_t *cursor,
                             reel_status_t *why) {
    store_snapshot_t *snap = NULL;
    store_iter_t *it = NULL;
    unsigned char from[9], tk[1] = {'H'};
    char *tv = NULL;
    size_t tvlen;
    uint64_t upto;
    int r = FEED_OK;
    reel_code_t rc;

    if (store_snapshot_create(w->ws->store, &snap, why) != REEL_OK)
        return FEED_END;
    upto = store_snapshot_revision(snap);
    rc = store_snapshot_get(w->ws->store, snap, w->ws->cf, tk, 1, &tv, &tvlen,
                            why);
    if (rc == REEL_OK && tvlen != 8) { /* unread, nothing trimmed would show */
        reel_status_set(why, REEL_DATA_LOSS,
                        "the workspace history's trim mark is corrupt (%zu "
                        "bytes)",
                        tvlen);
        r = FEED_END;
        goto out;
    }
    if (rc == REEL_OK &&
        *cursor + 1 < reel_be64_get((const unsigned char *)tv)) {
        reel_status_set(why, REEL_OUT_OF_RANGE,
                        "from_revision: %llu is past the workspace history "
                        "(kept from revision %llu): watch from a snapshot",
                        (unsigned long long)*cursor,
                        (unsigned long long)reel_be64_get(
                            (const unsigned char *)tv));
        r = FEED_END;
        goto out;
    }
    if (rc != REEL_OK && rc != REEL_NOT_FOUND) {
        r = FEED_END;
        goto out;
    }
    reel_status_fini(why);
    if ((it = store_iter_create(w->ws->store, w->ws->cf, snap)) == NULL) {
        reel_status_set(why, REEL_RESOURCE_EXHAUSTED, "out of memory");
        r = FEED_END;
        goto out;
    }
    from[0] = 'h';
    reel_be64_put(from + 1, *cursor + 1);
    for (store_iter_seek(it, from, 9); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        uint64_t rev;
        ws_artifact_t a;

        if (klen != 9 || k[0] != 'h')
            break;
        rev = reel_be64_get((const unsigned char *)k + 1);
        if (rev > upto)
            break;
        if (rec_decode(v, vlen, &a) != 0) {
            reel_status_set(why, REEL_DATA_LOSS,
                            "workspace history: revision %llu does not "
                            "decode",
                            (unsigned long long)rev);
            r = FEED_END;
            goto out;
        }
        if (watch_matches(w, &a) &&
            w->sink->deliver(w->arg,
                             a.deleted ? WS_WATCH_DELETE : WS_WATCH_PUT, rev,
                             &a) != 0) {
            ws_artifact_fini(&a);
            *cursor = rev - 1;
            r = FEED_FULL;
            goto out;
        }
        ws_artifact_fini(&a);
    }
    if (store_iter_status(it, why) != REEL_OK) {
        r = FEED_END;
        goto out;
    }
    *cursor = upto;
out:
    free(tv);
    store_iter_destroy(it);
    store_snapshot_release(w->ws->store, snap);
    return r;
}

static int watch_replay(void *arg, uint64_t *cursor, reel_status_t *why) {
    ws_watch_t *w = arg;

    if (w->phase == PHASE_SNAPSHOT)
        return watch_replay_snapshot(w, cursor, why);
    return watch_replay_tail(w, cursor, why);
}

static int watch_go_live(void *arg, uint64_t cursor) {
    ws_watch_t *w = arg;

    if (!w->marker)
        return FEED_OK;
    if (w->sink->deliver(w->arg, WS_WATCH_BOOTSTRAP_DONE, cursor, NULL) != 0)
        return FEED_FULL;
    w->marker = 0;
    return FEED_OK;
}

static int watch_match(void *arg, const void *item) {
    return watch_matches(arg, item);
}

static int watch_deliver(void *arg, void *item) {
    ws_watch_t *w = arg;
    ws_artifact_t *a = item;

    return w->sink->deliver(w->arg, a->deleted ? WS_WATCH_DELETE
                                               : WS_WATCH_PUT,
                            a->revision, a) != 0
               ? FEED_FULL
               : FEED_OK;
}

static void watch_end(void *arg, const reel_status_t *st) {
    ws_watch_t *w = arg;

    w->sink->end(w->arg, st);
}

static void watch_wake(void *arg) {
    ws_watch_t *w = arg;

    if (w->sink->wake != NULL)
        w->sink->wake(w->arg);
}

static const feed_ops_t watch_ops = {
    .replay = watch_replay,
    .go_live = watch_go_live,
    .match = watch_match,
    .deliver = watch_deliver,
    .end = watch_end,
    .wake = watch_wake,
};

reel_code_t ws_watch_create(ws_t *ws, const ws_watch_args_t *a,
                            const ws_watch_sink_t *sink, void *arg,
                            ws_watch_t **out, reel_status_t *st) {
    feed_sub_args_t fa = {0};
    ws_watch_t *w;
    reel_code_t rc;

    *out = NULL;
    if ((rc = reel_check_charset("namespace", a->ns, a->ns_len,
                                 ws->lim.max_namespace, WS_NAMESPACE_CHARS,
                                 st)) != REEL_OK)
        return rc;
    if (a->prefix_len > ws->lim.max_key ||
        !reel_utf8_valid(a->prefix, a->prefix_len))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "prefix: at most %zu bytes of UTF-8",
                               ws->lim.max_key);
    if (a->start != WS_WATCH_SNAPSHOT && a->start != WS_WATCH_NOW &&
        a->start != WS_WATCH_FROM_REVISION)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "start: unknown value %d", (int)a->start);
    if (a->start == WS_WATCH_FROM_REVISION &&
        a->from_revision > store_revision(ws->store))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "from_revision: %llu is past the head %llu",
                               (unsigned long long)a->from_revision,
                               (unsigned long long)store_revision(ws->store));
    if ((w = calloc(1, sizeof(*w))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    w->ws = ws;
    w->sink = sink;
    w->arg = arg;
    w->ns = copy_str(a->ns, a->ns_len);
    w->prefix = copy_str(a->prefix, a->prefix_len);
    w->ns_len = a->ns_len;
    w->prefix_len = a->prefix_len;
    if (w->ns == NULL || w->prefix == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    w->phase = a->start == WS_WATCH_SNAPSHOT ? PHASE_SNAPSHOT : PHASE_TAIL;
    w->marker = a->start != WS_WATCH_NOW;
    if (w->phase == PHASE_SNAPSHOT &&
        (rc = store_snapshot_create(ws->store, &w->snap, st)) != REEL_OK)
        goto fail;
    fa.ops = &watch_ops;
    fa.arg = w;
    fa.cursor = a->start == WS_WATCH_FROM_REVISION ? a->from_revision
                : a->start == WS_WATCH_NOW         ? store_revision(ws->store)
                                                   : 0;
    if ((rc = feed_sub_create(ws->hub, &fa, &w->sub, st)) != REEL_OK)
        goto fail;
    *out = w;
    return REEL_OK;
fail:
    ws_watch_destroy(w);
    return rc;
}

void ws_watch_pump(ws_watch_t *w) { feed_sub_pump(w->sub); }

void ws_watch_cancel(ws_watch_t *w) { feed_sub_cancel(w->sub); }

void ws_watch_destroy(ws_watch_t *w) {
    if (w == NULL)
        return;
    feed_sub_destroy(w->sub);
    if (w->snap != NULL)
        store_snapshot_release(w->ws->store, w->snap);
    free(w->last);
    free(w->ns);
    free(w->prefix);
    free(w);
}

void ws_publish(ws_t *ws, const store_change_t *changes, size_t n) {
    feed_publish_begin(ws->hub);
    for (size_t i = 0; i < n; i++) {
        const store_change_t *c = &changes[i];
        ws_artifact_t a;

        if (c->module != WS_MODULE_ID || feed_hub_idle(ws->hub))
            continue;
        if (ws_change_decode(c, &a) != 1) {
            feed_publish_lost(ws->hub, c->revision);
            continue;
        }
        feed_publish(ws->hub, NULL, 0, c->revision, &a);
        ws_artifact_fini(&a);
    }
    feed_publish_end(ws->hub, n > 0 ? changes[n - 1].revision : 0);
}
