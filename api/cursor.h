/*
 * api/cursor.h: run listings' cursors that name no run of another tenant
 * (private to api/).
 *
 * A run listing whose scan passed list_scan_max runs it does not return
 * ends its page on the last run it passed, and the next page starts after
 * it. Over every tenant's runs (a tenant of more apps than a merged walk
 * takes) that run is often another tenant's, and its id would tell the
 * caller that it exists and when it was made. So that cursor goes out
 * sealed: AES-256-GCM under a key made at start, "~" and the hex of nonce,
 * ciphertext and tag. A sealed cursor reads back only in the reeld that
 * made it: after a restart it is refused (INVALID_ARGUMENT), and the
 * listing starts again from the beginning. Only such a run of another
 * tenant's is sealed: a cursor the caller may see stays a plain run id,
 * which pages across restarts.
 */
#ifndef REEL_API_CURSOR_H
#define REEL_API_CURSOR_H

#include <stddef.h>

#include "base/status.h"

/* "~" + hex(12-byte nonce + 26-byte run id + 16-byte tag) + NUL. */
#define API_SEALED_CURSOR_LEN (1 + 2 * (12 + 26 + 16))

/* run_id (26 characters) sealed into out; 0, or -1 (no randomness or
 * cipher: the caller fails the request). */
int api_cursor_seal(const char *run_id, char out[API_SEALED_CURSOR_LEN + 1]);

/* Whether s is sealed (starts with "~"). */
int api_cursor_is_sealed(const char *s);

/* The run id sealed in s, into run_id; INVALID_ARGUMENT naming field when
 * s is not a cursor this reeld sealed. */
reel_code_t api_cursor_unseal(const char *field, const char *s,
                              char run_id[27], reel_status_t *st);

#endif
