/*
 * sink/nats.c: the NATS JetStream engine: each event published to
 * <subject_prefix>.<escaped subject> (subject.h) in the sink's stream,
 * asynchronously, at most max_pending unacknowledged.
 *
 * Exactly once and in order in the stream. Every message carries
 * Nats-Msg-Id <sink>-<revision> and the header Reel-Revision, and is
 * published expecting the stream's last sequence to be its predecessor's:
 * the first after a sync the stream's last (which purged, expired and
 * deleted messages keep), each next one more. A sequence, not the last
 * message's id: nats-server forgets ids older than the duplicate window
 * when it restarts. JetStream
 * stores messages in the order one
 * connection sends them, and refuses one whose predecessor is not the
 * stream's last, so the stream always holds the sink's events as a prefix
 * of their revision order, without a gap. When a publish fails (an error,
 * a timeout, a lost connection) the engine waits for every pending ack,
 * reads the stream's last message (its Reel-Revision is how far the
 * stream got), counts everything up to it done, and publishes again from
 * the next event, expecting that message. After a crash of reel-sink the
 * same happens at start: events the stream already holds are done
 * without being sent again, whatever the duplicate window, and a resend
 * inside the window is dropped by JetStream as a duplicate anyway. The
 * stream must therefore take messages from this sink only (config.c
 * refuses two sinks on one stream; a stream whose last message is not
 * this sink's stops the sink with an error naming it).
 *
 * An event is done when JetStream acknowledged it (stored, or a duplicate
 * of one stored): the window's frontier moves, the loop acknowledges it
 * in reel. JetStream's own durability is its business: Debian's
 * nats-server 2.9 syncs its store on a timer, so reel stays the record
 * and JetStream the fan-out (docs/sinks.md).
 *
 * Threads: the engine thread connects and publishes; libnats calls
 * on_ack on its own thread, which marks events done under runner.mu.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nats/nats.h>

#include "base/clock.h"
#include "base/log.h"
#include "sink/conf.h"
#include "sink/event.h"
#include "sink/retry.h"
#include "sink/sink.h"
#include "sink/subject.h"

#define ACK_WAIT_MS 10000
#define STALL_WAIT_MS 500
#define BACKOFF_MAX_MS 5000

typedef struct nats_engine {
    sink_runner_t *r;
    const sink_config_t *cfg;
    natsConnection *nc;
    jsCtx *js;
    pthread_mutex_t mu; /* wake */
    pthread_cond_t cv;
    int woken;
    atomic_int failed;  /* a publish failed: start over */
    char fail_msg[256]; /* under runner.mu */
    uint64_t stream_last; /* the stream's last revision when last synced */
    uint64_t stream_seq;  /* the last sequence the next publish expects */
    uint64_t rng;
    atomic_int closing; /* our own close: no "connection lost" said */
    int closed;         /* under mu: libnats's last callback ran */
} nats_engine_t;

static int stopping(nats_engine_t *e) {
    int s;

    pthread_mutex_lock(&e->r->mu);
    s = e->r->stopping;
    pthread_mutex_unlock(&e->r->mu);
    return s;
}

/* Waits ms or until woken. */
static void nap(nats_engine_t *e, int64_t ms) {
    struct timespec ts;

    ts = reel_clock_mono_after(ms);
    pthread_mutex_lock(&e->mu);
    while (!e->woken &&
           pthread_cond_timedwait(&e->cv, &e->mu, &ts) == 0)
        ;
    e->woken = 0;
    pthread_mutex_unlock(&e->mu);
}

/* A backoff: ms whole, whatever events come meanwhile (each wakes a nap);
 * only a stop ends it early. */
static void back_off(nats_engine_t *e, int64_t ms) {
    int64_t until = reel_clock_mono_ns() + ms * 1000000;
    int64_t left;

    while (!stopping(e) &&
           (left = (until - reel_clock_mono_ns()) / 1000000) > 0)
        nap(e, left);
}

/* A header value: the subject with control bytes and '%' as %XX, into
 * out, which holds 3 * strlen(s) + 1 bytes: never cut. */
static void header_escape(const char *s, char *out) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if (c < 0x20 || c == 0x7f || c == '%') {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

/* The revision a message carries in Reel-Revision, or 0. */
static uint64_t msg_revision(natsMsg *m) {
    const char *v = NULL;

    if (natsMsgHeader_Get(m, "Reel-Revision", &v) != NATS_OK || v == NULL)
        return 0;
    return strtoull(v, NULL, 10);
}

/* libnats' thread: JetStream answered a publish. One lock round per ack:
 * the event is done and the frontier handed on together. */
static void on_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae,
                   void *arg) {
    nats_engine_t *e = arg;
    sink_runner_t *r = e->r;
    uint64_t rev = msg_revision(m), pos;
    sink_item_t *it;
    int failed = 0, elsewhere;

    (void)js;
    /* Stored, but in another stream: the sink's stream does not take the
     * subject (another stream's subjects do). Not delivered. */
    elsewhere = pa != NULL && pae == NULL &&
                (pa->Stream == NULL || strcmp(pa->Stream, e->cfg->stream) != 0);
    pthread_mutex_lock(&r->mu);
    r->in_flight = r->in_flight > 0 ? r->in_flight - 1 : 0;
    pos = sink_window_find_after(&r->win, rev - 1);
    it = pos < r->win.tail ? sink_window_at(&r->win, pos) : NULL;
    if (pa != NULL && pae == NULL && !elsewhere) {
        r->failing = 0;
        if (it != NULL && it->revision == rev &&
            it->state == SINK_ITEM_TAKEN) {
            sink_window_done(&r->win, pos);
            r->delivered++;
            sink_runner_report_locked(r);
        }
    } else {
        if (!atomic_exchange(&e->failed, 1)) {
            if (elsewhere)
                snprintf(e->fail_msg, sizeof(e->fail_msg),
                         "publishing revision %" PRIu64 ": JetStream stored "
                         "it in stream %s, not in the sink's stream %s: "
                         "stream %s must take the subjects %s.>, and no "
                         "other stream",
                         rev, pa->Stream ? pa->Stream : "(none)",
                         e->cfg->stream, e->cfg->stream,
                         e->cfg->subject_prefix);
            else if (pae != NULL && pae->Err == NATS_NO_RESPONDERS)
                snprintf(e->fail_msg, sizeof(e->fail_msg),
                         "publishing revision %" PRIu64 ": no JetStream "
                         "stream takes its subject: stream %s must take "
                         "the subjects %s.>",
                         rev, e->cfg->stream, e->cfg->subject_prefix);
            else {
                const char *text =
                    natsStatus_GetText(pae != NULL ? pae->Err : NATS_ERR);
                const char *more = pae != NULL && pae->ErrText != NULL &&
                                           strcmp(pae->ErrText, text) != 0
                                       ? pae->ErrText
                                       : NULL;

                snprintf(e->fail_msg, sizeof(e->fail_msg),
                         "publishing revision %" PRIu64 ": %s%s%s", rev, text,
                         more ? ": " : "", more ? more : "");
            }
            failed = 1;
        }
        r->failing = 1;
        sink_runner_failed_locked(r, SINK_FAIL_NATS);
    }
    pthread_mutex_unlock(&r->mu);
    natsMsg_Destroy(m);
    /* Only a failure needs the engine: it starts over. */
    if (failed) {
        pthread_mutex_lock(&e->mu);
        e->woken = 1;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
    }
}

/*
 * libnats calls the connection's callbacks on a thread of its own, in
 * order, the closed one last, and may still be inside one after Close
 * returns: the engine (their closure) must outlive them, so disconnect
 * waits for that last one (at most 5 s).
 */
static void disconnect(nats_engine_t *e) {
    jsCtx_Destroy(e->js);
    e->js = NULL;
    if (e->nc != NULL) {
        struct timespec ts = reel_clock_mono_after(5000);

        atomic_store(&e->closing, 1);
        natsConnection_Close(e->nc);
        pthread_mutex_lock(&e->mu);
        while (!e->closed &&
               pthread_cond_timedwait(&e->cv, &e->mu, &ts) == 0)
            ;
        pthread_mutex_unlock(&e->mu);
        natsConnection_Destroy(e->nc);
    }
    e->nc = NULL;
}

/* libnats's threads: a lost connection and its return, said once each
 * (libnats reconnects by itself; publishes wait for it). The server's
 * address without its user, password or token. */
static void log_connection(natsConnection *nc, nats_engine_t *e,
                           const char *what) {
    char url[512] = "", *where;

    if (natsConnection_GetConnectedUrl(nc, url, sizeof(url)) != NATS_OK ||
        url[0] == '\0')
        snprintf(url, sizeof(url), "%s", e->cfg->servers[0]);
    where = sink_conf_url_public(url);
    if (strcmp(what, "lost") == 0)
        REEL_WARN("sink", "sink %s: connection to NATS (%s) lost; "
                  "reconnecting", e->cfg->name, where ? where : "?");
    else
        REEL_INFO("sink", "sink %s: reconnected to NATS (%s)", e->cfg->name,
                  where ? where : "?");
    free(where);
}

static void on_disconnected(natsConnection *nc, void *closure) {
    nats_engine_t *e = closure;

    if (!atomic_load(&e->closing))
        log_connection(nc, e, "lost");
}

static void on_reconnected(natsConnection *nc, void *closure) {
    log_connection(nc, closure, "back");
}

static void on_closed(natsConnection *nc, void *closure) {
    nats_engine_t *e = closure;

    (void)nc;
    pthread_mutex_lock(&e->mu);
    e->closed = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* Creates the sink's stream (it was missing: never made, or deleted since),
 * taking <subject_prefix>.>. */
static natsStatus add_stream(nats_engine_t *e, jsErrCode *jerr) {
    const sink_config_t *cfg = e->cfg;
    jsStreamInfo *si = NULL;
    jsStreamConfig sc;
    char subj[300];
    const char *subjects[1] = {subj};
    natsStatus s;

    snprintf(subj, sizeof(subj), "%s.>", cfg->subject_prefix);
    jsStreamConfig_Init(&sc);
    sc.Name = cfg->stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Duplicates = cfg->duplicate_window_ms * 1000000;
    if ((s = js_AddStream(&si, e->js, &sc, NULL, jerr)) == NATS_OK)
        REEL_INFO("sink", "sink %s: created JetStream stream %s (subjects "
                  "%s)",
                  cfg->name, cfg->stream, subj);
    jsStreamInfo_Destroy(si);
    return s;
}

/* Connects, and creates the stream if missing. 0, or -1 with why said. */
static int connect_js(nats_engine_t *e) {
    const sink_config_t *cfg = e->cfg;
    natsOptions *opts = NULL;
    jsOptions jo;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s;

    atomic_store(&e->closing, 0);
    pthread_mutex_lock(&e->mu);
    e->closed = 0;
    pthread_mutex_unlock(&e->mu);
    if ((s = natsOptions_Create(&opts)) != NATS_OK ||
        (s = natsOptions_SetServers(opts, (const char **)cfg->servers,
                                    (int)cfg->n_servers)) != NATS_OK ||
        (s = natsOptions_SetMaxReconnect(opts, -1)) != NATS_OK ||
        (s = natsOptions_SetReconnectWait(opts, 500)) != NATS_OK ||
        (s = natsOptions_SetTimeout(opts, 5000)) != NATS_OK ||
        (s = natsOptions_SetDisconnectedCB(opts, on_disconnected, e)) !=
            NATS_OK ||
        (s = natsOptions_SetReconnectedCB(opts, on_reconnected, e)) !=
            NATS_OK ||
        (s = natsOptions_SetClosedCB(opts, on_closed, e)) != NATS_OK ||
        (s = natsConnection_Connect(&e->nc, opts)) != NATS_OK) {
        /* Without the URL's user, password or token: only where. */
        char *where = sink_conf_url_public(cfg->servers[0]);

        natsOptions_Destroy(opts);
        sink_runner_error(e->r, "connecting to NATS: %s",
                          natsStatus_GetText(s));
        REEL_WARN("sink", "sink %s: connecting to NATS (%s%s): %s",
                  cfg->name, where ? where : "?",
                  cfg->n_servers > 1 ? ", ..." : "", natsStatus_GetText(s));
        free(where);
        e->nc = NULL;
        return -1;
    }
    natsOptions_Destroy(opts);
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = cfg->max_pending;
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = e;
    jo.PublishAsync.StallWait = STALL_WAIT_MS;
    if ((s = natsConnection_JetStream(&e->js, e->nc, &jo)) != NATS_OK)
        goto fail;
    s = js_GetStreamInfo(&si, e->js, cfg->stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        jerr = 0;
        if ((s = add_stream(e, &jerr)) != NATS_OK)
            goto fail;
    } else if (s != NATS_OK) {
        goto fail;
    }
    jsStreamInfo_Destroy(si);
    return 0;
fail:
    sink_runner_error(e->r, "NATS stream %s: %s (%d)", cfg->stream,
                      nats_GetLastError(NULL) ? nats_GetLastError(NULL)
                                              : natsStatus_GetText(s),
                      (int)jerr);
    REEL_WARN("sink", "sink %s: JetStream stream %s: %s (error code %d)",
              cfg->name, cfg->stream,
              nats_GetLastError(NULL) ? nats_GetLastError(NULL)
                                      : natsStatus_GetText(s),
              (int)jerr);
    jsStreamInfo_Destroy(si);
    disconnect(e);
    return -1;
}

/* How many deleted messages at a stream's end sync_stream looks past for
 * the last message the stream holds. */
#define SYNC_LOOK_BACK 1000

/*
 * Where the stream stands: its last message's revision (0 when empty) and
 * its last sequence, which the next publish expects. The sequence, not the
 * last message's id: nats-server forgets ids older than the duplicate
 * window when it restarts, and a deleted last message keeps its sequence
 * as the stream's last. A stream missing (deleted while the sink ran) is
 * made again. 0, or -1 (said).
 */
static int sync_stream(nats_engine_t *e) {
    const sink_config_t *cfg = e->cfg;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsMsg *m = NULL;
    const char *id = NULL;
    char want[96];
    uint64_t last, first, msgs, seq, head;
    natsStatus s;
    size_t nlen = strlen(cfg->name);

    s = js_GetStreamInfo(&si, e->js, cfg->stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        jerr = 0;
        if ((s = add_stream(e, &jerr)) == NATS_OK)
            s = js_GetStreamInfo(&si, e->js, cfg->stream, NULL, &jerr);
    }
    if (s != NATS_OK) {
        sink_runner_error(e->r, "reading NATS stream %s: %s", cfg->stream,
                          natsStatus_GetText(s));
        REEL_WARN("sink", "sink %s: reading JetStream stream %s: %s",
                  cfg->name, cfg->stream, natsStatus_GetText(s));
        jsStreamInfo_Destroy(si);
        return -1;
    }
    last = si->State.LastSeq;
    first = si->State.FirstSeq;
    msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    e->stream_last = 0;
    e->stream_seq = last;
    /* Empty: new, or every message expired (max_age) or purged. The sink
     * publishes from its cursor: what reel has not had acknowledged. Its
     * first publish expects the stream's last sequence to be this one, so
     * a message another publisher got in since (a second sink started at
     * the same moment) fails it, and the next sync says whose it is. */
    if (last == 0 || msgs == 0) {
        REEL_INFO("sink", "sink %s: stream %s is empty (last sequence %"
                  PRIu64 "); publishing from the consumer's cursor",
                  cfg->name, cfg->stream, last);
        return 0;
    }
    /* The last message it holds: the last sequence's, or one before it
     * when messages at the end were deleted. */
    for (seq = last;; seq--) {
        jerr = 0;
        s = js_GetMsg(&m, e->js, cfg->stream, seq, NULL, &jerr);
        if (s == NATS_OK)
            break;
        if ((s != NATS_NOT_FOUND && jerr != JSNoMessageFoundErr) ||
            seq <= first || last - seq >= SYNC_LOOK_BACK) {
            sink_runner_error(e->r, "reading NATS stream %s's last message: "
                              "%s",
                              cfg->stream, natsStatus_GetText(s));
            REEL_WARN("sink", "sink %s: reading the last message of "
                      "JetStream stream %s (sequence %" PRIu64 "%s): %s",
                      cfg->name, cfg->stream, seq,
                      seq < last ? ", after deleted ones" : "",
                      natsStatus_GetText(s));
            return -1;
        }
    }
    /* This sink's own: its id is exactly "<sink>-<revision>" (another
     * sink's name may start with "<sink>-"). */
    snprintf(want, sizeof(want), "%s-%" PRIu64, cfg->name, msg_revision(m));
    if (natsMsgHeader_Get(m, "Nats-Msg-Id", &id) != NATS_OK || id == NULL ||
        strncmp(id, cfg->name, nlen) != 0 || id[nlen] != '-' ||
        msg_revision(m) == 0 || strcmp(id, want) != 0) {
        sink_runner_error(e->r, "NATS stream %s's last message is not this "
                          "sink's: a stream takes one sink's messages",
                          cfg->stream);
        REEL_ERROR("sink", "sink %s: the last message of JetStream stream %s "
                   "(sequence %" PRIu64 ") was not published by this sink; "
                   "a stream takes one sink's messages only",
                   cfg->name, cfg->stream, seq);
        natsMsg_Destroy(m);
        return -1;
    }
    e->stream_last = msg_revision(m);
    natsMsg_Destroy(m);
    /* Events past reel's head are another reel's (or reel's data was
     * restored from an older copy): counting reel's own events up to that
     * revision as delivered would skip them in silence. */
    if (sink_runner_head(e->r, &head) != 0)
        return -1;
    if (e->stream_last > head) {
        sink_runner_error(e->r, "NATS stream %s holds revision %" PRIu64
                          ", past reel's head %" PRIu64,
                          cfg->stream, e->stream_last, head);
        REEL_ERROR("sink", "sink %s: JetStream stream %s holds this sink's "
                   "events up to revision %" PRIu64 ", past reel's head "
                   "%" PRIu64 ": they are another reel's, or reel's data "
                   "was restored from an older copy; give the sink a new "
                   "stream (or delete this one) so that no event is "
                   "skipped",
                   cfg->name, cfg->stream, e->stream_last, head);
        return -1;
    }
    REEL_INFO("sink", "sink %s: stream %s holds this sink's events up to "
              "revision %" PRIu64 " (sequence %" PRIu64 "); publishing "
              "after it",
              cfg->name, cfg->stream, e->stream_last, seq);
    return 0;
}

/*
 * Publishes the next queued event: 1 if one went, 0 if none is queued, -1
 * on a failure to start over from.
 */
static int publish_next(nats_engine_t *e) {
    sink_runner_t *r = e->r;
    const sink_config_t *cfg = e->cfg;
    sink_item_t *it = NULL;
    uint64_t pos;
    natsMsg *m = NULL;
    jsPubOptions po;
    char id[96], rev[24], seq[24], *hdr = NULL, *subject = NULL, *data = NULL;
    const char *body;
    size_t len;
    natsStatus s;
    int found = 0;

    pthread_mutex_lock(&r->mu);
    for (;;) {
        pos = r->win.next;
        if (pos == r->win.tail)
            break;
        it = sink_window_at(&r->win, pos);
        if (it->state == SINK_ITEM_DONE) {
            r->win.next++;
            continue;
        }
        /* Already in the stream (found there at the last sync). */
        if (it->revision <= e->stream_last) {
            sink_window_done(&r->win, pos);
            r->win.next++;
            r->delivered++;
            found = 1;
            continue;
        }
        break;
    }
    /* Events found in the stream are done like acknowledged ones: hand the
     * frontier on now, or with nothing new to publish (the stream already
     * holds everything) no ack would ever move the cursor in reel. */
    if (found)
        sink_runner_report_locked(r);
    if (pos == r->win.tail) {
        if (r->in_flight == 0) /* caught up: nothing is failing */
            r->failing = 0;
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    pthread_mutex_unlock(&r->mu);
    /* The item is the engine's until it is marked taken: read unlocked. */
    if ((subject = sink_nats_subject(cfg->subject_prefix, it->subject,
                                     strlen(it->subject))) == NULL)
        goto oom;
    if (cfg->format_protobuf) {
        body = (const char *)it->bytes;
        len = it->len;
    } else {
        if ((data = sink_event_data(it, &len, NULL)) == NULL)
            goto oom;
        body = data;
    }
    snprintf(id, sizeof(id), "%s-%" PRIu64, cfg->name, it->revision);
    snprintf(rev, sizeof(rev), "%" PRIu64, it->revision);
    if ((hdr = malloc(3 * strlen(it->subject) + 1)) == NULL)
        goto oom;
    header_escape(it->subject, hdr);
    if ((s = natsMsg_Create(&m, subject, NULL, body, (int)len)) != NATS_OK ||
        (s = natsMsgHeader_Set(m, "Reel-Revision", rev)) != NATS_OK ||
        (s = natsMsgHeader_Set(m, "Reel-Subject", hdr)) != NATS_OK ||
        (s = natsMsgHeader_Set(m, "Reel-Type",
                               sink_event_type_name(it->type))) != NATS_OK ||
        (s = natsMsgHeader_Set(m, "Content-Type",
                               cfg->format_protobuf
                                   ? "application/x-protobuf"
                                   : "application/json")) != NATS_OK)
        goto fail;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    po.MaxWait = ACK_WAIT_MS;
    /* Set by hand: libnats leaves an ExpectLastSeq of 0 out, and a new
     * stream's is 0. */
    snprintf(seq, sizeof(seq), "%" PRIu64, e->stream_seq);
    if ((s = natsMsgHeader_Set(m, "Nats-Expected-Last-Sequence", seq)) !=
        NATS_OK)
        goto fail;
    pthread_mutex_lock(&r->mu);
    it->state = SINK_ITEM_TAKEN;
    r->win.next = pos + 1;
    r->in_flight++;
    pthread_mutex_unlock(&r->mu);
    /* A full pending list stalls the call, then NATS_TIMEOUT: the same
     * event goes again once acks made room. */
    while ((s = js_PublishMsgAsync(e->js, &m, &po)) == NATS_TIMEOUT &&
           !stopping(e) && !atomic_load(&e->failed))
        ;
    if (s != NATS_OK) {
        pthread_mutex_lock(&r->mu);
        it->state = SINK_ITEM_QUEUED;
        r->win.next = pos;
        r->in_flight--;
        pthread_mutex_unlock(&r->mu);
        if (s == NATS_TIMEOUT)
            goto out; /* stopping, or another publish failed */
        goto fail;
    }
    e->stream_seq++; /* the next expects this one stored */
out:
    natsMsg_Destroy(m);
    free(hdr);
    free(subject);
    free(data);
    return s == NATS_OK ? 1 : -1;
fail:
    pthread_mutex_lock(&r->mu);
    if (!atomic_exchange(&e->failed, 1))
        snprintf(e->fail_msg, sizeof(e->fail_msg),
                 "publishing revision %" PRIu64 ": %s", it->revision,
                 natsStatus_GetText(s));
    r->failing = 1;
    sink_runner_failed_locked(r, SINK_FAIL_NATS);
    pthread_mutex_unlock(&r->mu);
    natsMsg_Destroy(m);
    free(hdr);
    free(subject);
    free(data);
    return -1;
oom:
    free(hdr);
    free(subject);
    free(data);
    sink_runner_error(r, "out of memory building a message");
    return -1;
}

/* Waits for every pending ack (or until the grace period ends when
 * stopping). */
static void drain(nats_engine_t *e) {
    jsPubOptions po;
    int64_t wait = ACK_WAIT_MS + 1000;

    if (e->js == NULL)
        return;
    if (stopping(e)) {
        pthread_mutex_lock(&e->r->mu);
        wait = e->r->stop_deadline_ms - sink_now_ms();
        pthread_mutex_unlock(&e->r->mu);
        if (wait < 1)
            wait = 1;
    }
    jsPubOptions_Init(&po);
    po.MaxWait = wait;
    (void)js_PublishAsyncComplete(e->js, &po);
}

static void run(void *arg) {
    nats_engine_t *e = arg;
    sink_runner_t *r = e->r;
    unsigned failures = 0;

    while (!stopping(e)) {
        char why[256];
        uint64_t delivered;

        if (failures > 0) {
            int64_t ms = 100LL << (failures < 6 ? failures : 6);

            back_off(e, ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS);
            if (stopping(e))
                break;
        }
        if ((e->js == NULL && connect_js(e) != 0) || sync_stream(e) != 0) {
            /* Said in the log and the last error; counted, so status and
             * reel_sink_failures_total show a sink that cannot reach
             * its stream. */
            pthread_mutex_lock(&r->mu);
            r->failing = 1;
            sink_runner_failed_locked(r, SINK_FAIL_NATS);
            pthread_mutex_unlock(&r->mu);
            failures++;
            continue;
        }
        atomic_store(&e->failed, 0);
        pthread_mutex_lock(&r->mu);
        delivered = r->delivered;
        pthread_mutex_unlock(&r->mu);
        while (!stopping(e) && !atomic_load(&e->failed)) {
            if (publish_next(e) == 0)
                nap(e, 1000);
        }
        if (stopping(e))
            break;
        /* Start over from what the stream holds. */
        drain(e);
        pthread_mutex_lock(&r->mu);
        snprintf(why, sizeof(why), "%s", e->fail_msg);
        sink_window_requeue(&r->win);
        r->in_flight = 0;
        /* The backoff grows while nothing gets through: a publish that
         * starts but is never acknowledged is no progress. */
        if (r->delivered > delivered)
            failures = 0;
        pthread_mutex_unlock(&r->mu);
        sink_runner_error(r, "%s", why);
        REEL_WARN("sink", "sink %s: %s; publishing again from what stream "
                  "%s holds",
                  e->cfg->name, why, e->cfg->stream);
        failures++;
    }
    drain(e);
}

static void wake(void *arg) {
    nats_engine_t *e = arg;

    pthread_mutex_lock(&e->mu);
    e->woken = 1;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static reel_code_t create(sink_runner_t *r, void **out, reel_status_t *st) {
    nats_engine_t *e = calloc(1, sizeof(*e));

    *out = NULL;
    if (e == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "sink %s: out of memory", r->cfg->name);
    e->r = r;
    e->cfg = r->cfg;
    e->rng = sink_rng_seed();
    pthread_mutex_init(&e->mu, NULL);
    reel_cond_init_mono(&e->cv);
    *out = e;
    return REEL_OK;
}

static void destroy(void *arg) {
    nats_engine_t *e = arg;

    if (e == NULL)
        return;
    disconnect(e);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

const sink_engine_ops_t sink_nats_ops = {"nats", create, run, wake, destroy};
