#include "base/clock.h"

#include <time.h>

#include "base/log.h"

/* A gap this large is logged: the wall clock stepped. */
#define STEP_NS 1000000000LL
/* A gap larger than this is taken at once: a clock that was a day or more
 * wrong (a host booted in 1970, without a battery-backed clock) would take
 * ten times as long to catch up, with every timestamp that far off. */
#define JUMP_NS (24LL * 3600 * 1000000000LL)

static pthread_mutex_t clock_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t clock_t_ns;    /* reel's time at the last reading (0: none) */
static int64_t clock_boot_ns; /* the boot clock then */
static int64_t clock_gap;     /* the wall clock's lead then */
static int clock_stepped;     /* a gap of STEP_NS or more is being closed */

/* What a reading has to say, logged once clock_mu is let go (a log line
 * is a write to stderr: not under the lock every reading takes). */
typedef struct clock_news {
    int what; /* 0 nothing, else one of the NEWS_ below */
    int64_t ns;
} clock_news_t;
enum { NEWS_JUMPED = 1, NEWS_GAP, NEWS_CAUGHT_UP };

static int64_t read_ns(clockid_t id) {
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t reel_clock_boot_ns(void) {
    return read_ns(CLOCK_BOOTTIME);
}

int64_t reel_clock_advance(int64_t t_ns, int64_t boot_ns, int64_t boot_now_ns,
                           int64_t wall_ns) {
    int64_t elapsed = boot_now_ns - boot_ns, gap, most;

    if (elapsed < 0)
        elapsed = 0;
    t_ns += elapsed;
    gap = wall_ns - t_ns;
    if (gap > JUMP_NS || gap < -JUMP_NS)
        return wall_ns;
    most = elapsed / 10; /* a tenth faster or slower at most */
    if (gap > most)
        gap = most;
    else if (gap < -most)
        gap = -most;
    return t_ns + gap;
}

/* Reads reel's clock; *news gets what to log. Call with clock_mu held. */
static int64_t now_locked(clock_news_t *news) {
    int64_t wall = read_ns(CLOCK_REALTIME), boot = read_ns(CLOCK_BOOTTIME);
    int64_t gap;

    if (clock_t_ns == 0) {
        clock_t_ns = wall;
    } else {
        int64_t was = clock_t_ns + (boot - clock_boot_ns);

        clock_t_ns = reel_clock_advance(clock_t_ns, clock_boot_ns, boot, wall);
        if (clock_t_ns == wall && (wall - was > JUMP_NS || was - wall > JUMP_NS))
            *news = (clock_news_t){NEWS_JUMPED, wall - was};
    }
    clock_boot_ns = boot;
    gap = clock_gap = wall - clock_t_ns;
    if (!clock_stepped && (gap >= STEP_NS || gap <= -STEP_NS)) {
        clock_stepped = 1;
        *news = (clock_news_t){NEWS_GAP, gap};
    } else if (clock_stepped && gap < STEP_NS / 100 && gap > -STEP_NS / 100) {
        clock_stepped = 0;
        *news = (clock_news_t){NEWS_CAUGHT_UP, 0};
    }
    return clock_t_ns;
}

static void news_log(const clock_news_t *n) {
    double s = (double)(n->ns < 0 ? -n->ns : n->ns) / 1e9;

    if (n->what == NEWS_JUMPED)
        REEL_WARN("clock",
                  "the system clock stepped by %.0f s, more than a day: "
                  "reel's clock follows it at once (leases and timers due "
                  "in between fire now, and times may go back)",
                  (double)n->ns / 1e9);
    else if (n->what == NEWS_GAP)
        REEL_WARN("clock",
                  "the system clock is %s reel's by %.3f s (a step: NTP, a "
                  "date set by hand, a VM resumed); reel's clock runs a "
                  "tenth %s until it has caught up (about %.0f s), so "
                  "leases, timers and timestamps keep their pace",
                  n->ns > 0 ? "ahead of" : "behind", s,
                  n->ns > 0 ? "faster" : "slower", s * 10);
    else if (n->what == NEWS_CAUGHT_UP)
        REEL_INFO("clock", "reel's clock has caught up with the system clock");
}

int64_t reel_clock_now_ns(void) {
    clock_news_t news = {0};
    int64_t t;

    pthread_mutex_lock(&clock_mu);
    t = now_locked(&news);
    pthread_mutex_unlock(&clock_mu);
    news_log(&news);
    return t;
}

int64_t reel_clock_now_ms(void) {
    return reel_clock_now_ns() / 1000000;
}

int64_t reel_clock_gap_ns(void) {
    clock_news_t news = {0};
    int64_t gap;

    pthread_mutex_lock(&clock_mu);
    now_locked(&news);
    gap = clock_gap;
    pthread_mutex_unlock(&clock_mu);
    news_log(&news);
    return gap;
}

/* Moves reel's clock to at_ns: always, or (forward_only) if ahead. */
static void clock_move(int64_t at_ns, int forward_only) {
    clock_news_t news = {0};

    pthread_mutex_lock(&clock_mu);
    /* Read first: the boot clock's reading is where the next one counts
     * from. */
    if (at_ns > now_locked(&news) || !forward_only) {
        clock_t_ns = at_ns;
        now_locked(&news);
    }
    pthread_mutex_unlock(&clock_mu);
    news_log(&news);
}

void reel_clock_set(int64_t at_ns) {
    clock_move(at_ns, 0);
}

void reel_clock_start_at(int64_t at_ns) {
    clock_move(at_ns, 1);
}

int64_t reel_clock_mono_ns(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void reel_cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

struct timespec reel_clock_mono_at(int64_t mono_ns) {
    struct timespec ts;

    ts.tv_sec = (time_t)(mono_ns / 1000000000LL);
    ts.tv_nsec = (long)(mono_ns % 1000000000LL);
    return ts;
}

struct timespec reel_clock_mono_after(int64_t ms) {
    if (ms < 0)
        ms = 0;
    if (ms > INT64_MAX / 2000000LL) /* far enough: no overflow below */
        ms = INT64_MAX / 2000000LL;
    return reel_clock_mono_at(reel_clock_mono_ns() + ms * 1000000LL);
}
