/*
 * workspace/workspace.h: binary artifacts beside the KV: files stored in
 * chunks, versioned, each put and delete a committed change.
 *
 * An artifact is a namespace and a key (UTF-8, '/' and '.' nest) with a
 * version that only grows (each put and each delete adds one; a delete
 * writes a tombstone), a size, a SHA-256 computed here, a content type and
 * free metadata. Its bytes live in a family of their own, in chunks of
 * WS_CHUNK bytes, and never pass through the store's writer: an upload
 * stages them beside it under an upload id, then one small commit through
 * the writer makes the version visible (workspace.c says how, and what a
 * crash leaves).
 *
 * Threading: ws_t is thread-safe. An upload (ws_upload_t) belongs to one
 * thread at a time: its owner calls write, then commit or abort, in order.
 * A reader belongs to one thread at a time.
 */
#ifndef REEL_WORKSPACE_WORKSPACE_H
#define REEL_WORKSPACE_WORKSPACE_H

#include <stddef.h>
#include <stdint.h>

#include "base/page.h"
#include "base/status.h"
#include "store/store.h"

/* Stored chunk size, and the largest chunk a client may send at once. */
#define WS_CHUNK ((size_t)1 << 20)
/*
 * An artifact of at most this many bytes commits them with its record.
 * Below the chunk family's blob size: a larger one would share a blob file
 * with the chunks of uploads staged meanwhile, and keep it, all of their
 * bytes, on disk after they were reclaimed.
 */
#define WS_INLINE_MAX ((size_t)STORE_BULK_MIN_BLOB - 1)
#define WS_DEFAULT_MAX_ARTIFACT ((uint64_t)5 << 30)
#define WS_DEFAULT_VERSIONS_KEEP 1
#define WS_DEFAULT_MAX_UPLOADS 64
#define WS_DEFAULT_MAX_TENANT_UPLOADS 16
#define WS_DEFAULT_MAX_NAMESPACE 256
#define WS_DEFAULT_MAX_KEY 1024
#define WS_MAX_CONTENT_TYPE 256
#define WS_MAX_METADATA 64           /* entries */
#define WS_MAX_METADATA_BYTES 16384  /* keys and values together */
#define WS_LIST_DEFAULT 100
#define WS_LIST_MAX 1000
#define WS_SHA256_LEN 32
/* A namespace is one token of artifact.<namespace>.<key...>: the KV's
 * namespace characters. */
#define WS_NAMESPACE_CHARS "A-Za-z0-9_:/-"

/* The module field of its changes (store_change_t); in memory only. */
#define WS_MODULE_ID 22

/* Its column families, for store_open(): "ws" (records, staging marks)
 * and "ws_chunks" (the bytes), ended by a NULL name. */
extern const store_cf_desc_t ws_cfs[];

typedef struct ws ws_t;
typedef struct ws_upload ws_upload_t;
typedef struct ws_reader ws_reader_t;

typedef struct ws_limits {
    uint64_t max_artifact;  /* bytes; 0 = default */
    uint32_t versions_keep; /* versions whose bytes are kept; 0 = default */
    uint32_t max_uploads;   /* uploads at once; 0 = default */
    size_t max_namespace;   /* bytes; 0 = default */
    size_t max_key;         /* bytes; 0 = default */
    /* Uploads of one tenant at once, so one tenant cannot take every
     * place of max_uploads: a tenant's are those whose namespaces start
     * with the same prefix, of the length ns_scope gives (0: none, and
     * only max_uploads applies; NULL: no namespace has one). 0 = default.
     */
    uint32_t max_tenant_uploads;
    size_t (*ns_scope)(const char *ns);
} ws_limits_t;

typedef enum ws_precond {
    WS_PRECOND_NONE = 0,
    WS_PRECOND_ABSENT = 1,  /* missing or deleted */
    WS_PRECOND_VERSION = 2, /* the current version must be `version` */
} ws_precond_t;

/* Change types (store_change_t.type). */
enum { WS_EVENT_PUT = 1, WS_EVENT_DELETE = 2 };

/*
 * One version's record. The strings and arrays point into mem_: valid
 * until ws_artifact_fini().
 */
typedef struct ws_artifact {
    const char *ns, *key, *content_type;
    uint64_t version, size, revision;
    uint8_t sha256[WS_SHA256_LEN]; /* zeros for a tombstone */
    uint32_t chunk_size;
    int64_t created_at_ms, updated_at_ms;
    int deleted;
    size_t n_meta;
    const char **meta_keys, **meta_vals;
    uint64_t blob_; /* private: where its chunks are */
    void *mem_;
} ws_artifact_t;

void ws_artifact_fini(ws_artifact_t *a);

/*
 * Opens the module over store (its families declared to store_open): checks
 * the limits, starts the reclaimer thread, and reclaims every upload a
 * crash left staged (before it returns, so the space is back when reeld
 * serves). Destroy with ws_destroy().
 */
reel_code_t ws_create(store_t *store, const ws_limits_t *limits, ws_t **out,
                      reel_status_t *st);

/*
 * Runs fn(arg) on one of the workspace's WS_WORKERS threads, in the order
 * given: for work that waits on the disk (an upload's chunk writes, its
 * flush), so that it never holds a thread of the caller's (a gRPC
 * poller). OK, or RESOURCE_EXHAUSTED (out of memory) or UNAVAILABLE
 * (stopping), and fn never runs.
 */
#define WS_WORKERS 2
reel_code_t ws_run(ws_t *ws, void (*fn)(void *arg), void *arg,
                   reel_status_t *st);

/* Lets the reclaimer and the workers finish what is queued, and stops
 * them. Before the store closes. Accepts NULL. */
/* Brings a data dir of an older store format (from) up to date: before
 * format 5 a deleted artifact's record sat among the live ones; it moves to
 * its own place, in one commit. Not from the writer thread. */
reel_code_t ws_upgrade(ws_t *ws, int from, reel_status_t *st);
void ws_stop(ws_t *ws);
void ws_destroy(ws_t *ws);

/* ---- Uploads --------------------------------------------------------------- */

typedef struct ws_header {
    const char *ns;
    size_t ns_len;
    const char *key;
    size_t key_len;
    const char *content_type; /* NUL-terminated; may be NULL */
    size_t n_meta;
    const char *const *meta_keys, *const *meta_vals;
    ws_precond_t precond;
    uint64_t version; /* for WS_PRECOND_VERSION */
    int has_size;
    uint64_t size;
    const uint8_t *sha256; /* WS_SHA256_LEN bytes, or NULL */
} ws_header_t;

/*
 * Checks the header (INVALID_ARGUMENT naming the field and the limit, a
 * declared size over max_artifact included), RESOURCE_EXHAUSTED when
 * max_uploads are under way, and stages a new upload: its mark is written,
 * synced, before any of its bytes, so a crash from here on is reclaimed at
 * the next start. *out is freed by ws_upload_commit() or ws_upload_abort().
 */
reel_code_t ws_upload_begin(ws_t *ws, const ws_header_t *h, ws_upload_t **out,
                            reel_status_t *st);

/*
 * Takes the next bytes. Full chunks are written as they fill (not durable
 * until the commit). INVALID_ARGUMENT when the total passes the declared
 * size or max_artifact (the upload must then be aborted), INTERNAL when
 * the write fails.
 */
reel_code_t ws_upload_write(ws_upload_t *u, const void *p, size_t n,
                            reel_status_t *st);

/* The outcome of a commit: valid only during the done call. */
typedef struct ws_write_result {
    reel_status_t status;
    ws_artifact_t artifact; /* the new version, or the tombstone */
    int existed;            /* a delete: there was a live version */
} ws_write_result_t;

typedef void (*ws_done_fn)(void *arg, ws_write_result_t *res);

/*
 * Finishes the upload: checks the size and digest the header declared
 * (INVALID_ARGUMENT / DATA_LOSS), makes the chunks durable, and queues the
 * one commit that makes the version visible. OK: done runs exactly once,
 * on the writer thread, with the outcome (a failed precondition is
 * ALREADY_EXISTS or ABORTED and stores nothing). Anything else: done
 * never runs and st says why. Either way u is taken (freed, and its
 * chunks reclaimed unless they were committed).
 */
reel_code_t ws_upload_commit(ws_upload_t *u, ws_done_fn done, void *arg,
                             reel_status_t *st);

/* Drops the upload: nothing becomes visible and its chunks are reclaimed
 * (queued to the reclaimer). Accepts NULL. */
void ws_upload_abort(ws_upload_t *u);

/* ---- Deletes ---------------------------------------------------------------- */

/*
 * Queues a delete: a live artifact gets a tombstone at version + 1 and
 * every retained version's bytes are freed; a missing or deleted one
 * writes nothing (existed 0). precond NONE or VERSION (ABORTED naming the
 * current version). OK: done runs once on the writer thread.
 */
reel_code_t ws_delete_submit(ws_t *ws, const char *ns, size_t ns_len,
                             const char *key, size_t key_len,
                             ws_precond_t precond, uint64_t version,
                             ws_done_fn done, void *arg, reel_status_t *st);

/* ---- Reads ------------------------------------------------------------------ */

/*
 * The record of version `version` (0: the current one): OK; NOT_FOUND for
 * a missing key, a tombstone (out filled, deleted 1) or a version no
 * longer retained, naming it; INVALID_ARGUMENT for bad names.
 */
reel_code_t ws_stat(ws_t *ws, const char *ns, size_t ns_len, const char *key,
                    size_t key_len, uint64_t version, ws_artifact_t *out,
                    reel_status_t *st);

/*
 * Opens a read of bytes [offset, offset + length) of a version (length 0:
 * to the end), at a snapshot: a later put or delete does not change what
 * it reads. *out is its record (as ws_stat). OUT_OF_RANGE when offset is
 * past the size, naming both. Read with ws_read_next().
 */
reel_code_t ws_read_open(ws_t *ws, const char *ns, size_t ns_len,
                         const char *key, size_t key_len, uint64_t version,
                         uint64_t offset, uint64_t length, ws_artifact_t *out,
                         ws_reader_t **r, reel_status_t *st);

/*
 * The next piece (at most one chunk): OK with *p, *n (valid until the next
 * call); OK with *n 0 at the end; DATA_LOSS naming the chunk when one is
 * missing or of the wrong size; INTERNAL when the read fails.
 */
reel_code_t ws_read_next(ws_reader_t *r, const void **p, size_t *n,
                         reel_status_t *st);
/* Lets go of the chunk the last ws_read_next() gave once all of it was
 * read (a reader between chunks then holds none of the file's bytes; the
 * next read finds its place again). */
void ws_read_release(ws_reader_t *r);

/* Caps what one ws_read_next() gives at max bytes (0: one chunk), for a
 * message budget below a chunk. */
void ws_reader_set_piece(ws_reader_t *r, size_t max);
void ws_reader_destroy(ws_reader_t *r);

/*
 * Up to limit (0 = WS_LIST_DEFAULT, at most WS_LIST_MAX) current records
 * in key order, keys starting with prefix, after start_after, within
 * page's bytes; tombstones only with include_deleted. *items (free each
 * with ws_artifact_fini, then the array with free) and *n; *more when
 * there are more.
 */
reel_code_t ws_list(ws_t *ws, const char *ns, size_t ns_len,
                    const char *prefix, size_t prefix_len,
                    const char *start_after, size_t start_after_len,
                    uint32_t limit, int include_deleted,
                    const reel_page_t *page, ws_artifact_t **items, size_t *n,
                    int *more, reel_status_t *st);

/* ---- Watches ---------------------------------------------------------------- */

/*
 * A watch of the artifacts of one namespace whose keys start with a
 * prefix, on feed/: SNAPSHOT sends each live current record (kind
 * SNAPSHOT), then BOOTSTRAP_DONE at the snapshot's revision, then every
 * put and delete after it; NOW only what commits after its creation;
 * FROM_REVISION every change after from_revision, then BOOTSTRAP_DONE
 * once caught up, then live. Changes after a revision are read from the
 * workspace's history, which keeps the last WS_HISTORY_WINDOW revisions:
 * an older from_revision ends the watch OUT_OF_RANGE naming the oldest
 * it can start from.
 */
#define WS_HISTORY_WINDOW ((uint64_t)1 << 20)

typedef enum ws_watch_start {
    WS_WATCH_SNAPSHOT = 0,
    WS_WATCH_NOW = 1,
    WS_WATCH_FROM_REVISION = 2,
} ws_watch_start_t;

typedef enum ws_watch_kind {
    WS_WATCH_PUT = 1,
    WS_WATCH_DELETE = 2,
    WS_WATCH_CURRENT = 3,        /* a record the snapshot sends */
    WS_WATCH_BOOTSTRAP_DONE = 4, /* no record; revision: live from here */
} ws_watch_kind_t;

typedef struct ws_watch ws_watch_t;

/* Where a watch delivers; called as feed_ops_t says (feed/feed.h). */
typedef struct ws_watch_sink {
    /* 0 taken, 1 full (the watch waits for ws_watch_pump). a is NULL for
     * BOOTSTRAP_DONE. */
    int (*deliver)(void *arg, ws_watch_kind_t kind, uint64_t revision,
                   const ws_artifact_t *a);
    void (*end)(void *arg, const reel_status_t *st);
    void (*wake)(void *arg); /* must only post a pump */
} ws_watch_sink_t;

typedef struct ws_watch_args {
    const char *ns, *prefix;
    size_t ns_len, prefix_len;
    ws_watch_start_t start;
    uint64_t from_revision;
} ws_watch_args_t;

/* INVALID_ARGUMENT naming the field; nothing is delivered before the
 * first ws_watch_pump(). */
reel_code_t ws_watch_create(ws_t *ws, const ws_watch_args_t *a,
                            const ws_watch_sink_t *sink, void *arg,
                            ws_watch_t **out, reel_status_t *st);
void ws_watch_pump(ws_watch_t *w);
void ws_watch_cancel(ws_watch_t *w);
/* Accepts NULL. */
void ws_watch_destroy(ws_watch_t *w);

/* The store's publish step for its changes (writer thread). */
void ws_publish(ws_t *ws, const store_change_t *changes, size_t n);

/* The chunk family's bytes (files and memtables), and uploads staged. */
void ws_usage(ws_t *ws, uint64_t *chunk_bytes, uint64_t *staged);

/*
 * Decodes one of its committed changes into *a: 1; 0 for another module's
 * change or an unknown type; -1 when the bytes do not decode.
 */
int ws_change_decode(const store_change_t *c, ws_artifact_t *a);

/*
 * The WAL subject's key part: key with '/' read as '.', so each of its
 * '/'- and '.'-separated parts is one token (docs/report.pdf ->
 * docs.report.pdf). Written into out (key_len + 1 bytes).
 */
void ws_subject_key(const char *key, size_t key_len, char *out);

#endif
