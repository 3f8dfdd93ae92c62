/*
 * cli/cmd_signal.c: reelctl signal send|await|ls|cancel, on
 * reel.v1.Signals.
 *
 * A signal is printed as a line ("3 approve pending {"ok":true} (sent
 * ...)") or, with --json, as one object holding every field, its payload
 * embedded as JSON (null when there is none).
 *
 * send names its run by RUN_ID or by --app/--user/--session (the session's
 * newest run that has not ended); the positionals after it are the same
 * either way, so with the flags the first positional is NAME.
 *
 * A payload may come from standard input ("-") or a file ("@FILE"); -q
 * prints the sent signal's seq alone.
 *
 * send --at TIME or --in DURATION sends deliver_at_ms: the server stores
 * the signal as scheduled and delivers it then (a time already past is
 * now). --in counts from this machine's clock: the server takes the time
 * as given, so one whose clock differs delivers early or late by the
 * difference. cancel removes a scheduled signal, named by the id it was
 * sent with (--id), so send says when a scheduled one has none. The
 * server's answer is printed as it is: whether it was scheduled, for when.
 *
 * await is a long poll: --wait is sent as the request's timeout. The
 * server waits at most its cap (--signal-max-wait-ms, 5 minutes by
 * default), which await asks for first (Admin.GetStatus) when --wait is
 * given: a longer --wait is said to be cut to the cap, and the call's
 * deadline is the wait the server will really do plus the global
 * --timeout, so the server's "nothing came" answer is not beaten by our
 * own deadline, and a server that never answers is given up on --timeout
 * after it should have. Nothing delivered is exit 1, like a server error,
 * but said as such, naming how long was waited.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "reel/v1/admin.pb-c.h"
#include "reel/v1/journal.pb-c.h"
#include "reel/v1/signals.pb-c.h"
#include "client/client.h"
#include "cli/ctl.h"

/* The order here is the order of the usage text. */
enum signal_flag {
    SF_APP,
    SF_USER,
    SF_SESSION,
    SF_ID,
    SF_AT,
    SF_IN,
    SF_EPOCH,
    SF_WAIT,
    SF_NAME,
    SF_CONSUMED,
    SF_LIMIT,
    SF_ALL,
    SF_QUIET,
    SF_COUNT
};

static const ctl_flag_spec_t signal_flags[SF_COUNT] = {
    [SF_APP] = {"--app", CTL_STR, "APP", 0, 0},
    [SF_USER] = {"--user", CTL_STR, "USER", 0, 0},
    [SF_SESSION] = {"--session", CTL_STR, "SESSION", 0, 0},
    [SF_ID] = {"--id", CTL_STR, "SIGNAL_ID", 0, 0},
    [SF_AT] = {"--at", CTL_STR, "TIME", 0, 0},
    /* CTL_STR, like --wait: "--in 0" (now) is fine. */
    [SF_IN] = {"--in", CTL_STR, "DURATION", 0, 0},
    [SF_EPOCH] = {"--epoch", CTL_NUM, "N", UINT64_MAX, 0},
    /* CTL_STR: unlike CTL_DURATION, "--wait 0" (answer at once) is fine. */
    [SF_WAIT] = {"--wait", CTL_STR, "DURATION", 0, 0},
    [SF_NAME] = {"--name", CTL_STR, "NAME", 0, 0},
    [SF_CONSUMED] = {"--consumed", CTL_BOOL, NULL, 0, 0},
    [SF_LIMIT] = {"--limit", CTL_NUM, "N", UINT32_MAX, 0},
    [SF_ALL] = {"--all", CTL_BOOL, NULL, 0, 0},
    [SF_QUIET] = {"--quiet", CTL_BOOL, NULL, 0, 0, "-q"},
};

#define SF(f) CTL_F(f)

/* The server's bound on a delay (SIGNALS_MAX_DELAY_MS): 365 days. */
#define SIGNAL_MAX_DELAY_MS 31536000000LL

/*
 * A --at in digits below this (March 1973, in ms) is taken for seconds:
 * as ms it would be delivered at once, and as seconds it reaches the year
 * 5138.
 */
#define SIGNAL_MIN_AT_MS 100000000000LL

static const char *status_name(Reel__V1__Run__Status s) {
    return ctl_enum_name(&reel__v1__run__status__descriptor, (int)s);
}

/* ---- Printing ------------------------------------------------------------ */

/* The payload on one line: "null" when there is none, like --json. */
static void put_payload(const Reel__V1__Signal *s) {
    ctl_put_value(s->payload);
}

/*
 * "3 approve pending {"ok":true} (sent 2024-...Z)", or
 * "1 approve consumed {} (consumed 2024-...Z, journal seq 5)".
 */
static void print_signal_line(const Reel__V1__Signal *s) {
    char t[40];

    printf("%llu %s %s ", (unsigned long long)s->seq, s->name,
           s->consumed_at_ms != 0 ? "consumed"
           : s->scheduled         ? "scheduled"
                                  : "pending");
    put_payload(s);
    if (s->consumed_at_ms != 0)
        printf(" (consumed %s, journal seq %llu",
               ctl_iso_time(s->consumed_at_ms, t, sizeof(t)),
               (unsigned long long)s->journal_seq);
    else if (s->scheduled)
        printf(" (due %s", ctl_iso_time(s->deliver_at_ms, t, sizeof(t)));
    else
        printf(" (sent %s", ctl_iso_time(s->sent_at_ms, t, sizeof(t)));
    if (*s->signal_id)
        printf(", id %s", s->signal_id);
    printf(")\n");
}

/* ---- send ---------------------------------------------------------------- */

/* Whether s has the shape of a run id (a ULID: 26 of Crockford's base32). */
static int looks_like_run_id(const char *s) {
    return strlen(s) == 26 &&
           strspn(s, "0123456789ABCDEFGHJKMNPQRSTVWXYZ") == 26;
}

/* Whether text can be a payload: JSON, or standard input or a file. */
static int is_json(const char *text) {
    cJSON *v;

    if (strcmp(text, "-") == 0 || text[0] == '@')
        return 1;
    v = cJSON_ParseWithOpts(text, NULL, 1);
    cJSON_Delete(v);
    return v != NULL;
}

/*
 * Fills req's run (or session), name and payload from the line; EXIT_USAGE
 * after saying what is wrong. Strings point into a.
 */
static int send_target(const ctl_args_t *a, Reel__V1__SendSignalRequest *req) {
    int n = ctl_has(a, SF_APP) + ctl_has(a, SF_USER) + ctl_has(a, SF_SESSION);
    int first = 0; /* the index of NAME */

    if (n != 0 && n != 3)
        return ctl_usage_error(a, "--app, --user and --session go together "
                                  "(they name the session)");
    if (n == 3) {
        /*
         * "RUN_ID NAME" and "NAME PAYLOAD_JSON" are both two words; a run id
         * followed by something that is not JSON is the former.
         */
        if (a->npos == 3 || (a->npos == 2 && looks_like_run_id(a->pos[0]) &&
                             !is_json(a->pos[1])))
            return ctl_usage_error(a, "give RUN_ID or --app, --user and "
                                      "--session, not both");
        req->app = a->str[SF_APP];
        req->user = a->str[SF_USER];
        req->session = a->str[SF_SESSION];
    } else {
        if (a->npos < 2)
            return ctl_usage_error(a, looks_like_run_id(a->pos[0])
                                          ? "missing NAME"
                                          : "missing RUN_ID (or --app, "
                                            "--user and --session)");
        req->run_id = a->pos[0];
        first = 1;
    }
    req->name = a->pos[first];
    if (a->npos > first + 1)
        req->payload = a->pos[first + 1];
    return 0;
}

/*
 * --at or --in as req's deliver_at_ms (left 0, now, without either);
 * EXIT_USAGE after saying what is wrong.
 */
static int send_when(const ctl_args_t *a, Reel__V1__SendSignalRequest *req) {
    char t[40];
    int64_t ms;

    if (ctl_has(a, SF_AT) && ctl_has(a, SF_IN))
        return ctl_usage_error(a, "--at and --in exclude each other (--at "
                                  "TIME: when; --in DURATION: how long from "
                                  "now)");
    if (ctl_has(a, SF_IN)) {
        if ((ms = ctl_parse_duration_ms(a->str[SF_IN])) < 0)
            return ctl_usage_error(a,
                                   "--in: \"%s\" is not a duration (e.g. "
                                   "500ms, 30s, 5m, 1h, 1d)",
                                   a->str[SF_IN]);
        if (ms > SIGNAL_MAX_DELAY_MS)
            return ctl_usage_error(a, "--in: %s is too long (at most 365d)",
                                   a->str[SF_IN]);
        req->deliver_at_ms = ctl_now_ms() + ms;
    } else if (ctl_has(a, SF_AT)) {
        if (ctl_parse_time_ms(a->str[SF_AT], &ms) != 0)
            return ctl_usage_error(
                a,
                "--at: \"%s\" is not a time (ms since 1970, e.g. "
                "1767225600000, or RFC 3339, e.g. 2026-01-01T00:00:00Z or "
                "2026-01-01T01:00:00+01:00)",
                a->str[SF_AT]);
        if (ms < SIGNAL_MIN_AT_MS &&
            a->str[SF_AT][strspn(a->str[SF_AT], "0123456789")] == '\0')
            return ctl_usage_error(a,
                                   "--at: %s ms since 1970 is %s (seconds? "
                                   "--at takes ms, or RFC 3339)",
                                   a->str[SF_AT],
                                   ctl_iso_time(ms, t, sizeof(t)));
        req->deliver_at_ms = ms;
    }
    return 0;
}

/* The text line for a send's answer, and what a scheduled one lacks. */
static void print_sent(const ctl_args_t *a,
                       const Reel__V1__SendSignalResponse *resp) {
    const Reel__V1__Signal *s = resp->signal;
    char t[40];

    printf("signal %s seq %llu to run %s (run %s)", s->name,
           (unsigned long long)s->seq, s->run_id,
           status_name(resp->run_status));
    if (s->scheduled)
        printf(" scheduled for %s",
               ctl_iso_time(s->deliver_at_ms, t, sizeof(t)));
    printf("%s%s\n", resp->duplicate ? " duplicate" : "",
           resp->accepted ? "" : " not accepted");
    if (s->scheduled && *s->signal_id == '\0')
        ctl_hint("sent without --id: signal cancel names a scheduled signal "
                 "by its id, so this one cannot be cancelled");
    else if (!s->scheduled && !resp->duplicate && ctl_has(a, SF_AT))
        ctl_hint("--at %s has passed: delivered now", a->str[SF_AT]);
}

static int signal_send(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__SendSignalRequest req = REEL__V1__SEND_SIGNAL_REQUEST__INIT;
    Reel__V1__SendSignalResponse *resp;
    const Reel__V1__Signal *s;
    const char *payload;
    char *buf = NULL;
    int rc;

    if (ctl_has(a, SF_QUIET) && ctl->json)
        return ctl_usage_error(a, "--quiet and --json exclude each other");
    if ((rc = send_target(a, &req)) != 0 || (rc = send_when(a, &req)) != 0)
        return rc;
    if (ctl_has(a, SF_ID))
        req.signal_id = a->str[SF_ID];
    if (req.payload != NULL && *req.payload) {
        if ((rc = ctl_read_json_arg(a, "PAYLOAD_JSON", req.payload, &buf,
                                    &payload)) != 0)
            return rc;
        req.payload = (char *)payload;
        ctl->typed_json = payload;
        ctl->typed_json_name = "PAYLOAD_JSON";
    }
    resp = ctl_call(ctl, a, "SendSignal", &req,
                    &reel__v1__send_signal_response__descriptor, &rc);
    ctl->typed_json = NULL;
    free(buf);
    if (resp == NULL)
        return rc;
    if ((s = resp->signal) == NULL) {
        fprintf(stderr, "reelctl: signal send: malformed response (no "
                        "signal)\n");
        rc = EXIT_FAIL;
    } else if (ctl->json) {
        cJSON *o = ctl_signal_json(s);

        cJSON_AddBoolToObject(o, "duplicate", resp->duplicate);
        cJSON_AddBoolToObject(o, "accepted", resp->accepted);
        cJSON_AddStringToObject(o, "run_status",
                                status_name(resp->run_status));
        ctl_print_json_line(o);
    } else if (ctl_has(a, SF_QUIET)) {
        printf("%llu\n", (unsigned long long)s->seq);
    } else {
        print_sent(a, resp);
    }
    reel__v1__send_signal_response__free_unpacked(resp, NULL);
    return rc;
}

/* ---- await --------------------------------------------------------------- */

/*
 * The server's cap on an await's wait, in ms, into *cap (0: the server
 * does not say). EXIT_OK, or the failed call's status (said).
 */
static int server_wait_cap(ctl_t *ctl, int64_t *cap) {
    Reel__V1__GetStatusRequest req = REEL__V1__GET_STATUS_REQUEST__INIT;
    Reel__V1__GetStatusResponse *s;
    int rc;

    *cap = 0;
    s = ctl_unary(ctl, "signal await: status", "/reel.v1.Admin/GetStatus",
                  &req, &reel__v1__get_status_response__descriptor, &rc);
    if (s == NULL)
        return rc;
    *cap = s->signal_max_wait_ms;
    reel__v1__get_status_response__free_unpacked(s, NULL);
    return EXIT_OK;
}

static int signal_await(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__AwaitSignalRequest req = REEL__V1__AWAIT_SIGNAL_REQUEST__INIT;
    Reel__V1__AwaitSignalResponse *resp;
    int64_t timeout_ms = ctl->timeout_ms, wait_ms, cap = 0;
    char waited[32], capped[32];
    int rc;

    req.run_id = a->pos[0];
    req.name = a->pos[1];
    req.lease_epoch = a->num[SF_EPOCH];
    if (ctl_has(a, SF_WAIT) &&
        (req.timeout_ms = ctl_parse_duration_ms(a->str[SF_WAIT])) < 0)
        return ctl_usage_error(a,
                               "--wait: \"%s\" is not a duration (e.g. 0, "
                               "500ms, 30s, 2m, 1h)",
                               a->str[SF_WAIT]);
    wait_ms = req.timeout_ms;
    if (wait_ms > 0 && (rc = server_wait_cap(ctl, &cap)) != EXIT_OK)
        return rc;
    if (cap > 0 && wait_ms > cap) {
        wait_ms = cap;
        if (!ctl->json)
            fprintf(stderr,
                    "reelctl: signal await: the server waits at most %s "
                    "(reeld --signal-max-wait-ms), not %s\n",
                    ctl_format_duration(cap, capped, sizeof(capped)),
                    a->str[SF_WAIT]);
    }
    /* Both are at most 1e15 ms (ctl_parse_duration_ms): no overflow. */
    ctl->timeout_ms += wait_ms;
    resp = ctl_call(ctl, a, "AwaitSignal", &req,
                    &reel__v1__await_signal_response__descriptor, &rc);
    ctl->timeout_ms = timeout_ms;
    if (resp == NULL)
        return rc;
    rc = resp->delivered ? EXIT_OK : EXIT_FAIL;
    if (resp->delivered && resp->signal == NULL) {
        fprintf(stderr, "reelctl: signal await: malformed response (no "
                        "signal)\n");
        rc = EXIT_FAIL;
    } else if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddBoolToObject(o, "delivered", resp->delivered);
        cJSON_AddItemToObject(o, "signal",
                              resp->signal != NULL
                                  ? ctl_signal_json(resp->signal)
                                  : cJSON_CreateNull());
        cJSON_AddNumberToObject(o, "journal_seq", (double)resp->journal_seq);
        ctl_print_json_line(o);
    } else if (resp->delivered) {
        printf("signal %s seq %llu: ", resp->signal->name,
               (unsigned long long)resp->signal->seq);
        put_payload(resp->signal);
        printf(" (journal seq %llu)\n", (unsigned long long)resp->journal_seq);
    } else if (wait_ms < req.timeout_ms) {
        fprintf(stderr,
                "reelctl: no \"%s\" signal within %s (the server's cap; "
                "--wait asked for %s)\n",
                req.name, ctl_format_duration(wait_ms, waited, sizeof(waited)),
                a->str[SF_WAIT]);
    } else if (req.timeout_ms > 0) {
        fprintf(stderr, "reelctl: no \"%s\" signal within %s\n", req.name,
                a->str[SF_WAIT]);
    } else {
        fprintf(stderr, "reelctl: no \"%s\" signal pending (--wait to wait "
                        "for one)\n",
                req.name);
    }
    reel__v1__await_signal_response__free_unpacked(resp, NULL);
    return rc;
}

/* ---- ls ------------------------------------------------------------------ */

/*
 * Prints one page; *more says whether to ask for another from the cursor
 * in req, which it advances: every page, unless --limit asked for one.
 */
static int signal_ls_page(ctl_t *ctl, const ctl_args_t *a,
                          Reel__V1__ListSignalsRequest *req, int *more) {
    Reel__V1__ListSignalsResponse *resp;
    int rc;

    *more = 0;
    resp = ctl_call(ctl, a, "ListSignals", req,
                    &reel__v1__list_signals_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    for (size_t i = 0; i < resp->n_signals; i++) {
        if (ctl->json)
            ctl_print_json_line(ctl_signal_json(resp->signals[i]));
        else
            print_signal_line(resp->signals[i]);
    }
    if (!resp->more) {
        /* done */
    } else if (ctl_has(a, SF_LIMIT) && !ctl_has(a, SF_ALL)) {
        if (!ctl->json)
            ctl_hint("showing the first %zu; there are more (leave out "
                     "--limit, or add --all, to list them all)",
                     resp->n_signals);
    } else if (resp->n_signals == 0) {
        /* Following it would ask for the same page forever. */
        fprintf(stderr, "reelctl: signal ls: the server said more but gave "
                        "no signal\n");
        rc = EXIT_FAIL;
    } else {
        req->after_seq = resp->next_after_seq;
        req->after_consumed = resp->next_after_consumed;
        *more = 1;
    }
    reel__v1__list_signals_response__free_unpacked(resp, NULL);
    return rc;
}

static int signal_ls(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ListSignalsRequest req = REEL__V1__LIST_SIGNALS_REQUEST__INIT;
    int rc, more;

    req.run_id = a->pos[0];
    if (ctl_has(a, SF_NAME))
        req.name = a->str[SF_NAME];
    req.include_consumed = ctl_has(a, SF_CONSUMED);
    req.limit = (uint32_t)a->num[SF_LIMIT];
    do
        rc = signal_ls_page(ctl, a, &req, &more);
    while (rc == EXIT_OK && more);
    return rc;
}

/* ---- cancel ------------------------------------------------------------ */

static int signal_cancel(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__CancelSignalRequest req = REEL__V1__CANCEL_SIGNAL_REQUEST__INIT;
    Reel__V1__Signal *s;
    char t[40];
    int rc;

    req.run_id = a->pos[0];
    req.signal_id = a->pos[1];
    s = ctl_call(ctl, a, "CancelSignal", &req, &reel__v1__signal__descriptor,
                 &rc);
    if (s == NULL)
        return rc;
    if (ctl->json) {
        cJSON *o = ctl_signal_json(s);

        cJSON_AddBoolToObject(o, "cancelled", 1);
        ctl_print_json_line(o);
    } else {
        printf("cancelled signal %s seq %llu to run %s (id %s), due %s\n",
               s->name, (unsigned long long)s->seq, s->run_id,
               ctl_name(s->signal_id),
               ctl_iso_time(s->deliver_at_ms, t, sizeof(t)));
    }
    reel__v1__signal__free_unpacked(s, NULL);
    return EXIT_OK;
}

static const ctl_command_t signal_commands[] = {
    {"send",
     {"(RUN_ID | --app APP --user USER --session SESSION)", "NAME",
      "PAYLOAD_JSON"},
     1,
     SF(SF_APP) | SF(SF_USER) | SF(SF_SESSION) | SF(SF_ID) | SF(SF_AT) |
         SF(SF_IN) | SF(SF_QUIET),
     0,
     "send a signal to the run, or to the session's newest run that has "
     "not\n"
     "      ended; PAYLOAD_JSON: JSON, - (standard input) or @FILE; --id: a\n"
     "      retry with the same id is stored once; -q, --quiet: print the "
     "seq alone;\n"
     "      --at TIME (ms since 1970, or RFC 3339: 2026-01-01T09:00:00Z) or\n"
     "      --in DURATION (30s, 5m, 1h; at most 365d): deliver it then, not\n"
     "      now (a time past is now); give --id to be able to cancel it",
     signal_send},
    {"await", {"RUN_ID", "NAME"}, 2, SF(SF_EPOCH) | SF(SF_WAIT), SF(SF_EPOCH),
     "consume the oldest pending NAME signal as the lease at --epoch,\n"
     "      waiting up to --wait for one (default: answer at once; the "
     "server\n"
     "      waits at most its cap, 5m unless reeld says otherwise); exit 1 "
     "if\n"
     "      none came",
     signal_await},
    {"ls", {"RUN_ID"}, 1,
     SF(SF_NAME) | SF(SF_CONSUMED) | SF(SF_LIMIT) | SF(SF_ALL), 0,
     "list the run's pending signals in send order, one per line;\n"
     "      --consumed: then the consumed ones too; --limit N: one page of\n"
     "      at most N (--all: every page, N at a time)",
     signal_ls},
    {"cancel", {"RUN_ID", "SIGNAL_ID"}, 2, 0, 0,
     "remove a signal sent with --at or --in and --id SIGNAL_ID before\n"
     "      its time; one already delivered is FAILED_PRECONDITION",
     signal_cancel},
    {NULL, {NULL}, 0, 0, 0, NULL, NULL},
};

const ctl_group_t ctl_signal_group = {
    "signal", "reel.v1.Signals", signal_flags, SF_COUNT, signal_commands,
};
