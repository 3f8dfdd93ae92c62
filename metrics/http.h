/*
 * metrics/http.h: the HTTP endpoint a process serves its metrics and
 * probes on (libmicrohttpd, one internal thread).
 *
 *   GET /metrics  the registry in the text exposition format; 500 with the
 *                 reason when a figure cannot be read (metrics_render()),
 *                 503 while the process is still registering its figures.
 *   GET /healthz  200 "ok": the process is up and answering.
 *   GET /readyz   200 "ready", or 503 with the reason the process gives
 *                 (not writable, shutting down).
 * Any other path is 404; any method but GET and HEAD is 405.
 *
 * Threading: requests are served on the endpoint's own thread, one at a
 * time; the ready function runs there and must not block.
 */
#ifndef REEL_METRICS_HTTP_H
#define REEL_METRICS_HTTP_H

#include <stddef.h>

#include "base/status.h"
#include "metrics/metrics.h"

typedef struct metrics_http metrics_http_t;

/* 1 when ready; else 0 with the reason written into why[cap]. */
typedef int (*metrics_ready_fn)(void *arg, char *why, size_t cap);

/*
 * Binds listen ("HOST:PORT"; "[v6addr]:PORT"; port 0 picks a free one) and
 * starts serving reg. ready may be NULL (always ready). INVALID_ARGUMENT
 * naming `field` for a malformed address or a host that does not resolve;
 * UNAVAILABLE naming the address when it cannot be bound. reg and arg must
 * outlive the endpoint. On success stop it with metrics_http_stop().
 */
reel_code_t metrics_http_start(const char *field, const char *listen,
                               metrics_registry_t *reg, metrics_ready_fn ready,
                               void *arg, metrics_http_t **out,
                               reel_status_t *st);

/* Whether every figure is registered (1, the default): while 0, /metrics
 * answers 503 "starting" rather than a partial set. Any thread. */
void metrics_http_complete(metrics_http_t *h, int complete);

/* The port bound (useful with port 0). */
int metrics_http_port(const metrics_http_t *h);

/* The listening socket's descriptor, while it serves. */
int metrics_http_socket(const metrics_http_t *h);

/* Stops serving (waits for a request in progress) and frees. NULL ok. */
void metrics_http_stop(metrics_http_t *h);

#endif
