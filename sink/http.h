/*
 * sink/http.h: one signed Standard Webhooks POST on a libcurl easy handle,
 * shared by reel-sink's webhooks and reel-reactor's dispatches (both link
 * //sink:http, with sign.h and retry.h).
 *
 * The request: POST to url, Content-Type: application/json, webhook-id,
 * webhook-timestamp (the attempt's Unix seconds), webhook-signature (every
 * secret, see sign.h), User-Agent, no 100-continue, the extra headers;
 * redirects are not followed; the answer's body is discarded. Each
 * attempt is prepared again, so a retry is signed with its own timestamp
 * and keeps its id.
 *
 * Secrets go only into the HMAC. Nothing here logs. Thread-safe on
 * distinct handles.
 */
#ifndef REEL_SINK_HTTP_H
#define REEL_SINK_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "sink/sign.h"

typedef struct sink_http_post {
    const char *url;
    const sink_secret_t *secrets;
    size_t n_secrets;
    char *const *headers;   /* extra "Name: value" lines; may be NULL */
    size_t n_headers;
    const char *user_agent; /* "reel-sink/1.2.3" */
    const char *id;         /* webhook-id */
    const char *body;       /* not copied: must outlive the transfer */
    size_t len;
    int64_t timeout_ms;
    int64_t connect_timeout_ms;
} sink_http_post_t;

/* What an attempt's answer said in its headers. */
typedef struct sink_http_answer {
    char retry_after[64]; /* its Retry-After value; "" when none */
    int headers_done;     /* the empty line that ends them arrived */
} sink_http_answer_t;

/*
 * Sets easy up for one attempt of p, signed at unix_s, its answer's
 * headers read into *ans (cleared here). The header list replaces *hdrs
 * (the old one is freed); the caller frees the last with
 * curl_slist_free_all once the transfer is over. errbuf (CURL_ERROR_SIZE
 * bytes) receives libcurl's error text. The caller adds its own
 * CURLOPT_PRIVATE. 0, or -1 when out of memory (*hdrs then unchanged).
 */
int sink_http_prepare(CURL *easy, const sink_http_post_t *p, int64_t unix_s,
                      struct curl_slist **hdrs, char *errbuf,
                      sink_http_answer_t *ans);

/*
 * The transfer's result as an attempt's: cc, or CURLE_PARTIAL_FILE with
 * errbuf saying so when the connection closed inside the answer's
 * headers (a status line and a close is no answer, whatever it said).
 */
CURLcode sink_http_result(const sink_http_answer_t *ans, CURLcode cc,
                          char *errbuf);

#endif
