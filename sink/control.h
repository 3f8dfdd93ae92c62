/*
 * sink/control.h: reel-sink's local control endpoint (private to sink/).
 *
 * With --control-listen HOST:PORT, reel-sink serves over HTTP (libmicrohttpd,
 * its own thread):
 *
 *   GET /status   {"version", "sinks": [one object per sink: state,
 *                 in_flight, failing, held, delivered, dead_lettered,
 *                 failures (failed attempts by class, as /metrics has
 *                 them), acked_revision, disabled, last_error, ...]}
 *   GET /healthz  "ok"
 *
 * These are the live numbers only the running process knows;
 * `reel-sink status` adds what reel holds (cursor, head, lag, dead
 * letters). Listen on loopback: it has no authentication. Secrets never
 * appear in it. Prometheus /metrics has its own endpoint (--metrics-listen,
 * sink/metrics.c).
 */
#ifndef REEL_SINK_CONTROL_H
#define REEL_SINK_CONTROL_H

#include <stddef.h>

#include "base/status.h"
#include "sink/sink.h"

typedef struct sink_control sink_control_t;

/* Serves runners[0..n) (which must outlive it) on listen ("127.0.0.1:PORT",
 * port 0: any free one). OK, or INVALID_ARGUMENT naming --control-listen. */
reel_code_t sink_control_start(const char *listen, sink_runner_t **runners,
                               size_t n, sink_control_t **out,
                               reel_status_t *st);
/* The port it listens on. */
int sink_control_port(const sink_control_t *c);
/* Stops serving and frees c. NULL is fine. */
void sink_control_stop(sink_control_t *c);

#endif
