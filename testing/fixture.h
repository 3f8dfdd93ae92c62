/*
 * testing/fixture.h: what reel's unit tests share. Test-only: cc_test
 * targets depend on it; nothing reeld links does.
 *
 * Data dirs. Each test gets a fresh directory under $TEST_TMPDIR (the
 * scratch dir Bazel gives every test; /tmp when a test binary is run by
 * hand), named "<prefix>-XXXXXX" so a leftover says which test made it, and
 * removes it with everything in it when it is done.
 *
 * Stores. testing_store_open() opens a store on such a dir with the test's
 * own options: the test keeps its module wiring (publish, before_commit),
 * the fixture the plumbing. A store that will not open fails the test with
 * the store's message.
 *
 * Sinks. A test that subscribes to something (a KV watch, a run
 * subscription) collects what it is given in a sink. The sink holds at most
 * `limit` items before it says it is full, so a test can stall a subscriber
 * and later let it catch up; it records the status the subscription ended
 * with; and it lets the test wait, up to a deadline on the monotonic clock,
 * for a number of items or for the end (a wall-clock jump neither cuts a
 * wait short nor stretches it). The items are the test's own typed copies:
 * a test's sink struct opens with TESTING_SINK_HEAD and adds its array, so
 * its assertions read s->n, s->ended and s->end directly while the helpers
 * below get &s->sink:
 *
 *     typedef struct sink {
 *         TESTING_SINK_HEAD;
 *         uint64_t seqs[256];
 *     } sink_t;
 *
 *     // the module's deliver op, on the writer's or a pump's thread
 *     pthread_mutex_lock(&s->mu);
 *     full = testing_sink_hold(&s->sink, 256);
 *     if (!full) {
 *         s->seqs[s->n] = e->seq;
 *         testing_sink_add(&s->sink);
 *     }
 *     pthread_mutex_unlock(&s->mu);
 *     return full;
 *
 * Threading: every field of a sink, and the test's items, are guarded by
 * its mu. Functions marked "mu held" expect the caller to hold it; the
 * others take it themselves. Deliveries and the end may come from any
 * thread; waits belong to the test's thread.
 */
#ifndef REEL_TESTING_FIXTURE_H
#define REEL_TESTING_FIXTURE_H

#include <pthread.h>
#include <stddef.h>

#include "base/status.h"
#include "store/store.h"

/* ---- Data dirs ----------------------------------------------------------- */

/*
 * Makes a fresh, empty directory "<$TEST_TMPDIR or /tmp>/<prefix>-XXXXXX"
 * and writes its path into dir (size bytes). Returns 0, or -1 (with the
 * reason on stderr) when the path does not fit or mkdtemp fails.
 */
int testing_dir_make(char *dir, size_t size, const char *prefix);

/*
 * Removes dir and everything under it. Returns 0, or -1 (naming on stderr
 * each entry it could not remove) so a teardown can fail the test.
 */
int testing_dir_remove(const char *dir);

/* ---- Stores --------------------------------------------------------------- */

/*
 * Opens the store in dir with opts (NULL: all defaults; opts->data_dir is
 * ignored). Fails the test, naming the status, if it does not open. Close it
 * with store_close().
 */
store_t *testing_store_open(const char *dir, const store_opts_t *opts);

/* ---- Tenants -------------------------------------------------------------- */

/*
 * The length of the tenant prefix "::T:" a stored name starts with, 0 for
 * none: reeld's rule (api/tenant.h), for modules' tests of what they cap
 * or keep per tenant without linking the API.
 */
size_t testing_tenant_scope(const char *name);

/* ---- Sinks ---------------------------------------------------------------- */

#define TESTING_SINK_FIELDS_                                                 \
    pthread_mutex_t mu; /* guards the sink and the test's items */          \
    pthread_cond_t cv;  /* on CLOCK_MONOTONIC; broadcast on each change */  \
    size_t n;           /* items taken, the index of the next */            \
    size_t limit;       /* items held before the sink is full */            \
    size_t held;        /* taken and not yet let go (see below) */          \
    int ended;          /* 0 open, 1 ended OK, -1 ended with an error */    \
    int ends;           /* times end was called (a subscription: once) */   \
    reel_status_t end   /* what the first end said */

typedef struct testing_sink {
    TESTING_SINK_FIELDS_;
} testing_sink_t;

/*
 * The opening member of a test's own sink struct: the same fields twice,
 * by name (s->n, s->held, s->ended) and as `sink` for the functions below.
 * A union of two structs with one common sequence of members, so both
 * views read the same memory.
 */
#define TESTING_SINK_HEAD                                                    \
    union {                                                                  \
        testing_sink_t sink;                                                 \
        struct {                                                             \
            TESTING_SINK_FIELDS_;                                            \
        };                                                                   \
    }

/* How long the waits below wait unless told otherwise, in milliseconds. */
#define TESTING_WAIT_MS 5000

/*
 * Initializes s as an empty, open sink that holds up to limit items. A test
 * lets go of what it holds by setting held to 0 (and maybe a new limit),
 * mu held, as a client reading its queue would; then it pumps.
 */
void testing_sink_init(testing_sink_t *s, size_t limit);

/* Frees what s owns (its end status). The sink must be idle. */
void testing_sink_fini(testing_sink_t *s);

/*
 * Mu held. Room for one more item (fewer than limit held, fewer than cap
 * taken, cap being the test's array size): counts it as held and returns
 * 0; the caller then stores it at index n and calls testing_sink_add().
 * Full: returns 1, what a module's deliver op answers.
 */
int testing_sink_hold(testing_sink_t *s, size_t cap);

/* Mu held. The test stored item n: counts it and wakes the waiters. */
void testing_sink_add(testing_sink_t *s);

/*
 * The subscription ended with st: the first end is recorded (ended, end),
 * every one counted (ends), and the waiters woken. Any thread; takes mu.
 */
void testing_sink_end(testing_sink_t *s, const reel_status_t *st);

/*
 * Waits until s holds at least n items or has ended, at most timeout_ms.
 * Returns the number of items taken (less than n on a timeout or an end).
 */
size_t testing_sink_wait(testing_sink_t *s, size_t n, int timeout_ms);

/*
 * Waits until s has ended, at most timeout_ms. Returns ended (0 when the
 * wait timed out).
 */
int testing_sink_wait_end(testing_sink_t *s, int timeout_ms);

#endif
