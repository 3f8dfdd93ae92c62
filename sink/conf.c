/*
 * sink/conf.c: the checks of one configuration object, shared by reel-sink
 * and reel-reactor; see conf.h.
 */
#include "sink/conf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#define MAX_STEP_MS (7LL * 24 * 3600 * 1000)

reel_code_t sink_conf_bad(const sink_conf_ctx_t *c, const char *field,
                          const char *fmt, ...) {
    char why[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (c->name != NULL)
        return reel_status_set(c->st, REEL_INVALID_ARGUMENT,
                               "%s[%zu] \"%s\": %s: %s", c->list, c->index,
                               c->name, field, why);
    return reel_status_set(c->st, REEL_INVALID_ARGUMENT, "%s[%zu]: %s: %s",
                           c->list, c->index, field, why);
}

int sink_conf_listed(const char *const *list, const char *key) {
    for (size_t i = 0; list[i] != NULL; i++)
        if (strcmp(list[i], key) == 0)
            return 1;
    return 0;
}

reel_code_t sink_conf_string(const sink_conf_ctx_t *c, const cJSON *o,
                             const char *field, int required, char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);

    *out = NULL;
    if (v == NULL) {
        if (required)
            return sink_conf_bad(c, field, "missing");
        return REEL_OK;
    }
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
        return sink_conf_bad(c, field, "must be a non-empty string");
    if ((*out = strdup(v->valuestring)) == NULL)
        return reel_status_set(c->st, REEL_RESOURCE_EXHAUSTED,
                               "out of memory");
    return REEL_OK;
}

reel_code_t sink_conf_int(const sink_conf_ctx_t *c, const cJSON *o,
                          const char *field, int64_t min, int64_t max,
                          int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
    double d;

    if (v == NULL)
        return REEL_OK;
    if (!cJSON_IsNumber(v))
        return sink_conf_bad(c, field, "must be a number");
    d = v->valuedouble;
    /* The range first: casting a double outside int64 is undefined. */
    if (!(d >= (double)min && d <= (double)max) || d != floor(d))
        return sink_conf_bad(c, field,
                             "%.17g is not an integer from %lld "
                             "to %lld",
                             d, (long long)min, (long long)max);
    *out = (int64_t)d;
    return REEL_OK;
}

reel_code_t sink_conf_bool(const sink_conf_ctx_t *c, const cJSON *o,
                           const char *field, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);

    if (v == NULL)
        return REEL_OK;
    if (!cJSON_IsBool(v))
        return sink_conf_bad(c, field, "must be true or false");
    *out = cJSON_IsTrue(v);
    return REEL_OK;
}

reel_code_t sink_conf_strings(const sink_conf_ctx_t *c, const cJSON *o,
                              const char *field, size_t max, char ***out,
                              size_t *n,
                              reel_code_t (*check)(const sink_conf_ctx_t *,
                                                   const char *,
                                                   const char *)) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field), *e;
    char fname[64];
    size_t i = 0;
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    if (v == NULL)
        return REEL_OK;
    if (!cJSON_IsArray(v))
        return sink_conf_bad(c, field, "must be an array of strings");
    if ((size_t)cJSON_GetArraySize(v) > max)
        return sink_conf_bad(c, field, "%d entries exceed the limit of %zu",
                             cJSON_GetArraySize(v), max);
    if ((*out = calloc((size_t)cJSON_GetArraySize(v) + 1, sizeof(char *))) ==
        NULL)
        return reel_status_set(c->st, REEL_RESOURCE_EXHAUSTED,
                               "out of memory");
    cJSON_ArrayForEach(e, v) {
        snprintf(fname, sizeof(fname), "%s[%zu]", field, i);
        if (!cJSON_IsString(e) || e->valuestring[0] == '\0')
            return sink_conf_bad(c, fname, "must be a non-empty string");
        if (check != NULL && (rc = check(c, fname, e->valuestring)) != REEL_OK)
            return rc;
        if (((*out)[i++] = strdup(e->valuestring)) == NULL)
            return reel_status_set(c->st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        *n = i;
    }
    return REEL_OK;
}

static reel_code_t check_secret(const sink_conf_ctx_t *c, const char *field,
                                const char *s) {
    sink_secret_t k;
    const char *why = NULL;

    /* The secret itself is never repeated in a message. */
    if (sink_secret_decode(s, &k, &why) != 0)
        return sink_conf_bad(c, field, "%s", why);
    return REEL_OK;
}

reel_code_t sink_conf_secrets(const sink_conf_ctx_t *c, const cJSON *o,
                              const char *missing, sink_secret_t **out,
                              size_t *count) {
    char **texts = NULL;
    size_t n = 0;
    reel_code_t rc;

    *out = NULL;
    *count = 0;
    rc = sink_conf_strings(c, o, "secrets", SINK_CONF_SECRETS_MAX, &texts, &n,
                           check_secret);
    if (rc == REEL_OK && n == 0)
        rc = sink_conf_bad(c, "secrets", "%s", missing);
    if (rc == REEL_OK && (*out = calloc(n, sizeof(**out))) == NULL)
        rc = reel_status_set(c->st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; rc == REEL_OK && i < n; i++) {
        const char *why;

        (void)sink_secret_decode(texts[i], &(*out)[i], &why);
        (*count)++;
    }
    for (size_t i = 0; i < n; i++) {
        /* Scrub the text: it is a credential. */
        memset(texts[i], 0, strlen(texts[i]));
        free(texts[i]);
    }
    free(texts);
    return rc;
}

reel_code_t sink_conf_retry(const sink_conf_ctx_t *c, const cJSON *o,
                            sink_retry_t *r) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "retry_schedule_ms");
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, "retry_jitter");
    reel_code_t rc;

    if (v != NULL) {
        const cJSON *e;
        size_t i = 0;

        if (!cJSON_IsArray(v))
            return sink_conf_bad(c, "retry_schedule_ms",
                                 "must be an array "
                                 "of milliseconds (the waits before attempt "
                                 "2, 3, ...)");
        if (cJSON_GetArraySize(v) > SINK_RETRY_STEPS_MAX)
            return sink_conf_bad(c, "retry_schedule_ms",
                                 "%d steps exceed "
                                 "the limit of %d",
                                 cJSON_GetArraySize(v), SINK_RETRY_STEPS_MAX);
        cJSON_ArrayForEach(e, v) {
            double d = cJSON_IsNumber(e) ? e->valuedouble : -1;

            if (!(d >= 0 && d <= (double)MAX_STEP_MS) || d != floor(d))
                return sink_conf_bad(c, "retry_schedule_ms",
                                     "step %zu is "
                                     "not an integer from 0 to %lld",
                                     i, (long long)MAX_STEP_MS);
            r->steps_ms[i++] = (int64_t)d;
        }
        r->n_steps = i;
    }
    if ((rc = sink_conf_int(c, o, "max_age_ms", 0, 30LL * 24 * 3600 * 1000,
                            &r->max_age_ms)) != REEL_OK ||
        (rc = sink_conf_int(c, o, "retry_after_max_ms", 0, 24LL * 3600 * 1000,
                            &r->retry_after_max_ms)) != REEL_OK)
        return rc;
    if (j != NULL) {
        if (!cJSON_IsNumber(j) || j->valuedouble < 0 || j->valuedouble > 0.5)
            return sink_conf_bad(c, "retry_jitter",
                                 "must be a number from 0 "
                                 "to 0.5");
        r->jitter = j->valuedouble;
    }
    return REEL_OK;
}

reel_code_t sink_conf_read_file(const char *path, char **text, size_t *len,
                                reel_status_t *st) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0, got;
    reel_code_t rc = REEL_OK;

    *text = NULL;
    *len = 0;
    if (f == NULL)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "--config: cannot open %s: %s", path,
                               strerror(errno));
    for (;;) {
        if (n == cap) {
            char *t;

            if (cap >= SINK_CONF_FILE_MAX) {
                rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                     "--config: %s is over 16 MiB", path);
                goto out;
            }
            cap = cap ? cap * 2 : 65536;
            if ((t = realloc(buf, cap)) == NULL) {
                rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                     "out of memory");
                goto out;
            }
            buf = t;
        }
        if ((got = fread(buf + n, 1, cap - n, f)) == 0)
            break;
        n += got;
    }
    if (ferror(f))
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "--config: reading %s: %s", path,
                             strerror(errno));
out:
    fclose(f);
    if (rc != REEL_OK) {
        free(buf);
        return rc;
    }
    *text = buf;
    *len = n;
    return REEL_OK;
}

/* ---- The text, and URLs ---------------------------------------------------- */

static int by_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ` "billing"`: a list entry's own name (a sink's "name", an app's "app"),
 * as every other message names it; "" if it has none. */
static const char *entry_name(const cJSON *e) {
    static _Thread_local char buf[80];
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");

    if (!cJSON_IsString(n))
        n = cJSON_GetObjectItemCaseSensitive(e, "app");
    if (!cJSON_IsString(n) || n->valuestring == NULL)
        return "";
    snprintf(buf, sizeof(buf), " \"%.64s\"", n->valuestring);
    return buf;
}

/* The first key an object in v repeats, with where (path) it is. */
static reel_code_t unique_keys(const cJSON *v, char *path, size_t cap,
                               reel_status_t *st) {
    const cJSON *e;
    const char **names = NULL;
    size_t n = 0, used = strlen(path), i = 0;
    reel_code_t rc = REEL_OK;

    if (!cJSON_IsObject(v) && !cJSON_IsArray(v))
        return REEL_OK;
    if (cJSON_IsObject(v)) {
        cJSON_ArrayForEach(e, v) n++;
        if (n > 1 && (names = malloc(n * sizeof(*names))) == NULL)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        if (n > 1) {
            cJSON_ArrayForEach(e, v) names[i++] = e->string ? e->string : "";
            qsort(names, n, sizeof(*names), by_name);
            for (i = 1; i < n && rc == REEL_OK; i++)
                if (strcmp(names[i - 1], names[i]) == 0)
                    rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                         "config: %s%s\"%.80s\" appears twice "
                                         "(the first would be used, the "
                                         "other ignored)",
                                         path, *path ? ": " : "", names[i]);
            free(names);
        }
    }
    i = 0;
    cJSON_ArrayForEach(e, v) {
        if (rc != REEL_OK)
            break;
        if (cJSON_IsObject(v))
            snprintf(path + used, cap - used, "%s%.80s", used ? "." : "",
                     e->string ? e->string : "");
        else
            snprintf(path + used, cap - used, "[%zu]%s", i,
                     entry_name(e));
        rc = unique_keys(e, path, cap, st);
        path[used] = '\0';
        i++;
    }
    return rc;
}

/*
 * The offset of the first thing that would put a NUL into a JSON string of
 * text, or -1, with *what naming it: a raw NUL byte, the escape \u0000, or
 * a \u escape without four hex digits (cJSON reads one as a NUL). cJSON
 * would end the string there: "http://h/a\u0000 b" reads as "http://h/a".
 */
static long first_nul(const char *text, size_t len, const char **what) {
    for (size_t i = 0; i < len; i++) {
        size_t hex = 0;

        if (text[i] == '\0') {
            *what = "a NUL character";
            return (long)i;
        }
        if (text[i] != '\\' || i + 1 >= len)
            continue;
        if (text[i + 1] != 'u') {
            if (text[i + 1] != '\0')
                i++; /* the escaped character, a backslash included */
            continue;
        }
        while (hex < 4 && i + 2 + hex < len &&
               isxdigit((unsigned char)text[i + 2 + hex]))
            hex++;
        if (hex < 4) {
            *what = "a \\u escape without four hex digits";
            return (long)i;
        }
        if (memcmp(text + i + 2, "0000", 4) == 0) {
            *what = "a NUL character";
            return (long)i;
        }
        i += 5;
    }
    return -1;
}

cJSON *sink_conf_parse(const char *text, size_t len, reel_status_t *st) {
    const char *end = NULL;
    cJSON *root;
    char path[512] = "";
    const char *what = NULL;
    long nul = first_nul(text, len, &what);

    if (nul >= 0) {
        reel_status_set(st, REEL_INVALID_ARGUMENT,
                        "config: %s at byte %ld (a string would end there)",
                        what, nul);
        return NULL;
    }
    root = cJSON_ParseWithLengthOpts(text, len, &end, 0);

    if (root == NULL) {
        reel_status_set(st, REEL_INVALID_ARGUMENT,
                        "config: not valid JSON (near byte %zu)",
                        cJSON_GetErrorPtr() != NULL &&
                                cJSON_GetErrorPtr() >= text
                            ? (size_t)(cJSON_GetErrorPtr() - text)
                            : (size_t)0);
        return NULL;
    }
    while (end != NULL && end < text + len &&
           (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
        end++;
    if (end != NULL && end < text + len) {
        reel_status_set(st, REEL_INVALID_ARGUMENT,
                        "config: more after the JSON value (byte %zu): one "
                        "object is the whole file",
                        (size_t)(end - text));
        cJSON_Delete(root);
        return NULL;
    }
    if (unique_keys(root, path, sizeof(path), st) != REEL_OK) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/*
 * The URL's authority as written (libcurl reads "http:///x" as host x and
 * "http://h:/x" as h on the default port): 0 if it names a host, and a
 * port after a ':'; else -1, *why saying what is missing.
 */
static int authority_named(const char *url, const char **why) {
    const char *a = strstr(url, "://"), *end, *at, *host, *colon;

    if (a == NULL)
        return 0; /* libcurl's checks stand */
    a += 3;
    end = a + strcspn(a, "/?#");
    for (at = a; at < end; at++) /* the host follows the last '@' */
        if (*at == '@')
            a = at + 1;
    host = a;
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));

        colon = close != NULL && close + 1 < end && close[1] == ':'
                    ? close + 1
                    : NULL;
    } else {
        colon = memchr(host, ':', (size_t)(end - host));
        if ((colon != NULL ? colon : end) == host) {
            *why = "no host";
            return -1;
        }
    }
    if (colon != NULL && colon + 1 == end) {
        *why = "an empty port after ':'";
        return -1;
    }
    return 0;
}

/* "http:// or https://" from schemes, into want[cap]. */
static const char *schemes_text(const char *const *schemes, char *want,
                                size_t cap) {
    size_t used = 0;

    want[0] = '\0';
    for (size_t i = 0; schemes[i] != NULL && used < cap; i++)
        used += (size_t)snprintf(want + used, cap - used, "%s%s://",
                                 i ? " or " : "", schemes[i]);
    return want;
}

reel_code_t sink_conf_url(const sink_conf_ctx_t *c, const char *field,
                          const char *url, const char *const *schemes) {
    CURLU *h = curl_url();
    CURLUcode uc;
    char *scheme = NULL, *host = NULL, *port = NULL;
    reel_code_t rc = REEL_OK;

    if (h == NULL)
        return reel_status_set(c->st, REEL_RESOURCE_EXHAUSTED,
                               "out of memory");
    for (const char *p = url; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            rc = sink_conf_bad(c, field, "a space or control character at "
                               "byte %zu (the URL is not repeated: it may "
                               "hold a credential)",
                               (size_t)(p - url));
            goto out;
        }
    if (strstr(url, "://") == NULL) { /* "host:8080/run": curl's words
                                         * would be about slashes */
        char want[128];

        rc = sink_conf_bad(c, field, "no scheme: it must start with %s",
                           schemes_text(schemes, want, sizeof(want)));
        goto out;
    }
    if ((uc = curl_url_set(h, CURLUPART_URL, url,
                           CURLU_NON_SUPPORT_SCHEME)) != CURLUE_OK) {
        rc = sink_conf_bad(c, field, "not a URL: %s (the URL is not "
                           "repeated: it may hold a credential)",
                           curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        !sink_conf_listed(schemes, scheme)) {
        char want[128];

        rc = sink_conf_bad(c, field, "the scheme is %.20s://; it must be %s",
                           scheme ? scheme : "(none)",
                           schemes_text(schemes, want, sizeof(want)));
        goto out;
    }
    if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        host == NULL || *host == '\0') {
        rc = sink_conf_bad(c, field, "no host after %s://", scheme);
        goto out;
    }
    {
        const char *why = NULL;

        if (authority_named(url, &why) != 0) {
            rc = sink_conf_bad(c, field, "%s after %s:// (the URL is not "
                               "repeated: it may hold a credential)",
                               why, scheme);
            goto out;
        }
    }
    if (curl_url_get(h, CURLUPART_PORT, &port, 0) == CURLUE_OK &&
        port != NULL && strtol(port, NULL, 10) == 0)
        rc = sink_conf_bad(c, field, "port 0: a port is 1 to 65535");
out:
    curl_free(port);
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(h);
    return rc;
}

void sink_conf_url_endpoint(const char *url, const char *dflt_port,
                            char *out, size_t cap) {
    CURLU *h = curl_url();
    char *host = NULL, *port = NULL;

    if (h == NULL ||
        curl_url_set(h, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) !=
            CURLUE_OK ||
        curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(out, cap, "%s", url);
    } else {
        (void)curl_url_get(h, CURLUPART_PORT, &port, 0);
        for (char *p = host; *p != '\0'; p++)
            *p = (char)tolower((unsigned char)*p);
        snprintf(out, cap, "%s:%s",
                 strcmp(host, "localhost") == 0 ||
                         strcmp(host, "[::1]") == 0 ||
                         strncmp(host, "127.", 4) == 0
                     ? "loopback"
                     : host,
                 port != NULL ? port : dflt_port);
    }
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(h);
}

char *sink_conf_url_public(const char *url) {
    CURLU *h = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *out = NULL;
    size_t n;

    if (h != NULL &&
        curl_url_set(h, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) ==
            CURLUE_OK &&
        curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        (void)curl_url_get(h, CURLUPART_PORT, &port, 0);
        n = strlen(scheme) + strlen(host) + (port ? strlen(port) : 0) + 8;
        if ((out = malloc(n)) != NULL)
            snprintf(out, n, "%s://%s%s%s", scheme, host, port ? ":" : "",
                     port ? port : "");
    } else {
        out = strdup("(a URL that does not parse)");
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(h);
    return out;
}
