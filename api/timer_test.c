/*
 * api/timer_test.c: timers run once each, in deadline order (ties in the
 * order armed), stopped ones never; the heap stays whole through arming
 * and stopping in any order, at the sizes open WAL tails reach.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/timer.h"
#include "base/clock.h"

typedef struct fired {
    pthread_mutex_t mu;
    int *order; /* the ids in the order they ran */
    size_t n;
} fired_t;

typedef struct probe {
    fired_t *f;
    int id;
} probe_t;

static void on_fire(void *arg) {
    probe_t *p = arg;

    pthread_mutex_lock(&p->f->mu);
    p->f->order[p->f->n++] = p->id;
    pthread_mutex_unlock(&p->f->mu);
}

static size_t fired_count(fired_t *f) {
    size_t n;

    pthread_mutex_lock(&f->mu);
    n = f->n;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static void wait_fired(fired_t *f, size_t want) {
    for (int i = 0; i < 1000 && fired_count(f) < want; i++)
        usleep(10000);
    assert_int_equal(fired_count(f), want);
}

/* Fisher-Yates with a fixed seed: the same shuffle every run. */
static void shuffle(int *a, size_t n, unsigned *seed) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rand_r(seed) % i;
        int x = a[i - 1];

        a[i - 1] = a[j];
        a[j] = x;
    }
}

/* 400 timers armed in a shuffled order, 100 distinct deadlines 2 ms apart
 * (four per deadline), half of them stopped in another shuffled order:
 * the rest run by deadline, the four of a deadline in the order armed. */
static void test_timers_run_by_deadline_and_stopped_ones_never(void **state) {
    enum { N = 400 };
    api_timers_t *t = api_timers_create();
    api_timer_t *tm[N];
    probe_t p[N];
    int arm[N], stop[N], order[N], armed_at[N];
    fired_t f = {.order = order};
    unsigned seed = 7;
    int64_t base = reel_clock_mono_ns() + 100 * 1000000LL;

    (void)state;
    assert_non_null(t);
    pthread_mutex_init(&f.mu, NULL);
    for (int i = 0; i < N; i++)
        arm[i] = stop[i] = i;
    shuffle(arm, N, &seed);
    shuffle(stop, N, &seed);
    for (int k = 0; k < N; k++) {
        int i = arm[k];

        p[i] = (probe_t){&f, i};
        armed_at[i] = k;
        /* id i's deadline: base + (i / 4) * 2 ms */
        tm[i] = api_timer_start(t, base + (int64_t)(i / 4) * 2000000, on_fire,
                                &p[i]);
        assert_non_null(tm[i]);
    }
    for (int k = 0; k < N / 2; k++) {
        api_timer_stop(t, tm[stop[k]]);
        tm[stop[k]] = NULL;
    }
    wait_fired(&f, N / 2);
    for (size_t k = 0; k < f.n; k++)
        assert_non_null(tm[order[k]]); /* a stopped one never ran */
    for (size_t k = 1; k < f.n; k++) {
        int a = order[k - 1], b = order[k];

        assert_true(a / 4 < b / 4 ||
                    (a / 4 == b / 4 && armed_at[a] < armed_at[b]));
    }
    usleep(50000); /* nothing more comes */
    assert_int_equal(fired_count(&f), N / 2);
    for (int i = 0; i < N; i++)
        api_timer_stop(t, tm[i]);
    api_timers_destroy(t);
    pthread_mutex_destroy(&f.mu);
}

/* 100,000 timers with random deadlines 2 to 2.2 s away, armed in order
 * and half of them stopped in a shuffled order (removals from every depth
 * of the heap, those that must move up as well as down): the other half
 * all run, in deadline order. */
static void test_many_timers_armed_and_stopped_in_any_order(void **state) {
    enum { N = 100000 };
    api_timers_t *t = api_timers_create();
    api_timer_t **tm = calloc(N, sizeof(*tm));
    int64_t *when = calloc(N, sizeof(*when));
    int *idx = calloc(N, sizeof(*idx)), *order = calloc(N, sizeof(*order));
    probe_t *p = calloc(N, sizeof(*p));
    fired_t f = {.order = order};
    unsigned seed = 11;
    int64_t base = reel_clock_mono_ns() + 2000000000LL;

    (void)state;
    assert_non_null(t);
    assert_true(tm && when && idx && order && p);
    pthread_mutex_init(&f.mu, NULL);
    for (int i = 0; i < N; i++) {
        idx[i] = i;
        p[i] = (probe_t){&f, i};
        when[i] = base + rand_r(&seed) % 200000000;
        assert_non_null(tm[i] = api_timer_start(t, when[i], on_fire, &p[i]));
    }
    shuffle(idx, N, &seed);
    for (int k = 0; k < N / 2; k++) {
        api_timer_stop(t, tm[idx[k]]);
        tm[idx[k]] = NULL;
    }
    assert_int_equal(fired_count(&f), 0); /* still 2 s early */
    wait_fired(&f, N / 2);
    for (size_t k = 0; k < f.n; k++)
        assert_non_null(tm[order[k]]);
    for (size_t k = 1; k < f.n; k++) {
        int a = order[k - 1], b = order[k];

        assert_true(when[a] < when[b] || (when[a] == when[b] && a < b));
    }
    for (int i = 0; i < N; i++)
        api_timer_stop(t, tm[i]);
    api_timers_destroy(t);
    pthread_mutex_destroy(&f.mu);
    free(tm);
    free(when);
    free(idx);
    free(order);
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_run_by_deadline_and_stopped_ones_never),
        cmocka_unit_test(test_many_timers_armed_and_stopped_in_any_order),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
