/*
 * api/timer.c: a sorted list and a thread waiting on a condition variable
 * (CLOCK_MONOTONIC) until the earliest deadline.
 */
#include "api/timer.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "base/clock.h"

struct api_timer {
    api_timer_t *prev, *next;
    int64_t deadline_ns;
    void (*fn)(void *arg);
    void *arg;
    int armed;
};

struct api_timers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    api_timer_t *head;
    int stopping;
    api_timer_t *running; /* the timer whose fn is running now */
    pthread_t thread;
};

static void unlink_locked(api_timers_t *t, api_timer_t *tm) {
    if (tm->prev)
        tm->prev->next = tm->next;
    else
        t->head = tm->next;
    if (tm->next)
        tm->next->prev = tm->prev;
    tm->prev = tm->next = NULL;
    tm->armed = 0;
}

static void *timer_main(void *arg) {
    api_timers_t *t = arg;

    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        int64_t now = reel_clock_mono_ns();
        api_timer_t *tm = t->head;

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
    while (t->head != NULL)
        unlink_locked(t, t->head);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

api_timer_t *api_timer_start(api_timers_t *t, int64_t deadline_ns,
                             void (*fn)(void *arg), void *arg) {
    api_timer_t *tm = calloc(1, sizeof(*tm)), **pp, *prev = NULL;

    if (tm == NULL)
        return NULL;
    tm->deadline_ns = deadline_ns;
    tm->fn = fn;
    tm->arg = arg;
    tm->armed = 1;
    pthread_mutex_lock(&t->mu);
    for (pp = &t->head; *pp && (*pp)->deadline_ns <= deadline_ns;
         pp = &(*pp)->next)
        prev = *pp;
    tm->prev = prev;
    tm->next = *pp;
    if (*pp)
        (*pp)->prev = tm;
    *pp = tm;
    if (t->head == tm)
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
