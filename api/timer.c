/*
 * api/timer.c: a binary min-heap of armed timers and a thread waiting on a
 * condition variable (CLOCK_MONOTONIC) until the earliest deadline.
 *
 * Every open WAL tail re-arms a timer each second, so tens of thousands
 * may be armed at once: arming and disarming are O(log n) (each timer
 * keeps its slot in the heap), never a walk of the others. Timers of one
 * deadline run in the order they were armed (seq breaks ties).
 */
#include "api/timer.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "base/clock.h"

struct api_timer {
    int64_t deadline_ns;
    uint64_t seq;
    size_t slot; /* its index in heap while armed */
    void (*fn)(void *arg);
    void *arg;
    int armed;
};

struct api_timers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    api_timer_t **heap;
    size_t n, cap;
    uint64_t next_seq;
    int stopping;
    api_timer_t *running; /* the timer whose fn is running now */
    pthread_t thread;
};

static int earlier(const api_timer_t *a, const api_timer_t *b) {
    return a->deadline_ns < b->deadline_ns ||
           (a->deadline_ns == b->deadline_ns && a->seq < b->seq);
}

static void place(api_timers_t *t, api_timer_t *tm, size_t i) {
    t->heap[i] = tm;
    tm->slot = i;
}

static void sift_up(api_timers_t *t, size_t i) {
    api_timer_t *tm = t->heap[i];

    while (i > 0 && earlier(tm, t->heap[(i - 1) / 2])) {
        place(t, t->heap[(i - 1) / 2], i);
        i = (i - 1) / 2;
    }
    place(t, tm, i);
}

static void sift_down(api_timers_t *t, size_t i) {
    api_timer_t *tm = t->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= t->n)
            break;
        if (c + 1 < t->n && earlier(t->heap[c + 1], t->heap[c]))
            c++;
        if (!earlier(t->heap[c], tm))
            break;
        place(t, t->heap[c], i);
        i = c;
    }
    place(t, tm, i);
}

static void unlink_locked(api_timers_t *t, api_timer_t *tm) {
    size_t i = tm->slot;
    api_timer_t *last = t->heap[--t->n];

    tm->armed = 0;
    if (last == tm)
        return;
    place(t, last, i);
    if (i > 0 && earlier(last, t->heap[(i - 1) / 2]))
        sift_up(t, i);
    else
        sift_down(t, i);
}

static void *timer_main(void *arg) {
    api_timers_t *t = arg;

    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        int64_t now = reel_clock_mono_ns();
        api_timer_t *tm = t->n > 0 ? t->heap[0] : NULL;

        if (tm == NULL) {
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        if (tm->deadline_ns > now) {
            struct timespec ts = reel_clock_mono_at(tm->deadline_ns);
            pthread_cond_timedwait(&t->cv, &t->mu, &ts);
            continue;
        }
        unlink_locked(t, tm);
        t->running = tm;
        pthread_mutex_unlock(&t->mu);
        tm->fn(tm->arg); /* tm stays the caller's: never freed here */
        pthread_mutex_lock(&t->mu);
        t->running = NULL;
        pthread_cond_broadcast(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

api_timers_t *api_timers_create(void) {
    api_timers_t *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    reel_cond_init_mono(&t->cv);
    if (pthread_create(&t->thread, NULL, timer_main, t) != 0) {
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cv);
        free(t);
        return NULL;
    }
    return t;
}

void api_timers_destroy(api_timers_t *t) {
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    t->stopping = 1;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    /* Timers still armed belong to their callers, who stop them. */
    for (size_t i = 0; i < t->n; i++)
        t->heap[i]->armed = 0;
    free(t->heap);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

api_timer_t *api_timer_start(api_timers_t *t, int64_t deadline_ns,
                             void (*fn)(void *arg), void *arg) {
    api_timer_t *tm = calloc(1, sizeof(*tm));

    if (tm == NULL)
        return NULL;
    tm->deadline_ns = deadline_ns;
    tm->fn = fn;
    tm->arg = arg;
    tm->armed = 1;
    pthread_mutex_lock(&t->mu);
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        api_timer_t **h = realloc(t->heap, cap * sizeof(*h));

        if (h == NULL) {
            pthread_mutex_unlock(&t->mu);
            free(tm);
            return NULL;
        }
        t->heap = h;
        t->cap = cap;
    }
    tm->seq = t->next_seq++;
    place(t, tm, t->n++);
    sift_up(t, tm->slot);
    if (t->heap[0] == tm)
        pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return tm;
}

void api_timer_stop(api_timers_t *t, api_timer_t *tm) {
    if (tm == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    if (tm->armed)
        unlink_locked(t, tm);
    while (t->running == tm)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    free(tm);
}
