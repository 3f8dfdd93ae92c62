/* fuzz/fuzz_sink_config.c: reel-sink's configuration file (sink/config.h)
 * on any bytes. Properties: a file that parses has 1 to 256 sinks with
 * valid, distinct names, each with what its type needs and its numbers
 * within their limits, each found by name; one that does not is
 * INVALID_ARGUMENT (or RESOURCE_EXHAUSTED) with a message, an empty set,
 * and no secret repeated (conf_secrets.h). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/conf_secrets.h"
#include "sink/config.h"

static void check_sink(const sink_config_set_t *set, size_t i) {
    const sink_config_t *s = &set->sinks[i];

    if (s->name == NULL || strlen(s->name) == 0 ||
        strlen(s->name) > SINK_NAME_MAX ||
        strspn(s->name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789_-") != strlen(s->name) ||
        sink_config_find(set, s->name) != s)
        abort();
    if ((s->subjects == NULL) != (s->n_subjects == 0) ||
        s->n_subjects > 64 || s->n_exclude > 64 ||
        s->queue_max_events < 1 || s->queue_max_bytes < (1u << 20))
        abort();
    for (size_t j = 0; j < s->n_subjects; j++)
        if (s->subjects[j] == NULL || s->subjects[j][0] == '\0')
            abort();
    if (s->type == SINK_NATS) {
        if (s->n_servers < 1 || s->n_servers > 32 || s->stream == NULL ||
            s->subject_prefix == NULL || s->max_pending < 1 ||
            s->max_pending > 65536 || s->url != NULL || s->n_secrets != 0)
            abort();
        return;
    }
    if (s->type != SINK_WEBHOOK || s->url == NULL || s->n_secrets < 1 ||
        s->n_secrets > SINK_SECRETS_MAX || s->n_servers != 0 ||
        s->max_in_flight < 1 || s->max_in_flight > 1024 ||
        (s->mode == SINK_ORDERED && s->max_in_flight != 1) ||
        s->batch_max_events < 1 || s->timeout_ms < 1 ||
        s->connect_timeout_ms < 1 ||
        s->retry.n_steps > SINK_RETRY_STEPS_MAX ||
        !(s->retry.jitter >= 0 && s->retry.jitter <= 0.5) ||
        (s->on_exhausted == SINK_EXHAUSTED_BLOCK &&
         s->mode != SINK_ORDERED))
        abort();
    for (size_t j = 0; j < s->n_secrets; j++)
        if (s->secrets[j].len < 1 || s->secrets[j].len > SINK_SECRET_MAX)
            abort();
    for (size_t j = 0; j < s->n_headers; j++)
        if (s->headers[j] == NULL || strpbrk(s->headers[j], "\r\n") != NULL)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    reel_status_t st = REEL_STATUS_INIT;
    sink_config_set_t set;
    reel_code_t rc;

    rc = sink_config_parse(text, size, &set, &st);
    if (rc == REEL_OK) {
        if (set.n < 1 || set.n > 256 || set.sinks == NULL)
            abort();
        for (size_t i = 0; i < set.n; i++)
            check_sink(&set, i);
        sink_config_set_fini(&set);
    } else {
        const char *msg = reel_status_message(&st);

        if ((rc != REEL_INVALID_ARGUMENT && rc != REEL_RESOURCE_EXHAUSTED) ||
            rc != st.code || msg == NULL || msg[0] == '\0' || set.n != 0 ||
            set.sinks != NULL)
            abort();
        fuzz_conf_secrets_check(text, size, msg);
    }
    reel_status_fini(&st);
    return 0;
}
