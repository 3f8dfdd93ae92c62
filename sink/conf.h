/*
 * sink/conf.h: reading one object of a JSON configuration file, shared by
 * reel-sink's and reel-reactor's configurations (part of //sink:conf).
 *
 * Each object sits in a named array ("sinks", "apps"); every error names
 * the object by index (and name, once read) and then the field:
 *
 *   sinks[0] "billing": secrets[0]: the part after "whsec_" is not base64
 *
 * and is INVALID_ARGUMENT (RESOURCE_EXHAUSTED when out of memory). Numbers
 * are range-checked before any cast; secrets are described, never
 * repeated, and their text is scrubbed once decoded. What a function
 * allocates is the caller's, also on failure (free it with the object).
 * Pure; thread-safe.
 */
#ifndef REEL_SINK_CONF_H
#define REEL_SINK_CONF_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/status.h"
#include "sink/retry.h"
#include "sink/sign.h"

#define SINK_CONF_SECRETS_MAX 16
#define SINK_CONF_FILE_MAX (16u << 20)

typedef struct sink_conf_ctx {
    reel_status_t *st;
    const char *list;   /* the array the object is in: "sinks", "apps" */
    size_t index;
    const char *name;   /* the object's name once known, else NULL */
} sink_conf_ctx_t;

/* Sets the error "<list>[<index>] "<name>": <field>: <why>" and returns
 * INVALID_ARGUMENT. */
reel_code_t sink_conf_bad(const sink_conf_ctx_t *c, const char *field,
                          const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Whether key is in the NULL-terminated list. */
int sink_conf_listed(const char *const *list, const char *key);

/* A non-empty string, strdup'd into *out (NULL when absent and not
 * required). */
reel_code_t sink_conf_string(const sink_conf_ctx_t *c, const cJSON *o,
                             const char *field, int required, char **out);

/* An integer in [min, max]; absent leaves *out as it is. */
reel_code_t sink_conf_int(const sink_conf_ctx_t *c, const cJSON *o,
                          const char *field, int64_t min, int64_t max,
                          int64_t *out);

/* true or false; absent leaves *out as it is. */
reel_code_t sink_conf_bool(const sink_conf_ctx_t *c, const cJSON *o,
                           const char *field, int *out);

/* An array of at most max non-empty strings, each checked by check (may be
 * NULL), into a NULL-terminated malloc'd array (*out NULL when absent). */
reel_code_t sink_conf_strings(const sink_conf_ctx_t *c, const cJSON *o,
                              const char *field, size_t max, char ***out,
                              size_t *n,
                              reel_code_t (*check)(const sink_conf_ctx_t *,
                                                   const char *,
                                                   const char *));

/* "secrets": 1 to SINK_CONF_SECRETS_MAX "whsec_..." strings, decoded into
 * a malloc'd array; missing says what to write when there are none. */
reel_code_t sink_conf_secrets(const sink_conf_ctx_t *c, const cJSON *o,
                              const char *missing, sink_secret_t **out,
                              size_t *n);

/* The retry keys over the defaults already in *r: retry_schedule_ms (up to
 * SINK_RETRY_STEPS_MAX waits of 0 to 7 days), retry_jitter (0 to 0.5),
 * max_age_ms and retry_after_max_ms. */
reel_code_t sink_conf_retry(const sink_conf_ctx_t *c, const cJSON *o,
                            sink_retry_t *r);

/*
 * The configuration text as JSON: INVALID_ARGUMENT "config: ..." for text
 * that is not JSON, anything but white space after the value, or an
 * object that repeats a key (cJSON keeps both and finds the first, so a
 * later value, such as an override appended to the file, would be
 * ignored without a word; the message names the key and where).
 */
cJSON *sink_conf_parse(const char *text, size_t len, reel_status_t *st);

/*
 * A URL with one of the NULL-terminated schemes ("http", "https"), a host,
 * and a port in 1-65535 if it names one, as libcurl reads it. The message
 * never repeats the URL (it may hold a credential): it says what is wrong.
 */
reel_code_t sink_conf_url(const sink_conf_ctx_t *c, const char *field,
                          const char *url, const char *const *schemes);

/* url without what may be secret (user, password, path, query): the
 * scheme, host and port, for a log line; malloc'd, NULL when out of
 * memory. */
char *sink_conf_url_public(const char *url);

/* The server url names, as "host:port" into out, for telling two urls of
 * one server apart from two servers: the host in lower case, the
 * loopback's names as one ("localhost", 127.x.y.z, ::1 are "loopback"),
 * dflt_port when none is given; the url itself when it does not parse. */
void sink_conf_url_endpoint(const char *url, const char *dflt_port,
                            char *out, size_t cap);

/* Reads a whole configuration file (at most SINK_CONF_FILE_MAX) into a
 * malloc'd *text; one that cannot be read is INVALID_ARGUMENT
 * "--config: ..." naming it and why. */
reel_code_t sink_conf_read_file(const char *path, char **text, size_t *len,
                                reel_status_t *st);

#endif
