/*
 * sink/retry.c: the retry schedule and Retry-After; see retry.h.
 */
#include "sink/retry.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_RETRY_AFTER_MAX_MS 600000

void sink_retry_defaults(sink_retry_t *r) {
    static const int64_t steps[] = {5000,     300000,   1800000, 7200000,
                                    18000000, 36000000, 36000000};

    memset(r, 0, sizeof(*r));
    memcpy(r->steps_ms, steps, sizeof(steps));
    r->n_steps = sizeof(steps) / sizeof(steps[0]);
    r->jitter = 0.2;
    r->retry_after_max_ms = DEFAULT_RETRY_AFTER_MAX_MS;
}

uint64_t sink_rng_seed(void) {
    struct timespec ts;
    uint64_t x;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
        ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)pthread_self();
    return x ? x : 0x9e3779b97f4a7c15ULL;
}

double sink_rng_unit(uint64_t *rng) {
    uint64_t x = *rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

int64_t sink_retry_next(const sink_retry_t *r, unsigned failures,
                        int64_t first_ms, int64_t now_ms, int block,
                        uint64_t *rng) {
    int64_t base, wait;

    if (failures == 0)
        return 0;
    if (failures <= r->n_steps)
        base = r->steps_ms[failures - 1];
    else if (block)
        base = r->n_steps > 0 ? r->steps_ms[r->n_steps - 1] : 5000;
    else
        return -1;
    wait = base + (int64_t)((double)base * r->jitter *
                            (2.0 * sink_rng_unit(rng) - 1.0));
    if (wait < 0)
        wait = 0;
    if (!block && r->max_age_ms > 0 && now_ms + wait - first_ms > r->max_age_ms)
        return -1;
    return wait;
}

int64_t sink_retry_with_after(const sink_retry_t *r, int64_t wait,
                              int64_t after_ms, int64_t first_ms,
                              int64_t now_ms, int block) {
    if (wait < 0 || after_ms <= wait)
        return wait;
    if (!block && r->max_age_ms > 0 &&
        now_ms + after_ms - first_ms > r->max_age_ms)
        return -1;
    return after_ms;
}

/* Under a second in ms: a short schedule's 20 ms is not "0.0 s". */
static void format_ms(char *buf, size_t cap, int64_t ms) {
    if (ms < 1000)
        snprintf(buf, cap, "%lld ms", (long long)ms);
    else
        snprintf(buf, cap, "%.1f s", (double)ms / 1000.0);
}

void sink_retry_describe(char *buf, size_t cap, int64_t wait,
                         int64_t scheduled, int64_t after_ms, int throttled) {
    char w[32], a[32];

    format_ms(w, sizeof(w), wait);
    /* sink_retry_with_after() takes the Retry-After only when it is the
     * later; a shorter one leaves the schedule's wait, and the log must
     * not send whoever reads it to the receiver. */
    if (after_ms >= 0 && after_ms > scheduled)
        snprintf(buf, cap, "%s (the receiver's Retry-After)", w);
    else if (after_ms >= 0) {
        format_ms(a, sizeof(a), after_ms);
        snprintf(buf, cap,
                 "%s (the retry schedule's; the receiver's Retry-After "
                 "asked for %s)",
                 w, a);
    } else if (throttled)
        snprintf(buf, cap, "%s (throttled: the sink waits)", w);
    else
        snprintf(buf, cap, "%s", w);
}

int sink_retry_throttles(long http_status) {
    return http_status == 429 || http_status == 502 || http_status == 503 ||
           http_status == 504;
}

int sink_retry_after_parse(const char *value, int64_t now_unix_ms,
                           int64_t cap_ms, int64_t *ms) {
    const char *p = value;
    struct tm tm;
    int64_t v;
    char *end;

    while (*p == ' ' || *p == '\t')
        p++;
    if (isdigit((unsigned char)*p)) {
        unsigned long long secs = strtoull(p, &end, 10);

        while (*end == ' ' || *end == '\t')
            end++;
        if (*end != '\0')
            return -1;
        /* Seconds past the cap need not be multiplied (nor overflow). */
        v = secs > (unsigned long long)cap_ms / 1000 + 1
                ? cap_ms
                : (int64_t)secs * 1000;
    } else {
        time_t t;

        memset(&tm, 0, sizeof(tm));
        end = strptime(p, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        if (end == NULL) {
            return -1;
        }
        while (*end == ' ' || *end == '\t')
            end++;
        if (*end != '\0')
            return -1;
        t = timegm(&tm);
        v = (int64_t)t * 1000 - now_unix_ms;
        if (v < 0)
            v = 0;
    }
    *ms = v > cap_ms ? cap_ms : v;
    return 0;
}
