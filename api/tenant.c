/*
 * api/tenant.c: tenant prefixes on the names calls give (see tenant.h).
 */
#include "api/tenant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "base/text.h"
#include "kv/kv.h"
#include "reel/v1/wal.pb-c.h"
#include "wal/wal.h"

static const char *prefix_as(const char *tenant, char *buf, size_t cap);

/* The call's tenant; NULL without --auth token (it sees all). */
static const char *tenant_of(rpc_call_t *call) {
    const auth_principal_t *who = rpc_call_principal(call);

    return who != NULL ? who->tenant : NULL;
}

/* The tenant when its names get a prefix, else NULL. */
static const char *scoped_as(const char *tenant) {
    if (tenant == NULL || strcmp(tenant, AUTH_DEFAULT_TENANT) == 0 ||
        strcmp(tenant, AUTH_ADMIN_TENANT) == 0)
        return NULL;
    return tenant;
}

static int sees_all_as(const char *tenant) {
    return tenant == NULL || strcmp(tenant, AUTH_ADMIN_TENANT) == 0;
}

const char *api_tenant_scoped(rpc_call_t *call) {
    return scoped_as(tenant_of(call));
}

const char *api_tenant_mark(rpc_call_t *call, char *buf, size_t cap) {
    if (api_tenant_hides_scoped(call))
        return WAL_SCOPE_UNMARKED;
    return prefix_as(tenant_of(call), buf, cap);
}

int api_tenant_hides_scoped(rpc_call_t *call) {
    const auth_principal_t *who = rpc_call_principal(call);

    return who != NULL && strcmp(who->tenant, AUTH_DEFAULT_TENANT) == 0;
}

int api_tenant_keeps_apart(const char *path) {
    static const char *const services[] = {
        "/reel.v1.KV/",  "/reel.v1.Journal/",   "/reel.v1.Signals/",
        "/reel.v1.Wal/", "/reel.v1.Workspace/", NULL};

    for (const char *const *p = services; *p != NULL; p++)
        if (strncmp(path, *p, strlen(*p)) == 0)
            return 1;
    return strcmp(path, "/reel.v1.Admin/GetStatus") == 0;
}

int api_tenant_sees_all(rpc_call_t *call) {
    return sees_all_as(tenant_of(call));
}

size_t api_tenant_prefix_len(const char *stored) {
    const char *end;

    if (stored == NULL || strncmp(stored, API_TENANT_MARK, 2) != 0 ||
        (end = strchr(stored + 2, ':')) == NULL)
        return 0;
    return (size_t)(end - stored) + 1;
}

int api_tenant_owns_as(const char *tenant, const char *stored) {
    const char *t = scoped_as(tenant);
    size_t tl;

    if (sees_all_as(tenant))
        return 1;
    if (t == NULL)
        return strncmp(stored, API_TENANT_MARK, 2) != 0;
    tl = strlen(t);
    return strncmp(stored, API_TENANT_MARK, 2) == 0 &&
           strncmp(stored + 2, t, tl) == 0 && stored[2 + tl] == ':';
}

/* A byte a name's text can hold just before a tenant's prefix inside it
 * (a key "a/::T:x", "a::T:x"): those of the namespaces' rule, and a key's
 * UTF-8. */
static int name_byte(unsigned char c) {
    return reel_in_charset(c, KV_NAMESPACE_CHARS) || c >= 0x80;
}

void api_tenant_status_out_as(const char *tenant, reel_status_t *st) {
    char pre[AUTH_TENANT_MAX + 8];
    const char *p = prefix_as(tenant, pre, sizeof(pre)), *msg, *hit, *start;
    size_t plen, n = 0;
    char *out;

    if (p == NULL || st == NULL || st->code == REEL_OK ||
        strstr(msg = reel_status_message(st), p) == NULL)
        return;
    plen = strlen(p);
    if ((out = malloc(strlen(msg) + 1)) == NULL)
        return; /* the message keeps the prefix: still the caller's own */
    start = msg;
    while ((hit = strstr(msg, p)) != NULL) {
        /* A stored name starts the message or follows a byte no name
         * holds before its prefix; "w/::T:x" is the tenant's own key
         * "::T:x" after its namespace, kept. */
        int at_name = hit == start || !name_byte((unsigned char)hit[-1]);

        memcpy(out + n, msg, (size_t)(hit - msg));
        n += (size_t)(hit - msg);
        if (!at_name) {
            memcpy(out + n, hit, plen);
            n += plen;
        }
        msg = hit + plen;
    }
    strcpy(out + n, msg);
    reel_status_set(st, st->code, "%s", out);
    free(out);
}

/* The tenant's prefix "::T:" into buf (at least 2 + 63 + 2 bytes), or
 * NULL when its names get none. */
static const char *prefix_as(const char *tenant, char *buf, size_t cap) {
    const char *t = scoped_as(tenant);

    if (t == NULL)
        return NULL;
    snprintf(buf, cap, "%s%s:", API_TENANT_MARK, t);
    return buf;
}

reel_code_t api_tenant_pattern_in_as(const char *tenant, const char *pattern,
                                     char **out, const char **out_pattern,
                                     reel_status_t *st) {
    char pre[AUTH_TENANT_MAX + 8];
    const char *p = prefix_as(tenant, pre, sizeof(pre));
    const char *dot1, *second, *dot2;
    size_t slen, n;

    *out = NULL;
    *out_pattern = pattern;
    if (sees_all_as(tenant) || (dot1 = strchr(pattern, '.')) == NULL)
        return REEL_OK; /* "", ">", one token: filtered on delivery */
    second = dot1 + 1;
    dot2 = strchr(second, '.');
    slen = dot2 ? (size_t)(dot2 - second) : strlen(second);
    /* A literal second token (a namespace, a run_id) gets the prefix,
     * whatever the first: every tenant event carries it there; wildcards
     * are left to the filter on delivery. */
    if ((slen == 1 && (second[0] == '*' || second[0] == '>')) || slen == 0)
        return REEL_OK;
    if (strncmp(second, API_TENANT_MARK, 2) == 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "subject_pattern: names starting with \"::\" "
                               "are reserved for tenants");
    if (p == NULL)
        return REEL_OK; /* the default tenant's names are as given */
    n = strlen(pattern) + strlen(p) + 1;
    if ((*out = malloc(n)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    snprintf(*out, n, "%.*s%s%s", (int)(second - pattern), pattern, p, second);
    *out_pattern = *out;
    return REEL_OK;
}

/* Reads a varint at *p (< end): 0, or -1 if it does not fit. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;

        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

/* The stored Event's subject (field 2), read from its bytes without
 * decoding the rest: 0, or -1 when it has none or the bytes are bad. */
static int raw_subject(const uint8_t *bytes, size_t len, const char **s,
                       size_t *slen) {
    const uint8_t *p = bytes, *end = bytes + len;

    while (p < end) {
        uint64_t key, v;

        if (varint(&p, end, &key) != 0)
            return -1;
        switch (key & 7) {
        case 0:
            if (varint(&p, end, &v) != 0)
                return -1;
            break;
        case 1:
            if (end - p < 8)
                return -1;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return -1;
            p += 4;
            break;
        case 2:
            if (varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
                return -1;
            if ((key >> 3) == 2) {
                *s = (const char *)p;
                *slen = (size_t)v;
                return 0;
            }
            p += v;
            break;
        default:
            return -1;
        }
    }
    return -1;
}

/* 1 when a subject's second token starts with prefix (plen bytes): the
 * token is kv.<namespace>.<key>'s namespace, never a key's own dots and
 * colons. */
static int second_token_starts(const char *s, size_t slen, const char *prefix,
                               size_t plen) {
    const char *dot = memchr(s, '.', slen);

    return dot != NULL && (size_t)(dot - s) + 1 + plen <= slen &&
           memcmp(dot + 1, prefix, plen) == 0;
}

int api_tenant_event_out_as(const char *tenant, const uint8_t *bytes,
                            size_t len, uint8_t **out, size_t *olen) {
    char pre[AUTH_TENANT_MAX + 8];
    const char *p = prefix_as(tenant, pre, sizeof(pre));
    size_t plen = p ? strlen(p) : 0, first;
    Reel__V1__Event *ev;
    char *subject = NULL, *orig_subject, *orig_name = NULL, **name = NULL;
    const char *raw;
    size_t rawlen;
    int rc = 0;

    *out = NULL;
    *olen = 0;
    /* Most events a tenant's tail is offered are other tenants': told
     * apart by the subject's bytes, without decoding the event. */
    if (p == NULL || raw_subject(bytes, len, &raw, &rawlen) != 0 ||
        !second_token_starts(raw, rawlen, p, plen) ||
        (ev = reel__v1__event__unpack(NULL, len, bytes)) == NULL)
        return 0;
    /* <module>.<::T:second>...: the tenant's own, and only then. */
    first = ev->subject ? strcspn(ev->subject, ".") : 0;
    if (ev->subject == NULL || ev->subject[first] != '.' ||
        strncmp(ev->subject + first + 1, p, plen) != 0) {
        reel__v1__event__free_unpacked(ev, NULL);
        return 0;
    }
    /* The body's own stored name, shown as the tenant gave it. */
    if (ev->body_case == REEL__V1__EVENT__BODY_VALUE && ev->value != NULL)
        name = &ev->value->namespace_;
    else if (ev->body_case == REEL__V1__EVENT__BODY_RUN && ev->run != NULL)
        name = &ev->run->app;
    else if (ev->body_case == REEL__V1__EVENT__BODY_ARTIFACT &&
             ev->artifact != NULL)
        name = &ev->artifact->namespace_;
    rc = -1;
    if ((subject = malloc(strlen(ev->subject) + 1)) != NULL) {
        snprintf(subject, strlen(ev->subject) + 1, "%.*s.%s", (int)first,
                 ev->subject, ev->subject + first + 1 + plen);
        /* Point at the stripped forms to pack, then put back what
         * free_unpacked owns. */
        orig_subject = ev->subject;
        ev->subject = subject;
        if (name != NULL) {
            orig_name = *name;
            *name = (char *)api_tenant_name_out_as(tenant, orig_name);
        }
        *olen = reel__v1__event__get_packed_size(ev);
        if ((*out = malloc(*olen ? *olen : 1)) != NULL) {
            reel__v1__event__pack(ev, *out);
            rc = 1;
        }
        ev->subject = orig_subject;
        if (name != NULL)
            *name = orig_name;
        free(subject);
    }
    reel__v1__event__free_unpacked(ev, NULL);
    return rc;
}

char *api_tenant_pattern_out_as(const char *tenant, const char *stored) {
    char pre[AUTH_TENANT_MAX + 8];
    const char *p = prefix_as(tenant, pre, sizeof(pre)), *dot;
    size_t plen = p ? strlen(p) : 0;
    char *out;

    if ((out = malloc(strlen(stored) + 1)) == NULL)
        return NULL;
    if (p != NULL && (dot = strchr(stored, '.')) != NULL &&
        strncmp(dot + 1, p, plen) == 0)
        snprintf(out, strlen(stored) + 1, "%.*s.%s", (int)(dot - stored),
                 stored, dot + 1 + plen);
    else
        strcpy(out, stored);
    return out;
}

size_t api_tenant_prefix_bytes_as(const char *tenant) {
    const char *t = scoped_as(tenant);

    return t != NULL ? strlen(API_TENANT_MARK) + strlen(t) + 1 : 0;
}

reel_code_t api_tenant_check_room(const char *tenant, size_t max,
                                  const char *limit, reel_status_t *st) {
    size_t pre = api_tenant_prefix_bytes_as(tenant);
    /* The longest tenant leaving a namespace 1 byte: "::", T, ':', 1. */
    size_t mark = strlen(API_TENANT_MARK) + 1 + 1;
    char most[96];

    if (pre == 0 || pre < max)
        return REEL_OK;
    if (max > mark)
        snprintf(most, sizeof(most), "a tenant may be at most %zu bytes",
                 max - mark);
    else
        snprintf(most, sizeof(most),
                 "only the default and admin tenants (no prefix) fit");
    return reel_status_set(st, REEL_INVALID_ARGUMENT,
                           "tenant: \"%s\" is %zu bytes, and the prefix "
                           "\"::%s:\" its namespaces are stored under takes "
                           "%zu, leaving 0 bytes for a namespace under %s %zu "
                           "(at least 1 needed): %s there",
                           tenant, strlen(tenant), tenant, pre, limit, max,
                           most);
}

/* api_tenant_name_in_as; limit names where max comes from (a flag), or
 * NULL for a fixed limit. */
static reel_code_t name_in(const char *tenant, const char *field,
                           const char *name, size_t max, const char *limit,
                           char **out, const char **out_name,
                           reel_status_t *st) {
    const char *t = scoped_as(tenant);
    size_t n = strlen(name), pre;

    *out = NULL;
    *out_name = name;
    /* Without --auth token (no principal) or for admin: as given. */
    if (sees_all_as(tenant))
        return REEL_OK;
    if (strncmp(name, API_TENANT_MARK, 2) == 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: names starting with \"::\" are reserved "
                               "for tenants",
                               field);
    if (t == NULL)
        return REEL_OK;
    pre = 2 + strlen(t) + 1;
    /* A token made before the limit was lowered (CreateToken refuses a
     * tenant leaving no room): no name of it fits, whatever its length. */
    if (pre >= max)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: tenant %s's name leaves no room under "
                               "%s %zu%s: its names are stored behind a "
                               "prefix of %zu bytes (\"::\", the tenant, "
                               "\":\")",
                               field, t, limit ? limit : "the limit of", max,
                               limit ? "" : " bytes", pre);
    if (n == 0 || n + pre > max)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: must be 1-%zu bytes for tenant %s (got "
                               "%zu)",
                               field, max - pre, t, n);
    if ((*out = malloc(pre + n + 1)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    snprintf(*out, pre + n + 1, "%s%s:%s", API_TENANT_MARK, t, name);
    *out_name = *out;
    return REEL_OK;
}

reel_code_t api_tenant_name_in_as(const char *tenant, const char *field,
                                  const char *name, size_t max, char **out,
                                  const char **out_name, reel_status_t *st) {
    return name_in(tenant, field, name, max, NULL, out, out_name, st);
}

reel_code_t api_tenant_charset_in_as(const char *tenant, const char *field,
                                     const char *name, size_t max,
                                     const char *limit, const char *allowed,
                                     char **out, const char **out_name,
                                     reel_status_t *st) {
    reel_code_t rc;

    if ((rc = name_in(tenant, field, name, max, limit, out, out_name, st)) !=
            REEL_OK ||
        *out == NULL)
        return rc;
    /* Checked as given, so an error's byte offset is the tenant's own. */
    if ((rc = reel_check_charset(field, name, strlen(name), max, allowed,
                                 st)) != REEL_OK) {
        free(*out);
        *out = NULL;
        *out_name = name;
    }
    return rc;
}

const char *api_tenant_name_out_as(const char *tenant, const char *stored) {
    const char *t = scoped_as(tenant);
    size_t tl;

    if (t == NULL || stored == NULL || strncmp(stored, API_TENANT_MARK, 2) != 0)
        return stored;
    tl = strlen(t);
    if (strncmp(stored + 2, t, tl) == 0 && stored[2 + tl] == ':')
        return stored + 2 + tl + 1;
    return stored;
}

/* ---- The call's tenant ---------------------------------------------------- */

int api_tenant_owns(rpc_call_t *call, const char *stored) {
    return api_tenant_owns_as(tenant_of(call), stored);
}

void api_tenant_status_out(rpc_call_t *call, reel_status_t *st) {
    api_tenant_status_out_as(tenant_of(call), st);
}

reel_code_t api_tenant_pattern_in(rpc_call_t *call, const char *pattern,
                                  char **out, const char **out_pattern,
                                  reel_status_t *st) {
    return api_tenant_pattern_in_as(tenant_of(call), pattern, out,
                                    out_pattern, st);
}

int api_tenant_event_out(rpc_call_t *call, const uint8_t *bytes, size_t len,
                         uint8_t **out, size_t *olen) {
    return api_tenant_event_out_as(tenant_of(call), bytes, len, out, olen);
}

char *api_tenant_pattern_out(rpc_call_t *call, const char *stored) {
    return api_tenant_pattern_out_as(tenant_of(call), stored);
}

reel_code_t api_tenant_name_in(rpc_call_t *call, const char *field,
                               const char *name, size_t max, char **out,
                               const char **out_name, reel_status_t *st) {
    return api_tenant_name_in_as(tenant_of(call), field, name, max, out,
                                 out_name, st);
}

reel_code_t api_tenant_charset_in(rpc_call_t *call, const char *field,
                                  const char *name, size_t max,
                                  const char *limit, const char *allowed,
                                  char **out, const char **out_name,
                                  reel_status_t *st) {
    return api_tenant_charset_in_as(tenant_of(call), field, name, max, limit,
                                    allowed, out, out_name, st);
}

const char *api_tenant_name_out(rpc_call_t *call, const char *stored) {
    return api_tenant_name_out_as(tenant_of(call), stored);
}

int api_tenant_event_is_scoped(const uint8_t *bytes, size_t len) {
    const char *s;
    size_t slen;

    return raw_subject(bytes, len, &s, &slen) == 0 &&
           second_token_starts(s, slen, API_TENANT_MARK, 2);
}

/* Where each kind of name a tenant keeps apart is stored: its column
 * family and the tag its keys start with (the modules' key layouts). */
static const struct {
    const char *cf, *tag, *what;
} stored_names[] = {
    {"kv", "", "KV namespace"},              /* ns 0 key (kv/kv.c) */
    {"runs", "i", "app"},                    /* 'i' app 0 ... (journal) */
    {"wal", "c", "durable consumer"},        /* 'c' name (wal/wal.c) */
    {"ws", "c", "workspace namespace"},      /* 'c' ns 0 key (workspace) */
};

reel_code_t api_tenant_check_upgrade(store_t *store, const char *dir,
                                     reel_status_t *st) {
    for (size_t i = 0; i < sizeof(stored_names) / sizeof(*stored_names);
         i++) {
        char seek[8];
        size_t tl = strlen(stored_names[i].tag), klen = 0;
        store_cf_t *cf;
        store_iter_t *it;
        const char *k = NULL;
        char name[80];
        reel_code_t rc;

        if (store_cf_lookup(store, stored_names[i].cf, &cf, st) != REEL_OK) {
            reel_status_fini(st); /* a module this reeld does not have */
            continue;
        }
        if ((it = store_iter_create(store, cf, NULL)) == NULL)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        snprintf(seek, sizeof(seek), "%s%s", stored_names[i].tag,
                 API_TENANT_MARK);
        store_iter_seek(it, seek, strlen(seek));
        if (store_iter_valid(it))
            k = store_iter_key(it, &klen);
        if (k != NULL && klen >= strlen(seek) &&
            memcmp(k, seek, strlen(seek)) == 0) {
            size_t n = 0;

            while (tl + n < klen && n < sizeof(name) - 1 && k[tl + n] != '\0')
                n++;
            memcpy(name, k + tl, n);
            name[n] = '\0';
            store_iter_destroy(it);
            return reel_status_set(
                st, REEL_FAILED_PRECONDITION,
                "data dir %s was written before tenants (format 1) and holds "
                "the %s \"%s\": names starting with \"::\" are tenants' "
                "since format 2 (\"::T:name\" is tenant T's), so it would "
                "become another tenant's. Move that data to a name without "
                "\"::\" with the reeld that wrote it (the data dir is "
                "unchanged; that reeld still opens it), then start this one "
                "again",
                dir, stored_names[i].what, name);
        }
        rc = store_iter_status(it, st);
        store_iter_destroy(it);
        if (rc != REEL_OK)
            return rc;
    }
    return REEL_OK;
}
