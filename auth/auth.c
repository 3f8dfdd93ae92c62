/*
 * auth/auth.c: token storage and checking (see auth.h for the token's
 * form and why a plain SHA-256 is enough).
 *
 * Column family "auth" (point lookups):
 *   "t/" <id>  ->  JSON {"sha256": hex of SHA-256(token), "tenant": T,
 *                        "scopes": ["kv:read", ...], "name": N,
 *                        "created_ms": C, "expires_ms": E (0: never)}
 * Nothing else is stored: never the token, and no change is emitted, so
 * no token or digest reaches the WAL. Revoking deletes the record.
 *
 * The table in memory mirrors the family: loaded at create, changed by
 * create and revoke only after their write committed (so a check never
 * accepts a token that a crash would forget, and a revoke takes effect at
 * once). After a crash the family is the truth and the next start loads
 * it again.
 */
#include "auth/auth.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <uthash.h>

#include "base/clock.h"
#include "base/text.h"

const store_cf_desc_t auth_cfs[] = {
    {"auth", STORE_CF_LOOKUP},
    {NULL, STORE_CF_PLAIN},
};

#define KEY_PREFIX "t/"
#define RECORD_MAX 4096

typedef struct entry {
    char id[AUTH_ID_LEN + 1];
    unsigned char digest[32];
    auth_info_t info;
    UT_hash_handle hh;
} entry_t;

struct auth {
    store_t *store;
    store_cf_t *cf;
    pthread_mutex_t mu;
    entry_t *by_id; /* uthash, under mu */
};

static const char *const scope_names[] = {
#define AUTH_SCOPE_NAME_(b, n) n,
    AUTH_SCOPE_MAP(AUTH_SCOPE_NAME_)
#undef AUTH_SCOPE_NAME_
};

const char *auth_scope_name(auth_scope_bit_t bit) {
    return (int)bit >= 0 && bit < AUTH_SCOPE__COUNT ? scope_names[bit] : NULL;
}

int auth_scope_lookup(const char *name, size_t len) {
    for (int i = 0; i < AUTH_SCOPE__COUNT; i++)
        if (strlen(scope_names[i]) == len &&
            memcmp(scope_names[i], name, len) == 0)
            return i;
    return -1;
}

reel_code_t auth_scopes_parse(const char *field, const char *list,
                              auth_scopes_t *out, reel_status_t *st) {
    const char *p = list;

    *out = 0;
    while (p != NULL && *p != '\0') {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        int bit = auth_scope_lookup(p, n);

        if (bit < 0)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "%s: \"%.*s\" is not a scope (kv:read, "
                                   "kv:write, journal:read, journal:write, "
                                   "signals:send, signals:await, wal:read, "
                                   "wal:consume, workspace:read, "
                                   "workspace:write, admin)",
                                   field, (int)(n > 64 ? 64 : n), p);
        *out |= (auth_scopes_t)1 << bit;
        p = comma ? comma + 1 : NULL;
    }
    if (*out == 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: empty: at least one scope is needed",
                               field);
    return REEL_OK;
}

/* ---- The token's form ---------------------------------------------------- */

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int is_b64url(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

int auth_token_parse(const char *tok, size_t len, char id[AUTH_ID_LEN + 1]) {
    if (tok == NULL || len != AUTH_TOKEN_LEN || memcmp(tok, "reel_", 5) != 0 ||
        tok[5 + AUTH_ID_LEN] != '_')
        return -1;
    for (size_t i = 0; i < AUTH_ID_LEN; i++)
        if (!is_hex(tok[5 + i]))
            return -1;
    for (size_t i = 6 + AUTH_ID_LEN; i < AUTH_TOKEN_LEN; i++)
        if (!is_b64url(tok[i]))
            return -1;
    /* 43 characters hold 258 bits: the last one carries 4 bits of the
     * 32 bytes and 2 zero bits, so only one spelling of a secret parses. */
    if ((strchr(b64url, tok[AUTH_TOKEN_LEN - 1]) - b64url) & 3)
        return -1;
    memcpy(id, tok + 5, AUTH_ID_LEN);
    id[AUTH_ID_LEN] = '\0';
    return 0;
}

const char *auth_bearer(const char *value, size_t len, size_t *tlen) {
    if (value == NULL || len < 7 || strncasecmp(value, "bearer ", 7) != 0)
        return NULL;
    *tlen = len - 7;
    return value + 7;
}

/* SHA-256 fetched from OpenSSL's provider once: EVP_sha256() would look
 * it up again on every digest (a locked table walk in OpenSSL 3), and
 * every call checks its token here. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void) {
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void sha256(const char *p, size_t n, unsigned char out[32]) {
    unsigned int olen = 32;

    pthread_once(&sha256_once, sha256_fetch);
    EVP_Digest(p, n, out, &olen, sha256_md ? sha256_md : EVP_sha256(), NULL);
}

static int from_hex(const char *s, unsigned char *out, size_t n) {
    if (s == NULL || strlen(s) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;

        for (int k = 0; k < 2; k++) {
            char c = s[2 * i + k];

            if (!is_hex(c))
                return -1;
            v = v * 16 + (unsigned)(c <= '9' ? c - '0' : c - 'a' + 10);
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

reel_code_t auth_check_tenant(const char *field, const char *t,
                              reel_status_t *st) {
    size_t n = t ? strlen(t) : 0;

    if (n == 0 || n > AUTH_TENANT_MAX)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: %zu bytes, expected 1 to %d", field, n,
                               AUTH_TENANT_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = t[i];

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              (c == '-' && i > 0)))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "%s: byte %zu is not one of a-z, 0-9 or "
                                   "- (not first)",
                                   field, i);
    }
    return REEL_OK;
}

/* ---- Records ------------------------------------------------------------- */

static char *record_encode(const entry_t *e) {
    cJSON *o = cJSON_CreateObject(), *sc;
    char hex[65];
    char *s = NULL;

    if (o == NULL)
        return NULL;
    reel_hex(e->digest, 32, hex);
    sc = cJSON_AddArrayToObject(o, "scopes");
    if (cJSON_AddStringToObject(o, "sha256", hex) == NULL || sc == NULL ||
        cJSON_AddStringToObject(o, "tenant", e->info.tenant) == NULL ||
        cJSON_AddStringToObject(o, "name", e->info.name) == NULL ||
        cJSON_AddNumberToObject(o, "created_ms",
                                (double)e->info.created_ms) == NULL ||
        cJSON_AddNumberToObject(o, "expires_ms",
                                (double)e->info.expires_ms) == NULL)
        goto out;
    for (int i = 0; i < AUTH_SCOPE__COUNT; i++)
        if (e->info.scopes & ((auth_scopes_t)1 << i)) {
            cJSON *n = cJSON_CreateString(scope_names[i]);

            if (n == NULL)
                goto out;
            cJSON_AddItemToArray(sc, n);
        }
    s = cJSON_PrintUnformatted(o);
out:
    cJSON_Delete(o);
    return s;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int64_t jnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

/* A stored record into e: 0, or -1 when it does not decode. */
static int record_decode(const char *id, const char *val, size_t vlen,
                         entry_t *e) {
    cJSON *o = NULL, *sc, *it;
    const char *tenant, *name;
    int rc = -1;

    memset(e, 0, sizeof(*e));
    if (vlen > RECORD_MAX || (o = cJSON_ParseWithLength(val, vlen)) == NULL)
        return -1;
    tenant = jstr(o, "tenant");
    name = jstr(o, "name");
    sc = cJSON_GetObjectItemCaseSensitive(o, "scopes");
    if (from_hex(jstr(o, "sha256"), e->digest, 32) != 0 || tenant == NULL ||
        strlen(tenant) > AUTH_TENANT_MAX || name == NULL ||
        strlen(name) > AUTH_NAME_MAX || !cJSON_IsArray(sc))
        goto out;
    cJSON_ArrayForEach(it, sc) {
        int bit;

        if (!cJSON_IsString(it) ||
            (bit = auth_scope_lookup(it->valuestring,
                                     strlen(it->valuestring))) < 0)
            goto out;
        e->info.scopes |= (auth_scopes_t)1 << bit;
    }
    snprintf(e->id, sizeof(e->id), "%s", id);
    snprintf(e->info.id, sizeof(e->info.id), "%s", id);
    snprintf(e->info.tenant, sizeof(e->info.tenant), "%s", tenant);
    snprintf(e->info.name, sizeof(e->info.name), "%s", name);
    e->info.created_ms = jnum(o, "created_ms");
    e->info.expires_ms = jnum(o, "expires_ms");
    rc = e->info.created_ms < 0 || e->info.expires_ms < 0 ? -1 : 0;
out:
    cJSON_Delete(o);
    return rc;
}

/* ---- The table ------------------------------------------------------------ */

reel_code_t auth_create(store_t *store, auth_t **out, reel_status_t *st) {
    auth_t *a = calloc(1, sizeof(*a));
    store_iter_t *it = NULL;
    reel_code_t rc;

    *out = NULL;
    if (a == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    a->store = store;
    pthread_mutex_init(&a->mu, NULL);
    if ((rc = store_cf_lookup(store, auth_cfs[0].name, &a->cf, st)) !=
        REEL_OK)
        goto out;
    if ((it = store_iter_create(store, a->cf, NULL)) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (store_iter_seek_first(it); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        char id[AUTH_ID_LEN + 1];
        entry_t *e;

        if (klen != 2 + AUTH_ID_LEN || memcmp(k, KEY_PREFIX, 2) != 0) {
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "auth: a key of %zu bytes that is no token's",
                                 klen);
            goto out;
        }
        memcpy(id, k + 2, AUTH_ID_LEN);
        id[AUTH_ID_LEN] = '\0';
        if ((e = malloc(sizeof(*e))) == NULL) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                 "out of memory");
            goto out;
        }
        if (record_decode(id, v, vlen, e) != 0) {
            free(e);
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "auth: the record of token %s does not "
                                 "decode",
                                 id);
            goto out;
        }
        HASH_ADD_STR(a->by_id, id, e);
    }
    rc = store_iter_status(it, st);
out:
    store_iter_destroy(it);
    if (rc != REEL_OK)
        auth_destroy(a);
    else
        *out = a;
    return rc;
}

void auth_destroy(auth_t *a) {
    entry_t *e, *tmp;

    if (a == NULL)
        return;
    HASH_ITER(hh, a->by_id, e, tmp) {
        HASH_DEL(a->by_id, e);
        OPENSSL_cleanse(e->digest, sizeof(e->digest));
        free(e);
    }
    pthread_mutex_destroy(&a->mu);
    free(a);
}

size_t auth_count(auth_t *a) {
    size_t n;

    pthread_mutex_lock(&a->mu);
    n = HASH_COUNT(a->by_id);
    pthread_mutex_unlock(&a->mu);
    return n;
}

reel_code_t auth_check(auth_t *a, const char *tok, size_t len, int64_t now_ms,
                       auth_principal_t *who, reel_status_t *st) {
    char id[AUTH_ID_LEN + 1];
    unsigned char digest[32], zero[32] = {0};
    entry_t *e;
    int match;
    reel_code_t rc = REEL_OK;

    if (auth_token_parse(tok, len, id) != 0)
        return reel_status_set(st, REEL_UNAUTHENTICATED,
                               "authorization: not a reel token (reel_<id>_"
                               "<secret>, %d bytes)",
                               AUTH_TOKEN_LEN);
    sha256(tok, len, digest);
    pthread_mutex_lock(&a->mu);
    HASH_FIND_STR(a->by_id, id, e);
    /* An unknown id compares against zeros, so both ways take the same
     * work: the answer's time says nothing about which ids exist. */
    match = CRYPTO_memcmp(digest, e ? e->digest : zero, 32) == 0 && e;
    if (!match)
        rc = reel_status_set(st, REEL_UNAUTHENTICATED,
                             "authorization: unknown or revoked token %s",
                             id);
    else if (e->info.expires_ms != 0 && now_ms >= e->info.expires_ms)
        rc = reel_status_set(st, REEL_UNAUTHENTICATED,
                             "authorization: token %s expired", id);
    else {
        memset(who, 0, sizeof(*who));
        memcpy(who->id, id, sizeof(who->id));
        memcpy(who->tenant, e->info.tenant, sizeof(who->tenant));
        who->scopes = e->info.scopes;
        who->expires_ms = e->info.expires_ms;
    }
    pthread_mutex_unlock(&a->mu);
    OPENSSL_cleanse(digest, sizeof(digest));
    return rc;
}

int auth_is_live(auth_t *a, const char *id, int64_t now_ms) {
    entry_t *e;
    int live;

    pthread_mutex_lock(&a->mu);
    HASH_FIND_STR(a->by_id, id, e);
    live = e != NULL &&
           (e->info.expires_ms == 0 || now_ms < e->info.expires_ms);
    pthread_mutex_unlock(&a->mu);
    return live;
}

/* ---- Writes ---------------------------------------------------------------- */

typedef struct put_arg {
    store_cf_t *cf;
    char key[2 + AUTH_ID_LEN];
    const char *val; /* NULL: delete */
    int must_exist;
} put_arg_t;

static reel_code_t apply_put(store_txn_t *txn, void *arg, reel_status_t *st) {
    put_arg_t *p = arg;
    char *old = NULL;
    size_t olen;
    reel_code_t rc;

    rc = store_txn_get(txn, p->cf, p->key, sizeof(p->key), &old, &olen, st);
    free(old);
    if (rc != REEL_OK && rc != REEL_NOT_FOUND)
        return rc;
    if (p->must_exist && rc == REEL_NOT_FOUND)
        return reel_status_set(st, REEL_NOT_FOUND, "id: no token %.*s",
                               AUTH_ID_LEN, p->key + 2);
    if (!p->must_exist && rc == REEL_OK) /* 64 random bits met again */
        return reel_status_set(st, REEL_ABORTED,
                               "token id %.*s exists already; try again",
                               AUTH_ID_LEN, p->key + 2);
    reel_status_fini(st);
    if (p->val != NULL)
        store_txn_put(txn, p->cf, p->key, sizeof(p->key), p->val,
                      strlen(p->val));
    else
        store_txn_delete(txn, p->cf, p->key, sizeof(p->key));
    return REEL_OK;
}

reel_code_t auth_token_new(char token[AUTH_TOKEN_LEN + 1],
                           reel_status_t *st) {
    unsigned char rnd[8 + 32];

    token[0] = '\0';
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return reel_status_set(st, REEL_INTERNAL,
                               "no random bytes for a token");
    /* reel_<16 hex>_<43 base64url> */
    memcpy(token, "reel_", 5);
    reel_hex(rnd, 8, token + 5);
    token[5 + AUTH_ID_LEN] = '_';
    for (int i = 0, bits = 0, acc = 0, o = 6 + AUTH_ID_LEN; i < 32; i++) {
        acc = (acc << 8) | rnd[8 + i];
        bits += 8;
        while (bits >= 6) {
            token[o++] = b64url[(acc >> (bits - 6)) & 63];
            bits -= 6;
        }
        if (i == 31) /* 4 bits left, padded with two zero bits */
            token[o++] = b64url[(acc << (6 - bits)) & 63];
        acc &= (1 << bits) - 1;
    }
    token[AUTH_TOKEN_LEN] = '\0';
    OPENSSL_cleanse(rnd, sizeof(rnd));
    return REEL_OK;
}

/*
 * Whether the UTF-8 text at p starts with a character that steers a
 * terminal or the direction of the text around it: C0 controls, DEL, C1
 * controls (U+0080-U+009F), the line and paragraph separators (U+2028,
 * U+2029: a line break to JSON readers and log viewers) and the
 * bidirectional marks, embeddings, overrides and isolates (U+061C,
 * U+200E-U+200F, U+202A-U+202E, U+2066-U+2069). p is NUL-terminated, so
 * reading ahead stops there.
 */
static int name_steers(const char *s) {
    const unsigned char *p = (const unsigned char *)s;

    if (p[0] < 0x20 || p[0] == 0x7f)
        return 1;
    if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
        return 1;
    if (p[0] == 0xd8 && p[1] == 0x9c)
        return 1;
    if (p[0] == 0xe2 && p[1] == 0x80 &&
        (p[2] == 0x8e || p[2] == 0x8f || (p[2] >= 0xa8 && p[2] <= 0xae)))
        return 1;
    if (p[0] == 0xe2 && p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9)
        return 1;
    return 0;
}

reel_code_t auth_token_store(auth_t *a, const char *tenant,
                             auth_scopes_t scopes, const char *name,
                             int64_t ttl_ms, const char *token,
                             auth_info_t *info, reel_status_t *st) {
    char id[AUTH_ID_LEN + 1];
    entry_t *e = NULL, *old;
    put_arg_t p;
    char *rec = NULL;
    reel_code_t rc;

    if ((rc = auth_check_tenant("tenant", tenant, st)) != REEL_OK)
        return rc;
    if (scopes == 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "scopes: empty: at least one scope is needed");
    if (name == NULL)
        name = "";
    if (strlen(name) > AUTH_NAME_MAX)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "name: %zu bytes exceeds the limit of %d",
                               strlen(name), AUTH_NAME_MAX);
    /* It goes into logs and listings: one line, nothing that steers a
     * terminal or turns the text around it. */
    for (size_t i = 0; name[i] != '\0'; i++)
        if (name_steers(name + i))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "name: byte %zu starts a control "
                                   "character (C0, DEL, C1, a line or "
                                   "paragraph separator or a "
                                   "bidirectional control)",
                                   i);
    if (ttl_ms < 0 || ttl_ms > AUTH_TTL_MAX_MS)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "ttl_ms: %lld is not in 0..%lld (100 years; "
                               "0: never expires)",
                               (long long)ttl_ms, (long long)AUTH_TTL_MAX_MS);
    if (token == NULL || auth_token_parse(token, strlen(token), id) != 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "token: not a reel token (reel_<id>_<secret>, "
                               "%d bytes)",
                               AUTH_TOKEN_LEN);
    pthread_mutex_lock(&a->mu);
    HASH_FIND_STR(a->by_id, id, old);
    pthread_mutex_unlock(&a->mu);
    if (old != NULL)
        return reel_status_set(st, REEL_ALREADY_EXISTS,
                               "token %s: already stored", id);
    if ((e = calloc(1, sizeof(*e))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(e->id, id, sizeof(e->id));
    sha256(token, AUTH_TOKEN_LEN, e->digest);
    memcpy(e->info.id, e->id, sizeof(e->id));
    snprintf(e->info.tenant, sizeof(e->info.tenant), "%s", tenant);
    snprintf(e->info.name, sizeof(e->info.name), "%s", name);
    e->info.scopes = scopes;
    e->info.created_ms = reel_clock_now_ms();
    e->info.expires_ms = ttl_ms ? e->info.created_ms + ttl_ms : 0;
    if ((rec = record_encode(e)) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    p.cf = a->cf;
    memcpy(p.key, KEY_PREFIX, 2);
    memcpy(p.key + 2, e->id, AUTH_ID_LEN);
    p.val = rec;
    p.must_exist = 0;
    if ((rc = store_exec(a->store, apply_put, &p, NULL, st)) != REEL_OK)
        goto out;
    /* Committed: the token works from now on. */
    *info = e->info;
    pthread_mutex_lock(&a->mu);
    HASH_ADD_STR(a->by_id, id, e);
    pthread_mutex_unlock(&a->mu);
    e = NULL;
out:
    free(rec);
    free(e);
    return rc;
}

reel_code_t auth_token_create(auth_t *a, const char *tenant,
                              auth_scopes_t scopes, const char *name,
                              int64_t ttl_ms, char token[AUTH_TOKEN_LEN + 1],
                              auth_info_t *info, reel_status_t *st) {
    reel_code_t rc;

    if ((rc = auth_token_new(token, st)) != REEL_OK)
        return rc;
    if ((rc = auth_token_store(a, tenant, scopes, name, ttl_ms, token, info,
                               st)) != REEL_OK)
        OPENSSL_cleanse(token, AUTH_TOKEN_LEN + 1);
    return rc;
}

reel_code_t auth_token_revoke(auth_t *a, const char *id, reel_status_t *st) {
    put_arg_t p;
    entry_t *e;
    reel_code_t rc;

    if (id == NULL || strlen(id) != AUTH_ID_LEN)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "id: %zu bytes, expected %d hex digits",
                               id ? strlen(id) : 0, AUTH_ID_LEN);
    for (size_t i = 0; i < AUTH_ID_LEN; i++)
        if (!is_hex(id[i]))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "id: byte %zu is not a lowercase hex "
                                   "digit",
                                   i);
    p.cf = a->cf;
    memcpy(p.key, KEY_PREFIX, 2);
    memcpy(p.key + 2, id, AUTH_ID_LEN);
    p.val = NULL;
    p.must_exist = 1;
    if ((rc = store_exec(a->store, apply_put, &p, NULL, st)) != REEL_OK)
        return rc;
    pthread_mutex_lock(&a->mu);
    HASH_FIND_STR(a->by_id, id, e);
    if (e != NULL)
        HASH_DEL(a->by_id, e);
    pthread_mutex_unlock(&a->mu);
    free(e);
    return REEL_OK;
}

static int by_id(const void *x, const void *y) {
    return strcmp(((const auth_info_t *)x)->id, ((const auth_info_t *)y)->id);
}

reel_code_t auth_token_list(auth_t *a, auth_info_t **out, size_t *n,
                            reel_status_t *st) {
    entry_t *e, *tmp;
    size_t i = 0;

    pthread_mutex_lock(&a->mu);
    *n = HASH_COUNT(a->by_id);
    *out = malloc((*n ? *n : 1) * sizeof(**out));
    if (*out == NULL) {
        pthread_mutex_unlock(&a->mu);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    HASH_ITER(hh, a->by_id, e, tmp) (*out)[i++] = e->info;
    pthread_mutex_unlock(&a->mu);
    qsort(*out, *n, sizeof(**out), by_id);
    return REEL_OK;
}
