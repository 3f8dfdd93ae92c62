/*
 * base/status.h: reel's one error type.
 *
 * Every fallible function in reel returns a reel_code_t and, when the caller
 * passes a reel_status_t, fills it with the same code plus a message written
 * for the user ("value: 1048577 bytes exceeds the limit of 1048576"). Codes
 * come from one X-macro table that also yields each code's name, its short
 * text and the gRPC status it maps to; only api/ turns a status into gRPC.
 *
 * Ownership: a reel_status_t owns its message. reel_status_fini() frees it
 * and resets the status to OK; it accepts a status that holds no message.
 * Thread safety: a status belongs to one thread at a time.
 */
#ifndef REEL_BASE_STATUS_H
#define REEL_BASE_STATUS_H

#include <stdarg.h>
#include <stdint.h>

/* X(name, grpc_code, text) */
#define REEL_CODE_MAP(X)                                        \
    X(OK, 0, "ok")                                              \
    X(CANCELLED, 1, "cancelled")                                \
    X(INVALID_ARGUMENT, 3, "invalid argument")                  \
    X(DEADLINE_EXCEEDED, 4, "deadline exceeded")                \
    X(NOT_FOUND, 5, "not found")                                \
    X(ALREADY_EXISTS, 6, "already exists")                      \
    X(RESOURCE_EXHAUSTED, 8, "resource exhausted")              \
    X(FAILED_PRECONDITION, 9, "failed precondition")            \
    X(ABORTED, 10, "aborted")                                   \
    X(OUT_OF_RANGE, 11, "out of range")                         \
    X(UNIMPLEMENTED, 12, "unimplemented")                       \
    X(INTERNAL, 13, "internal error")                           \
    X(UNAVAILABLE, 14, "unavailable")                           \
    X(DATA_LOSS, 15, "data loss")                              \
    X(PERMISSION_DENIED, 7, "permission denied")                \
    X(UNAUTHENTICATED, 16, "unauthenticated")

typedef enum reel_code {
#define REEL_CODE_ENUM_(name, grpc, text) REEL_##name,
    REEL_CODE_MAP(REEL_CODE_ENUM_)
#undef REEL_CODE_ENUM_
    REEL_CODE__COUNT
} reel_code_t;

typedef struct reel_status {
    reel_code_t code;
    char *msg; /* owned; NULL means "use the code's text" */
} reel_status_t;

#define REEL_STATUS_INIT {REEL_OK, NULL}

/* "INVALID_ARGUMENT"; "UNKNOWN" for a value outside the table. */
const char *reel_code_name(reel_code_t code);
/* "invalid argument" */
const char *reel_code_text(reel_code_t code);
/* The numeric gRPC status code (grpc_status_code) for code. */
int reel_code_grpc(reel_code_t code);

/*
 * Sets st (if not NULL) to code with a printf-style message, replacing what
 * it held. Returns code, so callers can write `return reel_status_set(...)`.
 * If the message cannot be allocated the code's text stands in for it.
 */
reel_code_t reel_status_set(reel_status_t *st, reel_code_t code,
                            const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
reel_code_t reel_status_setv(reel_status_t *st, reel_code_t code,
                             const char *fmt, va_list ap);

/*
 * OUT_OF_RANGE for a from_revision cursor rev at or before trimmed (every
 * revision up to trimmed is gone; of: "" or " for this key"), saying where
 * a cursor starts instead: the oldest retained revision (from_revision
 * trimmed, or 0), or, when nothing up to head is retained, the head.
 */
reel_code_t reel_status_not_retained(reel_status_t *st, uint64_t rev,
                                     const char *of, uint64_t trimmed,
                                     uint64_t head);

/* The message, or the code's text when there is none. Never NULL. */
const char *reel_status_message(const reel_status_t *st);

/* Moves src into dst (dst's old message is freed); src becomes OK. */
void reel_status_move(reel_status_t *dst, reel_status_t *src);

/* Copies src into dst (dst's old message is freed). */
void reel_status_copy(reel_status_t *dst, const reel_status_t *src);

/* Frees the message and resets to OK. Accepts NULL. */
void reel_status_fini(reel_status_t *st);

#endif
