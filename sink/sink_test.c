/*
 * sink/sink_test.c: what reel-sink does without a server: configuration
 * errors (naming the sink and the field), Standard Webhooks signatures
 * (the spec's own test vector), the retry schedule and Retry-After, NATS
 * subject escaping, the window's ack frontier, events as JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "base/fault.h"
#include "reel/v1/wal.pb-c.h"
#include "sink/conf.h"
#include "sink/config.h"
#include "sink/event.h"
#include "sink/retry.h"
#include "sink/sign.h"
#include "sink/subject.h"
#include "sink/window.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

/* Parses text; returns the code and leaves the message in msg. */
static reel_code_t parse(const char *text, sink_config_set_t *set,
                         char *msg, size_t cap) {
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc = sink_config_parse(text, strlen(text), set, &st);

    snprintf(msg, cap, "%s", reel_status_message(&st));
    reel_status_fini(&st);
    return rc;
}

static void assert_refused(const char *text, const char *want) {
    sink_config_set_t set;
    char msg[600];

    assert_int_equal(parse(text, &set, msg, sizeof(msg)),
                     REEL_INVALID_ARGUMENT);
    if (strstr(msg, want) == NULL)
        fail_msg("message \"%s\" does not contain \"%s\"", msg, want);
    assert_int_equal(set.n, 0);
    assert_null(set.sinks);
}

static void assert_accepted(const char *text) {
    sink_config_set_t set;
    char msg[600];

    if (parse(text, &set, msg, sizeof(msg)) != REEL_OK)
        fail_msg("refused: %s", msg);
    sink_config_set_fini(&set);
}

/* ---- Configuration ------------------------------------------------------- */

static void test_config_errors_name_the_sink_and_the_field(void **state) {
    (void)state;
    assert_refused("{\"sinks\": [{\"name\": \"billing\", \"type\": \"smtp\"}]}",
                   "sinks[0] \"billing\": type: \"smtp\" is not a sink type");
    assert_refused("{\"sinks\": [{\"name\": \"billing\", \"type\": "
                   "\"webhook\", \"secrets\": [\"" SECRET "\"]}]}",
                   "sinks[0] \"billing\": url: missing");
    assert_refused("{\"sinks\": [{\"name\": \"ok\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"]},"
                   " {\"name\": \"b2\", \"type\": \"webhook\", \"url\": "
                   "\"http://x/\", \"secrets\": [\"whsec_not*base64\"]}]}",
                   "sinks[1] \"b2\": secrets[0]: the part after \"whsec_\" "
                   "is not base64");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"sk_live_1\"]}]}",
                   "sinks[0] \"b\": secrets[0]: a secret is \"whsec_\"");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                   "\"subjects\": [\"run.>.x\"]}]}",
                   "sinks[0] \"b\": subjects[0]: \"run.>.x\" is not a valid "
                   "pattern");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secret\": [\"" SECRET "\"]}]}",
                   "sinks[0] \"b\": secret: unknown key");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"nats\", "
                   "\"servers\": [\"nats://h:4222\"]}]}",
                   "sinks[0] \"b\": stream: missing");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"nats\", "
                   "\"servers\": [\"nats://h:4222\"], \"stream\": \"S\", "
                   "\"url\": \"http://x\"}]}",
                   "sinks[0] \"b\": url: not a key of a nats sink");
    assert_refused("{\"sinks\": [{\"name\": \"a b\", \"type\": \"nats\"}]}",
                   "sinks[0]: name: \"a b\" is not 1-64 bytes");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                   "\"mode\": \"concurrent\", \"max_in_flight\": 0}]}",
                   "sinks[0] \"b\": max_in_flight: 0 is not an integer from 1 "
                   "to 1024");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                   "\"mode\": \"concurrent\", \"on_exhausted\": \"block\"}]}",
                   "on_exhausted: \"block\" is only for mode \"ordered\"");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                   "\"from\": \"latest\"}]}",
                   "sinks[0] \"b\": from: must be \"oldest\", \"now\"");
    assert_refused("{\"sinks\": [{\"name\": \"n\", \"type\": \"nats\", "
                   "\"servers\": [\"nats://h:1\"], \"stream\": \"S\"}, "
                   "{\"name\": \"m\", \"type\": \"nats\", \"servers\": "
                   "[\"nats://h:1\"], \"stream\": \"S\"}]}",
                   "sinks[1] \"m\": stream: \"S\" on nats://h:1 is also "
                   "sinks[0]'s");
    /* The same server spelled another way, or second in the list. */
    assert_refused("{\"sinks\": [{\"name\": \"n\", \"type\": \"nats\", "
                   "\"servers\": [\"nats://127.0.0.1:4222\"], \"stream\": "
                   "\"S\"}, {\"name\": \"m\", \"type\": \"nats\", "
                   "\"servers\": [\"nats://u:p@LOCALHOST\"], \"stream\": "
                   "\"S\"}]}",
                   "sinks[1] \"m\": stream: \"S\" on nats://");
    assert_refused("{\"sinks\": [{\"name\": \"n\", \"type\": \"nats\", "
                   "\"servers\": [\"nats://a:1\", \"nats://b:2\"], "
                   "\"stream\": \"S\"}, {\"name\": \"m\", \"type\": "
                   "\"nats\", \"servers\": [\"nats://c:3\", \"nats://B:2\"], "
                   "\"stream\": \"S\"}]}",
                   "is also sinks[0]'s");
    assert_refused("{\"sinks\": [{\"name\": \"n\", \"type\": \"nats\", "
                   "\"servers\": [\"nats://h:1\"], \"stream\": \"S\", "
                   "\"subject_prefix\": \"a..b\"}]}",
                   "subject_prefix: \"a..b\" has an empty token");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                   "\"timeout_ms\": 1e30}]}",
                   "sinks[0] \"b\": timeout_ms: 1e+30 is not an "
                   "integer from 1 to 3600000");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                   "\"from\": 1e300}]}",
                   "sinks[0] \"b\": from: must be");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                   "\"retry_schedule_ms\": [5, -1e300]}]}",
                   "retry_schedule_ms: step 1 is not an integer");
    assert_refused("{\"sinks\": []}", "config: sinks: must be a non-empty");
    assert_refused("{\"sinks\": [", "config: not valid JSON");
    assert_refused("{\"sinks\": [{\"name\": \"d\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"]}, "
                   "{\"name\": \"d\", \"type\": \"webhook\", \"url\": "
                   "\"http://x/\", \"secrets\": [\"" SECRET "\"]}]}",
                   "sinks[1] \"d\": name: also the name of sinks[0]");
}

#define WEBHOOK_WITH(url) \
    "{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", \"url\": \"" url \
    "\", \"secrets\": [\"" SECRET "\"]}]}"
#define NATS_WITH(server) \
    "{\"sinks\": [{\"name\": \"n\", \"type\": \"nats\", \"stream\": \"S\", " \
    "\"servers\": [\"" server "\"]}]}"

static void test_config_urls_need_a_host_and_a_port_in_range(void **state) {
    (void)state;
    assert_refused(WEBHOOK_WITH("http://"),
                   "url: not a URL: No host part in the URL");
    assert_refused(WEBHOOK_WITH("http://127.0.0.1:99999/"),
                   "url: not a URL: Port number was not a decimal number "
                   "between 0 and 65535");
    assert_refused(WEBHOOK_WITH("http://h/a b"),
                   "url: a space or control character at byte 10");
    assert_refused(WEBHOOK_WITH("http://h/\\r\\nX-Evil: 1"),
                   "url: a space or control character at byte 9");
    assert_refused(WEBHOOK_WITH("ftp://h/x"),
                   "url: the scheme is ftp://; it must be http:// or "
                   "https://");
    assert_refused(WEBHOOK_WITH("http://127.0.0.1:0/x"),
                   "url: port 0: a port is 1 to 65535");
    assert_refused(NATS_WITH("nats://u:pw@h:0"),
                   "servers[0]: port 0: a port is 1 to 65535");
    assert_refused(NATS_WITH("nats://"),
                   "servers[0]: not a URL: No host part in the URL");
    assert_refused(NATS_WITH("http://h:4222"),
                   "servers[0]: the scheme is http://; it must be nats:// or "
                   "tls://");
    /* libcurl reads these as host x, and as h on the default port. */
    assert_refused(WEBHOOK_WITH("http:///x"), "url: no host after http://");
    assert_refused(WEBHOOK_WITH("http://h:/x"),
                   "url: an empty port after ':' after http://");
    assert_refused(WEBHOOK_WITH("http://[::1]:/x"),
                   "url: an empty port after ':' after http://");
    assert_refused(NATS_WITH("nats://h:"),
                   "servers[0]: an empty port after ':' after nats://");
    /* libcurl would read host "QmFz" and NATS's client the token: a piece
     * of it in the log as where. */
    assert_refused(NATS_WITH("nats://QmFz/abc+def=@127.0.0.1:4222"),
                   "servers[0]: a user, password or token with '/', '?' or "
                   "'#' in it, which a NATS URL cannot carry (the URL is not "
                   "repeated: it may hold a credential)");
    assert_refused(NATS_WITH("nats://bob:p@ss/w:rd@h"),
                   "servers[0]: a user, password or token with '/', '?' or "
                   "'#' in it, which a NATS URL cannot carry (the URL is not "
                   "repeated: it may hold a credential)");
    assert_accepted(NATS_WITH("nats://tok_en-123@h:4222"));
    /* A userinfo's ':' and an IPv6 host's are not a port's. */
    assert_accepted(WEBHOOK_WITH("http://u:pw@h/x"));
    assert_accepted(WEBHOOK_WITH("http://[::1]/x"));
    assert_accepted(WEBHOOK_WITH("http://h:8080?q=1"));
}

/* A pattern reeld would refuse, or that could never match, is refused by
 * check, not found when the sink subscribes (which stopped the process)
 * or never (one of several, filtered in reel-sink). */
static void test_config_patterns_must_be_utf8(void **state) {
    (void)state;
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                   "\"subjects\": [\"kv.\xc3\x28.>\"]}]}",
                   "sinks[0] \"b\": subjects[0]: \"kv.\\xc3(.>\" is not "
                   "valid UTF-8");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                   "\"subjects\": [\"kv.a.>\", \"kv.\xed\xa0\x80.>\"]}]}",
                   "sinks[0] \"b\": subjects[1]: \"kv.\\xed\\xa0\\x80.>\" is "
                   "not valid UTF-8");
    assert_refused("{\"sinks\": [{\"name\": \"n\", \"type\": \"nats\", "
                   "\"servers\": [\"nats://h:4222\"], \"stream\": \"S\", "
                   "\"exclude\": [\"kv.\xff\"]}]}",
                   "sinks[0] \"n\": exclude[0]: \"kv.\\xff\" is not valid "
                   "UTF-8");
    assert_accepted("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                    "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                    "\"subjects\": [\"kv.caf\xc3\xa9.>\"]}]}");
}

/* on_exhausted "block" tries the head for ever: a max_age_ms beside it
 * was ignored without a word (14 attempts in 4 s, no dead letter). */
static void test_config_block_refuses_max_age(void **state) {
    (void)state;
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                   "\"on_exhausted\": \"block\", \"max_age_ms\": 2000}]}",
                   "sinks[0] \"b\": on_exhausted: \"block\" never gives up, "
                   "so max_age_ms (2000) would never apply");
    assert_accepted("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                    "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                    "\"on_exhausted\": \"block\"}]}");
    assert_accepted("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                    "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                    "\"on_exhausted\": \"dead_letter\", \"max_age_ms\": "
                    "2000}]}");
}

/* Headers that govern the request or its connection, or that reel-sink
 * writes itself, are refused whatever their case: User-Agent went out
 * twice, Expect brought back the 100-continue wait, Transfer-Encoding
 * chunked the body. */
static void test_config_refuses_request_control_headers(void **state) {
    static const char *const refused[] = {
        "Transfer-Encoding", "connection", "Keep-Alive", "EXPECT", "TE",
        "Upgrade", "Proxy-Authorization", "proxy-connection",
        "Content-Length", "content-type", "User-Agent", "webhook-id",
        "Webhook-Signature", "Trailer"};
    char text[600], want[300];

    (void)state;
    for (size_t i = 0; i < sizeof(refused) / sizeof(*refused); i++) {
        snprintf(text, sizeof(text),
                 "{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                 "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                 "\"headers\": {\"X-Ok\": \"1\", \"%s\": \"v\"}}]}",
                 refused[i]);
        snprintf(want, sizeof(want), "sinks[0] \"b\": headers.%s: not "
                 "allowed: ", refused[i]);
        assert_refused(text, want);
    }
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                   "\"headers\": {\"Expect\": \"100-continue\"}}]}",
                   "headers.Expect: not allowed: it makes each request wait "
                   "for a 100 Continue");
    /* Names that only start like one are the receiver's. */
    assert_accepted("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                    "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                    "\"headers\": {\"Authorization\": \"Bearer t\", "
                    "\"Hostname\": \"h\", \"X-Expect\": \"1\", \"Tenant\": "
                    "\"a\", \"Connection-Id\": \"7\"}}]}");
    /* Host replaces libcurl's own (a virtual host behind an address). */
    assert_accepted("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                    "\"url\": \"http://10.0.0.1/\", \"secrets\": [\"" SECRET
                    "\"], \"headers\": {\"Host\": \"api.example\"}}]}");
}

static void test_config_refuses_repeated_keys_and_trailing_text(void **state) {
    (void)state;
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://a/\", \"url\": \"http://b/\", "
                   "\"secrets\": [\"" SECRET "\"]}]}",
                   "config: sinks[0] \"b\": \"url\" appears twice");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://a/\", \"secrets\": [\"" SECRET "\"], "
                   "\"headers\": {\"X-A\": \"1\", \"X-A\": \"2\"}}]}",
                   "config: sinks[0] \"b\".headers: \"X-A\" appears twice");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://a/\", \"secrets\": [\"" SECRET "\"], "
                   "\"headers\": {\"X-A\": \"1\", \"x-a\": \"2\"}}]}",
                   "headers.x-a: also a header above, in another case");
    assert_refused("{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                   "\"url\": \"http://a/\", \"secrets\": [\"" SECRET "\"], "
                   "\"headers\": {\"X-A\": \"a\\u0001b\"}}]}",
                   "headers.X-A: a control byte (0x01) in a header value");
    assert_refused("{\"sinks\": [], \"sinks\": []}",
                   "config: \"sinks\" appears twice");
    /* cJSON would end the string at the NUL: "http://a/x\u0000 b" read
     * as "http://a/x". */
    assert_refused(WEBHOOK_WITH("http://a/x\\u0000 b"),
                   "config: a NUL character at byte");
    /* cJSON reads a \u escape without four hex digits as a NUL too: the
     * url would be "http://h/hook" (fuzz_sink_conf found it). */
    assert_refused(WEBHOOK_WITH("http://h/hook\\uqqqq/ignored"),
                   "config: a \\u escape without four hex digits at byte");
    assert_refused(WEBHOOK_WITH("http://h/hook\\u00zz"),
                   "config: a \\u escape without four hex digits at byte");
    assert_refused(WEBHOOK_WITH("http://h/hook\\u12"),
                   "config: a \\u escape without four hex digits at byte");
    /* A raw NUL right after a backslash is a NUL, not an escape. */
    {
        static const char text[] = "{\"sinks\": \"\\\0\"}";
        reel_status_t st = REEL_STATUS_INIT;

        assert_null(sink_conf_parse(text, sizeof(text) - 1, &st));
        assert_non_null(strstr(reel_status_message(&st),
                               "a NUL character at byte 12"));
        reel_status_fini(&st);
    }
    /* The file is one object: an array was "sinks: must be a non-empty
     * array", or 'unknown key ""'. */
    assert_refused("[]", "config: not a JSON object (one object with \"sinks\")");
    assert_refused("[{\"sinks\": []}]", "config: not a JSON object");
    assert_refused("\"sinks\"", "config: not a JSON object");
    /* An escaped backslash before "u0000" is text, not a NUL. */
    {
        sink_config_set_t set;
        char msg[600];

        assert_int_equal(parse(WEBHOOK_WITH("http://a/x?q=\\\\u0000"), &set,
                               msg, sizeof(msg)),
                         REEL_OK);
        sink_config_set_fini(&set);
    }
    assert_refused(WEBHOOK_WITH("http://a/") " garbage",
                   "config: more after the JSON value");
}

static void test_config_patterns_with_an_empty_token_never_match(
    void **state) {
    (void)state;
    const char *bad[] = {"a..b", "a.", ".", ".a"};
    char text[512], want[128];

    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        snprintf(text, sizeof(text),
                 "{\"sinks\": [{\"name\": \"b\", \"type\": \"webhook\", "
                 "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"], "
                 "\"exclude\": [\"%s\"]}]}",
                 bad[i]);
        snprintf(want, sizeof(want), "exclude[0]: \"%s\" has an empty token",
                 bad[i]);
        assert_refused(text, want);
    }
}

static void test_config_messages_never_repeat_a_url_credential(void **state) {
    sink_config_set_t set;
    char msg[600];
    const char *texts[] = {
        WEBHOOK_WITH("ftp://user:PASSWORD1@host/x?token=TOKEN1"),
        WEBHOOK_WITH("https://user:PASSWORD1@host:99999/?token=TOKEN1"),
        NATS_WITH("http://alice:PASSWORD1@h:4222"),
        "{\"sinks\": [{\"name\": \"n\", \"type\": \"nats\", \"servers\": "
        "[\"nats://alice:PASSWORD1@h:1\"], \"stream\": \"S\"}, {\"name\": "
        "\"m\", \"type\": \"nats\", \"servers\": [\"nats://alice:PASSWORD1"
        "@h:1\"], \"stream\": \"S\"}]}",
    };
    char *pub;

    (void)state;
    for (size_t i = 0; i < sizeof(texts) / sizeof(*texts); i++) {
        assert_int_equal(parse(texts[i], &set, msg, sizeof(msg)),
                         REEL_INVALID_ARGUMENT);
        if (strstr(msg, "PASSWORD1") != NULL || strstr(msg, "TOKEN1") != NULL)
            fail_msg("a credential in \"%s\"", msg);
    }
    assert_non_null(pub = sink_conf_url_public(
                        "nats://alice:PASSWORD1@h.example:4222/x?t=TOKEN1"));
    assert_string_equal(pub, "nats://h.example:4222");
    free(pub);
}

static void test_config_messages_never_repeat_a_secret(void **state) {
    sink_config_set_t set;
    char msg[600];

    (void)state;
    assert_int_equal(parse("{\"sinks\": [{\"name\": \"b\", \"type\": "
                           "\"webhook\", \"url\": \"http://x/\", \"secrets\": "
                           "[\"whsec_TOPSECRET!\"]}]}",
                           &set, msg, sizeof(msg)),
                     REEL_INVALID_ARGUMENT);
    assert_null(strstr(msg, "TOPSECRET"));
}

/* Two NATS sinks may name one stream on servers they do not share. */
static void test_config_one_stream_name_on_two_servers(void **state) {
    sink_config_set_t set;
    char msg[256];

    (void)state;
    assert_int_equal(parse("{\"sinks\": [{\"name\": \"n\", \"type\": "
                           "\"nats\", \"servers\": [\"nats://a:4222\"], "
                           "\"stream\": \"S\"}, {\"name\": \"m\", "
                           "\"type\": \"nats\", \"servers\": "
                           "[\"nats://a:4223\", \"nats://b\"], \"stream\": "
                           "\"S\"}]}",
                           &set, msg, sizeof(msg)),
                     REEL_OK);
    sink_config_set_fini(&set);
}

static void test_config_defaults(void **state) {
    sink_config_set_t set;
    char msg[600];
    const sink_config_t *b, *n;

    (void)state;
    assert_int_equal(
        parse("{\"sinks\": [{\"name\": \"billing\", \"type\": \"webhook\", "
              "\"url\": \"https://example.com/hook\", \"secrets\": [\"" SECRET
              "\", \"whsec_AAAA\"], \"subjects\": [\"run.>\", \"kv.shop.>\"],"
              " \"from\": \"oldest\", \"mode\": \"ordered\", \"timeout_ms\": "
              "15000}, {\"name\": \"fanout\", \"type\": \"nats\", "
              "\"servers\": [\"nats://127.0.0.1:4222\"], \"stream\": "
              "\"REEL\", \"subject_prefix\": \"reel\", \"subjects\": [\">\"],"
              " \"from\": \"now\"}, {\"name\": \"r\", \"type\": \"nats\", "
              "\"servers\": [\"nats://127.0.0.1:4222\"], \"stream\": \"R2\", "
              "\"from\": 42}]}",
              &set, msg, sizeof(msg)),
        REEL_OK);
    assert_int_equal(set.n, 3);
    b = sink_config_find(&set, "billing");
    n = sink_config_find(&set, "fanout");
    assert_non_null(b);
    assert_non_null(n);
    assert_int_equal(b->type, SINK_WEBHOOK);
    assert_int_equal(b->mode, SINK_ORDERED);
    assert_int_equal(b->max_in_flight, 1);
    assert_int_equal(b->batch_max_events, 1);
    assert_int_equal(b->n_secrets, 2);
    assert_int_equal(b->secrets[1].len, 3);
    assert_int_equal(b->n_subjects, 2);
    assert_int_equal(b->from, SINK_FROM_OLDEST);
    assert_int_equal(b->timeout_ms, 15000);
    assert_int_equal(b->retry.n_steps, 7);
    assert_int_equal(b->retry.steps_ms[0], 5000);
    assert_int_equal(b->retry.steps_ms[6], 36000000);
    assert_int_equal(b->on_exhausted, SINK_EXHAUSTED_DEAD_LETTER);
    assert_int_equal(n->type, SINK_NATS);
    assert_int_equal(n->from, SINK_FROM_NOW);
    assert_string_equal(n->subject_prefix, "reel");
    assert_int_equal(sink_config_find(&set, "r")->from, SINK_FROM_REVISION);
    assert_int_equal(sink_config_find(&set, "r")->from_revision, 42);
    assert_string_equal(sink_config_find(&set, "r")->subject_prefix, "reel");
    assert_null(sink_config_find(&set, "nope"));
    sink_config_set_fini(&set);
}

/* Every connection is a descriptor: sinks that need more than the
 * open-files limit allows are refused, naming max_in_flight and both
 * numbers, instead of failing connects blamed on the receiver. */
static void test_config_that_cannot_fit_the_open_files_limit_is_refused(
    void **state) {
    sink_config_set_t set;
    reel_status_t st = REEL_STATUS_INIT;
    char msg[600];

    (void)state;
    assert_int_equal(
        parse("{\"sinks\": [{\"name\": \"o\", \"type\": \"webhook\", "
              "\"url\": \"http://x/\", \"secrets\": [\"" SECRET "\"]}, "
              "{\"name\": \"wide\", \"type\": \"webhook\", \"url\": "
              "\"http://x/\", \"secrets\": [\"" SECRET "\"], \"mode\": "
              "\"concurrent\", \"max_in_flight\": 1024}, {\"name\": \"c\", "
              "\"type\": \"webhook\", \"url\": \"http://x/\", "
              "\"secrets\": [\"" SECRET "\"], \"mode\": \"concurrent\"}, "
              "{\"name\": \"n\", \"type\": \"nats\", \"servers\": "
              "[\"nats://h:1\"], \"stream\": \"S\"}]}",
              &set, msg, sizeof(msg)),
        REEL_OK);
    /* 1 (ordered) + 1024 + 16 (the default) + 1 (NATS). */
    assert_int_equal(sink_config_connections(&set), 1042);
    assert_int_equal(sink_config_check_open_files(&set, 1042 + 64, &st),
                     REEL_OK);
    assert_int_equal(sink_config_check_open_files(&set, 1024, &st),
                     REEL_INVALID_ARGUMENT);
    snprintf(msg, sizeof(msg), "%s", reel_status_message(&st));
    reel_status_fini(&st);
    if (strstr(msg, "max_in_flight: the sinks need up to 1106 open files") ==
            NULL ||
        strstr(msg, "(\"wide\": 1024)") == NULL ||
        strstr(msg, "open-files limit of 1024 (ulimit -n") == NULL)
        fail_msg("message: %s", msg);
    sink_config_set_fini(&set);
}

/* ---- Signatures ----------------------------------------------------------- */

static void test_sign_passes_the_standard_webhooks_test_vector(void **state) {
    sink_secret_t k;
    const char *why = NULL;
    const char *body = "{\"test\": 2432232314}";
    char *sig;

    (void)state;
    assert_int_equal(sink_secret_decode(SECRET, &k, &why), 0);
    sig = sink_sign(&k, 1, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body,
                    strlen(body));
    assert_non_null(sig);
    assert_string_equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    free(sig);
}

static void test_sign_lists_a_signature_for_every_secret(void **state) {
    sink_secret_t k[2];
    const char *why;
    char *sig;

    (void)state;
    assert_int_equal(sink_secret_decode("whsec_AAAA", &k[0], &why), 0);
    assert_int_equal(sink_secret_decode(SECRET, &k[1], &why), 0);
    sig = sink_sign(k, 2, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                    "{\"test\": 2432232314}", 20);
    assert_non_null(sig);
    assert_non_null(strstr(sig, " v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    assert_int_equal(strncmp(sig, "v1,", 3), 0);
    free(sig);
    assert_int_equal(sink_secret_decode("whsec_", &k[0], &why), -1);
    assert_int_equal(sink_secret_decode("whsec_AAA", &k[0], &why), -1);
}

/* ---- Retries ---------------------------------------------------------------- */

static void test_retry_follows_the_schedule_within_its_jitter(void **state) {
    sink_retry_t r;
    uint64_t rng = 12345;

    (void)state;
    sink_retry_defaults(&r);
    for (int i = 0; i < 200; i++) {
        int64_t w1 = sink_retry_next(&r, 1, 0, 0, 0, &rng);
        int64_t w2 = sink_retry_next(&r, 2, 0, 5000, 0, &rng);

        assert_true(w1 >= 4000 && w1 <= 6000);
        assert_true(w2 >= 240000 && w2 <= 360000);
    }
    /* After the 7th step no attempt is left: 8 attempts in all. */
    assert_true(sink_retry_next(&r, 7, 0, 0, 0, &rng) >= 28800000);
    assert_int_equal(sink_retry_next(&r, 8, 0, 0, 0, &rng), -1);
    /* Block: the last step again and again. */
    assert_true(sink_retry_next(&r, 30, 0, 0, 1, &rng) >= 28800000);
    /* No jitter: exact. */
    r.jitter = 0;
    assert_int_equal(sink_retry_next(&r, 3, 0, 0, 0, &rng), 1800000);
}

static void test_retry_stops_at_max_age(void **state) {
    sink_retry_t r;
    uint64_t rng = 7;

    (void)state;
    sink_retry_defaults(&r);
    r.jitter = 0;
    r.max_age_ms = 60000;
    assert_int_equal(sink_retry_next(&r, 1, 1000, 1000, 0, &rng), 5000);
    /* The 5-minute step would start past a minute from the first try. */
    assert_int_equal(sink_retry_next(&r, 2, 1000, 6000, 0, &rng), -1);
}

/* A receiver's Retry-After only lengthens the wait, and counts against
 * max_age_ms like the schedule (but for "block"). */
static void test_retry_after_cannot_pass_max_age(void **state) {
    sink_retry_t r;

    (void)state;
    sink_retry_defaults(&r);
    r.max_age_ms = 3000;
    assert_int_equal(sink_retry_with_after(&r, 100, -1, 0, 0, 0), 100);
    assert_int_equal(sink_retry_with_after(&r, 100, 50, 0, 0, 0), 100);
    assert_int_equal(sink_retry_with_after(&r, 100, 2000, 0, 500, 0), 2000);
    assert_int_equal(sink_retry_with_after(&r, 100, 6000, 0, 0, 0), -1);
    assert_int_equal(sink_retry_with_after(&r, 100, 6000, 0, 0, 1), 6000);
    assert_int_equal(sink_retry_with_after(&r, -1, 6000, 0, 0, 0), -1);
    r.max_age_ms = 0; /* the schedule alone */
    assert_int_equal(sink_retry_with_after(&r, 100, 6000, 0, 0, 0), 6000);
}

static void check_describe(int64_t wait, int64_t scheduled, int64_t after_ms,
                           int throttled, const char *want) {
    char got[128];

    sink_retry_describe(got, sizeof(got), wait, scheduled, after_ms,
                        throttled);
    assert_string_equal(got, want);
}

/* The log credits the receiver's Retry-After only when it set the wait: a
 * 503 with Retry-After: 1 under a 2.5 s schedule waits the schedule's. */
static void test_retry_log_credits_retry_after_only_when_it_set_the_wait(
    void **state) {
    (void)state;
    check_describe(2500, 2500, 1000, 1,
                   "2.5 s (the retry schedule's; the receiver's Retry-After "
                   "asked for 1.0 s)");
    check_describe(2500, 2500, 2500, 1,
                   "2.5 s (the retry schedule's; the receiver's Retry-After "
                   "asked for 2.5 s)");
    check_describe(2000, 100, 2000, 1, "2.0 s (the receiver's Retry-After)");
    check_describe(20, 20, -1, 1, "20 ms (throttled: the sink waits)");
    check_describe(5000, 5000, -1, 0, "5.0 s");
}

static void test_retry_after_takes_seconds_or_a_date_capped(void **state) {
    int64_t ms = -1;
    /* Wed, 21 Oct 2015 07:28:00 GMT */
    int64_t now = 1445412480000LL - 30000;

    (void)state;
    assert_int_equal(sink_retry_after_parse("120", now, 600000, &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(sink_retry_after_parse(" 7 ", now, 600000, &ms), 0);
    assert_int_equal(ms, 7000);
    assert_int_equal(sink_retry_after_parse("99999999999999999", now, 600000,
                                            &ms),
                     0);
    assert_int_equal(ms, 600000);
    assert_int_equal(sink_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT",
                                            now, 600000, &ms),
                     0);
    assert_int_equal(ms, 30000);
    /* A date in the past: at once. */
    assert_int_equal(sink_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT",
                                            now + 100000, 600000, &ms),
                     0);
    assert_int_equal(ms, 0);
    assert_int_equal(sink_retry_after_parse("soon", now, 600000, &ms), -1);
    assert_int_equal(sink_retry_after_parse("12s", now, 600000, &ms), -1);
    assert_int_equal(sink_retry_after_parse("", now, 600000, &ms), -1);
    assert_int_equal(sink_retry_after_parse("-5", now, 600000, &ms), -1);
    assert_true(sink_retry_throttles(429) && sink_retry_throttles(503) &&
                sink_retry_throttles(502) && sink_retry_throttles(504));
    assert_false(sink_retry_throttles(500) || sink_retry_throttles(410));
}

/* ---- NATS subjects ------------------------------------------------------------- */

static void check_subject(const char *in, size_t len, const char *want) {
    char *got = sink_nats_subject("reel", in, len);

    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_subject_escapes_what_nats_refuses(void **state) {
    (void)state;
    check_subject("kv.shop.orders.eu.1", 19, "reel.kv.shop.orders.eu.1");
    check_subject("kv.shop.a b", 11, "reel.kv.shop.a%20b");
    check_subject("kv.shop.tab\there", 16, "reel.kv.shop.tab%09here");
    check_subject("kv.shop.100%", 12, "reel.kv.shop.100%25");
    check_subject("kv.shop.line\nbreak\r", 19, "reel.kv.shop.line%0Abreak%0D");
    check_subject("kv.shop.a*b.>x", 14, "reel.kv.shop.a*b.>x");
    check_subject("kv.old.*.>", 10, "reel.kv.old.%2A.%3E");
    check_subject("kv.old.a..b.", 12, "reel.kv.old.a.%00.b.%00");
    check_subject("kv.caf\xc3\xa9.x", 10, "reel.kv.caf\xc3\xa9.x");
    check_subject("kv.del\x7f", 7, "reel.kv.del%7F");
}

/* ---- The window and its frontier ------------------------------------------------- */

static void push(sink_window_t *w, uint64_t rev) {
    uint8_t *block = malloc(10 + 7);

    memcpy(block + 10, "kv.a.b", 7);
    sink_window_push(w, rev, 3, block, 10);
    assert_string_equal(sink_window_at(w, w->tail - 1)->subject, "kv.a.b");
}

static void test_window_frontier_stops_at_the_first_event_not_done(
    void **state) {
    sink_window_t w;

    (void)state;
    assert_int_equal(sink_window_init(&w, 8), 0);
    assert_int_equal(sink_window_advance(&w), 0);
    push(&w, 3);
    push(&w, 5);
    sink_window_pass(&w, 6); /* filtered out */
    push(&w, 9);
    assert_int_equal(sink_window_advance(&w), 2);
    /* Concurrent: 5 and 9 delivered before 3. */
    sink_window_done(&w, 1);
    sink_window_done(&w, 2);
    assert_int_equal(sink_window_advance(&w), 2);
    assert_int_equal(sink_window_count(&w), 3);
    sink_window_done(&w, 0);
    assert_int_equal(sink_window_advance(&w), 9);
    assert_int_equal(sink_window_count(&w), 0);
    /* Filtered revisions after everything is done move it on. */
    sink_window_pass(&w, 14);
    assert_int_equal(sink_window_advance(&w), 14);
    push(&w, 20);
    push(&w, 21);
    sink_window_done(&w, 4);
    assert_int_equal(sink_window_advance(&w), 19);
    /* Done twice changes nothing. */
    sink_window_done(&w, 4);
    assert_int_equal(w.bytes, 10);
    sink_window_fini(&w);
}

static void test_window_is_bounded_by_count_and_bytes(void **state) {
    sink_window_t w;

    (void)state;
    assert_int_equal(sink_window_init(&w, 3), 0);
    /* An empty window takes any one event, however large. */
    assert_false(sink_window_full(&w, 1000, 100));
    push(&w, 1);
    assert_true(sink_window_full(&w, 95, 100));
    assert_false(sink_window_full(&w, 90, 100));
    push(&w, 2);
    push(&w, 3);
    assert_true(sink_window_full(&w, 1, 1000));
    sink_window_done(&w, 1); /* done but held behind 1 */
    assert_true(sink_window_full(&w, 1, 1000));
    sink_window_done(&w, 0);
    assert_int_equal(sink_window_advance(&w), 2);
    assert_false(sink_window_full(&w, 1, 1000));
    assert_int_equal(sink_window_find_after(&w, 2), 2);
    assert_int_equal(sink_window_find_after(&w, 3), 3);
    sink_window_fini(&w);
}

static void test_window_requeues_what_was_taken_and_not_done(void **state) {
    sink_window_t w;

    (void)state;
    assert_int_equal(sink_window_init(&w, 8), 0);
    push(&w, 1);
    push(&w, 2);
    push(&w, 3);
    sink_window_at(&w, 0)->state = SINK_ITEM_TAKEN;
    sink_window_at(&w, 1)->state = SINK_ITEM_TAKEN;
    w.next = 2;
    sink_window_done(&w, 1);
    sink_window_requeue(&w);
    assert_int_equal(w.next, 0);
    assert_int_equal(sink_window_at(&w, 0)->state, SINK_ITEM_QUEUED);
    assert_int_equal(sink_window_at(&w, 1)->state, SINK_ITEM_DONE);
    assert_int_equal(sink_window_queued(&w), 3);
    sink_window_fini(&w);
}

/* ---- Events as JSON ----------------------------------------------------------------- */

static void test_event_data_keeps_stored_json_and_exact_numbers(
    void **state) {
    Reel__V1__Event ev = REEL__V1__EVENT__INIT;
    Reel__V1__ValueEvent v = REEL__V1__VALUE_EVENT__INIT;
    sink_item_t it = {0};
    uint8_t buf[512];
    size_t len;
    char *data, *body;
    cJSON *o;

    (void)state;
    v.type = REEL__V1__VALUE_EVENT__TYPE__PUT;
    v.namespace_ = "shop";
    v.key = "orders.1";
    v.value = "{\"n\":9007199254740993}";
    v.version = 2;
    v.revision = 18446744073709551615ULL;
    ev.revision = 18446744073709551615ULL;
    ev.subject = "kv.shop.orders.1";
    ev.type = REEL__V1__EVENT__TYPE__VALUE_CHANGED;
    ev.ts_ms = 1614265330000;
    ev.body_case = REEL__V1__EVENT__BODY_VALUE;
    ev.value = &v;
    it.len = reel__v1__event__pack(&ev, buf);
    it.bytes = buf;
    it.revision = ev.revision;
    it.type = ev.type;
    it.subject = "kv.shop.orders.1";
    data = sink_event_data(&it, &len, NULL);
    assert_non_null(data);
    assert_non_null(strstr(data, "\"revision\":18446744073709551615"));
    assert_non_null(strstr(data, "\"value\":{\"n\":9007199254740993}"));
    assert_non_null(strstr(data, "\"type\":\"VALUE_CHANGED\""));
    assert_null(strstr(data, "\"prev_value\":\"\""));
    free(data);
    body = sink_event_body(&it, &len);
    o = cJSON_Parse(body);
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItem(o, "type")->valuestring,
                        "reel.value_changed");
    assert_string_equal(cJSON_GetObjectItem(o, "timestamp")->valuestring,
                        "2021-02-25T15:02:10.000Z");
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(o, "data")));
    cJSON_Delete(o);
    free(body);
    /* Undecodable bytes are delivered, said so, not dropped. */
    it.bytes = (uint8_t *)"\xff\xff\xff";
    it.len = 3;
    data = sink_event_data(&it, &len, NULL);
    assert_non_null(strstr(data, "\"undecodable\":true"));
    free(data);
}

/* An allocation that fails anywhere while an event is rendered fails the
 * whole event: never a body with a field missing. */
static void test_an_event_short_of_memory_is_none_not_part(void **state) {
    Reel__V1__Event ev = REEL__V1__EVENT__INIT;
    Reel__V1__Run r = REEL__V1__RUN__INIT;
    Reel__V1__Run__LabelsEntry l = REEL__V1__RUN__LABELS_ENTRY__INIT;
    Reel__V1__Run__LabelsEntry *ls[1] = {&l};
    sink_item_t it = {0};
    uint8_t buf[512];
    size_t len, want_len;
    char *want, *data;
    int none = 0, k;

    (void)state;
    r.run_id = "01JABCDEFGHJKMNPQRSTVWXYZ0";
    r.app = "app", r.user = "u", r.session = "s", r.invocation_id = "i";
    l.key = "team", l.value = "blue";
    r.n_labels = 1, r.labels = ls;
    ev.revision = 7;
    ev.subject = "run.app.01JABCDEFGHJKMNPQRSTVWXYZ0";
    ev.type = REEL__V1__EVENT__TYPE__RUN_CHANGED;
    ev.ts_ms = 1614265330000;
    ev.body_case = REEL__V1__EVENT__BODY_RUN;
    ev.run = &r;
    it.len = reel__v1__event__pack(&ev, buf);
    it.bytes = buf;
    it.revision = ev.revision;
    it.type = ev.type;
    it.subject = ev.subject;
    want = sink_event_data(&it, &want_len, NULL);
    assert_non_null(want);
    for (k = 0; k < 1000; k++) {
        reel_fault_arm("sink.event_alloc", (uint64_t)k, 1);
        data = sink_event_data(&it, &len, NULL);
        reel_fault_reset();
        if (data == NULL) {
            none++;
            continue;
        }
        /* The k-th allocation is past the last one: whole again. */
        assert_int_equal(len, want_len);
        assert_string_equal(data, want);
        free(data);
        break;
    }
    assert_int_equal(none, k); /* each one before it struck: none */
    assert_true(none > 10);
    free(want);
}

static void test_event_data_carries_an_artifacts_record(void **state) {
    Reel__V1__Event ev = REEL__V1__EVENT__INIT;
    Reel__V1__Artifact a = REEL__V1__ARTIFACT__INIT;
    Reel__V1__Artifact__MetadataEntry m =
        REEL__V1__ARTIFACT__METADATA_ENTRY__INIT;
    Reel__V1__Artifact__MetadataEntry *ms[1] = {&m};
    uint8_t sha[32], buf[512];
    sink_item_t it = {0};
    size_t len;
    char *body;
    cJSON *o, *art;

    (void)state;
    for (int i = 0; i < 32; i++)
        sha[i] = (uint8_t)(i * 8 + 1);
    a.namespace_ = "docs";
    a.key = "a/b.txt";
    a.version = 3;
    a.size = 5368709120ULL;
    a.sha256.data = sha;
    a.sha256.len = 32;
    a.content_type = "text/plain";
    m.key = "by";
    m.value = "agent-7";
    a.n_metadata = 1;
    a.metadata = ms;
    a.revision = 87;
    ev.revision = 87;
    ev.subject = "artifact.docs.a.b.txt";
    ev.type = REEL__V1__EVENT__TYPE__ARTIFACT_CHANGED;
    ev.ts_ms = 1614265330000;
    ev.body_case = REEL__V1__EVENT__BODY_ARTIFACT;
    ev.artifact = &a;
    it.len = reel__v1__event__pack(&ev, buf);
    it.bytes = buf;
    it.revision = ev.revision;
    it.type = ev.type;
    it.subject = ev.subject;
    body = sink_event_body(&it, &len);
    o = cJSON_Parse(body);
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItem(o, "type")->valuestring,
                        "reel.artifact_changed");
    art = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "data"), "artifact");
    assert_true(cJSON_IsObject(art));
    assert_string_equal(cJSON_GetObjectItem(art, "key")->valuestring,
                        "a/b.txt");
    assert_string_equal(cJSON_GetObjectItem(art, "sha256")->valuestring,
                        "0109111921293139414951596169717981899199a1a9b1b9c1"
                        "c9d1d9e1e9f1f9");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(art,
                                                                "metadata"),
                                            "by")
                            ->valuestring,
                        "agent-7");
    assert_non_null(strstr(body, "\"size\":5368709120"));
    cJSON_Delete(o);
    free(body);
}

/* Packs ev into buf as the item a sink holds. */
static void item_of(Reel__V1__Event *ev, uint8_t *buf, sink_item_t *it) {
    it->len = reel__v1__event__pack(ev, buf);
    it->bytes = buf;
    it->revision = ev->revision;
    it->type = ev->type;
    it->subject = ev->subject;
}

/* o's string under k; fails the test if there is none. */
static const char *string_at(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);

    if (!cJSON_IsString(v))
        fail_msg("no string \"%s\"", k);
    return v->valuestring;
}

/* What a receiver needs to apply the claimability rule (not_before_ms <=
 * ts_ms) and to tell a delayed signal from a delivered one: the fields
 * reelctl prints, by the same names. */
static void test_event_data_has_a_runs_retry_state_and_a_signals_schedule(
    void **state) {
    Reel__V1__Event ev = REEL__V1__EVENT__INIT;
    Reel__V1__Run r = REEL__V1__RUN__INIT;
    Reel__V1__Signal g = REEL__V1__SIGNAL__INIT;
    sink_item_t it = {0};
    uint8_t buf[512];
    size_t len;
    char *data;
    cJSON *o, *run, *sig;

    (void)state;
    r.run_id = "01JABCDEFGHJKMNPQRSTVWXYZ0";
    r.app = "app", r.user = "u", r.session = "s", r.invocation_id = "i";
    r.status = REEL__V1__RUN__STATUS__RUNNABLE;
    r.lease_epoch = 3;
    r.attempt = 4294967295U;
    r.not_before_ms = 9007199254740993LL;
    r.reason = "LEASE_EXPIRED";
    r.resumed = 1;
    ev.revision = 9;
    ev.subject = "run.app.01JABCDEFGHJKMNPQRSTVWXYZ0.RUNNABLE";
    ev.type = REEL__V1__EVENT__TYPE__RUN_CHANGED;
    ev.ts_ms = 1614265330000;
    ev.body_case = REEL__V1__EVENT__BODY_RUN;
    ev.run = &r;
    item_of(&ev, buf, &it);
    data = sink_event_data(&it, &len, NULL);
    assert_non_null(data);
    o = cJSON_Parse(data);
    run = cJSON_GetObjectItem(o, "run");
    assert_true(cJSON_IsObject(run));
    assert_string_equal(string_at(run, "status"), "RUNNABLE");
    assert_string_equal(string_at(run, "reason"), "LEASE_EXPIRED");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(run, "resumed")));
    /* Numbers, exact: not strings, not through a double. */
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(run, "attempt")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(run, "not_before_ms")));
    assert_non_null(strstr(data, "\"attempt\":4294967295,"));
    assert_non_null(strstr(data, "\"not_before_ms\":9007199254740993,"));
    /* reelctl's order: the new fields after ended_at_ms. */
    assert_non_null(strstr(data, "\"ended_at_ms\":0,\"resumed\":true,"
                                 "\"attempt\":4294967295,\"not_before_ms\":"
                                 "9007199254740993,\"reason\":"
                                 "\"LEASE_EXPIRED\"}"));
    cJSON_Delete(o);
    free(data);

    g.run_id = r.run_id;
    g.name = "wake";
    g.seq = 2;
    g.revision = 10;
    g.sent_at_ms = 1614265330000;
    g.scheduled = 1;
    g.deliver_at_ms = 1614265390000;
    ev.revision = 10;
    ev.subject = "signal.01JABCDEFGHJKMNPQRSTVWXYZ0.wake.sent";
    ev.type = REEL__V1__EVENT__TYPE__SIGNAL_SENT;
    ev.body_case = REEL__V1__EVENT__BODY_SIGNAL;
    ev.signal = &g;
    item_of(&ev, buf, &it);
    data = sink_event_data(&it, &len, NULL);
    assert_non_null(data);
    o = cJSON_Parse(data);
    sig = cJSON_GetObjectItem(o, "signal");
    assert_true(cJSON_IsObject(sig));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(sig, "scheduled")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(sig, "deliver_at_ms")));
    assert_non_null(strstr(data, "\"journal_seq\":0,\"scheduled\":true,"
                                 "\"deliver_at_ms\":1614265390000}"));
    cJSON_Delete(o);
    free(data);
    /* Delivered (or sent for now): false and the time, never left out. */
    g.scheduled = 0;
    g.deliver_at_ms = 0;
    item_of(&ev, buf, &it);
    data = sink_event_data(&it, &len, NULL);
    assert_non_null(strstr(data, "\"scheduled\":false,\"deliver_at_ms\":0}"));
    free(data);
}

static void test_event_batch_body_has_an_array_of_data(void **state) {
    char *datas[2] = {"{\"revision\":1}", "{\"revision\":2}"};
    size_t lens[2] = {14, 14}, len;
    char *body = sink_event_wrap(3, 1614265330000, datas, lens, 2, 1, &len);

    (void)state;
    assert_non_null(body);
    assert_string_equal(body, "{\"type\":\"reel.batch\",\"timestamp\":"
                              "\"2021-02-25T15:02:10.000Z\",\"data\":"
                              "[{\"revision\":1},{\"revision\":2}]}");
    assert_int_equal(len, strlen(body));
    free(body);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_an_event_short_of_memory_is_none_not_part),
        cmocka_unit_test(test_config_errors_name_the_sink_and_the_field),
        cmocka_unit_test(test_config_urls_need_a_host_and_a_port_in_range),
        cmocka_unit_test(test_config_refuses_repeated_keys_and_trailing_text),
        cmocka_unit_test(test_config_patterns_must_be_utf8),
        cmocka_unit_test(test_config_block_refuses_max_age),
        cmocka_unit_test(test_config_refuses_request_control_headers),
        cmocka_unit_test(
            test_config_patterns_with_an_empty_token_never_match),
        cmocka_unit_test(test_config_messages_never_repeat_a_url_credential),
        cmocka_unit_test(test_config_messages_never_repeat_a_secret),
        cmocka_unit_test(test_config_one_stream_name_on_two_servers),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(
            test_config_that_cannot_fit_the_open_files_limit_is_refused),
        cmocka_unit_test(test_sign_passes_the_standard_webhooks_test_vector),
        cmocka_unit_test(test_sign_lists_a_signature_for_every_secret),
        cmocka_unit_test(test_retry_follows_the_schedule_within_its_jitter),
        cmocka_unit_test(test_retry_stops_at_max_age),
        cmocka_unit_test(test_retry_after_takes_seconds_or_a_date_capped),
        cmocka_unit_test(test_retry_after_cannot_pass_max_age),
        cmocka_unit_test(
            test_retry_log_credits_retry_after_only_when_it_set_the_wait),
        cmocka_unit_test(test_subject_escapes_what_nats_refuses),
        cmocka_unit_test(
            test_window_frontier_stops_at_the_first_event_not_done),
        cmocka_unit_test(test_window_is_bounded_by_count_and_bytes),
        cmocka_unit_test(test_window_requeues_what_was_taken_and_not_done),
        cmocka_unit_test(test_event_data_keeps_stored_json_and_exact_numbers),
        cmocka_unit_test(test_event_data_carries_an_artifacts_record),
        cmocka_unit_test(
            test_event_data_has_a_runs_retry_state_and_a_signals_schedule),
        cmocka_unit_test(test_event_batch_body_has_an_array_of_data),
    };

    sink_event_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
