/*
 * cli/cmd_ws.c: reelctl ws put|get|stat|ls|rm|watch, on reel.v1.Workspace.
 *
 * put streams a file (or standard input) in 1 MiB chunks, each read only
 * when the last has gone out, so memory stays at one chunk whatever the
 * file's size; on a terminal, stderr shows a progress bar. get streams the
 * bytes to a file (-o) or to standard output and checks their SHA-256
 * against the record before it says OK (a file that does not match is
 * removed). The other commands print records: text, or --json.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "reel/v1/workspace.pb-c.h"
#include "base/text.h"
#include "client/client.h"
#include "cli/ctl.h"

#define WS_CHUNK ((size_t)1 << 20)

enum ws_flag {
    WF_CREATE,
    WF_IF_VERSION,
    WF_TYPE,
    WF_META,
    WF_OUT,
    WF_VERSION,
    WF_OFFSET,
    WF_LENGTH,
    WF_LIMIT,
    WF_ALL,
    WF_START_AFTER,
    WF_DELETED,
    WF_NOW,
    WF_FROM_REVISION,
    WF_COUNT
};

static const ctl_flag_spec_t ws_flags[WF_COUNT] = {
    [WF_CREATE] = {"--create", CTL_BOOL, NULL, 0, 0},
    [WF_IF_VERSION] = {"--if-version", CTL_NUM, "N", UINT64_MAX, 0},
    [WF_TYPE] = {"--type", CTL_STR, "CONTENT_TYPE", 0, 0},
    [WF_META] = {"--meta", CTL_STR, "K=V", 0, 1},
    [WF_OUT] = {"--output", CTL_STR, "FILE", 0, 0, "-o"},
    [WF_VERSION] = {"--version", CTL_NUM, "N", UINT64_MAX, 0},
    [WF_OFFSET] = {"--offset", CTL_NUM, "N", UINT64_MAX, 0},
    [WF_LENGTH] = {"--length", CTL_NUM, "N", UINT64_MAX, 0},
    [WF_LIMIT] = {"--limit", CTL_NUM, "N", 1000, 0},
    [WF_ALL] = {"--all", CTL_BOOL, NULL, 0, 0},
    [WF_START_AFTER] = {"--start-after", CTL_STR, "KEY", 0, 0},
    [WF_DELETED] = {"--deleted", CTL_BOOL, NULL, 0, 0},
    [WF_NOW] = {"--now", CTL_BOOL, NULL, 0, 0},
    [WF_FROM_REVISION] = {"--from-revision", CTL_NUM, "N", UINT64_MAX, 0},
};

/* ---- Records ----------------------------------------------------------------- */

cJSON *ctl_artifact_json(const Reel__V1__Artifact *a) {
    char sha[65] = "";
    cJSON *o, *m;

    if (a == NULL)
        return cJSON_CreateNull();
    if (a->sha256.len == 32)
        reel_hex(a->sha256.data, 32, sha);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "namespace", a->namespace_);
    cJSON_AddStringToObject(o, "key", a->key);
    cJSON_AddNumberToObject(o, "version", (double)a->version);
    cJSON_AddNumberToObject(o, "size", (double)a->size);
    cJSON_AddStringToObject(o, "sha256", sha);
    cJSON_AddStringToObject(o, "content_type", a->content_type);
    m = cJSON_AddObjectToObject(o, "metadata");
    for (size_t i = 0; m != NULL && i < a->n_metadata; i++)
        cJSON_AddStringToObject(m, a->metadata[i]->key,
                                a->metadata[i]->value);
    cJSON_AddNumberToObject(o, "revision", (double)a->revision);
    cJSON_AddNumberToObject(o, "created_at_ms", (double)a->created_at_ms);
    cJSON_AddNumberToObject(o, "updated_at_ms", (double)a->updated_at_ms);
    cJSON_AddBoolToObject(o, "deleted", a->deleted);
    cJSON_AddNumberToObject(o, "chunk_size", (double)a->chunk_size);
    return o;
}

/* "docs/a.pdf v3 1048576 bytes sha256 ab12... application/pdf rev 17" */
static void print_artifact(const Reel__V1__Artifact *a) {
    char sha[65] = "";

    if (a->deleted) {
        printf("%s (deleted, version %llu) rev %llu\n", ctl_name(a->key),
               (unsigned long long)a->version,
               (unsigned long long)a->revision);
        return;
    }
    if (a->sha256.len == 32)
        reel_hex(a->sha256.data, 32, sha);
    printf("%s v%llu %llu bytes sha256 %s%s%s rev %llu\n", ctl_name(a->key),
           (unsigned long long)a->version, (unsigned long long)a->size, sha,
           *a->content_type ? " " : "", ctl_name(a->content_type),
           (unsigned long long)a->revision);
}

static void say_artifact(const ctl_t *ctl, const Reel__V1__Artifact *a) {
    if (ctl->json)
        ctl_print_json_line(ctl_artifact_json(a));
    else if (a != NULL)
        print_artifact(a);
}

/* ---- put ---------------------------------------------------------------------- */

typedef struct put_state {
    const ctl_args_t *a;
    FILE *in;
    Reel__V1__ArtifactHeader header;
    int header_sent;
    int failed; /* a read error, said */
    uint8_t *buf;
    uint64_t sent, total; /* total: 0 when unknown (a pipe) */
    int bar;              /* stderr is a terminal */
    int64_t last_bar_ms;
} put_state_t;

static int64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void progress(put_state_t *p, int last) {
    char line[128];
    int64_t t = now_ms();

    if (!p->bar || (!last && t - p->last_bar_ms < 100))
        return;
    p->last_bar_ms = t;
    if (p->total > 0) {
        int filled = (int)(30 * p->sent / p->total);

        snprintf(line, sizeof(line), "\r[%-30.*s] %3d%% %llu/%llu MiB",
                 filled, "==============================",
                 (int)(100 * p->sent / p->total),
                 (unsigned long long)(p->sent >> 20),
                 (unsigned long long)(p->total >> 20));
    } else {
        snprintf(line, sizeof(line), "\r%llu MiB sent",
                 (unsigned long long)(p->sent >> 20));
    }
    fputs(line, stderr);
    if (last)
        fputs("\n", stderr);
}

static int put_next(void *arg, uint8_t **msg, size_t *len) {
    put_state_t *p = arg;
    Reel__V1__PutArtifactRequest req = REEL__V1__PUT_ARTIFACT_REQUEST__INIT;
    size_t n;

    if (!p->header_sent) {
        req.part_case = REEL__V1__PUT_ARTIFACT_REQUEST__PART_HEADER;
        req.header = &p->header;
        p->header_sent = 1;
    } else {
        n = fread(p->buf, 1, WS_CHUNK, p->in);
        if (n == 0) {
            if (ferror(p->in)) {
                fprintf(stderr, "reelctl: ws put: reading %s: %s\n",
                        p->a->pos[2], strerror(errno));
                p->failed = 1;
                return -1;
            }
            progress(p, 1);
            return 0;
        }
        req.part_case = REEL__V1__PUT_ARTIFACT_REQUEST__PART_CHUNK;
        req.chunk.data = p->buf;
        req.chunk.len = n;
        p->sent += n;
        progress(p, 0);
    }
    if ((*msg = ctl_pack(&req, len)) == NULL) {
        p->failed = 1;
        return -1;
    }
    return 1;
}

static int ws_put(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__PutArtifactResponse *resp = NULL;
    Reel__V1__ArtifactHeader__MetadataEntry *meta = NULL, **mptrs = NULL;
    put_state_t p = {0};
    reel_reply_t r = {0};
    struct stat sb;
    int rc = EXIT_FAIL;

    if (ctl_has(a, WF_CREATE) && ctl_has(a, WF_IF_VERSION))
        return ctl_usage_error(a, "use one of --create and --if-version");
    reel__v1__artifact_header__init(&p.header);
    p.a = a;
    p.header.namespace_ = a->pos[0];
    p.header.key = a->pos[1];
    if (ctl_has(a, WF_TYPE))
        p.header.content_type = a->str[WF_TYPE];
    if (ctl_has(a, WF_CREATE))
        p.header.precondition = REEL__V1__PRECONDITION__PRECONDITION_ABSENT;
    if (ctl_has(a, WF_IF_VERSION)) {
        p.header.precondition = REEL__V1__PRECONDITION__PRECONDITION_VERSION;
        p.header.expected_version = a->num[WF_IF_VERSION];
    }
    if (a->nmany[WF_META] > 0) {
        meta = calloc(a->nmany[WF_META], sizeof(*meta));
        mptrs = calloc(a->nmany[WF_META], sizeof(*mptrs));
        if (meta == NULL || mptrs == NULL) {
            fprintf(stderr, "reelctl: out of memory\n");
            goto out;
        }
        for (size_t i = 0; i < a->nmany[WF_META]; i++) {
            char *eq = strchr(a->many[WF_META][i], '=');

            if (eq == NULL) {
                rc = ctl_usage_error(a, "--meta %s: write it KEY=VALUE",
                                     a->many[WF_META][i]);
                goto out;
            }
            *eq = '\0';
            reel__v1__artifact_header__metadata_entry__init(&meta[i]);
            meta[i].key = a->many[WF_META][i];
            meta[i].value = eq + 1;
            mptrs[i] = &meta[i];
        }
        p.header.n_metadata = a->nmany[WF_META];
        p.header.metadata = mptrs;
    }
    if (strcmp(a->pos[2], "-") == 0) {
        p.in = stdin;
    } else if ((p.in = fopen(a->pos[2], "rb")) == NULL) {
        fprintf(stderr, "reelctl: ws put: cannot open %s: %s\n", a->pos[2],
                strerror(errno));
        goto out;
    }
    /* A regular file's size goes in the header: reeld refuses one over
     * its limit before a byte is sent, and checks the count at the end. */
    if (fstat(fileno(p.in), &sb) == 0 && S_ISREG(sb.st_mode)) {
        p.header.has_size = 1;
        p.header.size = (uint64_t)sb.st_size;
        p.total = (uint64_t)sb.st_size;
    }
    p.bar = isatty(STDERR_FILENO);
    if ((p.buf = malloc(WS_CHUNK)) == NULL) {
        fprintf(stderr, "reelctl: out of memory\n");
        goto out;
    }
    /* An upload takes as long as the bytes take: no deadline (a dead
     * server is found by the connection's keepalive). */
    reel_client_upload(ctl->client, "/reel.v1.Workspace/PutArtifact", 0,
                       put_next, &p, &r);
    if (p.failed)
        goto out;
    if (r.code != 0) {
        if (p.bar)
            fputs("\n", stderr);
        rc = ctl_report_error(ctl, "ws put", &r);
        goto out;
    }
    resp = reel__v1__put_artifact_response__unpack(NULL, r.len, r.body);
    if (resp == NULL || resp->artifact == NULL) {
        fprintf(stderr, "reelctl: ws put: malformed answer\n");
        goto out;
    }
    say_artifact(ctl, resp->artifact);
    rc = EXIT_OK;
out:
    if (resp != NULL)
        reel__v1__put_artifact_response__free_unpacked(resp, NULL);
    if (p.in != NULL && p.in != stdin)
        fclose(p.in);
    free(p.buf);
    free(meta);
    free(mptrs);
    reel_reply_fini(&r);
    return rc;
}

/* ---- get ---------------------------------------------------------------------- */

typedef struct get_state {
    FILE *out;
    const char *path; /* NULL: stdout */
    char *dest;       /* the regular file the temporary one replaces */
    char *tmp;        /* the temporary file beside it; NULL: direct */
    EVP_MD_CTX *md;
    Reel__V1__Artifact *rec;
    uint64_t got;
    int failed;
    int gone; /* stdout's reader left (ws get | head -c N): exit 0 */
} get_state_t;

/*
 * The temporary file of a download in progress, removed if Ctrl-C (or
 * SIGTERM, SIGHUP) ends reelctl first: unlink() is async-signal-safe, and
 * the signal then does what it would have done.
 */
static char *volatile get_tmp_live;

static void get_on_signal(int sig) {
    char *tmp = get_tmp_live;

    if (tmp != NULL)
        unlink(tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

static const int get_signals[] = {SIGINT, SIGTERM, SIGHUP};

/* Whether those signals wait (during the rename) or come. */
static void get_hold_signals(int hold) {
    sigset_t set;

    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(get_signals) / sizeof(*get_signals); i++)
        sigaddset(&set, get_signals[i]);
    sigprocmask(hold ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

/*
 * Opens where -o points. A regular file (or a new one, or a symbolic
 * link to one) is written whole or not at all: a temporary file beside
 * it, renamed over it once the bytes are checked and synced; until then
 * the file there is untouched, whatever fails. Anything else (a device
 * such as /dev/null, a FIFO) is written to directly, and never removed.
 * 0, or -1 (said).
 */
static int get_open(get_state_t *g) {
    struct stat sb;
    const char *slash;
    int fd;

    if (stat(g->path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        if (S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "reelctl: ws get: %s is a directory\n", g->path);
            return -1;
        }
        if ((g->out = fopen(g->path, "wb")) == NULL) {
            fprintf(stderr, "reelctl: ws get: cannot open %s: %s\n", g->path,
                    strerror(errno));
            return -1;
        }
        return 0;
    }
    /* Through a symbolic link: the file it names is the one replaced. */
    if ((g->dest = realpath(g->path, NULL)) == NULL &&
        (errno != ENOENT || (g->dest = strdup(g->path)) == NULL)) {
        fprintf(stderr, "reelctl: ws get: %s: %s\n", g->path,
                strerror(errno));
        return -1;
    }
    slash = strrchr(g->dest, '/');
    if ((g->tmp = malloc(strlen(g->dest) + 24)) == NULL)
        return -1;
    sprintf(g->tmp, "%.*s.%s.reel-XXXXXX",
            slash ? (int)(slash - g->dest + 1) : 0, g->dest,
            slash ? slash + 1 : g->dest);
    if ((fd = mkstemp(g->tmp)) < 0) {
        fprintf(stderr, "reelctl: ws get: cannot create a file beside %s: "
                        "%s\n",
                g->path, strerror(errno));
        free(g->tmp);
        g->tmp = NULL;
        return -1;
    }
    /* The mode the file had, or a new file's (0666 less the umask). */
    if (stat(g->dest, &sb) == 0) {
        (void)fchmod(fd, sb.st_mode & 07777);
    } else {
        mode_t um = umask(0);

        umask(um);
        (void)fchmod(fd, 0666 & ~um);
    }
    if ((g->out = fdopen(fd, "wb")) == NULL) {
        close(fd);
        unlink(g->tmp);
        return -1;
    }
    get_tmp_live = g->tmp;
    for (size_t i = 0; i < sizeof(get_signals) / sizeof(*get_signals); i++)
        signal(get_signals[i], get_on_signal);
    return 0;
}

/* Ends the output: on success the temporary file takes the place of the
 * destination; otherwise it is removed and the destination left as it
 * was. 0, or -1 (said). */
static int get_close(get_state_t *g, int ok) {
    int rc = 0;

    if (g->out == NULL || g->out == stdout)
        return 0;
    if (ok && g->tmp != NULL && fsync(fileno(g->out)) != 0) {
        fprintf(stderr, "reelctl: ws get: writing %s: %s\n", g->path,
                strerror(errno));
        ok = 0;
        rc = -1;
    }
    if (fclose(g->out) != 0 && ok) {
        fprintf(stderr, "reelctl: ws get: writing %s: %s\n", g->path,
                strerror(errno));
        ok = 0;
        rc = -1;
    }
    g->out = NULL;
    if (g->tmp == NULL)
        return rc;
    /* A signal now waits until the file is in place or gone. */
    get_hold_signals(1);
    if (ok && rename(g->tmp, g->dest) != 0) {
        fprintf(stderr, "reelctl: ws get: cannot replace %s: %s\n", g->path,
                strerror(errno));
        ok = 0;
        rc = -1;
    }
    if (!ok)
        unlink(g->tmp); /* never a partial or wrong file, nor a stray one */
    get_tmp_live = NULL;
    get_hold_signals(0);
    return rc;
}

static int get_msg(void *arg, const uint8_t *msg, size_t len) {
    get_state_t *g = arg;
    Reel__V1__GetArtifactResponse *m =
        reel__v1__get_artifact_response__unpack(NULL, len, msg);
    int stop = 0;

    if (m == NULL) {
        fprintf(stderr, "reelctl: ws get: malformed message\n");
        g->failed = 1;
        return 1;
    }
    if (m->part_case == REEL__V1__GET_ARTIFACT_RESPONSE__PART_ARTIFACT &&
        g->rec == NULL) {
        g->rec = m->artifact;
        m->artifact = NULL;
    } else if (m->part_case == REEL__V1__GET_ARTIFACT_RESPONSE__PART_CHUNK) {
        if (fwrite(m->chunk.data, 1, m->chunk.len, g->out) != m->chunk.len) {
            if (g->path == NULL && ctl_reader_left()) {
                g->gone = 1; /* the reader had what it wanted */
            } else {
                fprintf(stderr, "reelctl: ws get: writing %s: %s\n",
                        g->path ? g->path : "standard output",
                        strerror(errno));
                g->failed = 1;
            }
            stop = 1;
        }
        EVP_DigestUpdate(g->md, m->chunk.data, m->chunk.len);
        g->got += m->chunk.len;
    }
    reel__v1__get_artifact_response__free_unpacked(m, NULL);
    return stop;
}

static int ws_get(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__GetArtifactRequest req = REEL__V1__GET_ARTIFACT_REQUEST__INIT;
    get_state_t g = {0};
    reel_reply_t r = {0};
    uint8_t *buf = NULL, digest[32];
    unsigned int dlen = 0;
    size_t len;
    int rc = EXIT_FAIL, whole;

    /* The wire's 0 is "to the end"; a flag that says 0 means nothing. */
    if (ctl_has(a, WF_LENGTH) && a->num[WF_LENGTH] == 0)
        return ctl_usage_error(a, "--length: at least 1 (leave it out to "
                                  "read to the end)");
    if (ctl_has(a, WF_OUT) && a->str[WF_OUT][0] == '\0')
        return ctl_usage_error(a, "--output: an empty file name (- for "
                                  "standard output)");
    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    req.version = ctl_has(a, WF_VERSION) ? a->num[WF_VERSION] : 0;
    req.offset = ctl_has(a, WF_OFFSET) ? a->num[WF_OFFSET] : 0;
    req.length = ctl_has(a, WF_LENGTH) ? a->num[WF_LENGTH] : 0;
    whole = req.offset == 0 && req.length == 0;
    g.path = ctl_has(a, WF_OUT) && strcmp(a->str[WF_OUT], "-") != 0
                 ? a->str[WF_OUT]
                 : NULL;
    if ((g.md = EVP_MD_CTX_new()) == NULL ||
        EVP_DigestInit_ex(g.md, EVP_sha256(), NULL) != 1 ||
        (buf = ctl_pack(&req, &len)) == NULL)
        goto out;
    if (g.path != NULL && get_open(&g) != 0)
        goto out;
    if (g.path == NULL)
        g.out = stdout;
    /* As put: no deadline on a download. */
    reel_client_stream(ctl->client, "/reel.v1.Workspace/GetArtifact", buf, len,
                       0, get_msg, &g, &r);
    if (g.failed)
        goto out;
    if (g.gone) {
        rc = EXIT_OK;
        goto out;
    }
    if (r.code != 0) {
        rc = ctl_report_error(ctl, "ws get", &r);
        goto out;
    }
    if (fflush(g.out) != 0) {
        if (g.path == NULL && ctl_reader_left()) {
            rc = EXIT_OK;
            goto out;
        }
        fprintf(stderr, "reelctl: ws get: writing %s: %s\n",
                g.path ? g.path : "standard output", strerror(errno));
        goto out;
    }
    EVP_DigestFinal_ex(g.md, digest, &dlen);
    if (whole && (g.rec == NULL || g.rec->size != g.got ||
                  g.rec->sha256.len != 32 ||
                  memcmp(g.rec->sha256.data, digest, 32) != 0)) {
        fprintf(stderr,
                "reelctl: ws get: the bytes received do not match the "
                "record's size and SHA-256\n");
        goto out;
    }
    /* A range: as many bytes as the record has from the offset, up to
     * the length asked for; a stream cut short ends in an error, not in a
     * short file. */
    if (!whole && g.rec != NULL) {
        uint64_t left = g.rec->size > req.offset ? g.rec->size - req.offset
                                                 : 0;
        uint64_t want = req.length != 0 && req.length < left ? req.length
                                                             : left;

        if (g.got != want) {
            fprintf(stderr,
                    "reelctl: ws get: received %llu bytes of the range, "
                    "expected %llu\n",
                    (unsigned long long)g.got, (unsigned long long)want);
            goto out;
        }
    }
    if (get_close(&g, 1) != 0)
        goto out;
    if (g.path != NULL) {
        if (ctl->json)
            ctl_print_json_line(ctl_artifact_json(g.rec));
        else
            fprintf(stderr, "%s: %llu bytes\n", g.path,
                    (unsigned long long)g.got);
    }
    rc = EXIT_OK;
out:
    get_close(&g, 0);
    free(g.dest);
    free(g.tmp);
    if (g.rec != NULL)
        reel__v1__artifact__free_unpacked(g.rec, NULL);
    if (g.md != NULL)
        EVP_MD_CTX_free(g.md);
    free(buf);
    reel_reply_fini(&r);
    return rc;
}

/* ---- stat, ls, rm ------------------------------------------------------------- */

static int ws_stat(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__StatArtifactRequest req = REEL__V1__STAT_ARTIFACT_REQUEST__INIT;
    Reel__V1__StatArtifactResponse *resp;
    int rc;

    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    req.version = ctl_has(a, WF_VERSION) ? a->num[WF_VERSION] : 0;
    resp = ctl_call(ctl, a, "StatArtifact", &req,
                    &reel__v1__stat_artifact_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    say_artifact(ctl, resp->artifact);
    reel__v1__stat_artifact_response__free_unpacked(resp, NULL);
    return EXIT_OK;
}

static int ws_ls(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ListArtifactsRequest req =
        REEL__V1__LIST_ARTIFACTS_REQUEST__INIT;
    char *after = NULL;
    int rc = EXIT_OK;

    req.namespace_ = a->pos[0];
    req.prefix = a->npos > 1 ? a->pos[1] : "";
    req.limit = ctl_has(a, WF_LIMIT) ? (uint32_t)a->num[WF_LIMIT] : 0;
    req.include_deleted = ctl_has(a, WF_DELETED);
    req.start_after = ctl_has(a, WF_START_AFTER) ? a->str[WF_START_AFTER] : "";
    /* Every page, unless --limit asks for one. */
    for (;;) {
        Reel__V1__ListArtifactsResponse *resp =
            ctl_call(ctl, a, "ListArtifacts", &req,
                     &reel__v1__list_artifacts_response__descriptor, &rc);
        int more;

        if (resp == NULL)
            break;
        for (size_t i = 0; i < resp->n_artifacts; i++)
            say_artifact(ctl, resp->artifacts[i]);
        more = resp->more && (!ctl_has(a, WF_LIMIT) || ctl_has(a, WF_ALL));
        /* One page asked for: say how to go on, as kv ls does. */
        if (resp->more && !more && !ctl->json)
            ctl_hint("more artifacts: --start-after %s, or --all",
                     ctl_name(resp->next_start_after));
        free(after);
        after = strdup(resp->next_start_after);
        reel__v1__list_artifacts_response__free_unpacked(resp, NULL);
        if (!more || after == NULL)
            break;
        req.start_after = after;
    }
    free(after);
    return rc;
}

static int ws_rm(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__DeleteArtifactRequest req =
        REEL__V1__DELETE_ARTIFACT_REQUEST__INIT;
    Reel__V1__DeleteArtifactResponse *resp;
    int rc;

    req.namespace_ = a->pos[0];
    req.key = a->pos[1];
    if (ctl_has(a, WF_IF_VERSION)) {
        req.precondition = REEL__V1__PRECONDITION__PRECONDITION_VERSION;
        req.expected_version = a->num[WF_IF_VERSION];
    }
    resp = ctl_call(ctl, a, "DeleteArtifact", &req,
                    &reel__v1__delete_artifact_response__descriptor, &rc);
    if (resp == NULL)
        return rc;
    rc = resp->existed ? EXIT_OK : EXIT_FAIL;
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddBoolToObject(o, "existed", resp->existed);
        cJSON_AddItemToObject(o, "artifact", ctl_artifact_json(resp->artifact));
        ctl_print_json_line(o);
    } else if (resp->existed) {
        printf("deleted %s/%s (version %llu)\n", ctl_name(a->pos[0]),
               ctl_name(a->pos[1]),
               (unsigned long long)resp->artifact->version);
    } else {
        fprintf(stderr, "%s/%s: nothing to delete\n", ctl_name(a->pos[0]),
                ctl_name(a->pos[1]));
    }
    reel__v1__delete_artifact_response__free_unpacked(resp, NULL);
    return rc;
}

/* ---- watch -------------------------------------------------------------------- */

typedef struct watch_state {
    const ctl_t *ctl;
    int failed, gone;
} watch_state_t;

static int watch_idle(void *arg) {
    watch_state_t *w = arg;

    w->gone = ctl_stdout_gone();
    return w->gone;
}

static int watch_msg(void *arg, const uint8_t *msg, size_t len) {
    watch_state_t *w = arg;
    Reel__V1__ArtifactEvent *ev =
        reel__v1__artifact_event__unpack(NULL, len, msg);
    const char *type;
    int f;

    if (ev == NULL) {
        fprintf(stderr, "reelctl: ws watch: malformed event\n");
        w->failed = 1;
        return 1;
    }
    type = ctl_enum_name(&reel__v1__artifact_event__type__descriptor,
                         (int)ev->type);
    if (w->ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "type", type);
        cJSON_AddNumberToObject(o, "revision", (double)ev->revision);
        cJSON_AddItemToObject(o, "artifact", ctl_artifact_json(ev->artifact));
        ctl_print_json_line(o);
    } else {
        printf("%s ", type);
        if (ev->artifact != NULL)
            print_artifact(ev->artifact);
        else
            printf("rev %llu\n", (unsigned long long)ev->revision);
    }
    reel__v1__artifact_event__free_unpacked(ev, NULL);
    if ((f = ctl_flush()) != 0) {
        w->gone = f > 0;
        w->failed = f < 0;
        return 1;
    }
    return 0;
}

static int ws_watch(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__WatchArtifactsRequest req =
        REEL__V1__WATCH_ARTIFACTS_REQUEST__INIT;
    watch_state_t w = {ctl, 0, 0};
    reel_reply_t r = {0};
    uint8_t *buf;
    size_t len;
    int rc;

    if (ctl_has(a, WF_NOW) && ctl_has(a, WF_FROM_REVISION))
        return ctl_usage_error(a, "use one of --now and --from-revision");
    req.namespace_ = a->pos[0];
    req.prefix = a->npos > 1 ? a->pos[1] : "";
    if (ctl_has(a, WF_NOW))
        req.start = REEL__V1__WATCH_ARTIFACTS_REQUEST__START__START_NOW;
    if (ctl_has(a, WF_FROM_REVISION)) {
        req.start =
            REEL__V1__WATCH_ARTIFACTS_REQUEST__START__START_FROM_REVISION;
        req.from_revision = a->num[WF_FROM_REVISION];
    }
    if ((buf = ctl_pack(&req, &len)) == NULL)
        return EXIT_FAIL;
    reel_client_stream_idle(ctl->client, "/reel.v1.Workspace/WatchArtifacts",
                            buf, len, 0, watch_msg, watch_idle, CTL_IDLE_MS,
                            &w, &r);
    if (w.failed)
        rc = EXIT_FAIL;
    else if (w.gone)
        rc = EXIT_OK;
    else if (r.code != 0)
        rc = ctl_report_error(ctl, "ws watch", &r);
    else
        rc = EXIT_OK;
    reel_reply_fini(&r);
    free(buf);
    return rc;
}

static const ctl_command_t ws_commands[] = {
    {"put", {"NAMESPACE", "KEY", "FILE"}, 3,
     CTL_F(WF_CREATE) | CTL_F(WF_IF_VERSION) | CTL_F(WF_TYPE) |
         CTL_F(WF_META),
     0,
     "store FILE (- for standard input) as KEY's next version; prints its\n"
     "      record; a progress bar on stderr when it is a terminal\n"
     "      --create: only if absent; --if-version N: only at version N;\n"
     "      --type: the content type; --meta K=V (repeatable): metadata",
     ws_put},
    {"get", {"NAMESPACE", "KEY"}, 2,
     CTL_F(WF_OUT) | CTL_F(WF_VERSION) | CTL_F(WF_OFFSET) | CTL_F(WF_LENGTH),
     0,
     "write KEY's bytes to standard output or -o FILE, checking their\n"
     "      SHA-256; FILE is replaced only once they check (a failed get\n"
     "      leaves it as it was; a device or FIFO is written to); --version\n"
     "      N: a retained older version; --offset N and --length N: a range",
     ws_get},
    {"stat", {"NAMESPACE", "KEY"}, 2, CTL_F(WF_VERSION), 0,
     "print KEY's record: version, size, SHA-256, content type", ws_stat},
    {"ls", {"NAMESPACE", "PREFIX"}, 1,
     CTL_F(WF_LIMIT) | CTL_F(WF_ALL) | CTL_F(WF_START_AFTER) |
         CTL_F(WF_DELETED),
     0,
     "list artifacts in key order, every page\n"
     "      --limit N: one page of at most N (--all: every page, N at a "
     "time);\n"
     "      --deleted: tombstones too",
     ws_ls},
    {"rm", {"NAMESPACE", "KEY"}, 2, CTL_F(WF_IF_VERSION), 0,
     "delete KEY (a tombstone; every version's bytes are freed)", ws_rm},
    {"watch", {"NAMESPACE", "PREFIX"}, 1,
     CTL_F(WF_NOW) | CTL_F(WF_FROM_REVISION), 0,
     "print the current artifacts, BOOTSTRAP_DONE, then puts and deletes\n"
     "      as they commit, until Ctrl-C; --now: only what comes next;\n"
     "      --from-revision N: every change after N first",
     ws_watch},
    {NULL, {NULL}, 0, 0, 0, NULL, NULL},
};

const ctl_group_t ctl_ws_group = {
    "ws", "reel.v1.Workspace", ws_flags, WF_COUNT, ws_commands,
};
