/*
 * client/client.c: blocking unary and server-streaming calls on gRPC's C
 * core, and which of them are sent again.
 *
 * A client is one grpc_channel. Every call gets its own pluck completion
 * queue, created for the call and drained and destroyed with it, so calls
 * from many threads never see each other's events, and a stream's
 * callbacks may make calls of their own. A call runs as three batches:
 * send everything and receive the initial metadata (TAG_START); receive a
 * message (TAG_RECV, once per message for a stream); receive the status
 * (TAG_STATUS), which every call ends with, cancelled or not.
 *
 * The channel's own reconnection backoff is set from the client's backoff
 * (initial and max) and its connect timeout, so a call made after a
 * backoff wait finds the channel trying again rather than still waiting
 * out gRPC's defaults (1 s growing to 120 s). Calls are fail-fast: while
 * nothing listens, a call ends UNAVAILABLE at once instead of waiting for
 * a connection, and the caller's policy decides what comes next.
 *
 * Deadlines are on the monotonic clock, so a change of the wall clock moves
 * none. A retried unary call's attempts share the caller's deadline.
 *
 * Ending calls from another thread: each public call enters the client
 * (client_enter) with a cancel switch of its own, and each gRPC call it
 * makes is in that switch's list while it runs; a consumer loop enters
 * once for its run, with the switch its stop fires. reel_client_shutdown
 * fires every switch inside (the calls are cancelled, backoff waits woken)
 * and lets no one in after it; destroy then waits until everyone has left
 * before it destroys the channel, so no call is ever left on a channel
 * that is gone, nor on a gRPC that grpc_shutdown ended.
 */
#include "client/client.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "base/clock.h"
#include "base/status.h"
#include "base/text.h"
#include "client/client_impl.h"

struct reel_client {
    grpc_channel *channel;
    /* The calls open on it (and consumer loops running), each with the
     * switch that cancels it: reel_client_shutdown fires them all, and
     * destroy waits for the list to empty. mu guards both fields. */
    pthread_mutex_t mu;
    pthread_cond_t left; /* a user left */
    int closing;         /* shut down: no call enters */
    client_user_t *users;
    grpc_slice auth_value; /* "Bearer <token>", when has_token */
    int has_token;
    client_backoff_t backoff;
    int64_t deadline_ms;
    int max_attempts;
    int tls, client_cert; /* for reel_client_hint */
    char addr[256];       /* as given, for the same (cut short if longer) */
};

/* Defaults and limits of the options (client.h says the same). */
#define DEFAULT_CONNECT_TIMEOUT_MS 20000
#define MIN_CONNECT_TIMEOUT_MS 100 /* gRPC takes no less */
#define DEFAULT_DEADLINE_MS 10000
#define DEFAULT_BACKOFF_INITIAL_MS 100
#define DEFAULT_BACKOFF_MAX_MS 10000
#define DEFAULT_BACKOFF_MULTIPLIER 2.0
#define MAX_BACKOFF_MULTIPLIER 10.0
#define DEFAULT_BACKOFF_JITTER 0.2
#define DEFAULT_MAX_ATTEMPTS 5
#define MAX_MAX_ATTEMPTS 100
#define DEFAULT_KEEPALIVE_TIMEOUT_MS 20000
#define MIN_STREAM_WINDOW_BYTES 65535 /* HTTP/2's default window */
#define MAX_TOKEN_BYTES 4096
#define MAX_PEM_BYTES (1 << 20)

static const char *const code_names[] = {
    "OK",                 "CANCELLED",         "UNKNOWN",
    "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS",     "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED",          "OUT_OF_RANGE",
    "UNIMPLEMENTED",      "INTERNAL",          "UNAVAILABLE",
    "DATA_LOSS",          "UNAUTHENTICATED",
};

const char *reel_grpc_code_name(int code) {
    if (code < 0 || code >= (int)(sizeof(code_names) / sizeof(*code_names)))
        return "UNKNOWN";
    return code_names[code];
}

int client_reply_set(reel_reply_t *r, int code, const char *fmt, ...) {
    va_list ap;

    if (r == NULL)
        return code;
    reel_reply_fini(r);
    r->code = code;
    va_start(ap, fmt);
    if (vasprintf(&r->details, fmt, ap) < 0)
        r->details = NULL;
    va_end(ap);
    return code;
}

void client_reply_sized(reel_reply_t *r, size_t request_len, int kind) {
    unsigned long long size, max;
    int end = 0;

    if (r->code != CLIENT_RESOURCE_EXHAUSTED || r->details == NULL ||
        sscanf(r->details, "Received message larger than max (%llu vs. "
                           "%llu)%n",
               &size, &max, &end) != 2 ||
        r->details[end] != '\0')
        return;
    if (size == request_len && kind == CLIENT_SIZED_UPLOAD)
        client_reply_set(r, CLIENT_INVALID_ARGUMENT,
                         "a message of the upload: %llu bytes, more than "
                         "reeld takes in one message (its "
                         "--max-message-bytes), at most %llu; send an "
                         "artifact's bytes in chunks of at most 1 MiB",
                         size, max);
    else if (size == request_len)
        client_reply_set(r, CLIENT_INVALID_ARGUMENT,
                         "request: %llu bytes, more than reeld takes in one "
                         "message (its --max-message-bytes), at most %llu; "
                         "values and payloads have smaller limits of their "
                         "own (1 MiB by default): store large data as a "
                         "workspace artifact",
                         size, max);
    else
        client_reply_set(r, CLIENT_RESOURCE_EXHAUSTED,
                         "%s: %llu bytes, more than this client takes in "
                         "one message (max_receive_bytes), at most %llu",
                         kind == CLIENT_SIZED_STREAM ? "a message of the "
                                                       "stream"
                                                     : "answer",
                         size, max);
}

int64_t client_now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void reel_reply_fini(reel_reply_t *r) {
    if (r == NULL)
        return;
    free(r->details);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* ---- Options and the channel --------------------------------------------- */

/* Fills o from in (NULL: all defaults), each 0 with its default, and
 * checks every limit. */
static int opts_resolve(const reel_client_opts_t *in, reel_client_opts_t *o,
                        reel_reply_t *err) {
    static const reel_client_opts_t none = REEL_CLIENT_OPTS_INIT;

    *o = in != NULL ? *in : none;
    for (size_t i = 0; i < sizeof(o->reserved) / sizeof(*o->reserved); i++)
        if (o->reserved[i] != NULL)
            return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                    "reserved[%zu]: must be NULL (it is "
                                    "for options of a later version)",
                                    i);
#define NOT_NEGATIVE(f)                                                      \
    if (o->f < 0)                                                            \
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,                \
                                #f ": %lld is negative (0 takes the "        \
                                "default)",                                  \
                                (long long)o->f);
    NOT_NEGATIVE(connect_timeout_ms)
    NOT_NEGATIVE(deadline_ms)
    NOT_NEGATIVE(backoff_initial_ms)
    NOT_NEGATIVE(backoff_max_ms)
    NOT_NEGATIVE(max_attempts)
    NOT_NEGATIVE(keepalive_time_ms)
    NOT_NEGATIVE(keepalive_timeout_ms)
#undef NOT_NEGATIVE
    if (o->connect_timeout_ms == 0)
        o->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (o->deadline_ms == 0)
        o->deadline_ms = DEFAULT_DEADLINE_MS;
    if (o->backoff_initial_ms == 0)
        o->backoff_initial_ms = DEFAULT_BACKOFF_INITIAL_MS;
    if (o->backoff_max_ms == 0)
        o->backoff_max_ms = o->backoff_initial_ms > DEFAULT_BACKOFF_MAX_MS
                                ? o->backoff_initial_ms
                                : DEFAULT_BACKOFF_MAX_MS;
    if (o->backoff_multiplier == 0)
        o->backoff_multiplier = DEFAULT_BACKOFF_MULTIPLIER;
    if (o->backoff_jitter == 0)
        o->backoff_jitter = DEFAULT_BACKOFF_JITTER;
    if (o->max_attempts == 0)
        o->max_attempts = DEFAULT_MAX_ATTEMPTS;
    if (o->keepalive_timeout_ms == 0)
        o->keepalive_timeout_ms = DEFAULT_KEEPALIVE_TIMEOUT_MS;
    /* gRPC takes its durations as int milliseconds. */
    if (o->connect_timeout_ms < MIN_CONNECT_TIMEOUT_MS ||
        o->connect_timeout_ms > INT_MAX)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "connect_timeout_ms: %lld is outside %d to "
                                "%d",
                                (long long)o->connect_timeout_ms,
                                MIN_CONNECT_TIMEOUT_MS, INT_MAX);
    if (o->backoff_initial_ms > INT_MAX)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "backoff_initial_ms: %lld exceeds the limit "
                                "of %d",
                                (long long)o->backoff_initial_ms, INT_MAX);
    if (o->backoff_max_ms > INT_MAX)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "backoff_max_ms: %lld exceeds the limit of "
                                "%d",
                                (long long)o->backoff_max_ms, INT_MAX);
    if (o->backoff_max_ms < o->backoff_initial_ms)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "backoff_max_ms: %lld is below "
                                "backoff_initial_ms (%lld)",
                                (long long)o->backoff_max_ms,
                                (long long)o->backoff_initial_ms);
    /* Written so that NaN fails too. */
    if (!(o->backoff_multiplier >= 1.0 &&
          o->backoff_multiplier <= MAX_BACKOFF_MULTIPLIER))
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "backoff_multiplier: %g is outside 1 to %g",
                                o->backoff_multiplier,
                                MAX_BACKOFF_MULTIPLIER);
    if (!(o->backoff_jitter >= 0.0 && o->backoff_jitter < 1.0))
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "backoff_jitter: %g is outside [0, 1)",
                                o->backoff_jitter);
    if (o->max_attempts > MAX_MAX_ATTEMPTS)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "max_attempts: %d exceeds the limit of %d",
                                o->max_attempts, MAX_MAX_ATTEMPTS);
    if (o->keepalive_time_ms > INT_MAX || o->keepalive_timeout_ms > INT_MAX)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "keepalive_%s_ms: %lld exceeds the limit of "
                                "%d",
                                o->keepalive_time_ms > INT_MAX ? "time"
                                                               : "timeout",
                                (long long)(o->keepalive_time_ms > INT_MAX
                                                ? o->keepalive_time_ms
                                                : o->keepalive_timeout_ms),
                                INT_MAX);
    if (o->max_receive_bytes > INT_MAX)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "max_receive_bytes: %zu exceeds the limit of "
                                "%d",
                                o->max_receive_bytes, INT_MAX);
    if (o->stream_window_bytes != 0 &&
        (o->stream_window_bytes < MIN_STREAM_WINDOW_BYTES ||
         o->stream_window_bytes > INT_MAX))
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "stream_window_bytes: %zu is outside %d to "
                                "%d (0: gRPC's own)",
                                o->stream_window_bytes,
                                MIN_STREAM_WINDOW_BYTES, INT_MAX);
    return CLIENT_OK;
}

/* The whole of a PEM file (field names the option), NUL-terminated. */
static int read_pem(const char *field, const char *path, char **out,
                    reel_reply_t *err) {
    FILE *f = fopen(path, "rb");
    size_t n;
    int rc = CLIENT_OK;

    *out = NULL;
    if (f == NULL)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "%s: cannot open %s: %s", field, path,
                                strerror(errno));
    if ((*out = malloc(MAX_PEM_BYTES + 1)) == NULL) {
        rc = client_reply_set(err, CLIENT_RESOURCE_EXHAUSTED,
                              "out of memory");
        goto out;
    }
    n = fread(*out, 1, MAX_PEM_BYTES + 1, f);
    if (ferror(f) || n > MAX_PEM_BYTES || n == 0) {
        rc = client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                              "%s: %s is %s", field, path,
                              ferror(f)       ? "unreadable"
                              : n == 0        ? "empty"
                                              : "over the limit of 1 MiB");
        free(*out);
        *out = NULL;
        goto out;
    }
    (*out)[n] = '\0';
    /* gRPC would log an SSL error and call the server unreachable. */
    if (strstr(*out, "-----BEGIN ") == NULL) {
        rc = client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                              "%s: %s is not PEM (no -----BEGIN line)", field,
                              path);
        free(*out);
        *out = NULL;
    }
out:
    fclose(f);
    return rc;
}

/* The first certificate of PEM text, or NULL. */
static X509 *first_cert(const char *pem) {
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;

    BIO_free(b);
    return x;
}

/* OpenSSL's passphrase callback for an encrypted key: none, so it never
 * asks the terminal (the key then does not read, which says why). */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/*
 * What gRPC would only log (and then call the server unreachable): a CA
 * file with no certificate OpenSSL can read, a certificate file likewise,
 * a key that does not read or is not the certificate's.
 */
static int check_pems(const reel_client_opts_t *o, const char *ca,
                      const char *cert, const char *key, reel_reply_t *err) {
    BIO *b;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    int rc = CLIENT_OK;

    if (ca != NULL && (x = first_cert(ca)) == NULL)
        rc = client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                              "tls_ca_file: %s holds no certificate that "
                              "reads",
                              o->tls_ca_file);
    X509_free(x);
    x = NULL;
    if (rc == CLIENT_OK && cert != NULL && (x = first_cert(cert)) == NULL)
        rc = client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                              "tls_cert_file: %s holds no certificate that "
                              "reads",
                              o->tls_cert_file);
    if (rc == CLIENT_OK && key != NULL &&
        (b = BIO_new_mem_buf(key, -1)) != NULL) {
        k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
        BIO_free(b);
        if (k == NULL)
            rc = client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                  "tls_key_file: %s holds no private key "
                                  "that reads (without a passphrase)",
                                  o->tls_key_file);
        else if (x != NULL && X509_check_private_key(x, k) != 1)
            rc = client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                  "tls_key_file: %s is not the key of "
                                  "the certificate in %s",
                                  o->tls_key_file, o->tls_cert_file);
    }
    EVP_PKEY_free(k);
    X509_free(x);
    ERR_clear_error();
    return rc;
}

/* The channel's credentials from the TLS options. */
static int channel_creds(const reel_client_opts_t *o,
                         grpc_channel_credentials **out, reel_reply_t *err) {
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_ssl_pem_key_cert_pair pair;
    int rc = CLIENT_OK;

    *out = NULL;
    if (!o->tls && o->tls_ca_file == NULL && o->tls_cert_file == NULL &&
        o->tls_key_file == NULL) {
        *out = grpc_insecure_credentials_create();
        return CLIENT_OK;
    }
    if ((o->tls_cert_file == NULL) != (o->tls_key_file == NULL))
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "tls_cert_file and tls_key_file go together: "
                                "give both or neither");
    if ((o->tls_ca_file != NULL &&
         (rc = read_pem("tls_ca_file", o->tls_ca_file, &ca, err)) !=
             CLIENT_OK) ||
        (o->tls_cert_file != NULL &&
         ((rc = read_pem("tls_cert_file", o->tls_cert_file, &cert, err)) !=
              CLIENT_OK ||
          (rc = read_pem("tls_key_file", o->tls_key_file, &key, err)) !=
              CLIENT_OK)) ||
        (rc = check_pems(o, ca, cert, key, err)) != CLIENT_OK)
        goto out;
    pair.private_key = key;
    pair.cert_chain = cert;
    *out = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL,
                                          NULL);
    if (*out == NULL)
        rc = client_reply_set(err, CLIENT_INTERNAL,
                              "gRPC refused the TLS credentials");
out:
    if (key != NULL)
        memset(key, 0, strlen(key));
    free(ca);
    free(cert);
    free(key);
    return rc;
}

static int check_token(const char *t, reel_reply_t *err) {
    size_t n = strlen(t);

    if (n == 0 || n > MAX_TOKEN_BYTES)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "token: %zu bytes, expected 1 to %d", n,
                                MAX_TOKEN_BYTES);
    /* Never echo the token itself. */
    for (size_t i = 0; i < n; i++)
        if (t[i] <= ' ' || t[i] > '~')
            return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                    "token: byte %zu is not printable ASCII "
                                    "without spaces",
                                    i);
    return CLIENT_OK;
}

static grpc_arg int_arg(const char *key, int64_t v) {
    return (grpc_arg){.type = GRPC_ARG_INTEGER,
                      .key = (char *)key,
                      .value.integer = (int)v};
}

static const char *env_set(const char *name) {
    const char *v = getenv(name);

    return v != NULL && *v != '\0' ? v : NULL;
}

int reel_client_opts_from_env(reel_client_opts_t *o, reel_reply_t *err) {
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    const char *v;

    if (err != NULL)
        memset(err, 0, sizeof(*err));
    if ((v = env_set("REEL_TLS")) != NULL) {
        int tls = -1;

        for (size_t i = 0; i < sizeof(yes) / sizeof(*yes); i++) {
            if (strcasecmp(v, yes[i]) == 0)
                tls = 1;
            if (strcasecmp(v, no[i]) == 0)
                tls = 0;
        }
        /* Read as "off", a typo would send the token in the clear. */
        if (tls < 0)
            return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                    "REEL_TLS: \"%.32s\" is not 1, true, "
                                    "yes, on, 0, false, no or off",
                                    v);
        o->tls = tls;
    }
    if ((v = env_set("REEL_TLS_CA")) != NULL)
        o->tls_ca_file = v;
    if ((v = env_set("REEL_TLS_CERT")) != NULL)
        o->tls_cert_file = v;
    if ((v = env_set("REEL_TLS_KEY")) != NULL)
        o->tls_key_file = v;
    if ((v = env_set("REEL_TOKEN")) != NULL)
        o->token = v;
    return CLIENT_OK;
}

const char *reel_client_option_names(const char *details, int flags,
                                     char *buf, size_t cap) {
    static const char *const map[][3] = {
        {"tls_ca_file", "--tls-ca", "REEL_TLS_CA"},
        {"tls_cert_file", "--tls-cert", "REEL_TLS_CERT"},
        {"tls_key_file", "--tls-key", "REEL_TLS_KEY"},
        {"token", "--token", "REEL_TOKEN"},
    };

    if (details == NULL)
        return "";
    for (size_t i = 0; i < sizeof(map) / sizeof(*map); i++) {
        size_t n = strlen(map[i][0]);

        if (strncmp(details, map[i][0], n) != 0 || details[n] != ':')
            continue;
        if (flags)
            snprintf(buf, cap, "%s (%s)%s", map[i][1], map[i][2],
                     details + n);
        else
            snprintf(buf, cap, "%s%s", map[i][2], details + n);
        return buf;
    }
    if (strncmp(details, "tls_cert_file and tls_key_file", 30) == 0) {
        snprintf(buf, cap, "%s go together: give both or neither",
                 flags ? "--tls-cert and --tls-key (REEL_TLS_CERT, "
                         "REEL_TLS_KEY)"
                       : "REEL_TLS_CERT and REEL_TLS_KEY");
        return buf;
    }
    return details;
}

int reel_client_create(const char *addr, const reel_client_opts_t *opts,
                       reel_client_t **out, reel_reply_t *err) {
    reel_client_opts_t o;
    grpc_channel_credentials *creds;
    grpc_channel_args chargs;
    grpc_arg args[10];
    reel_client_t *c = NULL;
    reel_status_t st = REEL_STATUS_INIT;
    int rc;

    if (err != NULL)
        memset(err, 0, sizeof(*err));
    if (out == NULL)
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "out: NULL (where the client goes)");
    *out = NULL;
    if (addr == NULL || *addr == '\0')
        return client_reply_set(err, CLIENT_INVALID_ARGUMENT,
                                "addr: empty (HOST:PORT expected)");
    /* A port alone or a URL, which gRPC would take for a host's name or a
     * scheme of its own (a DNS failure, retried for ever): said as what
     * it is, in the words reelctl uses. */
    if (reel_addr_mistake("addr", addr, &st) != REEL_OK) {
        rc = client_reply_set(err, CLIENT_INVALID_ARGUMENT, "%s",
                              reel_status_message(&st));
        reel_status_fini(&st);
        return rc;
    }
    if ((rc = opts_resolve(opts, &o, err)) != CLIENT_OK)
        return rc;
    if (o.token != NULL && (rc = check_token(o.token, err)) != CLIENT_OK)
        return rc;
    /* Plain grpc_init: the process's log function and Abseil's settings
     * are its program's to choose (reel's programs call reel_grpc_init). */
    grpc_init();
    if ((rc = channel_creds(&o, &creds, err)) != CLIENT_OK) {
        grpc_shutdown();
        return rc;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        grpc_channel_credentials_release(creds);
        grpc_shutdown();
        return client_reply_set(err, CLIENT_RESOURCE_EXHAUSTED,
                                "out of memory");
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->left, NULL);
    if (o.token != NULL) {
        size_t n = strlen(o.token);

        c->auth_value = grpc_slice_malloc(7 + n);
        memcpy(GRPC_SLICE_START_PTR(c->auth_value), "Bearer ", 7);
        memcpy(GRPC_SLICE_START_PTR(c->auth_value) + 7, o.token, n);
        c->has_token = 1;
    }
    c->backoff = (client_backoff_t){o.backoff_initial_ms, o.backoff_max_ms,
                                    o.backoff_multiplier, o.backoff_jitter};
    c->deadline_ms = o.deadline_ms;
    c->max_attempts = o.max_attempts;
    c->tls = o.tls || o.tls_ca_file != NULL || o.tls_cert_file != NULL;
    c->client_cert = o.tls_cert_file != NULL;
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    chargs.num_args = 0;
    chargs.args = args;
    /* gRPC's minimum reconnect backoff is its connect timeout. */
    args[chargs.num_args++] =
        int_arg(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, o.connect_timeout_ms);
    args[chargs.num_args++] = int_arg(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                                      o.backoff_initial_ms);
    args[chargs.num_args++] =
        int_arg(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, o.backoff_max_ms);
    if (o.max_receive_bytes != 0)
        args[chargs.num_args++] =
            int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                    (int64_t)o.max_receive_bytes);
    if (o.keepalive_time_ms != 0) {
        args[chargs.num_args++] =
            int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, o.keepalive_time_ms);
        args[chargs.num_args++] =
            int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, o.keepalive_timeout_ms);
        /* A quiet stream sends no data: let the pings go anyway. */
        args[chargs.num_args++] =
            int_arg(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    }
    if (o.stream_window_bytes != 0) {
        /* Probing would grow the window again. */
        args[chargs.num_args++] = int_arg(GRPC_ARG_HTTP2_BDP_PROBE, 0);
        args[chargs.num_args++] =
            int_arg(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                    (int64_t)o.stream_window_bytes);
    }
    c->channel = grpc_channel_create(addr, creds, &chargs);
    grpc_channel_credentials_release(creds);
    *out = c;
    return CLIENT_OK;
}

const char *reel_client_hint(const reel_client_t *c, int code,
                             const char *details, int flags, char *buf,
                             size_t cap) {
    const char *ca = flags ? "--tls-ca" : "REEL_TLS_CA";
    const char *cert = flags ? "--tls-cert" : "REEL_TLS_CERT";
    const char *key = flags ? "--tls-key" : "REEL_TLS_KEY";
    int connected;

    if (c != NULL && code == CLIENT_UNAUTHENTICATED && !c->has_token) {
        snprintf(buf, cap, "reeld at %s asks for a token: give %s",
                 c->addr, flags ? "--token (or REEL_TOKEN)" : "REEL_TOKEN");
        return buf;
    }
    if (c == NULL || code != CLIENT_UNAVAILABLE || details == NULL)
        return NULL;
    /* gRPC says "failed to connect" when no connection was made. */
    connected = strstr(details, "failed to connect") == NULL;
    if (strstr(details, "is not in peer certificate"))
        snprintf(buf, cap,
                 "reeld's certificate does not name the host of %s: connect "
                 "by a name or address its certificate holds (its "
                 "subjectAltName)",
                 c->addr);
    else if (strstr(details, "andshake"))
        snprintf(buf, cap,
                 "no TLS handshake with %s: does reeld serve TLS there, and "
                 "does %s hold its CA?",
                 c->addr, ca);
    else if (!connected && strstr(details, "Socket closed") &&
             c->client_cert)
        snprintf(buf, cap,
                 "%s closed the connection: if reeld serves TLS there, does "
                 "%s hold its CA, and is %s signed by the CA of its "
                 "--tls-client-ca?",
                 c->addr, ca, cert);
    else if (!connected && strstr(details, "Socket closed") && c->tls)
        snprintf(buf, cap,
                 "%s closed the connection: if reeld asks for a client "
                 "certificate there, give %s and %s",
                 c->addr, cert, key);
    else if (!connected && strstr(details, "Socket closed"))
        snprintf(buf, cap,
                 "%s closed the connection: if reeld serves TLS there, give "
                 "%s (or REEL_TLS=1), and %s and %s if it asks for a client "
                 "certificate; or reeld is at its --max-connections (its log "
                 "says so)",
                 c->addr, ca, cert, key);
    else if (connected && (strstr(details, "Socket closed") ||
                           strstr(details, "reset by peer")))
        snprintf(buf, cap, "%s closed the connection: did reeld stop?",
                 c->addr);
    else if (strstr(details, "connect"))
        snprintf(buf, cap, "is reeld running on %s?", c->addr);
    else
        return NULL;
    return buf;
}

const char *reel_client_hint_note(const reel_client_t *c, int code,
                                  const char *details, char *buf,
                                  size_t cap) {
    char hint[512];

    if (reel_client_hint(c, code, details, 0, hint, sizeof(hint)) != NULL)
        snprintf(buf, cap, " (%s)", hint);
    else if (cap > 0)
        buf[0] = '\0';
    return buf;
}

void reel_client_destroy(reel_client_t *c) {
    if (c == NULL)
        return;
    reel_client_shutdown(c);
    pthread_mutex_lock(&c->mu);
    for (client_user_t *u = c->users; u != NULL; u = u->next)
        if (pthread_equal(u->thread, pthread_self())) {
            /* It would wait for itself for ever: say so and stop here. */
            fprintf(stderr,
                    "reel_client_destroy: called from within a call on the "
                    "same client (a callback's): it would wait for that "
                    "call for ever\n");
            abort();
        }
    while (c->users != NULL)
        pthread_cond_wait(&c->left, &c->mu);
    pthread_mutex_unlock(&c->mu);
    grpc_channel_destroy(c->channel);
    if (c->has_token) {
        /* The token's copy: wiped before it is freed. */
        memset(GRPC_SLICE_START_PTR(c->auth_value), 0,
               GRPC_SLICE_LENGTH(c->auth_value));
        grpc_slice_unref(c->auth_value);
    }
    pthread_cond_destroy(&c->left);
    pthread_mutex_destroy(&c->mu);
    free(c);
    grpc_shutdown();
}

const client_backoff_t *client_backoff_of(const reel_client_t *c) {
    return &c->backoff;
}

int64_t client_deadline_ms(const reel_client_t *c) {
    return c->deadline_ms;
}

/* ---- Cancelling from another thread -------------------------------------- */

/* The calls a switch cancels are call_t (below), linked through next. */
static void cancel_calls(client_cancel_t *k);

void client_cancel_init(client_cancel_t *k) {
    memset(k, 0, sizeof(*k));
    pthread_mutex_init(&k->mu, NULL);
    reel_cond_init_mono(&k->cv);
}

void client_cancel_fini(client_cancel_t *k) {
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
}

void client_cancel_fire(client_cancel_t *k, const char *why) {
    pthread_mutex_lock(&k->mu);
    if (!k->fired) {
        k->fired = 1;
        k->why = why;
    }
    /* Under the lock: a call leaves the list under it before its unref. */
    cancel_calls(k);
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

int client_cancel_fired(client_cancel_t *k) {
    int f;

    pthread_mutex_lock(&k->mu);
    f = k->fired;
    pthread_mutex_unlock(&k->mu);
    return f;
}

int client_cancel_wait(client_cancel_t *k, int64_t ms) {
    struct timespec until;
    int f;

    until = reel_clock_mono_after(ms);
    pthread_mutex_lock(&k->mu);
    while (!k->fired &&
           pthread_cond_timedwait(&k->cv, &k->mu, &until) != ETIMEDOUT) {
    }
    f = k->fired;
    pthread_mutex_unlock(&k->mu);
    return f;
}

/* ---- Who is using a client ----------------------------------------------- */

#define WHY_SHUTDOWN                                                         \
    "the client was shut down (reel_client_shutdown or reel_client_destroy)"

int client_enter(reel_client_t *c, client_user_t *u, client_cancel_t *k,
                 reel_reply_t *r) {
    int closing;

    u->thread = pthread_self();
    u->cancel = k;
    pthread_mutex_lock(&c->mu);
    closing = c->closing;
    if (!closing) {
        u->next = c->users;
        c->users = u;
    }
    pthread_mutex_unlock(&c->mu);
    if (closing)
        return client_reply_set(r, CLIENT_CANCELLED, "%s", WHY_SHUTDOWN);
    return CLIENT_OK;
}

void client_leave(reel_client_t *c, client_user_t *u) {
    pthread_mutex_lock(&c->mu);
    for (client_user_t **p = &c->users; *p != NULL; p = &(*p)->next)
        if (*p == u) {
            *p = u->next;
            break;
        }
    pthread_cond_broadcast(&c->left);
    /* The last touch of c: destroy may free it once this unlocks. */
    pthread_mutex_unlock(&c->mu);
}

/* A public call's start: its arguments' pointers, then c entered with a
 * switch of its own (k), which shutdown fires. */
static int public_enter(reel_client_t *c, reel_reply_t *r, client_user_t *u,
                        client_cancel_t *k) {
    int rc;

    if (r == NULL)
        return CLIENT_INVALID_ARGUMENT; /* nowhere to say more */
    memset(r, 0, sizeof(*r));
    if (c == NULL)
        return client_reply_set(r, CLIENT_INVALID_ARGUMENT, "client: NULL");
    client_cancel_init(k);
    if ((rc = client_enter(c, u, k, r)) != CLIENT_OK)
        client_cancel_fini(k);
    return rc;
}

static void public_leave(reel_client_t *c, client_user_t *u,
                         client_cancel_t *k) {
    client_leave(c, u);
    client_cancel_fini(k);
}

void reel_client_shutdown(reel_client_t *c) {
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    c->closing = 1;
    for (client_user_t *u = c->users; u != NULL; u = u->next)
        client_cancel_fire(u->cancel, WHY_SHUTDOWN);
    pthread_mutex_unlock(&c->mu);
}

/* The longest a reconnect wait goes without looking at its cancel. */
#define RECONNECT_STEP_MS 50

int client_reconnect_wait(reel_client_t *c, client_cancel_t *k,
                          int64_t min_ms, int64_t ms) {
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    int64_t start = client_now_ms();
    int fired = 0;

    grpc_channel_reset_connect_backoff(c->channel);
    for (;;) {
        int64_t waited = client_now_ms() - start, step;
        grpc_connectivity_state s;

        if (k != NULL && client_cancel_fired(k)) {
            fired = 1;
            break;
        }
        if (waited >= ms)
            break;
        s = grpc_channel_check_connectivity_state(c->channel, 1);
        if (s == GRPC_CHANNEL_READY && waited >= min_ms)
            break;
        step = ms - waited < RECONNECT_STEP_MS ? ms - waited
                                                : RECONNECT_STEP_MS;
        if (s == GRPC_CHANNEL_READY || cq == NULL) {
            struct timespec ts = {0, step * 1000000};

            if (k != NULL) {
                if (client_cancel_wait(k, step)) {
                    fired = 1;
                    break;
                }
                continue;
            }
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
            continue;
        }
        /* Until the state changes or the step ends: waiting on the queue
         * is what polls the channel's connection attempt. */
        grpc_channel_watch_connectivity_state(
            c->channel, s,
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_millis(step, GPR_TIMESPAN)),
            cq, NULL);
        (void)grpc_completion_queue_next(
            cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
    if (cq != NULL) {
        grpc_completion_queue_shutdown(cq);
        while (grpc_completion_queue_next(cq,
                                          gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                          NULL)
                   .type != GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(cq);
    }
    return fired;
}

/* ---- Calls --------------------------------------------------------------- */

#define TAG_START ((void *)1)
#define TAG_RECV ((void *)2)
#define TAG_STATUS ((void *)3)

/* One call and its completion queue. */
typedef struct call {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array md_in;
    client_cancel_t *cancel; /* in its list while the call runs */
    struct call *next;       /* the next call in that list */
    int ok;                  /* the last batch waited for succeeded */
} call_t;

static void cancel_calls(client_cancel_t *k) {
    for (call_t *x = k->calls; x != NULL; x = x->next)
        grpc_call_cancel_with_status(x->call, GRPC_STATUS_CANCELLED,
                                     k->why != NULL ? k->why : "cancelled",
                                     NULL);
}

/* Puts k's call in cancel's list (cancel may be NULL): 0, or -1 when it
 * has fired already (the call is not in it then). */
static int call_register(call_t *k, client_cancel_t *cancel) {
    int fired;

    if (cancel == NULL)
        return 0;
    pthread_mutex_lock(&cancel->mu);
    if (!(fired = cancel->fired)) {
        k->cancel = cancel;
        k->next = cancel->calls;
        cancel->calls = k;
    }
    pthread_mutex_unlock(&cancel->mu);
    return fired ? -1 : 0;
}

/* What a call refused by a fired switch says. */
static int refused_cancelled(const char *method, client_cancel_t *cancel,
                             reel_reply_t *r) {
    const char *why;

    pthread_mutex_lock(&cancel->mu);
    why = cancel->why != NULL ? cancel->why : "cancelled";
    pthread_mutex_unlock(&cancel->mu);
    return client_reply_set(r, CLIENT_CANCELLED,
                            "%s: cancelled before it was sent: %s", method,
                            why);
}

/* A deadline at_ms (client_now_ms's clock; INT64_MAX: none), as gRPC's. */
static gpr_timespec deadline_at(int64_t at_ms) {
    int64_t left;

    if (at_ms == INT64_MAX)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    left = at_ms - client_now_ms();
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(left > 0 ? left : 0,
                                             GPR_TIMESPAN));
}

/* When a call of timeout_ms started now ends (INT64_MAX: never). */
static int64_t end_of(int64_t timeout_ms) {
    int64_t now = client_now_ms();

    /* One past what a clock can reach is never, not an overflow. */
    return timeout_ms > 0 && timeout_ms < INT64_MAX - now ? now + timeout_ms
                                                          : INT64_MAX;
}

static grpc_event pluck(call_t *k, void *tag, gpr_timespec until) {
    return grpc_completion_queue_pluck(k->cq, tag, until, NULL);
}

static int bb_read(grpc_byte_buffer *bb, uint8_t **out, size_t *len) {
    grpc_byte_buffer_reader r;
    grpc_slice s;

    *out = NULL;
    *len = 0;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return -1;
    s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(s);
    *out = malloc(*len ? *len : 1);
    if (*out != NULL)
        memcpy(*out, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    return *out ? 0 : -1;
}

static char *slice_dup(grpc_slice s) {
    size_t n = GRPC_SLICE_LENGTH(s);
    char *p = malloc(n + 1);

    if (p != NULL) {
        memcpy(p, GRPC_SLICE_START_PTR(s), n);
        p[n] = '\0';
    }
    return p;
}

/* Frees what call_start made; the call must have received its status (or
 * never started). */
static void call_fini(call_t *k) {
    if (k->cancel != NULL) {
        pthread_mutex_lock(&k->cancel->mu);
        for (call_t **p = &k->cancel->calls; *p != NULL; p = &(*p)->next)
            if (*p == k) {
                *p = k->next;
                break;
            }
        pthread_mutex_unlock(&k->cancel->mu);
    }
    if (k->call != NULL)
        grpc_call_unref(k->call);
    grpc_metadata_array_destroy(&k->md_in);
    if (k->cq != NULL) {
        grpc_completion_queue_shutdown(k->cq);
        while (pluck(k, NULL, gpr_inf_future(GPR_CLOCK_REALTIME)).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(k->cq);
    }
}

/*
 * Starts a call, sends the request and waits for the initial metadata; the
 * caller receives the rest. On failure (the call could not start, or
 * cancel fired first) fills r and returns its code, with k finished.
 */
static int wait_tag(call_t *k, void *tag, reel_idle_fn on_idle,
                    int64_t idle_ms, void *arg);
static int call_finish(call_t *k, reel_reply_t *r);

/* op sends the call's initial metadata: the token, if the client has one
 * (auth is its storage, to outlive the batch's start). */
static void initial_metadata(const reel_client_t *c, grpc_op *op,
                             grpc_metadata *auth) {
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->has_token) {
        memset(auth, 0, sizeof(*auth));
        auth->key = grpc_slice_from_static_string("authorization");
        auth->value = c->auth_value;
        op->data.send_initial_metadata.count = 1;
        op->data.send_initial_metadata.metadata = auth;
    }
}

/*
 * A channel that failed to connect tries again only when something polls
 * it, and between calls nothing does but gRPC's backup poller (every 5 s):
 * a call soon after reeld is back would still fail, for seconds. So a call
 * on a channel in TRANSIENT_FAILURE first has it try at once and polls it
 * for up to PROBE_MS (within the call's own deadline): back, the call goes
 * through; still away, it fails as before, that much later.
 */
#define PROBE_MS 250

static void probe(reel_client_t *c, int64_t end_ms, client_cancel_t *cancel) {
    int64_t left;

    if (grpc_channel_check_connectivity_state(c->channel, 0) !=
        GRPC_CHANNEL_TRANSIENT_FAILURE)
        return;
    left = end_ms == INT64_MAX ? PROBE_MS : end_ms - client_now_ms();
    if (left > 0)
        client_reconnect_wait(c, cancel, 0,
                              left < PROBE_MS ? left : PROBE_MS);
}

/*
 * Starts k's call: the request sent, the server's initial metadata
 * received. A server sends that with its first message, so a stream that
 * has nothing to say yet (a watch of what comes next) waits here: with
 * on_idle, it runs every idle_ms meanwhile, and its non-zero answer
 * cancels the call: CLIENT_CANCELLED, r set. Whatever it returns but
 * CLIENT_OK, the call is over and freed.
 */
static int call_start_idle(reel_client_t *c, call_t *k, const char *method,
                           const void *req, size_t len, int64_t end_ms,
                           client_cancel_t *cancel, reel_idle_fn on_idle,
                           int64_t idle_ms, void *arg, reel_reply_t *r) {
    grpc_slice path, body;
    grpc_byte_buffer *bb;
    grpc_call_error e;
    grpc_op ops[4];
    grpc_metadata auth;
    int rc = CLIENT_OK;

    memset(k, 0, sizeof(*k));
    if (method == NULL || method[0] != '/' || (req == NULL && len > 0))
        return client_reply_set(r, CLIENT_INVALID_ARGUMENT,
                                method == NULL || method[0] != '/'
                                    ? "method: a path such as "
                                      "/reel.v1.KV/GetValue"
                                    : "req: NULL with a length");
    probe(c, end_ms, cancel);
    path = grpc_slice_from_copied_string(method);
    body = grpc_slice_from_copied_buffer(req, len);
    bb = grpc_raw_byte_buffer_create(&body, 1);
    grpc_metadata_array_init(&k->md_in);
    k->cq = grpc_completion_queue_create_for_pluck(NULL);
    k->call = grpc_channel_create_call(c->channel, NULL,
                                       GRPC_PROPAGATE_DEFAULTS, k->cq, path,
                                       NULL, deadline_at(end_ms), NULL);
    grpc_slice_unref(path);
    grpc_slice_unref(body);
    if (k->call == NULL) {
        rc = client_reply_set(r, CLIENT_INTERNAL,
                              "gRPC could not create a call of %s", method);
        goto out;
    }
    if (call_register(k, cancel) != 0) {
        rc = refused_cancelled(method, cancel, r);
        goto out;
    }
    memset(ops, 0, sizeof(ops));
    initial_metadata(c, &ops[0], &auth);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &k->md_in;
    if ((e = grpc_call_start_batch(k->call, ops, 4, TAG_START, NULL)) !=
        GRPC_CALL_OK) {
        rc = client_reply_set(r, CLIENT_INTERNAL,
                              "gRPC refused to start %s (call error %d)",
                              method, (int)e);
        goto out;
    }
    if (wait_tag(k, TAG_START, on_idle, idle_ms, arg) != 0) {
        reel_reply_t ended = {0};

        grpc_call_cancel(k->call, NULL);
        pluck(k, TAG_START, gpr_inf_future(GPR_CLOCK_REALTIME));
        (void)call_finish(k, &ended); /* its status, and the call freed */
        reel_reply_fini(&ended);
        memset(k, 0, sizeof(*k));
        grpc_byte_buffer_destroy(bb);
        return client_reply_set(r, CLIENT_CANCELLED,
                                "%s: ended before its first message",
                                method);
    }
out:
    grpc_byte_buffer_destroy(bb);
    if (rc != CLIENT_OK) {
        /* Never started: nothing to receive. */
        call_fini(k);
        memset(k, 0, sizeof(*k));
    }
    return rc;
}

static int call_start(reel_client_t *c, call_t *k, const char *method,
                      const void *req, size_t len, int64_t end_ms,
                      client_cancel_t *cancel, reel_reply_t *r) {
    return call_start_idle(c, k, method, req, len, end_ms, cancel, NULL, 0,
                           NULL, r);
}

/* Receives the status into r and frees the call; returns r->code. */
static int call_finish(call_t *k, reel_reply_t *r) {
    grpc_metadata_array trailing;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_call_error e;
    grpc_op op;

    grpc_metadata_array_init(&trailing);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &trailing;
    op.data.recv_status_on_client.status = &status;
    op.data.recv_status_on_client.status_details = &details;
    if ((e = grpc_call_start_batch(k->call, &op, 1, TAG_STATUS, NULL)) !=
        GRPC_CALL_OK) {
        client_reply_set(r, CLIENT_INTERNAL,
                         "gRPC refused to receive the status (call error "
                         "%d)",
                         (int)e);
        /* The call may still be in flight: cancel it so it ends. */
        grpc_call_cancel(k->call, NULL);
    } else {
        pluck(k, TAG_STATUS, gpr_inf_future(GPR_CLOCK_REALTIME));
        free(r->details);
        r->code = (int)status;
        r->details = slice_dup(details);
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&trailing);
    call_fini(k);
    return r->code;
}

/* Starts a receive of one message into *resp. 0, or -1 (r says why). */
static int recv_start(call_t *k, grpc_byte_buffer **resp, reel_reply_t *r) {
    grpc_call_error e;
    grpc_op op;

    *resp = NULL;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = resp;
    if ((e = grpc_call_start_batch(k->call, &op, 1, TAG_RECV, NULL)) ==
        GRPC_CALL_OK)
        return 0;
    client_reply_set(r, CLIENT_INTERNAL,
                     "gRPC refused to receive a message (call error %d)",
                     (int)e);
    return -1;
}

/* One attempt of a unary call that must end by end_ms. */
static int unary_once(reel_client_t *c, const char *method, const void *req,
                      size_t len, int64_t end_ms, client_cancel_t *cancel,
                      reel_reply_t *r) {
    grpc_byte_buffer *resp = NULL;
    int failed = 0, rc;
    call_t k;

    memset(r, 0, sizeof(*r));
    if ((rc = call_start(c, &k, method, req, len, end_ms, cancel, r)) !=
        CLIENT_OK)
        return rc;
    if (recv_start(&k, &resp, r) != 0) {
        grpc_call_cancel(k.call, NULL);
        failed = 1;
    } else {
        pluck(&k, TAG_RECV, gpr_inf_future(GPR_CLOCK_REALTIME));
    }
    if (resp != NULL) {
        if (bb_read(resp, &r->body, &r->len) != 0)
            failed = 2;
        grpc_byte_buffer_destroy(resp);
    }
    if (failed != 0) {
        /* What failed here says more than the status the call ends with. */
        reel_reply_t st = {0};

        call_finish(&k, &st);
        reel_reply_fini(&st);
        if (failed == 2)
            client_reply_set(r, CLIENT_RESOURCE_EXHAUSTED,
                             "out of memory reading the answer of %s",
                             method);
        return r->code;
    }
    call_finish(&k, r);
    client_reply_sized(r, len, CLIENT_SIZED_UNARY);
    rc = r->code;
    if (rc == CLIENT_OK && r->body == NULL)
        rc = client_reply_set(r, CLIENT_INTERNAL,
                              "%s answered OK without a message", method);
    return rc;
}

static int64_t unary_timeout(const reel_client_t *c, int64_t timeout_ms) {
    return timeout_ms == REEL_TIMEOUT_DEFAULT ? c->deadline_ms : timeout_ms;
}

/* How reeld refuses a write its queue has no room for (--write-queue,
 * --write-queue-bytes, a tenant's share): before anything was written. */
#define QUEUE_FULL "write queue is full"

static int refused_unqueued(const reel_reply_t *r) {
    return r->code == CLIENT_RESOURCE_EXHAUSTED && r->details != NULL &&
           strncmp(r->details, QUEUE_FULL, strlen(QUEUE_FULL)) == 0;
}

/*
 * Sends a unary call until it is answered with anything but a refusal to
 * send it again on: a full write queue's always (nothing was written), and
 * UNAVAILABLE when unavailable_too (the call may have been applied). Waits
 * a backoff between attempts, within the deadline and max_attempts.
 */
int client_unary(reel_client_t *c, const char *method, const void *req,
                 size_t len, int64_t timeout_ms, int unavailable_too,
                 client_cancel_t *cancel, reel_reply_t *r) {
    int64_t end_ms = end_of(unary_timeout(c, timeout_ms));
    uint64_t rng = client_rng_seed();
    int rc;

    for (unsigned attempt = 0;; attempt++) {
        int64_t delay;
        int busy;

        rc = unary_once(c, method, req, len, end_ms, cancel, r);
        busy = refused_unqueued(r);
        if ((!busy && !(unavailable_too && rc == CLIENT_UNAVAILABLE)) ||
            (int)attempt + 1 >= c->max_attempts)
            return rc;
        delay = client_backoff_delay(&c->backoff, attempt, &rng);
        /* No attempt that could not finish before the deadline. */
        if (end_ms != INT64_MAX && client_now_ms() + delay >= end_ms)
            return rc;
        /* A busy server is up: the whole wait, not until it is ready. */
        if (client_reconnect_wait(c, cancel, busy ? delay : delay / 4,
                                  delay))
            return refused_cancelled(method, cancel, r);
        reel_reply_fini(r);
    }
}

/* A public unary call: inside its client, so a shutdown cancels it. */
static int public_unary(reel_client_t *c, const char *method, const void *req,
                        size_t len, int64_t timeout_ms, int retry,
                        reel_reply_t *r) {
    client_user_t u;
    client_cancel_t k;
    int rc;

    if ((rc = public_enter(c, r, &u, &k)) != CLIENT_OK)
        return rc;
    rc = client_unary(c, method, req, len, timeout_ms, retry, &k, r);
    public_leave(c, &u, &k);
    return rc;
}

int reel_client_unary(reel_client_t *c, const char *method, const void *req,
                      size_t len, int64_t timeout_ms, reel_reply_t *r) {
    return public_unary(c, method, req, len, timeout_ms, 0, r);
}

int reel_client_unary_retry(reel_client_t *c, const char *method,
                            const void *req, size_t len, int64_t timeout_ms,
                            reel_reply_t *r) {
    return public_unary(c, method, req, len, timeout_ms, 1, r);
}

/*
 * Waits for the batch of tag; every idle_ms without it, runs on_idle.
 * Returns 0 once it completed, or on_idle's non-zero answer (the batch is
 * then still pending).
 */
static int wait_tag(call_t *k, void *tag, reel_idle_fn on_idle,
                    int64_t idle_ms, void *arg) {
    for (;;) {
        gpr_timespec until = on_idle != NULL
                                 ? deadline_at(end_of(idle_ms))
                                 : gpr_inf_future(GPR_CLOCK_REALTIME);
        grpc_event ev = pluck(k, tag, until);
        int stop;

        if (ev.type != GRPC_QUEUE_TIMEOUT) {
            k->ok = ev.success;
            return 0;
        }
        if ((stop = on_idle(arg)) != 0)
            return stop;
    }
}

int client_stream(reel_client_t *c, const char *method, const void *req,
                  size_t len, int64_t timeout_ms, reel_stream_fn on_msg,
                  reel_idle_fn on_idle, int64_t idle_ms, void *arg,
                  client_cancel_t *cancel, int *started, reel_reply_t *r) {
    reel_reply_t failed = {0};
    call_t k;
    int rc;

    memset(r, 0, sizeof(*r));
    if (started != NULL)
        *started = 0;
    if (on_msg == NULL)
        return client_reply_set(r, CLIENT_INVALID_ARGUMENT,
                                "on_msg: a stream needs one");
    if (idle_ms <= 0)
        on_idle = NULL;
    if ((rc = call_start_idle(c, &k, method, req, len, end_of(timeout_ms),
                              cancel, on_idle, idle_ms, arg, r)) != CLIENT_OK)
        return rc;
    if (started != NULL)
        *started = k.ok;
    for (;;) {
        grpc_byte_buffer *resp = NULL;
        uint8_t *body;
        size_t n;
        int stop;

        if (recv_start(&k, &resp, &failed) != 0) {
            grpc_call_cancel(k.call, NULL);
            break;
        }
        if (wait_tag(&k, TAG_RECV, on_idle, idle_ms, arg) != 0) {
            /* Cancelled, the receive completes (a message or none). */
            grpc_call_cancel(k.call, NULL);
            pluck(&k, TAG_RECV, gpr_inf_future(GPR_CLOCK_REALTIME));
            if (resp != NULL)
                grpc_byte_buffer_destroy(resp);
            break;
        }
        if (resp == NULL)
            break; /* the stream ended: the status follows */
        if (bb_read(resp, &body, &n) != 0) {
            grpc_byte_buffer_destroy(resp);
            grpc_call_cancel(k.call, NULL);
            client_reply_set(&failed, CLIENT_RESOURCE_EXHAUSTED,
                             "out of memory reading a message of %s",
                             method);
            break;
        }
        grpc_byte_buffer_destroy(resp);
        stop = on_msg(arg, body, n);
        free(body);
        if (stop) {
            grpc_call_cancel(k.call, NULL);
            break;
        }
    }
    rc = call_finish(&k, r);
    if (failed.code != CLIENT_OK) {
        /* The cancel's status would hide why. */
        reel_reply_fini(r);
        *r = failed;
        rc = r->code;
    } else {
        client_reply_sized(r, len, CLIENT_SIZED_STREAM);
        rc = r->code;
    }
    return rc;
}

/* One batch of ops on k's call, waited for: 1 if it succeeded. */
static int batch(call_t *k, grpc_op *ops, size_t n, void *tag) {
    if (grpc_call_start_batch(k->call, ops, n, tag, NULL) != GRPC_CALL_OK)
        return 0;
    return pluck(k, tag, gpr_inf_future(GPR_CLOCK_REALTIME)).success;
}

static int upload(reel_client_t *c, const char *method, int64_t timeout_ms,
                  reel_next_fn next, void *arg, client_cancel_t *cancel,
                  reel_reply_t *r) {
    grpc_slice path;
    grpc_byte_buffer *resp = NULL;
    reel_reply_t failed = {0};
    grpc_op ops[3];
    grpc_metadata auth;
    call_t k;
    size_t largest = 0; /* the largest message sent */
    int more = 1, rc;

    memset(r, 0, sizeof(*r));
    if (method == NULL || method[0] != '/' || next == NULL)
        return client_reply_set(r, CLIENT_INVALID_ARGUMENT,
                                next == NULL ? "next: an upload needs one"
                                             : "method: a path such as "
                                               "/reel.v1.Workspace/"
                                               "PutArtifact");
    probe(c, end_of(timeout_ms), cancel);
    path = grpc_slice_from_copied_string(method);
    memset(&k, 0, sizeof(k));
    grpc_metadata_array_init(&k.md_in);
    k.cq = grpc_completion_queue_create_for_pluck(NULL);
    k.call = grpc_channel_create_call(c->channel, NULL,
                                      GRPC_PROPAGATE_DEFAULTS, k.cq, path,
                                      NULL, deadline_at(end_of(timeout_ms)),
                                      NULL);
    grpc_slice_unref(path);
    if (k.call == NULL) {
        call_fini(&k);
        return client_reply_set(r, CLIENT_INTERNAL,
                                "gRPC could not create a call of %s",
                                method);
    }
    if (call_register(&k, cancel) != 0) {
        call_fini(&k);
        return refused_cancelled(method, cancel, r);
    }
    memset(ops, 0, sizeof(ops));
    initial_metadata(c, &ops[0], &auth);
    if (!batch(&k, ops, 1, TAG_START))
        more = 0; /* the status says why */
    while (more) {
        uint8_t *msg = NULL;
        size_t len = 0;
        int got = next(arg, &msg, &len);
        grpc_slice body;
        grpc_byte_buffer *bb;

        if (got <= 0) {
            free(msg);
            if (got < 0) {
                grpc_call_cancel(k.call, NULL);
                client_reply_set(&failed, CLIENT_CANCELLED,
                                 "the upload was given up");
            }
            break;
        }
        if (msg == NULL && len > 0) {
            /* Sent as an empty message, it would pass for an empty chunk. */
            grpc_call_cancel(k.call, NULL);
            client_reply_set(&failed, CLIENT_INVALID_ARGUMENT,
                             "next: gave msg NULL with len %zu (a message "
                             "of len bytes, or len 0 for an empty one)",
                             len);
            break;
        }
        /* The message is gRPC's from here: sent from where next() packed
         * it (a chunk of an artifact is 1 MiB: no copy), freed when sent. */
        if (msg != NULL && len > 0) {
            largest = len > largest ? len : largest;
            body = grpc_slice_new(msg, len, free);
        } else {
            free(msg);
            body = grpc_empty_slice();
        }
        bb = grpc_raw_byte_buffer_create(&body, 1);
        grpc_slice_unref(body);
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_MESSAGE;
        ops[0].data.send_message.send_message = bb;
        /* A failed send: the server ended the call; its status says why. */
        more = batch(&k, ops, 1, TAG_RECV);
        grpc_byte_buffer_destroy(bb);
        if (!more)
            break;
    }
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &k.md_in;
    ops[2].op = GRPC_OP_RECV_MESSAGE;
    ops[2].data.recv_message.recv_message = &resp;
    if (failed.code == CLIENT_OK)
        batch(&k, ops, 3, TAG_RECV);
    if (resp != NULL) {
        if (bb_read(resp, &r->body, &r->len) != 0)
            client_reply_set(&failed, CLIENT_RESOURCE_EXHAUSTED,
                             "out of memory reading the answer of %s",
                             method);
        grpc_byte_buffer_destroy(resp);
    }
    {
        uint8_t *body = r->body;
        size_t blen = r->len;

        r->body = NULL;
        rc = call_finish(&k, r);
        r->body = body;
        r->len = blen;
    }
    if (rc != CLIENT_OK) {
        client_reply_sized(r, largest, CLIENT_SIZED_UPLOAD);
        rc = r->code;
    }
    if (failed.code != CLIENT_OK) {
        reel_reply_fini(r);
        *r = failed;
        return r->code;
    }
    if (rc == CLIENT_OK && r->body == NULL)
        rc = client_reply_set(r, CLIENT_INTERNAL,
                              "%s answered OK without a message", method);
    return rc;
}

int reel_client_upload(reel_client_t *c, const char *method,
                       int64_t timeout_ms, reel_next_fn next, void *arg,
                       reel_reply_t *r) {
    client_user_t u;
    client_cancel_t k;
    int rc;

    if ((rc = public_enter(c, r, &u, &k)) != CLIENT_OK)
        return rc;
    rc = upload(c, method, timeout_ms, next, arg, &k, r);
    public_leave(c, &u, &k);
    return rc;
}

int reel_client_stream_idle(reel_client_t *c, const char *method,
                            const void *req, size_t len, int64_t timeout_ms,
                            reel_stream_fn on_msg, reel_idle_fn on_idle,
                            int64_t idle_ms, void *arg, reel_reply_t *r) {
    client_user_t u;
    client_cancel_t k;
    int rc;

    if ((rc = public_enter(c, r, &u, &k)) != CLIENT_OK)
        return rc;
    rc = client_stream(c, method, req, len, timeout_ms, on_msg, on_idle,
                       idle_ms, arg, &k, NULL, r);
    public_leave(c, &u, &k);
    return rc;
}

int reel_client_stream(reel_client_t *c, const char *method, const void *req,
                       size_t len, int64_t timeout_ms, reel_stream_fn on_msg,
                       void *arg, reel_reply_t *r) {
    return reel_client_stream_idle(c, method, req, len, timeout_ms, on_msg,
                                   NULL, 0, arg, r);
}
