/*
 * api/wire.h: checks on a request's wire bytes that decoding cannot make.
 *
 * protobuf-c hands string fields over as NUL-terminated C strings and keeps
 * no length, so "own\0x" would silently become "own". Every request is
 * therefore walked against its descriptor before it is decoded: a string
 * field (at any depth, map entries included) must be valid UTF-8 with no
 * NUL byte. Pure and thread-safe. Also the one varint writer the services
 * use to frame messages by hand.
 */
#ifndef REEL_API_WIRE_H
#define REEL_API_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "base/status.h"

/*
 * Writes v as a protobuf varint at p (room for 10 bytes); returns its
 * length. For messages framed by hand around bytes already encoded.
 */
size_t api_wire_put_varint(uint8_t *p, uint64_t v);

/* The length api_wire_put_varint() would write for v. */
size_t api_wire_varint_size(uint64_t v);

/* OK, or INVALID_ARGUMENT naming the field (e.g. "lease_owner"). */
reel_code_t api_wire_check(const ProtobufCMessageDescriptor *d,
                           const uint8_t *buf, size_t len, reel_status_t *st);

#endif
