/*
 * api/grpc_init.cc: grpc_init() for reel's processes, with one setting gRPC
 * itself cannot take: Abseil's mutex deadlock detection off.
 *
 * Debian builds Abseil without NDEBUG, so every absl::Mutex that gRPC
 * takes while holding another also records the lock order in a global
 * graph (absl::synchronization_internal::GraphCycles, behind one global
 * lock): a debugging aid that perf showed in reeld's hot path. Release
 * builds of Abseil have it off; this is the one call that turns it off.
 * It is the only C++ in reel, because the switch has no C interface.
 */
#include <absl/synchronization/mutex.h>
#include <grpc/grpc.h>

#include "api/grpc_init.h"

void reel_grpc_init(void) {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
    grpc_init();
}
