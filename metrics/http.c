/*
 * metrics/http.c: /metrics, /healthz and /readyz on libmicrohttpd.
 *
 * The listening socket is made here, not by libmicrohttpd: a port in use
 * or an address that does not resolve is then reported with its reason at
 * start, where libmicrohttpd would only say that it failed. The daemon
 * runs one internal polling thread: scrapes are rare (seconds apart) and
 * a render takes the registry's lock anyway, so more threads would buy
 * nothing. Connections are bounded and time out, so a client that opens
 * many and sends nothing cannot hold the endpoint; and since a byte now
 * and then restarts libmicrohttpd's idle timeout, a reaper thread shuts
 * the socket of any connection that has not completed a request's
 * headers within HTTP_HEADERS_S of its start or its last request, so
 * many that trickle cannot hold it either.
 */
#include "metrics/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "base/clock.h"

#define HTTP_CONNECTIONS 256
#define HTTP_TIMEOUT_S 10
#define HTTP_HEADERS_S 10
#define HOST_MAX 255

/* A connection, from libmicrohttpd's start notice to its close notice. */
typedef struct conn_slot {
    int used;
    int fd;
    int64_t since_ns; /* its start, or its last request's headers */
} conn_slot_t;

struct metrics_http {
    struct MHD_Daemon *d;
    int fd;
    int port;
    metrics_registry_t *reg;
    metrics_ready_fn ready;
    void *arg;
    /* 0 while the process is still registering its figures: a scrape then
     * is 503, not a partial set. */
    atomic_int complete;
    /* The reaper (see above). */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping, reaping;
    pthread_t reaper;
    conn_slot_t slots[HTTP_CONNECTIONS + 8];
};

/* libmicrohttpd's thread: a connection starts or ends. It calls the close
 * notice before it closes the socket, so a slot in use names an open
 * socket while the reaper holds mu. */
static void on_connection(void *cls, struct MHD_Connection *c, void **ctx,
                          enum MHD_ConnectionNotificationCode what) {
    metrics_http_t *h = cls;
    const union MHD_ConnectionInfo *info;

    pthread_mutex_lock(&h->mu);
    if (what == MHD_CONNECTION_NOTIFY_STARTED) {
        info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        *ctx = NULL;
        for (size_t i = 0; info != NULL && i < HTTP_CONNECTIONS + 8; i++)
            if (!h->slots[i].used) {
                h->slots[i] = (conn_slot_t){1, info->connect_fd,
                                            reel_clock_mono_ns()};
                *ctx = &h->slots[i];
                break;
            }
    } else if (*ctx != NULL) {
        ((conn_slot_t *)*ctx)->used = 0;
        *ctx = NULL;
    }
    pthread_mutex_unlock(&h->mu);
}

/* A request's headers are in: the connection's clock starts again. */
static void headers_in(metrics_http_t *h, struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    pthread_mutex_lock(&h->mu);
    if (info != NULL && info->socket_context != NULL)
        ((conn_slot_t *)info->socket_context)->since_ns = reel_clock_mono_ns();
    pthread_mutex_unlock(&h->mu);
}

static void *reaper_main(void *arg) {
    metrics_http_t *h = arg;
    struct timespec t;

    pthread_mutex_lock(&h->mu);
    while (!h->stopping) {
        int64_t now = reel_clock_mono_ns();

        for (size_t i = 0; i < HTTP_CONNECTIONS + 8; i++)
            if (h->slots[i].used &&
                now - h->slots[i].since_ns >
                    (int64_t)HTTP_HEADERS_S * 1000000000) {
                shutdown(h->slots[i].fd, SHUT_RDWR);
                h->slots[i].since_ns = now; /* once; it closes soon */
            }
        t = reel_clock_mono_after(1000);
        pthread_cond_timedwait(&h->cv, &h->mu, &t);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code,
                             const char *type, char *body, size_t len) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result rc;

    if (r == NULL) {
        free(body);
        return MHD_NO; /* libmicrohttpd closes the connection */
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED) /* RFC 9110: say which */
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned code,
                                  const char *text) {
    char *body = malloc(strlen(text) + 2);

    if (body == NULL)
        return MHD_NO;
    sprintf(body, "%s\n", text);
    return reply(c, code, "text/plain; charset=utf-8", body, strlen(body));
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_len, void **state) {
    metrics_http_t *h = cls;

    (void)version;
    (void)upload;
    (void)state;
    headers_in(h, c);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        *upload_len = 0;
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                          "method not allowed: GET or HEAD");
    }
    if (strcmp(url, "/metrics") == 0) {
        reel_status_t st = REEL_STATUS_INIT;
        char *body;
        size_t len;
        enum MHD_Result rc;

        if (!atomic_load(&h->complete))
            return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                              "starting: not every figure is registered yet");
        if (metrics_render(h->reg, &body, &len, &st) != REEL_OK) {
            /* A scrape that cannot report everything fails whole: the
             * server marks the target down instead of graphing a gap
             * as if it were a value. */
            rc = reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                            reel_status_message(&st));
            reel_status_fini(&st);
            return rc;
        }
        return reply(c, MHD_HTTP_OK, METRICS_CONTENT_TYPE, body, len);
    }
    if (strcmp(url, "/healthz") == 0)
        return reply_text(c, MHD_HTTP_OK, "ok");
    if (strcmp(url, "/readyz") == 0) {
        char why[512] = "not ready";

        if (h->ready == NULL || h->ready(h->arg, why, sizeof(why)))
            return reply_text(c, MHD_HTTP_OK, "ready");
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, why);
    }
    return reply_text(c, MHD_HTTP_NOT_FOUND,
                      "not found: /metrics, /healthz or /readyz");
}

/* Splits "HOST:PORT" / "[V6]:PORT" into host[] and port[]. */
static int split_addr(const char *s, char *host, char *port) {
    const char *colon, *hs = s;
    size_t hl;

    if (s[0] == '[') {
        const char *end = strchr(s, ']');

        if (end == NULL || end[1] != ':')
            return -1;
        hs = s + 1;
        hl = (size_t)(end - hs);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -1;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl > HOST_MAX || strlen(colon + 1) == 0 ||
        strlen(colon + 1) > 5 ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
        atoi(colon + 1) > 65535)
        return -1;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

static reel_code_t listen_on(const char *field, const char *addr, int *fd_out,
                             int *port_out, reel_status_t *st) {
    char host[HOST_MAX + 1], port[6];
    struct addrinfo hints, *ai = NULL;
    struct sockaddr_storage sa;
    socklen_t salen = sizeof(sa);
    int fd = -1, one = 1, gai;
    reel_code_t rc = REEL_OK;

    if (addr == NULL || split_addr(addr, host, port) != 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: \"%s\" is not HOST:PORT (port 0-65535; "
                               "an IPv6 address in brackets)",
                               field, addr ? addr : "");
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if ((gai = getaddrinfo(host, port, &hints, &ai)) != 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: host \"%s\" does not resolve: %s", field,
                               host, gai_strerror(gai));
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &salen) != 0) {
        rc = reel_status_set(st, REEL_UNAVAILABLE, "%s: cannot listen on %s: %s",
                             field, addr, strerror(errno));
        goto out;
    }
    *port_out = sa.ss_family == AF_INET6
                    ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                    : ntohs(((struct sockaddr_in *)&sa)->sin_port);
    *fd_out = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return rc;
}

reel_code_t metrics_http_start(const char *field, const char *listen,
                               metrics_registry_t *reg, metrics_ready_fn ready,
                               void *arg, metrics_http_t **out,
                               reel_status_t *st) {
    metrics_http_t *h;
    reel_code_t rc;

    *out = NULL;
    h = calloc(1, sizeof(*h));
    if (h == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "%s: out of memory", field);
    h->fd = -1;
    h->reg = reg;
    h->ready = ready;
    atomic_init(&h->complete, 1);
    h->arg = arg;
    pthread_mutex_init(&h->mu, NULL);
    reel_cond_init_mono(&h->cv);
    if ((rc = listen_on(field, listen, &h->fd, &h->port, st)) != REEL_OK)
        goto out;
    h->d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL, handle,
        h, MHD_OPTION_LISTEN_SOCKET, h->fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)HTTP_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)HTTP_TIMEOUT_S, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, h, MHD_OPTION_END);
    if (h->d == NULL) {
        rc = reel_status_set(st, REEL_UNAVAILABLE,
                             "%s: cannot start the HTTP server on %s", field,
                             listen);
    } else if (pthread_create(&h->reaper, NULL, reaper_main, h) != 0) {
        MHD_stop_daemon(h->d); /* closes h->fd */
        h->fd = -1;
        rc = reel_status_set(st, REEL_UNAVAILABLE,
                             "%s: cannot start the HTTP server's reaper",
                             field);
    } else {
        h->reaping = 1;
    }
out:
    if (rc != REEL_OK) {
        if (h->fd >= 0)
            close(h->fd);
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return rc;
    }
    *out = h;
    return REEL_OK;
}

int metrics_http_port(const metrics_http_t *h) { return h->port; }

int metrics_http_socket(const metrics_http_t *h) { return h->fd; }

void metrics_http_stop(metrics_http_t *h) {
    if (h == NULL)
        return;
    if (h->reaping) {
        pthread_mutex_lock(&h->mu);
        h->stopping = 1;
        pthread_cond_signal(&h->cv);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->reaper, NULL);
    }
    MHD_stop_daemon(h->d);
    /* A socket given by MHD_OPTION_LISTEN_SOCKET is closed by
     * MHD_stop_daemon. */
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void metrics_http_complete(metrics_http_t *h, int complete) {
    if (h != NULL)
        atomic_store(&h->complete, complete);
}
