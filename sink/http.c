/*
 * sink/http.c: a signed Standard Webhooks POST on a libcurl handle; see
 * http.h.
 */
#include "sink/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static size_t discard(char *buf, size_t size, size_t n, void *arg) {
    (void)buf;
    (void)arg;
    return size * n; /* the receiver's answer is not needed */
}

/* libcurl's header callback: each line of the answer's headers. A status
 * line starts a response (an interim one may come first); the empty line
 * ends its headers. */
static size_t on_header(char *buf, size_t size, size_t n, void *arg) {
    sink_http_answer_t *a = arg;
    size_t len = size * n;

    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0)
        a->headers_done = 0;
    else if ((len == 2 && buf[0] == '\r' && buf[1] == '\n') ||
             (len == 1 && buf[0] == '\n'))
        a->headers_done = 1;
    if (len > 12 && strncasecmp(buf, "retry-after:", 12) == 0) {
        size_t i = 12, j = len;

        while (i < j && (buf[i] == ' ' || buf[i] == '\t'))
            i++;
        while (j > i && (buf[j - 1] == '\r' || buf[j - 1] == '\n' ||
                         buf[j - 1] == ' '))
            j--;
        if (j - i < sizeof(a->retry_after)) {
            memcpy(a->retry_after, buf + i, j - i);
            a->retry_after[j - i] = '\0';
        }
    }
    return len;
}

CURLcode sink_http_result(const sink_http_answer_t *ans, CURLcode cc,
                          char *errbuf) {
    if (cc != CURLE_OK || ans->headers_done)
        return cc;
    snprintf(errbuf, CURL_ERROR_SIZE, "the answer ended inside its headers");
    return CURLE_PARTIAL_FILE;
}

/* Appends line to *h; -1 when out of memory. */
static int add(struct curl_slist **h, const char *line) {
    struct curl_slist *t = curl_slist_append(*h, line);

    if (t == NULL)
        return -1;
    *h = t;
    return 0;
}

int sink_http_prepare(CURL *easy, const sink_http_post_t *p, int64_t unix_s,
                      struct curl_slist **hdrs, char *errbuf,
                      sink_http_answer_t *ans) {
    struct curl_slist *h = NULL;
    char line[256], *sig = NULL, *hs = NULL;
    size_t need;
    int rc = -1;

    if ((sig = sink_sign(p->secrets, p->n_secrets, p->id, unix_s, p->body,
                         p->len)) == NULL)
        goto out;
    need = strlen(sig) + 20;
    if ((hs = malloc(need)) == NULL)
        goto out;
    snprintf(hs, need, "webhook-signature: %s", sig);
    if (add(&h, "Content-Type: application/json") != 0)
        goto out;
    snprintf(line, sizeof(line), "webhook-id: %s", p->id);
    if (add(&h, line) != 0)
        goto out;
    snprintf(line, sizeof(line), "webhook-timestamp: %lld",
             (long long)unix_s);
    if (add(&h, line) != 0 || add(&h, hs) != 0)
        goto out;
    snprintf(line, sizeof(line), "User-Agent: %s", p->user_agent);
    /* No 100-continue round trip before larger bodies. */
    if (add(&h, line) != 0 || add(&h, "Expect:") != 0)
        goto out;
    for (size_t i = 0; i < p->n_headers; i++)
        if (add(&h, p->headers[i]) != 0)
            goto out;
    curl_slist_free_all(*hdrs);
    *hdrs = h;
    h = NULL;
    errbuf[0] = '\0';
    curl_easy_setopt(easy, CURLOPT_URL, p->url);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, p->body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)p->len);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)p->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)p->connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
    memset(ans, 0, sizeof(*ans));
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, ans);
    rc = 0;
out:
    curl_slist_free_all(h);
    free(hs);
    free(sig);
    return rc;
}
