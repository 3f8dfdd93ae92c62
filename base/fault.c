/*
 * base/fault.c: a small table of armed points under one mutex (hits only
 * reach it while something is armed).
 */
#include "base/fault.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_POINTS 32
#define MAX_NAME 64

typedef struct point {
    char name[MAX_NAME];
    uint64_t skip, count, hits, fired;
} point_t;

atomic_int reel_fault_armed_;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static point_t points[MAX_POINTS];
static int n_points;

static point_t *find_locked(const char *name) {
    for (int i = 0; i < n_points; i++)
        if (strcmp(points[i].name, name) == 0)
            return &points[i];
    return NULL;
}

int reel_fault_hit(const char *point) {
    point_t *p;
    int fail = 0;

    pthread_mutex_lock(&mu);
    if ((p = find_locked(point)) != NULL) {
        uint64_t k = p->hits++;
        if (k >= p->skip && (p->count == 0 || k - p->skip < p->count)) {
            p->fired++;
            fail = 1;
        }
    }
    pthread_mutex_unlock(&mu);
    return fail;
}

int reel_fault_arm(const char *point, uint64_t skip, uint64_t count) {
    point_t *p;
    int rc = 0;

    if (strlen(point) >= MAX_NAME)
        return -1;
    pthread_mutex_lock(&mu);
    if ((p = find_locked(point)) == NULL) {
        if (n_points == MAX_POINTS) {
            rc = -1;
            goto out;
        }
        p = &points[n_points++];
        snprintf(p->name, sizeof(p->name), "%s", point);
    }
    p->skip = skip;
    p->count = count;
    p->hits = 0;
    p->fired = 0;
    atomic_store(&reel_fault_armed_, 1);
out:
    pthread_mutex_unlock(&mu);
    return rc;
}

static int parse_u64(const char *s, size_t len, uint64_t *out) {
    char buf[24], *end;

    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    *out = strtoull(buf, &end, 10);
    return errno != 0 || *end != '\0' || buf[0] == '-' ? -1 : 0;
}

reel_code_t reel_fault_arm_spec(const char *spec, reel_status_t *st) {
    const char *p = spec;

    while (*p) {
        const char *end = strchr(p, ','), *at, *star;
        size_t len = end ? (size_t)(end - p) : strlen(p), nlen;
        uint64_t skip = 0, count = 1;
        char name[MAX_NAME];

        at = memchr(p, '@', len);
        star = memchr(p, '*', len);
        nlen = at ? (size_t)(at - p) : star ? (size_t)(star - p) : len;
        if (nlen == 0 || nlen >= sizeof(name) ||
            (at && star && star < at) ||
            (at && parse_u64(at + 1, (star ? star : p + len) - at - 1,
                             &skip) != 0) ||
            (star && parse_u64(star + 1, p + len - star - 1, &count) != 0))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "fault spec \"%.*s\": expected "
                                   "point[@skip][*count]",
                                   (int)len, p);
        memcpy(name, p, nlen);
        name[nlen] = '\0';
        if (reel_fault_arm(name, skip, count) != 0)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "fault spec: at most %d points",
                                   MAX_POINTS);
        p = end ? end + 1 : p + len;
    }
    return REEL_OK;
}

uint64_t reel_fault_fired(const char *point) {
    point_t *p;
    uint64_t n = 0;

    pthread_mutex_lock(&mu);
    if ((p = find_locked(point)) != NULL)
        n = p->fired;
    pthread_mutex_unlock(&mu);
    return n;
}

void reel_fault_reset(void) {
    pthread_mutex_lock(&mu);
    n_points = 0;
    atomic_store(&reel_fault_armed_, 0);
    pthread_mutex_unlock(&mu);
}
