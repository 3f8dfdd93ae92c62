/*
 * sink/main.c: reel-sink, the WAL tail delivered to webhooks and NATS
 * JetStream.
 *
 *   reel-sink [run] --reel HOST:PORT --config FILE [--control-listen A]
 *             [--metrics-listen A]
 *   reel-sink status [NAME] --reel ... --config FILE [--control A] [--json]
 *   reel-sink dead NAME --reel ... --config FILE [--json]
 *   reel-sink replay NAME (--revision R | --from A --to B | --all) ...
 *   reel-sink enable NAME --reel ... --config FILE
 *   reel-sink check --config FILE
 *
 * run: one runner per configured sink (sink.h), until SIGTERM or SIGINT
 * (taken with sigtimedwait by the main thread: every other thread has them
 * blocked; a SIGHUP, a closed terminal's, is logged and changes
 * nothing), then each sink finishes what is in flight for up to
 * --stop-grace, acknowledges what was done, and the process exits 0. A
 * sink that stops for good (its consumer invalidated, taken over, a
 * revision no longer retained) stops the process: the others stop
 * gracefully and it exits 1. A bad flag or configuration exits 2 before
 * anything starts.
 *
 * status, dead, replay and enable read and write reel only (and, for
 * status, the control endpoint of a running reel-sink), so they work from
 * any machine that reaches reel.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <grpc/grpc.h>

#include "api/grpc_init.h"
#include "base/file.h"
#include "base/log.h"
#include "base/pattern.h"
#include "base/text.h"
#include "base/version.h"
#include "client/client.h"
#include "metrics/http.h"
#include "metrics/metrics.h"
#include "reel/v1/wal.pb-c.h"
#include "sink/config.h"
#include "sink/control.h"
#include "sink/event.h"
#include "sink/metrics.h"
#include "sink/sign.h"
#include "sink/sink.h"
#include "sink/state.h"

#define EXIT_USAGE 2
#define DEFAULT_GRACE_MS 10000

typedef struct args {
    char reel_checked[512]; /* --reel with its port */
    const char *cmd;
    const char *name;
    const char *reel;
    const char *config;
    const char *control_listen;
    const char *metrics_listen;
    const char *control;
    const char *state_ns;
    const char *log_level;
    /* What an error names for each: the environment variable the value
     * came from, or the flag. */
    const char *reel_from, *control_listen_from, *metrics_listen_from;
    const char *state_ns_from, *log_level_from;
    int64_t grace_ms;
    int takeover;
    int json;
    int all;
    int have_revision, have_from, have_to;
    uint64_t revision, from, to;
} args_t;

static void usage(FILE *f) {
    fprintf(f,
        "usage: reel-sink [run] --reel HOST:PORT --config FILE [options]\n"
        "       reel-sink status [NAME] --reel HOST:PORT --config FILE "
        "[--control HOST:PORT] [--json]\n"
        "       reel-sink dead NAME --reel HOST:PORT --config FILE [--json]\n"
        "       reel-sink replay NAME --reel HOST:PORT --config FILE\n"
        "                 (--revision R | --from A --to B | --all)\n"
        "       reel-sink enable NAME --reel HOST:PORT --config FILE\n"
        "       reel-sink check --config FILE\n"
        "\n"
        "Delivers reel's WAL tail to webhooks (Standard Webhooks) and NATS\n"
        "JetStream, each configured sink a durable consumer sink.<name>.\n"
        "\n"
        "  run       deliver until SIGTERM (the default command)\n"
        "  status    each sink's cursor, head, lag, in flight, failing,\n"
        "            disabled and dead letters\n"
        "  dead      list a sink's dead letters with their last error\n"
        "  replay    deliver dead letters again; delivered ones are removed\n"
        "  enable    re-enable a sink disabled by a 410 Gone\n"
        "  check     check the configuration and exit (0, or 2)\n"
        "\n"
        "  --reel HOST:PORT          reeld's address (REEL_SINK_REEL; "
        "default 127.0.0.1:7878)\n"
        "  --config FILE             the sinks, JSON (REEL_SINK_CONFIG; "
        "docs/sinks.md)\n"
        "  --control-listen H:P      serve GET /status and /healthz there "
        "(REEL_SINK_CONTROL_LISTEN)\n"
        "  --metrics-listen H:P      serve Prometheus /metrics, /healthz "
        "and /readyz there\n"
        "                            (REEL_SINK_METRICS_LISTEN; "
        "docs/operations.md)\n"
        "  --control H:P             status: the running reel-sink's "
        "control endpoint (REEL_SINK_CONTROL)\n"
        "  --state-namespace NS      KV namespace of dead letters and "
        "disabled marks\n"
        "                            (REEL_SINK_STATE_NAMESPACE; default "
        "reel-sink)\n"
        "  --takeover                take each consumer from its current "
        "holder at start\n"
        "  --stop-grace-ms N         how long SIGTERM waits for deliveries "
        "in flight\n"
        "                            (REEL_SINK_STOP_GRACE_MS; default "
        "10000)\n"
        "  --log-level LEVEL         debug, info, warn, error "
        "(REEL_SINK_LOG_LEVEL; default info)\n"
        "  --json                    status and dead: JSON\n"
        "  reeld with TLS or --auth token: REEL_TLS=1 (system roots) or\n"
        "  REEL_TLS_CA=FILE, REEL_TLS_CERT and REEL_TLS_KEY (mTLS),\n"
        "  REEL_TOKEN (the bearer token; docs/security.md)\n"
        "  --help, --version\n"
        "\n"
        "Exit status: 0 done (run: stopped by a signal), 1 an error reel or "
        "a receiver\n"
        "answered (run: a sink stopped for good), 2 a usage or "
        "configuration error.\n");
}

/* s as an integer >= 0; else -1, said naming flag and what it is. */
static int parse_u64_as(const char *flag, const char *what, const char *s,
                        uint64_t *out) {
    char *end;

    errno = 0;
    if (s == NULL || *s == '\0' || *s == '-' ||
        (*out = strtoull(s, &end, 10), errno != 0) || *end != '\0') {
        fprintf(stderr, "reel-sink: %s: \"%s\" is not %s (an integer >= "
                "0)\n", flag, s ? s : "", what);
        return -1;
    }
    return 0;
}

static int parse_u64(const char *flag, const char *s, uint64_t *out) {
    return parse_u64_as(flag, "a revision", s, out);
}

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);

    return v != NULL && *v != '\0' ? v : dflt;
}

/* env_or(), and in *from the name an error about the value gives: the
 * variable when it is set, so that a bad REEL_SINK_LOG_LEVEL is not
 * reported as a --log-level nobody passed; else the flag. */
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
        {"control-listen", required_argument, NULL, 'L'},
        {"control", required_argument, NULL, 'C'},
        {"metrics-listen", required_argument, NULL, 'M'},
        {"state-namespace", required_argument, NULL, 'n'},
        {"log-level", required_argument, NULL, 'l'},
        {"stop-grace-ms", required_argument, NULL, 'g'},
        {"takeover", no_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"revision", required_argument, NULL, 'R'},
        {"from", required_argument, NULL, 'F'},
        {"to", required_argument, NULL, 'T'},
        {"all", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *grace = env_or("REEL_SINK_STOP_GRACE_MS", NULL);
    const char *grace_from = grace != NULL ? "REEL_SINK_STOP_GRACE_MS"
                                           : "--stop-grace-ms";
    uint64_t g;
    int c;

    memset(a, 0, sizeof(*a));
    a->reel = env_from("REEL_SINK_REEL", "--reel", "127.0.0.1:7878",
                       &a->reel_from);
    a->config = env_or("REEL_SINK_CONFIG", NULL);
    a->control_listen = env_from("REEL_SINK_CONTROL_LISTEN",
                                 "--control-listen", NULL,
                                 &a->control_listen_from);
    a->control = env_or("REEL_SINK_CONTROL", NULL);
    a->metrics_listen = env_from("REEL_SINK_METRICS_LISTEN",
                                 "--metrics-listen", NULL,
                                 &a->metrics_listen_from);
    a->state_ns = env_from("REEL_SINK_STATE_NAMESPACE", "--state-namespace",
                           SINK_STATE_NAMESPACE, &a->state_ns_from);
    a->log_level = env_from("REEL_SINK_LOG_LEVEL", "--log-level", "info",
                            &a->log_level_from);
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'r': a->reel = optarg, a->reel_from = "--reel"; break;
        case 'c': a->config = optarg; break;
        case 'L':
            a->control_listen = optarg;
            a->control_listen_from = "--control-listen";
            break;
        case 'C': a->control = optarg; break;
        case 'M':
            a->metrics_listen = optarg;
            a->metrics_listen_from = "--metrics-listen";
            break;
        case 'n':
            a->state_ns = optarg, a->state_ns_from = "--state-namespace";
            break;
        case 'l':
            a->log_level = optarg, a->log_level_from = "--log-level";
            break;
        case 'g': grace = optarg, grace_from = "--stop-grace-ms"; break;
        case 't': a->takeover = 1; break;
        case 'j': a->json = 1; break;
        case 'R':
            if (parse_u64("--revision", optarg, &a->revision) != 0)
                return -1;
            a->have_revision = 1;
            break;
        case 'F':
            if (parse_u64("--from", optarg, &a->from) != 0)
                return -1;
            a->have_from = 1;
            break;
        case 'T':
            if (parse_u64("--to", optarg, &a->to) != 0)
                return -1;
            a->have_to = 1;
            break;
        case 'a': a->all = 1; break;
        case 'h': usage(stdout); return 1;
        case 'V': printf("reel-sink %s\n", REEL_VERSION); return 1;
        default:
            fprintf(stderr, "reel-sink: unknown or incomplete flag \"%s\" "
                    "(reel-sink --help)\n", argv[optind - 1]);
            return -1;
        }
    }
    while (optind < argc) {
        if (a->cmd == NULL)
            a->cmd = argv[optind++];
        else if (a->name == NULL)
            a->name = argv[optind++];
        else {
            fprintf(stderr, "reel-sink: unexpected argument \"%s\"\n",
                    argv[optind]);
            return -1;
        }
    }
    if (a->cmd == NULL)
        a->cmd = "run";
    if (strcmp(a->cmd, "run") != 0 && strcmp(a->cmd, "status") != 0 &&
        strcmp(a->cmd, "dead") != 0 && strcmp(a->cmd, "replay") != 0 &&
        strcmp(a->cmd, "enable") != 0 && strcmp(a->cmd, "check") != 0) {
        fprintf(stderr, "reel-sink: unknown command \"%s\" (run, status, "
                "dead, replay, enable, check)\n", a->cmd);
        return -1;
    }
    if (a->name != NULL && (strcmp(a->cmd, "run") == 0 ||
                            strcmp(a->cmd, "check") == 0)) {
        fprintf(stderr, "reel-sink: %s takes no sink name (\"%s\")\n",
                a->cmd, a->name);
        return -1;
    }
    if (a->name == NULL && (strcmp(a->cmd, "dead") == 0 ||
                            strcmp(a->cmd, "replay") == 0 ||
                            strcmp(a->cmd, "enable") == 0)) {
        fprintf(stderr, "reel-sink: %s needs a sink name\n", a->cmd);
        return -1;
    }
    if (strcmp(a->cmd, "replay") == 0 &&
        (a->all + a->have_revision + (a->have_from || a->have_to)) != 1) {
        fprintf(stderr, "reel-sink: replay takes one of --revision R, "
                "--from A --to B, --all\n");
        return -1;
    }
    if (a->have_from != a->have_to ||
        (a->have_from && a->from > a->to)) {
        fprintf(stderr, "reel-sink: --from and --to go together, with "
                "--from <= --to\n");
        return -1;
    }
    if (a->config == NULL) {
        fprintf(stderr, "reel-sink: --config FILE is required (or "
                "REEL_SINK_CONFIG)\n");
        return -1;
    }
    /* The records go to this KV namespace, which is one subject token. */
    {
        reel_status_t st = REEL_STATUS_INIT;

        if (reel_addr_check(a->reel_from, a->reel, "7878", 0, a->reel_checked,
                            sizeof(a->reel_checked), &st) != REEL_OK) {
            fprintf(stderr, "reel-sink: %s\n", reel_status_message(&st));
            reel_status_fini(&st);
            return -1;
        }
        a->reel = a->reel_checked;
    }
    if (reel_check_charset(a->state_ns_from, a->state_ns,
                           strlen(a->state_ns), 256, "A-Za-z0-9_:/-",
                           NULL) != REEL_OK) {
        fprintf(stderr, "reel-sink: %s: \"%s\" is not 1-256 bytes of "
                "[A-Za-z0-9_:/-] (a KV namespace)\n", a->state_ns_from,
                a->state_ns);
        return -1;
    }
    if (grace != NULL) {
        if (parse_u64_as(grace_from, "a number of milliseconds", grace,
                         &g) != 0)
            return -1;
        if (g > 3600000) {
            fprintf(stderr, "reel-sink: %s: %" PRIu64 " ms, at most 3600000 "
                    "(an hour)\n", grace_from, g);
            return -1;
        }
        a->grace_ms = (int64_t)g;
    } else {
        a->grace_ms = DEFAULT_GRACE_MS;
    }
    return 0;
}

/* ---- run ---------------------------------------------------------------------- */

static atomic_int fatal_seen;

static void on_fatal(void *arg) {
    (void)arg;
    atomic_store(&fatal_seen, 1);
    /* Wakes the main thread's sigtimedwait at once. */
    kill(getpid(), SIGUSR1);
}

static int cmd_run(const args_t *a, const sink_config_set_t *cfg,
                   reel_client_t *client) {
    sink_runner_t **runners = calloc(cfg->n, sizeof(*runners));
    sink_control_t *control = NULL;
    metrics_registry_t *reg = NULL;
    sink_metrics_t *metrics = NULL;
    metrics_http_t *http = NULL;
    reel_status_t st = REEL_STATUS_INIT;
    sink_runner_opts_t o = {0};
    sigset_t set;
    int rc = 0;

    if (runners == NULL) {
        REEL_ERROR("sink", "out of memory");
        return 1;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    o.state_ns = a->state_ns;
    o.grace_ms = a->grace_ms;
    o.takeover = a->takeover;
    o.on_fatal = on_fatal;
    for (size_t i = 0; i < cfg->n; i++) {
        if (sink_runner_create(&cfg->sinks[i], client, &o, &runners[i],
                               &st) != REEL_OK) {
            REEL_ERROR("sink", "%s", reel_status_message(&st));
            rc = 1;
            goto out;
        }
    }
    if (a->control_listen != NULL &&
        sink_control_start(a->control_listen, runners, cfg->n, &control,
                           &st) != REEL_OK) {
        const char *msg = reel_status_message(&st);
        size_t n = strlen("--control-listen");

        /* Its messages name --control-listen: the variable instead when
         * the address came from REEL_SINK_CONTROL_LISTEN. */
        if (strncmp(msg, "--control-listen", n) == 0)
            REEL_ERROR("sink", "%s%s", a->control_listen_from, msg + n);
        else
            REEL_ERROR("sink", "%s", msg);
        rc = EXIT_USAGE;
        goto out;
    }
    /* Before the runners start: their delivery histograms are set. */
    if (a->metrics_listen != NULL &&
        (metrics_registry_create(&reg, &st) != REEL_OK ||
         sink_metrics_create(reg, runners, cfg->n, client, &metrics, &st) !=
             REEL_OK)) {
        REEL_ERROR("sink", "%s", reel_status_message(&st));
        rc = 1;
        goto out;
    }
    if (a->metrics_listen != NULL &&
        metrics_http_start(a->metrics_listen_from, a->metrics_listen, reg,
                           sink_metrics_ready, metrics, &http, &st) !=
            REEL_OK) {
        REEL_ERROR("sink", "%s", reel_status_message(&st));
        rc = EXIT_USAGE;
        goto out;
    }
    if (http != NULL)
        REEL_INFO("sink", "metrics on %s (port %d)", a->metrics_listen,
                  metrics_http_port(http));
    REEL_INFO("sink", "reel-sink %s: %zu sink%s on reel %s%s%s", REEL_VERSION,
              cfg->n, cfg->n == 1 ? "" : "s", a->reel,
              control != NULL ? ", control on " : "",
              control != NULL ? a->control_listen : "");
    if (control != NULL && strcmp(strrchr(a->control_listen, ':'), ":0") == 0)
        REEL_INFO("sink", "control endpoint on port %d",
                  sink_control_port(control));
    for (size_t i = 0; i < cfg->n; i++) {
        if (sink_runner_start(runners[i], &st) != REEL_OK) {
            REEL_ERROR("sink", "%s", reel_status_message(&st));
            rc = 1;
            goto out;
        }
    }
    for (;;) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &ts);

        if (atomic_load(&fatal_seen)) {
            rc = 1;
            break;
        }
        if (sig == SIGHUP) { /* a closed terminal, or a "reload" */
            REEL_WARN("sink", "SIGHUP: reel-sink does not reload its "
                      "configuration (restart it to apply a change); "
                      "still running");
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            REEL_INFO("sink", "%s: finishing deliveries in flight (up to "
                      "%lld ms), then stopping",
                      sig == SIGTERM ? "SIGTERM" : "SIGINT",
                      (long long)a->grace_ms);
            break;
        }
    }
out:
    /* Every sink stops at once: their grace periods run side by side. */
    for (size_t i = 0; i < cfg->n; i++) {
        if (runners[i] != NULL && runners[i]->threads > 0) {
            pthread_mutex_lock(&runners[i]->mu);
            runners[i]->stopping = 1;
            runners[i]->stop_deadline_ms = sink_now_ms() + a->grace_ms;
            pthread_cond_broadcast(&runners[i]->room);
            pthread_mutex_unlock(&runners[i]->mu);
            runners[i]->ops->wake(runners[i]->engine);
        }
    }
    for (size_t i = 0; i < cfg->n; i++)
        sink_runner_stop(runners[i]);
    /* Scrapes read the runners: the endpoint goes before they do. */
    metrics_http_stop(http);
    sink_metrics_destroy(reg, metrics);
    metrics_registry_destroy(reg);
    sink_control_stop(control);
    for (size_t i = 0; i < cfg->n; i++)
        sink_runner_destroy(runners[i]);
    free(runners);
    reel_status_fini(&st);
    if (atomic_load(&fatal_seen))
        rc = 1;
    REEL_INFO("sink", "reel-sink stopped (exit %d)", rc);
    return rc;
}

/* ---- status --------------------------------------------------------------------- */

typedef struct counter {
    uint64_t n;
} counter_t;

static int count_one(void *arg, sink_dead_t *d) {
    (void)d;
    ((counter_t *)arg)->n++;
    return 0;
}

/* The consumers reel knows, by name. */
static Reel__V1__Consumer *find_consumer(Reel__V1__ListConsumersResponse **pages,
                                         size_t n, const char *name) {
    for (size_t p = 0; p < n; p++)
        for (size_t i = 0; i < pages[p]->n_consumers; i++)
            if (strcmp(pages[p]->consumers[i]->name, name) == 0)
                return pages[p]->consumers[i];
    return NULL;
}

/* An answer of at most 1 MiB, gathered by libcurl. */
typedef struct buf {
    char *p;
    size_t n;
} buf_t;

static size_t write_mem(char *data, size_t size, size_t n, void *arg) {
    buf_t *b = arg;
    size_t len = size * n;
    char *grown;

    if (b->n + len > (1u << 20) || (grown = realloc(b->p, b->n + len + 1)) ==
                                       NULL)
        return 0; /* libcurl then fails the transfer */
    memcpy(grown + b->n, data, len);
    b->p = grown;
    b->n += len;
    b->p[b->n] = '\0';
    return len;
}

/* The running reel-sink's live numbers, or NULL (why in *err). */
static cJSON *fetch_live(const char *control, char *err, size_t cap) {
    CURL *e = curl_easy_init();
    cJSON *o = NULL;
    buf_t b = {NULL, 0};
    char url[300];
    long status = 0;
    CURLcode cc;

    if (e == NULL) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    snprintf(url, sizeof(url), "http://%s/status", control);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_mem);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    cc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    if (cc == CURLE_OK && b.p != NULL)
        o = cJSON_Parse(b.p);
    free(b.p);
    if (cc != CURLE_OK || status != 200 || o == NULL) {
        snprintf(err, cap, "control endpoint %s: %s", control,
                 cc != CURLE_OK ? curl_easy_strerror(cc) : "a bad answer");
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *live_of(cJSON *live, const char *name) {
    cJSON *sinks = cJSON_GetObjectItemCaseSensitive(live, "sinks"), *s;

    cJSON_ArrayForEach(s, sinks) {
        cJSON *n = cJSON_GetObjectItemCaseSensitive(s, "name");

        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return s;
    }
    return NULL;
}

static double num_of(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static int cmd_status(const args_t *a, const sink_config_set_t *cfg,
                      reel_client_t *client) {
    Reel__V1__ListConsumersResponse **pages = NULL;
    Reel__V1__GetHeadResponse *head = NULL;
    size_t npages = 0;
    cJSON *live = NULL;
    char live_err[300] = "";
    char after[160] = "";
    reel_reply_t r;
    uint8_t buf[256];
    size_t len;
    int rc = 0, found = a->name == NULL;

    /* Head and consumers. */
    {
        Reel__V1__GetHeadRequest req = REEL__V1__GET_HEAD_REQUEST__INIT;

        len = reel__v1__get_head_request__pack(&req, buf);
        if (reel_client_unary_retry(client, "/reel.v1.Wal/GetHead", buf, len,
                                    0, &r) != 0) {
            char hint[512];

            fprintf(stderr, "reel-sink: GetHead: %s: %s\n",
                    reel_grpc_code_name(r.code), r.details ? r.details : "");
            if (reel_client_hint(client, r.code, r.details, 0, hint,
                                 sizeof(hint)) != NULL)
                fprintf(stderr, "reel-sink: %s\n", hint);
            reel_reply_fini(&r);
            return 1;
        }
        head = reel__v1__get_head_response__unpack(NULL, r.len, r.body);
        reel_reply_fini(&r);
    }
    for (;;) {
        Reel__V1__ListConsumersRequest req =
            REEL__V1__LIST_CONSUMERS_REQUEST__INIT;
        Reel__V1__ListConsumersResponse *p, **grown;

        req.start_after = after;
        len = reel__v1__list_consumers_request__pack(&req, buf);
        if (reel_client_unary_retry(client, "/reel.v1.Wal/ListConsumers", buf,
                                    len, 0, &r) != 0) {
            fprintf(stderr, "reel-sink: ListConsumers: %s: %s\n",
                    reel_grpc_code_name(r.code), r.details ? r.details : "");
            reel_reply_fini(&r);
            rc = 1;
            goto out;
        }
        p = reel__v1__list_consumers_response__unpack(NULL, r.len, r.body);
        reel_reply_fini(&r);
        if (p == NULL || (grown = realloc(pages, (npages + 1) *
                                                     sizeof(*pages))) == NULL) {
            reel__v1__list_consumers_response__free_unpacked(p, NULL);
            fprintf(stderr, "reel-sink: ListConsumers: a bad answer\n");
            rc = 1;
            goto out;
        }
        pages = grown;
        pages[npages++] = p;
        snprintf(after, sizeof(after), "%s", p->next_start_after);
        if (!p->more)
            break;
    }
    if (a->control != NULL)
        live = fetch_live(a->control, live_err, sizeof(live_err));
    for (size_t i = 0; i < cfg->n; i++) {
        const sink_config_t *s = &cfg->sinks[i];
        char cname[80];
        Reel__V1__Consumer *c;
        reel_status_t st = REEL_STATUS_INIT;
        counter_t dead = {0};
        int disabled = 0;
        char *reason = NULL;
        cJSON *l, *o;
        uint64_t acked, lag;
        int filtered;

        if (a->name != NULL && strcmp(a->name, s->name) != 0)
            continue;
        found = 1;
        snprintf(cname, sizeof(cname), "sink.%s", s->name);
        c = find_consumer(pages, npages, cname);
        if (sink_state_dead_list(client, a->state_ns, s->name, 0, UINT64_MAX,
                                 count_one, &dead, &st) != REEL_OK ||
            sink_state_disabled(client, a->state_ns, s->name, &disabled,
                                &reason, &st) != REEL_OK) {
            fprintf(stderr, "reel-sink: %s\n", reel_status_message(&st));
            reel_status_fini(&st);
            rc = 1;
            continue;
        }
        acked = c != NULL ? c->acked_revision : 0;
        lag = head != NULL && head->head_revision > acked
                  ? head->head_revision - acked
                  : 0;
        l = live != NULL ? live_of(live, s->name) : NULL;
        /* reel counts what matches the consumer's one pattern (all events
         * without one); the sink's excludes, its other patterns and its
         * own records in --state-namespace skip some of those: then the
         * count is an upper bound. */
        {
            char own[300];

            snprintf(own, sizeof(own), "kv.%s.x", a->state_ns);
            filtered = s->n_subjects != 1 || s->n_exclude > 0 ||
                       reel_pattern_match(s->subjects[0],
                                          strlen(s->subjects[0]), own,
                                          strlen(own));
        }
        if (a->json) {
            char *text;

            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", s->name);
            cJSON_AddStringToObject(o, "type", s->type == SINK_NATS
                                                   ? "nats"
                                                   : "webhook");
            cJSON_AddStringToObject(o, "consumer", cname);
            cJSON_AddBoolToObject(o, "consumer_exists", c != NULL);
            cJSON_AddNumberToObject(o, "cursor", (double)acked);
            cJSON_AddNumberToObject(o, "head",
                                    head ? (double)head->head_revision : 0);
            cJSON_AddNumberToObject(o, "lag", (double)lag);
            cJSON_AddNumberToObject(o, "pending", c ? (double)c->pending : 0);
            cJSON_AddBoolToObject(o, "pending_exact",
                                  c ? c->pending_exact && !filtered : 1);
            cJSON_AddBoolToObject(o, "pending_at_most", filtered);
            cJSON_AddBoolToObject(o, "active", c ? c->active : 0);
            cJSON_AddBoolToObject(o, "invalidated", c ? c->invalidated : 0);
            cJSON_AddBoolToObject(o, "disabled", disabled);
            if (disabled)
                cJSON_AddStringToObject(o, "disabled_reason",
                                        reason ? reason : "");
            cJSON_AddNumberToObject(o, "dead_letters", (double)dead.n);
            if (l != NULL)
                cJSON_AddItemToObject(o, "live", cJSON_Duplicate(l, 1));
            else if (a->control != NULL)
                cJSON_AddStringToObject(o, "live_error", live_err);
            text = cJSON_PrintUnformatted(o);
            if (text != NULL)
                printf("%s\n", text);
            free(text);
            cJSON_Delete(o);
        } else {
            printf("%s (%s): cursor %" PRIu64 " head %" PRIu64 " lag %" PRIu64
                   " (pending %s%" PRIu64 ")%s",
                   s->name, s->type == SINK_NATS ? "nats" : "webhook", acked,
                   head ? head->head_revision : 0, lag,
                   filtered ? "at most " : c && !c->pending_exact ? ">=" : "",
                   c ? c->pending : 0,
                   c == NULL ? " no consumer yet"
                   : c->invalidated ? " INVALIDATED"
                   : c->active ? " subscribed"
                               : " not subscribed");
            if (l != NULL) {
                cJSON *state = cJSON_GetObjectItemCaseSensitive(l, "state");
                cJSON *err = cJSON_GetObjectItemCaseSensitive(l, "last_error");

                /* A disabled sink is said once, below (DISABLED). */
                if (!(disabled && cJSON_IsString(state) &&
                      strcmp(state->valuestring, "disabled") == 0))
                    printf(", %s",
                           cJSON_IsString(state) ? state->valuestring : "?");
                printf(", in flight %.0f, failing %.0f",
                       num_of(l, "in_flight"), num_of(l, "failing"));
                if (num_of(l, "failing") > 0 && cJSON_IsString(err))
                    printf(" (last error: %s)", err->valuestring);
            } else if (a->control != NULL) {
                printf(", live numbers unavailable (%s)", live_err);
            }
            printf(", %s, dead letters %" PRIu64 "\n",
                   disabled ? "DISABLED" : "enabled", dead.n);
            if (disabled)
                printf("  disabled: %s (reel-sink enable %s)\n",
                       reason ? reason : "", s->name);
        }
        free(reason);
    }
    if (!found) {
        fprintf(stderr, "reel-sink: no sink \"%s\" in %s\n", a->name,
                a->config);
        rc = EXIT_USAGE;
    }
out:
    for (size_t p = 0; p < npages; p++)
        reel__v1__list_consumers_response__free_unpacked(pages[p], NULL);
    free(pages);
    reel__v1__get_head_response__free_unpacked(head, NULL);
    cJSON_Delete(live);
    return rc;
}

/* ---- dead, replay, enable ---------------------------------------------------------- */

static int print_dead(void *arg, sink_dead_t *d) {
    const args_t *a = arg;

    if (a->json) {
        cJSON *o = cJSON_CreateObject();
        char *text;

        cJSON_AddNumberToObject(o, "revision", (double)d->revision);
        cJSON_AddStringToObject(o, "subject", d->subject);
        cJSON_AddStringToObject(o, "type", sink_event_type_name(d->type));
        cJSON_AddNumberToObject(o, "attempts", d->attempts);
        cJSON_AddNumberToObject(o, "first_attempt_ms",
                                (double)d->first_attempt_ms);
        cJSON_AddNumberToObject(o, "last_attempt_ms",
                                (double)d->last_attempt_ms);
        cJSON_AddStringToObject(o, "last_error", d->last_error);
        text = cJSON_PrintUnformatted(o);
        if (text != NULL)
            printf("%s\n", text);
        free(text);
        cJSON_Delete(o);
    } else {
        printf("revision %" PRIu64 " %s: %u attempts, last error: %s\n",
               d->revision, d->subject, d->attempts, d->last_error);
    }
    return 0;
}

typedef struct replay {
    const args_t *a;
    const sink_config_t *cfg;
    reel_client_t *client;
    uint64_t *revs;
    size_t n, cap;
} replay_t;

static int collect(void *arg, sink_dead_t *d) {
    replay_t *rp = arg;

    if (rp->n == rp->cap) {
        size_t cap = rp->cap ? rp->cap * 2 : 64;
        uint64_t *v = realloc(rp->revs, cap * sizeof(*v));

        if (v == NULL)
            return 1;
        rp->revs = v;
        rp->cap = cap;
    }
    rp->revs[rp->n++] = d->revision;
    return 0;
}

static size_t discard(char *buf, size_t size, size_t n, void *arg) {
    (void)buf;
    (void)arg;
    return size * n;
}

/* Sends one dead letter's event as the sink would (evt_<revision>). 0 if
 * the receiver answered 2xx; else why in err. */
static int replay_one(const sink_config_t *cfg, const sink_dead_t *d,
                      char *err, size_t cap) {
    sink_item_t it = {0};
    CURL *e = NULL;
    struct curl_slist *h = NULL;
    char id[48], line[128], *body = NULL, *sig = NULL, *hs = NULL;
    size_t len;
    long status = 0;
    int64_t ts = sink_wall_ms() / 1000;
    CURLcode cc;
    int rc = -1;

    it.revision = d->revision;
    it.type = d->type;
    it.subject = d->subject;
    it.bytes = d->bytes;
    it.len = d->len;
    snprintf(id, sizeof(id), "evt_%" PRIu64, d->revision);
    if ((body = sink_event_body(&it, &len)) == NULL ||
        (sig = sink_sign(cfg->secrets, cfg->n_secrets, id, ts, body, len)) ==
            NULL ||
        (hs = malloc(strlen(sig) + 20)) == NULL ||
        (e = curl_easy_init()) == NULL) {
        snprintf(err, cap, "out of memory");
        goto out;
    }
    sprintf(hs, "webhook-signature: %s", sig);
    h = curl_slist_append(h, "Content-Type: application/json");
    snprintf(line, sizeof(line), "webhook-id: %s", id);
    h = curl_slist_append(h, line);
    snprintf(line, sizeof(line), "webhook-timestamp: %lld", (long long)ts);
    h = curl_slist_append(h, line);
    h = curl_slist_append(h, hs);
    h = curl_slist_append(h, "User-Agent: reel-sink/" REEL_VERSION);
    h = curl_slist_append(h, "Expect:");
    for (size_t i = 0; i < cfg->n_headers; i++)
        h = curl_slist_append(h, cfg->headers[i]);
    curl_easy_setopt(e, CURLOPT_URL, cfg->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)cfg->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    cc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK)
        snprintf(err, cap, "%s", curl_easy_strerror(cc));
    else if (status < 200 || status >= 300)
        snprintf(err, cap, "HTTP %ld", status);
    else
        rc = 0;
out:
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    free(hs);
    free(sig);
    free(body);
    return rc;
}

static int cmd_replay(const args_t *a, const sink_config_t *cfg,
                      reel_client_t *client) {
    replay_t rp = {a, cfg, client, NULL, 0, 0};
    reel_status_t st = REEL_STATUS_INIT;
    uint64_t from = 0, to = UINT64_MAX;
    size_t ok = 0, failed = 0;

    if (cfg->type != SINK_WEBHOOK) {
        fprintf(stderr, "reel-sink: replay: sink %s is a nats sink; only "
                "webhook sinks have dead letters\n", cfg->name);
        return EXIT_USAGE;
    }
    if (a->have_revision)
        from = to = a->revision;
    else if (a->have_from) {
        from = a->from;
        to = a->to;
    }
    /* The list first: replaying deletes from what a page would read. */
    if (sink_state_dead_list(client, a->state_ns, cfg->name, from, to,
                             collect, &rp, &st) != REEL_OK) {
        fprintf(stderr, "reel-sink: %s\n", reel_status_message(&st));
        reel_status_fini(&st);
        free(rp.revs);
        return 1;
    }
    if (rp.n == 0 && a->have_revision) {
        fprintf(stderr, "reel-sink: sink %s has no dead letter of revision "
                "%" PRIu64 "\n", cfg->name, a->revision);
        free(rp.revs);
        return 1;
    }
    for (size_t i = 0; i < rp.n; i++) {
        sink_dead_t d = {0};
        char err[256];

        d.revision = rp.revs[i];
        if (sink_state_dead_load(client, a->state_ns, cfg->name, &d, &st) !=
            REEL_OK) {
            fprintf(stderr, "reel-sink: %s\n", reel_status_message(&st));
            reel_status_fini(&st);
            failed++;
            continue;
        }
        if (replay_one(cfg, &d, err, sizeof(err)) != 0) {
            printf("revision %" PRIu64 ": not delivered: %s (kept)\n",
                   d.revision, err);
            failed++;
        } else if (sink_state_dead_delete(client, a->state_ns, cfg->name, &d,
                                          &st) != REEL_OK) {
            fprintf(stderr, "reel-sink: revision %" PRIu64 " delivered, but "
                    "%s\n", d.revision, reel_status_message(&st));
            reel_status_fini(&st);
            failed++;
        } else {
            printf("revision %" PRIu64 ": delivered (evt_%" PRIu64 "), "
                   "dead letter removed\n", d.revision, d.revision);
            ok++;
        }
        sink_dead_fini(&d);
    }
    printf("replayed %zu of %zu dead letters of sink %s\n", ok, rp.n,
           cfg->name);
    free(rp.revs);
    return failed > 0 ? 1 : 0;
}

static int cmd_enable(const args_t *a, const sink_config_t *cfg,
                      reel_client_t *client) {
    reel_status_t st = REEL_STATUS_INIT;
    int was = 0;

    if (sink_state_enable(client, a->state_ns, cfg->name, &was, &st) !=
        REEL_OK) {
        fprintf(stderr, "reel-sink: %s\n", reel_status_message(&st));
        reel_status_fini(&st);
        return 1;
    }
    printf(was ? "sink %s enabled: a running reel-sink resumes within a "
                 "second\n"
               : "sink %s was not disabled\n",
           cfg->name);
    return 0;
}

int main(int argc, char **argv) {
    args_t a;
    sink_config_set_t cfg = {0};
    reel_status_t st = REEL_STATUS_INIT;
    reel_client_t *client = NULL;
    reel_client_opts_t copts = REEL_CLIENT_OPTS_INIT;
    reel_reply_t err = {0};
    reel_log_level_t level;
    const sink_config_t *one = NULL;
    sigset_t set;
    int rc;

    /* Signals are taken by the main thread only (cmd_run's sigwait), and
     * blocked first of all, so a SIGTERM that comes while reel-sink is
     * still starting is a clean stop too, not a death by the default
     * action. The other commands are short: they take them as usual. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sink_event_init();
    if ((rc = parse_args(argc, argv, &a)) != 0)
        return rc > 0 ? 0 : EXIT_USAGE;
    if (strcmp(a.cmd, "run") != 0)
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    if (reel_log_parse_level(a.log_level, &level) != 0) {
        fprintf(stderr, "reel-sink: %s: \"%s\" is not debug, info, warn "
                "or error\n", a.log_level_from, a.log_level);
        return EXIT_USAGE;
    }
    reel_log_set_level(level);
    if (sink_config_load(a.config, &cfg, &st) != REEL_OK) {
        fprintf(stderr, "reel-sink: %s\n", reel_status_message(&st));
        reel_status_fini(&st);
        return EXIT_USAGE;
    }
    if (strcmp(a.cmd, "check") == 0) {
        printf("%s: %zu sink%s, valid\n", a.config, cfg.n,
               cfg.n == 1 ? "" : "s");
        sink_config_set_fini(&cfg);
        return 0;
    }
    if (strcmp(a.cmd, "run") == 0 &&
        sink_config_check_open_files(&cfg, reel_raise_open_files(), &st) !=
            REEL_OK) {
        fprintf(stderr, "reel-sink: %s\n", reel_status_message(&st));
        reel_status_fini(&st);
        sink_config_set_fini(&cfg);
        return EXIT_USAGE;
    }
    if (a.name != NULL && strcmp(a.cmd, "status") != 0 &&
        (one = sink_config_find(&cfg, a.name)) == NULL) {
        fprintf(stderr, "reel-sink: no sink \"%s\" in %s\n", a.name,
                a.config);
        sink_config_set_fini(&cfg);
        return EXIT_USAGE;
    }
    /* SIGPIPE is for nobody: a closed socket is an error return. */
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* A sink (or a standby) comes back within 2 s of reel. */
    copts.backoff_max_ms = 2000;
    /* A stalled sink's stream waits unread (sink.h): what gRPC takes in
     * for it meanwhile is bounded by a fixed window, not by the
     * connection's bandwidth-delay product. */
    copts.stream_window_bytes = SINK_STREAM_WINDOW_BYTES;
    /* gRPC's own lines in reel's log (the client library leaves the
     * process's log function alone). */
    reel_grpc_init();
    if (reel_client_opts_from_env(&copts, &err) != 0 || /* reelctl's */
        reel_client_create(a.reel, &copts, &client, &err) != 0) {
        char named[1024];

        fprintf(stderr, "reel-sink: connecting to reel: %s\n",
                reel_client_option_names(err.details, 0, named,
                                         sizeof(named)));
        reel_reply_fini(&err);
        sink_config_set_fini(&cfg);
        grpc_shutdown();
        return EXIT_USAGE;
    }
    if (strcmp(a.cmd, "run") == 0)
        rc = cmd_run(&a, &cfg, client);
    else if (strcmp(a.cmd, "status") == 0)
        rc = cmd_status(&a, &cfg, client);
    else if (strcmp(a.cmd, "dead") == 0) {
        if (sink_state_dead_list(client, a.state_ns, one->name, 0, UINT64_MAX,
                                 print_dead, &a, &st) != REEL_OK) {
            fprintf(stderr, "reel-sink: %s\n", reel_status_message(&st));
            reel_status_fini(&st);
            rc = 1;
        }
    } else if (strcmp(a.cmd, "replay") == 0)
        rc = cmd_replay(&a, one, client);
    else
        rc = cmd_enable(&a, one, client);
    reel_client_destroy(client);
    grpc_shutdown();
    curl_global_cleanup();
    sink_config_set_fini(&cfg);
    return rc;
}
