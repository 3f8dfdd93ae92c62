/*
 * fuzz/conf_secrets.c: no configuration error repeats a secret (see
 * conf_secrets.h).
 */
#include "fuzz/conf_secrets.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sink/sign.h"

/* Whether s is a substring of a key or string of v other than skip. */
static int held_elsewhere(const cJSON *v, const char *s, const char *skip) {
    const cJSON *e;

    if (v->string != NULL && v->string != skip && strstr(v->string, s))
        return 1;
    if (cJSON_IsString(v) && v->valuestring != skip &&
        strstr(v->valuestring, s) != NULL)
        return 1;
    cJSON_ArrayForEach(e, v) {
        if (held_elsewhere(e, s, skip))
            return 1;
    }
    return 0;
}

static void check_secret(const cJSON *root, const char *s, const char *msg) {
    sink_secret_t k;
    const char *why;

    if (strncmp(s, "whsec_", 6) != 0 || strlen(s) < 10 ||
        sink_secret_decode(s, &k, &why) != 0 ||
        held_elsewhere(root, s, s))
        return;
    if (strstr(msg, s) != NULL)
        abort();
}

/* The user and password of url, if it has them. */
static void check_url(const cJSON *root, const char *url, const char *msg) {
    const char *start = strstr(url, "://"), *at;
    char cred[256];
    size_t n;

    if (start == NULL || (at = strchr(start += 3, '@')) == NULL)
        return;
    n = (size_t)(at - start);
    if (n < 8 || n >= sizeof(cred) ||
        strspn(start, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789:") != n ||
        memchr(start, ':', n) == NULL)
        return;
    memcpy(cred, start, n);
    cred[n] = '\0';
    /* The host and port after the '@' may be named (a stream's server). */
    if (strstr(at + 1, cred) != NULL || held_elsewhere(root, cred, url))
        return;
    if (strstr(msg, cred) != NULL)
        abort();
}

/* A header's value (an Authorization's token). */
static void check_header(const cJSON *root, const char *s, const char *msg) {
    size_t n = strlen(s);

    if (n < 10 ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                  "0123456789_.~+/= ") != n ||
        strpbrk(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") ==
            NULL ||
        strpbrk(s, "0123456789") == NULL || held_elsewhere(root, s, s))
        return;
    if (strstr(msg, s) != NULL)
        abort();
}

static void walk(const cJSON *root, const cJSON *v, const char *msg) {
    const cJSON *e;

    if (cJSON_IsObject(v) && v->string != NULL &&
        strcmp(v->string, "headers") == 0)
        cJSON_ArrayForEach(e, v) {
            if (cJSON_IsString(e))
                check_header(root, e->valuestring, msg);
        }

    if (cJSON_IsString(v) && v->string != NULL &&
        strcmp(v->string, "url") == 0)
        check_url(root, v->valuestring, msg);
    if (cJSON_IsArray(v) && v->string != NULL &&
        (strcmp(v->string, "secrets") == 0 ||
         strcmp(v->string, "servers") == 0)) {
        cJSON_ArrayForEach(e, v) {
            if (!cJSON_IsString(e))
                continue;
            if (strcmp(v->string, "secrets") == 0)
                check_secret(root, e->valuestring, msg);
            else
                check_url(root, e->valuestring, msg);
        }
    }
    cJSON_ArrayForEach(e, v) walk(root, e, msg);
}

void fuzz_conf_secrets_check(const char *text, size_t len, const char *msg) {
    cJSON *root = cJSON_ParseWithLength(text, len);

    if (root == NULL)
        return;
    walk(root, root, msg);
    cJSON_Delete(root);
}
