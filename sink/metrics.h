/*
 * sink/metrics.h: reel-sink's metrics and readiness (private to sink/).
 * See sink/metrics.c for what each figure is and where it is read.
 */
#ifndef REEL_SINK_METRICS_H
#define REEL_SINK_METRICS_H

#include <stddef.h>

#include "base/status.h"
#include "client/client.h"
#include "metrics/metrics.h"
#include "sink/sink.h"

typedef struct sink_metrics sink_metrics_t;

/*
 * Registers every sink's metrics into reg, reading runners[0..n) and
 * asking client for reel's head at each scrape; all three must outlive
 * it. Before the runners start (the histograms are theirs to observe).
 */
reel_code_t sink_metrics_create(metrics_registry_t *reg,
                                sink_runner_t **runners, size_t n,
                                reel_client_t *client, sink_metrics_t **out,
                                reel_status_t *st);
/* Drops them from reg and frees m. NULL is fine. */
void sink_metrics_destroy(metrics_registry_t *reg, sink_metrics_t *m);

/* /readyz (metrics_ready_fn; arg is the sink_metrics_t). */
int sink_metrics_ready(void *arg, char *why, size_t cap);

#endif
