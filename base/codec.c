#include "base/codec.h"

#include <stdlib.h>
#include <string.h>

static int grow(reel_wbuf_t *w, size_t n) {
    size_t cap;
    unsigned char *p;

    if (w->oom)
        return -1;
    if (w->cap - w->len >= n)
        return 0;
    cap = w->cap ? w->cap : 128;
    while (cap - w->len < n)
        cap *= 2;
    p = realloc(w->p, cap);
    if (p == NULL) {
        w->oom = 1;
        return -1;
    }
    w->p = p;
    w->cap = cap;
    return 0;
}

void reel_wbuf_raw(reel_wbuf_t *w, const void *p, size_t n) {
    if (grow(w, n) != 0)
        return;
    if (n > 0)
        memcpy(w->p + w->len, p, n);
    w->len += n;
}

void reel_wbuf_u8(reel_wbuf_t *w, uint8_t v) { reel_wbuf_raw(w, &v, 1); }

void reel_wbuf_u32(reel_wbuf_t *w, uint32_t v) {
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    reel_wbuf_raw(w, b, 4);
}

void reel_wbuf_u64(reel_wbuf_t *w, uint64_t v) {
    unsigned char b[8];

    reel_be64_put(b, v);
    reel_wbuf_raw(w, b, 8);
}

void reel_wbuf_str(reel_wbuf_t *w, const char *s) {
    size_t n = s ? strlen(s) : 0;

    reel_wbuf_u32(w, (uint32_t)n);
    reel_wbuf_raw(w, s ? s : "", n);
    reel_wbuf_u8(w, 0);
}

int reel_wbuf_done(reel_wbuf_t *w) {
    if (!w->oom)
        return 0;
    reel_wbuf_fini(w);
    return -1;
}

void reel_wbuf_fini(reel_wbuf_t *w) {
    free(w->p);
    w->p = NULL;
    w->len = w->cap = 0;
}

void reel_rbuf_init(reel_rbuf_t *r, const void *p, size_t n) {
    r->p = p;
    r->end = r->p + n;
    r->bad = 0;
}

static const unsigned char *take(reel_rbuf_t *r, size_t n) {
    const unsigned char *p = r->p;

    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        return NULL;
    }
    r->p += n;
    return p;
}

uint8_t reel_rbuf_u8(reel_rbuf_t *r) {
    const unsigned char *p = take(r, 1);
    return p ? p[0] : 0;
}

uint32_t reel_rbuf_u32(reel_rbuf_t *r) {
    const unsigned char *p = take(r, 4);

    if (p == NULL)
        return 0;
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

uint64_t reel_rbuf_u64(reel_rbuf_t *r) {
    const unsigned char *p = take(r, 8);
    return p ? reel_be64_get(p) : 0;
}

const char *reel_rbuf_str(reel_rbuf_t *r) {
    uint32_t n = reel_rbuf_u32(r);
    const unsigned char *p;

    if (r->bad || n == UINT32_MAX)
        return (r->bad = 1), "";
    p = take(r, (size_t)n + 1);
    if (p == NULL || p[n] != '\0' || memchr(p, '\0', n) != NULL) {
        r->bad = 1;
        return "";
    }
    return (const char *)p;
}

int reel_rbuf_ok(const reel_rbuf_t *r) { return r->bad ? -1 : 0; }

void reel_be64_put(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

uint64_t reel_be64_get(const unsigned char *p) {
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}
