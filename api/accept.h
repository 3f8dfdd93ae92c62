/*
 * api/accept.h: reeld's accept4() and close(), which bound the connections
 * it holds: by a count (--max-connections) and by a reserve of descriptors
 * for its own files; and never let gRPC see EMFILE.
 *
 * gRPC 1.51 closes a listening socket for good when accept4() fails with
 * anything but EAGAIN, ECONNABORTED or EINTR, EMFILE included, and only
 * logs it: any client that can reach the port and holds connections open
 * until the open files limit would take reeld off the network (and its
 * RocksDB could then not open the file a flush writes). Each idle HTTP/2
 * connection also holds about 22 KiB of reeld's memory before any call,
 * token or certificate is seen. gRPC's C core counts neither.
 *
 * api/accept.c defines accept4() and close() themselves, which replace
 * libc's for the whole process (gRPC's and libmicrohttpd's calls go
 * through their procedure linkage tables, bound to the program's own
 * definitions first). Once armed:
 *
 *   - a connection accepted while --max-connections are open, or while
 *     fewer than the reserve of descriptors are free, is closed at once
 *     (its client sees the connection reset and retries, as from a
 *     server at its connection limit);
 *   - when accept4() fails for want of a descriptor (EMFILE, ENFILE), one
 *     descriptor kept aside for that is closed, the waiting connection is
 *     accepted and closed, and the descriptor is taken back (the way
 *     libuv and nginx shed load); the caller sees EAGAIN and goes on
 *     listening;
 *   - close() of a connection's descriptor counts it gone.
 *
 * Before api_accept_arm() both are libc's, unchanged.
 */
#ifndef REEL_API_ACCEPT_H
#define REEL_API_ACCEPT_H

#include <stdint.h>

/* The reserve for an open files limit: an eighth of it, at least 32 (but
 * at most half the limit) and at most 1,024. */
long api_accept_reserve_for(long limit);

/*
 * Arms the checks with the process's soft open files limit (read now: call
 * it after raising the limit) and api_accept_reserve_for() of it, or with
 * limit and reserve when limit > 0 (the unit tests); at most
 * max_connections connections open (0: no count). Opens the descriptor
 * kept aside. Returns the reserve. Arming again keeps the count of
 * connections open.
 */
long api_accept_arm(long limit, long reserve, long max_connections);

/*
 * Makes sock (a listening socket; -1: none) an inner one: its connections
 * may use the first half of the reserve and are not counted against
 * max_connections. reeld's metrics endpoint is, so that /metrics still
 * answers while gRPC connections are refused; it takes a bounded number
 * of connections of its own.
 */
void api_accept_set_inner(int sock);

/* Connections open (accepted from other than the inner socket), and the
 * most taken (0: not counted). */
uint64_t api_accept_connections(void);
uint64_t api_accept_max_connections(void);

/* Connections closed as soon as accepted, since start: at the count, and
 * for want of descriptors. */
uint64_t api_accept_refused_at_max(void);
uint64_t api_accept_refused_for_descriptors(void);

#endif
