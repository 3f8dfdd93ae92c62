/*
 * api/tenant.c: tenant prefixes on the names calls give (see tenant.h).
 */
#include "api/tenant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

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
           strcmp(path, "/reel.v1.Admin/GetStatus") == 0;
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
