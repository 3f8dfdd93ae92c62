#include "api/reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/wire.h"

void api_finish_packed(rpc_call_t *call, uint8_t *buf, size_t len) {
    if (buf == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL,
                        0);
        return;
    }
    rpc_call_finish(call, REEL_OK, NULL, buf, len);
    free(buf);
}

void api_bad_request(rpc_call_t *call, const char *what) {
    char msg[128];

    snprintf(msg, sizeof(msg), "request: not a valid %s message", what);
    rpc_call_finish(call, REEL_INVALID_ARGUMENT, msg, NULL, 0);
}

void api_finish_cancelled(rpc_call_t *call, reel_code_t why) {
    rpc_call_finish(call, why,
                    why == REEL_UNAVAILABLE ? "the server is shutting down"
                                            : "the client went away",
                    NULL, 0);
}

reel_code_t api_send_element(rpc_call_t *call, const uint8_t *pre,
                             size_t plen, const void *body, size_t blen) {
    uint8_t small[1 + 10 + 32], *head = small;
    reel_code_t rc;
    size_t n;

    if (plen > sizeof(small) - 11 && (head = malloc(11 + plen)) == NULL)
        return REEL_RESOURCE_EXHAUSTED;
    head[0] = 0x0a; /* field 1, length-delimited */
    n = 1 + api_wire_put_varint(head + 1, plen + blen);
    if (plen > 0)
        memcpy(head + n, pre, plen);
    rc = rpc_call_send_merged(call, head, n + plen, body, blen,
                              API_BATCH_MAX_BYTES);
    if (head != small)
        free(head);
    return rc;
}
