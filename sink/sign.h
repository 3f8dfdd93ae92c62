/*
 * sink/sign.h: Standard Webhooks signatures (reel-sink's and
 * reel-reactor's: part of //sink:http).
 *
 * A secret is "whsec_" followed by the base64 of its key bytes. A request
 * is signed over "<webhook-id>.<webhook-timestamp>.<body>" with
 * HMAC-SHA256 under each configured key; webhook-signature lists
 * "v1,<base64 of the MAC>" for every key, separated by spaces, so a
 * receiver that knows any one of them accepts the request and keys can be
 * rotated by listing the new one beside the old. HMAC from OpenSSL. Pure;
 * thread-safe.
 */
#ifndef REEL_SINK_SIGN_H
#define REEL_SINK_SIGN_H

#include <stddef.h>
#include <stdint.h>

#define SINK_SECRET_MAX 256 /* decoded bytes of one secret */

typedef struct sink_secret {
    uint8_t key[SINK_SECRET_MAX];
    size_t len;
} sink_secret_t;

/*
 * Decodes "whsec_<base64>" into s. 0, or -1 with *why saying what is wrong
 * (never repeating the secret).
 */
int sink_secret_decode(const char *text, sink_secret_t *s, const char **why);

/*
 * The webhook-signature header's value for body under every secret:
 * malloc'd, NUL-terminated; NULL when out of memory.
 */
char *sink_sign(const sink_secret_t *secrets, size_t n, const char *id,
                int64_t timestamp, const char *body, size_t len);

/* Standard base64 of in[0..len) into a malloc'd string (NULL: out of
 * memory), and back (-1 on bad input). */
char *sink_base64(const uint8_t *in, size_t len);
int sink_unbase64(const char *in, size_t len, uint8_t **out, size_t *outlen);

#endif
