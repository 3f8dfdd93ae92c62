/*
 * base/json.c: a one-pass JSON validator with an explicit stack.
 *
 * The stack holds one bit per open container (object or array), so depth
 * is bounded by REEL_JSON_MAX_DEPTH and no recursion happens. Strings must
 * be valid UTF-8 with no raw control characters; escapes are checked
 * (including \u surrogate pairs); numbers follow the grammar exactly (no
 * leading zeros, no "+", no bare ".").
 */
#include "base/json.h"

#include <stdint.h>
#include <string.h>

#include "base/text.h"

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
/* Bit tricks on 8 bytes at once: non-zero iff some byte is 0 / below n
 * (n <= 0x80). */
#define HAS_ZERO(v) (((v) - ONES) & ~(v) & HIGHS)
#define HAS_LESS(v, n) (((v) - ONES * (n)) & ~(v) & HIGHS)

/* True if the 8 bytes at p need no look inside a string: each is 0x20-0x7f
 * and neither '"' nor '\\'. */
static int plain8(const unsigned char *p) {
    uint64_t v;

    memcpy(&v, p, 8);
    return ((v & HIGHS) | HAS_LESS(v, 0x20) | HAS_ZERO(v ^ (ONES * '"')) |
            HAS_ZERO(v ^ (ONES * '\\'))) == 0;
}

typedef struct parser {
    const unsigned char *p, *end;
    const char *why;
} parser_t;

static void skip_ws(parser_t *ps) {
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int fail(parser_t *ps, const char *why) {
    ps->why = why;
    return -1;
}

static int hex4(parser_t *ps, uint32_t *out) {
    uint32_t v = 0;

    if (ps->end - ps->p < 4)
        return fail(ps, "truncated \\u escape");
    for (int i = 0; i < 4; i++) {
        unsigned c = ps->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return fail(ps, "bad \\u escape");
    }
    ps->p += 4;
    *out = v;
    return 0;
}

/* One UTF-8 sequence starting at a byte >= 0x80. */
static int utf8_seq(parser_t *ps) {
    size_t n = reel_utf8_seq(ps->p, (size_t)(ps->end - ps->p));

    if (n == 0)
        return fail(ps, "invalid UTF-8");
    ps->p += n;
    return 0;
}

static int string(parser_t *ps) {
    ps->p++; /* the opening quote */
    while (ps->p < ps->end) {
        unsigned c;

        if (ps->end - ps->p >= 8 && plain8(ps->p)) {
            ps->p += 8;
            continue;
        }
        c = *ps->p;

        if (c == '"') {
            ps->p++;
            return 0;
        }
        if (c < 0x20)
            return fail(ps, "control character in a string");
        if (c >= 0x80) {
            if (utf8_seq(ps) != 0)
                return -1;
            continue;
        }
        ps->p++;
        if (c != '\\')
            continue;
        if (ps->p >= ps->end)
            return fail(ps, "unterminated string");
        c = *ps->p++;
        if (c == 'u') {
            uint32_t u, lo;

            if (hex4(ps, &u) != 0)
                return -1;
            if (u >= 0xdc00 && u <= 0xdfff)
                return fail(ps, "lone low surrogate");
            if (u >= 0xd800 && u <= 0xdbff) {
                if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
                    return fail(ps, "lone high surrogate");
                ps->p += 2;
                if (hex4(ps, &lo) != 0)
                    return -1;
                if (lo < 0xdc00 || lo > 0xdfff)
                    return fail(ps, "bad surrogate pair");
            }
        } else if (c != '"' && c != '\\' && c != '/' && c != 'b' &&
                   c != 'f' && c != 'n' && c != 'r' && c != 't') {
            return fail(ps, "bad escape");
        }
    }
    return fail(ps, "unterminated string");
}

static int digits(parser_t *ps) {
    const unsigned char *start = ps->p;

    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
        ps->p++;
    return ps->p > start ? 0 : -1;
}

static int number(parser_t *ps) {
    if (*ps->p == '-')
        ps->p++;
    if (ps->p >= ps->end)
        return fail(ps, "bad number");
    if (*ps->p == '0') {
        ps->p++;
    } else if (digits(ps) != 0) {
        return fail(ps, "bad number");
    }
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (digits(ps) != 0)
            return fail(ps, "bad number");
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (digits(ps) != 0)
            return fail(ps, "bad number");
    }
    /* "01": a number may not run straight into another digit. */
    if (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
        return fail(ps, "leading zero in a number");
    return 0;
}

/* word, or the offset of its first wrong byte ("nan": 1) or of its end
 * ("tru": 3), not of where it began. */
static int literal(parser_t *ps, const char *word, size_t n) {
    for (size_t i = 0; i < n; i++, ps->p++) {
        if (ps->p >= ps->end)
            return fail(ps, "unexpected end");
        if (*ps->p != (unsigned char)word[i])
            return fail(ps, "unexpected character");
    }
    return 0;
}

/* A scalar, or the opening of a container (pushed on the stack). */
#define JSON_TEXT_(n) #n
#define JSON_TEXT(n) JSON_TEXT_(n)
#define JSON_DEPTH_TEXT JSON_TEXT(REEL_JSON_MAX_DEPTH)

static int value_start(parser_t *ps, uint8_t *stack, size_t *depth) {
    if (ps->p >= ps->end)
        return fail(ps, "expected a value");
    switch (*ps->p) {
    case '{':
    case '[':
        if (*depth == REEL_JSON_MAX_DEPTH)
            return fail(ps, "nested deeper than " JSON_DEPTH_TEXT " levels");
        if (*ps->p == '{')
            stack[*depth / 8] |= (uint8_t)(1u << (*depth % 8));
        else
            stack[*depth / 8] &= (uint8_t)~(1u << (*depth % 8));
        (*depth)++;
        ps->p++;
        return 1; /* opened */
    case '"':
        return string(ps);
    case 't':
        return literal(ps, "true", 4);
    case 'f':
        return literal(ps, "false", 5);
    case 'n':
        return literal(ps, "null", 4);
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
            return number(ps);
        return fail(ps, "expected a value");
    }
}

int reel_json_validate(const char *s, size_t len, size_t *err_off,
                       const char **why) {
    parser_t ps = {(const unsigned char *)s, (const unsigned char *)s + len,
                   NULL};
    uint8_t stack[REEL_JSON_MAX_DEPTH / 8] = {0};
    size_t depth = 0;
    int r, in_object, need_value = 1;

    for (;;) {
        skip_ws(&ps);
        if (need_value) {
            r = value_start(&ps, stack, &depth);
            if (r < 0)
                goto bad;
            if (r == 1) { /* just opened: an empty container may close */
                in_object = stack[(depth - 1) / 8] >> ((depth - 1) % 8) & 1;
                skip_ws(&ps);
                if (ps.p < ps.end && *ps.p == (in_object ? '}' : ']')) {
                    ps.p++;
                    depth--;
                    need_value = 0;
                    continue;
                }
                if (in_object) {
                    if (ps.p >= ps.end || *ps.p != '"') {
                        fail(&ps, "expected a string key");
                        goto bad;
                    }
                    if (string(&ps) != 0)
                        goto bad;
                    skip_ws(&ps);
                    if (ps.p >= ps.end || *ps.p != ':') {
                        fail(&ps, "expected ':'");
                        goto bad;
                    }
                    ps.p++;
                }
                continue; /* need_value stays 1 */
            }
            need_value = 0;
            continue;
        }
        if (depth == 0)
            break;
        in_object = stack[(depth - 1) / 8] >> ((depth - 1) % 8) & 1;
        if (ps.p < ps.end && *ps.p == ',') {
            ps.p++;
            if (in_object) {
                skip_ws(&ps);
                if (ps.p >= ps.end || *ps.p != '"') {
                    fail(&ps, "expected a string key");
                    goto bad;
                }
                if (string(&ps) != 0)
                    goto bad;
                skip_ws(&ps);
                if (ps.p >= ps.end || *ps.p != ':') {
                    fail(&ps, "expected ':'");
                    goto bad;
                }
                ps.p++;
            }
            need_value = 1;
            continue;
        }
        if (ps.p < ps.end && *ps.p == (in_object ? '}' : ']')) {
            ps.p++;
            depth--;
            continue;
        }
        fail(&ps, in_object ? "expected ',' or '}'" : "expected ',' or ']'");
        goto bad;
    }
    skip_ws(&ps);
    if (ps.p != ps.end) {
        fail(&ps, "unexpected data after the value");
        goto bad;
    }
    return 0;
bad:
    if (err_off != NULL)
        *err_off = (size_t)(ps.p - (const unsigned char *)s);
    if (why != NULL)
        *why = ps.why;
    return -1;
}
