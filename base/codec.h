/*
 * base/codec.h: the byte layout of reel's stored records.
 *
 * Integers are big-endian (so they sort as keys). A string is a u32 length,
 * its bytes, and a NUL, so a decoder can hand out pointers into the record
 * itself. A writer grows its buffer; after an allocation failure it stops
 * writing and reports it once, at the end. A reader never reads past its
 * end; after a malformed field it returns zeros and reports it at the end.
 * Neither is thread-safe; both are cheap to make on the stack.
 */
#ifndef REEL_BASE_CODEC_H
#define REEL_BASE_CODEC_H

#include <stddef.h>
#include <stdint.h>

typedef struct reel_wbuf {
    unsigned char *p;
    size_t len, cap;
    int oom;
} reel_wbuf_t;

void reel_wbuf_u8(reel_wbuf_t *w, uint8_t v);
void reel_wbuf_u32(reel_wbuf_t *w, uint32_t v);
void reel_wbuf_u64(reel_wbuf_t *w, uint64_t v);
void reel_wbuf_raw(reel_wbuf_t *w, const void *p, size_t n);
void reel_wbuf_str(reel_wbuf_t *w, const char *s); /* s may be NULL: "" */
/* 0, or -1 if an allocation failed (the buffer is then freed). */
int reel_wbuf_done(reel_wbuf_t *w);
void reel_wbuf_fini(reel_wbuf_t *w);

typedef struct reel_rbuf {
    const unsigned char *p, *end;
    int bad;
} reel_rbuf_t;

void reel_rbuf_init(reel_rbuf_t *r, const void *p, size_t n);
uint8_t reel_rbuf_u8(reel_rbuf_t *r);
uint32_t reel_rbuf_u32(reel_rbuf_t *r);
uint64_t reel_rbuf_u64(reel_rbuf_t *r);
/* A pointer into the record, NUL-terminated; "" when malformed. */
const char *reel_rbuf_str(reel_rbuf_t *r);
/* 0 if every read was in bounds and well formed. */
int reel_rbuf_ok(const reel_rbuf_t *r);

void reel_be64_put(unsigned char *p, uint64_t v);
uint64_t reel_be64_get(const unsigned char *p);

#endif
