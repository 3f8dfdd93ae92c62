/*
 * base/text.h: the checks every name in reel goes through.
 */
#ifndef REEL_BASE_TEXT_H
#define REEL_BASE_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF), no NUL. */
int reel_utf8_valid(const char *s, size_t len);

/*
 * The length (2-4) of the well-formed UTF-8 sequence that starts at p[0], a
 * byte of 0x80 or more, and fits in p[0..avail); 0 if there is none
 * (overlong, surrogate, past U+10FFFF, or cut short). The one decoder
 * behind reel_utf8_valid() and the JSON validator's strings.
 */
size_t reel_utf8_seq(const unsigned char *p, size_t avail);

/* Makes the NUL-terminated s valid UTF-8 in place: each byte of a sequence
 * that is not well-formed (a cut one at the end too) becomes '?'. */
void reel_utf8_scrub(char *s);

/* OK, or INVALID_ARGUMENT naming field: 1..max bytes of valid UTF-8. */
reel_code_t reel_check_name(const char *field, const char *s, size_t len,
                            size_t max, reel_status_t *st);

/* Whether c is in `allowed`: a string of single characters and "a-z"
 * style ranges. */
int reel_in_charset(unsigned char c, const char *allowed);

/* OK, or INVALID_ARGUMENT naming field: 1..max bytes, each in `allowed`
 * (as reel_in_charset() reads it). */
reel_code_t reel_check_charset(const char *field, const char *s, size_t len,
                               size_t max, const char *allowed,
                               reel_status_t *st);

/*
 * A HOST:PORT as reel's programs take them (reeld --listen, reelctl
 * --addr, reel-sink's and reel-reactor's --reel): HOST, HOST:PORT or
 * [IPv6]:PORT, PORT in decimal from 1 to 65535 (from 0 with port0: a
 * listener's "any free port"). A HOST alone takes default_port; gRPC's own
 * target forms (unix:..., dns:///...) pass as given. OK with the address
 * to use in out[cap], or INVALID_ARGUMENT naming flag and the forms.
 */
reel_code_t reel_addr_check(const char *flag, const char *addr,
                            const char *default_port, int port0, char *out,
                            size_t cap, reel_status_t *st);

/*
 * Only the two mistakes reel_addr_check names for what they are, which
 * gRPC would take for a target (a host named "7878", a scheme "http"): a
 * port alone and a URL. OK for anything else, gRPC's target forms
 * included ("dns:host:7878"): for a library that passes addresses on to
 * gRPC as given (client/client.h).
 */
reel_code_t reel_addr_mistake(const char *flag, const char *addr,
                              reel_status_t *st);

/* p[0..n) as 2n lowercase hex digits into out, then a NUL: out holds
 * 2n + 1 bytes. How reel shows a digest (a SHA-256, a token's id). */
void reel_hex(const uint8_t *p, size_t n, char *out);

#endif
