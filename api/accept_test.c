/*
 * api/accept_test.c: reeld's accept4() on real loopback sockets: what it
 * refuses at the reserve, what it sheds at EMFILE, and that the caller
 * only ever sees a connection, EAGAIN or another error.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/accept.h"
#include "base/fault.h"

static int listener(struct sockaddr_in *at) {
    socklen_t n = sizeof(*at);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(at, 0, sizeof(*at));
    at->sin_family = AF_INET;
    at->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)at, sizeof(*at)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)at, &n), 0);
    return fd;
}

/* A client connected (the kernel completes it into the listen queue). */
static int client(const struct sockaddr_in *at) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (const struct sockaddr *)at, sizeof(*at)), 0);
    return fd;
}

/* The number the next descriptor gets. */
static int next_fd(void) {
    int fd = dup(0);

    assert_true(fd >= 0);
    close(fd);
    return fd;
}

/* 1 if the server closed c's connection (end of file or reset). */
static int closed_by_server(int c) {
    struct pollfd p = {.fd = c, .events = POLLIN};
    char b;
    ssize_t n;

    if (poll(&p, 1, 5000) != 1)
        return 0;
    n = recv(c, &b, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static int accept_one(int l) {
    struct sockaddr_storage a;
    socklen_t n = sizeof(a);

    return accept4(l, (struct sockaddr *)&a, &n, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

static void test_the_reserve_scales_with_the_limit(void **state) {
    (void)state;
    assert_int_equal(api_accept_reserve_for(40), 20); /* half at most */
    assert_int_equal(api_accept_reserve_for(64), 32);
    assert_int_equal(api_accept_reserve_for(256), 32);
    assert_int_equal(api_accept_reserve_for(4096), 512);
    assert_int_equal(api_accept_reserve_for(1 << 20), 1024);
}

/* Before it is armed it is libc's: a connection past any reserve is taken. */
static void test_unarmed_it_accepts_as_libc_does(void **state) {
    struct sockaddr_in at;
    int l = listener(&at), c = client(&at), fd;

    (void)state;
    fd = accept_one(l);
    assert_true(fd >= 0);
    assert_int_equal(api_accept_refused_for_descriptors(), 0);
    close(fd);
    close(c);
    close(l);
}

static void test_a_connection_into_the_reserve_is_closed(void **state) {
    struct sockaddr_in at;
    int l = listener(&at), c1 = client(&at), c2 = client(&at), fd, probe;
    uint64_t before = api_accept_refused_for_descriptors();

    (void)state;
    api_accept_arm(1 << 20, 4, 0); /* opens the descriptor it keeps aside */
    probe = next_fd();
    /* One descriptor above what is open may go to a connection. */
    api_accept_arm(probe + 1 + 4, 4, 0);
    fd = accept_one(l);
    assert_int_equal(fd, probe);
    /* The second lands in the reserve: closed, and the queue is empty. */
    errno = 0;
    assert_int_equal(accept_one(l), -1);
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(api_accept_refused_for_descriptors(), before + 1);
    assert_true(closed_by_server(c2));
    /* The first is served. */
    assert_int_equal(send(fd, "x", 1, 0), 1);
    {
        char b = 0;

        assert_int_equal(recv(c1, &b, 1, 0), 1);
        assert_int_equal(b, 'x');
    }
    close(fd);
    close(c1);
    close(c2);
    close(l);
}

static void test_at_emfile_the_waiting_connection_is_shed(void **state) {
    struct sockaddr_in at;
    int l = listener(&at), c = client(&at), fills[256], n = 0, fd;
    struct rlimit was, low;
    uint64_t before;

    (void)state;
    api_accept_arm(1 << 20, 4, 0); /* the reserve is not what stops it here */
    before = api_accept_refused_for_descriptors();
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &was), 0);
    low = was;
    low.rlim_cur = (rlim_t)next_fd() + 16;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    while (n < 256 && (fills[n] = dup(0)) >= 0)
        n++;
    assert_int_equal(errno, EMFILE);
    errno = 0;
    assert_int_equal(accept_one(l), -1);
    assert_int_equal(errno, EAGAIN); /* not EMFILE: listening goes on */
    assert_int_equal(api_accept_refused_for_descriptors(), before + 1);
    assert_true(closed_by_server(c));
    close(c);
    /* Descriptors free again: the next connection is served. */
    while (n > 0)
        close(fills[--n]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &was), 0);
    c = client(&at);
    fd = accept_one(l);
    assert_true(fd >= 0);
    assert_int_equal(api_accept_refused_for_descriptors(), before + 1);
    close(fd);
    close(c);
    close(l);
}

/* The metrics endpoint's socket may go halfway into the reserve. */
static void test_an_inner_listener_uses_half_the_reserve(void **state) {
    struct sockaddr_in at;
    int l = listener(&at), c[4], fds[2], probe;
    uint64_t before;

    (void)state;
    for (int i = 0; i < 4; i++)
        c[i] = client(&at);
    api_accept_arm(1 << 20, 4, 0);
    before = api_accept_refused_for_descriptors();
    probe = next_fd();
    api_accept_arm(probe + 4, 4, 0); /* an outer listener: nothing fits */
    api_accept_set_inner(l);      /* an inner one: two fit */
    fds[0] = accept_one(l);
    fds[1] = accept_one(l);
    assert_int_equal(fds[0], probe);
    assert_int_equal(fds[1], probe + 1);
    errno = 0;
    assert_int_equal(accept_one(l), -1);
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(api_accept_refused_for_descriptors(), before + 2);
    close(fds[0]);
    close(fds[1]);
    /* Outer again: the next connection does not fit. */
    api_accept_set_inner(-1);
    {
        int c5 = client(&at);

        errno = 0;
        assert_int_equal(accept_one(l), -1);
        assert_int_equal(errno, EAGAIN);
        assert_int_equal(api_accept_refused_for_descriptors(), before + 3);
        close(c5);
    }
    for (int i = 0; i < 4; i++)
        close(c[i]);
    close(l);
}

/* At most max connections open; a close makes room for the next one. */
static void test_connections_past_the_count_wait_for_a_close(void **state) {
    struct sockaddr_in at;
    int l = listener(&at), c[3], fds[3];
    uint64_t open0 = api_accept_connections(), at_max0;

    (void)state;
    api_accept_arm(1 << 20, 4, (long)open0 + 2);
    at_max0 = api_accept_refused_at_max();
    for (int i = 0; i < 3; i++)
        c[i] = client(&at);
    fds[0] = accept_one(l);
    fds[1] = accept_one(l);
    assert_true(fds[0] >= 0 && fds[1] >= 0);
    assert_int_equal(api_accept_connections(), open0 + 2);
    errno = 0;
    assert_int_equal(accept_one(l), -1); /* the third: closed */
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(api_accept_refused_at_max(), at_max0 + 1);
    assert_true(closed_by_server(c[2]));
    close(c[2]);
    /* A connection closed: the next one is taken. */
    assert_int_equal(close(fds[0]), 0);
    assert_int_equal(api_accept_connections(), open0 + 1);
    c[2] = client(&at);
    fds[2] = accept_one(l);
    assert_true(fds[2] >= 0);
    assert_int_equal(api_accept_connections(), open0 + 2);
    /* Closing what is not a connection counts nothing. */
    {
        int other = dup(0);

        assert_int_equal(close(other), 0);
        assert_int_equal(api_accept_connections(), open0 + 2);
    }
    close(fds[1]);
    close(fds[2]);
    assert_int_equal(api_accept_connections(), open0);
    assert_int_equal(close(fds[2]), -1); /* closed already: EBADF, as libc */
    assert_int_equal(errno, EBADF);
    assert_int_equal(api_accept_connections(), open0);
    for (int i = 0; i < 3; i++)
        close(c[i]);
    close(l);
    api_accept_arm(1 << 20, 4, 0);
}

/* Any other failure is the caller's to see (reeld stops on it). */
static void test_other_failures_reach_the_caller(void **state) {
    struct sockaddr_in at;
    int l = listener(&at);

    (void)state;
    api_accept_arm(1 << 20, 4, 0);
    assert_int_equal(reel_fault_arm("api.accept", 0, 1), 0);
    errno = 0;
    assert_int_equal(accept_one(l), -1);
    assert_int_equal(errno, ENOBUFS);
    reel_fault_reset();
    errno = 0;
    assert_int_equal(accept_one(l), -1);
    assert_int_equal(errno, EAGAIN); /* nothing waiting */
    close(l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_reserve_scales_with_the_limit),
        /* First: every test after it arms the check. */
        cmocka_unit_test(test_unarmed_it_accepts_as_libc_does),
        cmocka_unit_test(test_a_connection_into_the_reserve_is_closed),
        cmocka_unit_test(test_at_emfile_the_waiting_connection_is_shed),
        cmocka_unit_test(test_an_inner_listener_uses_half_the_reserve),
        cmocka_unit_test(test_connections_past_the_count_wait_for_a_close),
        cmocka_unit_test(test_other_failures_reach_the_caller),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
