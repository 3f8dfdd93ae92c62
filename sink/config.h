/*
 * sink/config.h: reel-sink's configuration file (private to sink/).
 *
 * A JSON object {"sinks": [ {...}, ... ]} read with cJSON; every key of a
 * sink is listed in docs/sinks.md. Parsing checks everything a sink needs
 * before anything starts: an unknown key, a missing url, a secret that is
 * not whsec_ + base64, a bad pattern, a number outside its limits are
 * INVALID_ARGUMENT naming the sink and the field
 * (sinks[0] "billing": url: missing (a webhook sink needs one)), and
 * reel-sink exits 2.
 *
 * Ownership: a sink_config_set_t owns everything it points to;
 * sink_config_set_fini frees it. Pure; thread-safe on distinct sets.
 */
#ifndef REEL_SINK_CONFIG_H
#define REEL_SINK_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "sink/retry.h"
#include "sink/sign.h"

#define SINK_NAME_MAX 64
#define SINK_SECRETS_MAX 16

typedef enum sink_type { SINK_WEBHOOK, SINK_NATS } sink_type_t;
typedef enum sink_mode { SINK_ORDERED, SINK_CONCURRENT } sink_mode_t;
typedef enum sink_from {
    SINK_FROM_OLDEST,
    SINK_FROM_NOW,
    SINK_FROM_REVISION
} sink_from_t;
typedef enum sink_exhausted {
    SINK_EXHAUSTED_DEAD_LETTER,
    SINK_EXHAUSTED_BLOCK
} sink_exhausted_t;

typedef struct sink_config {
    char *name;
    sink_type_t type;
    char **subjects; /* patterns; an event matching any is delivered */
    size_t n_subjects;
    char **exclude;  /* patterns; an event matching any is not */
    size_t n_exclude;
    int deliver_own_records; /* kv.<state namespace>.> too */
    sink_from_t from;
    uint64_t from_revision;
    size_t queue_max_events;
    size_t queue_max_bytes;

    /* webhook */
    char *url;
    sink_secret_t *secrets;
    size_t n_secrets;
    char **headers; /* "Name: value" */
    size_t n_headers;
    sink_mode_t mode;
    int max_in_flight;
    int batch_max_events;
    size_t batch_max_bytes;
    int64_t timeout_ms;
    int64_t connect_timeout_ms;
    sink_retry_t retry;
    sink_exhausted_t on_exhausted;

    /* nats */
    char **servers;
    size_t n_servers;
    char *stream;
    char *subject_prefix;
    int max_pending;
    int64_t duplicate_window_ms;
    int format_protobuf; /* else JSON, the webhook's data object */
} sink_config_t;

typedef struct sink_config_set {
    sink_config_t *sinks;
    size_t n;
} sink_config_set_t;

/* Parses text[0..len). OK and *out filled, or INVALID_ARGUMENT naming the
 * sink and the field (out is then empty). */
reel_code_t sink_config_parse(const char *text, size_t len,
                              sink_config_set_t *out, reel_status_t *st);

/* Reads and parses path; a file that cannot be read is INVALID_ARGUMENT
 * naming it and why. */
reel_code_t sink_config_load(const char *path, sink_config_set_t *out,
                             reel_status_t *st);

/* The sink called name, or NULL. */
const sink_config_t *sink_config_find(const sink_config_set_t *set,
                                      const char *name);

/* Descriptors reel-sink keeps for its own files, its connection to reel
 * and its control and metrics endpoints, beside the sinks' connections. */
#define SINK_OWN_OPEN_FILES 64

/*
 * The most connections the sinks hold open at once: each concurrent webhook
 * sink's max_in_flight (libcurl keeps no more to its host), one for an
 * ordered webhook sink or a NATS sink.
 */
size_t sink_config_connections(const sink_config_set_t *set);

/*
 * Whether those connections and SINK_OWN_OPEN_FILES fit under the process's
 * open-files limit (limit, RLIMIT_NOFILE's soft value): OK, or
 * INVALID_ARGUMENT naming max_in_flight, the total and the limit. Past the
 * limit every new connection fails as if the receiver refused it, so the
 * configuration is refused before anything starts instead.
 */
reel_code_t sink_config_check_open_files(const sink_config_set_t *set,
                                         uint64_t limit, reel_status_t *st);

/* Frees what set holds and zeroes it. NULL is fine. */
void sink_config_set_fini(sink_config_set_t *set);

#endif
