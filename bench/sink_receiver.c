/*
 * bench/sink_receiver.c: a webhook receiver for reel-sink's benchmarks
 * (bench/sink_bench.py): answers every POST 200 at once, and counts the
 * events it received by their webhook-id (evt_<r> is one event,
 * evt_<a>_<b> a batch of b - a + 1: the benchmarks deliver every
 * revision), noting when each single event arrived. A Python receiver
 * cannot take 20,000 requests a second; this one runs on libmicrohttpd's
 * epoll loop and does no more than that.
 *
 *   sink-receiver --port P [--record N]
 *
 *   GET /count   "<events> <first_us> <last_us>": events so far, and when
 *                the first and the last arrived (CLOCK_REALTIME, µs)
 *   GET /times   "<revision> <us>" per line for the first N single events
 *                (--record; for latencies)
 *   GET /reset   forgets everything
 *
 * Runs until SIGTERM or SIGINT.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

typedef struct rec {
    uint64_t rev;
    int64_t us;
} rec_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t events;
static int64_t first_us, last_us;
static rec_t *recs;
static size_t n_recs, max_recs;
static int posting; /* a marker for a POST's first call */

static int64_t now_us(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code,
                             char *body) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(body), body, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result rc = MHD_queue_response(c, code, r);

    MHD_destroy_response(r);
    return rc;
}

static void count(const char *id, int64_t us) {
    uint64_t a = 0, b = 0;
    int n = id != NULL ? sscanf(id, "evt_%" SCNu64 "_%" SCNu64, &a, &b) : 0;

    pthread_mutex_lock(&mu);
    if (n == 1) {
        events++;
        if (n_recs < max_recs)
            recs[n_recs++] = (rec_t){a, us};
    } else if (n == 2 && b >= a) {
        events += b - a + 1;
    }
    if (first_us == 0)
        first_us = us;
    last_us = us;
    pthread_mutex_unlock(&mu);
}

static char *times_text(void) {
    size_t cap = 64 + n_recs * 44, used = 0;
    char *s = malloc(cap);

    if (s == NULL)
        return strdup("out of memory\n");
    s[0] = '\0';
    for (size_t i = 0; i < n_recs; i++)
        used += (size_t)snprintf(s + used, cap - used, "%" PRIu64 " %" PRId64
                                 "\n", recs[i].rev, recs[i].us);
    return s;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_len, void **state) {
    char buf[128];

    (void)cls;
    (void)version;
    (void)upload;
    if (strcmp(method, "POST") == 0) {
        if (*state == NULL) {
            *state = &posting;
            return MHD_YES;
        }
        if (*upload_len > 0) {
            *upload_len = 0; /* the body is not needed */
            return MHD_YES;
        }
        count(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-id"),
              now_us());
        return reply(c, 200, strdup(""));
    }
    if (strcmp(url, "/count") == 0) {
        pthread_mutex_lock(&mu);
        snprintf(buf, sizeof(buf), "%" PRIu64 " %" PRId64 " %" PRId64 "\n",
                 events, first_us, last_us);
        pthread_mutex_unlock(&mu);
        return reply(c, 200, strdup(buf));
    }
    if (strcmp(url, "/times") == 0) {
        char *s;

        pthread_mutex_lock(&mu);
        s = times_text();
        pthread_mutex_unlock(&mu);
        return reply(c, 200, s);
    }
    if (strcmp(url, "/reset") == 0) {
        pthread_mutex_lock(&mu);
        events = 0;
        first_us = last_us = 0;
        n_recs = 0;
        pthread_mutex_unlock(&mu);
        return reply(c, 200, strdup("reset\n"));
    }
    return reply(c, 404, strdup("GET /count, /times or /reset\n"));
}

int main(int argc, char **argv) {
    struct MHD_Daemon *d;
    struct sockaddr_in sa;
    sigset_t set;
    int port = 0, sig;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--record") == 0)
            max_recs = (size_t)strtoull(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr, "usage: sink-receiver --port P [--record N]\n");
            return 2;
        }
    }
    if (port <= 0 || port > 65535 ||
        (max_recs > 0 && (recs = calloc(max_recs, sizeof(*recs))) == NULL)) {
        fprintf(stderr, "usage: sink-receiver --port P [--record N]\n");
        return 2;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* loopback only */
    d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG,
                         (uint16_t)port, NULL, NULL, handle, NULL,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                         MHD_OPTION_CONNECTION_LIMIT, 1024U,
                         MHD_OPTION_CONNECTION_TIMEOUT, 60U, MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "sink-receiver: cannot listen on port %d\n", port);
        return 1;
    }
    fprintf(stderr, "sink-receiver: listening on port %d\n", port);
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    free(recs);
    return 0;
}
