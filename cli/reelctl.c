/*
 * cli/reelctl.c: reel's command-line client.
 *
 *   reelctl [--addr HOST[:PORT]] [--timeout DURATION] [--json] COMMAND [ARGS]
 *           [--tls] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]
 *           [--token TOKEN]
 *   reelctl help [COMMAND [SUBCOMMAND]], or --help anywhere on the line
 *   reelctl kv set|get|del|ls|history|watch ...
 *   reelctl ws put|get|stat|ls|rm|watch ...
 *   reelctl run begin|get|ls|heartbeat|suspend|end|claim|recoverable ...
 *   reelctl journal append|read|follow ...
 *   reelctl signal send|await|ls|cancel ...
 *   reelctl events tail|head|consumers|rm-consumer|ack ...
 *   reelctl token create|ls|revoke ...
 *
 * This file holds main, the global flags, the top-level commands (health,
 * status, help) and the help text; each command group lives in its own
 * cmd_<group>.c, and what they share is in ctl.h.
 *
 * Global flags may appear anywhere on the line. Exit status: 0 on success,
 * 1 when the server answered with an error (or is unreachable, or not
 * serving, or signal await got no signal, or a file named on the line
 * cannot be read), 2 for a usage error.
 *
 * SIGPIPE is ignored: a write to a pipe whose reader left fails with
 * EPIPE instead of killing reelctl, so a stream (`events tail | head -1`)
 * ends quietly with exit 0 after what it owes (a last ack), and any other
 * write error is said and is exit 1.
 */
#include <signal.h>
#include <stddef.h>
#include <time.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <grpc/grpc.h>

#include "grpc/health/v1/health.pb-c.h"
#include "reel/v1/admin.pb-c.h"
#include "api/grpc_init.h"
#include "base/version.h"
#include "client/client.h"
#include "cli/ctl.h"

/* A top-level command: its own function, or a group of subcommands. */
typedef struct command {
    const char *name;
    const char *args;
    const char *help;
    int (*run)(ctl_t *ctl, int argc, char **argv);
    const ctl_group_t *group;
} command_t;

static const command_t commands[];

/* ---- Helpers ------------------------------------------------------------ */

static int no_args(const char *cmd, int argc, char **argv) {
    if (argc > 1) {
        fprintf(stderr, "reelctl %s: unexpected argument \"%s\"\n", cmd,
                argv[1]);
        return -1;
    }
    return 0;
}

/* ---- Commands ----------------------------------------------------------- */

static int cmd_health(ctl_t *ctl, int argc, char **argv) {
    Grpc__Health__V1__HealthCheckRequest req =
        GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp;
    const char *status;
    int rc;

    if (argc > 2) {
        fprintf(stderr, "reelctl health: unexpected argument \"%s\"\n",
                argv[2]);
        return EXIT_USAGE;
    }
    req.service = argc == 2 ? argv[1] : "";
    if (strlen(req.service) > 256) {
        fprintf(stderr, "reelctl health: service: at most 256 bytes\n");
        return EXIT_USAGE;
    }
    resp = ctl_unary(ctl, "health", "/grpc.health.v1.Health/Check", &req,
                     &grpc__health__v1__health_check_response__descriptor,
                     &rc);
    if (resp == NULL)
        return rc;
    switch (resp->status) {
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING:
        status = "SERVING";
        break;
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING:
        status = "NOT_SERVING";
        break;
    default:
        status = "UNKNOWN";
    }
    rc = resp->status ==
                 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
             ? EXIT_OK
             : EXIT_FAIL;
    grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "status", status);
        ctl_print_json_line(o);
    } else {
        printf("%s\n", status);
    }
    return rc;
}

/* Rates over this long unless --interval says otherwise. */
#define STATUS_INTERVAL_MS 1000
/* The longest --interval: a rate is not read over hours. */
#define STATUS_INTERVAL_MAX_MS (60 * 60 * 1000)

/* (now - then) per second over seconds; 0 when no time passed. */
static double per_s(uint64_t now, uint64_t then, double seconds) {
    return seconds > 0 && now >= then ? (double)(now - then) / seconds : 0;
}

/*
 * status [--interval D]: two readings D apart give the rates (commits/s,
 * the mean group size and commit time over D); with 0, one reading and
 * the figures since reeld started.
 */
static int cmd_status(ctl_t *ctl, int argc, char **argv) {
    Reel__V1__GetStatusRequest req = REEL__V1__GET_STATUS_REQUEST__INIT;
    Reel__V1__GetStatusResponse *a = NULL, *s;
    int64_t interval_ms = STATUS_INTERVAL_MS;
    uint64_t commits, requests;
    double seconds, commit_s;
    int rc;

    if (argc == 2 && strcmp(argv[1], "--interval") == 0) {
        fprintf(stderr, "reelctl status: --interval needs a value (0, "
                        "500ms, 2s, 1m)\n");
        return EXIT_USAGE;
    }
    if (argc == 3 && strcmp(argv[1], "--interval") == 0) {
        interval_ms = ctl_parse_duration_ms(argv[2]);
        if ((interval_ms < 0 && strcmp(argv[2], "0") != 0) ||
            interval_ms > STATUS_INTERVAL_MAX_MS) {
            fprintf(stderr,
                    "reelctl status: --interval: \"%s\" is not a duration "
                    "of 0 to 1h (0, 500ms, 2s, 1m)\n",
                    argv[2]);
            return EXIT_USAGE;
        }
        if (strcmp(argv[2], "0") == 0)
            interval_ms = 0;
        argc -= 2;
    }
    if (no_args("status", argc, argv) != 0)
        return EXIT_USAGE;
    if (interval_ms > 0) {
        struct timespec ts = {interval_ms / 1000,
                              (interval_ms % 1000) * 1000000L};

        a = ctl_unary(ctl, "status", "/reel.v1.Admin/GetStatus", &req,
                      &reel__v1__get_status_response__descriptor, &rc);
        if (a == NULL)
            return rc;
        nanosleep(&ts, NULL);
    }
    s = ctl_unary(ctl, "status", "/reel.v1.Admin/GetStatus", &req,
                  &reel__v1__get_status_response__descriptor, &rc);
    if (s == NULL) {
        if (a != NULL)
            reel__v1__get_status_response__free_unpacked(a, NULL);
        return rc;
    }
    /* Over the interval, or since start. */
    seconds = (double)(a ? s->uptime_ms - a->uptime_ms : s->uptime_ms) / 1000;
    commits = s->commits - (a ? a->commits : 0);
    requests = s->commit_requests - (a ? a->commit_requests : 0);
    commit_s = s->commit_seconds - (a ? a->commit_seconds : 0);
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON *cs = cJSON_CreateArray();

        cJSON_AddStringToObject(o, "version", s->version);
        cJSON_AddNumberToObject(o, "format_version", s->format_version);
        cJSON_AddNumberToObject(o, "revision", (double)s->revision);
        /* Shown to an admin token only (an empty data dir): left out,
         * not zeros a script would read as "no space, no connections". */
        if (*s->data_dir != '\0')
            cJSON_AddStringToObject(o, "data_dir", s->data_dir);
        cJSON_AddNumberToObject(o, "started_at_ms", (double)s->started_at_ms);
        cJSON_AddNumberToObject(o, "uptime_ms", (double)s->uptime_ms);
        cJSON_AddBoolToObject(o, "writable", s->writable);
        if (*s->data_dir != '\0') {
            cJSON_AddNumberToObject(o, "disk_free_bytes",
                                    (double)s->disk_free_bytes);
            cJSON_AddBoolToObject(o, "disk_low", s->disk_low);
            cJSON_AddNumberToObject(o, "connections", (double)s->connections);
            cJSON_AddNumberToObject(o, "max_connections",
                                    (double)s->max_connections);
        }
        if (!s->writable)
            cJSON_AddStringToObject(o, "write_error", s->write_error);
        cJSON_AddNumberToObject(o, "interval_ms", (double)interval_ms);
        cJSON_AddNumberToObject(o, "commits", (double)s->commits);
        cJSON_AddNumberToObject(o, "commits_per_s",
                                per_s(commits, 0, seconds));
        cJSON_AddNumberToObject(o, "mean_group_size",
                                commits ? (double)requests / commits : 0);
        cJSON_AddNumberToObject(o, "mean_commit_ms",
                                commits ? commit_s * 1000 / commits : 0);
        cJSON_AddNumberToObject(o, "write_queue_depth",
                                (double)s->write_queue_depth);
        /* Admin's only, as the connections: left out for other tokens. */
        if (*s->data_dir != '\0') {
            cJSON_AddNumberToObject(o, "kv_watchers",
                                    (double)s->kv_watchers);
            cJSON_AddNumberToObject(o, "run_subscribers",
                                    (double)s->run_subscribers);
            cJSON_AddNumberToObject(o, "wal_subscribers",
                                    (double)s->wal_subscribers);
        }
        cJSON_AddNumberToObject(o, "wal_oldest_revision",
                                (double)s->wal_oldest_revision);
        cJSON_AddNumberToObject(o, "wal_bytes", (double)s->wal_bytes);
        if (*s->data_dir != '\0')
            cJSON_AddNumberToObject(o, "open_calls", (double)s->open_calls);
        cJSON_AddNumberToObject(o, "signal_max_wait_ms",
                                (double)s->signal_max_wait_ms);
        cJSON_AddNumberToObject(o, "consumer_count",
                                (double)s->consumer_count);
        for (size_t i = 0; i < s->n_consumers; i++) {
            cJSON *c = cJSON_CreateObject();

            cJSON_AddStringToObject(c, "name", s->consumers[i]->name);
            cJSON_AddNumberToObject(c, "acked_revision",
                                    (double)s->consumers[i]->acked_revision);
            cJSON_AddNumberToObject(c, "lag", (double)s->consumers[i]->lag);
            cJSON_AddBoolToObject(c, "invalidated",
                                  s->consumers[i]->invalidated);
            cJSON_AddItemToArray(cs, c);
        }
        cJSON_AddItemToObject(o, "consumers", cs);
        ctl_print_json_line(o);
    } else {
        printf("version:      %s\n", s->version);
        printf("format:       %u\n", s->format_version);
        printf("revision:     %llu\n", (unsigned long long)s->revision);
        if (*s->data_dir != '\0')
            printf("data dir:     %s\n", s->data_dir);
        printf("uptime:       %.1fs\n", (double)s->uptime_ms / 1000.0);
        printf("writable:     %s%s%s\n", s->writable ? "yes" : "no",
               s->writable ? "" : ": ", s->writable ? "" : s->write_error);
        if (s->disk_free_bytes > 0 || s->disk_low)
            printf("disk:         %.1f MiB free%s\n",
                   (double)s->disk_free_bytes / (1 << 20),
                   s->disk_low ? ", below --min-free-disk-bytes: writes "
                                 "that add data are refused"
                               : "");
        if (s->max_connections > 0)
            printf("connections:  %llu of at most %llu\n",
                   (unsigned long long)s->connections,
                   (unsigned long long)s->max_connections);
        printf("commits/s:    %.1f (%s)\n", per_s(commits, 0, seconds),
               a ? "over the interval" : "since start");
        printf("group size:   %.1f requests on average\n",
               commits ? (double)requests / commits : 0);
        printf("commit time:  %.3f ms on average\n",
               commits ? commit_s * 1000 / commits : 0);
        printf("write queue:  %llu\n",
               (unsigned long long)s->write_queue_depth);
        if (*s->data_dir != '\0') {
            printf("watchers:     %llu KV, %llu runs\n",
                   (unsigned long long)s->kv_watchers,
                   (unsigned long long)s->run_subscribers);
            printf("subscribers:  %llu\n",
                   (unsigned long long)s->wal_subscribers);
            printf("open calls:   %llu\n", (unsigned long long)s->open_calls);
        }
        printf("signal wait:  at most %.3gs\n",
               (double)s->signal_max_wait_ms / 1000.0);
        printf("WAL:          oldest revision %llu, %llu bytes\n",
               (unsigned long long)s->wal_oldest_revision,
               (unsigned long long)s->wal_bytes);
        printf("consumers:    %llu%s\n",
               (unsigned long long)s->consumer_count,
               s->n_consumers < s->consumer_count ? " (furthest behind shown)"
                                                 : "");
        for (size_t i = 0; i < s->n_consumers; i++)
            printf("  %-24s lag %llu (acked %llu)%s\n", s->consumers[i]->name,
                   (unsigned long long)s->consumers[i]->lag,
                   (unsigned long long)s->consumers[i]->acked_revision,
                   s->consumers[i]->invalidated ? ", invalidated" : "");
    }
    rc = s->writable ? EXIT_OK : EXIT_FAIL;
    reel__v1__get_status_response__free_unpacked(s, NULL);
    if (a != NULL)
        reel__v1__get_status_response__free_unpacked(a, NULL);
    return rc;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: reelctl [--addr HOST[:PORT]] [--timeout DURATION] [--json] "
            "COMMAND [ARGS]\n"
            "       reelctl help [COMMAND [SUBCOMMAND]]   (or --help after "
            "them)\n\n"
            "commands:\n");
    for (const command_t *c = commands; c->name != NULL; c++)
        fprintf(out, "  %-8s %-12s %s\n", c->name, c->args, c->help);
    for (const command_t *c = commands; c->name != NULL; c++)
        if (c->group != NULL)
            ctl_group_usage(c->group, out);
    fprintf(out,
            "\nflags (anywhere on the line):\n"
            "  --addr HOST[:PORT]   server address [REEL_ADDR] (default "
            "127.0.0.1:7878;\n"
            "                       a host alone means port "
            CTL_DEFAULT_PORT ")\n"
            "  --timeout DURATION   per-call deadline, and a connection "
            "attempt's: 500ms,\n"
            "                       5s, 1m, 1h (default 5s)\n"
            "  --json               print JSON instead of text\n"
            "  --tls                connect with TLS, trusting the system's "
            "roots [REEL_TLS=1]\n"
            "  --tls-ca FILE        connect with TLS, trusting this CA's PEM "
            "[REEL_TLS_CA]\n"
            "  --tls-cert FILE      client certificate for mTLS, with "
            "--tls-key [REEL_TLS_CERT]\n"
            "  --tls-key FILE       its private key [REEL_TLS_KEY]\n"
            "  --token TOKEN        bearer token for reeld --auth token "
            "[REEL_TOKEN;\n"
            "                       prefer the variable: a flag shows in "
            "ps]\n"
            "  -h, --help           show this help, or a command's\n"
            "  -V, --version        show the version (before the command: "
            "after it,\n"
            "                       ws get's and ws stat's --version N)\n"
            "\nvalues: JSON text on the line, or - (standard input) or @FILE;"
            "\nstored JSON is printed byte for byte, each on one line.\n"
            "durations: 250ms, 30s, 5m, 2h, 1d, or plain seconds (as reeld).\n"
            "times (--at): ms since 1970, or RFC 3339 with a zone "
            "(2026-06-01T09:00:00Z).\n"
            "\nexit status: 0 success, 1 the server answered with an error "
            "or is unreachable (or signal await got none, or a file named "
            "on the line cannot be read), 2 usage error\n");
}

/*
 * "help [COMMAND [SUBCOMMAND]]" (argv[0] is "help"), and --help after a
 * command: argv is then the command line with --help taken out.
 */
static int cmd_help(ctl_t *ctl, int argc, char **argv) {
    (void)ctl;
    if (argc < 2) {
        usage(stdout);
        return EXIT_OK;
    }
    for (const command_t *c = commands; c->name != NULL; c++) {
        if (strcmp(argv[1], c->name) != 0)
            continue;
        if (c->group != NULL)
            return ctl_group_help(c->group, argc - 1, argv + 1, stdout);
        if (argc > 2) {
            fprintf(stderr, "reelctl help: %s has no subcommands\n", c->name);
            return EXIT_USAGE;
        }
        printf("usage: reelctl [GLOBAL FLAGS] %s%s%s\n\n      %s\n", c->name,
               *c->args ? " " : "", c->args, c->help);
        return EXIT_OK;
    }
    fprintf(stderr, "reelctl help: unknown command \"%s\" (try reelctl help)\n",
            argv[1]);
    return EXIT_USAGE;
}

static const command_t commands[] = {
    {"health", "[SERVICE]", "check the server's health (exit 0 when SERVING)",
     cmd_health, NULL},
    {"status", "[--interval D]",
     "show the server's version, revision, writer, watchers, WAL and "
     "consumers' lag (rates over D, default 1s; 0: since start)",
     cmd_status, NULL},
    {"kv", "SUBCOMMAND", "versioned key-value state (subcommands below)",
     NULL, &ctl_kv_group},
    {"run", "SUBCOMMAND",
     "runs, each leased to one worker at a time (subcommands below)", NULL,
     &ctl_run_group},
    {"journal", "SUBCOMMAND",
     "a run's append-only journal (subcommands below)", NULL,
     &ctl_journal_group},
    {"signal", "SUBCOMMAND",
     "durable messages to a run, each consumed once (subcommands below)",
     NULL, &ctl_signal_group},
    {"events", "SUBCOMMAND",
     "every committed change, once, in commit order (subcommands below)",
     NULL, &ctl_events_group},
    {"token", "SUBCOMMAND",
     "bearer tokens for reeld --auth token (subcommands below)", NULL,
     &ctl_token_group},
    {"ws", "SUBCOMMAND",
     "binary artifacts, streamed in chunks (subcommands below)", NULL,
     &ctl_ws_group},
    {"help", "[CMD [SUB]]", "show this help, or a command's", cmd_help, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/*
 * Takes the global flags out of argv wherever they are, leaving the command
 * and its own arguments in order. Returns the new argc, or -1.
 */
/* The global flags that take a value (besides --addr and --timeout) and
 * where each goes in the client's options. */
static const struct {
    const char *name;
    size_t off;
} value_flags[] = {
    {"--tls-ca", offsetof(reel_client_opts_t, tls_ca_file)},
    {"--tls-cert", offsetof(reel_client_opts_t, tls_cert_file)},
    {"--tls-key", offsetof(reel_client_opts_t, tls_key_file)},
    {"--token", offsetof(reel_client_opts_t, token)},
};

static int take_global_flags(ctl_t *ctl, reel_client_opts_t *co, int argc,
                             char **argv) {
    int out = 1, command = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        size_t flen = 0;

        if (strcmp(a, "--") == 0) {
            while (i < argc)
                argv[out++] = argv[i++];
            break;
        }
        if (strcmp(a, "--json") == 0) {
            ctl->json = 1;
            continue;
        }
        if (strcmp(a, "--tls") == 0) {
            co->tls = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            ctl->help = 1;
            continue;
        }
        /* Before the command, reelctl's own version; after it, the
         * command's flag (ws get and ws stat take --version N). */
        if (!command && (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0)) {
            printf("reelctl %s\n", REEL_VERSION);
            exit(EXIT_OK);
        }
        if (strncmp(a, "--addr", 6) == 0 && (a[6] == '\0' || a[6] == '='))
            flen = 6;
        else if (strncmp(a, "--timeout", 9) == 0 &&
                 (a[9] == '\0' || a[9] == '='))
            flen = 9;
        for (size_t k = 0; flen == 0 && k < sizeof(value_flags) /
                                                sizeof(*value_flags); k++) {
            size_t n = strlen(value_flags[k].name);

            if (strncmp(a, value_flags[k].name, n) == 0 &&
                (a[n] == '\0' || a[n] == '=')) {
                if (a[n] == '=')
                    val = a + n + 1;
                else if (i + 1 < argc)
                    val = argv[++i];
                else {
                    fprintf(stderr, "reelctl: %s needs a value\n", a);
                    return -1;
                }
                memcpy((char *)co + value_flags[k].off, &val, sizeof(val));
                flen = (size_t)-1;
            }
        }
        if (flen == (size_t)-1)
            continue;
        if (flen == 0) {
            if (a[0] != '-')
                command = 1;
            argv[out++] = argv[i];
            continue;
        }
        if (a[flen] == '=')
            val = a + flen + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            fprintf(stderr, "reelctl: %.*s needs a value\n", (int)flen, a);
            return -1;
        }
        if (flen == 6) {
            ctl->addr = val;
        } else if ((ctl->timeout_ms = ctl_parse_duration_ms(val)) <= 0) {
            fprintf(stderr,
                    "reelctl: --timeout: \"%s\" is not a positive duration "
                    "(e.g. 500ms, 5s, 1m)\n",
                    val);
            return -1;
        }
    }
    argv[out] = NULL;
    return out;
}

/*
 * What main returns once the command ran: its status, unless stdout could
 * not be written (said; exit 1). A reader that left is not an error.
 */
static int finish_output(int rc) {
    if (rc != EXIT_OK) {
        fflush(stdout); /* the failure, if any, was said already */
        return rc;
    }
    return ctl_flush() < 0 ? EXIT_FAIL : rc;
}

int main(int argc, char **argv) {
    const char *addr;
    char *target = NULL;
    reel_reply_t err;
    ctl_t ctl = {0};
    reel_client_opts_t co = REEL_CLIENT_OPTS_INIT;
    int rc = EXIT_USAGE;

    signal(SIGPIPE, SIG_IGN);
    addr = getenv("REEL_ADDR") ? getenv("REEL_ADDR") : "127.0.0.1:7878";
    ctl.addr = addr;
    ctl.timeout_ms = 5000;
    /* The variables first: a flag wins. */
    if (reel_client_opts_from_env(&co, &err) != 0) {
        fprintf(stderr, "reelctl: %s\n", err.details ? err.details : "");
        reel_reply_fini(&err);
        return EXIT_USAGE;
    }
    argc = take_global_flags(&ctl, &co, argc, argv);
    if (argc < 0)
        return EXIT_USAGE;
    /* A connection attempt is bounded by --timeout too: a stream has no
     * deadline, and a port that never answers must not hold it 20 s. */
    co.connect_timeout_ms = ctl.timeout_ms < 100 ? 100 : ctl.timeout_ms;
    if (ctl.help || (argc >= 2 && strcmp(argv[1], "help") == 0)) {
        /* "reelctl kv set --help" is "reelctl help kv set". */
        if (ctl.help && argc >= 2 && strcmp(argv[1], "help") != 0)
            rc = cmd_help(&ctl, argc, argv);
        else
            rc = cmd_help(&ctl, argc - 1, argv + 1);
        return finish_output(rc);
    }
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    for (const command_t *c = commands; c->name != NULL; c++) {
        if (strcmp(argv[1], c->name) != 0)
            continue;
        target = ctl_resolve_addr(ctl.addr == addr && getenv("REEL_ADDR")
                                      ? "REEL_ADDR"
                                      : "--addr",
                                  ctl.addr);
        if (target == NULL)
            return EXIT_USAGE;
        ctl.addr = target;
        /* gRPC's own lines in reel's log format (the client library
         * leaves the process's log function alone). */
        reel_grpc_init();
        if (reel_client_create(ctl.addr, &co, &ctl.client, &err) != 0) {
            char named[1024];

            /* An option's shape is a usage error, as --timeout's is; a
             * file that cannot be read or used is not (README). */
            rc = err.details != NULL &&
                         (strncmp(err.details, "token:", 6) == 0 ||
                          strstr(err.details, " go together") != NULL)
                     ? EXIT_USAGE
                     : EXIT_FAIL;
            fprintf(stderr, "reelctl: %s\n",
                    err.details ? reel_client_option_names(err.details, 1,
                                                           named,
                                                           sizeof(named))
                                : "out of memory");
            reel_reply_fini(&err);
            free(target);
            grpc_shutdown();
            return rc;
        }
        if (c->group != NULL)
            rc = ctl_group_main(&ctl, c->group, argc - 1, argv + 1);
        else
            rc = c->run(&ctl, argc - 1, argv + 1);
        reel_client_destroy(ctl.client);
        grpc_shutdown();
        free(target);
        return finish_output(rc);
    }
    if (argv[1][0] == '-')
        fprintf(stderr,
                "reelctl: unknown flag \"%s\" before the command (a "
                "subcommand's flags go after it: reelctl kv get NS KEY -q; "
                "try reelctl help)\n",
                argv[1]);
    else
        fprintf(stderr, "reelctl: unknown command \"%s\" (try reelctl help)\n",
                argv[1]);
    return EXIT_USAGE;
}
