/*
 * base/pattern.h: '.'-token patterns, shared by KV watches and WAL subject
 * filters.
 *
 * A subject is split on '.' into tokens. In a pattern, a token that is
 * exactly "*" matches any one token, and a last token that is exactly ">"
 * matches one or more remaining tokens. Every other token matches itself.
 *
 *   orders.>      matches orders.1 and orders.eu.2, not orders or orders/1
 *   a.*.c         matches a.b.c, not a.c or a.b.x.c
 *
 * A pattern with a wildcard may not have an empty token, and ">" may only be
 * last. All functions are pure and thread-safe.
 */
#ifndef REEL_BASE_PATTERN_H
#define REEL_BASE_PATTERN_H

#include <stddef.h>

#include "base/status.h"

/* True if p has a "*" token or a last ">" token. */
int reel_pattern_has_wildcard(const char *p, size_t len);

/* True if p has an empty token ("..", or a leading or trailing "."; "" is
 * one empty token): no subject has one, so such a pattern never matches. */
int reel_pattern_has_empty_token(const char *p, size_t len);

/*
 * OK, or INVALID_ARGUMENT naming `field`: s is a name that goes into WAL
 * subjects as one or more tokens (a KV key, a journal kind, a signal name),
 * so that each subject names one thing and reads the same to every filter:
 * no token may be empty ("..", or a leading or trailing ".": NATS refuses
 * such subjects, and "*" would match the empty token), and no token may be
 * "*" or ">" (a filter would read them as wildcards).
 */
reel_code_t reel_pattern_check_name(const char *field, const char *s,
                                    size_t len, reel_status_t *st);

/*
 * OK, or INVALID_ARGUMENT naming `field`: bytes that are not valid UTF-8
 * (or a NUL), a ">" token that is not last, or an empty token in a pattern
 * with a wildcard.
 */
reel_code_t reel_pattern_validate(const char *p, size_t len, const char *field,
                                  reel_status_t *st);

/* True if subject matches the (valid) pattern p. */
int reel_pattern_match(const char *p, size_t plen, const char *subject,
                       size_t slen);

/*
 * The length of p's literal prefix: the tokens before the first wildcard,
 * with their trailing '.'. Every match starts with these bytes. For a
 * pattern without wildcards it is the whole pattern.
 */
size_t reel_pattern_literal_prefix(const char *p, size_t len);

/*
 * The length of p's first n tokens, without the '.' after them (all of p
 * when it has fewer), stopping before its first "*" or ">" token: 0 when
 * the first is one. Subscriptions of many subjects are indexed under this
 * head of their pattern, and an event is looked up under the heads of its
 * subject (which has no such token): "kv.orders" of "kv.orders.>" and of
 * "kv.orders.1" with n = 2.
 */
size_t reel_pattern_literal_head(const char *p, size_t len, size_t n);

#endif
