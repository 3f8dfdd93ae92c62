/*
 * api/exposure.h: who may reach reeld, decided before it serves
 * (private to api/).
 *
 * Like Redis's protected mode: a server without token auth answers only on
 * loopback, and one on any other address needs both token auth and TLS
 * (a token sent in plaintext is a token given away), unless the operator
 * says --insecure. The check runs after the port is bound (so a bad
 * address keeps its own "cannot listen" error) and before anything is
 * accepted or the data dir is touched.
 *
 * Thread safety: pure functions; any thread.
 */
#ifndef REEL_API_EXPOSURE_H
#define REEL_API_EXPOSURE_H

#include <stddef.h>

/*
 * 1 if every address `listen` ("host:port", "[v6]:port", "unix:path")
 * resolves to is a loopback address (127.0.0.0/8, ::1) or a Unix socket;
 * 0 otherwise, including a wildcard or empty host and a host that does
 * not resolve.
 */
int api_listen_is_loopback(const char *listen);

/*
 * 0 if reeld may serve on listen with this auth and TLS; -1 with why
 * (naming the flag to add) written into why[whylen].
 */
int api_check_exposure(const char *listen, int auth_token, int tls,
                       int insecure, char *why, size_t whylen);

#endif
