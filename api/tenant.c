/*
 * api/tenant.c: tenant prefixes on the names calls give (see tenant.h).
 */
#include "api/tenant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "reel/v1/wal.pb-c.h"

const char *api_tenant_scoped(rpc_call_t *call) {
    const auth_principal_t *who = rpc_call_principal(call);

    if (who == NULL || strcmp(who->tenant, AUTH_DEFAULT_TENANT) == 0 ||
        strcmp(who->tenant, AUTH_ADMIN_TENANT) == 0)
        return NULL;
    return who->tenant;
}

int api_tenant_hides_scoped(rpc_call_t *call) {
    const auth_principal_t *who = rpc_call_principal(call);

    return who != NULL && strcmp(who->tenant, AUTH_DEFAULT_TENANT) == 0;
}

int api_tenant_keeps_apart(const char *path) {
    return strncmp(path, "/reel.v1.KV/", 12) == 0 ||
           strcmp(path, "/reel.v1.Admin/GetStatus") == 0 ||
           strcmp(path, "/reel.v1.Wal/SubscribeEvents") == 0 ||
           strcmp(path, "/reel.v1.Wal/SubscribeEventBatches") == 0 ||
           strcmp(path, "/reel.v1.Wal/GetHead") == 0;
}

/* The call's prefix "::T:" into buf (at least 2 + 63 + 2 bytes), or NULL
 * when its names get none. */
static const char *prefix_of(rpc_call_t *call, char *buf, size_t cap) {
    const char *t = api_tenant_scoped(call);

    if (t == NULL)
        return NULL;
    snprintf(buf, cap, "%s%s:", API_TENANT_MARK, t);
    return buf;
}

reel_code_t api_tenant_pattern_in(rpc_call_t *call, const char *pattern,
                                  char **out, const char **out_pattern,
                                  reel_status_t *st) {
    char pre[AUTH_TENANT_MAX + 8];
    const char *p = prefix_of(call, pre, sizeof(pre));
    const char *dot1, *second, *dot2;
    size_t slen, n;

    *out = NULL;
    *out_pattern = pattern;
    if (p == NULL || (dot1 = strchr(pattern, '.')) == NULL)
        return REEL_OK; /* "", ">", one token: filtered on delivery */
    second = dot1 + 1;
    dot2 = strchr(second, '.');
    slen = dot2 ? (size_t)(dot2 - second) : strlen(second);
    /* Only a literal namespace token, of kv or of any module, gets the
     * prefix; wildcards are left to the filter on delivery. */
    if ((dot1 - pattern != 2 || strncmp(pattern, "kv", 2) != 0) &&
        (dot1 - pattern != 1 || pattern[0] != '*'))
        return REEL_OK;
    if ((slen == 1 && (second[0] == '*' || second[0] == '>')) || slen == 0)
        return REEL_OK;
    if (strncmp(second, API_TENANT_MARK, 2) == 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "subject_pattern: names starting with \"::\" "
                               "are reserved for tenants");
    n = strlen(pattern) + strlen(p) + 1;
    if ((*out = malloc(n)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    snprintf(*out, n, "%.*s%s%s", (int)(second - pattern), pattern, p, second);
    *out_pattern = *out;
    return REEL_OK;
}

int api_tenant_event_out(rpc_call_t *call, const uint8_t *bytes, size_t len,
                         uint8_t **out, size_t *olen) {
    char pre[AUTH_TENANT_MAX + 8];
    const char *p = prefix_of(call, pre, sizeof(pre));
    size_t plen = p ? strlen(p) : 0;
    Reel__V1__Event *ev;
    char *subject = NULL, *orig_subject, *orig_ns;
    int rc = 0;

    *out = NULL;
    *olen = 0;
    if (p == NULL ||
        (ev = reel__v1__event__unpack(NULL, len, bytes)) == NULL)
        return 0;
    /* kv.<::T:namespace>.<key>: the tenant's own, and only then. */
    if (ev->subject == NULL || strncmp(ev->subject, "kv.", 3) != 0 ||
        strncmp(ev->subject + 3, p, plen) != 0 ||
        ev->body_case != REEL__V1__EVENT__BODY_VALUE || ev->value == NULL) {
        reel__v1__event__free_unpacked(ev, NULL);
        return 0;
    }
    rc = -1;
    if ((subject = malloc(strlen(ev->subject) + 1)) != NULL) {
        snprintf(subject, strlen(ev->subject) + 1, "kv.%s",
                 ev->subject + 3 + plen);
        /* Point at the stripped forms to pack, then put back what
         * free_unpacked owns. */
        orig_subject = ev->subject;
        orig_ns = ev->value->namespace_;
        ev->subject = subject;
        ev->value->namespace_ = (char *)api_tenant_name_out(call, orig_ns);
        *olen = reel__v1__event__get_packed_size(ev);
        if ((*out = malloc(*olen ? *olen : 1)) != NULL) {
            reel__v1__event__pack(ev, *out);
            rc = 1;
        }
        ev->subject = orig_subject;
        ev->value->namespace_ = orig_ns;
        free(subject);
    }
    reel__v1__event__free_unpacked(ev, NULL);
    return rc;
}

static int is_admin_tenant(rpc_call_t *call) {
    const auth_principal_t *who = rpc_call_principal(call);

    return who == NULL || strcmp(who->tenant, AUTH_ADMIN_TENANT) == 0;
}

reel_code_t api_tenant_name_in(rpc_call_t *call, const char *field,
                               const char *name, size_t max, char **out,
                               const char **out_name, reel_status_t *st) {
    const char *t = api_tenant_scoped(call);
    size_t n = strlen(name), pre;

    *out = NULL;
    *out_name = name;
    /* Without --auth token (no principal) or for admin: as given. */
    if (is_admin_tenant(call))
        return REEL_OK;
    if (strncmp(name, API_TENANT_MARK, 2) == 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: names starting with \"::\" are reserved "
                               "for tenants",
                               field);
    if (t == NULL)
        return REEL_OK;
    pre = 2 + strlen(t) + 1;
    if (n == 0 || n + pre > max)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: must be 1-%zu bytes for tenant %s (got "
                               "%zu)",
                               field, max > pre ? max - pre : 0, t, n);
    if ((*out = malloc(pre + n + 1)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    snprintf(*out, pre + n + 1, "%s%s:%s", API_TENANT_MARK, t, name);
    *out_name = *out;
    return REEL_OK;
}

const char *api_tenant_name_out(rpc_call_t *call, const char *stored) {
    const char *t = api_tenant_scoped(call);
    size_t tl;

    if (t == NULL || stored == NULL || strncmp(stored, API_TENANT_MARK, 2) != 0)
        return stored;
    tl = strlen(t);
    if (strncmp(stored + 2, t, tl) == 0 && stored[2 + tl] == ':')
        return stored + 2 + tl + 1;
    return stored;
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

int api_tenant_event_is_scoped(const uint8_t *bytes, size_t len) {
    const uint8_t *p = bytes, *end = bytes + len;

    while (p < end) {
        uint64_t key, v;

        if (varint(&p, end, &key) != 0)
            return 0;
        switch (key & 7) {
        case 0:
            if (varint(&p, end, &v) != 0)
                return 0;
            break;
        case 1:
            if (end - p < 8)
                return 0;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return 0;
            p += 4;
            break;
        case 2:
            if (varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
                return 0;
            if ((key >> 3) == 2) { /* subject */
                const char *s = (const char *)p;
                const char *dot = memchr(s, '.', (size_t)v);

                /* The second token: kv.<namespace>.<key>; a key's own
                 * dots and colons never count. */
                return dot != NULL && (size_t)(dot - s) + 3 <= (size_t)v &&
                       dot[1] == ':' && dot[2] == ':';
            }
            p += v;
            break;
        default:
            return 0;
        }
    }
    return 0;
}
