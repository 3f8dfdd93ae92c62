/*
 * base/clock.h: the two clocks reel uses.
 *
 * reel's clock (reel_clock_now_ms) is what every timestamp, lease, timer,
 * backoff and retention age is read on. It is the wall clock, except that
 * it never steps: it advances with CLOCK_BOOTTIME (never stepped, and it
 * counts the time a VM or host was suspended), and when the wall clock is
 * elsewhere (an NTP step, a date set by hand, a host booted with a wrong
 * clock) it closes the gap by running at most a tenth faster or slower, as
 * a leap smear does. So a lease of 15 s lasts between 13.6 and 16.7 s
 * whatever the wall clock does meanwhile, no timer fires early or hours
 * late because the wall clock jumped, and reel's times never go back. A
 * gap of more than a day (a host booted with its clock in 1970) is taken
 * at once, and said.
 */
#ifndef REEL_BASE_CLOCK_H
#define REEL_BASE_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* reel's clock: milliseconds since the Unix epoch (above). Thread-safe. */
int64_t reel_clock_now_ms(void);

/* The same in nanoseconds. */
int64_t reel_clock_now_ns(void);

/* How far the wall clock is ahead of reel's (negative: behind), in ns:
 * non-zero while reel's clock closes the gap a step opened. */
int64_t reel_clock_gap_ns(void);

/*
 * Starts reel's clock at at_ns instead of the wall clock's time (a process
 * resuming its own time: store/ after a restart, so that its times never
 * go back); it then closes the gap to the wall clock as after a step.
 * Call before the clock's first use, or to move it forward only: a time
 * behind the clock's present one is ignored.
 */
void reel_clock_start_at(int64_t at_ns);

/* Sets reel's clock to at_ns, behind its present reading too: a process
 * taking up its own time on the same boot (store/), before anything has
 * recorded a time. */
void reel_clock_set(int64_t at_ns);

/* CLOCK_BOOTTIME nanoseconds: elapsed time that counts suspends. */
int64_t reel_clock_boot_ns(void);

/*
 * The arithmetic of reel's clock, for its tests: from reel's time t_ns read
 * when the boot clock said boot_ns, the time now that the boot clock says
 * boot_now_ns and the wall clock wall_ns.
 */
int64_t reel_clock_advance(int64_t t_ns, int64_t boot_ns, int64_t boot_now_ns,
                           int64_t wall_ns);

/* Monotonic nanoseconds: for timeouts and durations only. */
int64_t reel_clock_mono_ns(void);

/*
 * Initializes cv so that its timed waits run on the monotonic clock: a step
 * of the wall clock (NTP, a VM resumed) neither stretches nor cuts them.
 * Every condition variable reel waits on with a timeout is made this way,
 * and its deadline comes from reel_clock_mono_after().
 */
void reel_cond_init_mono(pthread_cond_t *cv);

/* The monotonic instant ms milliseconds from now, as a timed wait takes it. */
struct timespec reel_clock_mono_after(int64_t ms);

/* The monotonic instant mono_ns (from reel_clock_mono_ns()), likewise. */
struct timespec reel_clock_mono_at(int64_t mono_ns);

#endif
