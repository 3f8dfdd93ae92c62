/*
 * sink/subject.c: NATS subject escaping; see subject.h.
 */
#include "sink/subject.h"

#include <stdlib.h>
#include <string.h>

static int must_escape(unsigned char c) {
    return c <= 0x20 || c == 0x7f || c == '%';
}

char *sink_nats_subject(const char *prefix, const char *subject, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    size_t plen = strlen(prefix), o;
    /* Each byte may become 3; an empty token 3; the separators. */
    char *out = malloc(plen + 1 + 3 * len + 3 * (len + 1) + 1);
    size_t tok = 0;

    if (out == NULL)
        return NULL;
    memcpy(out, prefix, plen);
    o = plen;
    out[o++] = '.';
    for (size_t i = 0; i <= len; i++) {
        if (i < len && subject[i] != '.')
            continue;
        /* The token subject[tok..i). */
        if (i == tok) {
            memcpy(out + o, "%00", 3);
            o += 3;
        } else if (i - tok == 1 && (subject[tok] == '*' || subject[tok] == '>')) {
            memcpy(out + o, subject[tok] == '*' ? "%2A" : "%3E", 3);
            o += 3;
        } else {
            for (size_t j = tok; j < i; j++) {
                unsigned char c = (unsigned char)subject[j];

                if (must_escape(c)) {
                    out[o++] = '%';
                    out[o++] = hex[c >> 4];
                    out[o++] = hex[c & 15];
                } else {
                    out[o++] = (char)c;
                }
            }
        }
        if (i < len)
            out[o++] = '.';
        tok = i + 1;
    }
    out[o] = '\0';
    return out;
}
