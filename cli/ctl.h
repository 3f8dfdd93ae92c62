/*
 * cli/ctl.h: what reelctl's command files share (private to reelctl).
 *
 * A command group ("kv", "run", "journal") is a table: the flags its
 * subcommands may take, and the subcommands with their positionals and the
 * flags each accepts. ctl_group_main() finds the subcommand, parses the
 * line against the tables (usage errors say what is wrong and show the
 * synopsis), and calls the subcommand with the parsed arguments.
 *
 * Single-threaded, like reelctl. Strings in ctl_args_t point into argv.
 */
#ifndef REEL_CLI_CTL_H
#define REEL_CLI_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>
#include <protobuf-c/protobuf-c.h>

#include "reel/v1/journal.pb-c.h"
#include "reel/v1/kv.pb-c.h"
#include "reel/v1/signals.pb-c.h"
#include "client/client.h"

#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* The global flags, and the connection every command uses. */
typedef struct ctl {
    const char *addr;
    int64_t timeout_ms;
    int json;
    int help; /* -h or --help somewhere on the line */
    reel_client_t *client;
    /*
     * JSON text the user typed that the next call sends (a value, a
     * payload), named as the usage text names it ("VALUE"): when the
     * server refuses it as not JSON, ctl_report_error adds a hint.
     */
    const char *typed_json;
    const char *typed_json_name;
} ctl_t;

/* The port reelctl dials when --addr names only a host (reeld's default). */
#define CTL_DEFAULT_PORT "7878"

/* ---- Command groups ------------------------------------------------------ */

#define CTL_MAX_FLAGS 32 /* per group: a flag is a bit in an unsigned */
#define CTL_MAX_POS 4

#define CTL_F(f) (1u << (f))

typedef enum {
    CTL_BOOL,     /* --all */
    CTL_NUM,      /* --limit N: digits only, at most spec->max */
    CTL_STR,      /* --writer NAME */
    CTL_DURATION, /* --ttl 30s: positive, in ms, at most spec->max if set */
} ctl_flag_kind_t;

typedef struct ctl_flag_spec {
    const char *name; /* "--limit" */
    ctl_flag_kind_t kind;
    const char *arg; /* the value's name in the usage text */
    uint64_t max;    /* CTL_NUM, CTL_DURATION: the request field's range */
    int repeat;      /* CTL_STR: may be given more than once */
    const char *alias; /* a short form ("-q"), or NULL */
} ctl_flag_spec_t;

typedef struct ctl_group ctl_group_t;
typedef struct ctl_command ctl_command_t;

/*
 * One subcommand line, parsed. A flag's value is in num[f] (CTL_NUM, and
 * CTL_DURATION in ms) and str[f] (its text); a repeated flag's values are
 * many[f][0 .. nmany[f]). Valid while the subcommand runs.
 */
typedef struct ctl_args {
    const ctl_group_t *group;
    const ctl_command_t *cmd;
    char *pos[CTL_MAX_POS];
    int npos;
    char **rest; /* past the last positional, when its name ends in "..." */
    size_t nrest;
    unsigned seen; /* CTL_F() bits of the flags given */
    uint64_t num[CTL_MAX_FLAGS];
    char *str[CTL_MAX_FLAGS];
    char **many[CTL_MAX_FLAGS];
    size_t nmany[CTL_MAX_FLAGS];
} ctl_args_t;

struct ctl_command {
    const char *name;
    /*
     * Positional names, NULL-padded. pos[0] may be an alternative written
     * in parentheses, "(RUN_ID | --app APP ...)": flags may stand in for
     * it, so the parser leaves it out of min_pos and the command sorts out
     * which was given. The usage text shows it as written, in place of the
     * flags it names. A last name ending in "..." takes any number of
     * further arguments too (ctl_args_t.rest).
     */
    const char *pos[CTL_MAX_POS];
    int min_pos;       /* the rest are optional */
    unsigned flags;    /* CTL_F() bits it takes */
    unsigned required; /* CTL_F() bits it must be given */
    const char *help;
    int (*run)(ctl_t *ctl, const ctl_args_t *a);
};

struct ctl_group {
    const char *name;    /* "kv": the word on the command line */
    const char *service; /* "reel.v1.KV": where ctl_call sends */
    const ctl_flag_spec_t *flags; /* indexed by the group's flag enum */
    int nflags;
    const ctl_command_t *commands; /* ends with a NULL name */
};

extern const ctl_group_t ctl_kv_group;      /* cli/cmd_kv.c */
extern const ctl_group_t ctl_run_group;     /* cli/cmd_run.c */
extern const ctl_group_t ctl_journal_group; /* cli/cmd_run.c */
extern const ctl_group_t ctl_signal_group;  /* cli/cmd_signal.c */
extern const ctl_group_t ctl_events_group;  /* cli/cmd_events.c */
extern const ctl_group_t ctl_token_group;   /* cli/cmd_token.c */
extern const ctl_group_t ctl_ws_group;      /* cli/cmd_ws.c */

/* Runs "GROUP SUBCOMMAND ..." (argv[0] is the group's name). */
int ctl_group_main(ctl_t *ctl, const ctl_group_t *g, int argc, char **argv);

/* The group's part of the help text. */
void ctl_group_usage(const ctl_group_t *g, FILE *out);

/*
 * Help for "GROUP [SUBCOMMAND]" (argv[0] is the group's name; flags are
 * skipped): the subcommand's synopsis and text, or the group's. EXIT_OK,
 * or EXIT_USAGE (said) for an unknown subcommand.
 */
int ctl_group_help(const ctl_group_t *g, int argc, char **argv, FILE *out);

static inline int ctl_has(const ctl_args_t *a, int f) {
    return (a->seen & CTL_F(f)) != 0;
}

/* Says what is wrong with the line and shows its synopsis; EXIT_USAGE. */
__attribute__((format(printf, 2, 3))) int
ctl_usage_error(const ctl_args_t *a, const char *fmt, ...);

/*
 * "250ms", "5s", "2m", "1h", "1d", or plain seconds as reeld takes them
 * ("1.5" is 1500 ms). -1 if malformed or huge.
 */
int64_t ctl_parse_duration_ms(const char *s);

/* ms as the shortest exact "500ms", "30s", "5m", "2h", "1d" into buf. */
const char *ctl_format_duration(int64_t ms, char *buf, size_t size);

/*
 * A point in time as a flag takes it (--at): ms since 1970 in digits
 * ("1767225600000"), or RFC 3339 with a zone ("2026-01-01T00:00:00Z",
 * "2026-01-01T01:00:00.250+01:00"; a fraction past ms is dropped). 0 with
 * *ms set, or -1 if malformed or out of range (years 1970-9999).
 */
int ctl_parse_time_ms(const char *s, int64_t *ms);

/* This machine's clock, in ms since 1970 (reel's times are on that scale). */
int64_t ctl_now_ms(void);

/*
 * "HOST:PORT" as given, "HOST" with CTL_DEFAULT_PORT, "[V6]" likewise;
 * "unix:PATH" and "SCHEME://..." targets as given. Returns a malloc'd
 * target, or NULL after saying (on stderr, naming flag) what is wrong.
 */
char *ctl_resolve_addr(const char *flag, const char *addr);

/*
 * The JSON text of a value argument: arg itself, or with "-" all of
 * standard input, with "@FILE" all of FILE (trailing whitespace, such as
 * the final newline, dropped: it means nothing in JSON). *text points to
 * it; *buf is what to free (NULL when arg is used). Reads at most
 * CTL_MAX_INPUT bytes. EXIT_OK, or EXIT_USAGE / EXIT_FAIL after saying why
 * (name is the argument's name in the usage text, "VALUE").
 */
#define CTL_MAX_INPUT ((size_t)64 << 20)
int ctl_read_json_arg(const ctl_args_t *a, const char *name, const char *arg,
                      char **buf, const char **text);

/*
 * Digits only (strtoull alone would take "-1", " 7" and "+7"). -1 if s is
 * not a whole number, -2 if it is above max.
 */
int ctl_parse_u64(const char *s, uint64_t max, uint64_t *out);

/* ---- Calls --------------------------------------------------------------- */

/* Prints a failed call the way every command does; returns EXIT_FAIL. */
int ctl_report_error(const ctl_t *ctl, const char *what,
                     const reel_reply_t *r);

/* msg packed into a malloc'd buffer, or NULL (said) when out of memory. */
uint8_t *ctl_pack(const void *msg, size_t *len);

/*
 * Calls method ("/reel.v1.Admin/GetStatus") and unpacks the answer as desc
 * (free it with protobuf_c_message_free_unpacked). On failure says why,
 * naming what, sets *rc to the exit status and returns NULL.
 */
void *ctl_unary(ctl_t *ctl, const char *what, const char *method,
                const void *req, const ProtobufCMessageDescriptor *desc,
                int *rc);

/* ctl_unary of the group's service's rpc, named "kv set" in errors. */
void *ctl_call(ctl_t *ctl, const ctl_args_t *a, const char *rpc,
               const void *req, const ProtobufCMessageDescriptor *desc,
               int *rc);

/* ---- Printing ------------------------------------------------------------ */

/* Prints o on one line (o stays the caller's). */
void ctl_print_json(const cJSON *o);

/* Prints o on one line, and frees it. */
void ctl_print_json_line(cJSON *o);

/*
 * Stored JSON text as an item to embed: the text itself, byte for byte (a
 * raw item: no number goes through a double, so 9007199254740993 and
 * 1e999 come out as stored), with its line breaks, which valid JSON has
 * only between tokens, printed as spaces so a line stays one line. Text
 * that is not valid JSON becomes a string; empty text (no value) null.
 */
cJSON *ctl_json_value(const char *text);

/*
 * Writes stored JSON text to stdout on one line, as ctl_json_value embeds
 * it (text that is not JSON as a JSON string, so it cannot span lines).
 */
void ctl_put_value(const char *text);

/*
 * A name (a key, an app, an owner) as text output shows it: s itself, or,
 * when it holds a control character (C0, DEL or C1: a line break would
 * forge a line, an escape sequence would drive the terminal), a copy with
 * each as \xNN. The copy lives until 8 later calls: enough for one line.
 */
const char *ctl_name(const char *s);

/*
 * Flushes stdout, so a pipe's reader sees a streamed line at once. 0 if
 * it went out; 1 if the reader is gone (EPIPE: a stream should end
 * quietly, as `| head` means); -1 on any other write error, said, or
 * once ctl_print_json could not print a line (out of memory).
 */
int ctl_flush(void);

/*
 * 1 if stdout is a pipe whose reader has gone: a stream with nothing to
 * print notices it while idle, not only at its next write.
 */
int ctl_stdout_gone(void);

/* After a write to stdout failed: 1 if its reader left (EPIPE, or a pipe
 * without a reader), which ends a command quietly with exit 0. */
int ctl_reader_left(void);

/* How often an idle stream looks at ctl_stdout_gone(). */
#define CTL_IDLE_MS 200

/* Says on stderr where more is to be had, after what stdout already has. */
__attribute__((format(printf, 1, 2))) void ctl_hint(const char *fmt, ...);

/* "2024-05-01T12:00:00.250Z" into buf (at least 32 bytes). */
const char *ctl_iso_time(int64_t ms, char *buf, size_t size);

/* ---- Messages as JSON ---------------------------------------------------- */

/*
 * Each returns a new object holding every field of the message (the
 * caller frees it). JSON text the server stores (payloads, values,
 * results) is embedded as JSON when it parses, and is null when empty.
 */
cJSON *ctl_run_json(const Reel__V1__Run *r);
cJSON *ctl_journal_entry_json(const Reel__V1__JournalEntry *e);
cJSON *ctl_value_event_json(const Reel__V1__ValueEvent *ev);
cJSON *ctl_signal_json(const Reel__V1__Signal *s);
/* An artifact's record (never its bytes); defined in cmd_ws.c. */
struct Reel__V1__Artifact;
cJSON *ctl_artifact_json(const struct Reel__V1__Artifact *a);

/* The name of value in d ("RUNNING"), or "UNKNOWN". */
const char *ctl_enum_name(const ProtobufCEnumDescriptor *d, int value);

#endif
