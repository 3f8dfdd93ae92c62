/*
 * kv/kv.c: versioned live state: validation, records, writes and reads.
 *
 * Column family `kv`: the current state of every key ever written.
 *   key    ns 0x00 key             a live key (NUL is refused in names, so
 *                                  this sorts by namespace, then key)
 *          0x00 ns 0x00 key        a deleted one, its tombstone (KV_TOMB):
 *                                  apart from the live keys, which a
 *                                  listing walks alone (since format 5)
 *   value  u8  format (1)
 *          u64 version             grows by one per set and per delete
 *          u64 revision            of the change that wrote this state
 *          i64 updated_at_ms
 *          u64 trimmed             highest revision of this key's trimmed
 *                                  history (0: nothing trimmed yet)
 *          u8  deleted             a tombstone
 *          u32 writer_len, writer
 *          value                   JSON text, the rest of the record
 *   (integers big-endian)
 *
 * Column family `kv_history`:
 *   'r' rev(8)                  -> event record (below): every retained
 *                                  change, in revision order
 *   'v' ns 0 key 0 version(8)   -> rev(8): a key's retained versions
 *   "mcompacted"                -> rev(8): the highest revision ever
 *                                  trimmed from history (a pattern watch
 *                                  resuming past it has nothing to look up;
 *                                  one before it reads the trimmed revision
 *                                  of each key it matches)
 *   'd' ts_ms(8) ns 0 key       -> version(8): a delete, whose history is
 *                                  purged once older than
 *                                  deleted_history_ms (kv_purge.c)
 *   event record: u8 format (1), u8 type, u64 version, u64 prev_version,
 *                 u64 revision, i64 ts_ms, u8 deleted, then u32-length-
 *                 prefixed ns, key, writer, value, prev_value.
 *
 * Invariants
 *   - A key's versions are contiguous: each change adds one, so its history
 *     is versions [oldest retained .. current] and the event of version v
 *     holds the value of v-1 as its prev_value.
 *   - Every change writes, in one apply (so in one commit): the new state,
 *     its event record, its version index entry, a delete its 'd' entry,
 *     and, when the key has more than history_keep versions, the removal
 *     of the oldest one. The event
 *     record is also what the publish step receives, byte for byte.
 *   - Apply functions run on the writer thread only, so a precondition
 *     check and the write it guards cannot interleave with another write.
 *
 * Names: a namespace is 1-max bytes of KV_NAMESPACE_CHARS and a key has no
 * empty, "*" or ">" token, so the WAL subject kv.<namespace>.<key> names one
 * key: the first token after "kv" is the namespace, the rest the key. A data
 * dir written before namespaces were restricted may hold others (any UTF-8,
 * "a.b" among them): reads and watches still take such a namespace while it
 * holds keys, so the data can be read out; writes are refused, so no new
 * event gets an ambiguous subject.
 *
 * Recovery: nothing to do; the store replays RocksDB's WAL, and
 * "mcompacted" is read back at start.
 */
#include "kv/kv_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/codec.h"
#include "base/json.h"
#include "base/pattern.h"
#include "base/text.h"

#define ENTRY_HDR 38 /* format..writer_len */
#define EVENT_HDR 35 /* format..deleted */

const store_cf_desc_t kv_cfs[] = {
    {KV_CF, STORE_CF_LOOKUP}, /* read before every write, the key often new */
    {KV_CF_HISTORY, STORE_CF_PLAIN},
    {NULL, STORE_CF_PLAIN},
};

kv_limits_t kv_limits_default(void) {
    kv_limits_t l = {KV_DEFAULT_MAX_NAMESPACE, KV_DEFAULT_MAX_KEY,
                     KV_DEFAULT_MAX_VALUE, KV_DEFAULT_HISTORY_KEEP,
                     KV_DEFAULT_DELETED_HISTORY_MS, 0};
    return l;
}

/* ---- Encodings ----------------------------------------------------------- */

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

size_t kv_key_encode(const char *ns, size_t ns_len, const char *key,
                     size_t key_len, char **buf) {
    char *b = malloc(ns_len + 1 + key_len);

    *buf = b;
    if (b == NULL)
        return 0;
    memcpy(b, ns, ns_len);
    b[ns_len] = '\0';
    memcpy(b + ns_len + 1, key, key_len);
    return ns_len + 1 + key_len;
}

size_t kv_tomb_key(const char *ekey, size_t eklen, char **buf) {
    char *b = malloc(1 + eklen);

    *buf = b;
    if (b == NULL)
        return 0;
    b[0] = KV_TOMB;
    memcpy(b + 1, ekey, eklen);
    return 1 + eklen;
}

void kv_rev_key(uint64_t rev, unsigned char out[9]) {
    out[0] = KV_H_REV;
    reel_be64_put(out + 1, rev);
}

/* 'v' ns 0 key 0 version: malloc'd; returns the length. */
static size_t ver_key(const char *ns, size_t ns_len, const char *key,
                      size_t key_len, uint64_t version, char **buf) {
    size_t n = 1 + ns_len + 1 + key_len + 1 + 8;
    char *b = malloc(n);

    *buf = b;
    if (b == NULL)
        return 0;
    b[0] = KV_H_VER;
    memcpy(b + 1, ns, ns_len);
    b[1 + ns_len] = '\0';
    memcpy(b + 2 + ns_len, key, key_len);
    b[2 + ns_len + key_len] = '\0';
    reel_be64_put((unsigned char *)b + 3 + ns_len + key_len, version);
    return n;
}

/* Copies n strings into one NUL-separated block; fills the outputs. */
static char *pack_strings(int n, const char *const *src, const size_t *len,
                          const char **dst) {
    size_t total = 0, off = 0;
    char *mem;

    for (int i = 0; i < n; i++)
        total += len[i] + 1;
    mem = malloc(total ? total : 1);
    if (mem == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (len[i] > 0)
            memcpy(mem + off, src[i], len[i]);
        mem[off + len[i]] = '\0';
        dst[i] = mem + off;
        off += len[i] + 1;
    }
    return mem;
}

/* Builds an event record. Returns a malloc'd buffer and its length. */
static unsigned char *event_encode(const kv_event_t *ev, size_t *len) {
    const char *s[5] = {ev->ns, ev->key, ev->writer, ev->value,
                        ev->prev_value};
    size_t l[5] = {ev->ns_len, ev->key_len, ev->writer_len, ev->value_len,
                   ev->prev_value_len};
    size_t n = EVENT_HDR;
    unsigned char *b, *p;

    for (int i = 0; i < 5; i++)
        n += 4 + l[i];
    b = malloc(n);
    if (b == NULL)
        return NULL;
    b[0] = 1;
    b[1] = (unsigned char)ev->type;
    reel_be64_put(b + 2, ev->version);
    reel_be64_put(b + 10, ev->prev_version);
    reel_be64_put(b + 18, ev->revision);
    reel_be64_put(b + 26, (uint64_t)ev->ts_ms);
    b[34] = (unsigned char)(ev->deleted != 0);
    p = b + EVENT_HDR;
    for (int i = 0; i < 5; i++) {
        put_be32(p, (uint32_t)l[i]);
        if (l[i] > 0)
            memcpy(p + 4, s[i], l[i]);
        p += 4 + l[i];
    }
    *len = n;
    return b;
}

int kv_event_decode(const void *buf, size_t len, kv_event_t *ev) {
    const unsigned char *b = buf, *p;
    const char *src[5];
    size_t l[5];
    const char *dst[5];

    memset(ev, 0, sizeof(*ev));
    if (len < EVENT_HDR || b[0] != 1)
        return -1;
    p = b + EVENT_HDR;
    for (int i = 0; i < 5; i++) {
        if ((size_t)(b + len - p) < 4)
            return -1;
        l[i] = get_be32(p);
        if ((size_t)(b + len - p - 4) < l[i])
            return -1;
        src[i] = (const char *)p + 4;
        p += 4 + l[i];
    }
    ev->mem_ = pack_strings(5, src, l, dst);
    if (ev->mem_ == NULL)
        return -2;
    ev->type = (kv_event_type_t)b[1];
    ev->version = reel_be64_get(b + 2);
    ev->prev_version = reel_be64_get(b + 10);
    ev->revision = reel_be64_get(b + 18);
    ev->ts_ms = (int64_t)reel_be64_get(b + 26);
    ev->deleted = b[34];
    ev->ns = dst[0], ev->ns_len = l[0];
    ev->key = dst[1], ev->key_len = l[1];
    ev->writer = dst[2], ev->writer_len = l[2];
    ev->value = dst[3], ev->value_len = l[3];
    ev->prev_value = dst[4], ev->prev_value_len = l[4];
    return 0;
}

/* Builds an entry record. */
static unsigned char *entry_encode(uint64_t version, uint64_t revision,
                                   int64_t ts, uint64_t trimmed, int deleted,
                                   const char *writer, size_t writer_len,
                                   const char *value, size_t value_len,
                                   size_t *len) {
    size_t n = ENTRY_HDR + writer_len + value_len;
    unsigned char *b = malloc(n);

    if (b == NULL)
        return NULL;
    b[0] = 1;
    reel_be64_put(b + 1, version);
    reel_be64_put(b + 9, revision);
    reel_be64_put(b + 17, (uint64_t)ts);
    reel_be64_put(b + 25, trimmed);
    b[33] = (unsigned char)(deleted != 0);
    put_be32(b + 34, (uint32_t)writer_len);
    if (writer_len)
        memcpy(b + ENTRY_HDR, writer, writer_len);
    if (value_len)
        memcpy(b + ENTRY_HDR + writer_len, value, value_len);
    *len = n;
    return b;
}

int kv_entry_trimmed(const void *buf, size_t len, uint64_t *trimmed) {
    const unsigned char *b = buf;

    if (len < ENTRY_HDR || b[0] != 1)
        return -1;
    *trimmed = reel_be64_get(b + 25);
    return 0;
}

void kv_entry_set_trimmed(void *buf, size_t len, uint64_t trimmed) {
    if (len >= ENTRY_HDR)
        reel_be64_put((unsigned char *)buf + 25, trimmed);
}

int kv_entry_decode(const char *k, size_t klen, const void *buf, size_t len,
                    kv_entry_t *e) {
    const unsigned char *b = buf;
    const char *nul = memchr(k, '\0', klen);
    const char *src[4];
    size_t l[4], wl;
    const char *dst[4];

    memset(e, 0, sizeof(*e));
    if (nul == NULL || len < ENTRY_HDR || b[0] != 1)
        return -1;
    wl = get_be32(b + 34);
    if (wl > len - ENTRY_HDR)
        return -1;
    src[0] = k, l[0] = (size_t)(nul - k);
    src[1] = nul + 1, l[1] = klen - l[0] - 1;
    src[2] = (const char *)b + ENTRY_HDR, l[2] = wl;
    src[3] = (const char *)b + ENTRY_HDR + wl, l[3] = len - ENTRY_HDR - wl;
    e->mem_ = pack_strings(4, src, l, dst);
    if (e->mem_ == NULL)
        return -2;
    e->ns = dst[0], e->ns_len = l[0];
    e->key = dst[1], e->key_len = l[1];
    e->writer = dst[2], e->writer_len = l[2];
    e->value = dst[3], e->value_len = l[3];
    e->version = reel_be64_get(b + 1);
    e->revision = reel_be64_get(b + 9);
    e->updated_at_ms = (int64_t)reel_be64_get(b + 17);
    e->deleted = b[33];
    return 0;
}

void kv_entry_fini(kv_entry_t *e) {
    if (e == NULL)
        return;
    free(e->mem_);
    memset(e, 0, sizeof(*e));
}

void kv_event_fini(kv_event_t *ev) {
    if (ev == NULL)
        return;
    free(ev->mem_);
    memset(ev, 0, sizeof(*ev));
}

/* ---- Validation ---------------------------------------------------------- */

reel_code_t kv_check_name(const char *field, const char *s, size_t len,
                          size_t max, reel_status_t *st) {
    return reel_check_name(field, s, len, max, st);
}

static reel_code_t check_namespace(const kv_limits_t *lim, const char *ns,
                                   size_t len, reel_status_t *st) {
    return reel_check_charset("namespace", ns, len, lim->max_namespace,
                              KV_NAMESPACE_CHARS, st);
}

reel_code_t kv_check_read_namespace(kv_t *kv, const char *ns, size_t len,
                                    reel_status_t *st) {
    store_iter_t *it = NULL;
    char *base = NULL;
    reel_code_t rc;

    rc = check_namespace(&kv->lim, ns, len, st);
    if (rc != REEL_INVALID_ARGUMENT ||
        reel_check_name("namespace", ns, len, kv->lim.max_namespace, NULL) !=
            REEL_OK)
        return rc;
    /* Refused by the rule but a valid name before it: readable if it holds
     * keys, live or deleted (only an older data dir can have them). */
    base = malloc(len + 2); /* KV_TOMB ns 0: a tombstone's; past KV_TOMB,
                               a live key's */
    if (base == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    base[0] = KV_TOMB;
    memcpy(base + 1, ns, len);
    base[len + 1] = '\0';
    for (size_t tomb = 0; tomb < 2; tomb++) {
        const char *b = base + 1 - tomb;
        size_t blen = len + 1 + tomb;
        reel_code_t irc;

        store_iter_destroy(it);
        it = store_iter_prefix(kv->store, kv->cf, NULL, b, blen);
        if (it == NULL) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                 "out of memory");
            break;
        }
        store_iter_seek(it, b, blen);
        if (store_iter_valid(it)) { /* a key within the bound: held */
            reel_status_fini(st);
            rc = REEL_OK;
            break;
        }
        if ((irc = store_iter_status(it, st)) != REEL_OK) {
            rc = irc; /* the store failed; else not held, as rc says */
            break;
        }
    }
    store_iter_destroy(it);
    free(base);
    return rc;
}

static reel_code_t check_json(const char *value, size_t len,
                              reel_status_t *st) {
    const char *why = NULL;
    size_t off = 0;

    if (reel_json_validate(value, len, &off, &why) != 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "value: not valid JSON: %s at byte %zu%s", why,
                               off,
                               off < len ? "" : " (the end of the value)");
    return REEL_OK;
}

static reel_code_t check_write(kv_t *kv, const kv_write_args_t *a,
                               reel_status_t *st) {
    reel_code_t rc;

    if ((rc = check_namespace(&kv->lim, a->ns, a->ns_len, st)) != REEL_OK)
        return rc;
    if ((rc = kv_check_name("key", a->key, a->key_len, kv->lim.max_key, st)) !=
            REEL_OK ||
        (rc = reel_pattern_check_name("key", a->key, a->key_len, st)) !=
            REEL_OK)
        return rc;
    if (a->writer_len > KV_MAX_WRITER)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "writer: at most %d bytes (got %zu)",
                               KV_MAX_WRITER, a->writer_len);
    if (a->writer_len > 0 && !reel_utf8_valid(a->writer, a->writer_len))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "writer: must be valid UTF-8 without NUL bytes");
    if ((int)a->precond < KV_PRECOND_NONE || a->precond > KV_PRECOND_VERSION)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "precondition: unknown value %d",
                               (int)a->precond);
    if (a->is_delete) {
        if (a->precond == KV_PRECOND_ABSENT)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "precondition: ABSENT makes no sense for a "
                                   "delete; use NONE or VERSION");
        return REEL_OK;
    }
    if (a->value_len > kv->lim.max_value)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "value: %zu bytes exceeds the limit of %zu "
                               "bytes (reeld's --kv-max-value-bytes)",
                               a->value_len, kv->lim.max_value);
    return REEL_OK;
}

reel_code_t kv_validate_write(const kv_limits_t *lim,
                              const kv_write_args_t *args, reel_status_t *st) {
    kv_t probe;
    reel_code_t rc;

    memset(&probe, 0, sizeof(probe));
    probe.lim = lim ? *lim : kv_limits_default();
    if (probe.lim.max_namespace == 0)
        probe.lim.max_namespace = KV_DEFAULT_MAX_NAMESPACE;
    if (probe.lim.max_key == 0)
        probe.lim.max_key = KV_DEFAULT_MAX_KEY;
    if (probe.lim.max_value == 0)
        probe.lim.max_value = KV_DEFAULT_MAX_VALUE;
    if ((rc = check_write(&probe, args, st)) != REEL_OK)
        return rc;
    return args->is_delete ? REEL_OK
                           : check_json(args->value, args->value_len, st);
}

/* ---- Create and destroy --------------------------------------------------- */

reel_code_t kv_create(store_t *store, const kv_limits_t *limits, kv_t **out,
                      reel_status_t *st) {
    kv_t *kv = calloc(1, sizeof(*kv));
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc;

    *out = NULL;
    if (kv == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    kv->store = store;
    kv->lim = limits ? *limits : kv_limits_default();
    if (kv->lim.max_namespace == 0)
        kv->lim.max_namespace = KV_DEFAULT_MAX_NAMESPACE;
    if (kv->lim.max_key == 0)
        kv->lim.max_key = KV_DEFAULT_MAX_KEY;
    if (kv->lim.max_value == 0)
        kv->lim.max_value = KV_DEFAULT_MAX_VALUE;
    if ((rc = store_cf_lookup(store, KV_CF, &kv->cf, st)) != REEL_OK ||
        (rc = store_cf_lookup(store, KV_CF_HISTORY, &kv->cf_history, st)) !=
            REEL_OK) {
        free(kv);
        return rc;
    }
    rc = store_get(store, kv->cf_history, KV_H_COMPACTED,
                   strlen(KV_H_COMPACTED), &val, &vlen, st);
    if (rc == REEL_OK && vlen == 8)
        atomic_store(&kv->compacted, reel_be64_get((unsigned char *)val));
    free(val);
    if (rc != REEL_OK && rc != REEL_NOT_FOUND) {
        free(kv);
        return rc;
    }
    reel_status_fini(st);
    if ((rc = kv_hub_init(kv, store_revision(store), st)) != REEL_OK) {
        free(kv);
        return rc;
    }
    if ((rc = kv_purger_start(kv, st)) != REEL_OK) {
        kv_destroy(kv);
        return rc;
    }
    *out = kv;
    return REEL_OK;
}

void kv_destroy(kv_t *kv) {
    if (kv == NULL)
        return;
    kv_purger_fini(kv);
    kv_hub_fini(kv);
    free(kv);
}

/* ---- Writes --------------------------------------------------------------- */

typedef struct kv_op {
    store_req_t req;
    kv_t *kv;
    kv_write_args_t a; /* points into mem */
    char *mem;
    char *ekey; /* ns 0 key */
    size_t ekey_len;
    kv_write_done_fn done;
    void *arg;
    kv_write_result_t res;
} kv_op_t;

/* Removes the version that fell out of history; returns its revision. */
static reel_code_t trim_history(kv_op_t *op, store_txn_t *txn, uint64_t ver,
                                uint64_t *trimmed, reel_status_t *st) {
    kv_t *kv = op->kv;
    char *vk = NULL, *val = NULL;
    size_t vklen, vlen = 0;
    unsigned char rk[9];
    uint64_t rev;
    reel_code_t rc;

    vklen = ver_key(op->a.ns, op->a.ns_len, op->a.key, op->a.key_len, ver, &vk);
    if (vk == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = store_txn_get(txn, kv->cf_history, vk, vklen, &val, &vlen, st);
    if (rc == REEL_NOT_FOUND) {
        /* Already gone (history_keep was lowered, or never kept). */
        reel_status_fini(st);
        free(vk);
        return REEL_OK;
    }
    if (rc != REEL_OK || vlen != 8) {
        free(vk);
        free(val);
        return rc != REEL_OK ? rc
                             : reel_status_set(st, REEL_DATA_LOSS,
                                               "kv history index is corrupt");
    }
    rev = reel_be64_get((unsigned char *)val);
    free(val);
    kv_rev_key(rev, rk);
    store_txn_delete(txn, kv->cf_history, vk, vklen);
    store_txn_delete_blind(txn, kv->cf_history, rk, sizeof(rk));
    free(vk);
    if (rev > *trimmed)
        *trimmed = rev;
    kv_raise_compacted(kv, txn, rev);
    return REEL_OK;
}

/*
 * Writes a key's new record where it belongs (its tombstone's key when
 * deleted), and removes the one it had in the other place (found: it had
 * one; tomb: it was a tombstone).
 */
static reel_code_t put_entry(kv_t *kv, store_txn_t *txn, const char *ekey,
                             size_t eklen, int found, int tomb, int deleted,
                             const void *rec, size_t len, reel_status_t *st) {
    char *tk = NULL;
    size_t tklen;

    if (!deleted && !tomb) { /* the usual set: live, and live before */
        store_txn_put(txn, kv->cf, ekey, eklen, rec, len);
        return REEL_OK;
    }
    if ((tklen = kv_tomb_key(ekey, eklen, &tk)) == 0)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    if (deleted)
        store_txn_put(txn, kv->cf, tk, tklen, rec, len);
    else
        store_txn_put(txn, kv->cf, ekey, eklen, rec, len);
    if (found && tomb != deleted) {
        if (tomb)
            store_txn_delete(txn, kv->cf, tk, tklen);
        else
            store_txn_delete(txn, kv->cf, ekey, eklen);
    }
    free(tk);
    return REEL_OK;
}

static reel_code_t op_apply(store_txn_t *txn, void *arg, reel_status_t *st) {
    kv_op_t *op = arg;
    kv_t *kv = op->kv;
    const kv_write_args_t *a = &op->a;
    kv_entry_t cur = {0};
    char *val = NULL, *vk = NULL;
    size_t vlen = 0, vklen, elen = 0, evlen = 0;
    unsigned char *erec = NULL, *evrec = NULL, rk[9], revbuf[8];
    uint64_t cur_version = 0, trimmed = 0, version, rev;
    int found = 0, live = 0, tomb = 0;
    kv_event_t ev;
    reel_code_t rc;

    rc = kv_entry_read(kv, txn, NULL, op->ekey, op->ekey_len, &val, &vlen,
                       &tomb, st);
    if (rc == REEL_OK) {
        if (kv_entry_decode(op->ekey, op->ekey_len, val, vlen, &cur) != 0 ||
            kv_entry_trimmed(val, vlen, &trimmed) != 0) {
            free(val);
            return reel_status_set(st, REEL_DATA_LOSS,
                                   "key \"%s\": stored record is corrupt",
                                   a->key);
        }
        free(val);
        if (cur.deleted != tomb) {
            kv_entry_fini(&cur);
            return reel_status_set(st, REEL_DATA_LOSS,
                                   "key \"%s\": stored record is corrupt (%s "
                                   "stored as %s)",
                                   a->key, tomb ? "a live key" : "a tombstone",
                                   tomb ? "a tombstone" : "a live key");
        }
        found = 1;
        live = !tomb;
        cur_version = cur.version;
    } else if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
    } else {
        return rc;
    }

    if (a->precond == KV_PRECOND_ABSENT && live) {
        rc = reel_status_set(st, REEL_ALREADY_EXISTS,
                             "key \"%s\" already exists (current version "
                             "%llu)",
                             a->key, (unsigned long long)cur_version);
        goto out;
    }
    if (a->precond == KV_PRECOND_VERSION && cur_version != a->expected_version) {
        rc = reel_status_set(st, REEL_ABORTED,
                             "version conflict on key \"%s\": expected "
                             "version %llu, current version %llu%s",
                             a->key, (unsigned long long)a->expected_version,
                             (unsigned long long)cur_version,
                             found && !live ? " (deleted)" : "");
        goto out;
    }
    op->res.prev_version = cur_version;
    if (a->is_delete && !live) {
        /* Nothing to delete: nothing is written. */
        op->res.existed = 0;
        op->res.entry = cur;
        memset(&cur, 0, sizeof(cur));
        rc = REEL_OK;
        goto out;
    }
    op->res.existed = live;

    version = cur_version + 1;
    rev = store_txn_next_revision(txn);
    if (kv->lim.history_keep > 0 && version > kv->lim.history_keep &&
        (rc = trim_history(op, txn, version - kv->lim.history_keep, &trimmed,
                           st)) != REEL_OK)
        goto out;

    memset(&ev, 0, sizeof(ev));
    ev.type = a->is_delete ? KV_EVENT_DELETE : KV_EVENT_PUT;
    ev.ns = a->ns, ev.ns_len = a->ns_len;
    ev.key = a->key, ev.key_len = a->key_len;
    ev.writer = a->writer, ev.writer_len = a->writer_len;
    ev.value = a->is_delete ? "" : a->value;
    ev.value_len = a->is_delete ? 0 : a->value_len;
    ev.prev_value = live ? cur.value : "";
    ev.prev_value_len = live ? cur.value_len : 0;
    ev.version = version;
    ev.prev_version = cur_version;
    ev.revision = rev;
    ev.ts_ms = store_txn_now_ms(txn);
    ev.deleted = a->is_delete;

    erec = entry_encode(version, rev, ev.ts_ms, trimmed, a->is_delete,
                        a->writer, a->writer_len, ev.value, ev.value_len,
                        &elen);
    evrec = event_encode(&ev, &evlen);
    vklen = ver_key(a->ns, a->ns_len, a->key, a->key_len, version, &vk);
    if (erec == NULL || evrec == NULL || vk == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if ((rc = put_entry(kv, txn, op->ekey, op->ekey_len, found, tomb,
                        a->is_delete, erec, elen, st)) != REEL_OK)
        goto out;
    kv_rev_key(rev, rk);
    /* No request reads an event by revision inside a transaction: blind. */
    store_txn_put_blind(txn, kv->cf_history, rk, sizeof(rk), evrec,
                        evlen);
    reel_be64_put(revbuf, rev);
    store_txn_put(txn, kv->cf_history, vk, vklen, revbuf, 8);
    if (a->is_delete) { /* its history is purged once old enough */
        free(vk);
        vklen = kv_deleted_key(ev.ts_ms, a->ns, a->ns_len, a->key,
                               a->key_len, &vk);
        if (vk == NULL) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        reel_be64_put(revbuf, version);
        store_txn_put(txn, kv->cf_history, vk, vklen, revbuf, 8);
    }
    store_txn_emit(txn, KV_MODULE_ID, KV_CHANGE_EVENT, evrec, evlen);

    if (kv_entry_decode(op->ekey, op->ekey_len, erec, elen, &op->res.entry) !=
        0) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    rc = REEL_OK;
out:
    kv_entry_fini(&cur);
    free(erec);
    free(evrec);
    free(vk);
    return rc;
}

static void op_done(store_req_t *req) {
    kv_op_t *op = (kv_op_t *)req;

    reel_status_move(&op->res.status, &req->status);
    if (op->res.status.code != REEL_OK)
        kv_entry_fini(&op->res.entry);
    op->done(op->arg, &op->res);
    kv_write_result_fini(&op->res);
    free(op->ekey);
    free(op->mem);
    free(op);
}

reel_code_t kv_write_submit(kv_t *kv, const kv_write_args_t *args,
                            kv_write_done_fn done, void *arg,
                            reel_status_t *st) {
    const char *src[4] = {args->ns, args->key, args->value, args->writer};
    size_t len[4] = {args->ns_len, args->key_len,
                     args->is_delete ? 0 : args->value_len, args->writer_len};
    const char *dst[4];
    kv_op_t *op;
    reel_code_t rc;

    if ((rc = check_write(kv, args, st)) != REEL_OK)
        return rc;
    op = calloc(1, sizeof(*op));
    if (op == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    op->mem = pack_strings(4, src, len, dst);
    op->ekey_len = kv_key_encode(args->ns, args->ns_len, args->key,
                                 args->key_len, &op->ekey);
    if (op->mem == NULL || op->ekey == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    op->a = *args;
    op->a.ns = dst[0], op->a.key = dst[1], op->a.value = dst[2];
    op->a.writer = dst[3];
    op->a.value_len = len[2];
    if (!args->is_delete && (rc = check_json(op->a.value, op->a.value_len,
                                             st)) != REEL_OK)
        goto fail;
    op->kv = kv;
    op->done = done;
    op->arg = arg;
    op->req.apply = op_apply;
    op->req.done = op_done;
    op->req.arg = op;
    op->req.grows = !args->is_delete;
    op->req.bytes = sizeof(*op) + len[0] + len[1] + len[2] + len[3] +
                    op->ekey_len; /* what it holds while queued */
    if ((rc = store_submit(kv->store, &op->req)) != REEL_OK) {
        reel_status_move(st, &op->req.status);
        goto fail;
    }
    return REEL_OK;
fail:
    free(op->ekey);
    free(op->mem);
    free(op);
    return rc;
}

typedef struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    kv_write_result_t *res;
} sync_wait_t;

static void sync_done(void *arg, kv_write_result_t *res) {
    sync_wait_t *w = arg;

    pthread_mutex_lock(&w->mu);
    reel_status_move(&w->res->status, &res->status);
    w->res->entry = res->entry;
    memset(&res->entry, 0, sizeof(res->entry));
    w->res->prev_version = res->prev_version;
    w->res->existed = res->existed;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

reel_code_t kv_write(kv_t *kv, const kv_write_args_t *args,
                     kv_write_result_t *res) {
    sync_wait_t w = {.res = res};
    reel_code_t rc;

    memset(res, 0, sizeof(*res));
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    rc = kv_write_submit(kv, args, sync_done, &w, &res->status);
    if (rc == REEL_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = res->status.code;
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

void kv_write_result_fini(kv_write_result_t *res) {
    if (res == NULL)
        return;
    reel_status_fini(&res->status);
    kv_entry_fini(&res->entry);
}

/* ---- Reads ---------------------------------------------------------------- */

reel_code_t kv_entry_read(kv_t *kv, store_txn_t *txn,
                          const store_snapshot_t *snap, const char *ekey,
                          size_t eklen, char **val, size_t *vlen, int *tomb,
                          reel_status_t *st) {
    char *tk = NULL;
    size_t tklen = kv_tomb_key(ekey, eklen, &tk);
    reel_code_t rc;

    *tomb = 0;
    if (tk == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = store_get_first(kv->store, txn, snap, kv->cf, ekey, eklen, tk, tklen,
                         val, vlen, tomb, st);
    free(tk);
    return rc;
}

reel_code_t kv_get(kv_t *kv, const char *ns, size_t ns_len, const char *key,
                   size_t key_len, kv_entry_t *entry, reel_status_t *st) {
    char *ek = NULL, *val = NULL;
    size_t eklen, vlen = 0;
    int tomb;
    reel_code_t rc;

    memset(entry, 0, sizeof(*entry));
    if ((rc = kv_check_read_namespace(kv, ns, ns_len, st)) != REEL_OK ||
        (rc = kv_check_name("key", key, key_len, kv->lim.max_key, st)) !=
            REEL_OK)
        return rc;
    eklen = kv_key_encode(ns, ns_len, key, key_len, &ek);
    if (ek == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = kv_entry_read(kv, NULL, NULL, ek, eklen, &val, &vlen, &tomb, st);
    if (rc == REEL_OK) {
        if (kv_entry_decode(ek, eklen, val, vlen, entry) != 0)
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "key \"%.*s\": stored record is corrupt",
                                 (int)key_len, key);
        else if (entry->deleted)
            rc = REEL_NOT_FOUND;
    }
    free(ek);
    free(val);
    return rc;
}

static reel_code_t check_limit(uint32_t *limit, reel_status_t *st) {
    if (*limit == 0)
        *limit = KV_LIST_DEFAULT;
    if (*limit > KV_LIST_MAX)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "limit: at most %d (got %u)", KV_LIST_MAX,
                               *limit);
    return REEL_OK;
}

reel_code_t kv_list(kv_t *kv, const kv_list_args_t *a, kv_entry_t **out,
                    size_t *n, int *more, reel_status_t *st) {
    uint32_t limit = a->limit;
    char *base = NULL, *seek = NULL, *tseek = NULL, *tbase = NULL;
    size_t base_len, seek_len, tseek_len = 0, tbase_len, used = 0;
    kv_entry_t *arr = NULL;
    store_merge_t m = {{NULL, NULL}, {NULL, NULL}, {0, 0}, {0, 1}};
    store_snapshot_t *snap = NULL;
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    *more = 0;
    if ((rc = kv_check_read_namespace(kv, a->ns, a->ns_len, st)) != REEL_OK ||
        (rc = check_limit(&limit, st)) != REEL_OK)
        return rc;
    if (a->prefix_len > kv->lim.max_key || a->start_after_len > kv->lim.max_key)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: at most %zu bytes",
                               a->prefix_len > kv->lim.max_key ? "prefix"
                                                               : "start_after",
                               kv->lim.max_key);
    /* base = ns 0 prefix: every match starts with it. */
    base_len = kv_key_encode(a->ns, a->ns_len, a->prefix, a->prefix_len, &base);
    if (a->start_after_len > 0 &&
        (a->start_after_len > a->prefix_len ||
         memcmp(a->start_after, a->prefix, a->start_after_len) > 0 ||
         (a->start_after_len == a->prefix_len &&
          memcmp(a->start_after, a->prefix, a->prefix_len) == 0)))
        seek_len = kv_key_encode(a->ns, a->ns_len, a->start_after,
                                 a->start_after_len, &seek);
    else
        seek_len = kv_key_encode(a->ns, a->ns_len, a->prefix, a->prefix_len,
                                 &seek);
    arr = calloc(limit, sizeof(*arr));
    if (base == NULL || seek == NULL || arr == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    /* The deleted keys too: both places merged in key order, at one
     * snapshot, so that a key moving between them is seen once. */
    if (a->include_deleted) {
        if ((rc = store_snapshot_create(kv->store, &snap, st)) != REEL_OK)
            goto out;
        tseek_len = kv_tomb_key(seek, seek_len, &tseek);
        tbase_len = kv_tomb_key(base, base_len, &tbase);
        if (tseek != NULL && tbase != NULL)
            m.it[1] = store_iter_prefix(kv->store, kv->cf, snap, tbase,
                                        tbase_len);
        if (m.it[1] == NULL) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        store_iter_seek(m.it[1], tseek, tseek_len);
        m.base[1] = tbase, m.base_len[1] = tbase_len;
    }
    m.it[0] = store_iter_prefix(kv->store, kv->cf, snap, base, base_len);
    if (m.it[0] == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    store_iter_seek(m.it[0], seek, seek_len);
    m.base[0] = base, m.base_len[0] = base_len;
    for (;;) {
        size_t klen, vlen;
        const char *v;
        int place;
        const char *k = store_merge_key(&m, &klen, &v, &vlen, &place);

        if (k == NULL)
            break;
        if (a->start_after_len > 0 &&
            klen == a->ns_len + 1 + a->start_after_len &&
            memcmp(k + a->ns_len + 1, a->start_after, a->start_after_len) ==
                0) {
            store_iter_next(m.it[place]);
            continue;
        }
        if (*n == limit) {
            *more = 1;
            break;
        }
        if (kv_entry_decode(k, klen, v, vlen, &arr[*n]) != 0 ||
            arr[*n].deleted != place) {
            kv_entry_fini(&arr[*n]);
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "a stored record of namespace \"%.*s\" is "
                                 "corrupt",
                                 (int)a->ns_len, a->ns);
            goto out;
        }
        if (!reel_page_take(a->page, *n, &used, &arr[*n])) {
            kv_entry_fini(&arr[*n]);
            *more = 1;
            break;
        }
        (*n)++;
        store_iter_next(m.it[place]);
    }
    rc = store_merge_status(&m, st);
out:
    if (rc != REEL_OK) {
        for (size_t i = 0; i < *n; i++)
            kv_entry_fini(&arr[i]);
        free(arr);
        arr = NULL;
        *n = 0;
    }
    *out = arr;
    store_iter_destroy(m.it[0]);
    store_iter_destroy(m.it[1]);
    store_snapshot_release(kv->store, snap);
    free(base);
    free(seek);
    free(tseek);
    free(tbase);
    return rc;
}

reel_code_t kv_check_none_retained(kv_t *kv, const store_snapshot_t *snap,
                                   const char *ekey, size_t eklen,
                                   uint64_t first, reel_status_t *st) {
    const char *key = ekey + strnlen(ekey, eklen) + 1;
    int key_len = (int)(eklen - (size_t)(key - ekey));
    char *val = NULL;
    size_t vlen = 0;
    kv_entry_t e = {0};
    int tomb;
    reel_code_t rc;

    rc = kv_entry_read(kv, NULL, snap, ekey, eklen, &val, &vlen, &tomb, st);
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        rc = REEL_OK;
    } else if (rc != REEL_OK) {
        rc = reel_status_set(st, rc, "key \"%.*s\": reading its record: %s",
                             key_len, key, reel_status_message(st));
    } else if (kv_entry_decode(ekey, eklen, val, vlen, &e) != 0) {
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "key \"%.*s\": stored record is corrupt",
                             key_len, key);
    } else if (e.version >= first) {
        rc = reel_status_set(st, REEL_OUT_OF_RANGE,
                             "from_version: version %llu is no longer "
                             "retained; none of the key's history is%s",
                             (unsigned long long)first,
                             e.deleted ? " (it was deleted, and its history "
                                         "purged once old enough)"
                                       : "");
    }
    kv_entry_fini(&e);
    free(val);
    return rc;
}

reel_code_t kv_history(kv_t *kv, const char *ns, size_t ns_len,
                       const char *key, size_t key_len, uint64_t from_version,
                       uint32_t limit, const reel_page_t *page,
                       kv_event_t **out, size_t *n, int *more,
                       reel_status_t *st) {
    char *vk = NULL;
    size_t vklen, used = 0;
    kv_event_t *arr = NULL;
    store_snapshot_t *snap = NULL;
    store_iter_t *it = NULL;
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    *more = 0;
    if ((rc = kv_check_read_namespace(kv, ns, ns_len, st)) != REEL_OK ||
        (rc = kv_check_name("key", key, key_len, kv->lim.max_key, st)) !=
            REEL_OK ||
        (rc = check_limit(&limit, st)) != REEL_OK)
        return rc;
    /* No version follows the largest one (and + 1 would wrap to 0): an
     * empty page, as for any from_version past the current version. */
    if (from_version == UINT64_MAX)
        return REEL_OK;
    vklen = ver_key(ns, ns_len, key, key_len, from_version + 1, &vk);
    arr = calloc(limit, sizeof(*arr));
    if ((rc = store_snapshot_create(kv->store, &snap, st)) != REEL_OK)
        goto out;
    it = store_iter_create(kv->store, kv->cf_history, snap);
    if (vk == NULL || arr == NULL || it == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (store_iter_seek(it, vk, vklen); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen, evlen = 0;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        unsigned char rk[9];
        char *evrec = NULL;
        uint64_t ver, rev;
        int drc;

        /* Same key: everything but the trailing version matches. */
        if (klen != vklen || memcmp(k, vk, vklen - 8) != 0)
            break;
        if (*n == limit) {
            *more = 1;
            break;
        }
        /* The index entry and its event commit and trim together: one
         * without the other is lost data, never a version to skip. */
        ver = reel_be64_get((const unsigned char *)k + klen - 8);
        if (vlen != 8) {
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "key \"%.*s\": the history index of "
                                 "version %llu is corrupt",
                                 (int)key_len, key, (unsigned long long)ver);
            goto out;
        }
        /* Versions after from_version that were trimmed: a page starting
         * later would skip them without a word (a watch from that version
         * refuses the same way). From 0 means the oldest retained. */
        if (*n == 0 && from_version > 0 && ver > from_version + 1) {
            rc = reel_status_set(st, REEL_OUT_OF_RANGE,
                                 "from_version: version %llu is no longer "
                                 "retained; the oldest retained version is "
                                 "%llu",
                                 (unsigned long long)from_version + 1,
                                 (unsigned long long)ver);
            goto out;
        }
        rev = reel_be64_get((const unsigned char *)v);
        kv_rev_key(rev, rk);
        rc = store_snapshot_get(kv->store, snap, kv->cf_history, rk,
                                sizeof(rk), &evrec, &evlen, st);
        if (rc == REEL_NOT_FOUND)
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "key \"%.*s\": the history record of "
                                 "version %llu (revision %llu) is missing",
                                 (int)key_len, key, (unsigned long long)ver,
                                 (unsigned long long)rev);
        if (rc != REEL_OK)
            goto out;
        drc = kv_event_decode(evrec, evlen, &arr[*n]);
        free(evrec);
        if (drc != 0) {
            rc = reel_status_set(st, drc == -2 ? REEL_RESOURCE_EXHAUSTED
                                               : REEL_DATA_LOSS,
                                 "key \"%.*s\": the history record of "
                                 "version %llu (revision %llu) %s",
                                 (int)key_len, key, (unsigned long long)ver,
                                 (unsigned long long)rev,
                                 drc == -2 ? "could not be read: out of memory"
                                           : "is corrupt");
            goto out;
        }
        if (!reel_page_take(page, *n, &used, &arr[*n])) {
            kv_event_fini(&arr[*n]);
            *more = 1;
            break;
        }
        (*n)++;
    }
    rc = store_iter_status(it, st);
    if (rc == REEL_OK && *n == 0 && from_version > 0) {
        char *ekey = NULL;
        size_t eklen = kv_key_encode(ns, ns_len, key, key_len, &ekey);

        rc = ekey == NULL ? reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                            "out of memory")
                          : kv_check_none_retained(kv, snap, ekey, eklen,
                                                   from_version + 1, st);
        free(ekey);
    }
out:
    if (rc != REEL_OK) {
        for (size_t i = 0; i < *n; i++)
            kv_event_fini(&arr[i]);
        free(arr);
        arr = NULL;
        *n = 0;
    }
    *out = arr;
    store_iter_destroy(it);
    store_snapshot_release(kv->store, snap);
    free(vk);
    return rc;
}
