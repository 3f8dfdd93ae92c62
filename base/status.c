/*
 * base/status.c: the code table and the owned-message status.
 */
#include "base/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    const char *text;
    int grpc;
} code_table[REEL_CODE__COUNT] = {
#define REEL_CODE_ROW_(name, grpc, text) {#name, text, grpc},
    REEL_CODE_MAP(REEL_CODE_ROW_)
#undef REEL_CODE_ROW_
};

static int code_valid(reel_code_t code) {
    return (int)code >= 0 && code < REEL_CODE__COUNT;
}

const char *reel_code_name(reel_code_t code) {
    return code_valid(code) ? code_table[code].name : "UNKNOWN";
}

const char *reel_code_text(reel_code_t code) {
    return code_valid(code) ? code_table[code].text : "unknown error";
}

int reel_code_grpc(reel_code_t code) {
    return code_valid(code) ? code_table[code].grpc : 2 /* UNKNOWN */;
}

reel_code_t reel_status_setv(reel_status_t *st, reel_code_t code,
                             const char *fmt, va_list ap) {
    char *msg = NULL;

    if (st == NULL)
        return code;
    if (fmt != NULL && vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    free(st->msg);
    st->code = code;
    st->msg = msg;
    return code;
}

reel_code_t reel_status_set(reel_status_t *st, reel_code_t code,
                            const char *fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    reel_status_setv(st, code, fmt, ap);
    va_end(ap);
    return code;
}

reel_code_t reel_status_not_retained(reel_status_t *st, uint64_t rev,
                                     const char *of, uint64_t trimmed,
                                     uint64_t head) {
    if (trimmed >= head)
        return reel_status_set(st, REEL_OUT_OF_RANGE,
                               "from_revision: revision %llu is no longer "
                               "retained%s, nor is any up to the head "
                               "revision %llu (from_revision %llu, or 0, "
                               "starts at the next change)",
                               (unsigned long long)rev, of,
                               (unsigned long long)head,
                               (unsigned long long)head);
    return reel_status_set(st, REEL_OUT_OF_RANGE,
                           "from_revision: revision %llu is no longer "
                           "retained%s; the oldest retained revision is %llu "
                           "(from_revision %llu, or 0, starts there)",
                           (unsigned long long)rev, of,
                           (unsigned long long)trimmed + 1,
                           (unsigned long long)trimmed);
}

const char *reel_status_message(const reel_status_t *st) {
    if (st == NULL)
        return reel_code_text(REEL_OK);
    return st->msg != NULL ? st->msg : reel_code_text(st->code);
}

void reel_status_move(reel_status_t *dst, reel_status_t *src) {
    if (dst == src)
        return;
    free(dst->msg);
    *dst = *src;
    src->code = REEL_OK;
    src->msg = NULL;
}

void reel_status_copy(reel_status_t *dst, const reel_status_t *src) {
    if (dst == src)
        return;
    free(dst->msg);
    dst->code = src->code;
    dst->msg = src->msg != NULL ? strdup(src->msg) : NULL;
}

void reel_status_fini(reel_status_t *st) {
    if (st == NULL)
        return;
    free(st->msg);
    st->msg = NULL;
    st->code = REEL_OK;
}
