/*
 * sink/control.c: the control endpoint on libmicrohttpd; see control.h.
 */
#include "sink/control.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "base/log.h"
#include "base/version.h"

struct sink_control {
    struct MHD_Daemon *d;
    sink_runner_t **runners;
    size_t n;
    int port;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
                             char *body, const char *type) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        strlen(body), body, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result rc;

    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", type);
    rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result handle(void *arg, struct MHD_Connection *conn,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_len, void **state) {
    sink_control_t *c = arg;
    cJSON *o, *sinks;
    char *body;

    (void)version;
    (void)upload;
    (void)upload_len;
    (void)state;
    if (strcmp(method, "GET") != 0)
        return reply(conn, 405, strdup("GET only\n"), "text/plain");
    if (strcmp(url, "/healthz") == 0)
        return reply(conn, 200, strdup("ok\n"), "text/plain");
    if (strcmp(url, "/status") != 0)
        return reply(conn, 404, strdup("not found: GET /status or /healthz\n"),
                     "text/plain");
    if ((o = cJSON_CreateObject()) == NULL)
        return MHD_NO;
    cJSON_AddStringToObject(o, "version", REEL_VERSION);
    sinks = cJSON_AddArrayToObject(o, "sinks");
    for (size_t i = 0; i < c->n; i++) {
        cJSON *s = sink_runner_status(c->runners[i]);

        if (s != NULL)
            cJSON_AddItemToArray(sinks, s);
    }
    body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (body == NULL)
        return MHD_NO;
    return reply(conn, 200, body, "application/json");
}

/* libmicrohttpd's own complaints (a connection it could not accept, a
 * socket error) go to reel's log, one line each, not raw to stderr. */
static void mhd_log(void *arg, const char *fmt, va_list ap) {
    char msg[256];
    size_t n;

    (void)arg;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    REEL_WARN("sink", "--control-listen: %s", msg);
}

reel_code_t sink_control_start(const char *where, sink_runner_t **runners,
                               size_t n, sink_control_t **out,
                               reel_status_t *st) {
    struct sockaddr_in sa;
    const char *colon = strrchr(where, ':');
    char host[64];
    char *end;
    long port;
    sink_control_t *c;
    const union MHD_DaemonInfo *info;
    int fd, one = 1;
    reel_code_t rc;

    *out = NULL;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    if (colon == NULL || (size_t)(colon - where) >= sizeof(host))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "--control-listen: \"%s\" is not HOST:PORT "
                               "(IPv4, e.g. 127.0.0.1:7879)",
                               where);
    memcpy(host, where, (size_t)(colon - where));
    host[colon - where] = '\0';
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || colon[1] == '\0' || port < 0 || port > 65535 ||
        inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "--control-listen: \"%s\" is not HOST:PORT "
                               "(IPv4, port 0-65535)",
                               where);
    sa.sin_port = htons((uint16_t)port);
    /* Bound here, not by libmicrohttpd: its failure said "port 0" for any
     * port, raw on stderr; this one names the flag, the address and why. */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(fd, 64) != 0) {
        rc = reel_status_set(st, REEL_UNAVAILABLE,
                             "--control-listen: cannot listen on %s: %s",
                             where, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        close(fd);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    c->runners = runners;
    c->n = n;
    /* poll, not select: a process with many sinks holds well over
     * FD_SETSIZE descriptors, and select() refuses every connection past
     * it. */
    c->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                                MHD_USE_ERROR_LOG,
                            0, NULL, NULL, handle, c,
                            MHD_OPTION_LISTEN_SOCKET, fd,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_CONNECTION_LIMIT, 16U,
                            MHD_OPTION_CONNECTION_TIMEOUT, 10U,
                            MHD_OPTION_END);
    if (c->d == NULL) {
        close(fd);
        free(c);
        return reel_status_set(st, REEL_UNAVAILABLE,
                               "--control-listen: cannot start the HTTP "
                               "server on %s",
                               where);
    }
    info = MHD_get_daemon_info(c->d, MHD_DAEMON_INFO_BIND_PORT);
    c->port = info != NULL ? info->port : (int)port;
    *out = c;
    return REEL_OK;
}

int sink_control_port(const sink_control_t *c) {
    return c->port;
}

void sink_control_stop(sink_control_t *c) {
    if (c == NULL)
        return;
    MHD_stop_daemon(c->d);
    free(c);
}
