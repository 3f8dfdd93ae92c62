/*
 * auth/auth.h: bearer tokens, their scopes and their tenants, stored in
 * reel itself (reeld --auth token; docs/security.md).
 *
 * A token is "reel_<id>_<secret>": id is 16 lowercase hex digits (8 random
 * bytes; public: it names the token in lists, revocations and logs), the
 * secret 43 base64url characters (32 random bytes). Only the SHA-256 of
 * the whole token is stored. A plain hash is enough because the secret is
 * 256 random bits: nobody can search that space, so the salt and slow
 * hash that protect low-entropy passwords would add cost and nothing else.
 * Checking compares digests in constant time (CRYPTO_memcmp), so timing
 * tells nothing about how much of a guess was right.
 *
 * Every token carries a tenant and a set of scopes (a bit each). Tokens
 * live in the "auth" column family and, for checking, in a table in memory
 * loaded at create and changed after each committed create or revoke.
 *
 * Threading: auth_t is thread-safe (a mutex over the table). Writes go
 * through store_exec(): never call them on the store's writer thread.
 */
#ifndef REEL_AUTH_AUTH_H
#define REEL_AUTH_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "store/store.h"

extern const store_cf_desc_t auth_cfs[];

#define AUTH_ID_LEN 16
#define AUTH_SECRET_LEN 43
#define AUTH_TOKEN_LEN (5 + AUTH_ID_LEN + 1 + AUTH_SECRET_LEN)
#define AUTH_TENANT_MAX 63
#define AUTH_NAME_MAX 128
/* The longest ttl a token takes: 100 years (36,525 days), in ms. */
#define AUTH_TTL_MAX_MS 3155760000000LL
/* The tenant whose names carry no prefix: a data dir from before tenants
 * is its data. */
#define AUTH_DEFAULT_TENANT "default"
/* The tenant of admin tokens: it sees every tenant. */
#define AUTH_ADMIN_TENANT "admin"

/* X(bit, name): one scope per service and access. */
#define AUTH_SCOPE_MAP(X)          \
    X(KV_READ, "kv:read")          \
    X(KV_WRITE, "kv:write")        \
    X(JOURNAL_READ, "journal:read") \
    X(JOURNAL_WRITE, "journal:write") \
    X(SIGNALS_SEND, "signals:send") \
    X(SIGNALS_AWAIT, "signals:await") \
    X(WAL_READ, "wal:read")        \
    X(WAL_CONSUME, "wal:consume")  \
    X(WORKSPACE_READ, "workspace:read") \
    X(WORKSPACE_WRITE, "workspace:write") \
    X(ADMIN, "admin")

typedef enum auth_scope_bit {
#define AUTH_SCOPE_ENUM_(b, n) AUTH_SCOPE_BIT_##b,
    AUTH_SCOPE_MAP(AUTH_SCOPE_ENUM_)
#undef AUTH_SCOPE_ENUM_
    AUTH_SCOPE__COUNT
} auth_scope_bit_t;

typedef uint32_t auth_scopes_t;
#define AUTH_SCOPE(b) ((auth_scopes_t)1 << AUTH_SCOPE_BIT_##b)

/* "kv:read" for one bit; NULL outside the table. */
const char *auth_scope_name(auth_scope_bit_t bit);
/* The bit of a scope name of len bytes, or -1. */
int auth_scope_lookup(const char *name, size_t len);
/* A comma-separated list ("kv:read,kv:write") into *out: INVALID_ARGUMENT
 * naming the field and the unknown scope, or an empty list. */
reel_code_t auth_scopes_parse(const char *field, const char *list,
                              auth_scopes_t *out, reel_status_t *st);

/*
 * Splits a token of len bytes (not NUL-terminated; any bytes) into its id
 * (NUL-terminated into id). 0 if it is well-formed, -1 otherwise. Never
 * reads past len. The fuzz target fuzz_token drives it.
 */
int auth_token_parse(const char *tok, size_t len, char id[AUTH_ID_LEN + 1]);

/*
 * The token of an "authorization" metadata value ("Bearer <token>", the
 * scheme in any case, one space): a pointer into value and its length, or
 * NULL when the value is not a bearer credential.
 */
const char *auth_bearer(const char *value, size_t len, size_t *tlen);

/* A checked token: who is calling. */
typedef struct auth_principal {
    char id[AUTH_ID_LEN + 1];
    char tenant[AUTH_TENANT_MAX + 1];
    auth_scopes_t scopes;
    int64_t expires_ms; /* 0: never */
} auth_principal_t;

/* A token as listed: never its secret. */
typedef struct auth_info {
    char id[AUTH_ID_LEN + 1];
    char tenant[AUTH_TENANT_MAX + 1];
    char name[AUTH_NAME_MAX + 1];
    auth_scopes_t scopes;
    int64_t created_ms, expires_ms;
} auth_info_t;

typedef struct auth auth_t;

/* Loads every token from the store's "auth" family. */
reel_code_t auth_create(store_t *store, auth_t **out, reel_status_t *st);
void auth_destroy(auth_t *a);

/* Tokens stored (revoked ones are gone). */
size_t auth_count(auth_t *a);

/*
 * Checks a token of len bytes at now_ms: OK with *who; UNAUTHENTICATED
 * with a message that never holds the token (malformed, unknown or
 * revoked, or expired, said apart only where it tells a caller nothing
 * about other tokens).
 */
reel_code_t auth_check(auth_t *a, const char *tok, size_t len, int64_t now_ms,
                       auth_principal_t *who, reel_status_t *st);

/* 1 while the token of id is stored and not expired at now_ms. */
int auth_is_live(auth_t *a, const char *id, int64_t now_ms);

/* A tenant name: 1 to 63 of [a-z0-9-], starting with a letter or digit. */
reel_code_t auth_check_tenant(const char *field, const char *tenant,
                              reel_status_t *st);

/*
 * Creates a token (durably) and returns it once, in token (NUL-terminated)
 * and its record in *info. tenant checked as above; scopes not empty;
 * name at most AUTH_NAME_MAX bytes; ttl_ms 0 = never expires.
 */
reel_code_t auth_token_create(auth_t *a, const char *tenant,
                              auth_scopes_t scopes, const char *name,
                              int64_t ttl_ms, char token[AUTH_TOKEN_LEN + 1],
                              auth_info_t *info, reel_status_t *st);

/*
 * The two halves of auth_token_create, for a caller that must put the
 * token somewhere before it works (reeld's first admin token goes to a
 * file first): auth_token_new makes a fresh random token's text, stored
 * nowhere; auth_token_store stores a token made by auth_token_new (the
 * same checks as auth_token_create; ALREADY_EXISTS if its id is stored).
 */
reel_code_t auth_token_new(char token[AUTH_TOKEN_LEN + 1], reel_status_t *st);
reel_code_t auth_token_store(auth_t *a, const char *tenant,
                             auth_scopes_t scopes, const char *name,
                             int64_t ttl_ms, const char *token,
                             auth_info_t *info, reel_status_t *st);

/* Revokes (durably deletes) the token of id: NOT_FOUND naming the id. */
reel_code_t auth_token_revoke(auth_t *a, const char *id, reel_status_t *st);

/* Every token, sorted by id, in *out (malloc'd; free()) and *n. */
reel_code_t auth_token_list(auth_t *a, auth_info_t **out, size_t *n,
                            reel_status_t *st);

#endif
