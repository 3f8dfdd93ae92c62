/*
 * base/log.c: line-at-a-time logging to stderr.
 */
#include "base/log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* The process-wide threshold: the one piece of global state, set at start. */
static atomic_int log_level = REEL_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void reel_log_set_level(reel_log_level_t level) {
    atomic_store(&log_level, (int)level);
}

int reel_log_enabled(reel_log_level_t level) {
    return (int)level >= atomic_load(&log_level);
}

int reel_log_parse_level(const char *name, reel_log_level_t *out) {
    static const char *const lower[] = {"debug", "info", "warn", "error"};

    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, lower[i]) == 0) {
            *out = (reel_log_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *out = REEL_LOG_WARN;
        return 0;
    }
    return -1;
}

void reel_log(reel_log_level_t level, const char *module, const char *fmt,
              ...) {
    char line[2048];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    size_t n;
    int w;

    if (!reel_log_enabled(level))
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    w = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s: ",
                 ts.tv_nsec / 1000000L, level_names[level], module);
    if (w > 0)
        n += (size_t)w;
    va_start(ap, fmt);
    w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (w > 0)
        n += (size_t)w < sizeof(line) - n ? (size_t)w : sizeof(line) - n - 1;
    /* A message cut short still ends its line. */
    if (n >= sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0) {
        /* Nowhere left to report a failing stderr. */
    }
}

void reel_log_retried(char **last, const char *module, const char *what,
                      const char *then, const char *failure) {
    if (failure == NULL) {
        if (*last != NULL)
            reel_log(REEL_LOG_INFO, module, "%s works again", what);
        free(*last);
        *last = NULL;
        return;
    }
    if (*last != NULL && strcmp(*last, failure) == 0)
        return;
    reel_log(REEL_LOG_ERROR, module, "%s failed; %s: %s", what, then, failure);
    free(*last);
    *last = strdup(failure);
}
