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

#ifdef __cplusplus
}
#endif

#endif
