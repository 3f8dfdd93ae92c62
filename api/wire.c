/*
 * api/wire.c: a descriptor-driven walk over the protobuf wire format.
 * Malformed framing is left for the decoder to report; this walk only
 * stops there.
 */
#include "api/wire.h"

#include <stdio.h>
#include <string.h>

#include "base/text.h"

#define MAX_DEPTH 32

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;

    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

size_t api_wire_put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

size_t api_wire_varint_size(uint64_t v) {
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* path: the fields leading to this message ("header.metadata."), so a
 * message names the field as the request spells it. */
static reel_code_t walk(const ProtobufCMessageDescriptor *d, const uint8_t *p,
                        const uint8_t *end, int depth, char *path,
                        size_t cap, reel_status_t *st) {
    if (depth > MAX_DEPTH)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "request: messages nested deeper than %d",
                               MAX_DEPTH);
    while (p < end) {
        uint64_t tag, n;
        const ProtobufCFieldDescriptor *f;

        if (varint(&p, end, &tag) != 0)
            return REEL_OK;
        switch (tag & 7) {
        case 0: /* varint */
            if (varint(&p, end, &n) != 0)
                return REEL_OK;
            continue;
        case 1: /* 64-bit */
            if (end - p < 8)
                return REEL_OK;
            p += 8;
            continue;
        case 5: /* 32-bit */
            if (end - p < 4)
                return REEL_OK;
            p += 4;
            continue;
        case 2: /* length-delimited */
            break;
        default:
            return REEL_OK;
        }
        if (varint(&p, end, &n) != 0 || n > (uint64_t)(end - p))
            return REEL_OK;
        f = protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
        if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING &&
            (memchr(p, '\0', n) != NULL ||
             !reel_utf8_valid((const char *)p, n)))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "%s%s: must be valid UTF-8 without NUL "
                                   "bytes",
                                   path, f->name);
        if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
            size_t used = strlen(path);
            reel_code_t rc;

            snprintf(path + used, cap - used, "%s.", f->name);
            rc = walk(f->descriptor, p, p + n, depth + 1, path, cap, st);
            path[used] = '\0';
            if (rc != REEL_OK)
                return rc;
        }
        p += n;
    }
    return REEL_OK;
}

reel_code_t api_wire_check(const ProtobufCMessageDescriptor *d,
                           const uint8_t *buf, size_t len, reel_status_t *st) {
    char path[256] = "";

    return walk(d, buf, buf + len, 0, path, sizeof(path), st);
}
