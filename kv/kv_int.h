/*
 * kv/kv_int.h: what kv.c and kv_watch.c share. Private to kv/.
 */
#ifndef REEL_KV_KV_INT_H
#define REEL_KV_KV_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "feed/feed.h"
#include "kv/kv.h"

/* Its column families (kv_cfs). */
#define KV_CF "kv"
#define KV_CF_HISTORY "kv_history"

/* Event type of KV changes handed to the publish step. */
#define KV_CHANGE_EVENT 1

/*
 * A tombstone's key in "kv": KV_TOMB ns 0 key (since format 5). No
 * namespace is empty, so no live key (ns 0 key) starts with a NUL: a
 * listing of live keys never walks the deleted ones. A key is in one place
 * or the other, never both.
 */
#define KV_TOMB '\0'

/* kv_history key prefixes. */
#define KV_H_REV 'r'  /* 'r' rev(8)                 -> event record */
#define KV_H_VER 'v'  /* 'v' ns 0 key 0 version(8)  -> rev(8) */
#define KV_H_META 'm' /* "mcompacted"               -> rev(8) */
/* 'd' ts_ms(8) ns 0 key -> version(8): a delete, to purge (kv_purge.c) */
#define KV_H_DELETED 'd'
#define KV_H_COMPACTED "mcompacted"

struct kv {
    store_t *store;
    store_cf_t *cf;         /* "kv": the current state of every key */
    store_cf_t *cf_history; /* "kv_history" */
    kv_limits_t lim;
    /* The highest revision any trimmed history record had: a pattern watch
     * resuming below it may have lost events. Only grows. */
    _Atomic uint64_t compacted;

    /* The watches: exact keys under "ns\0key", patterns under any key. */
    feed_hub_t *hub;
    /* Publish's scratch for a group's sink args (under the hub's lock). */
    void **group_args;
    size_t group_cap;

    /* The purge of deleted keys' history (kv_purge.c). */
    pthread_t purger;
    pthread_mutex_t purge_mu;
    pthread_cond_t purge_cv;
    _Atomic int purge_stopping;
    _Atomic uint64_t purged; /* keys whose history went, since start */
    int compact_moved;  /* an upgrade moved tombstones (purge_mu) */
    int purger_started; /* purger runs */
    int purge_sync;     /* purge_mu and purge_cv exist */
};

/* ---- Encodings (kv.c) ---------------------------------------------------- */

/* "ns\0key" into buf (malloc'd); returns its length. */
size_t kv_key_encode(const char *ns, size_t ns_len, const char *key,
                     size_t key_len, char **buf);
/* KV_TOMB ekey into buf (malloc'd; NULL when out of memory); returns its
 * length. */
size_t kv_tomb_key(const char *ekey, size_t eklen, char **buf);
/*
 * The record of key ekey ("ns\0key") into *val (malloc'd): live, or its
 * tombstone (*tomb = 1). In txn when it is not NULL; else at snap, or, when
 * snap is NULL too, in committed state, both places read at one snapshot
 * (a set or a delete moves a key between them). OK, NOT_FOUND (never
 * written) or the store's code.
 */
reel_code_t kv_entry_read(kv_t *kv, store_txn_t *txn,
                          const store_snapshot_t *snap, const char *ekey,
                          size_t eklen, char **val, size_t *vlen, int *tomb,
                          reel_status_t *st);
/* 'r' + rev */
void kv_rev_key(uint64_t rev, unsigned char out[9]);

/* Decodes an event record: 0, -1 if malformed, -2 out of memory (a
 * reader must not call a record corrupt when it merely could not copy it). */
int kv_event_decode(const void *buf, size_t len, kv_event_t *ev);
/* Decodes an entry record under its "ns\0key"; 0, -1 or -2 as above. */
int kv_entry_decode(const char *k, size_t klen, const void *buf, size_t len,
                    kv_entry_t *e);
/* The entry record's trimmed-revision field (0 if none); -1 if malformed. */
int kv_entry_trimmed(const void *buf, size_t len, uint64_t *trimmed);

/* Name checks shared by every entry point: INVALID_ARGUMENT naming field. */
reel_code_t kv_check_name(const char *field, const char *s, size_t len,
                          size_t max, reel_status_t *st);
/*
 * The namespace check of reads and watches: what writes take
 * (KV_NAMESPACE_CHARS), and also a namespace the rule refuses that holds
 * keys written before it, so an older data dir can still be read out.
 * Errors: INVALID_ARGUMENT, or the store's code if it cannot look.
 */
reel_code_t kv_check_read_namespace(kv_t *kv, const char *ns, size_t len,
                                    reel_status_t *st);

/* ---- The hub (kv_watch.c) ------------------------------------------------ */

/* Sets the `trimmed` of the entry record buf (valid, as kv_entry_trimmed
 * reads it). */
void kv_entry_set_trimmed(void *buf, size_t len, uint64_t trimmed);

/*
 * OK when the key ekey ("ns\0key") names has no version from first on at
 * snap (first is past its current one); OUT_OF_RANGE naming first when it
 * has, though none is retained (a deleted key whose history was purged,
 * kv_purge.c): a read or a watch from there must end, not pass over them.
 * DATA_LOSS for a corrupt record, the store's code for a failed read.
 */
reel_code_t kv_check_none_retained(kv_t *kv, const store_snapshot_t *snap,
                                   const char *ekey, size_t eklen,
                                   uint64_t first, reel_status_t *st);

/* 'd' ts_ms ns 0 key: malloc'd into *buf (NULL when out of memory);
 * returns the length. */
size_t kv_deleted_key(int64_t ts_ms, const char *ns, size_t ns_len,
                      const char *key, size_t key_len, char **buf);
/* Raises kv->compacted to rev if it is higher, and writes it as
 * "mcompacted" in txn (at every call). */
void kv_raise_compacted(kv_t *kv, store_txn_t *txn, uint64_t rev);
/* Starts the purge thread (none when deleted history is kept for ever);
 * kv_purger_fini stops it and frees what start made. */
reel_code_t kv_purger_start(kv_t *kv, reel_status_t *st);
void kv_purger_fini(kv_t *kv);

reel_code_t kv_hub_init(kv_t *kv, uint64_t last_published, reel_status_t *st);
void kv_hub_fini(kv_t *kv);

#endif
