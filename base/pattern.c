/*
 * base/pattern.c: token matching without allocation: walk both strings one
 * token at a time.
 */
#include "base/pattern.h"

#include <string.h>

#include "base/text.h"

/* The token starting at s[*pos]: its start and length; advances *pos past
 * the following '.', or to len+1 after the last token. */
static void next_token(const char *s, size_t len, size_t *pos,
                       const char **tok, size_t *tlen) {
    const char *dot;
    size_t start = *pos;

    *tok = s + start;
    dot = start < len ? memchr(s + start, '.', len - start) : NULL;
    if (dot == NULL) {
        *tlen = len - start;
        *pos = len + 1;
    } else {
        *tlen = (size_t)(dot - (s + start));
        *pos = (size_t)(dot - s) + 1;
    }
}

static int is_tok(const char *tok, size_t tlen, char c) {
    return tlen == 1 && tok[0] == c;
}

int reel_pattern_has_wildcard(const char *p, size_t len) {
    size_t pos = 0;
    const char *tok;
    size_t tlen;

    while (pos <= len) {
        next_token(p, len, &pos, &tok, &tlen);
        if (is_tok(tok, tlen, '*'))
            return 1;
        if (is_tok(tok, tlen, '>') && pos > len)
            return 1;
    }
    return 0;
}

int reel_pattern_has_empty_token(const char *p, size_t len) {
    size_t pos = 0;
    const char *tok;
    size_t tlen;

    while (pos <= len) {
        next_token(p, len, &pos, &tok, &tlen);
        if (tlen == 0)
            return 1;
    }
    return 0;
}

reel_code_t reel_pattern_check_name(const char *field, const char *s,
                                    size_t len, reel_status_t *st) {
    size_t pos = 0;
    const char *tok;
    size_t tlen;

    while (pos <= len) {
        next_token(s, len, &pos, &tok, &tlen);
        if (tlen == 0)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "%s: a token may not be empty (\"..\", or "
                                   "a leading or trailing \".\"): it becomes "
                                   "part of a WAL subject",
                                   field);
        if (is_tok(tok, tlen, '*') || is_tok(tok, tlen, '>'))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "%s: the tokens \"*\" and \">\" are "
                                   "reserved for patterns",
                                   field);
    }
    return REEL_OK;
}

reel_code_t reel_pattern_validate(const char *p, size_t len, const char *field,
                                  reel_status_t *st) {
    int wild = 0, empty = 0;
    size_t pos = 0;
    const char *tok;
    size_t tlen;

    /* Subjects are UTF-8 (reeld's wire check refuses any other string), so
     * a pattern that is not would never match: the one check here lets a
     * client (reel-sink's config) refuse what reeld would. */
    if (!reel_utf8_valid(p, len))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: must be valid UTF-8 without NUL bytes",
                               field);
    while (pos <= len) {
        next_token(p, len, &pos, &tok, &tlen);
        if (tlen == 0)
            empty = 1;
        if (is_tok(tok, tlen, '*'))
            wild = 1;
        if (is_tok(tok, tlen, '>')) {
            if (pos <= len)
                return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                       "%s: \">\" must be the last token",
                                       field);
            wild = 1;
        }
    }
    if (wild && empty)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: a pattern may not have an empty token "
                               "(\"..\", or a leading or trailing \".\")",
                               field);
    return REEL_OK;
}

int reel_pattern_match(const char *p, size_t plen, const char *s, size_t slen) {
    size_t pp = 0, sp = 0;
    const char *pt, *st;
    size_t ptl, stl;

    while (pp <= plen) {
        next_token(p, plen, &pp, &pt, &ptl);
        if (is_tok(pt, ptl, '>') && pp > plen)
            return sp <= slen; /* one or more tokens remain */
        if (sp > slen)
            return 0; /* the subject ran out of tokens */
        next_token(s, slen, &sp, &st, &stl);
        if (is_tok(pt, ptl, '*'))
            continue;
        if (ptl != stl || memcmp(pt, st, ptl) != 0)
            return 0;
    }
    return sp > slen; /* both ran out together */
}

size_t reel_pattern_literal_prefix(const char *p, size_t len) {
    size_t pos = 0, prefix = 0;
    const char *tok;
    size_t tlen;

    while (pos <= len) {
        next_token(p, len, &pos, &tok, &tlen);
        if (is_tok(tok, tlen, '*') || (is_tok(tok, tlen, '>') && pos > len))
            return prefix;
        prefix = pos > len ? len : pos;
    }
    return prefix;
}

size_t reel_pattern_literal_head(const char *p, size_t len, size_t n) {
    size_t pos = 0, head = 0;
    const char *tok;
    size_t tlen;

    while (n-- > 0 && pos <= len) {
        next_token(p, len, &pos, &tok, &tlen);
        if (is_tok(tok, tlen, '*') || is_tok(tok, tlen, '>'))
            break;
        head = (size_t)(tok - p) + tlen;
    }
    return head;
}
