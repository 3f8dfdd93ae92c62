/*
 * api/grpc_init.h: grpc_init() for reel's processes (reeld, reelctl,
 * reel-bench), first turning off Abseil's mutex deadlock detection: Debian
 * builds Abseil with it on, and it costs every lock gRPC takes. Call it
 * instead of grpc_init(); pair it with grpc_shutdown() as usual.
 */
#ifndef REEL_API_GRPC_INIT_H
#define REEL_API_GRPC_INIT_H

#ifdef __cplusplus
extern "C" {
#endif

void reel_grpc_init(void);

/*
 * Calls fn once, on a gRPC thread, with gRPC's message, when gRPC says it
 * gave up accepting on a listening socket: gRPC 1.51 closes the listener
 * for good when accept() fails with anything but EINTR or EAGAIN (EMFILE
 * at the open files limit, ENFILE, ENOMEM...), and only logs it. Call
 * before the server starts; fn must be async-signal-safe in spirit (set a
 * flag, send a signal), not block.
 */
void reel_grpc_on_listener_lost(void (*fn)(const char *message));

#ifdef __cplusplus
}
#endif

#endif
