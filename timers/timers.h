/*
 * timers/timers.h: durable timers, fired by the store's writer.
 *
 * A timer is a stored record keyed by its due time (wall-clock ms): a kind
 * (one byte, naming the module function that fires it), an id (the
 * owner's bytes, e.g. a run_id) and a value (the owner's bytes, e.g. the
 * lease epoch it was set for). Scheduling and cancelling are writes inside
 * the owner's apply function, so a timer commits with the change that
 * needs it, or not at all. When it is due, the writer's alarm (store.h)
 * runs timers_alarm(), which calls each due timer's fire function in one
 * request at the end of a group, deletes it in the same write, and arms
 * the alarm for the next one: firing is an ordinary commit, with
 * revisions and WAL events like any change, and a timer fires at most
 * once. None fires before its time (the writer's group time is compared
 * with it).
 *
 * Only a window is held in memory: the due times are in RocksDB, and the
 * module keeps the earliest time nothing can be due before (a seek
 * position) and, while it fires, at most TIMERS_FIRE_MAX due timers.
 * A million scheduled timers cost a million keys on disk and no memory.
 *
 * Fire functions must check what they find against the owner's state (an
 * epoch, a status): a timer that no longer applies does nothing and
 * returns OK. An error fails the whole firing, which is retried (the
 * timers stay stored).
 *
 * Threading: timers_register() before timers_arm(), on one thread.
 * timers_schedule / timers_cancel / timers_alarm on the writer thread
 * only. timers_t is otherwise immutable.
 */
#ifndef REEL_TIMERS_TIMERS_H
#define REEL_TIMERS_TIMERS_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "metrics/metrics.h"
#include "store/store.h"

/* Due timers fired in one request: the in-memory window's bound. */
#define TIMERS_FIRE_MAX 1024
/* The longest id a timer may have. */
#define TIMERS_MAX_ID 512
/* Latest due time accepted: the year 9999, so any later time is a caller's
 * mistake (a due time in seconds or microseconds) named as such. */
#define TIMERS_MAX_DUE_MS 253402300799999LL

typedef struct timers timers_t;

/* The timers' column family, for store_open(): "timers", ended by a NULL
 * name. */
extern const store_cf_desc_t timers_cfs[];

/*
 * Fires one due timer, on the writer thread, inside the alarm's request:
 * reads and writes through txn, may schedule timers (even its own kind and
 * id again). The timer is deleted whatever it does; an error rolls the
 * whole firing back, and it is tried again. DATA_LOSS says it never can
 * fire (its record does not read): the next try stores it again under
 * kind 0, which nothing fires, logged, and the other timers go on.
 */
typedef reel_code_t (*timers_fire_fn)(void *arg, store_txn_t *txn,
                                      int64_t due_ms, const char *id,
                                      size_t idlen, const void *val,
                                      size_t vlen, reel_status_t *st);

/* The store must have been opened with timers_cfs (FAILED_PRECONDITION
 * naming the family otherwise) and with timers_alarm as its alarm (its
 * argument the timers_t, once made). */
reel_code_t timers_create(store_t *store, timers_t **out, reel_status_t *st);
/* Accepts NULL. */
void timers_destroy(timers_t *t);

/* Names the function that fires timers of `kind` (not 0). Before
 * timers_arm(). */
void timers_register(timers_t *t, uint8_t kind, timers_fire_fn fn,
                     void *arg);

/*
 * Reads the earliest stored timer and arms the store's alarm for it: after
 * a restart, timers that fell due while reeld was down fire at once, each
 * once, so call it only when every consumer of their changes (the WAL's
 * events) is in place. OK, or the read's error.
 */
reel_code_t timers_arm(timers_t *t, reel_status_t *st);

/* Writer thread, inside an apply: stores a timer (replacing one with the
 * same due time, kind and id) and arms the alarm if it is the earliest.
 * RESOURCE_EXHAUSTED out of memory, INVALID_ARGUMENT for an id past
 * TIMERS_MAX_ID (a caller's bug: it names the limit). */
reel_code_t timers_schedule(timers_t *t, store_txn_t *txn, int64_t due_ms,
                            uint8_t kind, const char *id, size_t idlen,
                            const void *val, size_t vlen, reel_status_t *st);

/* Writer thread, inside an apply: deletes the timer (nothing if none). */
reel_code_t timers_cancel(timers_t *t, store_txn_t *txn, int64_t due_ms,
                          uint8_t kind, const char *id, size_t idlen,
                          reel_status_t *st);

/* The store's alarm function (store_alarm_fn; arg is the timers_t). */
reel_code_t timers_alarm(void *arg, store_txn_t *txn, reel_status_t *st);

/*
 * Registers reel_timers_scheduled (the timers stored: one scan now, on
 * the writer, then moved by each committed schedule, cancel and firing;
 * a schedule and a cancel then read their key once to tell a new timer
 * from a replaced one) and reel_timer_lateness_seconds (each firing's
 * group time minus its due time) under t as owner; timers_destroy()
 * drops them. Once, after timers_arm(), from a thread other than the
 * writer. A NULL registry: OK, nothing counted. OK, or the scan's error.
 */
reel_code_t timers_metrics_register(timers_t *t, metrics_registry_t *r,
                                    reel_status_t *st);
/* Timers stored (a scan: for tests and tools). */
reel_code_t timers_count(timers_t *t, uint64_t *n, reel_status_t *st);

#endif
