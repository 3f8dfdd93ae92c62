/*
 * base/json.h: strict JSON validation (RFC 8259) without building a tree.
 *
 * reel stores JSON as text and hands it back byte for byte; it only has to
 * know the text is valid. This validator allocates nothing, runs in one
 * pass, and bounds nesting depth, so hostile input (1 MiB of "[") costs
 * no memory. Pure and thread-safe.
 */
#ifndef REEL_BASE_JSON_H
#define REEL_BASE_JSON_H

#include <stddef.h>

#define REEL_JSON_MAX_DEPTH 512

/*
 * 0 if s[0..len) is exactly one JSON value (surrounding whitespace
 * allowed), or -1 with *err_off (if not NULL) at the first bad byte and
 * *why (if not NULL) saying what is wrong.
 */
int reel_json_validate(const char *s, size_t len, size_t *err_off,
                       const char **why);

#endif
