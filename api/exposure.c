/*
 * api/exposure.c: the listen address against auth and TLS (see
 * exposure.h). The host is resolved with getaddrinfo, so "localhost"
 * counts as loopback only if every address it names is one: a name that
 * also maps to a routable address would expose the server.
 */
#include "api/exposure.h"

#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static int addr_is_loopback(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        const struct in6_addr *a = &in6->sin6_addr;

        if (IN6_IS_ADDR_LOOPBACK(a))
            return 1;
        /* ::ffff:127.x.y.z */
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return 0;
}

int api_listen_is_loopback(const char *listen) {
    char host[256];
    const char *colon, *start = listen;
    size_t n;
    struct addrinfo hints, *res = NULL, *ai;
    int all = 1;

    if (listen == NULL)
        return 0;
    if (strncmp(listen, "unix:", 5) == 0 ||
        strncmp(listen, "unix-abstract:", 14) == 0)
        return 1;
    if (strncmp(listen, "ipv4:", 5) == 0 || strncmp(listen, "ipv6:", 5) == 0)
        start = listen + 5;
    if (*start == '[') {
        const char *end = strchr(start, ']');

        if (end == NULL)
            return 0;
        start++;
        n = (size_t)(end - start);
    } else {
        colon = strrchr(start, ':');
        n = colon ? (size_t)(colon - start) : strlen(start);
    }
    if (n == 0 || n >= sizeof(host))
        return 0;
    memcpy(host, start, n);
    host[n] = '\0';

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
        return 0;
    for (ai = res; ai != NULL; ai = ai->ai_next)
        all &= addr_is_loopback(ai->ai_addr);
    freeaddrinfo(res);
    return all;
}

int api_check_exposure(const char *listen, int auth_token, int tls,
                       int insecure, char *why, size_t whylen) {
    if (insecure || api_listen_is_loopback(listen))
        return 0;
    if (!auth_token || !tls) {
        snprintf(why, whylen,
                 "--listen %s is not a loopback address, and the server has "
                 "%s: anyone who can reach the port could %s. Add %s, or "
                 "--insecure to serve it anyway",
                 listen,
                 !auth_token && !tls ? "neither token auth nor TLS"
                 : !auth_token       ? "no token auth"
                                     : "no TLS",
                 !auth_token ? "read, change and delete everything"
                             : "read the tokens off the wire",
                 !auth_token && !tls
                     ? "--auth token and --tls-cert FILE --tls-key FILE"
                 : !auth_token ? "--auth token"
                               : "--tls-cert FILE --tls-key FILE");
        return -1;
    }
    return 0;
}
