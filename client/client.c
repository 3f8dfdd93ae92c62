/*
 * client/client.c: blocking unary and server-streaming calls on the C core.
 */
#include "client/client.h"

#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "api/grpc_init.h"

struct reel_client {
    grpc_channel *channel;
    grpc_completion_queue *cq;
};

static const char *const code_names[] = {
    "OK",                 "CANCELLED",         "UNKNOWN",
    "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS",     "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED",          "OUT_OF_RANGE",
    "UNIMPLEMENTED",      "INTERNAL",          "UNAVAILABLE",
    "DATA_LOSS",          "UNAUTHENTICATED",
};

const char *reel_grpc_code_name(int code) {
    if (code < 0 || code >= (int)(sizeof(code_names) / sizeof(*code_names)))
        return "UNKNOWN";
    return code_names[code];
}

reel_client_t *reel_client_create(const char *addr) {
    reel_client_t *c = calloc(1, sizeof(*c));
    grpc_channel_credentials *creds;

    if (c == NULL)
        return NULL;
    reel_grpc_init();
    creds = grpc_insecure_credentials_create();
    c->channel = grpc_channel_create(addr, creds, NULL);
    grpc_channel_credentials_release(creds);
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    return c;
}

void reel_client_destroy(reel_client_t *c) {
    if (c == NULL)
        return;
    grpc_channel_destroy(c->channel);
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_pluck(c->cq, NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME),
                                       NULL)
               .type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c->cq);
    free(c);
    grpc_shutdown();
}

void reel_reply_fini(reel_reply_t *r) {
    if (r == NULL)
        return;
    free(r->details);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static gpr_timespec deadline_of(int64_t timeout_ms) {
    if (timeout_ms <= 0)
        return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

static int bb_read(grpc_byte_buffer *bb, uint8_t **out, size_t *len) {
    grpc_byte_buffer_reader r;
    grpc_slice s;

    *out = NULL;
    *len = 0;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return -1;
    s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(s);
    *out = malloc(*len ? *len : 1);
    if (*out != NULL)
        memcpy(*out, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    return *out ? 0 : -1;
}

static char *slice_dup(grpc_slice s) {
    size_t n = GRPC_SLICE_LENGTH(s);
    char *p = malloc(n + 1);

    if (p != NULL) {
        memcpy(p, GRPC_SLICE_START_PTR(s), n);
        p[n] = '\0';
    }
    return p;
}

/*
 * The tags of a call's batches. A stream's receive has its own: while it
 * is pending, on_idle may make a unary call on the same queue, whose
 * batches must not be mistaken for it.
 */
#define TAG_START ((void *)1)
#define TAG_RECV ((void *)2)
#define TAG_STATUS ((void *)3)
#define TAG_STREAM_RECV ((void *)4)

static void pluck(reel_client_t *c, void *tag) {
    grpc_completion_queue_pluck(c->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME),
                                NULL);
}

/* Starts a call and sends the request; the caller receives the rest. */
static grpc_call *start_call(reel_client_t *c, const char *method,
                             const void *req, size_t len, int64_t timeout_ms,
                             grpc_metadata_array *md_in) {
    grpc_slice path = grpc_slice_from_copied_string(method);
    grpc_slice body = grpc_slice_from_copied_buffer(req, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&body, 1);
    grpc_call *call;
    grpc_op ops[4];

    call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                    c->cq, path, NULL, deadline_of(timeout_ms),
                                    NULL);
    grpc_slice_unref(path);
    grpc_slice_unref(body);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = md_in;
    grpc_call_start_batch(call, ops, 4, TAG_START, NULL);
    pluck(c, TAG_START);
    grpc_byte_buffer_destroy(bb);
    return call;
}

static int finish_call(reel_client_t *c, grpc_call *call, reel_reply_t *r) {
    grpc_metadata_array trailing;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op op;

    grpc_metadata_array_init(&trailing);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &trailing;
    op.data.recv_status_on_client.status = &status;
    op.data.recv_status_on_client.status_details = &details;
    grpc_call_start_batch(call, &op, 1, TAG_STATUS, NULL);
    pluck(c, TAG_STATUS);
    r->code = (int)status;
    r->details = slice_dup(details);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
    return r->code;
}

int reel_client_unary(reel_client_t *c, const char *method, const void *req,
                      size_t len, int64_t timeout_ms, reel_reply_t *r) {
    grpc_metadata_array md_in;
    grpc_byte_buffer *resp = NULL;
    grpc_call *call;
    grpc_op op;

    memset(r, 0, sizeof(*r));
    grpc_metadata_array_init(&md_in);
    call = start_call(c, method, req, len, timeout_ms, &md_in);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &resp;
    grpc_call_start_batch(call, &op, 1, TAG_RECV, NULL);
    pluck(c, TAG_RECV);
    if (resp != NULL) {
        bb_read(resp, &r->body, &r->len);
        grpc_byte_buffer_destroy(resp);
    }
    grpc_metadata_array_destroy(&md_in);
    return finish_call(c, call, r);
}

/*
 * Waits for the stream's pending receive; every idle_ms without it, runs
 * on_idle. Returns 0 once it completed, or on_idle's non-zero answer (the
 * receive is then still pending).
 */
static int wait_recv(reel_client_t *c, reel_idle_fn on_idle, int64_t idle_ms,
                     void *arg) {
    for (;;) {
        gpr_timespec until = on_idle != NULL
                                 ? deadline_of(idle_ms)
                                 : gpr_inf_future(GPR_CLOCK_REALTIME);
        grpc_event ev = grpc_completion_queue_pluck(c->cq, TAG_STREAM_RECV,
                                                    until, NULL);
        int stop;

        if (ev.type != GRPC_QUEUE_TIMEOUT)
            return 0;
        if ((stop = on_idle(arg)) != 0)
            return stop;
    }
}

int reel_client_stream_idle(reel_client_t *c, const char *method,
                            const void *req, size_t len, int64_t timeout_ms,
                            reel_stream_fn on_msg, reel_idle_fn on_idle,
                            int64_t idle_ms, void *arg, reel_reply_t *r) {
    grpc_metadata_array md_in;
    grpc_call *call;

    memset(r, 0, sizeof(*r));
    if (idle_ms <= 0)
        on_idle = NULL;
    grpc_metadata_array_init(&md_in);
    call = start_call(c, method, req, len, timeout_ms, &md_in);
    for (;;) {
        grpc_byte_buffer *resp = NULL;
        uint8_t *body;
        size_t n;
        grpc_op op;
        int stop;

        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &resp;
        grpc_call_start_batch(call, &op, 1, TAG_STREAM_RECV, NULL);
        if (wait_recv(c, on_idle, idle_ms, arg) != 0) {
            /* Cancelled, the receive completes (a message or none). */
            grpc_call_cancel(call, NULL);
            pluck(c, TAG_STREAM_RECV);
            if (resp != NULL)
                grpc_byte_buffer_destroy(resp);
            break;
        }
        if (resp == NULL)
            break; /* the stream ended: the status follows */
        if (bb_read(resp, &body, &n) != 0) {
            grpc_byte_buffer_destroy(resp);
            grpc_call_cancel(call, NULL);
            break;
        }
        grpc_byte_buffer_destroy(resp);
        stop = on_msg(arg, body, n);
        free(body);
        if (stop) {
            grpc_call_cancel(call, NULL);
            break;
        }
    }
    grpc_metadata_array_destroy(&md_in);
    return finish_call(c, call, r);
}

int reel_client_stream(reel_client_t *c, const char *method, const void *req,
                       size_t len, int64_t timeout_ms, reel_stream_fn on_msg,
                       void *arg, reel_reply_t *r) {
    return reel_client_stream_idle(c, method, req, len, timeout_ms, on_msg,
                                   NULL, 0, arg, r);
}
