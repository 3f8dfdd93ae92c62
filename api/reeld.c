/*
 * api/reeld.c: the reel server.
 *
 * Start-up: parse flags (one table: each has an environment equivalent; a
 * flag wins), open the store with every module's column families, start
 * the modules (one table too: adding one is a line in it), listen.
 * SIGHUP reloads the TLS certificates (new connections use them).
 * Shutdown on SIGTERM or SIGINT: say not ready (/readyz, gRPC health), go
 * on serving for --shutdown-delay so load balancers take the server out
 * first, then stop accepting calls and end open streams with UNAVAILABLE,
 * let in-flight calls finish (their writes commit), close the store, exit
 * 0. With --metrics-listen, an HTTP endpoint serves /metrics, /healthz and
 * /readyz from before the store opens until the calls are done
 * (metrics/http.h).
 * Signals are blocked in every thread and taken by the main thread with
 * sigwait(), so no handler runs inside library code.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include "api/accept.h"
#include "api/exposure.h"
#include "api/grpc_init.h"
#include "api/rpc.h"
#include "api/services.h"
#include "api/tenant.h"
#include "base/clock.h"
#include "base/fault.h"
#include "base/file.h"
#include "base/log.h"
#include "base/text.h"
#include "base/version.h"
#include "journal/journal.h"
#include "metrics/http.h"
#include "metrics/metrics.h"
#include "signals/signals.h"
#include "store/store.h"

#define SHUTDOWN_GRACE_MS 3000
#define GRPC_TEARDOWN_MS 1000

typedef struct config {
    const char *data_dir;
    const char *listen;
    char listen_checked[512]; /* what --listen gave, with its port */
    const char *log_level;
    int threads;
    size_t max_message_bytes;
    size_t max_response_bytes;
    size_t stream_queue_total;
    size_t write_queue;
    size_t write_queue_bytes;
    uint64_t min_free_disk_bytes;
    size_t write_queue_per_tenant;
    size_t max_calls_per_tenant;
    size_t max_calls;
    size_t max_connections;
    int keepalive_time_ms, keepalive_timeout_ms;
    const char *retry_multiplier; /* a decimal: parsed after the table */
    const char *background_write_rate; /* auto or a number: parsed after */
    uint64_t background_rate;
    int background_auto;
    api_limits_t limits;
    const char *auth; /* "none" or "token" */
    const char *tls_cert, *tls_key, *tls_client_ca; /* "" = none */
    int insecure;
    const char *metrics_listen; /* "": no metrics endpoint */
    int64_t shutdown_delay_ms;
} config_t;

/*
 * reeld's modules, in start order (stopped and freed in reverse): the
 * store opens their column families, the server serves their services,
 * and each committed group goes to their publish hooks in this order.
 * Adding a module is one line here (see docs/architecture.md).
 */
static const api_module_t *const modules[] = {
    &api_auth_module, /* first: tokens are checked from the first call */
    &api_kv_module,
    &api_journal_module,
    &api_signals_module, /* after the journal: it reads and writes runs */
    &api_timers_module,  /* after those whose timers it fires */
    &api_workspace_module,
    &api_wal_module,     /* last: it stores and sends every module's events */
};

/*
 * gRPC's final teardown, given at most GRPC_TEARDOWN_MS. When a socket write
 * would block, gRPC 1.51 starts a "backup poller" that sleeps in epoll_wait
 * for up to 10 s between checks, and grpc_shutdown_blocking() joins it;
 * nothing in the C API wakes it. It only runs after every call is freed and
 * the store is closed, so if gRPC is still tearing down after
 * GRPC_TEARDOWN_MS, the process exits without waiting for it.
 */
typedef struct teardown {
    atomic_int done;
    int rc;
} teardown_t;

static void *teardown_watchdog(void *arg) {
    teardown_t *t = arg;
    struct timespec ts = {GRPC_TEARDOWN_MS / 1000,
                          (GRPC_TEARDOWN_MS % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    /* Past the sleep, finish either way: a cancel mid-log could leave the
     * log's lock held. */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    if (!atomic_load(&t->done)) {
        REEL_INFO("reeld",
                  "gRPC's teardown still waiting after %d ms (its backup "
                  "poller sleeps up to 10 s); exiting without it",
                  GRPC_TEARDOWN_MS);
        if (t->rc == 0)
            REEL_INFO("reeld", "stopped cleanly");
        _exit(t->rc);
    }
    return NULL;
}

static void grpc_teardown(int rc) {
    teardown_t t = {.rc = rc};
    pthread_t wd;
    int have_wd = pthread_create(&wd, NULL, teardown_watchdog, &t) == 0;

    grpc_shutdown_blocking();
    atomic_store(&t.done, 1);
    if (have_wd) {
        pthread_cancel(wd);
        pthread_join(wd, NULL);
    }
}

/* ---- Flags -------------------------------------------------------------- */

/*
 * Every flag is one row: its name, its environment variable, its default,
 * how it parses and its limits, its help, and where it goes in config_t.
 * The same rows build getopt's options, read the environment (a flag
 * wins), fill in the defaults, and print --help.
 */
typedef enum flag_kind {
    FLAG_TEXT,     /* taken as it is */
    FLAG_NUMBER,   /* a decimal integer in min..max */
    FLAG_DURATION, /* 500ms, 30s, 10m, 2h, 7d or plain seconds, in ms, in
                      min..max (max 0: any positive duration) */
    FLAG_SWITCH,   /* no argument: on when given; its variable is 1/0 */
} flag_kind_t;

typedef struct flag {
    const char *name; /* --name */
    const char *env;
    const char *arg; /* the value's placeholder in --help */
    flag_kind_t kind;
    const char *text_default; /* FLAG_TEXT */
    long long def;            /* FLAG_NUMBER, FLAG_DURATION (ms) */
    long long min, max;
    size_t off, size; /* the field of config_t it sets (FIELD) */
    const char *help; /* may be "" */
} flag_t;

#define FIELD(f) offsetof(config_t, f), sizeof(((config_t *)0)->f)

/* The smallest fixed --background-write-rate: a MiB a second. */
#define BACKGROUND_RATE_MIN ((uint64_t)1 << 20)

static const flag_t flags[] = {
    {"data-dir", "REEL_DATA_DIR", "DIR", FLAG_TEXT, "./reel-data", 0, 0, 0,
     FIELD(data_dir), "where data lives"},
    {"listen", "REEL_LISTEN", "HOST:PORT", FLAG_TEXT, "127.0.0.1:7878", 0, 0,
     0, FIELD(listen), "address to serve on"},
    {"log-level", "REEL_LOG_LEVEL", "LEVEL", FLAG_TEXT, "info", 0, 0, 0,
     FIELD(log_level), "debug, info, warn or error"},
    {"threads", "REEL_THREADS", "N", FLAG_NUMBER, NULL, 4, 1, 64,
     FIELD(threads), "gRPC poller threads for unary calls (as many more "
                     "serve streams)"},
    {"max-message-bytes", "REEL_MAX_MESSAGE_BYTES", "N", FLAG_NUMBER, NULL,
     4 << 20, 1024, INT_MAX, FIELD(max_message_bytes),
     "largest request accepted"},
    /* What a gRPC client receives by default. */
    {"max-response-bytes", "REEL_MAX_RESPONSE_BYTES", "N", FLAG_NUMBER, NULL,
     4 << 20, 1024, INT_MAX, FIELD(max_response_bytes),
     "largest response sent; pages stop before it"},
    {"max-stream-backlog-bytes", "REEL_MAX_STREAM_BACKLOG_BYTES", "N",
     FLAG_NUMBER, NULL, 256 << 20, 1 << 20, INT64_MAX,
     FIELD(stream_queue_total),
     "bytes queued for slow stream readers, all streams together (each "
     "keeps one message), one tenant's at most a quarter; past it they "
     "catch up from storage"},
    {"write-queue", "REEL_WRITE_QUEUE", "N", FLAG_NUMBER, NULL, 4096, 1,
     1 << 20, FIELD(write_queue), "writes queued before RESOURCE_EXHAUSTED"},
    {"write-queue-bytes", "REEL_WRITE_QUEUE_BYTES", "N", FLAG_NUMBER, NULL,
     64 << 20, 1 << 20, INT64_MAX, FIELD(write_queue_bytes),
     "bytes the queued writes may hold together before RESOURCE_EXHAUSTED "
     "(one write is always queued)"},
    {"min-free-disk-bytes", "REEL_MIN_FREE_DISK_BYTES", "N", FLAG_NUMBER,
     NULL, 256 << 20, 0, INT64_MAX, FIELD(min_free_disk_bytes),
     "bytes kept free on the data dir's disk: below it, writes that add "
     "data get RESOURCE_EXHAUSTED until space is freed (0: none)"},
    {"write-queue-per-tenant", "REEL_WRITE_QUEUE_PER_TENANT", "N",
     FLAG_NUMBER, NULL, 1024, 1, 1 << 20, FIELD(write_queue_per_tenant),
     "writes of one tenant (not default's or admin's) in flight at once, "
     "under --auth token"},
    {"max-calls", "REEL_MAX_CALLS", "N", FLAG_NUMBER, NULL, 100000, 1,
     100000000, FIELD(max_calls),
     "calls open at once, all clients together, streams and long polls "
     "included (health checks are always served)"},
    {"max-connections", "REEL_MAX_CONNECTIONS", "N", FLAG_NUMBER, NULL,
     10000, 1, 10000000, FIELD(max_connections),
     "client connections open at once (each holds about 22 KiB before any "
     "call); past it a new one is closed at once"},
    {"max-calls-per-tenant", "REEL_MAX_CALLS_PER_TENANT", "N", FLAG_NUMBER,
     NULL, 10000, 1, 1000000, FIELD(max_calls_per_tenant),
     "calls of one tenant (not default's or admin's) open at once, streams "
     "and long polls included, under --auth token"},
    /* gRPC takes an int of ms. */
    {"keepalive-time", "REEL_KEEPALIVE_TIME", "D", FLAG_DURATION, NULL,
     30000, 10, 86400000, FIELD(keepalive_time_ms),
     "ping each client connection this often"},
    {"keepalive-timeout", "REEL_KEEPALIVE_TIMEOUT", "D", FLAG_DURATION, NULL,
     10000, 10, 86400000, FIELD(keepalive_timeout_ms),
     "a client that does not answer a ping this long is gone: its calls end"},
    {"kv-max-namespace-bytes", "REEL_KV_MAX_NAMESPACE_BYTES", "N",
     FLAG_NUMBER, NULL, KV_DEFAULT_MAX_NAMESPACE, 1, 65535,
     FIELD(limits.kv.max_namespace), ""},
    {"kv-max-key-bytes", "REEL_KV_MAX_KEY_BYTES", "N", FLAG_NUMBER, NULL,
     KV_DEFAULT_MAX_KEY, 1, 65535, FIELD(limits.kv.max_key), ""},
    {"kv-max-value-bytes", "REEL_KV_MAX_VALUE_BYTES", "N", FLAG_NUMBER, NULL,
     KV_DEFAULT_MAX_VALUE, 2, 256 << 20, FIELD(limits.kv.max_value), ""},
    {"kv-history-keep", "REEL_KV_HISTORY_KEEP", "N", FLAG_NUMBER, NULL,
     KV_DEFAULT_HISTORY_KEEP, 0, UINT32_MAX, FIELD(limits.kv.history_keep),
     "versions kept per key, 0 = all"},
    {"kv-deleted-history-age", "REEL_KV_DELETED_HISTORY_AGE", "D",
     FLAG_DURATION, NULL, KV_DEFAULT_DELETED_HISTORY_MS, 0,
     3650LL * 86400000, FIELD(limits.kv.deleted_history_ms),
     "a deleted key's history is kept this long, then purged (its tombstone "
     "stays, so its version goes on counting); 0 = for ever"},
    {"journal-max-payload-bytes", "REEL_JOURNAL_MAX_PAYLOAD_BYTES", "N",
     FLAG_NUMBER, NULL, JOURNAL_DEFAULT_MAX_PAYLOAD, 2, 256 << 20,
     FIELD(limits.journal.max_payload), "append payload and run result"},
    {"signal-max-wait-ms", "REEL_SIGNAL_MAX_WAIT_MS", "N", FLAG_NUMBER, NULL,
     SIGNALS_DEFAULT_MAX_WAIT_MS, 1, 86400000,
     FIELD(limits.signals.max_wait_ms), "cap on AwaitSignal's timeout"},
    {"wal-retention-bytes", "REEL_WAL_RETENTION_BYTES", "N", FLAG_NUMBER,
     NULL, 1LL << 30, 1, INT64_MAX, FIELD(limits.wal.retention_bytes),
     "WAL events kept at most, in bytes"},
    {"wal-retention-age", "REEL_WAL_RETENTION_AGE", "D", FLAG_DURATION, NULL,
     7LL * 86400000, 1, 0, FIELD(limits.wal.retention_age_ms),
     "WAL events kept at most this long: 500ms, 30s, 10m, 2h, 7d"},
    {"wal-consumer-max-lag-bytes", "REEL_WAL_CONSUMER_MAX_LAG_BYTES", "N",
     FLAG_NUMBER, NULL, 1LL << 30, 1, INT64_MAX,
     FIELD(limits.wal.consumer_max_lag_bytes),
     "a durable consumer keeps events past the retention limits while its "
     "unacknowledged events take at most N bytes; past that it is "
     "invalidated"},
    {"wal-max-consumers", "REEL_WAL_MAX_CONSUMERS", "N", FLAG_NUMBER, NULL,
     WAL_DEFAULT_MAX_CONSUMERS, 1, 1000000, FIELD(limits.wal.max_consumers),
     "durable consumers at most: creating one more is refused"},
    {"wal-max-consumers-per-tenant", "REEL_WAL_MAX_CONSUMERS_PER_TENANT", "N",
     FLAG_NUMBER, NULL, WAL_DEFAULT_MAX_TENANT_CONSUMERS, 1, 1000000,
     FIELD(limits.wal.max_tenant_consumers),
     "durable consumers of one tenant (not default's or admin's) at most"},
    /* Security (docs/security.md). */
    {"auth", "REEL_AUTH", "MODE", FLAG_TEXT, "none", 0, 0, 0, FIELD(auth),
     "none, or token: every call needs a bearer token"},
    {"tls-cert", "REEL_TLS_CERT", "FILE", FLAG_TEXT, "", 0, 0, 0,
     FIELD(tls_cert), "serve TLS with this PEM certificate chain"},
    {"tls-key", "REEL_TLS_KEY", "FILE", FLAG_TEXT, "", 0, 0, 0,
     FIELD(tls_key), "the PEM private key of --tls-cert"},
    {"tls-client-ca", "REEL_TLS_CLIENT_CA", "FILE", FLAG_TEXT, "", 0, 0, 0,
     FIELD(tls_client_ca),
     "require client certificates signed by this CA (mTLS)"},
    {"insecure", "REEL_INSECURE", "", FLAG_SWITCH, NULL, 0, 0, 1,
     FIELD(insecure),
     "serve a non-loopback address without token auth or TLS"},
    /* A run's retry policy when BeginRun gives none (issue 21). */
    {"retry-initial-interval", "REEL_RETRY_INITIAL_INTERVAL", "D",
     FLAG_DURATION, NULL, JOURNAL_DEFAULT_RETRY_INITIAL_MS, 1,
     JOURNAL_MAX_RETRY_INTERVAL_MS, FIELD(limits.journal.retry.initial_ms),
     "backoff after a run's second lease expiry in a row (no append since "
     "the first)"},
    {"retry-multiplier", "REEL_RETRY_MULTIPLIER", "X", FLAG_TEXT, "2", 0, 0,
     0, FIELD(retry_multiplier),
     "each further expiry without progress multiplies the backoff (1-1000)"},
    {"retry-max-interval", "REEL_RETRY_MAX_INTERVAL", "D", FLAG_DURATION,
     NULL, JOURNAL_DEFAULT_RETRY_MAX_INTERVAL_MS, 1,
     JOURNAL_MAX_RETRY_INTERVAL_MS,
     FIELD(limits.journal.retry.max_interval_ms), "longest backoff"},
    {"retry-max-attempts", "REEL_RETRY_MAX_ATTEMPTS", "N", FLAG_NUMBER, NULL,
     JOURNAL_DEFAULT_RETRY_MAX_ATTEMPTS, 1, JOURNAL_MAX_RETRY_ATTEMPTS,
     FIELD(limits.journal.retry.max_attempts),
     "expiries in a row without progress before a run is PAUSED"},
    {"background-write-rate", "REEL_BACKGROUND_WRITE_RATE", "RATE", FLAG_TEXT,
     "auto", 0, 0, 0, FIELD(background_write_rate),
     "bytes a second RocksDB's flushes and compactions (an artifact's "
     "chunks among them) may write: auto = as fast as the disk goes, but "
     "slower while an upload's writes make synced commits slower than "
     "usual; a number = at most that many, 1048576 to 4000000000; 0 = no "
     "limit"},
    {"workspace-max-artifact-bytes", "REEL_WORKSPACE_MAX_ARTIFACT_BYTES", "N",
     FLAG_NUMBER, NULL, (long long)WS_DEFAULT_MAX_ARTIFACT, 1, INT64_MAX,
     FIELD(limits.ws.max_artifact),
     "largest artifact stored; a larger upload is refused as it passes it"},
    {"workspace-versions-keep", "REEL_WORKSPACE_VERSIONS_KEEP", "N",
     FLAG_NUMBER, NULL, WS_DEFAULT_VERSIONS_KEEP, 1, 1000000,
     FIELD(limits.ws.versions_keep),
     "versions per artifact whose bytes are kept"},
    {"workspace-max-uploads", "REEL_WORKSPACE_MAX_UPLOADS", "N", FLAG_NUMBER,
     NULL, WS_DEFAULT_MAX_UPLOADS, 1, 100000, FIELD(limits.ws.max_uploads),
     "uploads at once (each holds a 1 MiB buffer)"},
    {"workspace-max-uploads-per-tenant",
     "REEL_WORKSPACE_MAX_UPLOADS_PER_TENANT", "N", FLAG_NUMBER, NULL,
     WS_DEFAULT_MAX_TENANT_UPLOADS, 1, 100000,
     FIELD(limits.ws.max_tenant_uploads),
     "uploads of one tenant (not default's or admin's) at once"},
    {"workspace-upload-idle-timeout", "REEL_WORKSPACE_UPLOAD_IDLE_TIMEOUT",
     "D", FLAG_DURATION, NULL, API_DEFAULT_UPLOAD_IDLE_MS, 100, 86400000,
     FIELD(limits.upload_idle_ms),
     "an upload whose client sends nothing this long is ended"},
    {"metrics-listen", "REEL_METRICS_LISTEN", "HOST:PORT", FLAG_TEXT, "", 0,
     0, 0, FIELD(metrics_listen),
     "serve /metrics, /healthz and /readyz over HTTP here (off if empty; "
     "with --auth token, loopback only unless --insecure)"},
    {"shutdown-delay", "REEL_SHUTDOWN_DELAY", "D", FLAG_DURATION, NULL, 0, 0,
     600000, FIELD(shutdown_delay_ms),
     "after SIGTERM, report not ready and keep serving this long before "
     "stopping"},
};

#define N_FLAGS (sizeof(flags) / sizeof(*flags))

/* "500ms", "30s", "10m", "2h", "7d", or plain seconds, 0 with or without
 * a unit; -1 if malformed. */
static int64_t parse_duration_ms(const char *s) {
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1},       {"s", 1000},     {"", 1000},
                 {"m", 60000},    {"h", 3600000},  {"d", 86400000}};
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || v < 0 || *s < '0' || *s > '9')
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(*units); i++)
        if (strcmp(end, units[i].unit) == 0)
            return v > INT64_MAX / units[i].ms ? -1 : v * units[i].ms;
    return -1;
}

/* ms as the largest unit that divides it ("30s", "24h", "7d"); days only
 * past one. */
static void format_duration(long long ms, char *out, size_t cap) {
    if (ms == 0)
        snprintf(out, cap, "0");
    else if (ms % 86400000 == 0 && ms > 86400000)
        snprintf(out, cap, "%lldd", ms / 86400000);
    else if (ms % 3600000 == 0)
        snprintf(out, cap, "%lldh", ms / 3600000);
    else if (ms % 60000 == 0)
        snprintf(out, cap, "%lldm", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(out, cap, "%llds", ms / 1000);
    else
        snprintf(out, cap, "%lldms", ms);
}

static size_t flag_index(const char *name) {
    size_t i = 0;

    while (i < N_FLAGS - 1 && strcmp(flags[i].name, name) != 0)
        i++;
    return i;
}

/* Stores v (in the flag's range, so never negative) into the field: every
 * number in config_t is 4 or 8 bytes. */
static void set_number(const flag_t *f, config_t *cfg, long long v) {
    char *p = (char *)cfg + f->off;
    uint32_t v32 = (uint32_t)v;
    uint64_t v64 = (uint64_t)v;

    if (f->size == sizeof(v32))
        memcpy(p, &v32, sizeof(v32));
    else if (f->size == sizeof(v64))
        memcpy(p, &v64, sizeof(v64));
}

/* How each flag was given, for errors about its value: "--listen", or
 * "REEL_LISTEN (--listen)" when its variable set it (parse_config). */
static char labels[N_FLAGS][80];

static const char *flag_label(const char *name) {
    return labels[flag_index(name)];
}

/* Parses s (from the flag, or its variable) into cfg: 0, or -1 after
 * saying why on stderr, naming what was set. */
static int flag_set(const flag_t *f, const char *s, config_t *cfg) {
    const char *name = labels[f - flags];
    char lo[32], hi[32];
    long long v = 0;
    char *end;

    switch (f->kind) {
    case FLAG_TEXT:
        memcpy((char *)cfg + f->off, &s, sizeof(s));
        return 0;
    case FLAG_SWITCH:
        if (strcmp(s, "1") != 0 && strcmp(s, "0") != 0) {
            fprintf(stderr, "reeld: %s: \"%s\" is not 1 or 0\n", name, s);
            return -1;
        }
        v = s[0] == '1';
        break;
    case FLAG_NUMBER:
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || v < f->min ||
            v > f->max) {
            fprintf(stderr,
                    "reeld: %s: \"%s\" is not a number in %lld..%lld\n",
                    name, s, f->min, f->max);
            return -1;
        }
        break;
    case FLAG_DURATION:
        v = parse_duration_ms(s);
        if (f->max == 0 && v <= 0) {
            fprintf(stderr,
                    "reeld: %s: \"%s\" is not a positive duration (500ms, "
                    "30s, 10m, 2h, 7d)\n",
                    name, s);
            return -1;
        }
        if (f->max != 0 && (v < f->min || v > f->max)) {
            format_duration(f->min, lo, sizeof(lo));
            format_duration(f->max, hi, sizeof(hi));
            fprintf(stderr,
                    "reeld: %s: \"%s\" is not a duration from %s to %s "
                    "(a number and ms, s, m, h or d)\n",
                    name, s, lo, hi);
            return -1;
        }
        break;
    }
    set_number(f, cfg, v);
    return 0;
}

/*
 * The REEL_ variables that are not reeld's but may share its environment:
 * its clients' (reelctl, the C and Python clients), reel-sink's and
 * reel-reactor's, and reel's test and benchmark tools'. A name ending in
 * '*' is a prefix.
 */
static const char *const other_vars[] = {
    "REEL_ADDR",  "REEL_TOKEN",    "REEL_TLS",          "REEL_TLS_CA",
    "REEL_SINK*", "REEL_REACTOR*", "REEL_BENCH*",       "REEL_NATS_DUMP",
    "REEL_CONSUMER_E2E", "REEL_TEST_FAULTS",
};

/* Edits (insert, delete, replace) from a to b, both shorter than 64. */
static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b), row[64], prev, cur;

    if (la >= 64 || lb >= 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            cur = row[j];
            row[j] = a[i - 1] == b[j - 1] ? prev : 1 + prev;
            if (row[j - 1] + 1 < row[j])
                row[j] = row[j - 1] + 1;
            if (cur + 1 < row[j])
                row[j] = cur + 1;
            prev = cur;
        }
    }
    return row[lb];
}

/*
 * Warns of each REEL_ variable set that no reel program reads, naming the
 * closest of reeld's when one is three edits away or less (REEL_LISTNE,
 * REEL_SIGNAL_MAX_WAIT):
 * a misspelled variable is otherwise ignored without a word, and reeld
 * runs on a default the operator thought was changed. Names only, never
 * values: a variable may hold a secret.
 */
static void warn_unknown_variables(void) {
    extern char **environ;

    for (char **e = environ; e != NULL && *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        size_t len = eq != NULL ? (size_t)(eq - *e) : strlen(*e), best = 4;
        const char *near = NULL;
        char name[64];
        int known = 0;

        if (strncmp(*e, "REEL_", 5) != 0)
            continue;
        if (len >= sizeof(name)) {
            REEL_WARN("reeld", "%.40s...: not a variable reel reads", *e);
            continue;
        }
        memcpy(name, *e, len);
        name[len] = '\0';
        for (size_t i = 0; i < N_FLAGS && !known; i++)
            known = strcmp(name, flags[i].env) == 0;
        for (size_t i = 0; i < sizeof(other_vars) / sizeof(*other_vars) &&
                           !known;
             i++) {
            size_t n = strlen(other_vars[i]);

            known = other_vars[i][n - 1] == '*'
                        ? strncmp(name, other_vars[i], n - 1) == 0
                        : strcmp(name, other_vars[i]) == 0;
        }
        if (known)
            continue;
        for (size_t i = 0; i < N_FLAGS; i++) {
            size_t d = edit_distance(name, flags[i].env);

            if (d < best) {
                best = d;
                near = flags[i].env;
            }
        }
        if (near != NULL)
            REEL_WARN("reeld", "%s: not a variable reel reads; did you mean "
                               "%s? (ignored)",
                      name, near);
        else
            REEL_WARN("reeld", "%s: not a variable reel reads (ignored)",
                      name);
    }
}

static void usage(FILE *out) {
    fprintf(out, "usage: reeld [options]\n"
                 "\n"
                 "reel's server: a durable journal plus reactive key-value "
                 "runtime, over gRPC.\n"
                 "\n"
                 "options (environment variable in brackets; a flag wins):\n");
    for (size_t i = 0; i < N_FLAGS; i++) {
        const flag_t *f = &flags[i];
        char def[32];
        int n = fprintf(out, "  --%s %s", f->name, f->arg);

        if (f->kind == FLAG_TEXT)
            snprintf(def, sizeof(def), "%s",
                     *f->text_default ? f->text_default : "none");
        else if (f->kind == FLAG_SWITCH)
            snprintf(def, sizeof(def), "off");
        else if (f->kind == FLAG_DURATION)
            format_duration(f->def, def, sizeof(def));
        else
            snprintf(def, sizeof(def), "%lld", f->def);
        fprintf(out, "%*s%s%s[%s] (default %s)\n", n < 26 ? 26 - n : 2, "",
                f->help, *f->help ? " " : "", f->env, def);
    }
    fprintf(out, "  -h, --help              show this help\n"
                 "  -V, --version           show the version\n"
                 "\n"
                 "durations (D): 500ms, 30s, 10m, 2h, 7d; a bare number "
                 "is seconds\n");
}

/*
 * A flag getopt did not take (opterr is off), said in one line that stays
 * in view. arg: the argument getopt was reading; opt: its optopt (the
 * long flag's code when it was one of reeld's, a short option's letter,
 * else 0). A flag of reeld's missing its value, or a switch given one;
 * an abbreviation of several; one dash where two belong; else the
 * closest flag, when one is within 3 edits.
 */
static void bad_flag(const char *arg, int opt) {
    const char *name = arg, *near = NULL;
    char word[64], many[256] = "";
    size_t n, used = 0, best = 4, matches = 0;
    int dashes = 0;

    while (*name == '-' && dashes < 2)
        name++, dashes++;
    n = strcspn(name, "=");
    if (dashes == 2 && opt >= 256 && opt < 256 + (int)N_FLAGS) {
        const flag_t *f = &flags[opt - 256];

        if (f->kind == FLAG_SWITCH)
            fprintf(stderr, "reeld: --%s takes no value (it is a switch)\n",
                    f->name);
        else
            fprintf(stderr, "reeld: --%s needs a value (%s)\n", f->name,
                    f->arg);
        return;
    }
    snprintf(word, sizeof(word), "%.*s", (int)(n < 63 ? n : 63), name);
    for (size_t i = 0; i < N_FLAGS; i++) {
        size_t d = edit_distance(word, flags[i].name);

        if (n > 0 && strncmp(flags[i].name, word, n) == 0) {
            matches++;
            if (used < sizeof(many))
                used += (size_t)snprintf(many + used, sizeof(many) - used,
                                         "%s--%s", used ? ", " : "",
                                         flags[i].name);
        }
        if (d < best) {
            best = d;
            near = flags[i].name;
        }
    }
    if (dashes == 2 && matches > 1)
        fprintf(stderr, "reeld: \"%s\" is the start of several flags (%s)\n",
                arg, many);
    else if (dashes == 1 && near != NULL)
        fprintf(stderr,
                "reeld: unknown flag \"%s\": long flags take two dashes "
                "(--%s)\n",
                arg, near);
    else if (near != NULL)
        fprintf(stderr,
                "reeld: unknown flag \"%s\"; did you mean --%s? (reeld "
                "--help lists them)\n",
                arg, near);
    else
        fprintf(stderr,
                "reeld: unknown flag \"%s\" (reeld --help lists them)\n",
                arg);
}

static int parse_config(int argc, char **argv, config_t *cfg) {
    struct option opts[N_FLAGS + 3];
    const char *given[N_FLAGS]; /* by flag, else by variable, else NULL */
    int env[N_FLAGS];           /* given by its variable */
    char why[512];
    int c;

    for (size_t i = 0; i < N_FLAGS; i++) {
        opts[i] = (struct option){flags[i].name,
                                  flags[i].kind == FLAG_SWITCH
                                      ? no_argument
                                      : required_argument,
                                  NULL, 256 + (int)i};
        given[i] = getenv(flags[i].env);
        env[i] = given[i] != NULL;
    }
    opts[N_FLAGS] = (struct option){"help", no_argument, NULL, 'h'};
    opts[N_FLAGS + 1] = (struct option){"version", no_argument, NULL, 'V'};
    opts[N_FLAGS + 2] = (struct option){NULL, 0, NULL, 0};
    opterr = 0; /* bad_flag() says it */
    /* "+": no permuting, so the argument read is argv[at], and what is
     * not a flag ends them (reeld takes none: refused below). */
    for (int at = optind; (c = getopt_long(argc, argv, "+hV", opts, NULL)) !=
                          -1;
         at = optind) {
        if (c >= 256 && c < 256 + (int)N_FLAGS) {
            given[c - 256] = flags[c - 256].kind == FLAG_SWITCH ? "1" : optarg;
            env[c - 256] = 0;
            continue;
        }
        switch (c) {
        case 'h': usage(stdout); exit(0);
        case 'V': printf("reeld %s\n", REEL_VERSION); exit(0);
        default: bad_flag(argv[at], optopt); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr,
                "reeld: unexpected argument \"%s\" (reeld takes flags "
                "only; reeld --help lists them)\n",
                argv[optind]);
        return -1;
    }
    for (size_t i = 0; i < N_FLAGS; i++) {
        const flag_t *f = &flags[i];

        if (env[i])
            snprintf(labels[i], sizeof(labels[i]), "%s (--%s)", f->env,
                     f->name);
        else
            snprintf(labels[i], sizeof(labels[i]), "--%s", f->name);
        if (given[i] != NULL) {
            if (flag_set(f, given[i], cfg) != 0)
                return -1;
        } else if (f->kind == FLAG_TEXT) {
            flag_set(f, f->text_default, cfg);
        } else {
            set_number(f, cfg, f->def);
        }
    }
    {
        char *end;
        double m;

        errno = 0;
        m = strtod(cfg->retry_multiplier, &end);
        if (errno != 0 || end == cfg->retry_multiplier || *end != '\0' ||
            !(m >= 1.0 && m <= JOURNAL_MAX_RETRY_MULTIPLIER)) {
            fprintf(stderr, "reeld: %s: \"%s\" is not a number in 1..%g\n",
                    flag_label("retry-multiplier"), cfg->retry_multiplier,
                    JOURNAL_MAX_RETRY_MULTIPLIER);
            return -1;
        }
        cfg->limits.journal.retry.multiplier = m;
    }
    if (strcmp(cfg->background_write_rate, "auto") == 0) {
        cfg->background_auto = 1;
        cfg->background_rate = 0;
    } else {
        const char *v = cfg->background_write_rate;
        char *end;
        unsigned long long n;

        errno = 0;
        n = strtoull(v, &end, 10);
        /* Under a MiB a second a flush of one memtable takes minutes,
         * and a stop waits for it (1 B/s never stopped). */
        if (errno != 0 || end == v || *end != '\0' || *v < '0' ||
            *v > '9' || n > STORE_BACKGROUND_RATE_MAX ||
            (n > 0 && n < BACKGROUND_RATE_MIN)) {
            fprintf(stderr,
                    "reeld: %s: \"%s\" is not auto or a number of bytes a "
                    "second: 0 (no limit) or %llu..%llu\n",
                    flag_label("background-write-rate"), v,
                    (unsigned long long)BACKGROUND_RATE_MIN,
                    (unsigned long long)STORE_BACKGROUND_RATE_MAX);
            return -1;
        }
        cfg->background_auto = 0;
        cfg->background_rate = n;
    }
    /* Signals are journal entries once consumed: one payload limit. */
    cfg->limits.signals.max_payload = cfg->limits.journal.max_payload;
    /* Artifact names follow the KV's limits. */
    cfg->limits.ws.max_namespace = cfg->limits.kv.max_namespace;
    cfg->limits.ws.max_key = cfg->limits.kv.max_key;
    /* One record of every kind must fit in a response, or a page of one
     * could not be sent. */
    if (api_check_response_budget(cfg->max_response_bytes, &cfg->limits.kv,
                                  &cfg->limits.journal, &cfg->limits.signals,
                                  why, sizeof(why)) != 0 ||
        api_workspace_check_budget(cfg->max_response_bytes, &cfg->limits.ws,
                                   why, sizeof(why)) != 0) {
        fprintf(stderr, "reeld: %s\n", why);
        return -1;
    }
    /* A request must be able to carry the largest value or payload. */
    if (given[flag_index("max-message-bytes")] == NULL) {
        size_t need =
            cfg->limits.kv.max_value > cfg->limits.journal.max_payload
                ? cfg->limits.kv.max_value
                : cfg->limits.journal.max_payload;
        if (cfg->max_message_bytes < need + 65536)
            cfg->max_message_bytes = need + 65536;
    }
    if (api_workspace_check_request_budget(cfg->max_message_bytes, why,
                                           sizeof(why)) != 0) {
        fprintf(stderr, "reeld: %s\n", why);
        return -1;
    }
    /* A port past 65535 was taken modulo 65536 by the resolver, and a
     * host alone meant port 443: refused, or the default port. */
    {
        reel_status_t st = REEL_STATUS_INIT;

        if (reel_addr_check(flag_label("listen"), cfg->listen, "7878", 1,
                            cfg->listen_checked, sizeof(cfg->listen_checked),
                            &st) != REEL_OK) {
            fprintf(stderr, "reeld: %s\n", reel_status_message(&st));
            reel_status_fini(&st);
            return -1;
        }
        cfg->listen = cfg->listen_checked;
    }
    if (strcmp(cfg->auth, "none") != 0 && strcmp(cfg->auth, "token") != 0) {
        fprintf(stderr, "reeld: %s: \"%s\" is not none or token\n",
                flag_label("auth"), cfg->auth);
        return -1;
    }
    if (!*cfg->tls_cert != !*cfg->tls_key) {
        fprintf(stderr, "reeld: --tls-cert and --tls-key go together: "
                        "give both or neither\n");
        return -1;
    }
    if (*cfg->tls_client_ca && !*cfg->tls_cert) {
        fprintf(stderr, "reeld: --tls-client-ca needs --tls-cert and "
                        "--tls-key (mTLS is TLS first)\n");
        return -1;
    }
    return 0;
}

/*
 * glibc's malloc hands memory freed at the top of a heap back to the
 * kernel past 128 KiB (its trim threshold, which it raises only to twice
 * the largest block it has freed), and serves blocks past its mmap
 * threshold with mmap of their own. An artifact streams through reeld as
 * 1 MiB messages and chunks, each allocated and freed in turn: every one
 * came back from the kernel as fresh pages, faulted in one by one
 * (page faults were 7.5% of reeld's samples during an upload). Blocks up
 * to 4 MiB now come from the heaps, and up to 16 MiB free at the top of
 * each heap stays for the next message: 1 GiB uploads at a median of 894
 * MB/s against 770 over 5 alternating rounds, the KV no different, and up
 * to about 100 MiB more resident after large transfers, at most 16 MiB
 * per heap (bench/ANALYSIS.md, "Workspace"). An operator's GLIBC_TUNABLES
 * for malloc win over these.
 */
static void tune_malloc(void) {
    const char *t = getenv("GLIBC_TUNABLES");

    if (t != NULL && strstr(t, "glibc.malloc.") != NULL)
        return;
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 16 << 20);
}

/*
 * gRPC closes its listener for good after accept() fails with an error it
 * does not retry (lack of descriptors no longer reaches it: api/accept.h)
 * and says so only in a log line (grpc_init.h). A reeld that no new client
 * can reach, still answering ready to the ones it has, would be a silent
 * outage; it stops instead, with its reason and a failure status, so that
 * its supervisor starts it again. The hook records the message and wakes
 * main's sigwait.
 */
static char listener_lost_why[256];
static atomic_int listener_lost;

static void on_listener_lost(const char *message) {
    snprintf(listener_lost_why, sizeof(listener_lost_why), "%s", message);
    atomic_store(&listener_lost, 1);
    kill(getpid(), SIGUSR2);
}

int main(int argc, char **argv) {
    config_t cfg = {0};
    char bound[520];
    store_opts_t sopts = {0};
    rpc_server_opts_t ropts = {0};
    reel_status_t st = REEL_STATUS_INIT;
    reel_log_level_t level;
    api_ctx_t ctx = {0};
    store_t *store = NULL;
    rpc_server_t *srv = NULL;
    metrics_registry_t *metrics = NULL;
    metrics_http_t *http = NULL;
    char data_dir[PATH_MAX];
    char why[512];
    sigset_t sigs;
    int sig = 0, rc = 1;
    int64_t t0 = reel_clock_mono_ns();

    tune_malloc(); /* before any thread: each heap takes it */
    if (parse_config(argc, argv, &cfg) != 0)
        return 2;
    if (reel_log_parse_level(cfg.log_level, &level) != 0) {
        fprintf(stderr,
                "reeld: %s: \"%s\" is not one of debug, info, warn, error\n",
                flag_label("log-level"), cfg.log_level);
        return 2;
    }
    reel_log_set_level(level);
    warn_unknown_variables();
    if (getenv("REEL_TEST_FAULTS") != NULL && *getenv("REEL_TEST_FAULTS")) {
        if (reel_fault_arm_spec(getenv("REEL_TEST_FAULTS"), &st) != REEL_OK) {
            fprintf(stderr, "reeld: REEL_TEST_FAULTS: %s\n",
                    reel_status_message(&st));
            reel_status_fini(&st);
            return 2;
        }
        REEL_WARN("reeld", "test faults armed (REEL_TEST_FAULTS=%s): this "
                           "server fails on purpose; never use it for data",
                  getenv("REEL_TEST_FAULTS"));
    }

    /* Every connection costs a descriptor; connections then stop at a
     * reserve below the limit (api/accept.h), so that clients holding
     * connections can neither take the descriptors reeld's own files need
     * nor make gRPC close its listener. */
    reel_raise_open_files();
    {
        long reserve = api_accept_arm(0, 0, (long)cfg.max_connections);

        REEL_DEBUG("reeld",
                   "connections are refused past %zu open or while fewer "
                   "than %ld file descriptors are free",
                   cfg.max_connections, reserve);
    }
    /* Before any thread starts, so every thread inherits the mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);  /* reload the TLS certificates */
    sigaddset(&sigs, SIGUSR2); /* the listener was lost */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (api_modules_init(&ctx, modules, sizeof(modules) / sizeof(*modules),
                         &st) != REEL_OK) {
        fprintf(stderr, "reeld: the module table: %s\n",
                reel_status_message(&st));
        reel_status_fini(&st);
        return 1;
    }

    /* Metrics only when served: without them nothing is counted. */
    if (*cfg.metrics_listen &&
        metrics_registry_create(&metrics, &st) != REEL_OK) {
        REEL_ERROR("reeld", "%s", reel_status_message(&st));
        reel_status_fini(&st);
        api_modules_destroy(&ctx);
        return 1; /* nothing started yet */
    }
    ctx.metrics = metrics;

    /* The port first: a bad --listen or a port in use fails before the
     * data dir is created or touched. Nothing is accepted until start. */
    reel_grpc_init();
    reel_grpc_on_listener_lost(on_listener_lost);
    ropts.listen = cfg.listen;
    ropts.threads = cfg.threads;
    ropts.max_message_bytes = cfg.max_message_bytes;
    ropts.max_response_bytes = cfg.max_response_bytes;
    ropts.max_calls = cfg.max_calls;
    ropts.stream_queue_total = cfg.stream_queue_total;
    ropts.keepalive_time_ms = cfg.keepalive_time_ms;
    ropts.keepalive_timeout_ms = cfg.keepalive_timeout_ms;
    ropts.tls_cert = cfg.tls_cert;
    ropts.tls_key = cfg.tls_key;
    ropts.tls_client_ca = cfg.tls_client_ca;
    ctx.auth_token = strcmp(cfg.auth, "token") == 0;
    if (ctx.auth_token) {
        ropts.authorize = api_authorize;
        ropts.authorize_arg = &ctx;
        ropts.principal_free = api_principal_free;
        ropts.share_of = api_principal_share;
        if ((ctx.tenant_calls = api_tenant_calls_create(
                 cfg.max_calls_per_tenant, cfg.write_queue_per_tenant)) ==
            NULL) {
            REEL_ERROR("reeld", "out of memory");
            api_modules_destroy(&ctx);
            metrics_registry_destroy(metrics);
            return 1; /* nothing started yet */
        }
    }
    ropts.metrics = metrics;
    srv = rpc_server_create(&ropts);
    ctx.server = srv;
    if (srv == NULL || api_health_register(srv, &ctx) != 0 ||
        api_admin_register(srv, &ctx) != 0 ||
        api_modules_serve(srv, &ctx) != 0) {
        REEL_ERROR("reeld", "cannot set up the gRPC server");
        goto out;
    }
    if (rpc_server_bind(srv, &st) != REEL_OK) {
        REEL_ERROR("reeld", "%s", reel_status_message(&st));
        goto out;
    }
    if (api_check_exposure(cfg.listen, strcmp(cfg.auth, "token") == 0,
                           *cfg.tls_cert != '\0', cfg.insecure, why,
                           sizeof(why)) != 0) {
        REEL_ERROR("reeld", "refusing to start: %s", why);
        rc = 2;
        goto out;
    }
    if (cfg.insecure &&
        api_check_exposure(cfg.listen, strcmp(cfg.auth, "token") == 0,
                           *cfg.tls_cert != '\0', 0, why, sizeof(why)) != 0)
        REEL_WARN("reeld", "--insecure given: serving anyway (%s)", why);
    /* /metrics has no authentication of its own (it carries no secrets,
     * but a token server keeps even its counts to those it lets in): with
     * --auth token it answers on loopback only, unless --insecure. */
    if (metrics != NULL && ctx.auth_token &&
        !api_listen_is_loopback(cfg.metrics_listen)) {
        if (!cfg.insecure) {
            REEL_ERROR("reeld",
                       "refusing to start: --metrics-listen %s is not a "
                       "loopback address, and /metrics has no "
                       "authentication of its own: with --auth token bind "
                       "it to loopback (127.0.0.1 or [::1]) and let "
                       "Prometheus or an authenticating proxy reach it "
                       "there, or add --insecure",
                       cfg.metrics_listen);
            rc = 2;
            goto out;
        }
        REEL_WARN("reeld",
                  "--insecure given: /metrics on %s answers anyone who "
                  "reaches it",
                  cfg.metrics_listen);
    }
    /* Its port too, and from here on: /healthz answers and /readyz says
     * "starting" while the store opens (a long RocksDB recovery). */
    if (metrics != NULL) {
        if (metrics_http_start(flag_label("metrics-listen"),
                               cfg.metrics_listen, metrics, api_ready, &ctx,
                               &http, &st) != REEL_OK) {
            REEL_ERROR("reeld", "%s", reel_status_message(&st));
            rc = st.code == REEL_INVALID_ARGUMENT ? 2 : 1; /* as --listen */
            goto out;
        }
        metrics_http_complete(http, 0); /* until api_metrics_register */
        api_accept_set_inner(metrics_http_socket(http));
        REEL_INFO("reeld", "/metrics, /healthz and /readyz on port %d (%s)",
                  metrics_http_port(http), cfg.metrics_listen);
        /* Without auth, /metrics off loopback answers anyone who reaches
         * it (consumer names, call counts): allowed, but said, once it
         * serves (a --metrics-listen refused is said instead). */
        if (!ctx.auth_token && !api_listen_is_loopback(cfg.metrics_listen))
            REEL_WARN("reeld",
                      "/metrics on %s answers anyone who reaches it (it has "
                      "no authentication of its own): bind --metrics-listen "
                      "to loopback unless that is meant",
                      cfg.metrics_listen);
    }

    sopts.data_dir = cfg.data_dir;
    sopts.cfs = ctx.modules.cfs;
    sopts.queue_capacity = cfg.write_queue;
    sopts.queue_bytes = cfg.write_queue_bytes;
    sopts.min_free_bytes = cfg.min_free_disk_bytes;
    sopts.publish = api_publish;
    sopts.publish_arg = &ctx;
    sopts.before_commit = api_before_commit;
    sopts.before_commit_arg = &ctx;
    sopts.on_failure = api_store_failed;
    sopts.on_failure_arg = &ctx;
    sopts.alarm = api_alarm;
    sopts.alarm_arg = &ctx;
    sopts.background_write_rate = cfg.background_rate;
    sopts.background_write_auto = cfg.background_auto;
    sopts.metrics = metrics;
    /* One poller makes every submit: it must not run groups itself. */
    sopts.writer_only = cfg.threads < 2;
    if (store_open(&sopts, &store, &st) != REEL_OK) {
        REEL_ERROR("reeld", "cannot open the store: %s",
                   reel_status_message(&st));
        goto out;
    }
    if (realpath(cfg.data_dir, data_dir) == NULL)
        snprintf(data_dir, sizeof(data_dir), "%s", cfg.data_dir);
    /* A test's long start (a RocksDB recovery that takes its time): the
     * store's figures are registered, the modules' not yet. */
    if (REEL_FAULT("reeld.slow_start"))
        sleep(2);

    ctx.store = store;
    ctx.limits = cfg.limits;
    ctx.data_dir = data_dir; /* the first admin token's file goes there */
    /* Every module brought its records up to the format: say so on disk. */
    if ((store_format_opened(store) < 2 &&
         api_tenant_check_upgrade(store, data_dir, &st) != REEL_OK) ||
        api_modules_start(&ctx, &st) != REEL_OK ||
        store_format_upgrade(store, &st) != REEL_OK ||
        (ctx.timers = api_timers_create()) == NULL) {
        REEL_ERROR("reeld", "cannot start: %s",
                   st.code != REEL_OK ? reel_status_message(&st)
                                      : "out of memory");
        goto out;
    }

    ctx.data_dir = data_dir;
    ctx.started_at_ms = reel_clock_now_ms();
    ctx.max_response_bytes = cfg.max_response_bytes;
    if (api_metrics_register(&ctx, &st) != REEL_OK) {
        REEL_ERROR("reeld", "%s", reel_status_message(&st));
        goto out;
    }
    /* Ready before the first call is served: a client that saw the health
     * service say SERVING never reads "starting" on /readyz after it. The
     * port listens since rpc_server_bind, so a connection made in between
     * waits for the start below. */
    metrics_http_complete(http, 1);
    atomic_store(&ctx.phase, API_SERVING);
    if (rpc_server_start(srv, &st) != REEL_OK) {
        REEL_ERROR("reeld", "%s", reel_status_message(&st));
        goto out;
    }
    /* Port 0 asked for any free one: say which. */
    {
        size_t n = strlen(cfg.listen);

        snprintf(bound, sizeof(bound), "%s", cfg.listen);
        if (n >= 2 && strcmp(cfg.listen + n - 2, ":0") == 0 &&
            rpc_server_port(srv) > 0)
            snprintf(bound, sizeof(bound), "%.*s:%d", (int)(n - 2),
                     cfg.listen, rpc_server_port(srv));
    }
    REEL_INFO("reeld",
              "reeld %s serving on %s%s%s (data dir %s, revision %llu) after "
              "%lld ms",
              REEL_VERSION, bound,
              !*cfg.tls_cert        ? ""
              : *cfg.tls_client_ca ? " with mTLS"
                                   : " with TLS",
              strcmp(cfg.auth, "token") != 0 ? ""
              : *cfg.tls_cert                ? " and token auth"
                                             : " with token auth",
              data_dir,
              (unsigned long long)store_revision(store),
              (long long)((reel_clock_mono_ns() - t0) / 1000000));

    for (;;) {
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGUSR2 && !atomic_load(&listener_lost)) {
            REEL_INFO("reeld", "received SIGUSR2: ignored");
            continue;
        }
        if (sig != SIGHUP)
            break;
        if (!*cfg.tls_cert)
            REEL_INFO("reeld", "received SIGHUP: no TLS to reload");
        else if (rpc_server_reload_tls(srv, &st) != REEL_OK)
            REEL_ERROR("reeld",
                       "received SIGHUP: TLS not reloaded, the previous "
                       "certificates still serve: %s",
                       reel_status_message(&st));
        else
            REEL_INFO("reeld",
                      "received SIGHUP: TLS certificates reloaded from %s "
                      "(new connections use them)",
                      cfg.tls_cert);
        reel_status_fini(&st);
    }
    atomic_store(&ctx.phase, API_STOPPING); /* /readyz: 503 */
    api_health_shutdown(&ctx); /* health watchers hear NOT_SERVING first */
    if (sig == SIGUSR2) {
        REEL_ERROR("reeld",
                   "stopping: gRPC stopped accepting connections on %s for "
                   "good (\"%s\"; gRPC 1.51 does not retry), so no new "
                   "client could reach this reeld; restart it",
                   bound, listener_lost_why);
        goto out; /* rc stays 1: a failure, for the supervisor */
    }
    REEL_INFO("reeld", "received %s: shutting down",
              sig == SIGTERM ? "SIGTERM" : "SIGINT");
    rc = 0;
    if (cfg.shutdown_delay_ms > 0) {
        int64_t end = reel_clock_mono_ns() + cfg.shutdown_delay_ms * 1000000;

        REEL_INFO("reeld",
                  "serving %lld ms more (--shutdown-delay; another SIGTERM "
                  "or SIGINT stops at once)",
                  (long long)cfg.shutdown_delay_ms);
        /* The operator who asked twice does not wait it out. */
        for (int64_t left; (left = end - reel_clock_mono_ns()) > 0;) {
            struct timespec ts = {left / 1000000000, left % 1000000000};
            int again = sigtimedwait(&sigs, NULL, &ts);

            if (again == SIGTERM || again == SIGINT) {
                REEL_INFO("reeld", "received %s again: stopping now",
                          again == SIGTERM ? "SIGTERM" : "SIGINT");
                break;
            }
        }
    }
out:
    atomic_store(&ctx.phase, API_STOPPING);
    /* Stop the server first so no new writes arrive, then let the store
     * finish what is queued (completing those calls), then free the server. */
    rpc_server_stop(srv, SHUTDOWN_GRACE_MS);
    /* The endpoint answers until the calls are done; it stops before
     * anything its scrapes and probes read (the modules, the store). */
    api_accept_set_inner(-1); /* its number may be reused once closed */
    metrics_http_stop(http);
    api_metrics_drop(&ctx);
    api_modules_stop(&ctx); /* the WAL's trimmer writes through the store */
    /* The writer completes what is queued (finishing those calls), then
     * the server frees every call (and so every watch and reader, whose
     * cleanups release snapshots: the database must still be open), and
     * only then does the database close. */
    store_stop(store);
    rpc_server_destroy(srv);
    api_tenant_calls_destroy(ctx.tenant_calls); /* after the calls */
    store_close(store);
    api_timers_destroy(ctx.timers);
    api_health_destroy(&ctx);
    api_modules_destroy(&ctx);
    metrics_registry_destroy(metrics); /* everyone dropped theirs */
    grpc_teardown(rc);
    reel_status_fini(&st);
    if (rc == 0)
        REEL_INFO("reeld", "stopped cleanly");
    return rc;
}
