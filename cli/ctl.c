/*
 * cli/ctl.c: the parts of reelctl every command group uses: parsing a
 * subcommand line against its group's tables, unary calls, error reports,
 * JSON/text printing helpers, and the messages several groups print (a
 * run, a journal entry, a value event, a signal) as JSON.
 *
 * A subcommand line: flags may appear anywhere after the group's name, and
 * "--" ends them (so a positional may start with "--"). A flag's value is
 * the next argument or follows "=". A flag's short form ("-q") is taken
 * only as the whole argument; any other argument starting with one "-" is
 * a positional ("-" is standard input). The subcommand's name is the
 * first argument that is neither a flag nor a flag's value.
 *
 * Output: stored JSON text (values, payloads, results) is printed as it is
 * stored, in text and JSON alike, never re-encoded: cJSON would parse
 * numbers into doubles and print 9007199254740993 as 9.00719925474099e+15.
 * The one change is that line breaks (in valid JSON only whitespace
 * between tokens) print as spaces: every value, entry and event is one
 * line, which is what line-oriented readers (and JSON lines) need.
 */
#include "cli/ctl.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/json.h"
#include "base/text.h"

/* ---- Parsing ------------------------------------------------------------- */

/* 1 if c's first positional is an alternative to flags (see ctl.h). */
static int alt_pos(const ctl_command_t *c) {
    return c->pos[0] != NULL && c->pos[0][0] == '(';
}

/* Whether the alternative alt names the flag ("--app" in "(X | --app A)"). */
static int alt_names(const char *alt, const char *flag) {
    size_t len = strlen(flag);

    for (const char *p = strstr(alt, flag); p != NULL;
         p = strstr(p + 1, flag))
        if ((p[len] == ' ' || p[len] == ')') && p[-1] == ' ')
            return 1;
    return 0;
}

/* "set NAMESPACE KEY VALUE [--create] ...": for help and usage errors. */
static void synopsis(const ctl_group_t *g, const ctl_command_t *c, char *buf,
                     size_t size) {
    size_t n = (size_t)snprintf(buf, size, "%s", c->name);
    int alt = alt_pos(c);

    for (int i = 0; i < CTL_MAX_POS && c->pos[i] != NULL && n < size; i++) {
        int required = (alt && i == 0) || i - alt < c->min_pos;

        n += (size_t)snprintf(buf + n, size - n, required ? " %s" : " [%s]",
                              c->pos[i]);
    }
    for (int f = 0; f < g->nflags && n < size; f++) {
        const ctl_flag_spec_t *s = &g->flags[f];
        int opt = !(c->required & CTL_F(f));

        if (!(c->flags & CTL_F(f)) ||
            (alt && alt_names(c->pos[0], s->name)))
            continue;
        n += (size_t)snprintf(buf + n, size - n, " %s%s%s%s%s%s",
                              opt ? "[" : "", s->alias ? s->alias : s->name,
                              s->arg ? " " : "",
                              s->arg ? s->arg : "", s->repeat ? " ..." : "",
                              opt ? "]" : "");
    }
}

void ctl_group_usage(const ctl_group_t *g, FILE *out) {
    char syn[256];

    fprintf(out, "\n%s subcommands (flags may come anywhere after %s):\n",
            g->name, g->name);
    for (const ctl_command_t *c = g->commands; c->name != NULL; c++) {
        synopsis(g, c, syn, sizeof(syn));
        fprintf(out, "  %s %s\n      %s\n", g->name, syn, c->help);
    }
}

static int find_subcommand(const ctl_group_t *g, int argc, char **argv);

int ctl_group_help(const ctl_group_t *g, int argc, char **argv, FILE *out) {
    int sub = find_subcommand(g, argc, argv);
    char syn[256];

    if (sub < 0) {
        fprintf(out, "usage: reelctl [GLOBAL FLAGS] %s SUBCOMMAND ...\n",
                g->name);
        ctl_group_usage(g, out);
        fprintf(out, "\nreelctl help %s SUBCOMMAND: one subcommand; reelctl "
                     "help: the global flags\n",
                g->name);
        return EXIT_OK;
    }
    for (const ctl_command_t *c = g->commands; c->name != NULL; c++) {
        if (strcmp(argv[sub], c->name) != 0)
            continue;
        synopsis(g, c, syn, sizeof(syn));
        fprintf(out, "usage: reelctl [GLOBAL FLAGS] %s %s\n\n      %s\n",
                g->name, syn, c->help);
        fprintf(out, "\nglobal flags: --addr HOST[:PORT] --timeout DURATION "
                     "--json (reelctl help)\n");
        return EXIT_OK;
    }
    fprintf(stderr, "reelctl help: %s has no subcommand \"%s\"; expected one "
                    "of:",
            g->name, argv[sub]);
    for (const ctl_command_t *c = g->commands; c->name != NULL; c++)
        fprintf(stderr, " %s", c->name);
    fprintf(stderr, "\n");
    return EXIT_USAGE;
}

int ctl_usage_error(const ctl_args_t *a, const char *fmt, ...) {
    char syn[256];
    va_list ap;

    fprintf(stderr, "reelctl %s %s: ", a->group->name, a->cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    synopsis(a->group, a->cmd, syn, sizeof(syn));
    fprintf(stderr, "\nusage: reelctl %s %s\n", a->group->name, syn);
    return EXIT_USAGE;
}

/* The units of a duration, largest first (ctl_format_duration's order). */
static const struct {
    const char *unit;
    int64_t ms;
} duration_units[] = {
    {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1},
};

int64_t ctl_parse_duration_ms(const char *s) {
    /* Far beyond any sensible deadline or lease, and exact in a double. */
    const double max_ms = 1e15;
    char *end;
    double v;

    /* Digits first: strtod alone would take " 5s", "+5s" and "0x10s". */
    if ((*s < '0' || *s > '9') && *s != '.')
        return -1;
    errno = 0;
    v = strtod(s, &end);
    /* !(v >= 0) also refuses NaN; strtod takes "nan" and "inf". */
    if (errno != 0 || end == s || !(v >= 0) ||
        strncmp(s, "0x", 2) == 0 || strncmp(s, "0X", 2) == 0)
        return -1;
    if (*end == '\0') {
        v *= 1000.0; /* a bare number is seconds, as reeld takes them */
    } else {
        size_t i, n = sizeof(duration_units) / sizeof(*duration_units);

        for (i = 0; i < n && strcmp(end, duration_units[i].unit) != 0; i++) {
        }
        if (i == n)
            return -1;
        v *= (double)duration_units[i].ms;
    }
    if (v > max_ms)
        return -1;
    return (int64_t)v;
}

const char *ctl_format_duration(int64_t ms, char *buf, size_t size) {
    size_t n = sizeof(duration_units) / sizeof(*duration_units);

    for (size_t i = 0; i < n; i++) {
        /* "24h", as the limits are written, rather than "1d". */
        if (ms == duration_units[i].ms && i + 1 < n &&
            strcmp(duration_units[i].unit, "d") == 0)
            continue;
        if (ms != 0 && ms % duration_units[i].ms == 0) {
            snprintf(buf, size, "%lld%s",
                     (long long)(ms / duration_units[i].ms),
                     duration_units[i].unit);
            return buf;
        }
    }
    snprintf(buf, size, "%lldms", (long long)ms);
    return buf;
}

/* 9999-12-31T23:59:59.999Z: the last instant RFC 3339's four digits spell. */
#define MAX_TIME_MS 253402300799999LL

/* n digits at *p into *out, moving *p past them; -1 if one is not a digit. */
static int take_digits(const char **p, int n, int *out) {
    int v = 0;

    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return -1;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return 0;
}

/* Whether *p is one of the characters in any, moving *p past it. */
static int take_char(const char **p, const char *any) {
    if (**p == '\0' || strchr(any, **p) == NULL)
        return 0;
    (*p)++;
    return 1;
}

static int days_in_month(int year, int month) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

    return month == 2 && leap ? 29 : days[month - 1];
}

/*
 * RFC 3339's date-time: "2026-01-01T00:00:00Z", a fraction and a numeric
 * offset allowed; "t", "z" and a space for "T" as its section 5.6 allows.
 * A leap second (":60", only at 23:59 UTC, as its section 5.7 says) is
 * the next second's first instant.
 */
static int parse_rfc3339(const char *p, int64_t *ms) {
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0, frac = 0;
    struct tm tm;
    time_t t;

    if (take_digits(&p, 4, &y) || !take_char(&p, "-") ||
        take_digits(&p, 2, &mo) || !take_char(&p, "-") ||
        take_digits(&p, 2, &d) || !take_char(&p, "Tt ") ||
        take_digits(&p, 2, &h) || !take_char(&p, ":") ||
        take_digits(&p, 2, &mi) || !take_char(&p, ":") ||
        take_digits(&p, 2, &sec))
        return -1;
    if (take_char(&p, ".")) {
        if (*p < '0' || *p > '9')
            return -1;
        /* ms from the first three digits; the rest are finer than ms. */
        for (int scale = 100; *p >= '0' && *p <= '9'; p++, scale /= 10)
            frac += (*p - '0') * scale;
    }
    if (!take_char(&p, "Zz")) {
        if (*p != '+' && *p != '-')
            return -1;
        sign = *p++ == '-' ? -1 : 1;
        if (take_digits(&p, 2, &oh) || !take_char(&p, ":") ||
            take_digits(&p, 2, &om))
            return -1;
    }
    if (*p != '\0' || y < 1970 || mo < 1 || mo > 12 || d < 1 ||
        d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60 ||
        oh > 23 || om > 59)
        return -1;
    if (sec == 60 &&
        ((h * 60 + mi - sign * (oh * 60 + om)) % 1440 + 1440) % 1440 != 1439)
        return -1; /* not 23:59 UTC: no leap second is ever there */
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    if ((t = timegm(&tm)) == (time_t)-1)
        return -1;
    *ms = ((int64_t)t - sign * (oh * 3600 + om * 60)) * 1000 + frac;
    return *ms >= 0 && *ms <= MAX_TIME_MS ? 0 : -1;
}

int ctl_parse_time_ms(const char *s, int64_t *ms) {
    uint64_t v;

    if (*s >= '0' && *s <= '9' && s[strspn(s, "0123456789")] == '\0') {
        if (ctl_parse_u64(s, MAX_TIME_MS, &v) != 0)
            return -1;
        *ms = (int64_t)v;
        return 0;
    }
    return parse_rfc3339(s, ms);
}

int64_t ctl_now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether s is a port: 1-65535 in digits. */
/* A malloc'd copy of s, or NULL said. */
static char *dup_or_say(const char *s) {
    char *d = strdup(s);

    if (d == NULL)
        fprintf(stderr, "reelctl: out of memory\n");
    return d;
}

char *ctl_resolve_addr(const char *flag, const char *addr) {
    char out[512];
    reel_status_t st = REEL_STATUS_INIT;

    if (reel_addr_check(flag, addr, CTL_DEFAULT_PORT, 0, out, sizeof(out),
                        &st) != REEL_OK) {
        fprintf(stderr, "reelctl: %s\n", reel_status_message(&st));
        reel_status_fini(&st);
        return NULL;
    }
    return dup_or_say(out);
}

int ctl_parse_u64(const char *s, uint64_t max, uint64_t *out) {
    unsigned long long v;
    char *end;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (*end != '\0')
        return -1;
    if (errno == ERANGE || v > max)
        return -2;
    *out = v;
    return 0;
}

/*
 * The index of the flag that "--name", "--name=value" or its short form
 * (the whole argument) names, or -1.
 */
static int flag_lookup(const ctl_group_t *g, const char *arg) {
    size_t len = strcspn(arg, "=");

    for (int f = 0; f < g->nflags; f++)
        if ((strlen(g->flags[f].name) == len &&
             strncmp(arg, g->flags[f].name, len) == 0) ||
            (g->flags[f].alias != NULL && strcmp(arg, g->flags[f].alias) == 0))
            return f;
    return -1;
}

/* Whether arg is a flag's short form: "-q", never "-" or "-1". */
static int is_alias(const ctl_group_t *g, const char *arg) {
    for (int f = 0; f < g->nflags; f++)
        if (g->flags[f].alias != NULL && strcmp(arg, g->flags[f].alias) == 0)
            return 1;
    return 0;
}

/* Keeps one more value of a repeatable flag. */
/* Appends val to the list *vals of *n. */
static int push_arg(char ***vals, size_t *n, char *val) {
    char **more = realloc(*vals, (*n + 1) * sizeof(*more));

    if (more == NULL) {
        fprintf(stderr, "reelctl: out of memory\n");
        return EXIT_FAIL;
    }
    more[(*n)++] = val;
    *vals = more;
    return 0;
}

/* Takes the flag at argv[*i], and its value from argv[*i + 1] if needed. */
static int take_flag(ctl_args_t *a, int argc, char **argv, int *i) {
    char *arg = argv[*i], *eq = strchr(arg, '='), *val = NULL;
    int f = flag_lookup(a->group, arg);
    const ctl_flag_spec_t *spec;

    if (f < 0 || !(a->cmd->flags & CTL_F(f)))
        return ctl_usage_error(a, "unknown flag \"%.*s\"",
                               (int)strcspn(arg, "="), arg);
    spec = &a->group->flags[f];
    if (spec->kind == CTL_BOOL && eq != NULL)
        return ctl_usage_error(a, "%s takes no value", spec->name);
    if (spec->kind != CTL_BOOL) {
        if (eq != NULL)
            val = eq + 1;
        else if (*i + 1 < argc)
            val = argv[++*i];
        else
            return ctl_usage_error(a, "%s needs a value (%s)", spec->name,
                                   spec->arg);
    }
    if (spec->kind == CTL_NUM) {
        int bad = ctl_parse_u64(val, spec->max, &a->num[f]);

        if (bad == -1)
            return ctl_usage_error(a, "%s: \"%s\" is not a whole number",
                                   spec->name, val);
        if (bad == -2)
            return ctl_usage_error(a, "%s: %s is too large (at most %llu)",
                                   spec->name, val,
                                   (unsigned long long)spec->max);
    }
    if (spec->kind == CTL_DURATION) {
        int64_t ms = ctl_parse_duration_ms(val);
        char max[32];

        if (ms <= 0)
            return ctl_usage_error(a,
                                   "%s: \"%s\" is not a positive duration "
                                   "(e.g. 500ms, 30s, 2m, 1h, 1d)",
                                   spec->name, val);
        if (spec->max != 0 && (uint64_t)ms > spec->max)
            return ctl_usage_error(
                a, "%s: %s is too long (at most %s)", spec->name, val,
                ctl_format_duration((int64_t)spec->max, max, sizeof(max)));
        a->num[f] = (uint64_t)ms;
    }
    if (spec->repeat && push_arg(&a->many[f], &a->nmany[f], val) != 0)
        return EXIT_FAIL;
    a->str[f] = val;
    a->seen |= CTL_F(f);
    return 0;
}

static int max_pos(const ctl_command_t *c) {
    int n = 0;

    while (n < CTL_MAX_POS && c->pos[n] != NULL)
        n++;
    return n;
}

static void args_fini(ctl_args_t *a) {
    for (int f = 0; f < CTL_MAX_FLAGS; f++)
        free(a->many[f]);
    free(a->rest);
}

/* The last positional repeats: its name ends in "...". */
static int pos_repeats(const ctl_command_t *c) {
    int n = max_pos(c);
    size_t len = n > 0 ? strlen(c->pos[n - 1]) : 0;

    return len > 3 && strcmp(c->pos[n - 1] + len - 3, "...") == 0;
}


/* " --owner NAME --epoch N": the required flags a lacks, for an error. */
static void missing_flags(const ctl_args_t *a, char *buf, size_t size) {
    const ctl_group_t *g = a->group;
    size_t n = 0;

    buf[0] = '\0';
    for (int f = 0; f < g->nflags && n < size; f++) {
        if (!(a->cmd->required & CTL_F(f)) || ctl_has(a, f))
            continue;
        n += (size_t)snprintf(buf + n, size - n, " %s%s%s", g->flags[f].name,
                              g->flags[f].arg ? " " : "",
                              g->flags[f].arg ? g->flags[f].arg : "");
    }
}

/*
 * Parses argv (argv[0] is the group's name) for cmd, whose name is
 * argv[skip]. Returns 0, or EXIT_USAGE after saying what is wrong (a needs
 * args_fini either way).
 */
static int parse(const ctl_group_t *g, const ctl_command_t *cmd, int argc,
                 char **argv, int skip, ctl_args_t *a) {
    char missing[128] = "";
    int only_pos = 0, rc;

    memset(a, 0, sizeof(*a));
    a->group = g;
    a->cmd = cmd;
    for (int i = 1; i < argc; i++) {
        if (i == skip)
            continue;
        if (!only_pos && strcmp(argv[i], "--") == 0) {
            only_pos = 1;
        } else if (!only_pos && (strncmp(argv[i], "--", 2) == 0 ||
                                 is_alias(g, argv[i]))) {
            if ((rc = take_flag(a, argc, argv, &i)) != 0)
                return rc;
        } else if (a->npos == max_pos(cmd) && pos_repeats(cmd)) {
            if ((rc = push_arg(&a->rest, &a->nrest, argv[i])) != 0)
                return rc;
        } else if (a->npos == max_pos(cmd)) {
            return ctl_usage_error(a, "unexpected argument \"%s\"", argv[i]);
        } else {
            a->pos[a->npos++] = argv[i];
        }
    }
    if (a->npos < cmd->min_pos) {
        int alt = alt_pos(cmd);
        size_t n = 0;

        for (int i = a->npos; i < cmd->min_pos && n < sizeof(missing); i++)
            n += (size_t)snprintf(missing + n, sizeof(missing) - n, " %s",
                                  cmd->pos[i + alt]);
        return ctl_usage_error(a, "missing%s", missing);
    }
    missing_flags(a, missing, sizeof(missing));
    if (*missing != '\0')
        return ctl_usage_error(a, "missing%s", missing);
    return 0;
}

/*
 * The index of the subcommand's name: the first argument that is neither a
 * flag nor a flag's value. -1 if there is none.
 */
static int find_subcommand(const ctl_group_t *g, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int f;

        if (strcmp(argv[i], "--") == 0)
            return i + 1 < argc ? i + 1 : -1;
        if (strncmp(argv[i], "--", 2) != 0 && !is_alias(g, argv[i]))
            return i;
        f = flag_lookup(g, argv[i]);
        if (f >= 0 && g->flags[f].kind != CTL_BOOL && !strchr(argv[i], '='))
            i++;
    }
    return -1;
}

int ctl_group_main(ctl_t *ctl, const ctl_group_t *g, int argc, char **argv) {
    int sub = find_subcommand(g, argc, argv);
    ctl_args_t a;
    int rc;

    for (const ctl_command_t *c = g->commands; sub > 0 && c->name != NULL;
         c++) {
        if (strcmp(argv[sub], c->name) != 0)
            continue;
        if ((rc = parse(g, c, argc, argv, sub, &a)) == 0)
            rc = c->run(ctl, &a);
        args_fini(&a);
        return rc;
    }
    if (sub > 0)
        fprintf(stderr, "reelctl %s: unknown subcommand \"%s\"\n", g->name,
                argv[sub]);
    else
        fprintf(stderr, "reelctl %s: missing subcommand\n", g->name);
    fprintf(stderr, "expected one of:");
    for (const ctl_command_t *c = g->commands; c->name != NULL; c++)
        fprintf(stderr, " %s", c->name);
    fprintf(stderr, " (try reelctl help)\n");
    return EXIT_USAGE;
}

/* ---- Values from the line, standard input or a file ---------------------- */

/*
 * Reads all of f into a malloc'd, NUL-terminated *out. 0; -1 if there is
 * more than max bytes; -2 out of memory; -3 a read error (errno).
 */
static int read_all(FILE *f, size_t max, char **out, size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = NULL, *more;

    *out = NULL;
    for (;;) {
        if ((more = realloc(buf, cap + 1)) == NULL) {
            free(buf);
            return -2;
        }
        buf = more;
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break; /* the end, or an error */
        if (n > max) {
            free(buf);
            return -1;
        }
        cap = cap > max / 2 ? max + 1 : cap * 2;
    }
    if (ferror(f)) {
        free(buf);
        return -3;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int ctl_read_json_arg(const ctl_args_t *a, const char *name, const char *arg,
                      char **buf, const char **text) {
    int from_stdin = strcmp(arg, "-") == 0;
    const char *path = from_stdin ? "standard input" : arg + 1;
    FILE *f;
    size_t len;
    int rc;

    *buf = NULL;
    *text = arg;
    /* No JSON text starts with "@", and "-" alone is not JSON. */
    if (!from_stdin && arg[0] != '@')
        return EXIT_OK;
    if (!from_stdin && arg[1] == '\0')
        return ctl_usage_error(a, "%s: \"@\" needs a file name (@FILE)", name);
    if ((f = from_stdin ? stdin : fopen(path, "rb")) == NULL) {
        fprintf(stderr, "reelctl %s %s: %s: %s: %s\n", a->group->name,
                a->cmd->name, name, path, strerror(errno));
        return EXIT_FAIL;
    }
    rc = read_all(f, CTL_MAX_INPUT, buf, &len);
    if (rc == -1)
        fprintf(stderr, "reelctl %s %s: %s: %s: more than %zu MiB\n",
                a->group->name, a->cmd->name, name, path, CTL_MAX_INPUT >> 20);
    else if (rc == -2)
        fprintf(stderr, "reelctl: out of memory\n");
    else if (rc != 0)
        fprintf(stderr, "reelctl %s %s: %s: reading %s: %s\n", a->group->name,
                a->cmd->name, name, path, strerror(errno));
    if (!from_stdin)
        fclose(f);
    if (rc != 0)
        return EXIT_FAIL;
    while (len > 0 && strchr(" \t\r\n", (*buf)[len - 1]) != NULL)
        (*buf)[--len] = '\0';
    /* Nothing read is not JSON: a producer that died before writing must
     * not end a run or send a signal with no result at all. */
    if (len == 0 || strspn(*buf, " \t\r\n") == len) {
        fprintf(stderr, "reelctl %s %s: %s: %s held no JSON (give null for "
                        "none)\n",
                a->group->name, a->cmd->name, name, path);
        free(*buf);
        *buf = NULL;
        *text = arg;
        return EXIT_FAIL;
    }
    *text = *buf;
    return EXIT_OK;
}

/* Whether text is not JSON and looks like a word meant as a string (in
 * UTF-8: quoting bytes that are not would be refused the same way). */
static int bare_word(const char *text) {
    return reel_json_validate(text, strlen(text), NULL, NULL) != 0 &&
           *text != '\0' && strpbrk(text, "\"{}[]'") == NULL &&
           strlen(text) <= 256 && reel_utf8_valid(text, strlen(text));
}

/* ---- Calls --------------------------------------------------------------- */

int ctl_report_error(const ctl_t *ctl, const char *what,
                     const reel_reply_t *r) {
    const char *details = r->details && *r->details ? r->details : "";
    char hint[512];

    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();
        char *s;

        cJSON_AddStringToObject(o, "error", reel_grpc_code_name(r->code));
        cJSON_AddStringToObject(o, "message", details);
        s = cJSON_PrintUnformatted(o);
        fprintf(stderr, "%s\n", s);
        free(s);
        cJSON_Delete(o);
    } else {
        /* Escaped: a key or an owner in a message is anyone's bytes. */
        fprintf(stderr, "reelctl: %s: %s: %s\n", what,
                reel_grpc_code_name(r->code), ctl_name(details));
        if (reel_client_hint(ctl->client, r->code, details, 1, hint,
                             sizeof(hint)) != NULL)
            fprintf(stderr, "reelctl: %s\n", ctl_name(hint));
        if (r->code == 3 /* INVALID_ARGUMENT */ && ctl->typed_json != NULL &&
            bare_word(ctl->typed_json)) {
            cJSON *str = cJSON_CreateString(ctl->typed_json);
            char *quoted = str != NULL ? cJSON_PrintUnformatted(str) : NULL;

            if (quoted != NULL)
                fprintf(stderr,
                        "reelctl: %s must be JSON: did you mean '%s'? (a "
                        "JSON string is in double quotes, which the shell "
                        "needs in single quotes)\n",
                        ctl->typed_json_name, quoted);
            free(quoted);
            cJSON_Delete(str);
        }
    }
    return EXIT_FAIL;
}

uint8_t *ctl_pack(const void *msg, size_t *len) {
    const ProtobufCMessage *m = msg;
    uint8_t *buf;

    *len = protobuf_c_message_get_packed_size(m);
    buf = malloc(*len ? *len : 1);
    if (buf != NULL)
        protobuf_c_message_pack(m, buf);
    else
        fprintf(stderr, "reelctl: out of memory\n");
    return buf;
}

void *ctl_unary(ctl_t *ctl, const char *what, const char *method,
                const void *req, const ProtobufCMessageDescriptor *desc,
                int *rc) {
    ProtobufCMessage *resp = NULL;
    reel_reply_t r = {0};
    uint8_t *buf;
    size_t len;

    *rc = EXIT_FAIL;
    if ((buf = ctl_pack(req, &len)) == NULL)
        goto out;
    if (reel_client_unary(ctl->client, method, buf, len, ctl->timeout_ms,
                          &r) != 0) {
        *rc = ctl_report_error(ctl, what, &r);
        goto out;
    }
    resp = protobuf_c_message_unpack(desc, NULL, r.len, r.body);
    if (resp == NULL)
        fprintf(stderr, "reelctl: %s: malformed response\n", what);
    else
        *rc = EXIT_OK;
out:
    reel_reply_fini(&r);
    free(buf);
    return resp;
}

void *ctl_call(ctl_t *ctl, const ctl_args_t *a, const char *rpc,
               const void *req, const ProtobufCMessageDescriptor *desc,
               int *rc) {
    char method[96], what[64];

    snprintf(method, sizeof(method), "/%s/%s", a->group->service, rpc);
    snprintf(what, sizeof(what), "%s %s", a->group->name, a->cmd->name);
    return ctl_unary(ctl, what, method, req, desc, rc);
}

/* ---- Printing ------------------------------------------------------------ */

/* A line ctl_print_json could not write: the command fails at its end
 * (ctl_flush), never exits 0 with lines missing. */
static int print_failed;

void ctl_print_json(const cJSON *o) {
    char *s = o != NULL ? cJSON_PrintUnformatted(o) : NULL;

    if (s == NULL) {
        fprintf(stderr, "reelctl: out of memory\n");
        print_failed = 1;
    } else {
        printf("%s\n", s);
    }
    free(s);
}

void ctl_print_json_line(cJSON *o) {
    ctl_print_json(o);
    cJSON_Delete(o);
}

/* Line breaks (whitespace, in valid JSON) as spaces: one line stays one. */
static void one_line(char *s) {
    for (; (s = strpbrk(s, "\r\n")) != NULL; s++)
        *s = ' ';
}

static int is_json(const char *text) {
    return reel_json_validate(text, strlen(text), NULL, NULL) == 0;
}

cJSON *ctl_json_value(const char *text) {
    cJSON *v;

    /* No value (a tombstone, no previous value, no result) is null. */
    if (text == NULL || *text == '\0')
        return cJSON_CreateNull();
    /* The server stores only valid JSON; a string is for anything else. */
    if (!is_json(text))
        return cJSON_CreateString(text);
    if ((v = cJSON_CreateRaw(text)) != NULL)
        one_line(v->valuestring);
    return v;
}

void ctl_put_value(const char *text) {
    cJSON *str;
    char *s;

    if (text == NULL || *text == '\0') {
        fputs("null", stdout);
        return;
    }
    if (is_json(text)) {
        /* As stored, a line break (whitespace) as a space; no copy. */
        for (size_t n; *text != '\0'; text += n) {
            n = strcspn(text, "\r\n");
            fwrite(text, 1, n, stdout);
            if (text[n] != '\0') {
                putchar(' ');
                n++;
            }
        }
        return;
    }
    str = cJSON_CreateString(text);
    s = str != NULL ? cJSON_PrintUnformatted(str) : NULL;
    if (s == NULL)
        fprintf(stderr, "reelctl: out of memory\n");
    fputs(s != NULL ? s : text, stdout);
    free(s);
    cJSON_Delete(str);
}

/* C0, DEL, or the second byte of a C1 (U+0080-U+009F: C2 80..C2 9F). */
static size_t control_len(const unsigned char *p) {
    if (*p < 0x20 || *p == 0x7f)
        return 1;
    if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
        return 2;
    return 0;
}

const char *ctl_name(const char *s) {
    static char *ring[8];
    static size_t next;
    const unsigned char *p;
    size_t extra = 0, k;
    char *out, *o;

    if (s == NULL)
        return "";
    for (p = (const unsigned char *)s; *p != '\0'; p += k ? k : 1)
        if ((k = control_len(p)) != 0)
            extra += 3 * k; /* each byte becomes four */
    if (extra == 0)
        return s;
    if ((out = malloc(strlen(s) + extra + 1)) == NULL)
        return "(out of memory)";
    o = out;
    for (p = (const unsigned char *)s; *p != '\0';) {
        if ((k = control_len(p)) == 0) {
            *o++ = (char)*p++;
            continue;
        }
        for (size_t i = 0; i < k; i++, p++)
            o += sprintf(o, "\\x%02x", *p);
    }
    *o = '\0';
    free(ring[next]);
    ring[next] = out;
    next = (next + 1) % 8;
    return out;
}

int ctl_flush(void) {
    if (print_failed) {
        fflush(stdout);
        return -1; /* said already */
    }
    if (fflush(stdout) == 0 && !ferror(stdout))
        return 0;
    if (ctl_reader_left())
        return 1;
    fprintf(stderr, "reelctl: writing output: %s\n", strerror(errno));
    return -1;
}

int ctl_reader_left(void) {
    return errno == EPIPE || ctl_stdout_gone();
}

int ctl_stdout_gone(void) {
    struct pollfd p = {STDOUT_FILENO, 0, 0};

    /* A pipe's write end polls POLLERR once no reader is left. */
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)) != 0;
}

void ctl_hint(const char *fmt, ...) {
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "reelctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}

const char *ctl_iso_time(int64_t ms, char *buf, size_t size) {
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    struct tm tm;
    size_t n;

    if (frac < 0) {
        frac += 1000;
        secs--;
    }
    if (gmtime_r(&secs, &tm) == NULL ||
        (n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm)) == 0) {
        snprintf(buf, size, "%lldms", (long long)ms);
        return buf;
    }
    snprintf(buf + n, size - n, ".%03dZ", frac);
    return buf;
}

/* ---- Messages as JSON ---------------------------------------------------- */

const char *ctl_enum_name(const ProtobufCEnumDescriptor *d, int value) {
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d,
                                                                       value);

    return v != NULL ? v->name : "UNKNOWN";
}

cJSON *ctl_run_json(const Reel__V1__Run *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON *labels = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "run_id", r->run_id);
    cJSON_AddStringToObject(o, "app", r->app);
    cJSON_AddStringToObject(o, "user", r->user);
    cJSON_AddStringToObject(o, "session", r->session);
    cJSON_AddStringToObject(o, "invocation_id", r->invocation_id);
    cJSON_AddStringToObject(
        o, "status",
        ctl_enum_name(&reel__v1__run__status__descriptor, (int)r->status));
    cJSON_AddNumberToObject(o, "next_seq", (double)r->next_seq);
    cJSON_AddStringToObject(o, "lease_owner", r->lease_owner);
    cJSON_AddNumberToObject(o, "lease_epoch", (double)r->lease_epoch);
    cJSON_AddNumberToObject(o, "lease_expires_at_ms",
                            (double)r->lease_expires_at_ms);
    cJSON_AddStringToObject(o, "waiting_on", r->waiting_on);
    for (size_t i = 0; i < r->n_labels; i++)
        cJSON_AddStringToObject(labels, r->labels[i]->key,
                                r->labels[i]->value);
    cJSON_AddItemToObject(o, "labels", labels);
    cJSON_AddItemToObject(o, "result", ctl_json_value(r->result));
    cJSON_AddNumberToObject(o, "created_at_ms", (double)r->created_at_ms);
    cJSON_AddNumberToObject(o, "updated_at_ms", (double)r->updated_at_ms);
    cJSON_AddNumberToObject(o, "ended_at_ms", (double)r->ended_at_ms);
    cJSON_AddBoolToObject(o, "resumed", r->resumed);
    cJSON_AddNumberToObject(o, "attempt", (double)r->attempt);
    cJSON_AddNumberToObject(o, "not_before_ms", (double)r->not_before_ms);
    cJSON_AddStringToObject(o, "reason", r->reason);
    return o;
}

cJSON *ctl_journal_entry_json(const Reel__V1__JournalEntry *e) {
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "run_id", e->run_id);
    cJSON_AddNumberToObject(o, "seq", (double)e->seq);
    cJSON_AddStringToObject(o, "kind", e->kind);
    cJSON_AddItemToObject(o, "payload", ctl_json_value(e->payload));
    cJSON_AddStringToObject(o, "idempotency_key", e->idempotency_key);
    cJSON_AddNumberToObject(o, "lease_epoch", (double)e->lease_epoch);
    cJSON_AddNumberToObject(o, "revision", (double)e->revision);
    cJSON_AddNumberToObject(o, "ts_ms", (double)e->ts_ms);
    return o;
}

cJSON *ctl_value_event_json(const Reel__V1__ValueEvent *ev) {
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(
        o, "type",
        ctl_enum_name(&reel__v1__value_event__type__descriptor,
                      (int)ev->type));
    cJSON_AddStringToObject(o, "namespace", ev->namespace_);
    cJSON_AddStringToObject(o, "key", ev->key);
    cJSON_AddItemToObject(o, "value", ctl_json_value(ev->value));
    cJSON_AddNumberToObject(o, "version", (double)ev->version);
    cJSON_AddItemToObject(o, "prev_value", ctl_json_value(ev->prev_value));
    cJSON_AddNumberToObject(o, "prev_version", (double)ev->prev_version);
    cJSON_AddBoolToObject(o, "deleted", ev->deleted);
    cJSON_AddNumberToObject(o, "revision", (double)ev->revision);
    cJSON_AddNumberToObject(o, "ts_ms", (double)ev->ts_ms);
    cJSON_AddStringToObject(o, "writer", ev->writer);
    return o;
}

cJSON *ctl_signal_json(const Reel__V1__Signal *s) {
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "run_id", s->run_id);
    cJSON_AddStringToObject(o, "name", s->name);
    cJSON_AddItemToObject(o, "payload", ctl_json_value(s->payload));
    cJSON_AddStringToObject(o, "signal_id", s->signal_id);
    cJSON_AddNumberToObject(o, "seq", (double)s->seq);
    cJSON_AddNumberToObject(o, "revision", (double)s->revision);
    cJSON_AddNumberToObject(o, "sent_at_ms", (double)s->sent_at_ms);
    cJSON_AddNumberToObject(o, "consumed_at_ms", (double)s->consumed_at_ms);
    cJSON_AddNumberToObject(o, "journal_seq", (double)s->journal_seq);
    cJSON_AddBoolToObject(o, "scheduled", s->scheduled);
    cJSON_AddNumberToObject(o, "deliver_at_ms", (double)s->deliver_at_ms);
    return o;
}
