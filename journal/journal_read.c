/*
 * journal/journal_read.c: reads of runs and journals.
 *
 * Each read works at one store snapshot, so a page is consistent; other
 * modules' applies read runs through their transaction instead
 * (journal_load_run, journal_indexed_run). A read never passes over what
 * it cannot read: a record that does not decode, or an index entry without
 * its record, is DATA_LOSS naming the run or the seq. Pages stop at their
 * count and at their byte budget (base/page.h), take at least one item,
 * and say whether more follow.
 */
#include "journal/journal_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/codec.h"
#include "base/fault.h"

/* ---- Runs ---------------------------------------------------------------- */

reel_code_t journal_load_run(journal_t *j, store_txn_t *txn,
                             const char *run_id, run_t *out,
                             reel_status_t *st) {
    journal_key_t k = journal_run_key(run_id);
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc;

    if (k.p == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = store_txn_get(txn, j->cf_runs, k.p, k.len, &val, &vlen, st);
    free(k.p);
    if (rc == REEL_NOT_FOUND)
        return reel_status_set(st, REEL_NOT_FOUND, "run %s not found", run_id);
    if (rc != REEL_OK)
        return rc;
    if (journal_run_decode(val, vlen, out) != 0)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "run %s: stored record is corrupt", run_id);
    free(val);
    return rc;
}

reel_code_t journal_get_run_at(journal_t *j, const store_snapshot_t *snap,
                               const char *run_id, run_t *out,
                               reel_status_t *st) {
    journal_key_t k = journal_run_key(run_id);
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if (k.p == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = store_snapshot_get(j->store, snap, j->cf_runs, k.p, k.len, &val,
                            &vlen, st);
    free(k.p);
    if (rc == REEL_NOT_FOUND)
        return reel_status_set(st, REEL_NOT_FOUND, "run %s not found", run_id);
    if (rc != REEL_OK)
        rc = reel_status_set(st, rc, "run %s: %s", run_id,
                             reel_status_message(st));
    else if (journal_run_decode(val, vlen, out) != 0)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "run %s: stored record is corrupt", run_id);
    free(val);
    return rc;
}

/*
 * A run an index ('s', 'a', 'A' or 'p') names, read through txn or at
 * snap: the index and the record commit together, so a missing record is
 * DATA_LOSS, never a run to pass over (a list would silently leave it
 * out).
 */
reel_code_t journal_indexed_run(store_txn_t *txn, journal_t *j,
                                const store_snapshot_t *snap,
                                const char *run_id, run_t *out,
                                reel_status_t *st) {
    reel_code_t rc = txn != NULL ? journal_load_run(j, txn, run_id, out, st)
                                 : journal_get_run_at(j, snap, run_id, out, st);

    if (rc == REEL_NOT_FOUND)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "run %s is in an index but its record is "
                             "missing",
                             run_id);
    return rc;
}

reel_code_t journal_get_run(journal_t *j, const char *run_id, run_t *out,
                            reel_status_t *st) {
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if ((rc = journal_check_run_id("run_id", run_id, st)) != REEL_OK)
        return rc;
    return journal_get_run_at(j, NULL, run_id, out, st);
}

static reel_code_t check_limit(uint32_t *limit, reel_status_t *st) {
    if (*limit == 0)
        *limit = JOURNAL_LIST_DEFAULT;
    if (*limit > JOURNAL_LIST_MAX)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "limit: at most %d (got %u)", JOURNAL_LIST_MAX,
                               *limit);
    return REEL_OK;
}

/* Entries of run_id after from_seq at snap, delivered to fn until it says
 * stop or limit is reached. Returns how the scan ended: an entry it cannot
 * read ends it with an error naming the entry's seq, never a skip. */
typedef int (*journal_entry_fn)(void *arg,
                                journal_entry_t *e); /* 0 go on, 1 stop */

reel_code_t journal_scan_entries(journal_t *j, const store_snapshot_t *snap,
                                 const char *run_id, uint64_t from_seq,
                                 journal_entry_fn fn, void *arg,
                                 reel_status_t *st) {
    journal_key_t start = {NULL, 0};
    store_iter_t *it = NULL;
    uint64_t seq = from_seq;
    reel_code_t rc = REEL_OK;

    /* No seq follows the largest (and + 1 would wrap to the first). */
    if (from_seq == UINT64_MAX)
        return REEL_OK;
    start = journal_entry_key(run_id, from_seq + 1);
    it = store_iter_create(j->store, j->cf_journal, snap);
    if (start.p == NULL || it == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (store_iter_seek(it, start.p, start.len); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        journal_entry_t e;
        int drc;

        if (klen != start.len || memcmp(k, start.p, start.len - 8) != 0)
            break;
        seq = reel_be64_get((const unsigned char *)k + klen - 8);
        /* The fault point stands in for a corrupt record. */
        drc = REEL_FAULT("journal.decode") ? -1
                                           : journal_entry_decode(v, vlen, &e);
        if (drc != 0) {
            rc = reel_status_set(st, drc == -2 ? REEL_RESOURCE_EXHAUSTED
                                               : REEL_DATA_LOSS,
                                 "run %s: journal entry %llu %s", run_id,
                                 (unsigned long long)seq,
                                 drc == -2 ? "could not be read: out of memory"
                                           : "is corrupt");
            break;
        }
        if (fn(arg, &e) != 0)
            break;
    }
    if (rc == REEL_OK && (rc = store_iter_status(it, st)) != REEL_OK)
        rc = reel_status_set(st, rc, "run %s: reading the journal after seq "
                                     "%llu: %s",
                             run_id, (unsigned long long)seq,
                             reel_status_message(st));
out:
    store_iter_destroy(it);
    free(start.p);
    return rc;
}

typedef struct collect {
    journal_entry_t *arr;
    size_t n, limit, used;
    const reel_page_t *page;
    int more;
} collect_t;

static int collect_entry(void *arg, journal_entry_t *e) {
    collect_t *c = arg;

    if (c->n == c->limit || !reel_page_take(c->page, c->n, &c->used, e)) {
        c->more = 1;
        journal_entry_fini(e);
        return 1;
    }
    c->arr[c->n++] = *e;
    return 0;
}

reel_code_t journal_read(journal_t *j, const char *run_id, uint64_t from_seq,
                         uint32_t limit, const reel_page_t *page,
                         journal_entry_t **out, size_t *n, int *more,
                         reel_status_t *st) {
    store_snapshot_t *snap = NULL;
    collect_t c = {0};
    run_t r;
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    *more = 0;
    if ((rc = journal_check_run_id("run_id", run_id, st)) != REEL_OK ||
        (rc = check_limit(&limit, st)) != REEL_OK)
        return rc;
    if ((rc = store_snapshot_create(j->store, &snap, st)) != REEL_OK)
        return rc;
    if ((rc = journal_get_run_at(j, snap, run_id, &r, st)) != REEL_OK)
        goto out;
    run_fini(&r);
    c.limit = limit;
    c.page = page;
    c.arr = calloc(limit, sizeof(*c.arr));
    if (c.arr == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    /* A from_seq past the last entry reads an empty page: a read skips
     * nothing, and its next_from_seq stays where the reader asked. */
    rc = journal_scan_entries(j, snap, run_id, from_seq, collect_entry, &c, st);
    if (rc != REEL_OK) {
        for (size_t i = 0; i < c.n; i++)
            journal_entry_fini(&c.arr[i]);
        free(c.arr);
        goto out;
    }
    *out = c.arr;
    *n = c.n;
    *more = c.more;
out:
    store_snapshot_release(j->store, snap);
    return rc;
}

static int run_matches(const run_t *r, const run_filter_t *f) {
    if (f->app && *f->app && strcmp(r->app, f->app) != 0)
        return 0;
    if (f->app_prefix && *f->app_prefix &&
        strncmp(r->app, f->app_prefix, strlen(f->app_prefix)) != 0)
        return 0;
    if (f->app_exclude && *f->app_exclude &&
        strncmp(r->app, f->app_exclude, strlen(f->app_exclude)) == 0)
        return 0;
    if (f->user && *f->user && strcmp(r->user, f->user) != 0)
        return 0;
    if (f->session && *f->session && strcmp(r->session, f->session) != 0)
        return 0;
    if (f->keep != NULL && !f->keep(f->keep_arg, r))
        return 0;
    return f->status == RUN_STATUS_ANY || r->status == f->status;
}

/*
 * The bounds of a walk of the active runs in run id order: the base every
 * key of the index starts with, and the key to seek to for the first run
 * after `after` ("" for the first of all). One app's runs ("" or NULL for
 * every app's) have their own index ('A' app 0 run_id), not every app's.
 */
static void active_keys(const char *app, const char *after,
                        journal_key_t *base, journal_key_t *seek) {
    if (app != NULL && *app) {
        *base = journal_app_active_key(app, "");
        *seek = journal_app_active_key(app, after);
    } else {
        *base = journal_active_key("");
        *seek = journal_active_key(after);
    }
}

/* A page being filled: the bytes it holds, and the runs it stepped over
 * (read, not matching) against the bound on them. */
typedef struct scan {
    size_t used;
    uint32_t passed, max; /* max 0: no bound (f->resume is NULL) */
    char *resume;
} scan_t;

static scan_t scan_start(const journal_t *j, const run_filter_t *f) {
    scan_t s = {0, 0, 0, f->resume};

    if (f->resume != NULL) {
        f->resume[0] = '\0';
        s.max = j->lim.list_scan_max;
    }
    return s;
}

/*
 * Offers run r (owned) to a listing's page: 1 to go on; 0 when the page is
 * full (r freed, *more set). A run f does not match is freed and passed;
 * the max-th passed one ends the page too, its id the place to resume.
 */
static int offer(const run_filter_t *f, uint32_t limit, run_t *arr,
                 size_t *n, scan_t *s, int *more, run_t *r) {
    if (!run_matches(r, f)) {
        if (s->max != 0 && ++s->passed == s->max) {
            snprintf(s->resume, JOURNAL_RUN_ID_LEN + 1, "%s", r->run_id);
            *more = 1;
            run_fini(r);
            return 0;
        }
        run_fini(r);
        return 1;
    }
    if (*n == limit || !reel_page_take(f->page, *n, &s->used, r)) {
        run_fini(r);
        *more = 1;
        return 0;
    }
    arr[(*n)++] = *r;
    return 1;
}

/* ---- One page of the runs of many apps ----------------------------------- */

/* Apps merged at most; past that a listing reads every run instead. A
 * page costs two seeks per app, then a pass over the apps per run. */
#define MERGE_APPS_MAX 1024

/* One app's place in a merge of its index (tag 'p', 'A', or 'X' whose
 * "app" is the status byte and the app's name). */
typedef struct app_head {
    char *app;
    char id[JOURNAL_RUN_ID_LEN + 1]; /* its next run, "" when none is left */
} app_head_t;

/* h's first run after `after` ("" for its first) in its index, at it. */
static reel_code_t head_next(store_iter_t *it, char tag, app_head_t *h,
                             const char *after, reel_status_t *st) {
    const char *parts[2] = {h->app, after};
    journal_key_t seek = journal_make_key(tag, parts, 2, 0, 0);
    size_t base_len = seek.len - strlen(after);

    h->id[0] = '\0';
    if (seek.p == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (store_iter_seek(it, seek.p, seek.len); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);

        if (klen < base_len || memcmp(k, seek.p, base_len) != 0)
            break;
        if (klen != base_len + JOURNAL_RUN_ID_LEN ||
            (*after && memcmp(k + base_len, after, JOURNAL_RUN_ID_LEN) <= 0))
            continue; /* `after` itself */
        memcpy(h->id, k + base_len, JOURNAL_RUN_ID_LEN);
        h->id[JOURNAL_RUN_ID_LEN] = '\0';
        break;
    }
    free(seek.p);
    return store_iter_status(it, st);
}

/*
 * The apps with an entry in index tag whose names start with prefix and
 * not with skip (NULL: none; it starts with prefix), into heads; *n of
 * them, or MERGE_APPS_MAX + 1 when there are more. The skipped apps are
 * stepped over at once, not read.
 */
static reel_code_t prefix_apps(store_iter_t *it, char tag,
                               const char *prefix, const char *skip,
                               app_head_t *heads, size_t *n,
                               reel_status_t *st) {
    size_t plen = strlen(prefix);
    size_t slen = skip != NULL ? strlen(skip) : 0;
    char first[1 + JOURNAL_MAX_NAME + 1];

    *n = 0;
    if (plen > JOURNAL_MAX_NAME)
        return REEL_OK; /* no app's name is that long */
    first[0] = tag;
    memcpy(first + 1, prefix, plen);
    for (store_iter_seek(it, first, 1 + plen); store_iter_valid(it);) {
        size_t klen, alen;
        const char *k = store_iter_key(it, &klen);
        const char *nul;
        char *past;

        if (klen < 1 + plen || k[0] != tag ||
            memcmp(k + 1, prefix, plen) != 0)
            break;
        if ((nul = memchr(k + 1, '\0', klen - 1)) == NULL)
            return reel_status_set(st, REEL_DATA_LOSS,
                                   "an index entry of runs by app is "
                                   "corrupt");
        alen = (size_t)(nul - k - 1);
        if (slen > plen && slen <= JOURNAL_MAX_NAME && alen >= slen &&
            (unsigned char)skip[slen - 1] != 0xff &&
            memcmp(k + 1, skip, slen) == 0) {
            /* Past every app under skip: its last byte one higher. */
            first[0] = tag;
            memcpy(first + 1, skip, slen);
            first[slen]++;
            store_iter_seek(it, first, 1 + slen);
            continue;
        }
        if (*n == MERGE_APPS_MAX) {
            (*n)++;
            break;
        }
        if ((heads[*n].app = strndup(k + 1, alen)) == NULL ||
            (past = malloc(alen + 2)) == NULL)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        /* Past every entry of this app: "app\x01" sorts after "app\0...". */
        past[0] = tag;
        memcpy(past + 1, heads[*n].app, alen);
        past[1 + alen] = '\x01';
        (*n)++;
        store_iter_seek(it, past, alen + 2);
        free(past);
    }
    return store_iter_status(it, st);
}

/*
 * ListRuns without an app, of the apps under prefix (f->app_prefix, with
 * the status byte in front for 'X') but not under skip (f->app_exclude,
 * the same way; NULL: none): each app's index ('p' every run, 'A' its
 * active ones, 'X' those of a status) is in run id order, so a page
 * merges the apps' next runs and reads only theirs. *merged = 0, and
 * nothing else done, when there are more than MERGE_APPS_MAX apps.
 */
static reel_code_t list_merged(journal_t *j, const run_filter_t *f,
                               char tag, const char *prefix,
                               const char *skip, uint32_t limit, run_t *arr,
                               size_t *n, scan_t *scan, int *more,
                               int *merged, reel_status_t *st) {
    const char *after = f->start_after ? f->start_after : "";
    app_head_t *heads = calloc(MERGE_APPS_MAX + 1, sizeof(*heads));
    store_snapshot_t *snap = NULL;
    store_iter_t *it = NULL;
    size_t napps = 0;
    reel_code_t rc;

    *merged = 0;
    if (heads == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    if ((rc = store_snapshot_create(j->store, &snap, st)) != REEL_OK) {
        free(heads);
        return rc;
    }
    if ((it = store_iter_create(j->store, j->cf_runs, snap)) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    rc = prefix_apps(it, tag, prefix, skip, heads, &napps, st);
    if (rc != REEL_OK || napps > MERGE_APPS_MAX)
        goto out;
    *merged = 1;
    for (size_t i = 0; i < napps && rc == REEL_OK; i++)
        rc = head_next(it, tag, &heads[i], after, st);
    while (rc == REEL_OK) {
        app_head_t *min = NULL;
        run_t r = {0};

        for (size_t i = 0; i < napps; i++)
            if (heads[i].id[0] &&
                (min == NULL || strcmp(heads[i].id, min->id) < 0))
                min = &heads[i];
        if (min == NULL)
            break;
        if ((rc = journal_indexed_run(NULL, j, snap, min->id, &r, st)) !=
                REEL_OK ||
            (rc = head_next(it, tag, min, r.run_id, st)) != REEL_OK) {
            run_fini(&r);
            break;
        }
        if (!offer(f, limit, arr, n, scan, more, &r))
            break;
    }
out:
    for (size_t i = 0; i < MERGE_APPS_MAX; i++)
        free(heads[i].app);
    free(heads);
    store_iter_destroy(it);
    store_snapshot_release(j->store, snap);
    return rc;
}

reel_code_t journal_list_runs(journal_t *j, const run_filter_t *f,
                              run_t **out, size_t *n, int *more,
                              reel_status_t *st) {
    int by_session = f->app && *f->app && f->user && *f->user && f->session &&
                     *f->session;
    /* RUNNABLE or RUNNING runs: the active index ('a', or an app's 'A');
     * another status: the status index ('x', or an app's 'X'); both in
     * the same run id order, not every run. */
    int by_active = !by_session && (f->status == RUN_RUNNABLE ||
                                    f->status == RUN_RUNNING);
    int by_status = !by_session && !by_active && f->status != RUN_STATUS_ANY;
    /* Every status of one app: that app's runs ('p'), not every run. */
    int by_app = !by_session && !by_active && !by_status && f->app &&
                 *f->app;
    /* No app, but only apps under a prefix (a tenant's), or not under one
     * (the default tenant's): their indexes. */
    int by_prefix = !by_session && !(f->app && *f->app) &&
                    ((f->app_prefix && *f->app_prefix) ||
                     (f->app_exclude && *f->app_exclude));
    const char *after = f->start_after ? f->start_after : "";
    uint32_t limit = f->limit;
    store_snapshot_t *snap = NULL;
    store_iter_t *it = NULL;
    journal_key_t base = {NULL, 0}, seek = {NULL, 0};
    run_t *arr = NULL;
    scan_t scan = scan_start(j, f);
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    *more = 0;
    if ((rc = check_limit(&limit, st)) != REEL_OK)
        return rc;
    if ((f->user && *f->user && !(f->app && *f->app)) ||
        (f->session && *f->session && !(f->user && *f->user)))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: filtering by %s needs %s too",
                               f->session && *f->session ? "session" : "user",
                               f->session && *f->session ? "session" : "user",
                               f->session && *f->session ? "user" : "app");
    if ((int)f->status < RUN_STATUS_ANY || f->status > RUN_PAUSED)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "status: unknown value %d", (int)f->status);
    if (*after &&
        (rc = journal_check_run_id("start_after", after, st)) != REEL_OK)
        return rc;
    if (by_prefix) {
        const char *pre = f->app_prefix ? f->app_prefix : "";
        const char *skip = f->app_exclude && *f->app_exclude
                               ? f->app_exclude
                               : NULL;
        char sa[JOURNAL_STATUS_APP_MAX], ss[JOURNAL_STATUS_APP_MAX];
        int merged = 0;

        if ((arr = calloc(limit, sizeof(*arr))) == NULL)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        /* 'X' S app: its apps are "S app" under "S prefix". */
        journal_status_app(f->status, pre, sa);
        if (skip != NULL)
            journal_status_app(f->status, skip, ss);
        rc = list_merged(j, f, by_active ? 'A' : by_status ? 'X' : 'p',
                         by_status ? sa : pre,
                         by_status && skip != NULL ? ss : skip, limit, arr,
                         n, &scan, more, &merged, st);
        if (rc != REEL_OK || merged)
            goto out;
        /* More apps than a merge takes: every run, filtered. */
    }
    if (by_session) {
        const char *parts[4] = {f->app, f->user, f->session, ""};
        const char *sparts[4] = {f->app, f->user, f->session, after};
        base = journal_make_key('s', parts, 4, 0, 0);
        seek = journal_make_key('s', sparts, 4, 0, 0);
    } else if (by_active) {
        active_keys(f->app, after, &base, &seek);
    } else if (by_status && f->app && *f->app) {
        base = journal_app_status_key(f->status, f->app, "");
        seek = journal_app_status_key(f->status, f->app, after);
    } else if (by_status) {
        base = journal_status_key(f->status, "");
        seek = journal_status_key(f->status, after);
    } else if (by_app) {
        base = journal_app_run_key(f->app, "");
        seek = journal_app_run_key(f->app, after);
    } else {
        base = journal_run_key("");
        seek = journal_run_key(after);
    }
    if ((rc = store_snapshot_create(j->store, &snap, st)) != REEL_OK)
        goto out;
    /* Bounded: the deletes an ended run leaves in an index past base are
     * never stepped over. */
    if (base.p != NULL)
        it = store_iter_prefix(j->store, j->cf_runs, snap, base.p, base.len);
    if (arr == NULL)
        arr = calloc(limit, sizeof(*arr));
    if (base.p == NULL || seek.p == NULL || it == NULL || arr == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (store_iter_seek(it, seek.p, seek.len); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        char id[JOURNAL_RUN_ID_LEN + 1];
        run_t r;

        if (klen < base.len || memcmp(k, base.p, base.len) != 0)
            break;
        if (klen != base.len + JOURNAL_RUN_ID_LEN)
            continue;
        memcpy(id, k + base.len, JOURNAL_RUN_ID_LEN);
        id[JOURNAL_RUN_ID_LEN] = '\0';
        if (*after && strcmp(id, after) <= 0)
            continue;
        if (by_session || by_active || by_status || by_app) {
            if ((rc = journal_indexed_run(NULL, j, snap, id, &r, st)) !=
                REEL_OK)
                goto out;
        } else if (journal_run_decode(v, vlen, &r) != 0) {
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "run %s: stored record is corrupt", id);
            goto out;
        }
        if (!offer(f, limit, arr, n, &scan, more, &r))
            break;
    }
    rc = store_iter_status(it, st);
out:
    if (rc != REEL_OK) {
        for (size_t i = 0; i < *n; i++)
            run_fini(&arr[i]);
        free(arr);
        arr = NULL;
        *n = 0;
    }
    *out = arr;
    store_iter_destroy(it);
    store_snapshot_release(j->store, snap);
    free(base.p);
    free(seek.p);
    return rc;
}

reel_code_t journal_list_recoverable(journal_t *j, const char *app,
                                     const char *start_after, uint32_t limit,
                                     const reel_page_t *page, run_t **out,
                                     size_t *n, int *more, reel_status_t *st) {
    run_filter_t f = {0};

    f.app = app;
    f.start_after = start_after;
    f.limit = limit;
    f.page = page;
    return journal_list_recoverable_kept(j, &f, out, n, more, st);
}

/* What makes a run recoverable, before the caller's own keep. */
typedef struct recover_keep {
    run_keep_fn keep;
    void *arg;
    int64_t now;
} recover_keep_t;

static int recoverable(void *arg, const run_t *r) {
    const recover_keep_t *k = arg;

    if (r->status == RUN_RUNNABLE ? r->not_before_ms > k->now
                                  : !(r->status == RUN_RUNNING &&
                                      r->lease_expires_at_ms <= k->now))
        return 0;
    return k->keep == NULL || k->keep(k->arg, r);
}

reel_code_t journal_list_recoverable_kept(journal_t *j, const run_filter_t *f,
                                          run_t **out, size_t *n, int *more,
                                          reel_status_t *st) {
    const char *app = f->app;
    const char *after = f->start_after ? f->start_after : "";
    uint32_t limit = f->limit;
    recover_keep_t k = {f->keep, f->keep_arg, reel_clock_now_ms()};
    run_filter_t g = {0};
    store_snapshot_t *snap = NULL;
    store_iter_t *it = NULL;
    run_t *arr = NULL;
    journal_key_t seek = {0}, base = {0};
    scan_t scan = scan_start(j, f);
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    *more = 0;
    if ((rc = check_limit(&limit, st)) != REEL_OK)
        return rc;
    if (app != NULL && *app &&
        (rc = journal_check_name("app", app, st)) != REEL_OK)
        return rc;
    if (*after &&
        (rc = journal_check_run_id("start_after", after, st)) != REEL_OK)
        return rc;
    g.app = app;
    g.app_prefix = f->app_prefix;
    g.app_exclude = f->app_exclude;
    g.keep = recoverable;
    g.keep_arg = &k;
    g.start_after = after;
    g.page = f->page;
    if ((arr = calloc(limit, sizeof(*arr))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    if (!(app && *app) && ((f->app_prefix && *f->app_prefix) ||
                           (f->app_exclude && *f->app_exclude))) {
        /* A tenant's apps (or the default tenant's, every app but the
         * tenants'): their active indexes merged, not every run. */
        int merged = 0;

        rc = list_merged(j, &g, 'A', g.app_prefix ? g.app_prefix : "",
                         g.app_exclude && *g.app_exclude ? g.app_exclude
                                                         : NULL,
                         limit, arr, n, &scan, more, &merged, st);
        if (rc != REEL_OK || merged)
            goto out;
    }
    active_keys(app, after, &base, &seek);
    if ((rc = store_snapshot_create(j->store, &snap, st)) != REEL_OK)
        goto out;
    if (base.p != NULL)
        it = store_iter_prefix(j->store, j->cf_runs, snap, base.p, base.len);
    if (seek.p == NULL || base.p == NULL || it == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (store_iter_seek(it, seek.p, seek.len); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen;
        const char *key = store_iter_key(it, &klen);
        char id[JOURNAL_RUN_ID_LEN + 1];
        run_t r;

        if (klen < base.len || memcmp(key, base.p, base.len) != 0)
            break;
        if (klen != base.len + JOURNAL_RUN_ID_LEN)
            continue;
        memcpy(id, key + base.len, JOURNAL_RUN_ID_LEN);
        id[JOURNAL_RUN_ID_LEN] = '\0';
        if (*after && strcmp(id, after) <= 0)
            continue;
        if ((rc = journal_indexed_run(NULL, j, snap, id, &r, st)) != REEL_OK)
            goto out;
        if (!offer(&g, limit, arr, n, &scan, more, &r))
            break;
    }
    rc = store_iter_status(it, st);
out:
    if (rc != REEL_OK) {
        for (size_t i = 0; i < *n; i++)
            run_fini(&arr[i]);
        free(arr);
        arr = NULL;
        *n = 0;
    }
    *out = arr;
    store_iter_destroy(it);
    store_snapshot_release(j->store, snap);
    free(seek.p);
    free(base.p);
    return rc;
}
