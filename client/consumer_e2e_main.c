/*
 * client/consumer_e2e_main.c: the consumer loop as a program, for the
 * end-to-end tests (tests/e2e/test_client_consumer.py), which read what it
 * prints while they write to, kill and restart reeld.
 *
 *   consumer_e2e --addr HOST:PORT --consumer NAME [--subject PATTERN]
 *                [--from REV] [--takeover] [--stop-at REV] [--unfinished N]
 *                [--ack-interval MS] [--ack-every N] [--max-attempts N]
 *                [--backoff-initial MS] [--backoff-max MS] [--finish-ahead]
 *                [--keepalive MS]
 *   consumer_e2e --addr HOST:PORT --heads SECONDS
 *
 * TLS and a token come from reelctl's variables (REEL_TLS_CA, REEL_TOKEN,
 * ...). Prints one line per event, retry and end, each flushed at once:
 *   event REV TYPE SUBJECT
 *   retry CODE DELAY_MS DETAILS
 *   end CODE delivered=D finished=F acked=A events=E skipped=S acks=N
 *       reconnects=R: DETAILS                            (one line)
 * and exits 0 if the loop returned OK, 1 if not, 2 on a usage error.
 *
 * SIGTERM and SIGINT stop the loop the way a daemon would: a thread waits
 * for them with sigwait and calls reel_consumer_stop. --stop-at REV: once
 * an event at or past REV was handed out, the callback sends SIGTERM to
 * the process, so the stop comes from that thread while the loop runs.
 * --unfinished N: the callback says it finished everything but the last N
 * events it was handed, which then stay unacknowledged. --finish-ahead:
 * the callback finishes nothing itself (*finished = 0), and at its first
 * batch calls reel_consumer_finish with UINT64_MAX, which covers only what
 * was handed out by then.
 *
 * --heads SECONDS runs no consumer: one reel_client_unary GetHead every 50
 * ms on one client for that long, printing "head ok MS" or "head fail MS
 * CODE" (MS since the start) for each, then exits 0.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "reel/v1/wal.pb-c.h"
#include "client/client.h"

typedef struct run {
    uint64_t stop_at;
    uint64_t unfinished;
    uint64_t *revs; /* every revision handed out, for --unfinished */
    size_t n, cap;
    int stop_sent;
    int finish_ahead;
    reel_consumer_t *k;
    uint64_t heads; /* seconds of GetHead calls instead of a consumer */
} run_t;

static void usage(void) {
    fprintf(stderr,
            "usage: consumer_e2e --addr HOST:PORT --consumer NAME "
            "[--subject PATTERN] [--from REV] [--takeover] [--stop-at REV] "
            "[--unfinished N] [--ack-interval MS] [--ack-every N] "
            "[--max-attempts N] [--backoff-initial MS] [--backoff-max MS] "
            "[--finish-ahead] [--keepalive MS]\n"
            "       consumer_e2e --addr HOST:PORT --heads SECONDS\n");
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;

    errno = 0;
    if (*s < '0' || *s > '9')
        return -1;
    *out = strtoull(s, &end, 10);
    return errno != 0 || *end != '\0' ? -1 : 0;
}

static const char *type_name(int type) {
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &reel__v1__event__type__descriptor, type);

    return v != NULL ? v->name : "UNKNOWN";
}

static int on_batch(void *arg, const reel_event_t *ev, size_t n,
                    uint64_t *finished) {
    run_t *r = arg;

    for (size_t i = 0; i < n; i++) {
        printf("event %" PRIu64 " %s %.*s\n", ev[i].revision,
               type_name(ev[i].type), (int)ev[i].subject_len, ev[i].subject);
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 1024;
            uint64_t *p = realloc(r->revs, cap * sizeof(*p));

            if (p == NULL) {
                fprintf(stderr, "consumer_e2e: out of memory\n");
                exit(1);
            }
            r->revs = p;
            r->cap = cap;
        }
        r->revs[r->n++] = ev[i].revision;
    }
    fflush(stdout);
    if (r->unfinished > 0)
        *finished = r->n > r->unfinished ? r->revs[r->n - 1 - r->unfinished]
                                         : 0;
    if (r->finish_ahead) {
        *finished = 0;
        if (r->n == n) /* the first batch */
            reel_consumer_finish(r->k, UINT64_MAX);
    }
    if (r->stop_at > 0 && !r->stop_sent && ev[n - 1].revision >= r->stop_at) {
        r->stop_sent = 1;
        kill(getpid(), SIGTERM);
    }
    return 0;
}

/* --heads: what a program calling once in a while sees across a restart
 * of reeld. */
static int heads(const char *addr, const reel_client_opts_t *co,
                 uint64_t seconds) {
    reel_client_t *c;
    reel_reply_t r;
    struct timespec t0, t;
    int64_t ms = 0;

    if (reel_client_create(addr, co, &c, &r) != 0) {
        printf("end %s: %s\n", reel_grpc_code_name(r.code),
               r.details ? r.details : "");
        reel_reply_fini(&r);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (ms < (int64_t)seconds * 1000) {
        struct timespec pause = {0, 50 * 1000000L};
        int rc = reel_client_unary(c, "/reel.v1.Wal/GetHead", "", 0, 1000, &r);

        clock_gettime(CLOCK_MONOTONIC, &t);
        ms = (t.tv_sec - t0.tv_sec) * 1000 +
             (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (rc == 0)
            printf("head ok %" PRId64 "\n", ms);
        else
            printf("head fail %" PRId64 " %s\n", ms, reel_grpc_code_name(rc));
        fflush(stdout);
        reel_reply_fini(&r);
        nanosleep(&pause, NULL);
    }
    reel_client_destroy(c);
    return 0;
}

static void on_retry(void *arg, int code, const char *details,
                     int64_t delay_ms) {
    (void)arg;
    printf("retry %s %" PRId64 " %s\n", reel_grpc_code_name(code), delay_ms,
           details);
    fflush(stdout);
}

typedef struct sigthread {
    sigset_t set;
    reel_consumer_t *k;
} sigthread_t;

/* Takes SIGTERM and SIGINT for the process; SIGUSR1 only ends it. */
static void *signal_main(void *arg) {
    sigthread_t *t = arg;
    int sig;

    while (sigwait(&t->set, &sig) == 0) {
        if (sig == SIGUSR1)
            break;
        reel_consumer_stop(t->k);
    }
    return NULL;
}

int main(int argc, char **argv) {
    reel_client_opts_t co = REEL_CLIENT_OPTS_INIT;
    reel_consumer_opts_t o = REEL_CONSUMER_OPTS_INIT;
    reel_consumer_stats_t s;
    reel_client_t *c = NULL;
    reel_consumer_t *k = NULL;
    reel_reply_t why = {0};
    const char *addr = NULL;
    sigthread_t st;
    pthread_t th;
    run_t run = {0};
    int rc = 2;

    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;

        if (strcmp(f, "--takeover") == 0) {
            o.takeover = 1;
            continue;
        }
        if (strcmp(f, "--finish-ahead") == 0) {
            run.finish_ahead = 1;
            continue;
        }
        if (v == NULL) {
            usage();
            return 2;
        }
        i++;
        if (strcmp(f, "--addr") == 0)
            addr = v;
        else if (strcmp(f, "--consumer") == 0)
            o.consumer = v;
        else if (strcmp(f, "--subject") == 0)
            o.subject_pattern = v;
        else if (parse_u64(v, &n) != 0) {
            usage();
            return 2;
        } else if (strcmp(f, "--from") == 0)
            o.from_revision = n;
        else if (strcmp(f, "--stop-at") == 0)
            run.stop_at = n;
        else if (strcmp(f, "--unfinished") == 0)
            run.unfinished = n;
        else if (strcmp(f, "--ack-interval") == 0)
            o.ack_interval_ms = (int64_t)n;
        else if (strcmp(f, "--ack-every") == 0)
            o.ack_every = (uint32_t)n;
        else if (strcmp(f, "--max-attempts") == 0)
            o.max_attempts = (int)n;
        else if (strcmp(f, "--backoff-initial") == 0)
            co.backoff_initial_ms = (int64_t)n;
        else if (strcmp(f, "--backoff-max") == 0)
            co.backoff_max_ms = (int64_t)n;
        else if (strcmp(f, "--heads") == 0)
            run.heads = n;
        else if (strcmp(f, "--keepalive") == 0)
            co.keepalive_time_ms = co.keepalive_timeout_ms = (int64_t)n;
        else {
            usage();
            return 2;
        }
    }
    if (addr == NULL) {
        usage();
        return 2;
    }
    /* TLS and the token as reelctl reads them (REEL_TLS_CA, REEL_TOKEN...). */
    if (reel_client_opts_from_env(&co, &why) != 0) {
        printf("end %s: %s\n", reel_grpc_code_name(why.code),
               why.details ? why.details : "");
        reel_reply_fini(&why);
        return 2;
    }
    if (run.heads > 0)
        return heads(addr, &co, run.heads);
    /* Blocked in every thread (gRPC's included, so block them first): only
     * the signal thread takes them. */
    sigemptyset(&st.set);
    sigaddset(&st.set, SIGTERM);
    sigaddset(&st.set, SIGINT);
    sigaddset(&st.set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &st.set, NULL);
    o.on_batch = on_batch;
    o.on_retry = on_retry;
    o.arg = &run;
    if (reel_client_create(addr, &co, &c, &why) != 0 ||
        reel_consumer_create(c, &o, &k, &why) != 0) {
        printf("end %s: %s\n", reel_grpc_code_name(why.code),
               why.details ? why.details : "");
        rc = 1;
        goto out;
    }
    st.k = run.k = k;
    if (pthread_create(&th, NULL, signal_main, &st) != 0) {
        fprintf(stderr, "consumer_e2e: cannot start the signal thread\n");
        rc = 1;
        goto out;
    }
    rc = reel_consumer_run(k, &why) == 0 ? 0 : 1;
    pthread_kill(th, SIGUSR1);
    pthread_join(th, NULL);
    reel_consumer_stats(k, &s);
    printf("end %s delivered=%" PRIu64 " finished=%" PRIu64 " acked=%" PRIu64
           " events=%" PRIu64 " skipped=%" PRIu64 " acks=%" PRIu64
           " reconnects=%" PRIu64 ": %s\n",
           reel_grpc_code_name(why.code), s.delivered, s.finished, s.acked,
           s.events, s.skipped, s.acks, s.reconnects,
           why.details ? why.details : "");
out:
    fflush(stdout);
    reel_reply_fini(&why);
    reel_consumer_destroy(k);
    reel_client_destroy(c);
    free(run.revs);
    return rc;
}
