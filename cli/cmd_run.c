/*
 * cli/cmd_run.c: reelctl run ... and reelctl journal ..., on reel.v1.Journal.
 *
 * The two groups share one flag table and one set of printers: a run is
 * printed as one summary line ("run ID STATUS epoch E (...)") or, with
 * --json, as one object holding every field; a journal entry as
 * "SEQ KIND PAYLOAD (epoch E, rev R)" or one object per line. JSON text the
 * server stores (payloads, results) is embedded as JSON when it parses.
 *
 * Mutating subcommands take the lease epoch (--epoch) as the fencing token;
 * the server refuses a stale one with FAILED_PRECONDITION, which is
 * reported like any other server error (exit 1).
 *
 * -q (--quiet) prints the one thing a script goes on with: run begin the
 * run id (RUN=$(reelctl run begin ... -q)), run claim the new epoch,
 * journal append the seq. A payload or result may come from standard
 * input ("-") or a file ("@FILE").
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "reel/v1/journal.pb-c.h"
#include "client/client.h"
#include "cli/ctl.h"

/* The order here is the order of the usage text. */
enum run_flag {
    RF_OWNER,
    RF_EPOCH,
    RF_TTL,
    RF_WAIT,
    RF_LABEL,
    RF_WAITING_ON,
    RF_SIGNAL_TIMEOUT,
    RF_APP,
    RF_USER,
    RF_SESSION,
    RF_STATUS,
    RF_RESULT,
    RF_KIND,
    RF_KEY,
    RF_EXPECT_SEQ,
    RF_FROM_SEQ,
    RF_LIMIT,
    RF_START_AFTER,
    RF_ALL,
    RF_QUIET,
    RF_COUNT
};

/* The server's bound on a lease (JOURNAL_MAX_TTL_MS): 24 hours. */
#define RUN_MAX_TTL_MS 86400000
/* The server's bound on ClaimNextRun's wait (JOURNAL_MAX_CLAIM_WAIT_MS). */
#define RUN_MAX_WAIT_MS 300000
/* The server's bound on SuspendRun's timeout (JOURNAL_MAX_SUSPEND_MS). */
#define RUN_MAX_SUSPEND_MS 31536000000ULL

static const ctl_flag_spec_t run_flags[RF_COUNT] = {
    [RF_OWNER] = {"--owner", CTL_STR, "NAME", 0, 0},
    [RF_EPOCH] = {"--epoch", CTL_NUM, "N", UINT64_MAX, 0},
    [RF_TTL] = {"--ttl", CTL_DURATION, "DURATION", RUN_MAX_TTL_MS, 0},
    [RF_WAIT] = {"--wait", CTL_DURATION, "DURATION", RUN_MAX_WAIT_MS, 0},
    [RF_LABEL] = {"--label", CTL_STR, "K=V", 0, 1},
    [RF_WAITING_ON] = {"--waiting-on", CTL_STR, "SIGNAL_NAME", 0, 0},
    /*
     * Not --timeout: that is the global flag (the call's deadline), which
     * reelctl takes anywhere on the line.
     */
    [RF_SIGNAL_TIMEOUT] = {"--signal-timeout", CTL_DURATION, "DURATION",
                           RUN_MAX_SUSPEND_MS, 0},
    [RF_APP] = {"--app", CTL_STR, "APP", 0, 0},
    [RF_USER] = {"--user", CTL_STR, "USER", 0, 0},
    [RF_SESSION] = {"--session", CTL_STR, "SESSION", 0, 0},
    [RF_STATUS] = {"--status", CTL_STR, "STATUS", 0, 0},
    [RF_RESULT] = {"--result", CTL_STR, "JSON", 0, 0},
    [RF_KIND] = {"--kind", CTL_STR, "KIND", 0, 0},
    [RF_KEY] = {"--key", CTL_STR, "IDEMPOTENCY_KEY", 0, 0},
    [RF_EXPECT_SEQ] = {"--expect-seq", CTL_NUM, "N", UINT64_MAX, 0},
    [RF_FROM_SEQ] = {"--from-seq", CTL_NUM, "N", UINT64_MAX, 0},
    [RF_LIMIT] = {"--limit", CTL_NUM, "N", UINT32_MAX, 0},
    [RF_START_AFTER] = {"--start-after", CTL_STR, "RUN_ID", 0, 0},
    [RF_ALL] = {"--all", CTL_BOOL, NULL, 0, 0},
    [RF_QUIET] = {"--quiet", CTL_BOOL, NULL, 0, 0, "-q"},
};

#define RF(f) CTL_F(f)

/* ---- Statuses ------------------------------------------------------------ */

static const char *status_name(Reel__V1__Run__Status s) {
    return ctl_enum_name(&reel__v1__run__status__descriptor, (int)s);
}

static int is_terminal(Reel__V1__Run__Status s) {
    return s == REEL__V1__RUN__STATUS__COMPLETED ||
           s == REEL__V1__RUN__STATUS__FAILED ||
           s == REEL__V1__RUN__STATUS__CANCELLED;
}

/*
 * --status, any case, as a status (only a terminal one if terminal). Says
 * which names it takes and returns EXIT_USAGE when it is none of them.
 */
static int parse_status(const ctl_args_t *a, int terminal,
                        Reel__V1__Run__Status *out) {
    const ProtobufCEnumDescriptor *d = &reel__v1__run__status__descriptor;
    const char *text = a->str[RF_STATUS];
    char names[128] = "";
    size_t n = 0;

    for (unsigned i = 0; i < d->n_values; i++) {
        Reel__V1__Run__Status s = (Reel__V1__Run__Status)d->values[i].value;

        if (s == REEL__V1__RUN__STATUS__STATUS_UNSPECIFIED ||
            (terminal && !is_terminal(s)))
            continue;
        if (strcasecmp(text, d->values[i].name) == 0) {
            *out = s;
            return 0;
        }
        if (n < sizeof(names))
            n += (size_t)snprintf(names + n, sizeof(names) - n, "%s%s",
                                  n ? ", " : "", d->values[i].name);
    }
    for (char *p = names; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return ctl_usage_error(a, "--status: \"%s\" is not one of %s", text,
                           names);
}

/* ---- Printing ------------------------------------------------------------ */

/*
 * "run 01J... RUNNING epoch 1 (owner w1, lease until 2024-...Z) resumed";
 * listed, without "run " and with the run's name after the status.
 */
static void print_run_line(const Reel__V1__Run *r, int listed) {
    char t[40];

    printf("%s%s %s", listed ? "" : "run ", r->run_id, status_name(r->status));
    if (listed)
        printf(" %s/%s/%s/%s", ctl_name(r->app), ctl_name(r->user),
               ctl_name(r->session), ctl_name(r->invocation_id));
    printf(" epoch %llu", (unsigned long long)r->lease_epoch);
    if (r->status == REEL__V1__RUN__STATUS__RUNNING)
        printf(" (owner %s, lease %s %s)", ctl_name(r->lease_owner),
               r->lease_expires_at_ms < ctl_now_ms() ? "expired" : "until",
               ctl_iso_time(r->lease_expires_at_ms, t, sizeof(t)));
    else if (r->status == REEL__V1__RUN__STATUS__WAITING)
        printf(" (waiting on %s)", r->waiting_on);
    else if (is_terminal(r->status) && r->ended_at_ms != 0)
        printf(" (ended %s)", ctl_iso_time(r->ended_at_ms, t, sizeof(t)));
    else if (r->status == REEL__V1__RUN__STATUS__RUNNABLE &&
             r->not_before_ms > ctl_now_ms())
        printf(" (backing off until %s)",
               ctl_iso_time(r->not_before_ms, t, sizeof(t)));
    if (*r->reason)
        printf(" [%s, attempt %u]", r->reason, r->attempt);
    printf("%s\n", r->resumed ? " resumed" : "");
}

/* The summary line, then the rest of the fields, for run get. */
static void print_run_details(const Reel__V1__Run *r) {
    char t[40];

    print_run_line(r, 0);
    printf("  name:      %s/%s/%s/%s\n", ctl_name(r->app), ctl_name(r->user),
           ctl_name(r->session), ctl_name(r->invocation_id));
    printf("  next seq:  %llu\n", (unsigned long long)r->next_seq);
    if (r->n_labels > 0) {
        printf("  labels:   ");
        for (size_t i = 0; i < r->n_labels; i++)
            printf(" %s=%s", ctl_name(r->labels[i]->key),
                   ctl_name(r->labels[i]->value));
        printf("\n");
    }
    if (*r->result) {
        printf("  result:    ");
        ctl_put_value(r->result);
        printf("\n");
    }
    printf("  created:   %s\n",
           ctl_iso_time(r->created_at_ms, t, sizeof(t)));
    printf("  updated:   %s\n",
           ctl_iso_time(r->updated_at_ms, t, sizeof(t)));
    if (r->ended_at_ms != 0)
        printf("  ended:     %s\n",
               ctl_iso_time(r->ended_at_ms, t, sizeof(t)));
}

/* "3 tool.call {"name":"search"} (epoch 1, rev 17)", or one JSON line. */
static void print_entry(const ctl_t *ctl, const Reel__V1__JournalEntry *e) {
    if (ctl->json)
        ctl_print_json_line(ctl_journal_entry_json(e));
    else {
        printf("%llu %s ", (unsigned long long)e->seq, e->kind);
        ctl_put_value(e->payload);
        printf(" (epoch %llu, rev %llu)\n", (unsigned long long)e->lease_epoch,
               (unsigned long long)e->revision);
    }
}

/* With -q, a script's one answer; --json is the other way to have more. */
static int check_quiet(const ctl_t *ctl, const ctl_args_t *a) {
    if (ctl_has(a, RF_QUIET) && ctl->json)
        return ctl_usage_error(a, "--quiet and --json exclude each other");
    return 0;
}

/*
 * Prints the run a subcommand got back, and frees it. quiet: its run id
 * (begin), or its epoch (claim), alone.
 */
static int finish_run(const ctl_t *ctl, Reel__V1__Run *r, int details,
                      int quiet) {
    if (quiet == 'i')
        printf("%s\n", r->run_id);
    else if (quiet == 'e')
        printf("%llu\n", (unsigned long long)r->lease_epoch);
    else if (ctl->json)
        ctl_print_json_line(ctl_run_json(r));
    else if (details)
        print_run_details(r);
    else
        print_run_line(r, 0);
    reel__v1__run__free_unpacked(r, NULL);
    return EXIT_OK;
}

/* ---- run ----------------------------------------------------------------- */

/* Frees what take_labels allocated: the keys, the entries, the array. */
static void free_labels(Reel__V1__BeginRunRequest *req) {
    for (size_t i = 0; i < req->n_labels; i++)
        free(req->labels[i]->key);
    if (req->labels != NULL)
        free(req->labels[0]); /* the entries, in one block */
    free(req->labels);
    req->labels = NULL;
    req->n_labels = 0;
}

/*
 * The --label K=V flags into req's map (free_labels releases it, also
 * after a failure); EXIT_USAGE when one is malformed.
 */
static int take_labels(const ctl_args_t *a, Reel__V1__BeginRunRequest *req) {
    Reel__V1__BeginRunRequest__LabelsEntry *ents;
    size_t n = a->nmany[RF_LABEL];

    if (n == 0)
        return 0;
    ents = calloc(n, sizeof(*ents));
    req->labels = calloc(n, sizeof(*req->labels));
    if (ents == NULL || req->labels == NULL) {
        free(ents);
        free(req->labels);
        req->labels = NULL;
        fprintf(stderr, "reelctl: out of memory\n");
        return EXIT_FAIL;
    }
    for (size_t i = 0; i < n; i++)
        req->labels[i] = &ents[i];
    for (size_t i = 0; i < n; i++) {
        const char *kv = a->many[RF_LABEL][i], *eq = strchr(kv, '=');
        Reel__V1__BeginRunRequest__LabelsEntry init =
            REEL__V1__BEGIN_RUN_REQUEST__LABELS_ENTRY__INIT;

        if (eq == NULL || eq == kv)
            return ctl_usage_error(a, "--label: \"%s\" is not KEY=VALUE", kv);
        ents[i] = init;
        if ((ents[i].key = strndup(kv, (size_t)(eq - kv))) == NULL) {
            fprintf(stderr, "reelctl: out of memory\n");
            return EXIT_FAIL;
        }
        ents[i].value = (char *)eq + 1;
        req->n_labels = i + 1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(ents[j].key, ents[i].key) == 0)
                return ctl_usage_error(a, "--label: key \"%s\" given twice",
                                       ents[i].key);
    }
    return 0;
}

static int run_begin(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__BeginRunRequest req = REEL__V1__BEGIN_RUN_REQUEST__INIT;
    Reel__V1__Run *r;
    int rc;

    if ((rc = check_quiet(ctl, a)) != 0)
        return rc;
    req.app = a->pos[0];
    req.user = a->pos[1];
    req.session = a->pos[2];
    req.invocation_id = a->pos[3];
    req.lease_owner = a->str[RF_OWNER];
    req.lease_ttl_ms = (int64_t)a->num[RF_TTL];
    if ((rc = take_labels(a, &req)) == 0) {
        r = ctl_call(ctl, a, "BeginRun", &req, &reel__v1__run__descriptor,
                     &rc);
        if (r != NULL)
            rc = finish_run(ctl, r, 0, ctl_has(a, RF_QUIET) ? 'i' : 0);
    }
    free_labels(&req);
    return rc;
}

static int run_get(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__GetRunRequest req = REEL__V1__GET_RUN_REQUEST__INIT;
    Reel__V1__Run *r;
    int rc;

    req.run_id = a->pos[0];
    r = ctl_call(ctl, a, "GetRun", &req, &reel__v1__run__descriptor, &rc);
    return r != NULL ? finish_run(ctl, r, 1, 0) : rc;
}

static void print_runs(const ctl_t *ctl, Reel__V1__Run *const *runs,
                       size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (ctl->json)
            ctl_print_json_line(ctl_run_json(runs[i]));
        else
            print_run_line(runs[i], 1);
    }
}

/*
 * Prints one page and says where the next one starts: a malloc'd cursor in
 * *next, or NULL when this was the last page or --limit asked for one
 * (without --all). Pages end by bytes too, so any page may say more.
 */
static int run_ls_page(ctl_t *ctl, const ctl_args_t *a,
                       Reel__V1__ListRunsRequest *req, char **next) {
    Reel__V1__ListRunsResponse *resp;
    int rc;

    *next = NULL;
    resp = ctl_call(ctl, a, "ListRuns", req,
                    &reel__v1__list_runs_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    print_runs(ctl, resp->runs, resp->n_runs);
    if (!resp->more) {
        /* done */
    } else if (ctl_has(a, RF_LIMIT) && !ctl_has(a, RF_ALL)) {
        if (!ctl->json)
            ctl_hint("more runs: --start-after %s, or --all",
                     resp->next_start_after);
    } else if (*resp->next_start_after == '\0' ||
               strcmp(resp->next_start_after, req->start_after) == 0) {
        /* Following it would ask for the same page forever. */
        fprintf(stderr, "reelctl: run ls: the server said more but gave no "
                        "new cursor\n");
        rc = EXIT_FAIL;
    } else if ((*next = strdup(resp->next_start_after)) == NULL) {
        fprintf(stderr, "reelctl: out of memory\n");
        rc = EXIT_FAIL;
    }
    reel__v1__list_runs_response__free_unpacked(resp, NULL);
    return rc;
}

static int run_ls(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ListRunsRequest req = REEL__V1__LIST_RUNS_REQUEST__INIT;
    char *cursor = NULL, *next;
    int rc;

    if (ctl_has(a, RF_USER) && !ctl_has(a, RF_APP))
        return ctl_usage_error(a, "--user needs --app");
    if (ctl_has(a, RF_SESSION) && !ctl_has(a, RF_USER))
        return ctl_usage_error(a, "--session needs --user");
    if (ctl_has(a, RF_STATUS) &&
        (rc = parse_status(a, 0, &req.status)) != 0)
        return rc;
    if (ctl_has(a, RF_APP))
        req.app = a->str[RF_APP];
    if (ctl_has(a, RF_USER))
        req.user = a->str[RF_USER];
    if (ctl_has(a, RF_SESSION))
        req.session = a->str[RF_SESSION];
    if (ctl_has(a, RF_START_AFTER))
        req.start_after = a->str[RF_START_AFTER];
    req.limit = (uint32_t)a->num[RF_LIMIT];
    for (;;) {
        rc = run_ls_page(ctl, a, &req, &next);
        free(cursor);
        cursor = next;
        if (rc != EXIT_OK || cursor == NULL)
            break;
        req.start_after = cursor;
    }
    free(cursor);
    return rc;
}

static int run_heartbeat(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__HeartbeatRequest req = REEL__V1__HEARTBEAT_REQUEST__INIT;
    Reel__V1__Run *r;
    int rc;

    req.run_id = a->pos[0];
    req.lease_epoch = a->num[RF_EPOCH];
    req.lease_ttl_ms = (int64_t)a->num[RF_TTL];
    r = ctl_call(ctl, a, "Heartbeat", &req, &reel__v1__run__descriptor, &rc);
    return r != NULL ? finish_run(ctl, r, 0, 0) : rc;
}

static int run_suspend(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__SuspendRunRequest req = REEL__V1__SUSPEND_RUN_REQUEST__INIT;
    Reel__V1__Run *r;
    int rc;

    req.run_id = a->pos[0];
    req.lease_epoch = a->num[RF_EPOCH];
    req.waiting_on = a->str[RF_WAITING_ON];
    req.timeout_ms = (int64_t)a->num[RF_SIGNAL_TIMEOUT]; /* 0: none */
    r = ctl_call(ctl, a, "SuspendRun", &req, &reel__v1__run__descriptor, &rc);
    return r != NULL ? finish_run(ctl, r, 0, 0) : rc;
}

static int run_end(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__EndRunRequest req = REEL__V1__END_RUN_REQUEST__INIT;
    Reel__V1__Run *r;
    const char *result;
    char *buf = NULL;
    int rc;

    if ((rc = parse_status(a, 1, &req.status)) != 0)
        return rc;
    req.run_id = a->pos[0];
    req.lease_epoch = a->num[RF_EPOCH];
    if (ctl_has(a, RF_RESULT)) {
        if ((rc = ctl_read_json_arg(a, "--result", a->str[RF_RESULT], &buf,
                                    &result)) != 0)
            return rc;
        req.result = (char *)result;
        ctl->typed_json = result;
        ctl->typed_json_name = "--result";
    }
    r = ctl_call(ctl, a, "EndRun", &req, &reel__v1__run__descriptor, &rc);
    ctl->typed_json = NULL;
    free(buf);
    return r != NULL ? finish_run(ctl, r, 0, 0) : rc;
}

static int run_claim(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ClaimRunRequest req = REEL__V1__CLAIM_RUN_REQUEST__INIT;
    Reel__V1__Run *r;
    int rc;

    if ((rc = check_quiet(ctl, a)) != 0)
        return rc;
    req.run_id = a->pos[0];
    req.lease_owner = a->str[RF_OWNER];
    req.lease_ttl_ms = (int64_t)a->num[RF_TTL];
    r = ctl_call(ctl, a, "ClaimRun", &req, &reel__v1__run__descriptor, &rc);
    return r != NULL
               ? finish_run(ctl, r, 0, ctl_has(a, RF_QUIET) ? 'e' : 0)
               : rc;
}

/*
 * ClaimNextRun: the app's oldest claimable run, leased to --owner, waiting
 * up to --wait for one. The call's deadline is --timeout plus the wait.
 * None within the wait: exit 0 (a worker's loop just asks again), a note
 * on stderr, nothing on stdout (--json: the line "null"). -q: "RUN_ID
 * EPOCH", or nothing.
 */
static int run_claim_next(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ClaimNextRunRequest req = REEL__V1__CLAIM_NEXT_RUN_REQUEST__INIT;
    Reel__V1__ClaimNextRunResponse *resp;
    int64_t timeout_ms = ctl->timeout_ms;
    int rc;

    if ((rc = check_quiet(ctl, a)) != 0)
        return rc;
    req.app = a->pos[0];
    req.lease_owner = a->str[RF_OWNER];
    req.lease_ttl_ms = (int64_t)a->num[RF_TTL];
    req.wait_ms = (int64_t)a->num[RF_WAIT];
    ctl->timeout_ms += req.wait_ms;
    resp = ctl_call(ctl, a, "ClaimNextRun", &req,
                    &reel__v1__claim_next_run_response__descriptor, &rc);
    ctl->timeout_ms = timeout_ms;
    if (resp == NULL)
        return rc;
    if (!resp->found || resp->run == NULL) {
        if (ctl->json)
            puts("null");
        else if (!ctl_has(a, RF_QUIET))
            ctl_hint("no run of this app was claimable (within --wait)");
    } else if (ctl_has(a, RF_QUIET)) {
        printf("%s %llu\n", resp->run->run_id,
               (unsigned long long)resp->run->lease_epoch);
    } else if (ctl->json) {
        ctl_print_json_line(ctl_run_json(resp->run));
    } else {
        print_run_line(resp->run, 0);
    }
    reel__v1__claim_next_run_response__free_unpacked(resp, NULL);
    return EXIT_OK;
}

static int run_resume(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ResumeRunRequest req = REEL__V1__RESUME_RUN_REQUEST__INIT;
    Reel__V1__Run *r;
    int rc;

    req.run_id = a->pos[0];
    r = ctl_call(ctl, a, "ResumeRun", &req, &reel__v1__run__descriptor, &rc);
    return r != NULL ? finish_run(ctl, r, 0, 0) : rc;
}

/*
 * Prints one page and says where the next one starts: a malloc'd cursor in
 * *next, or NULL when this was the last page or --limit asked for one.
 */
static int run_recoverable_page(ctl_t *ctl, const ctl_args_t *a,
                                Reel__V1__ListRunsToRecoverRequest *req,
                                char **next) {
    Reel__V1__ListRunsToRecoverResponse *resp;
    int rc;

    *next = NULL;
    resp = ctl_call(ctl, a, "ListRunsToRecover", req,
                    &reel__v1__list_runs_to_recover_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    print_runs(ctl, resp->runs, resp->n_runs);
    if (!resp->more) {
        /* done */
    } else if (ctl_has(a, RF_LIMIT) && !ctl_has(a, RF_ALL)) {
        if (!ctl->json)
            ctl_hint("more runs need a worker: --start-after %s, or --all",
                     resp->next_start_after);
    } else if (*resp->next_start_after == '\0' ||
               strcmp(resp->next_start_after, req->start_after) == 0) {
        /* Following it would ask for the same page forever. */
        fprintf(stderr, "reelctl: run recoverable: the server said more but "
                        "gave no new cursor\n");
        rc = EXIT_FAIL;
    } else if ((*next = strdup(resp->next_start_after)) == NULL) {
        fprintf(stderr, "reelctl: out of memory\n");
        rc = EXIT_FAIL;
    }
    reel__v1__list_runs_to_recover_response__free_unpacked(resp, NULL);
    return rc;
}

static int run_recoverable(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ListRunsToRecoverRequest req =
        REEL__V1__LIST_RUNS_TO_RECOVER_REQUEST__INIT;
    char *cursor = NULL, *next;
    int rc;

    req.limit = (uint32_t)a->num[RF_LIMIT];
    if (ctl_has(a, RF_APP))
        req.app = a->str[RF_APP];
    if (ctl_has(a, RF_START_AFTER))
        req.start_after = a->str[RF_START_AFTER];
    for (;;) {
        rc = run_recoverable_page(ctl, a, &req, &next);
        free(cursor);
        cursor = next;
        if (rc != EXIT_OK || cursor == NULL)
            break;
        req.start_after = cursor;
    }
    free(cursor);
    return rc;
}

static const ctl_command_t run_commands[] = {
    {"begin", {"APP", "USER", "SESSION", "INVOCATION_ID"}, 4,
     RF(RF_OWNER) | RF(RF_TTL) | RF(RF_LABEL) | RF(RF_QUIET), RF(RF_OWNER),
     "start the run named by the four, or resume it, leased to --owner\n"
     "      --ttl: lease length (default 30s, at most 24h); --label: when\n"
     "      creating it; -q, --quiet: print the run id alone",
     run_begin},
    {"get", {"RUN_ID"}, 1, 0, 0, "show a run", run_get},
    {"ls", {NULL}, 0,
     RF(RF_APP) | RF(RF_USER) | RF(RF_SESSION) | RF(RF_STATUS) |
         RF(RF_LIMIT) | RF(RF_START_AFTER) | RF(RF_ALL),
     0,
     "list runs in creation order, one per line (--user needs --app,\n"
     "      --session needs --user); --limit N: one page of at most N\n"
     "      (--all: every page, N at a time)",
     run_ls},
    {"heartbeat", {"RUN_ID"}, 1, RF(RF_EPOCH) | RF(RF_TTL), RF(RF_EPOCH),
     "extend the lease held at --epoch by --ttl (default 30s)",
     run_heartbeat},
    {"suspend", {"RUN_ID"}, 1,
     RF(RF_EPOCH) | RF(RF_WAITING_ON) | RF(RF_SIGNAL_TIMEOUT),
     RF(RF_EPOCH) | RF(RF_WAITING_ON),
     "give up the lease and park the run until the signal arrives;\n"
     "      --signal-timeout: or until DURATION (at most 365d) has passed:\n"
     "      then it is RUNNABLE (reason SIGNAL_TIMEOUT), and its journal\n"
     "      has a \"signal\" entry saying \"timed_out\":true",
     run_suspend},
    {"end", {"RUN_ID"}, 1, RF(RF_EPOCH) | RF(RF_STATUS) | RF(RF_RESULT),
     RF(RF_EPOCH) | RF(RF_STATUS),
     "finish the run: --status completed, failed or cancelled; --result:\n"
     "      JSON, - (standard input) or @FILE; a PAUSED or WAITING run (no\n"
     "      lease) ends at the epoch `run get` shows",
     run_end},
    {"claim", {"RUN_ID"}, 1, RF(RF_OWNER) | RF(RF_TTL) | RF(RF_QUIET),
     RF(RF_OWNER),
     "take a runnable run, or one whose lease expired, with a new epoch;\n"
     "      -q, --quiet: print the new epoch alone",
     run_claim},
    {"claim-next", {"APP"}, 1,
     RF(RF_OWNER) | RF(RF_TTL) | RF(RF_WAIT) | RF(RF_QUIET), RF(RF_OWNER),
     "take APP's oldest claimable run with a new epoch, waiting up to\n"
     "      --wait (at most 5m) for one; -q: print \"RUN_ID EPOCH\"; none\n"
     "      is exit 0 with nothing printed (--json: null)",
     run_claim_next},
    {"resume", {"RUN_ID"}, 1, 0, 0,
     "make a PAUSED run runnable again, its attempts reset", run_resume},
    {"recoverable", {NULL}, 0,
     RF(RF_APP) | RF(RF_LIMIT) | RF(RF_START_AFTER) | RF(RF_ALL), 0,
     "list runs that need a worker: runnable, or with an expired lease;\n"
     "      --app: only APP's; --limit N: one page of at most N (--all:\n"
     "      every page, N at a time)",
     run_recoverable},
    {NULL, {NULL}, 0, 0, 0, NULL, NULL},
};

const ctl_group_t ctl_run_group = {
    "run", "reel.v1.Journal", run_flags, RF_COUNT, run_commands,
};

/* ---- journal ------------------------------------------------------------- */

static int journal_append(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__AppendRequest req = REEL__V1__APPEND_REQUEST__INIT;
    Reel__V1__AppendResponse *resp;
    const char *payload;
    char *buf;
    int rc;

    if ((rc = check_quiet(ctl, a)) != 0)
        return rc;
    if ((rc = ctl_read_json_arg(a, "PAYLOAD_JSON",
                                a->npos > 1 ? a->pos[1] : "{}", &buf,
                                &payload)) != 0)
        return rc;
    req.run_id = a->pos[0];
    req.payload = (char *)payload;
    ctl->typed_json = payload;
    ctl->typed_json_name = "PAYLOAD_JSON";
    req.lease_epoch = a->num[RF_EPOCH];
    req.kind = a->str[RF_KIND];
    if (ctl_has(a, RF_KEY))
        req.idempotency_key = a->str[RF_KEY];
    req.expected_seq = a->num[RF_EXPECT_SEQ];
    resp = ctl_call(ctl, a, "Append", &req,
                    &reel__v1__append_response__descriptor, &rc);
    ctl->typed_json = NULL;
    free(buf);
    if (resp == NULL)
        return rc;
    if (resp->entry == NULL) {
        fprintf(stderr, "reelctl: journal append: malformed response (no "
                        "entry)\n");
        rc = EXIT_FAIL;
    } else if (ctl->json) {
        cJSON *o = ctl_journal_entry_json(resp->entry);

        cJSON_AddBoolToObject(o, "duplicate", resp->duplicate);
        ctl_print_json_line(o);
    } else if (ctl_has(a, RF_QUIET)) {
        printf("%llu\n", (unsigned long long)resp->entry->seq);
    } else {
        printf("seq %llu (revision %llu)%s\n",
               (unsigned long long)resp->entry->seq,
               (unsigned long long)resp->entry->revision,
               resp->duplicate ? " duplicate" : "");
    }
    reel__v1__append_response__free_unpacked(resp, NULL);
    return rc;
}

/*
 * Prints one page; *more says whether to ask for another from
 * req->from_seq, which it advances: every page, unless --limit asked for
 * one (without --all). Pages end by bytes too, so any page may say more.
 */
static int journal_read_page(ctl_t *ctl, const ctl_args_t *a,
                             Reel__V1__ReadJournalRequest *req, int *more) {
    Reel__V1__ReadJournalResponse *resp;
    int rc;

    *more = 0;
    resp = ctl_call(ctl, a, "ReadJournal", req,
                    &reel__v1__read_journal_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    for (size_t i = 0; i < resp->n_entries; i++)
        print_entry(ctl, resp->entries[i]);
    if (!resp->more) {
        /* done */
    } else if (ctl_has(a, RF_LIMIT) && !ctl_has(a, RF_ALL)) {
        if (!ctl->json)
            ctl_hint("more entries: --from-seq %llu, or --all",
                     (unsigned long long)resp->next_from_seq);
    } else if (resp->next_from_seq <= req->from_seq) {
        /* Following it would ask for the same page forever. */
        fprintf(stderr, "reelctl: journal read: the server said more but "
                        "gave no new cursor\n");
        rc = EXIT_FAIL;
    } else {
        req->from_seq = resp->next_from_seq;
        *more = 1;
    }
    reel__v1__read_journal_response__free_unpacked(resp, NULL);
    return rc;
}

static int journal_read(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ReadJournalRequest req = REEL__V1__READ_JOURNAL_REQUEST__INIT;
    int rc, more;

    req.run_id = a->pos[0];
    req.from_seq = a->num[RF_FROM_SEQ];
    req.limit = (uint32_t)a->num[RF_LIMIT];
    do
        rc = journal_read_page(ctl, a, &req, &more);
    while (rc == EXIT_OK && more);
    return rc;
}

typedef struct follow_state {
    const ctl_t *ctl;
    int failed; /* we cancelled: the reason is already printed */
    int gone;   /* we cancelled: stdout's reader left */
} follow_state_t;

static int follow_entry(void *arg, const uint8_t *msg, size_t len) {
    follow_state_t *f = arg;
    Reel__V1__JournalEntry *e;
    int out;

    e = reel__v1__journal_entry__unpack(NULL, len, msg);
    if (e == NULL) {
        fprintf(stderr, "reelctl: journal follow: malformed entry\n");
        f->failed = 1;
        return 1;
    }
    print_entry(f->ctl, e);
    reel__v1__journal_entry__free_unpacked(e, NULL);
    /* Line by line, so a pipe's reader sees each entry as it is written. */
    if ((out = ctl_flush()) != 0) {
        f->gone = out > 0;
        f->failed = out < 0;
        return 1;
    }
    return 0;
}

/* Between entries: a reader that left ends the stream now. */
static int follow_idle(void *arg) {
    follow_state_t *f = arg;

    f->gone = ctl_stdout_gone();
    return f->gone;
}

static int journal_follow(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__SubscribeRunRequest req = REEL__V1__SUBSCRIBE_RUN_REQUEST__INIT;
    follow_state_t f = {ctl, 0, 0};
    reel_reply_t r = {0};
    uint8_t *buf;
    size_t len;
    int rc = EXIT_FAIL;

    req.run_id = a->pos[0];
    req.from_seq = a->num[RF_FROM_SEQ];
    if ((buf = ctl_pack(&req, &len)) == NULL)
        goto out;
    /* The stream ends when the run does: no deadline, whatever --timeout. */
    reel_client_stream_idle(ctl->client, "/reel.v1.Journal/SubscribeRun", buf,
                            len, 0, follow_entry, follow_idle, CTL_IDLE_MS, &f,
                            &r);
    if (f.failed)
        rc = EXIT_FAIL;
    else if (f.gone)
        rc = EXIT_OK; /* `journal follow | head`: the reader is done */
    else if (r.code != 0)
        rc = ctl_report_error(ctl, "journal follow", &r);
    else
        rc = EXIT_OK;
out:
    reel_reply_fini(&r);
    free(buf);
    return rc;
}

static const ctl_command_t journal_commands[] = {
    {"append", {"RUN_ID", "PAYLOAD_JSON"}, 1,
     RF(RF_EPOCH) | RF(RF_KIND) | RF(RF_KEY) | RF(RF_EXPECT_SEQ) |
         RF(RF_QUIET),
     RF(RF_EPOCH) | RF(RF_KIND),
     "append an entry (PAYLOAD_JSON defaults to {}; - reads it from "
     "standard\n"
     "      input, @FILE from a file) as the lease at --epoch\n"
     "      --key: a retry with the same key writes nothing; --expect-seq: "
     "only\n"
     "      if the entry gets seq N; -q, --quiet: print the seq alone",
     journal_append},
    {"read", {"RUN_ID"}, 1, RF(RF_FROM_SEQ) | RF(RF_LIMIT) | RF(RF_ALL), 0,
     "print entries after --from-seq N, one per line; --limit N: one "
     "page\n"
     "      of at most N (--all: every page, N at a time)",
     journal_read},
    {"follow", {"RUN_ID"}, 1, RF(RF_FROM_SEQ), 0,
     "print entries after --from-seq N, then new ones as they are written,\n"
     "      until the run ends (exit 0), stdout's reader leaves, or Ctrl-C\n"
     "      (no deadline)",
     journal_follow},
    {NULL, {NULL}, 0, 0, 0, NULL, NULL},
};

const ctl_group_t ctl_journal_group = {
    "journal", "reel.v1.Journal", run_flags, RF_COUNT, journal_commands,
};
