#include "api/reply.h"

#include <stdio.h>

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
