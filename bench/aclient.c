/*
 * bench/aclient.c: the asynchronous C-core client behind reel-bench.
 *
 * Every tag on the completion queue is an ac_tag_t whose kind says what
 * completed: a whole unary call (one batch of six ops), a stream's opening
 * batch, one of its receives, a further send, or its status. A stream is
 * reference-counted: the opener's hold, the status batch, and the receive
 * in flight. The client keeps its live streams in a list so ac_destroy()
 * can cancel them and wait for their last completion before it shuts the
 * queue: a receive restarted on a shut queue is an assertion in gRPC.
 */
#include "bench/aclient.h"

#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "api/grpc_init.h"

/* Set once by ac_security() before any client exists, then only read. */
static char *sec_ca;            /* PEM text, or NULL: plaintext */
static const char *sec_ca_file; /* its file, or NULL */
static const char *sec_token;   /* or NULL */
/* "authorization: Bearer <token>", sent in each call's initial metadata as
 * client/ does (cheaper than gRPC's call-credentials path); count 0 when
 * there is no token. */
static grpc_metadata sec_md;
static size_t sec_md_count;

#define MAX_METHODS 16

enum { TAG_UNARY, TAG_OPEN, TAG_RECV, TAG_STATUS, TAG_SEND };

typedef struct ac_tag {
    int kind;
    void *ptr;
} ac_tag_t;

struct ac {
    grpc_channel **ch;
    int n_ch;
    void *methods[MAX_METHODS][64]; /* [method][channel] */
    int n_methods;
    atomic_uint next;
    grpc_completion_queue *cq;
    pthread_t *threads;
    int n_threads;
    pthread_mutex_t mu; /* guards streams */
    pthread_cond_t cv;  /* signalled, once closing, as streams' refs drop */
    ac_stream_t *streams;
    atomic_int closing; /* ac_destroy() has begun */
};

typedef struct unary {
    ac_tag_t tag;
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array md, trailing;
    grpc_status_code status;
    grpc_slice details;
    ac_unary_fn done;
    void *arg;
} unary_t;

typedef struct pending {
    struct pending *next;
    grpc_byte_buffer *bb;
} pending_t;

struct ac_stream {
    ac_tag_t tag_open, tag_recv, tag_status, tag_send;
    ac_t *ac;
    ac_stream_t *prev, *next; /* in ac->streams */
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    /* ac_stream_send()'s messages, sent one at a time after the opening
     * batch's; `sending` while a send is in flight (the opening one too). */
    pending_t *q_head, *q_tail;
    grpc_byte_buffer *sending;
    grpc_metadata_array md, trailing;
    grpc_status_code status;
    grpc_slice details;
    int receive;
    ac_msg_fn on_msg;
    ac_end_fn on_end;
    void *arg;
    pthread_mutex_t mu;
    int refs;
    int held; /* the opener has not released it */
};

int64_t ac_now_ns(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static grpc_byte_buffer *bb_from(const void *p, size_t len) {
    grpc_slice s = grpc_slice_from_copied_buffer(p, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);

    grpc_slice_unref(s);
    return bb;
}

/* Flattens a received buffer; *out is malloc'd (NULL when len is 0). */
static void bb_read(grpc_byte_buffer *bb, uint8_t **out, size_t *len) {
    grpc_byte_buffer_reader r;
    grpc_slice s;

    *out = NULL;
    *len = 0;
    if (bb == NULL || !grpc_byte_buffer_reader_init(&r, bb))
        return;
    s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(s);
    if (*len > 0 && (*out = malloc(*len)) != NULL)
        memcpy(*out, GRPC_SLICE_START_PTR(s), *len);
    else
        *len = 0;
    grpc_slice_unref(s);
}

static grpc_call *new_call(ac_t *c, int method, gpr_timespec deadline) {
    unsigned i = atomic_fetch_add(&c->next, 1) % (unsigned)c->n_ch;

    return grpc_channel_create_registered_call(
        c->ch[i], NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, c->methods[method][i],
        deadline, NULL);
}

static gpr_timespec deadline_of(int64_t timeout_ms) {
    if (timeout_ms <= 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

/* ---- Unary --------------------------------------------------------------- */

int ac_unary(ac_t *c, int method, const void *req, size_t len,
             int64_t timeout_ms, ac_unary_fn done, void *arg) {
    unary_t *u = calloc(1, sizeof(*u));
    grpc_op ops[6];

    if (u == NULL)
        return -1;
    u->tag = (ac_tag_t){TAG_UNARY, u};
    u->done = done;
    u->arg = arg;
    u->call = new_call(c, method, deadline_of(timeout_ms));
    u->send = bb_from(req, len);
    grpc_metadata_array_init(&u->md);
    grpc_metadata_array_init(&u->trailing);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = sec_md_count;
    ops[0].data.send_initial_metadata.metadata = &sec_md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = u->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &u->md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &u->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &u->trailing;
    ops[5].data.recv_status_on_client.status = &u->status;
    ops[5].data.recv_status_on_client.status_details = &u->details;
    if (grpc_call_start_batch(u->call, ops, 6, &u->tag, NULL) != GRPC_CALL_OK) {
        grpc_byte_buffer_destroy(u->send);
        grpc_metadata_array_destroy(&u->md);
        grpc_metadata_array_destroy(&u->trailing);
        grpc_call_unref(u->call);
        free(u);
        return -1;
    }
    return 0;
}

static void on_unary(unary_t *u) {
    uint8_t *body;
    size_t len;

    if (u->status == GRPC_STATUS_OK) {
        bb_read(u->recv, &body, &len);
        u->done(u->arg, 0, body, len);
        free(body);
    } else {
        u->done(u->arg, (int)u->status, GRPC_SLICE_START_PTR(u->details),
                GRPC_SLICE_LENGTH(u->details));
    }
    if (u->recv != NULL)
        grpc_byte_buffer_destroy(u->recv);
    grpc_byte_buffer_destroy(u->send);
    grpc_slice_unref(u->details);
    grpc_metadata_array_destroy(&u->md);
    grpc_metadata_array_destroy(&u->trailing);
    grpc_call_unref(u->call);
    free(u);
}

/* ---- Streams ------------------------------------------------------------- */

static void stream_free(ac_stream_t *s) {
    if (s->send != NULL)
        grpc_byte_buffer_destroy(s->send);
    while (s->q_head != NULL) {
        pending_t *p = s->q_head;

        s->q_head = p->next;
        grpc_byte_buffer_destroy(p->bb);
        free(p);
    }
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->md);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_call_unref(s->call);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Call with ac->mu held. */
static void stream_unlink(ac_stream_t *s) {
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        s->ac->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
}

static void stream_unref(ac_stream_t *s, int opener) {
    ac_t *c = s->ac;
    int left;

    pthread_mutex_lock(&s->mu);
    left = --s->refs;
    if (opener)
        s->held = 0;
    pthread_mutex_unlock(&s->mu);
    if (left > 0) {
        /* ac_destroy() waits for the completions still due. */
        if (atomic_load(&c->closing)) {
            pthread_mutex_lock(&c->mu);
            pthread_cond_broadcast(&c->cv);
            pthread_mutex_unlock(&c->mu);
        }
        return;
    }
    pthread_mutex_lock(&c->mu);
    stream_unlink(s);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    stream_free(s);
}

static void start_recv(ac_stream_t *s) {
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv;
    pthread_mutex_lock(&s->mu);
    s->refs++;
    pthread_mutex_unlock(&s->mu);
    if (grpc_call_start_batch(s->call, &op, 1, &s->tag_recv, NULL) !=
        GRPC_CALL_OK)
        stream_unref(s, 0);
}

ac_stream_t *ac_stream_open(ac_t *c, int method, const void *req, size_t len,
                            int half_close, int receive, ac_msg_fn on_msg,
                            ac_end_fn on_end, void *arg) {
    ac_stream_t *s = calloc(1, sizeof(*s));
    grpc_op ops[4], st;
    size_t n = 0;

    if (s == NULL)
        return NULL;
    s->tag_open = (ac_tag_t){TAG_OPEN, s};
    s->tag_recv = (ac_tag_t){TAG_RECV, s};
    s->tag_status = (ac_tag_t){TAG_STATUS, s};
    s->tag_send = (ac_tag_t){TAG_SEND, s};
    s->receive = receive;
    s->on_msg = on_msg;
    s->on_end = on_end;
    s->arg = arg;
    s->details = grpc_empty_slice();
    pthread_mutex_init(&s->mu, NULL);
    s->refs = 3; /* the opener, the opening batch, the status batch */
    s->held = 1;
    grpc_metadata_array_init(&s->md);
    grpc_metadata_array_init(&s->trailing);
    s->call = new_call(c, method, gpr_inf_future(GPR_CLOCK_MONOTONIC));
    s->send = s->sending = bb_from(req, len);
    s->ac = c;
    pthread_mutex_lock(&c->mu);
    s->next = c->streams;
    if (c->streams != NULL)
        c->streams->prev = s;
    c->streams = s;
    pthread_mutex_unlock(&c->mu);

    memset(ops, 0, sizeof(ops));
    ops[n].data.send_initial_metadata.count = sec_md_count;
    ops[n].data.send_initial_metadata.metadata = &sec_md;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = s->send;
    if (half_close)
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->md;
    memset(&st, 0, sizeof(st));
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &s->trailing;
    st.data.recv_status_on_client.status = &s->status;
    st.data.recv_status_on_client.status_details = &s->details;
    if (grpc_call_start_batch(s->call, &st, 1, &s->tag_status, NULL) !=
        GRPC_CALL_OK)
        s->refs--;
    if (grpc_call_start_batch(s->call, ops, n, &s->tag_open, NULL) !=
        GRPC_CALL_OK)
        s->refs--;
    return s;
}

/* Call with s->mu held: starts the next queued send, if none is going. */
static void send_next_locked(ac_stream_t *s) {
    pending_t *p = s->q_head;
    grpc_op op;

    if (s->sending != NULL || p == NULL)
        return;
    s->q_head = p->next;
    if (s->q_head == NULL)
        s->q_tail = NULL;
    s->sending = p->bb;
    free(p);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->sending;
    s->refs++;
    if (grpc_call_start_batch(s->call, &op, 1, &s->tag_send, NULL) !=
        GRPC_CALL_OK) {
        grpc_byte_buffer_destroy(s->sending);
        s->sending = NULL;
        s->refs--; /* the opener still holds one */
    }
}

int ac_stream_send(ac_stream_t *s, const void *msg, size_t len) {
    pending_t *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return -1;
    p->bb = bb_from(msg, len);
    pthread_mutex_lock(&s->mu);
    if (s->q_tail != NULL)
        s->q_tail->next = p;
    else
        s->q_head = p;
    s->q_tail = p;
    send_next_locked(s);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void on_open(ac_stream_t *s) {
    pthread_mutex_lock(&s->mu);
    s->sending = NULL; /* the opening message (s->send, freed at the end) */
    send_next_locked(s);
    pthread_mutex_unlock(&s->mu);
    if (s->receive)
        start_recv(s);
    stream_unref(s, 0);
}

static void on_send(ac_stream_t *s) {
    pthread_mutex_lock(&s->mu);
    grpc_byte_buffer_destroy(s->sending);
    s->sending = NULL;
    send_next_locked(s);
    pthread_mutex_unlock(&s->mu);
    stream_unref(s, 0);
}

static void on_recv(ac_stream_t *s) {
    grpc_byte_buffer *bb = s->recv;

    s->recv = NULL;
    if (bb != NULL) {
        uint8_t *body;
        size_t len;

        bb_read(bb, &body, &len);
        grpc_byte_buffer_destroy(bb);
        s->on_msg(s->arg, body, len);
        free(body);
        start_recv(s);
    }
    stream_unref(s, 0);
}

static void on_status(ac_stream_t *s) {
    char *details = grpc_slice_to_c_string(s->details);

    if (s->on_end != NULL)
        s->on_end(s->arg, (int)s->status, details ? details : "");
    gpr_free(details);
    stream_unref(s, 0);
}

void ac_stream_cancel(ac_stream_t *s) {
    if (s != NULL)
        grpc_call_cancel(s->call, NULL);
}

void ac_stream_release(ac_stream_t *s) {
    if (s != NULL)
        stream_unref(s, 1);
}

/* ---- The client ---------------------------------------------------------- */

static void *poller(void *arg) {
    ac_t *c = arg;

    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        ac_tag_t *tag;

        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        tag = ev.tag;
        switch (tag->kind) {
        case TAG_UNARY:
            on_unary(tag->ptr);
            break;
        case TAG_OPEN:
            on_open(tag->ptr);
            break;
        case TAG_RECV:
            on_recv(tag->ptr);
            break;
        case TAG_STATUS:
            on_status(tag->ptr);
            break;
        case TAG_SEND:
            on_send(tag->ptr);
            break;
        }
    }
    return NULL;
}

int ac_security(const char *ca_file, const char *token) {
    FILE *f;
    long n;

    sec_token = token;
    sec_ca_file = ca_file;
    if (ca_file == NULL)
        return 0; /* plaintext: a token is sent as is (loopback) */
    if ((f = fopen(ca_file, "rb")) == NULL ||
        fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 || n > (1 << 20) ||
        fseek(f, 0, SEEK_SET) != 0 || (sec_ca = calloc(1, (size_t)n + 1)) ==
                                          NULL ||
        fread(sec_ca, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "reel-bench: --tls-ca %s: cannot read a PEM file of "
                        "1 byte to 1 MiB\n", ca_file);
        if (f != NULL)
            fclose(f);
        return -1;
    }
    fclose(f);
    return 0;
}

void ac_client_opts(reel_client_opts_t *o) {
    o->tls_ca_file = sec_ca_file;
    o->token = sec_token;
}

static grpc_channel_credentials *channel_creds(void) {
    if (sec_token != NULL && sec_md_count == 0) {
        char *v = malloc(strlen(sec_token) + 8);

        if (v != NULL) {
            sprintf(v, "Bearer %s", sec_token);
            sec_md.key = grpc_slice_from_static_string("authorization");
            sec_md.value = grpc_slice_from_copied_string(v);
            sec_md_count = 1;
            free(v);
        }
    }
    if (sec_ca == NULL)
        return grpc_insecure_credentials_create();
    return grpc_ssl_credentials_create_ex(sec_ca, NULL, NULL, NULL);
}

ac_t *ac_create(const char *addr, int connections, int threads) {
    ac_t *c = calloc(1, sizeof(*c));
    grpc_channel_credentials *creds;

    if (c == NULL)
        return NULL;
    if (connections < 1)
        connections = 1;
    if (connections > 64)
        connections = 64;
    if (threads < 1)
        threads = 1;
    reel_grpc_init();
    c->ch = calloc((size_t)connections, sizeof(*c->ch));
    c->threads = calloc((size_t)threads, sizeof(*c->threads));
    if (c->ch == NULL || c->threads == NULL) {
        free(c->ch);
        free(c->threads);
        free(c);
        return NULL;
    }
    creds = channel_creds();
    for (int i = 0; i < connections; i++) {
        /* Each channel its own connection: no subchannel sharing. */
        grpc_arg a[2];
        grpc_channel_args args;

        a[0] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                          .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
                          .value.integer = 1};
        a[1] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                          .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                          .value.integer = 64 << 20};
        args.num_args = 2;
        args.args = a;
        c->ch[i] = grpc_channel_create(addr, creds, &args);
    }
    grpc_channel_credentials_release(creds);
    c->n_ch = connections;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->cq = grpc_completion_queue_create_for_next(NULL);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&c->threads[c->n_threads], NULL, poller, c) == 0)
            c->n_threads++;
    return c;
}

int ac_method(ac_t *c, const char *path) {
    if (c->n_methods == MAX_METHODS)
        return -1;
    for (int i = 0; i < c->n_ch; i++)
        c->methods[c->n_methods][i] =
            grpc_channel_register_call(c->ch[i], path, NULL, NULL);
    return c->n_methods++;
}

void ac_destroy(ac_t *c) {
    if (c == NULL)
        return;
    /* Streams still open, or whose last completions are still queued, end
     * first: their callbacks may start batches until then. One its opener
     * never released is freed here once only that hold is left. */
    pthread_mutex_lock(&c->mu);
    atomic_store(&c->closing, 1);
    for (ac_stream_t *s = c->streams; s != NULL; s = s->next)
        grpc_call_cancel(s->call, NULL);
    for (;;) {
        ac_stream_t *s = c->streams, *busy = NULL;

        while (s != NULL && busy == NULL) {
            ac_stream_t *next = s->next;
            int only_held;

            /* At 0 refs stream_unref() is about to unlink and free it. */
            pthread_mutex_lock(&s->mu);
            only_held = s->refs == 1 && s->held;
            pthread_mutex_unlock(&s->mu);
            if (!only_held)
                busy = s;
            else {
                stream_unlink(s);
                stream_free(s);
            }
            s = next;
        }
        if (busy == NULL)
            break;
        pthread_cond_wait(&c->cv, &c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < c->n_ch; i++)
        grpc_channel_destroy(c->ch[i]);
    grpc_completion_queue_shutdown(c->cq);
    for (int i = 0; i < c->n_threads; i++)
        pthread_join(c->threads[i], NULL);
    grpc_completion_queue_destroy(c->cq);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->ch);
    free(c->threads);
    free(c);
    grpc_shutdown();
}
