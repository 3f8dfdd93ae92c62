/*
 * bench/suite_tail.c: `tail` (one SubscribeEvents from revision 0 over a
 * stored WAL: events/s until caught up; then SubscribeEventBatches over
 * the same events) and `restart` (time from starting
 * reeld to serving health, with many keys and journal entries stored).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "reel/v1/wal.pb-c.h"
#include "bench/bench.h"

static int head_revision(ac_t *ac, uint64_t *head) {
    Reel__V1__GetHeadRequest r = REEL__V1__GET_HEAD_REQUEST__INIT;
    Reel__V1__GetHeadResponse *h;
    uint8_t buf[16], *resp = NULL;
    size_t len = reel__v1__get_head_request__pack(&r, buf), rlen = 0;
    int code = bench_call(ac, ac_method(ac, "/reel.v1.Wal/GetHead"), buf, len,
                          10000, &resp, &rlen);

    h = code == 0 ? reel__v1__get_head_response__unpack(NULL, rlen, resp)
                  : NULL;
    free(resp);
    if (h == NULL)
        return -1;
    *head = h->head_revision;
    reel__v1__get_head_response__free_unpacked(h, NULL);
    return 0;
}

/* A varint at p[*i]; -1 if it runs past len or 64 bits. */
static int get_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64 && *i < len; shift += 7) {
        uint8_t b = p[(*i)++];

        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

/*
 * Reads an Event's revision (field 1) and type (field 3) without decoding
 * the body: the subscriber's cost per event stays small next to the
 * server's.
 */
static int scan_event(const uint8_t *p, size_t len, uint64_t *rev,
                      uint64_t *type) {
    size_t i = 0;

    *rev = *type = 0;
    while (i < len) {
        uint64_t key, v;

        if (get_varint(p, len, &i, &key) != 0)
            return -1;
        switch (key & 7) {
        case 0:
            if (get_varint(p, len, &i, &v) != 0)
                return -1;
            if ((key >> 3) == 1)
                *rev = v;
            else if ((key >> 3) == 3)
                *type = v;
            break;
        case 1:
            i += 8;
            break;
        case 5:
            i += 4;
            break;
        case 2:
            if (get_varint(p, len, &i, &v) != 0 || v > len - i)
                return -1;
            i += (size_t)v;
            break;
        default:
            return -1;
        }
    }
    return 0;
}

typedef struct tail {
    int batch; /* messages are EventBatch: field 1 holds each Event */
    uint64_t until;
    atomic_ulong messages;
    atomic_ulong events, bad;
    atomic_int_fast64_t done_at;
    atomic_int ended;
} tail_t;

static void tail_event(tail_t *t, const uint8_t *msg, size_t len) {
    uint64_t rev, type;

    if (scan_event(msg, len, &rev, &type) != 0) {
        atomic_fetch_add(&t->bad, 1);
        return;
    }
    if (type == REEL__V1__EVENT__TYPE__PROGRESS)
        return;
    atomic_fetch_add(&t->events, 1);
    if (rev >= t->until && atomic_load(&t->done_at) == 0)
        atomic_store(&t->done_at, ac_now_ns());
}

/* An EventBatch: each element is field 1, length-delimited. */
static void tail_batch(tail_t *t, const uint8_t *p, size_t len) {
    size_t i = 0;
    uint64_t v;

    while (i < len) {
        if (p[i++] != 0x0a || get_varint(p, len, &i, &v) != 0 ||
            v > len - i) {
            atomic_fetch_add(&t->bad, 1);
            return;
        }
        tail_event(t, p + i, (size_t)v);
        i += (size_t)v;
    }
}

static void tail_msg(void *arg, const uint8_t *msg, size_t len) {
    tail_t *t = arg;

    atomic_fetch_add(&t->messages, 1);
    if (t->batch)
        tail_batch(t, msg, len);
    else
        tail_event(t, msg, len);
}

static void tail_end(void *arg, int code, const char *details) {
    tail_t *t = arg;

    if (code != 0 && code != 1 /* CANCELLED: ours */)
        fprintf(stderr, "reel-bench: tail: the stream ended: code %d: %s\n",
                code, details);
    atomic_store(&t->ended, 1);
}

/* One subscriber from revision 0 until it has the event at `head`. */
static int tail_once(const bench_opts_t *o, ac_t *ac, int batch, uint64_t head,
                     report_t *rep) {
    static const char *const methods[] = {"/reel.v1.Wal/SubscribeEvents",
                                          "/reel.v1.Wal/SubscribeEventBatches"};
    Reel__V1__SubscribeEventsRequest r =
        REEL__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    uint8_t buf[64];
    size_t len;
    tail_t t;
    ac_stream_t *s;
    int64_t t0;
    cJSON *row;
    double secs;

    memset(&t, 0, sizeof(t));
    t.batch = batch;
    t.until = head;
    len = reel__v1__subscribe_events_request__pack(&r, buf);
    t0 = ac_now_ns();
    s = ac_stream_open(ac, ac_method(ac, methods[batch]), buf, len, 1, 1,
                       tail_msg, tail_end, &t);
    while (atomic_load(&t.done_at) == 0 && !atomic_load(&t.ended)) {
        bench_progress(o, "  tail (%s): %lu of %llu events",
                       batch ? "batches" : "events", atomic_load(&t.events),
                       (unsigned long long)head);
        bench_sleep_ms(50);
    }
    bench_progress_done(o);
    secs = atomic_load(&t.done_at) > 0
               ? (double)(atomic_load(&t.done_at) - t0) / 1e9
               : (double)(ac_now_ns() - t0) / 1e9;
    ac_stream_cancel(s);
    while (!atomic_load(&t.ended))
        bench_sleep_ms(5);
    ac_stream_release(s);

    row = report_row(rep);
    cJSON_AddStringToObject(row, "rpc", methods[batch] + strlen("/reel.v1.Wal/"));
    cJSON_AddNumberToObject(row, "events", (double)atomic_load(&t.events));
    cJSON_AddNumberToObject(row, "messages", (double)atomic_load(&t.messages));
    cJSON_AddNumberToObject(row, "seconds", secs);
    cJSON_AddNumberToObject(row, "events_per_s",
                            (double)atomic_load(&t.events) / secs);
    if (atomic_load(&t.done_at) == 0 || atomic_load(&t.bad) > 0) {
        fprintf(stderr, "reel-bench: tail: %s did not reach revision %llu\n",
                methods[batch], (unsigned long long)head);
        return 1;
    }
    return 0;
}

int bench_tail(const bench_opts_t *o) {
    ac_t *ac = ac_create(o->addr, 1, 1);
    uint64_t head = 0;
    report_t rep;
    int rc = 0;

    if (o->target != TARGET_REEL) {
        fprintf(stderr, "reel-bench: tail: reel only\n");
        return 2;
    }
    if (ac == NULL || head_revision(ac, &head) != 0) {
        fprintf(stderr, "reel-bench: tail: GetHead failed\n");
        return 1;
    }
    if (head < (uint64_t)o->events) {
        bench_progress(o, "  storing %llu events",
                       (unsigned long long)((uint64_t)o->events - head));
        if (bench_fill(o, o->events - (long)head, 0) != 0 ||
            head_revision(ac, &head) != 0)
            return 1;
    }
    report_init(&rep, "tail", o);
    /* One event per message, then the same events batched. */
    rc |= tail_once(o, ac, 0, head, &rep);
    rc |= tail_once(o, ac, 1, head, &rep);
    ac_destroy(ac);
    return report_finish(&rep) || rc;
}

/* ---- restart ------------------------------------------------------------- */

static pid_t start_reeld(const bench_opts_t *o, const char *log) {
    pid_t pid = fork();

    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(o->reeld, o->reeld, "--data-dir", o->data_dir, "--listen",
              o->addr, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int stop_reeld(pid_t pid) {
    int status = 0;

    kill(pid, SIGTERM);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

int bench_restart(const bench_opts_t *o) {
    char log[4096];
    double ready[3], load_s;
    int64_t t0;
    pid_t pid;
    report_t rep;
    cJSON *row;
    int rc = 0;

    if (o->reeld == NULL || o->data_dir == NULL) {
        fprintf(stderr, "reel-bench: restart: needs --reeld and --data-dir\n");
        return 2;
    }
    snprintf(log, sizeof(log), "%s.log", o->data_dir);
    pid = start_reeld(o, log);
    if (pid < 0 || !bench_wait_serving(o->addr, 30000)) {
        fprintf(stderr, "reel-bench: restart: reeld did not start (see %s)\n",
                log);
        if (pid > 0)
            stop_reeld(pid);
        return 1;
    }
    t0 = ac_now_ns();
    rc = bench_fill(o, o->keys, o->entries);
    load_s = (double)(ac_now_ns() - t0) / 1e9;
    if (stop_reeld(pid) != 0)
        rc = 1;
    for (int i = 0; i < 3 && rc == 0; i++) {
        t0 = ac_now_ns();
        pid = start_reeld(o, log);
        if (pid < 0 || !bench_wait_serving(o->addr, 60000)) {
            fprintf(stderr, "reel-bench: restart: reeld did not come back\n");
            rc = 1;
        }
        ready[i] = (double)(ac_now_ns() - t0) / 1e6;
        if (pid > 0 && stop_reeld(pid) != 0)
            rc = 1;
    }
    report_init(&rep, "restart", o);
    row = report_row(&rep);
    cJSON_AddNumberToObject(row, "keys", (double)o->keys);
    cJSON_AddNumberToObject(row, "entries", (double)o->entries);
    cJSON_AddNumberToObject(row, "load_seconds", load_s);
    if (rc == 0) {
        qsort(ready, 3, sizeof(*ready), cmp_double);
        cJSON_AddNumberToObject(row, "ready_ms", ready[1]);
        cJSON_AddNumberToObject(row, "ready_ms_max", ready[2]);
    }
    return report_finish(&rep) || rc;
}
