/*
 * api/grpc_init.cc: grpc_init() for reel's processes, with one setting gRPC
 * itself cannot take: Abseil's mutex deadlock detection off; and gRPC's
 * own log lines through reel's log, rate-limited.
 *
 * Debian builds Abseil without NDEBUG, so every absl::Mutex that gRPC
 * takes while holding another also records the lock order in a global
 * graph (absl::synchronization_internal::GraphCycles, behind one global
 * lock): a debugging aid that perf showed in reeld's hot path. Release
 * builds of Abseil have it off; this is the one call that turns it off.
 * It is C++ because the switch has no C interface.
 */
#include <absl/synchronization/mutex.h>
#include <grpc/grpc.h>
#include <grpc/support/log.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "api/grpc_init.h"

extern "C" {
#include "base/clock.h"
#include "base/log.h"
}

/*
 * gRPC's own messages (a failed TLS handshake, a failed accept) go out as
 * reel's log lines, at most LINES_PER_S a second: each connection a
 * stranger opens must not be able to add a line of its own without limit.
 * What is dropped is counted in the next line that goes out.
 */
#define LINES_PER_S 10

static std::atomic<void (*)(const char *)> listener_lost{nullptr};

void reel_grpc_on_listener_lost(void (*fn)(const char *message)) {
    listener_lost.store(fn);
}

static void log_line(gpr_log_func_args *a) {
    static std::mutex mu;
    static int64_t second = 0;
    static int lines = 0;
    static long dropped = 0;
    int64_t now = reel_clock_mono_ns() / 1000000000;
    long said = 0;
    const char *file = a->file != nullptr ? a->file : "";
    const char *slash = strrchr(file, '/');

    /* Before the rate limit: this line must never be dropped. */
    if (a->message != nullptr && strstr(a->message, "Failed accept4") &&
        strstr(file, "tcp_server") != nullptr) {
        void (*fn)(const char *) = listener_lost.exchange(nullptr);

        if (fn != nullptr)
            fn(a->message);
    }
    {
        std::lock_guard<std::mutex> hold(mu);
        if (now != second) {
            second = now;
            lines = 0;
        }
        if (lines >= LINES_PER_S) {
            dropped++;
            return;
        }
        lines++;
        said = dropped;
        dropped = 0;
    }
    char dropped_note[64] = "";

    if (said > 0)
        snprintf(dropped_note, sizeof(dropped_note),
                 " [%ld lines dropped before it]", said);
    reel_log(a->severity == GPR_LOG_SEVERITY_ERROR  ? REEL_LOG_WARN
             : a->severity == GPR_LOG_SEVERITY_INFO ? REEL_LOG_INFO
                                                    : REEL_LOG_DEBUG,
             "grpc", "%s (%s:%d)%s", a->message,
             slash != nullptr ? slash + 1 : file, a->line, dropped_note);
}

void reel_grpc_init(void) {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
    gpr_set_log_function(log_line);
    grpc_init();
}
