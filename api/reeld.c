/*
 * api/reeld.c: the reel server.
 *
 * Start-up: parse flags (each has an environment equivalent; a flag wins),
 * open the store, register the services, listen. Shutdown on SIGTERM or
 * SIGINT: stop accepting calls and end open streams with UNAVAILABLE, let
 * in-flight calls finish (their writes commit), close the store, exit 0.
 * Signals are blocked in every thread and taken by the main thread with
 * sigwait(), so no handler runs inside library code.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include "api/grpc_init.h"
#include "api/rpc.h"
#include "api/services.h"
#include "base/clock.h"
#include "base/fault.h"
#include "base/log.h"
#include "base/version.h"
#include "journal/journal.h"
#include "signals/signals.h"
#include "store/store.h"

#define SHUTDOWN_GRACE_MS 3000
#define GRPC_TEARDOWN_MS 1000

typedef struct config {
    const char *data_dir;
    const char *listen;
    const char *log_level;
    int threads;
    size_t max_message_bytes;
    size_t max_response_bytes;
    size_t write_queue;
    int keepalive_time_ms, keepalive_timeout_ms;
    kv_limits_t kv;
    journal_limits_t journal;
    signals_limits_t signals;
    wal_limits_t wal;
} config_t;

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

static void usage(FILE *out) {
    fprintf(out,
            "usage: reeld [options]\n"
            "\n"
            "reel's server: a durable journal plus reactive key-value "
            "runtime, over gRPC.\n"
            "\n"
            "options (environment variable in brackets; a flag wins):\n"
            "  --data-dir DIR          where data lives [REEL_DATA_DIR] "
            "(default ./reel-data)\n"
            "  --listen HOST:PORT      address to serve on [REEL_LISTEN] "
            "(default 127.0.0.1:7878)\n"
            "  --log-level LEVEL       debug, info, warn or error "
            "[REEL_LOG_LEVEL] (default info)\n"
            "  --threads N             gRPC poller threads [REEL_THREADS] "
            "(default 4)\n"
            "  --max-message-bytes N   largest request accepted "
            "[REEL_MAX_MESSAGE_BYTES] (default 4194304)\n"
            "  --max-response-bytes N  largest response sent; pages stop "
            "before it [REEL_MAX_RESPONSE_BYTES] (default 4194304)\n"
            "  --write-queue N         writes queued before RESOURCE_EXHAUSTED "
            "[REEL_WRITE_QUEUE] (default 4096)\n"
            "  --keepalive-time D      ping each client connection this often "
            "[REEL_KEEPALIVE_TIME] (default 30s)\n"
            "  --keepalive-timeout D   a client that does not answer a ping "
            "this long is gone: its calls end [REEL_KEEPALIVE_TIMEOUT] "
            "(default 10s)\n"
            "  --kv-max-namespace-bytes N  [REEL_KV_MAX_NAMESPACE_BYTES] "
            "(default 256)\n"
            "  --kv-max-key-bytes N    [REEL_KV_MAX_KEY_BYTES] (default 1024)\n"
            "  --kv-max-value-bytes N  [REEL_KV_MAX_VALUE_BYTES] (default "
            "1048576)\n"
            "  --kv-history-keep N     versions kept per key, 0 = all "
            "[REEL_KV_HISTORY_KEEP] (default 100)\n"
            "  --journal-max-payload-bytes N  append payload and run result "
            "[REEL_JOURNAL_MAX_PAYLOAD_BYTES] (default 1048576)\n"
            "  --signal-max-wait-ms N  cap on AwaitSignal's timeout "
            "[REEL_SIGNAL_MAX_WAIT_MS] (default 300000)\n"
            "  --wal-retention-bytes N WAL events kept at most, in bytes "
            "[REEL_WAL_RETENTION_BYTES] (default 1073741824)\n"
            "  --wal-retention-age D   WAL events kept at most this long: "
            "500ms, 30s, 10m, 2h, 7d [REEL_WAL_RETENTION_AGE] (default 7d)\n"
            "  --wal-consumer-max-lag-bytes N  a durable consumer keeps events "
            "past the retention limits while its unacknowledged events take "
            "at most N bytes; past that it is invalidated "
            "[REEL_WAL_CONSUMER_MAX_LAG_BYTES] (default 1073741824)\n"
            "  -h, --help              show this help\n"
            "  -V, --version           show the version\n");
}

static int parse_size(const char *flag, const char *s, long long min,
                      long long max, long long *out) {
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "reeld: %s: \"%s\" is not a number in %lld..%lld\n",
                flag, s, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* "500ms", "30s", "10m", "2h", "7d", or plain seconds; -1 if malformed. */
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
    if (errno != 0 || end == s || v <= 0)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(*units); i++)
        if (strcmp(end, units[i].unit) == 0)
            return v > INT64_MAX / units[i].ms ? -1 : v * units[i].ms;
    return -1;
}

/* A keepalive duration: 10ms to 24h (gRPC takes an int of ms); NULL keeps
 * the default (0). */
static int parse_keepalive(const char *flag, const char *s, int *out) {
    int64_t ms;

    *out = 0;
    if (s == NULL)
        return 0;
    ms = parse_duration_ms(s);
    if (ms < 10 || ms > 86400000) {
        fprintf(stderr,
                "reeld: %s: \"%s\" is not a duration from 10ms to 24h "
                "(500ms, 30s, 10m, 2h)\n",
                flag, s);
        return -1;
    }
    *out = (int)ms;
    return 0;
}

static int parse_config(int argc, char **argv, config_t *cfg) {
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, 'd'},
        {"listen", required_argument, NULL, 'l'},
        {"log-level", required_argument, NULL, 'L'},
        {"threads", required_argument, NULL, 't'},
        {"max-message-bytes", required_argument, NULL, 'm'},
        {"max-response-bytes", required_argument, NULL, 'R'},
        {"write-queue", required_argument, NULL, 'q'},
        {"kv-max-namespace-bytes", required_argument, NULL, 'N'},
        {"kv-max-key-bytes", required_argument, NULL, 'K'},
        {"kv-max-value-bytes", required_argument, NULL, 'v'},
        {"kv-history-keep", required_argument, NULL, 'H'},
        {"journal-max-payload-bytes", required_argument, NULL, 'P'},
        {"signal-max-wait-ms", required_argument, NULL, 'W'},
        {"wal-retention-bytes", required_argument, NULL, 'B'},
        {"wal-retention-age", required_argument, NULL, 'A'},
        {"wal-consumer-max-lag-bytes", required_argument, NULL, 'C'},
        {"keepalive-time", required_argument, NULL, 'k'},
        {"keepalive-timeout", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *threads = getenv("REEL_THREADS");
    const char *maxmsg = getenv("REEL_MAX_MESSAGE_BYTES");
    const char *maxresp = getenv("REEL_MAX_RESPONSE_BYTES");
    const char *wq = getenv("REEL_WRITE_QUEUE");
    const char *kv_ns = getenv("REEL_KV_MAX_NAMESPACE_BYTES");
    const char *kv_key = getenv("REEL_KV_MAX_KEY_BYTES");
    const char *kv_val = getenv("REEL_KV_MAX_VALUE_BYTES");
    const char *kv_keep = getenv("REEL_KV_HISTORY_KEEP");
    const char *j_payload = getenv("REEL_JOURNAL_MAX_PAYLOAD_BYTES");
    const char *max_wait = getenv("REEL_SIGNAL_MAX_WAIT_MS");
    const char *wal_bytes = getenv("REEL_WAL_RETENTION_BYTES");
    const char *wal_age = getenv("REEL_WAL_RETENTION_AGE");
    char why[512];
    const char *wal_lag = getenv("REEL_WAL_CONSUMER_MAX_LAG_BYTES");
    const char *ka_time = getenv("REEL_KEEPALIVE_TIME");
    const char *ka_timeout = getenv("REEL_KEEPALIVE_TIMEOUT");
    long long v;
    int c;

    cfg->data_dir = getenv("REEL_DATA_DIR") ? getenv("REEL_DATA_DIR")
                                            : "./reel-data";
    cfg->listen = getenv("REEL_LISTEN") ? getenv("REEL_LISTEN")
                                        : "127.0.0.1:7878";
    cfg->log_level = getenv("REEL_LOG_LEVEL") ? getenv("REEL_LOG_LEVEL")
                                              : "info";
    while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
        switch (c) {
        case 'd': cfg->data_dir = optarg; break;
        case 'l': cfg->listen = optarg; break;
        case 'L': cfg->log_level = optarg; break;
        case 't': threads = optarg; break;
        case 'm': maxmsg = optarg; break;
        case 'R': maxresp = optarg; break;
        case 'q': wq = optarg; break;
        case 'N': kv_ns = optarg; break;
        case 'K': kv_key = optarg; break;
        case 'v': kv_val = optarg; break;
        case 'H': kv_keep = optarg; break;
        case 'P': j_payload = optarg; break;
        case 'W': max_wait = optarg; break;
        case 'B': wal_bytes = optarg; break;
        case 'A': wal_age = optarg; break;
        case 'C': wal_lag = optarg; break;
        case 'k': ka_time = optarg; break;
        case 'T': ka_timeout = optarg; break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf("reeld %s\n", REEL_VERSION); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "reeld: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    cfg->threads = 4;
    if (threads != NULL) {
        if (parse_size("--threads", threads, 1, 64, &v) != 0)
            return -1;
        cfg->threads = (int)v;
    }
    cfg->max_message_bytes = 4u << 20;
    if (maxmsg != NULL) {
        if (parse_size("--max-message-bytes", maxmsg, 1024, INT_MAX, &v) != 0)
            return -1;
        cfg->max_message_bytes = (size_t)v;
    }
    /* What a gRPC client receives by default. */
    cfg->max_response_bytes = 4u << 20;
    if (maxresp != NULL) {
        if (parse_size("--max-response-bytes", maxresp, 1024, INT_MAX, &v) !=
            0)
            return -1;
        cfg->max_response_bytes = (size_t)v;
    }
    cfg->write_queue = 4096;
    if (wq != NULL) {
        if (parse_size("--write-queue", wq, 1, 1 << 20, &v) != 0)
            return -1;
        cfg->write_queue = (size_t)v;
    }
    cfg->kv = kv_limits_default();
    if (kv_ns != NULL) {
        if (parse_size("--kv-max-namespace-bytes", kv_ns, 1, 65535, &v) != 0)
            return -1;
        cfg->kv.max_namespace = (size_t)v;
    }
    if (kv_key != NULL) {
        if (parse_size("--kv-max-key-bytes", kv_key, 1, 65535, &v) != 0)
            return -1;
        cfg->kv.max_key = (size_t)v;
    }
    if (kv_val != NULL) {
        if (parse_size("--kv-max-value-bytes", kv_val, 2, 256 << 20, &v) != 0)
            return -1;
        cfg->kv.max_value = (size_t)v;
    }
    if (kv_keep != NULL) {
        if (parse_size("--kv-history-keep", kv_keep, 0, UINT32_MAX, &v) != 0)
            return -1;
        cfg->kv.history_keep = (uint32_t)v;
    }
    cfg->journal.max_payload = JOURNAL_DEFAULT_MAX_PAYLOAD;
    if (j_payload != NULL) {
        if (parse_size("--journal-max-payload-bytes", j_payload, 2, 256 << 20,
                       &v) != 0)
            return -1;
        cfg->journal.max_payload = (size_t)v;
    }
    cfg->signals.max_payload = cfg->journal.max_payload;
    cfg->signals.max_wait_ms = SIGNALS_DEFAULT_MAX_WAIT_MS;
    if (max_wait != NULL) {
        if (parse_size("--signal-max-wait-ms", max_wait, 1, 86400000, &v) != 0)
            return -1;
        cfg->signals.max_wait_ms = v;
    }
    if (wal_bytes != NULL) {
        if (parse_size("--wal-retention-bytes", wal_bytes, 1, INT64_MAX, &v) !=
            0)
            return -1;
        cfg->wal.retention_bytes = (uint64_t)v;
    }
    if (wal_age != NULL &&
        (cfg->wal.retention_age_ms = parse_duration_ms(wal_age)) <= 0) {
        fprintf(stderr,
                "reeld: --wal-retention-age: \"%s\" is not a positive "
                "duration (500ms, 30s, 10m, 2h, 7d)\n",
                wal_age);
        return -1;
    }
    /* One record of every kind must fit in a response, or a page of one
     * could not be sent. */
    if (api_check_response_budget(cfg->max_response_bytes, &cfg->kv,
                                  &cfg->journal, &cfg->signals, why,
                                  sizeof(why)) != 0) {
        fprintf(stderr, "reeld: %s\n", why);
        return -1;
    }
    if (wal_lag != NULL) {
        if (parse_size("--wal-consumer-max-lag-bytes", wal_lag, 1, INT64_MAX,
                       &v) != 0)
            return -1;
        cfg->wal.consumer_max_lag_bytes = (uint64_t)v;
    }
    if (parse_keepalive("--keepalive-time", ka_time,
                        &cfg->keepalive_time_ms) != 0 ||
        parse_keepalive("--keepalive-timeout", ka_timeout,
                        &cfg->keepalive_timeout_ms) != 0)
        return -1;
    /* A request must be able to carry the largest value or payload. */
    if (maxmsg == NULL) {
        size_t need = cfg->kv.max_value > cfg->journal.max_payload
                          ? cfg->kv.max_value
                          : cfg->journal.max_payload;
        if (cfg->max_message_bytes < need + 65536)
            cfg->max_message_bytes = need + 65536;
    }
    return 0;
}

int main(int argc, char **argv) {
    config_t cfg = {0};
    store_opts_t sopts = {0};
    rpc_server_opts_t ropts = {0};
    reel_status_t st = REEL_STATUS_INIT;
    reel_log_level_t level;
    api_ctx_t ctx = {0};
    store_t *store = NULL;
    rpc_server_t *srv = NULL;
    char data_dir[PATH_MAX];
    sigset_t sigs;
    int sig = 0, rc = 1;
    int64_t t0 = reel_clock_mono_ns();

    if (parse_config(argc, argv, &cfg) != 0)
        return 2;
    if (reel_log_parse_level(cfg.log_level, &level) != 0) {
        fprintf(stderr,
                "reeld: --log-level: \"%s\" is not one of debug, info, warn, "
                "error\n",
                cfg.log_level);
        return 2;
    }
    reel_log_set_level(level);
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

    /* Before any thread starts, so every thread inherits the mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The port first: a bad --listen or a port in use fails before the
     * data dir is created or touched. Nothing is accepted until start. */
    reel_grpc_init();
    ropts.listen = cfg.listen;
    ropts.threads = cfg.threads;
    ropts.max_message_bytes = cfg.max_message_bytes;
    ropts.max_response_bytes = cfg.max_response_bytes;
    ropts.keepalive_time_ms = cfg.keepalive_time_ms;
    ropts.keepalive_timeout_ms = cfg.keepalive_timeout_ms;
    srv = rpc_server_create(&ropts);
    ctx.server = srv;
    if (srv == NULL || api_health_register(srv, &ctx) != 0 ||
        api_admin_register(srv, &ctx) != 0 ||
        api_kv_register(srv, &ctx) != 0 ||
        api_journal_register(srv, &ctx) != 0 ||
        api_signals_register(srv, &ctx) != 0 ||
        api_wal_register(srv, &ctx) != 0) {
        REEL_ERROR("reeld", "cannot set up the gRPC server");
        goto out;
    }
    if (rpc_server_bind(srv, &st) != REEL_OK) {
        REEL_ERROR("reeld", "%s", reel_status_message(&st));
        goto out;
    }

    sopts.data_dir = cfg.data_dir;
    sopts.queue_capacity = cfg.write_queue;
    sopts.publish = api_publish;
    sopts.publish_arg = &ctx;
    sopts.before_commit = api_before_commit;
    sopts.before_commit_arg = &ctx;
    sopts.on_failure = api_store_failed;
    sopts.on_failure_arg = &ctx;
    if (store_open(&sopts, &store, &st) != REEL_OK) {
        REEL_ERROR("reeld", "cannot open the store: %s",
                   reel_status_message(&st));
        goto out;
    }
    if (realpath(cfg.data_dir, data_dir) == NULL)
        snprintf(data_dir, sizeof(data_dir), "%s", cfg.data_dir);

    if (kv_create(store, &cfg.kv, &ctx.kv, &st) != REEL_OK ||
        journal_create(store, &cfg.journal, &ctx.journal, &st) != REEL_OK ||
        signals_create(store, ctx.journal, &cfg.signals, &ctx.signals, &st) !=
            REEL_OK ||
        wal_create(store, api_wal_encode, &ctx, &cfg.wal, &ctx.wal, &st) !=
            REEL_OK ||
        (ctx.timers = api_timers_create()) == NULL) {
        REEL_ERROR("reeld", "cannot start: %s",
                   st.code != REEL_OK ? reel_status_message(&st)
                                      : "out of memory");
        goto out;
    }

    ctx.store = store;
    ctx.data_dir = data_dir;
    ctx.started_at_ms = reel_clock_now_ms();
    ctx.max_response_bytes = cfg.max_response_bytes;
    if (rpc_server_start(srv, &st) != REEL_OK) {
        REEL_ERROR("reeld", "%s", reel_status_message(&st));
        goto out;
    }
    REEL_INFO("reeld",
              "reeld %s serving on %s (data dir %s, revision %llu) after "
              "%lld ms",
              REEL_VERSION, cfg.listen, data_dir,
              (unsigned long long)store_revision(store),
              (long long)((reel_clock_mono_ns() - t0) / 1000000));

    while (sigwait(&sigs, &sig) != 0) {
    }
    REEL_INFO("reeld", "received %s: shutting down",
              sig == SIGTERM ? "SIGTERM" : "SIGINT");
    rc = 0;
    api_health_shutdown(&ctx); /* health watchers hear NOT_SERVING first */
out:
    /* Stop the server first so no new writes arrive, then let the store
     * finish what is queued (completing those calls), then free the server. */
    rpc_server_stop(srv, SHUTDOWN_GRACE_MS);
    wal_stop(ctx.wal); /* its trimmer writes through the store */
    store_close(store);
    rpc_server_destroy(srv); /* frees every call, and so every watch */
    api_timers_destroy(ctx.timers);
    api_health_destroy(&ctx);
    wal_destroy(ctx.wal);
    signals_destroy(ctx.signals);
    kv_destroy(ctx.kv);
    journal_destroy(ctx.journal);
    grpc_teardown(rc);
    reel_status_fini(&st);
    if (rc == 0)
        REEL_INFO("reeld", "stopped cleanly");
    return rc;
}
