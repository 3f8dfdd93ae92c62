/*
 * client/client.h: reel's C client library, on gRPC's C core.
 *
 * A reel_client_t is one channel to one reeld: an HTTP/2 connection that
 * gRPC opens when the first call needs it and opens again, with the backoff
 * of the options below, after it breaks; a call made while it is broken
 * first has it try again at once, and waits up to 250 ms (within its
 * deadline) for it, so a call soon after reeld is back goes through. On
 * it:
 *
 *   - unary calls with a deadline (reel_client_unary, reel_client_unary_retry);
 *   - server streams, a callback per message (reel_client_stream,
 *     reel_client_stream_idle);
 *   - the durable WAL consumer loop (reel_consumer_*): subscribe as a named
 *     consumer, hand batches of events to a callback, acknowledge what it
 *     has finished, and resume after a disconnect or a reeld restart.
 *
 * Requests and answers are serialized protobuf (pack and unpack them with
 * the reel.v1 protobuf-c code); a method is its full path,
 * "/reel.v1.KV/GetValue".
 *
 * Errors: every call ends with a gRPC status code (grpc_status_code's
 * values: 0 OK, 3 INVALID_ARGUMENT, 14 UNAVAILABLE, ...; reel_grpc_code_name
 * names them) and the server's message, in a reel_reply_t. What fails on
 * this side uses the same codes: INVALID_ARGUMENT naming the option or
 * argument and its limit (a NULL where a pointer is needed too: "client:
 * NULL"; a reply of NULL gets the code alone), RESOURCE_EXHAUSTED when out
 * of memory, INTERNAL for a malformed answer. A message past a size limit,
 * on any kind of call, says whose limit: a request over reeld's
 * --max-message-bytes is INVALID_ARGUMENT naming it, an answer or a
 * stream's message over this client's max_receive_bytes RESOURCE_EXHAUSTED
 * naming that.
 *
 * Retries. gRPC reconnects the channel by itself; the library decides which
 * calls to send again. A call that failed UNAVAILABLE may or may not have
 * reached the server, so sending it again is safe only when doing it twice
 * does what doing it once does. reel_client_unary never sends a call twice
 * that may have been applied: use it for writes (it sends again only a
 * call reeld refused for its full write queue, which wrote nothing).
 * reel_client_unary_retry sends it again after
 * UNAVAILABLE, with backoff, within its deadline and at most max_attempts
 * times: use it for reads and for writes that are idempotent by
 * construction (AckEvents: acks never move back; Append and SendSignal
 * with an idempotency key or signal id, whose retry answers duplicate=true).
 * Streams are never sent twice; the consumer loop subscribes again, which is
 * safe because the server keeps the consumer's cursor.
 *
 * Threading: a reel_client_t is thread-safe. Any number of threads may call
 * on one client at once; the calls share its connection, each waits on its
 * own completion queue. Callbacks run on the thread that made the call. A
 * reel_consumer_t runs on the one thread that calls reel_consumer_run;
 * reel_consumer_stop and reel_consumer_stats may come from any thread. To
 * end the calls open on a client from another thread (a stream blocked
 * waiting for its next message, an upload, a consumer loop), shut the
 * client down (reel_client_shutdown) or destroy it.
 *
 * Lifetimes: what a callback receives is valid during the callback. A
 * reel_reply_t's strings and body are the caller's (reel_reply_fini).
 * reel_client_destroy ends the calls still open on the client, consumer
 * loops included, and waits for them to return before it frees the
 * client; nothing may start on it once destroy has returned (a consumer
 * needs its client only while it runs).
 *
 * gRPC: a client holds gRPC initialized (grpc_init, grpc_shutdown at
 * destroy) and changes nothing else of the process's: its log function
 * and Abseil's settings are the program's (reel's own programs call
 * reel_grpc_init, api/grpc_init.h, for theirs).
 */
#ifndef REEL_CLIENT_CLIENT_H
#define REEL_CLIENT_CLIENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct reel_client reel_client_t;

/* What a finished call returned. */
typedef struct reel_reply {
    int code;        /* grpc_status_code; 0 = OK */
    char *details;   /* the status message, malloc'd (may be ""; NULL only
                        when out of memory) */
    uint8_t *body;   /* unary response bytes, malloc'd, or NULL */
    size_t len;
} reel_reply_t;

/*
 * Options of a client. Zero is each field's default, so
 * `reel_client_opts_t o = REEL_CLIENT_OPTS_INIT;` then a field or two is
 * the usual way to fill one.
 */
typedef struct reel_client_opts {
    /* How long one connection attempt may take (gRPC's minimum connect
     * timeout); at least 100. 0 = 20 000. */
    int64_t connect_timeout_ms;
    /* The deadline of a unary call given timeout_ms 0. 0 = 10 000. */
    int64_t deadline_ms;
    /*
     * Backoff between attempts, of both unary_retry and the consumer loop,
     * and between gRPC's connection attempts: the k-th wait (k = 0, 1, ...)
     * is initial * multiplier^k capped at max, then spread by up to
     * +-jitter of itself and capped at max again.
     * 0 = 100 ms, 10 000 ms, 2.0 and 0.2.
     */
    int64_t backoff_initial_ms; /* at least 1 */
    int64_t backoff_max_ms;     /* at least backoff_initial_ms */
    double backoff_multiplier;  /* 1 to 10 */
    double backoff_jitter;      /* in [0, 1) */
    /* Attempts of a unary call, the first included (reel_client_unary's
     * only after a full write queue); 1 to 100. 0 = 5. */
    int max_attempts;
    /*
     * Keepalive pings while calls are open, to notice a server that is gone
     * without closing the connection. 0 = none. Below 300 000 only for a
     * connection whose calls receive a message more often than the pings
     * go, such as a WAL subscription (a PROGRESS every second while idle):
     * reeld, like any gRPC server by default, closes a quiet connection
     * that pings more often (its calls end UNAVAILABLE, "Too many pings").
     */
    int64_t keepalive_time_ms;
    int64_t keepalive_timeout_ms; /* 0 = 20 000 */
    /* The largest message the client accepts: match reeld's
     * --max-response-bytes. At most 2^31-1. 0 = 4 MiB (gRPC's default). */
    size_t max_receive_bytes;
    /*
     * How much of a stream's messages gRPC may take in ahead of the
     * reader, per stream (HTTP/2's initial window). 0 = gRPC's own,
     * which grows with the connection's measured bandwidth-delay product
     * (to tens of MiB on a fast link), and a stream nobody reads is
     * filled to it whenever another call polls the connection. Non-zero
     * fixes it at this many bytes (at least 65 535, at most 2^31-1;
     * bandwidth-delay probing off): for a process that leaves streams
     * unread while it waits, such as reel-sink.
     */
    size_t stream_window_bytes;
    /*
     * TLS (docs/security.md): tls non-zero, or any file set, makes the
     * channel TLS. tls_ca_file is the PEM of the CA that signed reeld's
     * certificate (NULL: the system's roots); tls_cert_file and
     * tls_key_file, together, are the client's certificate for mTLS. The
     * files are read by reel_client_create.
     */
    int tls;
    const char *tls_ca_file, *tls_cert_file, *tls_key_file;
    /* A bearer token sent with every call (reeld --auth token), or NULL.
     * Copied; printable ASCII without spaces, at most 4096 bytes. */
    const char *token;
    /* For what a later version adds: must be zero. */
    void *reserved[4];
} reel_client_opts_t;

#define REEL_CLIENT_OPTS_INIT {0}

/*
 * The connection's security from the environment, as reelctl, reel-sink
 * and reel-reactor read it: REEL_TLS sets tls (1, true, yes or on; 0,
 * false, no or off; any case); REEL_TLS_CA, REEL_TLS_CERT and
 * REEL_TLS_KEY the files; REEL_TOKEN the token (a token never goes on a
 * command line, where ps shows it). An unset or empty variable leaves its
 * field as it was, so defaults come first and flags after. The strings are
 * the environment's: valid until it changes. CLIENT_OK, or
 * CLIENT_INVALID_ARGUMENT (err set, o unchanged) for a REEL_TLS of any
 * other value, which is never guessed to mean off.
 */
int reel_client_opts_from_env(reel_client_opts_t *o, reel_reply_t *err);

/*
 * A message of reel_client_create's or reel_client_opts_from_env's, which
 * name an option by its field ("tls_key_file: ..."), with the names the
 * program's user knows it by: its flag and variable ("--tls-key
 * (REEL_TLS_KEY): ...") when flags is non-zero, else the variable alone
 * ("REEL_TLS_KEY: ...", for a program that reads only the environment).
 * Into buf[cap]; returns buf, or details itself when it names no such
 * option.
 */
const char *reel_client_option_names(const char *details, int flags,
                                     char *buf, size_t cap);

/*
 * What a call's UNAVAILABLE most likely means when gRPC's message does not
 * say it (a TLS mistake reads as a closed socket), or an UNAUTHENTICATED
 * when the client sent no token (which option gives one): a sentence for the
 * user, naming the options by flag ("--tls-ca") when flags is non-zero,
 * else by variable ("REEL_TLS_CA"). Into buf[cap]; NULL when there is
 * nothing to add.
 */
const char *reel_client_hint(const reel_client_t *c, int code,
                             const char *details, int flags, char *buf,
                             size_t cap);

/* The same for a log line of a program that reads only the environment:
 * " (<hint>)" into buf[cap], or "" when there is none. Returns buf. */
const char *reel_client_hint_note(const reel_client_t *c, int code,
                                  const char *details, char *buf, size_t cap);

/* timeout_ms of a unary call: the client's deadline_ms, or none at all. */
#define REEL_TIMEOUT_DEFAULT 0
#define REEL_TIMEOUT_NONE (-1)

/*
 * A client of addr ("127.0.0.1:7878", "[::1]:7878", "dns:host:7878": a
 * gRPC target); opts NULL takes every default. It connects when the first
 * call needs it, so an address nobody listens on is not an error here:
 * calls answer UNAVAILABLE. Returns 0 and sets *out; or INVALID_ARGUMENT
 * for out NULL, an empty address, a port alone ("7878") or a URL
 * ("http://host:7878"), which gRPC would take for a host's name (refused
 * as reelctl refuses them, saying what to write), or an option outside its
 * limits (err says which and the limit); RESOURCE_EXHAUSTED when out of
 * memory. err may be NULL; else it is filled on failure (release it with
 * reel_reply_fini) and zeroed on success.
 */
int reel_client_create(const char *addr, const reel_client_opts_t *opts,
                       reel_client_t **out, reel_reply_t *err);

/*
 * Ends every call open on c, from any thread, and refuses the calls that
 * come after: streams, uploads, unary calls (in a backoff wait too) and
 * consumer loops return CANCELLED, their message saying the client was
 * shut down (a consumer loop first acknowledges what was finished). Does
 * not wait for them; c stays valid until reel_client_destroy. More than
 * once is fine; NULL too.
 */
void reel_client_shutdown(reel_client_t *c);

/*
 * Shuts c down (above), waits for every call still open on it to return,
 * a consumer loop's final ack included (at most its short deadline), then
 * frees it. Not from within a call on c (a callback, on_batch): it would
 * wait for itself, and aborts the process saying so instead. No call may
 * start on c once destroy is called (one starting as it frees c would
 * use freed memory): from other threads, shut down first, join them, then
 * destroy. NULL is fine.
 */
void reel_client_destroy(reel_client_t *c);

/*
 * Calls a unary method once: never sent again once it may have been
 * applied (use it for writes). Only reeld's refusal of a call its write
 * queue has no room for (RESOURCE_EXHAUSTED "write queue is full ...",
 * refused before anything was written) is sent again, after a backoff
 * wait, while the deadline leaves room for the wait and at most the
 * client's max_attempts times in all. timeout_ms > 0 is the call's
 * deadline, every attempt included; REEL_TIMEOUT_DEFAULT (0) the client's;
 * REEL_TIMEOUT_NONE (< 0) none. Fills *reply (release with
 * reel_reply_fini) and returns reply->code; on OK, reply->body holds the
 * answer (its len may be 0: an empty message). CANCELLED after
 * reel_client_shutdown.
 */
int reel_client_unary(reel_client_t *c, const char *method, const void *req,
                      size_t len, int64_t timeout_ms, reel_reply_t *reply);

/*
 * reel_client_unary for reads and idempotent writes only: a call that ends
 * UNAVAILABLE is sent again too, the same way. The reply is the last
 * attempt's.
 */
int reel_client_unary_retry(reel_client_t *c, const char *method,
                            const void *req, size_t len, int64_t timeout_ms,
                            reel_reply_t *reply);

/*
 * Calls a server-streaming method; on_msg runs for each message and may
 * return non-zero to cancel the call. timeout_ms <= 0 means no deadline
 * (a stream usually has none). Returns the final status code, CANCELLED
 * after a cancel (on_msg's, on_idle's, or reel_client_shutdown's from
 * another thread); reply->body stays NULL. A request over reeld's
 * --max-message-bytes is INVALID_ARGUMENT, a message over max_receive_bytes
 * RESOURCE_EXHAUSTED, each naming its limit. Never sent twice.
 */
typedef int (*reel_stream_fn)(void *arg, const uint8_t *msg, size_t len);
int reel_client_stream(reel_client_t *c, const char *method, const void *req,
                       size_t len, int64_t timeout_ms, reel_stream_fn on_msg,
                       void *arg, reel_reply_t *reply);

/*
 * reel_client_stream, and each time idle_ms (> 0) pass with no message,
 * on_idle(arg) runs. on_msg and on_idle may make calls on c while the
 * stream is open, and return non-zero to cancel it: a flag another thread
 * sets, read by on_idle, ends this one stream within idle_ms.
 */
typedef int (*reel_idle_fn)(void *arg);
int reel_client_stream_idle(reel_client_t *c, const char *method,
                            const void *req, size_t len, int64_t timeout_ms,
                            reel_stream_fn on_msg, reel_idle_fn on_idle,
                            int64_t idle_ms, void *arg, reel_reply_t *reply);

/*
 * Calls a client-streaming method: next(arg, &msg, &len) gives each
 * message (malloc'd; the library frees it) and returns 1, or 0 after the
 * last, or -1 to cancel the call. Each message is sent once the previous
 * one left, so the server's flow control paces next. timeout_ms bounds
 * the whole upload; <= 0 (REEL_TIMEOUT_DEFAULT too, unlike a unary call)
 * means no deadline, as for a stream: a large artifact takes as long as
 * its bytes do, and keepalive_time_ms is what notices a server that went
 * silent. A message past reeld's size limit is INVALID_ARGUMENT naming
 * it, and so is a msg NULL with a len above 0 (no message is sent: an empty
 * one is len 0). Returns the status code; on OK reply->body holds the
 * answer. Never sent twice.
 */
typedef int (*reel_next_fn)(void *arg, uint8_t **msg, size_t *len);
int reel_client_upload(reel_client_t *c, const char *method,
                       int64_t timeout_ms, reel_next_fn next, void *arg,
                       reel_reply_t *reply);

/* Frees what reply holds and zeroes it. NULL is fine. */
void reel_reply_fini(reel_reply_t *reply);

/* "NOT_FOUND" for 5; "UNKNOWN" for a code outside gRPC's table. */
const char *reel_grpc_code_name(int code);

/* ---- The durable WAL consumer loop ---------------------------------------
 *
 * reel_consumer_run subscribes to Wal.SubscribeEventBatches as a durable
 * consumer (the server keeps its cursor: a new name starts after
 * from_revision, an existing one after its last acknowledged revision),
 * hands each batch of events to the callback, and acknowledges
 * (Wal.AckEvents) what the callback says it has finished: once ack_every
 * events have come since the last ack, or ack_interval_ms passed, so at a
 * bounded rate and never one ack per event.
 *
 * PROGRESS events never reach the callback: the server sends one when the
 * subscriber is caught up, meaning every event up to its revision was sent
 * or did not match the pattern. Once the callback has finished everything
 * it was given, the loop acknowledges up to that revision, so a filtered
 * consumer's cursor keeps moving past events it never receives.
 *
 * Delivery is at least once: events after the last acknowledged revision
 * come again after a restart of the process. Within one run of the loop,
 * the callback sees revisions strictly increasing, each once: after a
 * reconnect the server sends again what came after the last ack, and the
 * loop passes over what it already handed out (reel_consumer_stats counts
 * them as skipped).
 *
 * How a stream ends decides what the loop does:
 *
 *   UNAVAILABLE (reeld gone, restarting, shutting down, the connection
 *   broken, or silent: see silence_timeout_ms), CANCELLED by anything but
 *   reel_consumer_stop and reel_client_shutdown, DEADLINE_EXCEEDED, and OK
 *   (a stream the server ended without an error):
 *     subscribe again after a backoff wait, with no bound unless
 *     max_attempts is set; attempts count from the last stream that
 *     delivered a message.
 *   FAILED_PRECONDITION when subscribing again, because the server still
 *     holds this loop's earlier stream (it notices a broken connection
 *     within its keepalive time; any earlier stream whose request went
 *     out, whether or not it delivered anything) or another subscriber
 *     took the consumer meanwhile: as UNAVAILABLE, the loop waits for it
 *     to go. The loop
 *     tells this from an invalidated consumer by asking AckEvents for
 *     revision 0, which moves nothing.
 *   Anything else stops the loop with that status: INVALID_ARGUMENT (a bad
 *     name or pattern, a from_revision past the head), FAILED_PRECONDITION
 *     at the first subscribe (another subscriber holds the consumer: see
 *     takeover, and standby, which waits instead) or for an invalidated
 *     consumer, ABORTED (another subscriber
 *     took the consumer over), OUT_OF_RANGE (what the consumer needs was
 *     trimmed), NOT_FOUND, RESOURCE_EXHAUSTED, INTERNAL, DATA_LOSS, ...
 *
 * Acknowledging fails the same way: a retryable failure is tried again (at
 * the next ack, or after the reconnect); any other stops the loop with it.
 * However the loop ends, it first acknowledges what was finished; if that
 * fails, the loop's status says so (the events come again). That last ack
 * has a deadline of its own, 5 s (the client's deadline_ms if shorter), so
 * a stop returns within it even when reeld hangs; the acks before it are
 * cancelled by a stop like the stream.
 */

typedef struct reel_consumer reel_consumer_t;

/* One event, as the server stored it. Valid during the callback. */
typedef struct reel_event {
    uint64_t revision;
    int type;              /* reel.v1.Event.Type; never PROGRESS */
    const char *subject;   /* not NUL-terminated: subject_len bytes */
    size_t subject_len;
    const uint8_t *bytes;  /* the whole reel.v1.Event (unpack it for the
                              body) */
    size_t len;
} reel_event_t;

/*
 * A batch, revisions ascending (n >= 1). *finished comes set to the last
 * event's revision: "all of it is finished". The callback may lower it to
 * the revision up to which it has finished what it was given, this batch
 * and the ones before; events it has not finished stay its own (they are
 * not handed out again in this run) and are acknowledged once a later
 * answer covers them. An answer below an earlier one changes nothing; one
 * above the last event counts as the last event. Returns 0 to go on, or
 * non-zero to end the loop (after acknowledging what was finished; the
 * loop then returns 0).
 */
typedef int (*reel_batch_fn)(void *arg, const reel_event_t *events, size_t n,
                             uint64_t *finished);

/* Called before each backoff wait: why the stream ended, how long the loop
 * waits. Useful for a log line. */
typedef void (*reel_retry_fn)(void *arg, int code, const char *details,
                              int64_t delay_ms);

typedef struct reel_consumer_opts {
    const char *consumer;        /* the name ([A-Za-z0-9_.-]{1,128}, and
                                    ':' without tenants; the server checks
                                    it) */
    const char *subject_pattern; /* NULL or "" = every event */
    uint64_t from_revision;      /* a new consumer starts after it; 0 = from
                                    the oldest retained */
    /* End the stream of whoever holds the consumer and take its place, at
     * every subscribe: for a process that restarts before the server has
     * noticed its predecessor is gone. The one taken over ends ABORTED. */
    int takeover;
    int64_t ack_interval_ms;     /* 0 = 1000; at most 3 600 000 */
    uint32_t ack_every;          /* events between acks; 0 = 1000 */
    /* Attempts in a row without a message before the loop gives up with the
     * last status; 0 = no bound (until reel_consumer_stop). */
    int max_attempts;
    /* Stand by: a subscribe refused FAILED_PRECONDITION because another
     * subscriber holds the consumer is retried (with backoff, on_retry
     * told) instead of ending the loop, so a second process with the same
     * consumer takes over once the server finds the first gone. An
     * invalidated consumer still ends the loop. */
    int standby;
    /*
     * A stream that delivers nothing for this long (reeld sends a PROGRESS
     * every second while it has nothing else to send) is taken for a
     * server gone silent, one stopped or behind a network that dropped
     * the connection without a word: the loop ends it as UNAVAILABLE
     * (on_retry is told) and subscribes again after a backoff wait. Time
     * the callback takes does not count. reeld also sends a PROGRESS each
     * second while it scans a backlog the pattern refuses (as far as the
     * scan got); a server too busy even for that gets more time: after a
     * stream that delivered nothing at all the next waits twice as long
     * (up to the maximum). 0 = 30 000; else 2 000
     * to 3 600 000; negative: never. A new stream goes over the same
     * connection until gRPC finds it broken: keepalive_time_ms finds that
     * sooner.
     */
    int64_t silence_timeout_ms;
    reel_batch_fn on_batch;      /* required */
    reel_retry_fn on_retry;      /* may be NULL */
    void *arg;                   /* for both */
} reel_consumer_opts_t;

#define REEL_CONSUMER_OPTS_INIT {0}

/* How far a consumer loop got. */
typedef struct reel_consumer_stats {
    uint64_t delivered;  /* the last revision handed to the callback */
    uint64_t finished;   /* ... and the last it said it had finished */
    uint64_t acked;      /* the last revision the server acknowledged */
    uint64_t events;     /* events handed to the callback */
    uint64_t skipped;    /* events received again after a reconnect and
                            not handed out again */
    uint64_t acks;       /* AckEvents calls that succeeded */
    uint64_t reconnects; /* streams opened after the first */
    int streaming;       /* the current stream has delivered a message
                            (events or a PROGRESS): the consumer is held */
} reel_consumer_stats_t;

/*
 * A consumer loop on client c (which must outlive its run). The options'
 * strings are copied. 0, or INVALID_ARGUMENT naming the option or argument
 * (out NULL, no consumer name, no on_batch, an option outside its limits),
 * RESOURCE_EXHAUSTED; err as in reel_client_create.
 */
int reel_consumer_create(reel_client_t *c, const reel_consumer_opts_t *opts,
                         reel_consumer_t **out, reel_reply_t *err);

/*
 * Runs the loop on the calling thread until it stops: returns 0 after
 * reel_consumer_stop or a callback that asked to end, with what was
 * finished acknowledged (why->details is then ""); CANCELLED once its
 * client is shut down (reel_client_shutdown, reel_client_destroy); else
 * the status that ended it. *why (may be NULL; release it with
 * reel_reply_fini) holds the code and its message. A consumer runs once:
 * a second run answers FAILED_PRECONDITION (create another to go on).
 */
int reel_consumer_run(reel_consumer_t *k, reel_reply_t *why);

/*
 * Asks the loop to end: it cancels the stream and any ack on its way, wakes
 * a backoff wait, lets a running callback finish, acknowledges what was
 * finished (within that ack's own short deadline) and returns.
 * Thread-safe; may come from the callback, before run (which then returns
 * at once) and more than once; NULL is fine. Not async-signal-safe: call
 * it from a thread that takes signals with sigwait, not from a signal
 * handler.
 */
void reel_consumer_stop(reel_consumer_t *k);

/*
 * Says, from any thread, that every event handed out up to revision is
 * finished: for a callback that hands its events to other threads and
 * lowers *finished (to 0, say) instead of waiting for them. The loop takes
 * the highest answer at its next message, idle tick or final ack;
 * revisions above what was handed out count as the last one handed out.
 * Thread-safe; may come after stop, before the loop returns.
 */
void reel_consumer_finish(reel_consumer_t *k, uint64_t revision);

/*
 * From the callback only, for one that cannot take more for a while (its
 * queue is full): ends the stream once the callback returns and subscribes
 * again at once (refused while the server lets go of the old stream, it
 * tries again every 50 ms for about a second before the refusals count as
 * any other's), after acknowledging what is finished. The callback
 * keeps the events of this batch up to revision taken; the ones after it
 * are handed out again from the new stream (taken below the batch's first
 * event gives all of it back). A stream left unread while the callback
 * waits is not bounded: gRPC keeps what the server sends meanwhile (a
 * PROGRESS every second while idle) and each small message can hold a
 * whole read buffer; a new stream holds nothing until it is read. It also
 * tells the loop at once when the consumer was invalidated or taken over,
 * which an unread stream cannot.
 */
void reel_consumer_restart(reel_consumer_t *k, uint64_t taken);

/* A snapshot of the loop's counters. Thread-safe. */
void reel_consumer_stats(reel_consumer_t *k, reel_consumer_stats_t *out);

/* After run has returned (or if it never ran). NULL is fine. */
void reel_consumer_destroy(reel_consumer_t *k);

#endif
