/*
 * api/accept.c: accept4() and close() that bound the connections reeld
 * holds (api/accept.h).
 *
 * Linux gives a new descriptor the lowest number free, so an accepted
 * socket numbered limit - reserve or more means that fewer than reserve
 * descriptors are left above it. Such a connection, or one past the
 * count, is closed and the next one in the listen queue is taken, until
 * the queue is empty; the same loop sheds connections when accept4()
 * itself finds no descriptor. The caller only ever sees a connection to
 * serve, EAGAIN (the queue is empty: wait for the next one) or an error
 * that is not about descriptors.
 *
 * The count: a bit per descriptor number, set when accept4() hands a
 * connection out and cleared by close() before the descriptor is
 * released, so the number cannot be handed out again in between. gRPC
 * and libmicrohttpd close their sockets with close().
 *
 * The listener lost for another reason (an error gRPC gives up on) is
 * still reeld's to notice (api/grpc_init.h); the fault point "api.accept"
 * makes accept4() fail with ENOBUFS, so that path is tested.
 */
#include "api/accept.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fault.h"
#include "base/log.h"

#define RESERVE_MIN 32
#define RESERVE_MAX 1024
#define BITS_MIN ((size_t)1 << 20) /* descriptors counted: Linux's nr_open */
#define BITS_MAX ((size_t)1 << 24)
#define SAY_EVERY_S 10 /* at most one log line of each kind that often */

typedef int (*accept4_fn)(int sock, struct sockaddr *addr, socklen_t *len,
                          int flags);

typedef struct say {
    atomic_llong at_s;      /* when the last line went out (0: never) */
    atomic_ullong n;        /* refused so far */
    atomic_ullong n_said;   /* refused as of that line */
} say_t;

static atomic_long armed_limit; /* 0: not armed, libc's functions as they are */
static atomic_long armed_reserve;
static atomic_long armed_max;   /* 0: connections not counted */
static atomic_int inner = -1;   /* api_accept_set_inner() */
static atomic_long open_conns;
static say_t at_max, no_fds;

static pthread_mutex_t arm_mu = PTHREAD_MUTEX_INITIALIZER;
typedef _Atomic uint64_t word_t;
static word_t *_Atomic bits; /* a bit per open connection's descriptor */
static size_t n_bits;            /* set before bits is published */
static int aside = -1; /* the descriptor kept for shedding at EMFILE */

static int syscall_accept4(int sock, struct sockaddr *addr, socklen_t *len,
                           int flags) {
    return (int)syscall(SYS_accept4, sock, addr, len, flags);
}

/* The definition this one replaced: libc's, or a sanitizer's in front of
 * it. */
static int next_accept4(int sock, struct sockaddr *addr, socklen_t *len,
                        int flags) {
    static _Atomic(accept4_fn) next;
    accept4_fn fn = atomic_load_explicit(&next, memory_order_acquire);

    if (fn == NULL) {
        fn = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
        if (fn == NULL || fn == accept4)
            fn = syscall_accept4;
        atomic_store_explicit(&next, fn, memory_order_release);
    }
    return fn(sock, addr, len, flags);
}

/* close(2) itself: dlsym() may close a descriptor of its own, so close()
 * cannot look its next definition up the way accept4() does. */
static int sys_close(int fd) { return (int)syscall(SYS_close, fd); }

long api_accept_reserve_for(long limit) {
    long r = limit / 8;

    if (r < RESERVE_MIN)
        r = RESERVE_MIN;
    if (r > RESERVE_MAX)
        r = RESERVE_MAX;
    if (r > limit / 2)
        r = limit / 2;
    return r;
}

long api_accept_arm(long limit, long reserve, long max_connections) {
    if (limit <= 0) {
        struct rlimit rl = {0, 0};

        if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
            return 0;
        limit = rl.rlim_cur > (rlim_t)1 << 40 ? (long)1 << 40
                                               : (long)rl.rlim_cur;
        reserve = api_accept_reserve_for(limit);
    }
    pthread_mutex_lock(&arm_mu);
    if (aside < 0)
        aside = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (atomic_load(&bits) == NULL) {
        size_t n = (size_t)limit < BITS_MIN   ? BITS_MIN
                   : (size_t)limit > BITS_MAX ? BITS_MAX
                                              : (size_t)limit;
        word_t *b = calloc((n + 63) / 64, sizeof(*b));

        if (b != NULL) {
            n_bits = n;
            atomic_store(&bits, b);
        }
    }
    pthread_mutex_unlock(&arm_mu);
    atomic_store(&armed_reserve, reserve);
    atomic_store(&armed_max, max_connections > 0 ? max_connections : 0);
    atomic_store(&armed_limit, limit);
    return reserve;
}

void api_accept_set_inner(int sock) { atomic_store(&inner, sock); }

uint64_t api_accept_connections(void) {
    long n = atomic_load_explicit(&open_conns, memory_order_relaxed);

    return n > 0 ? (uint64_t)n : 0;
}

uint64_t api_accept_max_connections(void) {
    return (uint64_t)atomic_load_explicit(&armed_max, memory_order_relaxed);
}

uint64_t api_accept_refused_at_max(void) {
    return atomic_load_explicit(&at_max.n, memory_order_relaxed);
}

uint64_t api_accept_refused_for_descriptors(void) {
    return atomic_load_explicit(&no_fds.n, memory_order_relaxed);
}

/* Counts a refusal; says so at most once every SAY_EVERY_S seconds. */
static void refuse(say_t *say, long limit, long reserve, long max) {
    uint64_t n = atomic_fetch_add_explicit(&say->n, 1,
                                           memory_order_relaxed) + 1;
    int64_t now = reel_clock_mono_ns() / 1000000000;
    long long at = atomic_load_explicit(&say->at_s, memory_order_relaxed);
    unsigned long long since;

    if (at != 0 && now - at < SAY_EVERY_S)
        return;
    if (!atomic_compare_exchange_strong(&say->at_s, &at, now))
        return; /* another thread says it */
    since = (unsigned long long)(n - atomic_exchange(&say->n_said, n));
    if (say == &at_max)
        REEL_WARN("reeld",
                  "refusing connections: %ld are open, the most "
                  "--max-connections allows; %llu refused since the last "
                  "report",
                  max, since);
    else
        REEL_WARN("reeld",
                  "refusing connections: fewer than %ld of the %ld file "
                  "descriptors reeld may open are free; %llu refused since "
                  "the last report. Each connection takes one: raise the "
                  "open files limit (LimitNOFILE=) or find the clients "
                  "holding them",
                  reserve, limit, since);
}

/*
 * Accepts the connection waiting on sock with the descriptor kept aside,
 * counts its refusal and closes it. 1: one was shed; 0: no descriptor to
 * do it with (another thread took the one set free); -1: accept4's own
 * failure, in errno.
 */
static int shed_one(int sock, long limit, long reserve, long max) {
    int fd, e = 0, rc;

    pthread_mutex_lock(&arm_mu);
    if (aside < 0)
        aside = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (aside < 0) {
        pthread_mutex_unlock(&arm_mu);
        return 0;
    }
    sys_close(aside);
    fd = next_accept4(sock, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
        refuse(&no_fds, limit, reserve, max); /* counted before the close */
        sys_close(fd);
        rc = 1;
    } else {
        e = errno;
        rc = e == EMFILE || e == ENFILE ? 0 : -1;
    }
    aside = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pthread_mutex_unlock(&arm_mu);
    errno = e;
    return rc;
}

/* 1 if fd may be handed out as a counted connection (and is now counted). */
static int count_in(int fd, long max) {
    word_t *b = atomic_load_explicit(&bits, memory_order_acquire);

    if (b == NULL || (size_t)fd >= n_bits)
        return 0;
    if (atomic_fetch_add_explicit(&open_conns, 1, memory_order_relaxed) >=
            max &&
        max > 0) {
        atomic_fetch_sub_explicit(&open_conns, 1, memory_order_relaxed);
        return 0;
    }
    atomic_fetch_or_explicit(&b[fd >> 6], (uint64_t)1 << (fd & 63),
                             memory_order_relaxed);
    return 1;
}

int accept4(int sock, struct sockaddr *addr, socklen_t *len, int flags) {
    long limit = atomic_load_explicit(&armed_limit, memory_order_relaxed);
    long reserve, max;
    int is_inner;
    socklen_t cap = len != NULL ? *len : 0;

    if (limit <= 0)
        return next_accept4(sock, addr, len, flags);
    if (REEL_FAULT("api.accept")) {
        errno = ENOBUFS;
        return -1;
    }
    reserve = atomic_load_explicit(&armed_reserve, memory_order_relaxed);
    max = atomic_load_explicit(&armed_max, memory_order_relaxed);
    is_inner = sock == atomic_load_explicit(&inner, memory_order_relaxed);
    if (is_inner)
        reserve /= 2;
    for (;;) {
        int fd;

        if (len != NULL)
            *len = cap;
        fd = next_accept4(sock, addr, len, flags);
        if (fd >= 0) {
            /* Counted before it is closed: a client that sees the close
             * and then reads /metrics finds its refusal there. */
            if ((long)fd >= limit - reserve) {
                refuse(&no_fds, limit, reserve, max);
                sys_close(fd);
            } else if (is_inner || count_in(fd, max)) {
                return fd;
            } else {
                refuse((size_t)fd >= n_bits ? &no_fds : &at_max, limit,
                       reserve, max);
                sys_close(fd);
            }
            continue;
        }
        if (errno != EMFILE && errno != ENFILE)
            return -1; /* EAGAIN included: the queue is empty */
        switch (shed_one(sock, limit, reserve, max)) {
        case 1:
            continue;
        case 0:
            errno = EAGAIN; /* listening goes on; the next connection retries */
            return -1;
        default:
            return -1;
        }
    }
}

int close(int fd) {
    word_t *b = atomic_load_explicit(&bits, memory_order_acquire);

    /* Uncounted before the descriptor is released: accept4() cannot hand
     * the number out again until then. */
    if (b != NULL && fd >= 0 && (size_t)fd < n_bits) {
        uint64_t m = (uint64_t)1 << (fd & 63);

        if (atomic_fetch_and_explicit(&b[fd >> 6], ~m, memory_order_relaxed) &
            m)
            atomic_fetch_sub_explicit(&open_conns, 1, memory_order_relaxed);
    }
    return sys_close(fd);
}
