#include "base/text.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/*
 * True if the 8 bytes at p are all in 0x01-0x7f. A byte of 0 borrows in
 * v - ONES and leaves its high bit set; a byte of 0x80 or more has it set in
 * v; with neither, no byte borrows and no high bit is set.
 */
static int plain8(const unsigned char *p) {
    uint64_t v;

    memcpy(&v, p, 8);
    return ((v | (v - ONES)) & HIGHS) == 0;
}

size_t reel_utf8_seq(const unsigned char *p, size_t avail) {
    unsigned c = p[0];
    size_t n;
    uint32_t cp;

    if (c >= 0xc2 && c <= 0xdf)
        n = 1, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 2, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 3, cp = c & 0x07;
    else
        return 0;
    if (avail <= n)
        return 0;
    for (size_t i = 1; i <= n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n + 1;
}

void reel_utf8_scrub(char *s) {
    size_t len = strlen(s);

    for (size_t i = 0; i < len;) {
        size_t n;

        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        n = reel_utf8_seq((const unsigned char *)s + i, len - i);
        if (n == 0)
            s[i++] = '?';
        else
            i += n;
    }
}

int reel_utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;

    while (p < end) {
        size_t n;

        if (end - p >= 8 && plain8(p)) { /* the common case: ASCII */
            p += 8;
            continue;
        }
        if (*p == 0)
            return 0;
        if (*p < 0x80) {
            p++;
            continue;
        }
        if ((n = reel_utf8_seq(p, (size_t)(end - p))) == 0)
            return 0;
        p += n;
    }
    return 1;
}

reel_code_t reel_check_name(const char *field, const char *s, size_t len,
                            size_t max, reel_status_t *st) {
    if (len == 0 || len > max)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: must be 1-%zu bytes (got %zu)", field, max,
                               len);
    if (!reel_utf8_valid(s, len))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: must be valid UTF-8 without NUL bytes",
                               field);
    return REEL_OK;
}

int reel_in_charset(unsigned char c, const char *allowed) {
    for (const char *a = allowed; *a; a++) {
        if (a[1] == '-' && a[2] != '\0') {
            if (c >= (unsigned char)a[0] && c <= (unsigned char)a[2])
                return 1;
            a += 2;
        } else if (c == (unsigned char)*a) {
            return 1;
        }
    }
    return 0;
}

reel_code_t reel_check_charset(const char *field, const char *s, size_t len,
                               size_t max, const char *allowed,
                               reel_status_t *st) {
    if (len == 0 || len > max)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: must be 1-%zu bytes of [%s] (got %zu "
                               "bytes)",
                               field, max, allowed, len);
    for (size_t i = 0; i < len; i++)
        if (!reel_in_charset((unsigned char)s[i], allowed))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "%s: byte %zu is not in [%s]", field, i,
                                   allowed);
    return REEL_OK;
}

/* ---- Addresses -------------------------------------------------------------- */

/* Decimal digits only, in [min, 65535]. */
static int is_port(const char *s, unsigned min) {
    unsigned long v = 0;

    if (*s == '\0' || strlen(s) > 5)
        return 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        v = v * 10 + (unsigned long)(*s - '0');
    }
    return v >= min && v <= 65535;
}

/* Whether s, with colons in it, could be an IPv6 address without its
 * brackets: hex digits and colons, a dotted IPv4 tail (::ffff:1.2.3.4)
 * only after the last colon, a %zone at the end. */
static int looks_ipv6(const char *s) {
    const char *last = strrchr(s, ':'), *zone = strchr(s, '%');

    for (const char *p = s; *p != '\0' && (zone == NULL || p < zone); p++) {
        if (*p == '.' && p > last)
            continue;
        if (*p != ':' && !((*p >= '0' && *p <= '9') ||
                           (*p >= 'a' && *p <= 'f') ||
                           (*p >= 'A' && *p <= 'F')))
            return 0;
    }
    return 1;
}

reel_code_t reel_addr_mistake(const char *flag, const char *addr,
                              reel_status_t *st) {
    const char *rest;

    /* What a newcomer writes for an address, resolved by gRPC as a host
     * named "39553" or a target of scheme "http" (a DNS failure, retried
     * for ever): said as what it is instead. */
    if ((rest = strstr(addr, "://")) != NULL &&
        (strncmp(addr, "http://", 7) == 0 ||
         strncmp(addr, "https://", 8) == 0 ||
         strncmp(addr, "grpc://", 7) == 0 ||
         strncmp(addr, "grpcs://", 8) == 0))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: \"%.200s\" is a URL: write HOST:PORT, "
                               "without the scheme (\"%.*s\")",
                               flag, addr,
                               (int)strcspn(rest + 3, "/"), rest + 3);
    if (*addr != '\0' && strspn(addr, "0123456789") == strlen(addr))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: \"%.200s\" is a port alone: write "
                               "HOST:PORT (\"127.0.0.1:%.20s\" on this "
                               "machine)",
                               flag, addr, addr);
    return REEL_OK;
}

reel_code_t reel_addr_check(const char *flag, const char *addr,
                            const char *default_port, int port0, char *out,
                            size_t cap, reel_status_t *st) {
    const char *close, *colon;
    unsigned min = port0 ? 0 : 1;
    reel_code_t rc;

    if ((rc = reel_addr_mistake(flag, addr, st)) != REEL_OK)
        return rc;
    if (strncmp(addr, "unix:", 5) == 0 || strstr(addr, "://") != NULL) {
        if (strlen(addr) >= cap)
            goto bad;
        memcpy(out, addr, strlen(addr) + 1);
        return REEL_OK;
    }
    for (const char *p = addr; *p != '\0'; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            goto bad; /* no host or port has a space or a control byte */
    if (addr[0] == '[') {
        close = strchr(addr, ']');
        if (close == NULL || close == addr + 1 ||
            (close[1] != '\0' &&
             (close[1] != ':' || !is_port(close + 2, min))))
            goto bad;
    } else {
        colon = strchr(addr, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL &&
            looks_ipv6(addr))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "%s: \"%.200s\": write an IPv6 address in "
                                   "brackets, [::1] or [::1]:%s",
                                   flag, addr, default_port);
        if (*addr == '\0' || colon == addr ||
            (colon != NULL && !is_port(colon + 1, min)))
            goto bad;
        close = colon != NULL ? colon - 1 : NULL;
    }
    if (close != NULL && close[1] == ':') {
        if (strlen(addr) >= cap)
            goto bad;
        memcpy(out, addr, strlen(addr) + 1);
        return REEL_OK;
    }
    /* A host alone: the default port, not port 0 nor a scheme's. */
    if ((size_t)snprintf(out, cap, "%s:%s", addr, default_port) >= cap)
        goto bad;
    return REEL_OK;
bad:
    return reel_status_set(st, REEL_INVALID_ARGUMENT,
                           "%s: \"%.200s\" is not HOST, HOST:PORT or "
                           "[IPv6]:PORT (port %u-65535; without one, %s)",
                           flag, addr, min, default_port);
}

void reel_hex(const uint8_t *p, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}
