/*
 * base/log.h: one line per event, with a time, a level and the module.
 *
 *   2026-11-22T06:10:00.123Z INFO store: opened ./reel-data at revision 42
 *
 * Lines go to stderr with a single write(2), so lines from different threads
 * never interleave. Thread-safe.
 */
#ifndef REEL_BASE_LOG_H
#define REEL_BASE_LOG_H

typedef enum reel_log_level {
    REEL_LOG_DEBUG = 0,
    REEL_LOG_INFO,
    REEL_LOG_WARN,
    REEL_LOG_ERROR,
} reel_log_level_t;

/* Lines below level are dropped. The default is INFO. */
void reel_log_set_level(reel_log_level_t level);
int reel_log_enabled(reel_log_level_t level);

/* Parses "debug", "info", "warn" or "error". Returns 0, or -1 if unknown. */
int reel_log_parse_level(const char *name, reel_log_level_t *out);

void reel_log(reel_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define REEL_DEBUG(mod, ...) reel_log(REEL_LOG_DEBUG, mod, __VA_ARGS__)
#define REEL_INFO(mod, ...) reel_log(REEL_LOG_INFO, mod, __VA_ARGS__)
#define REEL_WARN(mod, ...) reel_log(REEL_LOG_WARN, mod, __VA_ARGS__)
#define REEL_ERROR(mod, ...) reel_log(REEL_LOG_ERROR, mod, __VA_ARGS__)

/*
 * For background work retried at intervals (a trim, a purge): logs a
 * failure, "<what> failed; <then>: <message>" at ERROR, the first time and
 * whenever its message changes, not at every retry; and "<what> works
 * again" at INFO on the first success after one (failure NULL). *last is
 * the failure last logged (malloc'd, NULL for none): start it NULL and
 * free() it at the end.
 */
void reel_log_retried(char **last, const char *module, const char *what,
                      const char *then, const char *failure);

#endif
