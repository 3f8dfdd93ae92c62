/*
 * api/accept.c: accept4() with a reserve of descriptors (api/accept.h).
 *
 * Linux gives a new descriptor the lowest number free, so an accepted
 * socket numbered limit - reserve or more means that fewer than reserve
 * descriptors are left above it: the connection is closed and the next
 * one in the listen queue is taken, until the queue is empty. The same
 * loop sheds connections when accept4() itself finds no descriptor. The
 * caller only ever sees a connection to serve, EAGAIN (the queue is
 * empty: wait for the next one) or an error that is not about
 * descriptors.
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fault.h"
#include "base/log.h"

#define RESERVE_MIN 32
#define RESERVE_MAX 1024
#define SAY_EVERY_S 10 /* at most one log line that often */

typedef int (*accept4_fn)(int sock, struct sockaddr *addr, socklen_t *len,
                          int flags);

static atomic_long armed_limit;   /* 0: not armed, libc's accept4 as is */
static atomic_long armed_reserve;
static atomic_ullong refused;
static atomic_int inner = -1;     /* api_accept_set_inner() */
static atomic_llong said_at_s;    /* when the last line went out */
static atomic_ullong said_refused; /* refused as of that line */

static pthread_mutex_t aside_mu = PTHREAD_MUTEX_INITIALIZER;
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

long api_accept_arm(long limit, long reserve) {
    if (limit <= 0) {
        struct rlimit rl = {0, 0};

        if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
            return 0;
        limit = rl.rlim_cur > (rlim_t)1 << 40 ? (long)1 << 40
                                               : (long)rl.rlim_cur;
        reserve = api_accept_reserve_for(limit);
    }
    pthread_mutex_lock(&aside_mu);
    if (aside < 0)
        aside = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pthread_mutex_unlock(&aside_mu);
    atomic_store(&armed_reserve, reserve);
    atomic_store(&armed_limit, limit);
    return reserve;
}

void api_accept_set_inner(int sock) { atomic_store(&inner, sock); }

uint64_t api_accept_refused(void) {
    return atomic_load_explicit(&refused, memory_order_relaxed);
}

static void count_refused(long limit, long reserve) {
    uint64_t n = atomic_fetch_add_explicit(&refused, 1,
                                           memory_order_relaxed) + 1;
    int64_t now = reel_clock_mono_ns() / 1000000000;
    long long at = atomic_load_explicit(&said_at_s, memory_order_relaxed);

    if (at != 0 && now - at < SAY_EVERY_S)
        return;
    if (!atomic_compare_exchange_strong(&said_at_s, &at, now))
        return; /* another thread says it */
    REEL_WARN("reeld",
              "refusing connections: fewer than %ld of the %ld file "
              "descriptors reeld may open are free; %llu refused since the "
              "last report. Each connection takes one: raise the open files "
              "limit (LimitNOFILE=) or find the clients holding them",
              reserve, limit,
              (unsigned long long)(n - atomic_exchange(&said_refused, n)));
}

/*
 * Accepts the connection waiting on sock with the descriptor kept aside
 * and closes it. 1: one was shed; 0: no descriptor to do it with (another
 * thread took the one set free); -1: accept4's own failure, in errno.
 */
static int shed_one(int sock) {
    int fd, e = 0, rc;

    pthread_mutex_lock(&aside_mu);
    if (aside < 0)
        aside = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (aside < 0) {
        pthread_mutex_unlock(&aside_mu);
        return 0;
    }
    close(aside);
    fd = next_accept4(sock, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        rc = 1;
    } else {
        e = errno;
        rc = e == EMFILE || e == ENFILE ? 0 : -1;
    }
    aside = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pthread_mutex_unlock(&aside_mu);
    errno = e;
    return rc;
}

int accept4(int sock, struct sockaddr *addr, socklen_t *len, int flags) {
    long limit = atomic_load_explicit(&armed_limit, memory_order_relaxed);
    long reserve;
    socklen_t cap = len != NULL ? *len : 0;

    if (limit <= 0)
        return next_accept4(sock, addr, len, flags);
    if (REEL_FAULT("api.accept")) {
        errno = ENOBUFS;
        return -1;
    }
    reserve = atomic_load_explicit(&armed_reserve, memory_order_relaxed);
    if (sock == atomic_load_explicit(&inner, memory_order_relaxed))
        reserve /= 2;
    for (;;) {
        int fd;

        if (len != NULL)
            *len = cap;
        fd = next_accept4(sock, addr, len, flags);
        if (fd >= 0) {
            if ((long)fd < limit - reserve)
                return fd;
            close(fd);
            count_refused(limit, reserve);
            continue;
        }
        if (errno != EMFILE && errno != ENFILE)
            return -1; /* EAGAIN included: the queue is empty */
        switch (shed_one(sock)) {
        case 1:
            count_refused(limit, reserve);
            continue;
        case 0:
            errno = EAGAIN; /* listening goes on; the next connection retries */
            return -1;
        default:
            return -1;
        }
    }
}
