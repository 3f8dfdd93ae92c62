/* fuzz/fuzz_requests.c: every request message's decode-and-validate path.
 * The first byte picks the message; the rest is its wire bytes. Each goes
 * through the checks reeld runs before a handler (api/wire.c), protobuf-c
 * decoding, and, for writes, the modules' own validation. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "reel/v1/journal.pb-c.h"
#include "reel/v1/kv.pb-c.h"
#include "reel/v1/admin.pb-c.h"
#include "reel/v1/signals.pb-c.h"
#include "reel/v1/wal.pb-c.h"
#include "api/wire.h"
#include "journal/journal.h"
#include "kv/kv.h"

static const ProtobufCMessageDescriptor *const requests[] = {
    &grpc__health__v1__health_check_request__descriptor,
    &reel__v1__get_status_request__descriptor,
    &reel__v1__set_value_request__descriptor,
    &reel__v1__get_value_request__descriptor,
    &reel__v1__delete_value_request__descriptor,
    &reel__v1__list_values_request__descriptor,
    &reel__v1__value_history_request__descriptor,
    &reel__v1__watch_value_request__descriptor,
    &reel__v1__begin_run_request__descriptor,
    &reel__v1__heartbeat_request__descriptor,
    &reel__v1__append_request__descriptor,
    &reel__v1__read_journal_request__descriptor,
    &reel__v1__subscribe_run_request__descriptor,
    &reel__v1__end_run_request__descriptor,
    &reel__v1__suspend_run_request__descriptor,
    &reel__v1__get_run_request__descriptor,
    &reel__v1__list_runs_request__descriptor,
    &reel__v1__list_runs_to_recover_request__descriptor,
    &reel__v1__claim_run_request__descriptor,
    &reel__v1__send_signal_request__descriptor,
    &reel__v1__await_signal_request__descriptor,
    &reel__v1__list_signals_request__descriptor,
    &reel__v1__subscribe_events_request__descriptor,
    &reel__v1__ack_events_request__descriptor,
    &reel__v1__get_head_request__descriptor,
    &reel__v1__list_consumers_request__descriptor,
    &reel__v1__delete_consumer_request__descriptor,
};

static void validate_kv(const ProtobufCMessage *m) {
    kv_write_args_t a = {0};

    if (m->descriptor == &reel__v1__set_value_request__descriptor) {
        const Reel__V1__SetValueRequest *r = (const void *)m;
        a.ns = r->namespace_, a.key = r->key, a.value = r->value;
        a.writer = r->writer;
        a.precond = (kv_precond_t)r->precondition;
    } else {
        const Reel__V1__DeleteValueRequest *r = (const void *)m;
        a.is_delete = 1;
        a.ns = r->namespace_, a.key = r->key, a.writer = r->writer;
        a.precond = (kv_precond_t)r->precondition;
    }
    a.ns_len = strlen(a.ns), a.key_len = strlen(a.key);
    a.value_len = a.value ? strlen(a.value) : 0;
    a.writer_len = strlen(a.writer);
    kv_validate_write(NULL, &a, NULL);
}

static void validate_journal(const ProtobufCMessage *m) {
    journal_req_t q = {0};

    if (m->descriptor == &reel__v1__append_request__descriptor) {
        const Reel__V1__AppendRequest *r = (const void *)m;
        q.op = JOURNAL_APPEND;
        q.run_id = r->run_id, q.kind = r->kind, q.payload = r->payload;
        q.idempotency_key = r->idempotency_key;
    } else if (m->descriptor == &reel__v1__end_run_request__descriptor) {
        const Reel__V1__EndRunRequest *r = (const void *)m;
        q.op = JOURNAL_END;
        q.run_id = r->run_id, q.result = r->result;
        q.end_status = (run_status_t)r->status;
    } else {
        const Reel__V1__BeginRunRequest *r = (const void *)m;
        run_label_t labels[64];
        q.op = JOURNAL_BEGIN;
        q.app = r->app, q.user = r->user, q.session = r->session;
        q.invocation_id = r->invocation_id, q.lease_owner = r->lease_owner;
        q.lease_ttl_ms = r->lease_ttl_ms;
        q.n_labels = r->n_labels;
        if (r->n_labels <= 64) {
            for (size_t i = 0; i < r->n_labels; i++) {
                labels[i].key = r->labels[i]->key;
                labels[i].value = r->labels[i]->value;
            }
            q.labels = labels;
            journal_validate(&q, 0, NULL);
        }
        return;
    }
    journal_validate(&q, 0, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const ProtobufCMessageDescriptor *d;
    ProtobufCMessage *m;

    if (size < 1)
        return 0;
    d = requests[data[0] % (sizeof(requests) / sizeof(*requests))];
    if (api_wire_check(d, data + 1, size - 1, NULL) != REEL_OK)
        return 0;
    m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
    if (m == NULL)
        return 0;
    if (d == &reel__v1__set_value_request__descriptor ||
        d == &reel__v1__delete_value_request__descriptor)
        validate_kv(m);
    else if (d == &reel__v1__append_request__descriptor ||
             d == &reel__v1__end_run_request__descriptor ||
             d == &reel__v1__begin_run_request__descriptor)
        validate_journal(m);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
