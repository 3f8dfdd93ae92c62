/*
 * reactor/main.c: reel-reactor, push dispatch of claimable runs to HTTP
 * workers.
 *
 *   reel-reactor [run] --reel HOST:PORT --config FILE [--takeover] ...
 *   reel-reactor check --config FILE
 *
 * run: one reactor (reactor.h) until SIGTERM or SIGINT (taken with
 * sigtimedwait by the main thread: every other thread has them blocked;
 * a SIGHUP, a closed terminal's, is logged and changes nothing), then
 * requests in flight may finish for up to --stop-grace-ms, what was
 * settled is acknowledged, and the process exits 0. A consumer that stops
 * for good (taken over, invalidated, a revision no longer retained) exits
 * 1, abandoning requests in flight at once. A bad flag or configuration
 * exits 2 before anything starts.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <grpc/grpc.h>

#include "api/grpc_init.h"
#include "base/file.h"
#include "base/log.h"
#include "base/text.h"
#include "base/version.h"
#include "client/client.h"
#include "metrics/http.h"
#include "metrics/metrics.h"
#include "reactor/config.h"
#include "reactor/reactor.h"

#define EXIT_USAGE 2
#define DEFAULT_GRACE_MS 10000
#define MAX_GRACE_MS 3600000

typedef struct args {
    char reel_checked[512]; /* --reel with its port */
    const char *cmd;
    const char *reel;
    const char *config;
    const char *state_ns;
    const char *consumer;
    const char *log_level;
    const char *metrics_listen;
    /* What an error names for each: the environment variable the value
     * came from, or the flag. */
    const char *reel_from, *state_ns_from, *consumer_from, *log_level_from;
    const char *metrics_listen_from;
    int64_t grace_ms;
    int takeover;
} args_t;

static atomic_int fatal_seen;

static void usage(FILE *f) {
    fprintf(f,
        "usage: reel-reactor [run] --reel HOST:PORT --config FILE [options]\n"
        "       reel-reactor check --config FILE\n"
        "\n"
        "Pushes runs that become claimable (run.*.RUNNABLE events, and a\n"
        "periodic ListRunsToRecover sweep) to each configured app's HTTP\n"
        "worker as signed Standard Webhooks requests; the worker claims the\n"
        "run with ClaimRun(expected_epoch). A durable consumer of reel.\n"
        "\n"
        "  run       dispatch until SIGTERM (the default command)\n"
        "  check     check the configuration and exit (0, or 2)\n"
        "\n"
        "  --reel HOST:PORT          reeld's address (REEL_REACTOR_REEL; "
        "default 127.0.0.1:7878)\n"
        "  --config FILE             the apps, JSON (REEL_REACTOR_CONFIG; "
        "docs/reactor.md)\n"
        "  --takeover                take the consumer from its current "
        "holder at start\n"
        "  --consumer NAME           the durable consumer "
        "(REEL_REACTOR_CONSUMER; default reactor)\n"
        "  --state-namespace NS      KV namespace of dead letters\n"
        "                            (REEL_REACTOR_STATE_NAMESPACE; default "
        "reel-reactor)\n"
        "  --stop-grace-ms N         how long SIGTERM waits for requests in "
        "flight\n"
        "                            (REEL_REACTOR_STOP_GRACE_MS; default "
        "10000)\n"
        "  --log-level LEVEL         debug, info, warn, error "
        "(REEL_REACTOR_LOG_LEVEL; default info)\n"
        "  --metrics-listen H:P      serve Prometheus /metrics, /healthz "
        "and /readyz there\n"
        "                            (REEL_REACTOR_METRICS_LISTEN; "
        "docs/operations.md)\n"
        "  --help, --version\n"
        "  reeld with TLS or --auth token: REEL_TLS=1 (system roots) or\n"
        "  REEL_TLS_CA=FILE, REEL_TLS_CERT and REEL_TLS_KEY (mTLS),\n"
        "  REEL_TOKEN (the bearer token; docs/security.md)\n"
        "\n"
        "Exit status: 0 stopped by a signal (check: valid), 1 the consumer "
        "stopped for good,\n"
        "2 a usage or configuration error.\n");
}

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);

    return v != NULL && *v != '\0' ? v : dflt;
}

/* env_or(), and in *from the name an error about the value gives: the
 * variable when it is set, so that a bad REEL_REACTOR_CONSUMER is not
 * reported as a --consumer nobody passed; else the flag. */
static const char *env_from(const char *name, const char *flag,
                            const char *dflt, const char **from) {
    const char *v = env_or(name, NULL);

    *from = v != NULL ? name : flag;
    return v != NULL ? v : dflt;
}

/* 0, 1 (--help or --version printed: exit 0), or -1 (said: exit 2). */
static int parse_args(int argc, char **argv, args_t *a) {
    static const struct option longs[] = {
        {"reel", required_argument, NULL, 'r'},
        {"config", required_argument, NULL, 'c'},
        {"state-namespace", required_argument, NULL, 'n'},
        {"consumer", required_argument, NULL, 'k'},
        {"log-level", required_argument, NULL, 'l'},
        {"stop-grace-ms", required_argument, NULL, 'g'},
        {"takeover", no_argument, NULL, 't'},
        {"metrics-listen", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *grace_from;
    const char *grace = env_from("REEL_REACTOR_STOP_GRACE_MS",
                                 "--stop-grace-ms", NULL, &grace_from);
    int c;

    memset(a, 0, sizeof(*a));
    a->reel = env_from("REEL_REACTOR_REEL", "--reel", "127.0.0.1:7878",
                       &a->reel_from);
    a->config = env_or("REEL_REACTOR_CONFIG", NULL);
    a->state_ns = env_from("REEL_REACTOR_STATE_NAMESPACE",
                           "--state-namespace", REACTOR_STATE_NAMESPACE,
                           &a->state_ns_from);
    a->consumer = env_from("REEL_REACTOR_CONSUMER", "--consumer",
                           REACTOR_CONSUMER, &a->consumer_from);
    a->log_level = env_from("REEL_REACTOR_LOG_LEVEL", "--log-level", "info",
                            &a->log_level_from);
    a->metrics_listen = env_from("REEL_REACTOR_METRICS_LISTEN",
                                 "--metrics-listen", NULL,
                                 &a->metrics_listen_from);
    a->grace_ms = DEFAULT_GRACE_MS;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'r': a->reel = optarg, a->reel_from = "--reel"; break;
        case 'c': a->config = optarg; break;
        case 'n':
            a->state_ns = optarg, a->state_ns_from = "--state-namespace";
            break;
        case 'k': a->consumer = optarg, a->consumer_from = "--consumer"; break;
        case 'l':
            a->log_level = optarg, a->log_level_from = "--log-level";
            break;
        case 'g': grace = optarg, grace_from = "--stop-grace-ms"; break;
        case 't': a->takeover = 1; break;
        case 'M':
            a->metrics_listen = optarg;
            a->metrics_listen_from = "--metrics-listen";
            break;
        case 'h': usage(stdout); return 1;
        case 'V': printf("reel-reactor %s\n", REEL_VERSION); return 1;
        default:
            fprintf(stderr, "reel-reactor: unknown or incomplete flag \"%s\" "
                    "(reel-reactor --help)\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc)
        a->cmd = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "reel-reactor: unexpected argument \"%s\"\n",
                argv[optind]);
        return -1;
    }
    if (a->cmd == NULL)
        a->cmd = "run";
    if (strcmp(a->cmd, "run") != 0 && strcmp(a->cmd, "check") != 0) {
        fprintf(stderr, "reel-reactor: unknown command \"%s\" (run, check)\n",
                a->cmd);
        return -1;
    }
    if (a->config == NULL) {
        fprintf(stderr, "reel-reactor: --config: missing (a JSON file of "
                "apps; docs/reactor.md)\n");
        return -1;
    }
    if (grace != NULL) {
        char *end;
        long long g;

        errno = 0;
        g = strtoll(grace, &end, 10);
        if (errno != 0 || *grace == '\0' || *end != '\0' || g < 0 ||
            g > MAX_GRACE_MS) {
            fprintf(stderr, "reel-reactor: %s: \"%s\" is not an integer "
                    "from 0 to %d\n", grace_from, grace, MAX_GRACE_MS);
            return -1;
        }
        a->grace_ms = g;
    }
    {
        reel_status_t st = REEL_STATUS_INIT;

        if (reel_addr_check(a->reel_from, a->reel, "7878", 0, a->reel_checked,
                            sizeof(a->reel_checked), &st) != REEL_OK) {
            fprintf(stderr, "reel-reactor: %s\n", reel_status_message(&st));
            reel_status_fini(&st);
            return -1;
        }
        a->reel = a->reel_checked;
    }
    if (reel_check_charset(a->state_ns_from, a->state_ns,
                           strlen(a->state_ns), 256, "A-Za-z0-9_:/-",
                           NULL) != REEL_OK) {
        fprintf(stderr, "reel-reactor: %s: \"%s\" is not 1-256 bytes of "
                "[A-Za-z0-9_:/-] (a KV namespace)\n", a->state_ns_from,
                a->state_ns);
        return -1;
    }
    if (reel_check_charset(a->consumer_from, a->consumer,
                           strlen(a->consumer), 128, "A-Za-z0-9_.-",
                           NULL) != REEL_OK) {
        fprintf(stderr, "reel-reactor: %s: \"%s\" is not 1-128 bytes of "
                "[A-Za-z0-9_.-]\n", a->consumer_from, a->consumer);
        return -1;
    }
    return 0;
}

static void on_fatal(void *arg) {
    (void)arg;
    atomic_store(&fatal_seen, 1);
    /* Wakes the main thread's sigtimedwait at once. */
    kill(getpid(), SIGUSR1);
}

static int cmd_run(const args_t *a, const reactor_config_t *cfg,
                   reel_client_t *client) {
    reel_status_t st = REEL_STATUS_INIT;
    reactor_opts_t o = {0};
    reactor_t *r = NULL;
    metrics_registry_t *reg = NULL;
    metrics_http_t *http = NULL;
    sigset_t set;
    int rc = 0;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    o.state_ns = a->state_ns;
    o.consumer = a->consumer;
    o.grace_ms = a->grace_ms;
    o.takeover = a->takeover;
    o.on_fatal = on_fatal;
    if (reactor_create(cfg, client, &o, &r, &st) != REEL_OK) {
        REEL_ERROR("reactor", "%s", reel_status_message(&st));
        rc = 1;
        goto out;
    }
    if (a->metrics_listen != NULL &&
        (metrics_registry_create(&reg, &st) != REEL_OK ||
         reactor_metrics_register(r, reg, &st) != REEL_OK ||
         metrics_http_start(a->metrics_listen_from, a->metrics_listen, reg,
                            reactor_ready, r, &http, &st) != REEL_OK)) {
        REEL_ERROR("reactor", "%s", reel_status_message(&st));
        /* A bad or taken address is the operator's to change, as in
         * reel-sink: a supervisor reads 1 as "stopped for good". */
        rc = 2;
        goto out;
    }
    if (http != NULL)
        REEL_INFO("reactor", "metrics on %s (port %d)", a->metrics_listen,
                  metrics_http_port(http));
    if (reactor_start(r, &st) != REEL_OK) {
        REEL_ERROR("reactor", "%s", reel_status_message(&st));
        rc = 1;
        goto out;
    }
    if (cfg->sweep_interval_ms > 0)
        REEL_INFO("reactor", "reel-reactor %s: %zu app%s on reel %s, sweep "
                  "every %lld ms",
                  REEL_VERSION, cfg->n, cfg->n == 1 ? "" : "s", a->reel,
                  (long long)cfg->sweep_interval_ms);
    else
        REEL_INFO("reactor", "reel-reactor %s: %zu app%s on reel %s, no "
                  "sweep (sweep_interval_ms 0)",
                  REEL_VERSION, cfg->n, cfg->n == 1 ? "" : "s", a->reel);
    for (;;) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &ts);

        if (atomic_load(&fatal_seen)) {
            rc = 1;
            break;
        }
        if (sig == SIGHUP) { /* a closed terminal, or a "reload" */
            REEL_WARN("reactor", "SIGHUP: reel-reactor does not reload its "
                      "configuration (restart it to apply a change); "
                      "still running");
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            REEL_INFO("reactor", "%s: finishing requests in flight (up to "
                      "%lld ms), then stopping",
                      sig == SIGTERM ? "SIGTERM" : "SIGINT",
                      (long long)a->grace_ms);
            break;
        }
    }
out:
    /* Scrapes read the reactor: the endpoint and its metrics go first. */
    metrics_http_stop(http);
    metrics_registry_destroy(reg);
    reactor_destroy(r);
    reel_status_fini(&st);
    if (atomic_load(&fatal_seen))
        rc = 1;
    REEL_INFO("reactor", "reel-reactor stopped (exit %d)", rc);
    return rc;
}

int main(int argc, char **argv) {
    args_t a;
    reactor_config_t cfg = {0};
    reel_status_t st = REEL_STATUS_INIT;
    reel_client_t *client = NULL;
    reel_client_opts_t copts = REEL_CLIENT_OPTS_INIT;
    reel_reply_t err = {0};
    reel_log_level_t level;
    sigset_t set;
    int rc;

    /* Signals are taken by the main thread only (cmd_run's sigwait), and
     * blocked first of all, so a SIGTERM that comes while reel-reactor is
     * still starting is a clean stop too, not a death by the default
     * action. The other commands are short: they take them as usual. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if ((rc = parse_args(argc, argv, &a)) != 0)
        return rc > 0 ? 0 : EXIT_USAGE;
    if (strcmp(a.cmd, "run") != 0)
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    if (reel_log_parse_level(a.log_level, &level) != 0) {
        fprintf(stderr, "reel-reactor: %s: \"%s\" is not debug, info, "
                "warn or error\n", a.log_level_from, a.log_level);
        return EXIT_USAGE;
    }
    reel_log_set_level(level);
    if (reactor_config_load(a.config, &cfg, &st) != REEL_OK) {
        fprintf(stderr, "reel-reactor: %s\n", reel_status_message(&st));
        reel_status_fini(&st);
        return EXIT_USAGE;
    }
    if (strcmp(a.cmd, "check") == 0) {
        printf("%s: %zu app%s, valid\n", a.config, cfg.n,
               cfg.n == 1 ? "" : "s");
        reactor_config_fini(&cfg);
        return 0;
    }
    /* Every request in flight is a connection: the soft limit goes up to
     * the hard one, and apps that cannot fit under it are refused now. */
    if (reactor_config_check_open_files(&cfg, reel_raise_open_files(), &st) !=
        REEL_OK) {
        fprintf(stderr, "reel-reactor: %s\n", reel_status_message(&st));
        reel_status_fini(&st);
        reactor_config_fini(&cfg);
        return EXIT_USAGE;
    }
    /* SIGPIPE is for nobody: a closed socket is an error return. */
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* A reactor (or a standby) comes back within 2 s of reel. */
    copts.backoff_max_ms = 2000;
    /* A full queue restarts the stream (reactor.c): each new one takes in
     * at most this window, not one grown to the connection's
     * bandwidth-delay product over a large backlog (sink/sink.h). */
    copts.stream_window_bytes = 1u << 20;
    /* gRPC's own lines in reel's log (the client library leaves the
     * process's log function alone). */
    reel_grpc_init();
    if (reel_client_opts_from_env(&copts, &err) != 0 || /* reelctl's */
        reel_client_create(a.reel, &copts, &client, &err) != 0) {
        char named[1024];

        fprintf(stderr, "reel-reactor: connecting to reel: %s\n",
                reel_client_option_names(err.details, 0, named,
                                         sizeof(named)));
        reel_reply_fini(&err);
        reactor_config_fini(&cfg);
        curl_global_cleanup();
        grpc_shutdown();
        return EXIT_USAGE;
    }
    rc = cmd_run(&a, &cfg, client);
    reel_client_destroy(client);
    grpc_shutdown();
    curl_global_cleanup();
    reactor_config_fini(&cfg);
    return rc;
}
