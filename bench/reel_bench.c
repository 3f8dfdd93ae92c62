/*
 * bench/reel_bench.c: reel-bench, load and latency for reeld (and etcd).
 *
 *   reel-bench set|append|watch|signal|tail|memory|restart|recovery|
 *              timers|dispatch|ws [options]
 *   reel-bench smoke --reeld PATH --data-dir DIR [--addr A]
 *
 * Each subcommand prints a table on stdout and, with --json FILE, writes
 * the same figures for bench/report.py. `smoke` runs every subcommand for a
 * moment against a reeld it starts itself, so CI keeps the tool working.
 */
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/version.h"
#include "bench/bench.h"

static void usage(FILE *f) {
    fprintf(f,
        "usage: reel-bench COMMAND [options]\n"
        "\n"
        "commands:\n"
        "  set      durable SetValue (or etcd Put) of distinct keys\n"
        "  get      GetValue of missing keys: a call that writes nothing\n"
        "  append   durable journal Append over --runs runs\n"
        "  watch    N watchers on one key + one pattern watcher: push latency\n"
        "  signal   AwaitSignal wake-up latency after SendSignal\n"
        "  tail     one SubscribeEvents from revision 0: events/s; then batched\n"
        "  memory   reeld RSS per idle watcher; RSS with stalled subscribers\n"
        "  restart  time from start to serving with --keys and --entries\n"
        "  recovery lease expiry to the run claimed by a ClaimNextRun waiter\n"
        "  timers   delayed signals' lateness with --timers scheduled, due\n"
        "           at --rate a second; RSS per timer (with --pid)\n"
        "  dispatch --workers in ClaimNextRun taking --claim-runs runs\n"
        "  ws       artifact upload and download MB/s per --sizes; with --pid,\n"
        "           reeld's RSS while the largest goes to a slow reader\n"
        "  smoke    every command for a moment, on a reeld it starts\n"
        "\n"
        "options:\n"
        "  --addr HOST:PORT      server (default 127.0.0.1:7878)\n"
        "  --target reel|etcd    set and watch also drive etcd (default reel)\n"
        "  --tls-ca FILE         connect with TLS trusting this CA (reel)\n"
        "  --token TOKEN         bearer token on every call (plaintext\n"
        "                        without --tls-ca) [REEL_TOKEN, read only\n"
        "                        with --tls-ca]\n"
        "  --duration S          seconds per point (default 10)\n"
        "  --concurrency LIST    requests in flight (default 1,8,64,256)\n"
        "  --value-bytes N       value size (default 256)\n"
        "  --connections N       client connections (default 4)\n"
        "  --threads N           client poller threads (default 2)\n"
        "  --json FILE           also write the figures as JSON\n"
        "  --watchers LIST       watch: watchers per point (default "
        "1,100,1000,10000)\n"
        "  --rate N              watch: writes/s (default 1000)\n"
        "  --fanout-cap N        watch: lower the rate so writes x watchers\n"
        "                        stays under N deliveries/s (default 1000000)\n"
        "  --pattern-keys N      watch: keys under the `>` watcher (default "
        "10000; 0 = none)\n"
        "  --batched             watch: KV.WatchValueBatches streams (events\n"
        "                        batched) instead of KV.WatchValue\n"
        "  --shared N            watch: N watchers to a stream (default 0: a\n"
        "                        stream each). reel: KV.WatchValues (with\n"
        "                        --batched, WatchValuesBatches) coalesced; etcd:\n"
        "                        N create requests on one Watch stream\n"
        "  --runs N              append: runs (default 64)\n"
        "  --events N            tail: events stored first (default 1000000)\n"
        "  --pid PID             the server's pid. memory: reeld's, for its RSS;\n"
        "                        set, get, append: reeld's or etcd's, for the\n"
        "                        server's CPU per operation\n"
        "  --idle-watchers N     memory (default 10000)\n"
        "  --subscribers N       memory: stalled subscribers (default 100)\n"
        "  --per-stream N        memory: watches per KV.WatchValues stream, for\n"
        "                        the shared-stream row (default 1000)\n"
        "  --writes N            memory: writes meanwhile (default 100000)\n"
        "  --reeld PATH          restart, smoke: the reeld binary\n"
        "  --data-dir DIR        restart, smoke: a fresh data directory\n"
        "  --keys N, --entries N restart (default 1000000 each)\n"
        "  --workers N           dispatch: ClaimNextRun workers (default 64)\n"
        "  --claim-runs N        dispatch: claimable runs (default 20000)\n"
        "  --timers N            timers: delayed signals (default 100000)\n"
        "  --sizes LIST          ws: artifact sizes in MiB (default 1,64)\n"
        "  --slow-ms N           ws: the slow reader's pause per 1 MiB chunk\n"
        "                        (default 20)\n");
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    char *end;

    while (*s != '\0' && n < max) {
        long v = strtol(s, &end, 10);

        if (end == s || v <= 0 || v > 1000000)
            return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0')
            return -1;
    }
    return n > 0 && *s == '\0' ? n : -1;
}

static long parse_range(const char *name, const char *s, long min,
                        long max) {
    char *end;
    long v = strtol(s, &end, 10);

    if (end == s || *end != '\0' || v < min || v > max) {
        if (max == LONG_MAX)
            fprintf(stderr, "reel-bench: --%s: \"%s\" is not a number >= %ld\n",
                    name, s, min);
        else
            fprintf(stderr,
                    "reel-bench: --%s: \"%s\" is not a number from %ld to "
                    "%ld\n",
                    name, s, min, max);
        exit(2);
    }
    return v;
}

static long parse_long(const char *name, const char *s, long min) {
    return parse_range(name, s, min, LONG_MAX);
}

/* ---- smoke --------------------------------------------------------------- */

static int smoke_step(const char *name, int (*fn)(const bench_opts_t *),
                      const bench_opts_t *o) {
    int rc = fn(o);

    printf("smoke: %s: %s\n\n", name, rc == 0 ? "ok" : "FAILED");
    fflush(stdout);
    return rc != 0;
}

static int smoke(bench_opts_t o) {
    char dir[4096], log[4200];
    pid_t pid;
    int failed = 0, status = 0;

    if (o.reeld == NULL || o.data_dir == NULL) {
        fprintf(stderr, "reel-bench: smoke: needs --reeld and --data-dir\n");
        return 2;
    }
    snprintf(dir, sizeof(dir), "%s/smoke", o.data_dir);
    snprintf(log, sizeof(log), "%s/smoke.log", o.data_dir);
    mkdir(o.data_dir, 0755);
    pid = fork();
    if (pid == 0) {
        if (freopen(log, "a", stdout) == NULL || dup2(1, 2) < 0)
            _exit(127);
        execl(o.reeld, o.reeld, "--data-dir", dir, "--listen", o.addr,
              (char *)NULL);
        _exit(127);
    }
    if (pid < 0 || !bench_wait_serving(o.addr, 20000)) {
        fprintf(stderr, "reel-bench: smoke: reeld did not start (see %s)\n",
                log);
        if (pid > 0)
            kill(pid, SIGTERM);
        return 1;
    }
    o.duration_s = 0.5;
    o.strict = 1;
    o.n_conc = parse_list("1,8", o.conc, BENCH_MAX_POINTS);
    o.n_watchers = parse_list("1,10", o.watchers, BENCH_MAX_POINTS);
    o.rate = 200;
    o.pattern_keys = 100;
    o.runs = 4;
    o.events = 2000;
    o.pid = pid;
    o.idle_watchers = 100;
    o.per_stream = 30;
    o.subscribers = 5;
    o.writes = 500;
    o.keys = 500;
    o.entries = 500;
    o.json = NULL;

    failed += smoke_step("set", bench_set, &o);
    failed += smoke_step("get", bench_get, &o);
    failed += smoke_step("append", bench_append, &o);
    failed += smoke_step("watch", bench_watch, &o);
    o.batched = 1;
    failed += smoke_step("watch --batched", bench_watch, &o);
    o.shared = 4;
    failed += smoke_step("watch --batched --shared 4", bench_watch, &o);
    o.shared = 0;
    o.batched = 0;
    failed += smoke_step("signal", bench_signal, &o);
    failed += smoke_step("tail", bench_tail, &o);
    failed += smoke_step("memory", bench_memory, &o);
    o.workers = 8;
    o.claim_runs = 200;
    o.timers = 300;
    o.rate = 1000;
    failed += smoke_step("recovery", bench_recovery, &o);
    failed += smoke_step("dispatch", bench_dispatch, &o);
    failed += smoke_step("timers", bench_timers, &o);
    o.n_sizes = parse_list("1,3", o.sizes, BENCH_MAX_POINTS);
    o.slow_ms = 1;
    failed += smoke_step("ws", bench_ws, &o);
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "reel-bench: smoke: reeld exited badly (see %s)\n",
                log);
        failed++;
    }
    snprintf(dir, sizeof(dir), "%s/restart", o.data_dir);
    o.data_dir = dir;
    failed += smoke_step("restart", bench_restart, &o);
    printf("smoke: %d passed, %d failed\n", 13 - failed, failed);
    return failed ? 1 : 0;
}

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        {"addr", required_argument, NULL, 'a'},
        {"target", required_argument, NULL, 'T'},
        {"duration", required_argument, NULL, 'd'},
        {"concurrency", required_argument, NULL, 'c'},
        {"value-bytes", required_argument, NULL, 'v'},
        {"connections", required_argument, NULL, 'C'},
        {"threads", required_argument, NULL, 't'},
        {"json", required_argument, NULL, 'j'},
        {"watchers", required_argument, NULL, 'w'},
        {"rate", required_argument, NULL, 'r'},
        {"fanout-cap", required_argument, NULL, 'F'},
        {"pattern-keys", required_argument, NULL, 'P'},
        {"batched", no_argument, NULL, 'B'},
        {"shared", required_argument, NULL, 'H'},
        {"runs", required_argument, NULL, 'R'},
        {"events", required_argument, NULL, 'e'},
        {"pid", required_argument, NULL, 'p'},
        {"idle-watchers", required_argument, NULL, 'I'},
        {"subscribers", required_argument, NULL, 's'},
        {"per-stream", required_argument, NULL, 'S'},
        {"writes", required_argument, NULL, 'W'},
        {"reeld", required_argument, NULL, 'D'},
        {"data-dir", required_argument, NULL, 'x'},
        {"keys", required_argument, NULL, 'k'},
        {"entries", required_argument, NULL, 'E'},
        {"tls-ca", required_argument, NULL, 'G'},
        {"token", required_argument, NULL, 'N'},
        {"workers", required_argument, NULL, 'K'},
        {"claim-runs", required_argument, NULL, 'L'},
        {"timers", required_argument, NULL, 'M'},
        {"sizes", required_argument, NULL, 'z'},
        {"slow-ms", required_argument, NULL, 'Y'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    bench_opts_t o;
    const char *cmd;
    const char *tls_ca = NULL, *token = getenv("REEL_TOKEN");
    int c;

    memset(&o, 0, sizeof(o));
    o.addr = "127.0.0.1:7878";
    o.duration_s = 10;
    o.n_conc = parse_list("1,8,64,256", o.conc, BENCH_MAX_POINTS);
    o.n_watchers = parse_list("1,100,1000,10000", o.watchers, BENCH_MAX_POINTS);
    o.value_bytes = 256;
    o.connections = 4;
    o.threads = 2;
    o.rate = 1000;
    o.fanout_cap = 1000000;
    o.pattern_keys = 10000;
    o.runs = 64;
    o.events = 1000000;
    o.idle_watchers = 10000;
    o.subscribers = 100;
    o.per_stream = 1000;
    o.writes = 100000;
    o.keys = o.entries = 1000000;
    o.n_sizes = parse_list("1,64", o.sizes, BENCH_MAX_POINTS);
    o.slow_ms = 20;
    o.progress = isatty(2);

    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
            printf("reel-bench %s\n", REEL_VERSION);
            return 0;
        }
        usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
        return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    cmd = argv[1];
    optind = 2;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'a': o.addr = optarg; break;
        case 'T':
            if (strcmp(optarg, "reel") == 0)
                o.target = TARGET_REEL;
            else if (strcmp(optarg, "etcd") == 0)
                o.target = TARGET_ETCD;
            else {
                fprintf(stderr, "reel-bench: --target: reel or etcd\n");
                return 2;
            }
            break;
        case 'd':
            o.duration_s = atof(optarg);
            if (o.duration_s <= 0 || o.duration_s > 3600) {
                fprintf(stderr, "reel-bench: --duration: 0 < S <= 3600\n");
                return 2;
            }
            break;
        case 'c':
            if ((o.n_conc = parse_list(optarg, o.conc, BENCH_MAX_POINTS)) < 0) {
                fprintf(stderr, "reel-bench: --concurrency: a list like "
                                "1,8,64\n");
                return 2;
            }
            break;
        case 'w':
            if ((o.n_watchers = parse_list(optarg, o.watchers,
                                           BENCH_MAX_POINTS)) < 0) {
                fprintf(stderr, "reel-bench: --watchers: a list like "
                                "1,100\n");
                return 2;
            }
            break;
        case 'v': o.value_bytes = (int)parse_long("value-bytes", optarg, 32); break;
        case 'C': o.connections = (int)parse_long("connections", optarg, 1); break;
        case 't': o.threads = (int)parse_long("threads", optarg, 1); break;
        case 'j': o.json = optarg; break;
        case 'r': o.rate = (int)parse_long("rate", optarg, 1); break;
        case 'F': o.fanout_cap = parse_long("fanout-cap", optarg, 1); break;
        case 'P': o.pattern_keys = (int)parse_long("pattern-keys", optarg, 0); break;
        case 'B': o.batched = 1; break;
        case 'H': o.shared = (int)parse_range("shared", optarg, 0, 10000); break;
        case 'R': o.runs = (int)parse_long("runs", optarg, 1); break;
        case 'e': o.events = parse_long("events", optarg, 1); break;
        case 'p': o.pid = (int)parse_range("pid", optarg, 1, INT_MAX); break;
        case 'I': o.idle_watchers = (int)parse_long("idle-watchers", optarg, 0); break;
        case 's': o.subscribers = (int)parse_long("subscribers", optarg, 0); break;
        case 'S': o.per_stream = (int)parse_range("per-stream", optarg, 1, 10000); break;
        case 'W': o.writes = parse_long("writes", optarg, 1); break;
        case 'D': o.reeld = optarg; break;
        case 'x': o.data_dir = optarg; break;
        case 'k': o.keys = parse_long("keys", optarg, 0); break;
        case 'E': o.entries = parse_long("entries", optarg, 0); break;
        case 'G': tls_ca = optarg; break;
        case 'N': token = optarg; break;
        case 'K': o.workers = (int)parse_range("workers", optarg, 1, 10000); break;
        case 'L': o.claim_runs = parse_long("claim-runs", optarg, 1); break;
        case 'M': o.timers = parse_long("timers", optarg, 1); break;
        case 'z':
            if ((o.n_sizes = parse_list(optarg, o.sizes, BENCH_MAX_POINTS)) <
                0) {
                fprintf(stderr, "reel-bench: --sizes: a list like 1,64\n");
                return 2;
            }
            break;
        case 'Y': o.slow_ms = (int)parse_range("slow-ms", optarg, 0, 10000); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "reel-bench: unexpected argument \"%s\"\n",
                argv[optind]);
        return 2;
    }
    /* REEL_TOKEN applies only to a TLS run (a run against a plaintext
     * reeld must not pick it up unasked); --token without --tls-ca sends
     * it in plaintext, which reeld accepts on loopback. */
    if (tls_ca == NULL && token == getenv("REEL_TOKEN"))
        token = NULL;
    if (ac_security(tls_ca, token) != 0)
        return 2;
    if (o.value_bytes > (1 << 20)) {
        fprintf(stderr, "reel-bench: --value-bytes: at most 1048576\n");
        return 2;
    }
    if (o.pid > 0) {
        bench_cpu_t c;

        bench_cpu_sample(&o, &c);
        if (c.server_s < 0) {
            fprintf(stderr, "reel-bench: --pid %d: cannot read /proc/%d/stat "
                            "(no such process?)\n", o.pid, o.pid);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);

    if (strcmp(cmd, "set") == 0)
        return bench_set(&o);
    if (strcmp(cmd, "get") == 0)
        return bench_get(&o);
    if (strcmp(cmd, "append") == 0)
        return bench_append(&o);
    if (strcmp(cmd, "watch") == 0)
        return bench_watch(&o);
    if (strcmp(cmd, "signal") == 0)
        return bench_signal(&o);
    if (strcmp(cmd, "tail") == 0)
        return bench_tail(&o);
    if (strcmp(cmd, "memory") == 0)
        return bench_memory(&o);
    if (strcmp(cmd, "ws") == 0)
        return bench_ws(&o);
    if (strcmp(cmd, "restart") == 0)
        return bench_restart(&o);
    if (strcmp(cmd, "recovery") == 0)
        return bench_recovery(&o);
    if (strcmp(cmd, "timers") == 0)
        return bench_timers(&o);
    if (strcmp(cmd, "dispatch") == 0)
        return bench_dispatch(&o);
    if (strcmp(cmd, "smoke") == 0)
        return smoke(o);
    fprintf(stderr, "reel-bench: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
