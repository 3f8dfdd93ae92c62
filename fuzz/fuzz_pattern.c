/* fuzz/fuzz_pattern.c: pattern validation and matching. The input is a
 * pattern and a subject separated by the first NUL. Properties: a match
 * starts with the literal prefix; an exact (wildcard-free) pattern matches
 * only itself. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/pattern.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = (const char *)data, *nul = memchr(data, 0, size);
    size_t plen = nul ? (size_t)(nul - p) : size;
    const char *s = nul ? nul + 1 : "";
    size_t slen = nul ? size - plen - 1 : 0;
    size_t lit;
    int m;

    if (reel_pattern_validate(p, plen, "subject_pattern", NULL) != REEL_OK)
        return 0;
    lit = reel_pattern_literal_prefix(p, plen);
    if (lit > plen)
        abort();
    m = reel_pattern_match(p, plen, s, slen);
    if (m && (slen < lit || memcmp(s, p, lit) != 0))
        abort();
    if (!reel_pattern_has_wildcard(p, plen) &&
        m != (plen == slen && memcmp(p, s, plen) == 0))
        abort();
    return 0;
}
