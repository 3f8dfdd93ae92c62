/*
 * testing/fixture.c: temporary data dirs, stores on them, and sinks (see
 * fixture.h).
 *
 * Sink waits use a condition variable on CLOCK_MONOTONIC and an absolute
 * deadline computed once, so a wait woken by an unrelated change goes back
 * to sleep for what is left, not for the whole timeout again.
 */
#include "testing/fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/clock.h"

/* ---- Data dirs ----------------------------------------------------------- */

int testing_dir_make(char *dir, size_t size, const char *prefix) {
    const char *tmp = getenv("TEST_TMPDIR");
    int n;

    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    n = snprintf(dir, size, "%s/%s-XXXXXX", tmp, prefix);
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "testing_dir_make: %s/%s-XXXXXX is over %zu bytes\n",
                tmp, prefix, size - 1);
        return -1;
    }
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "testing_dir_make: mkdtemp %s: %s\n", dir,
                strerror(errno));
        return -1;
    }
    return 0;
}

/* Removes what it can and names what it cannot; the walk goes on, so one
 * stuck entry does not leave the rest behind. */
static int remove_entry(const char *path, const struct stat *sb, int flag,
                        struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "testing_dir_remove: %s: %s\n", path,
                strerror(errno));
    return 0;
}

int testing_dir_remove(const char *dir) {
    struct stat sb;

    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        fprintf(stderr, "testing_dir_remove: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    /* Depth first: dir itself goes last, and only once it is empty. */
    return lstat(dir, &sb) == 0 ? -1 : 0;
}

/* ---- Stores --------------------------------------------------------------- */

store_t *testing_store_open(const char *dir, const store_opts_t *opts) {
    store_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;
    store_t *s = NULL;

    if (opts != NULL)
        o = *opts;
    o.data_dir = dir;
    if (store_open(&o, &s, &st) != REEL_OK)
        fail_msg("store_open %s: %s", dir, reel_status_message(&st));
    reel_status_fini(&st);
    return s;
}

/* ---- Sinks ---------------------------------------------------------------- */

void testing_sink_init(testing_sink_t *s, size_t limit) {
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    reel_cond_init_mono(&s->cv);
    s->limit = limit;
    s->end = (reel_status_t)REEL_STATUS_INIT;
}

void testing_sink_fini(testing_sink_t *s) {
    reel_status_fini(&s->end);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

int testing_sink_hold(testing_sink_t *s, size_t cap) {
    if (s->held >= s->limit || s->n >= cap)
        return 1;
    s->held++;
    return 0;
}

void testing_sink_add(testing_sink_t *s) {
    s->n++;
    pthread_cond_broadcast(&s->cv);
}

void testing_sink_end(testing_sink_t *s, const reel_status_t *st) {
    pthread_mutex_lock(&s->mu);
    if (s->ends++ == 0) {
        s->ended = st->code == REEL_OK ? 1 : -1;
        reel_status_copy(&s->end, st);
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* The monotonic time timeout_ms from now. */
size_t testing_sink_wait(testing_sink_t *s, size_t n, int timeout_ms) {
    struct timespec until = reel_clock_mono_after(timeout_ms);
    size_t have;

    pthread_mutex_lock(&s->mu);
    while (s->n < n && !s->ended)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT)
            break;
    have = s->n;
    pthread_mutex_unlock(&s->mu);
    return have;
}

int testing_sink_wait_end(testing_sink_t *s, int timeout_ms) {
    struct timespec until = reel_clock_mono_after(timeout_ms);
    int ended;

    pthread_mutex_lock(&s->mu);
    while (!s->ended)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT)
            break;
    ended = s->ended;
    pthread_mutex_unlock(&s->mu);
    return ended;
}

size_t testing_tenant_scope(const char *name) {
    const char *end;

    if (strncmp(name, "::", 2) != 0 || (end = strchr(name + 2, ':')) == NULL)
        return 0;
    return (size_t)(end - name) + 1;
}
