/* fuzz/fuzz_token.c: the bearer token parser on any bytes, behind an
 * "authorization" value's scheme. Properties: a token that parses has
 * exactly the token's length and "reel_" prefix, and its id is the 16
 * bytes after the prefix; a byte changed in the id's hex digits to a
 * non-hex one never parses. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data, *tok;
    char id[AUTH_ID_LEN + 1], copy[AUTH_TOKEN_LEN];
    size_t tlen;

    tok = auth_bearer(s, size, &tlen);
    if (tok != NULL && (tok < s || tok + tlen != s + size))
        abort();
    if (tok == NULL) {
        tok = s;
        tlen = size;
    }
    if (auth_token_parse(tok, tlen, id) != 0)
        return 0;
    if (tlen != AUTH_TOKEN_LEN || memcmp(tok, "reel_", 5) != 0 ||
        strlen(id) != AUTH_ID_LEN || memcmp(id, tok + 5, AUTH_ID_LEN) != 0)
        abort();
    memcpy(copy, tok, AUTH_TOKEN_LEN);
    copy[5 + (size % AUTH_ID_LEN)] = 'g';
    if (auth_token_parse(copy, AUTH_TOKEN_LEN, id) == 0)
        abort();
    return 0;
}
