/*
 * api/reply.h: how every service answers a call.
 */
#ifndef REEL_API_REPLY_H
#define REEL_API_REPLY_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "api/rpc.h"

/* Packs a protobuf-c message of `type` (e.g. reel__v1__run) into a
 * malloc'd buffer; *out is NULL when out of memory. */
#define API_PACK(type, msg, out, outlen)                                    \
    do {                                                                   \
        *(outlen) = type##__get_packed_size(msg);                          \
        *(out) = malloc(*(outlen) ? *(outlen) : 1);                        \
        if (*(out) != NULL)                                                \
            type##__pack(msg, *(out));                                     \
    } while (0)

/* Answers OK with buf (freed here), or RESOURCE_EXHAUSTED if buf is NULL. */
void api_finish_packed(rpc_call_t *call, uint8_t *buf, size_t len);

/* Ends a call its cancel hook was told to end: why is UNAVAILABLE (the
 * server is stopping) or CANCELLED (the client left). */
void api_finish_cancelled(rpc_call_t *call, reel_code_t why);

/*
 * The batched streams (SubscribeEventBatches, WatchValueBatches,
 * WatchValuesBatches) send messages whose one field is `repeated X
 * events = 1`. api_send_element() queues one X, made of pre then body
 * (either may be empty), as one element of that field: it merges into the
 * message still waiting in the call's queue, up to API_BATCH_MAX_BYTES. A
 * stream that keeps up gets each element at once; a backlog leaves in a
 * few large messages. Returns rpc_call_send_merged()'s code.
 */
#define API_BATCH_MAX_BYTES (256 * 1024)
reel_code_t api_send_element(rpc_call_t *call, const uint8_t *pre,
                             size_t plen, const void *body, size_t blen);

/* Answers INVALID_ARGUMENT: "request: not a valid <what> message". */
void api_bad_request(rpc_call_t *call, const char *what);

#endif
