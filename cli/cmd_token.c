/*
 * cli/cmd_token.c: reelctl token create|ls|revoke, over reel.v1.Admin's
 * token methods (scope admin; docs/security.md).
 *
 * create prints the token once: alone on its line (text), or as the
 * "token" field (--json), beside its id and record. reeld keeps only its
 * hash, so a lost token is revoked and made again, never shown again.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "reel/v1/admin.pb-c.h"
#include "client/client.h"
#include "cli/ctl.h"

/* reeld's limit on a token's ttl (auth/auth.h AUTH_TTL_MAX_MS): 100 years. */
#define TOKEN_TTL_MAX_MS 3155760000000ULL

enum token_flag { TF_TENANT, TF_SCOPE, TF_TTL, TF_NAME, TF_COUNT };

static const ctl_flag_spec_t token_flags[TF_COUNT] = {
    [TF_TENANT] = {"--tenant", CTL_STR, "TENANT", 0, 0},
    [TF_SCOPE] = {"--scope", CTL_STR, "SCOPE,...", 0, 0},
    [TF_TTL] = {"--ttl", CTL_DURATION, "DURATION", TOKEN_TTL_MAX_MS, 0},
    [TF_NAME] = {"--name", CTL_STR, "NAME", 0, 0},
};

#define TF(f) CTL_F(f)

static cJSON *info_json(const Reel__V1__TokenInfo *t) {
    cJSON *o = cJSON_CreateObject(), *sc = cJSON_AddArrayToObject(o, "scopes");
    char when[32];

    cJSON_AddStringToObject(o, "id", t->id);
    cJSON_AddStringToObject(o, "tenant", t->tenant);
    for (size_t i = 0; i < t->n_scopes; i++)
        cJSON_AddItemToArray(sc, cJSON_CreateString(t->scopes[i]));
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddStringToObject(o, "created",
                            ctl_iso_time(t->created_ms, when, sizeof(when)));
    if (t->expires_ms != 0)
        cJSON_AddStringToObject(
            o, "expires", ctl_iso_time(t->expires_ms, when, sizeof(when)));
    else
        cJSON_AddNullToObject(o, "expires");
    return o;
}

static void info_text(const Reel__V1__TokenInfo *t) {
    char when[32];

    printf("%s  %s  ", t->id, t->tenant);
    for (size_t i = 0; i < t->n_scopes; i++)
        printf("%s%s", i ? "," : "", t->scopes[i]);
    printf("  expires %s  %s\n",
           t->expires_ms ? ctl_iso_time(t->expires_ms, when, sizeof(when))
                         : "never",
           t->name);
}

static int token_create(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__CreateTokenRequest req = REEL__V1__CREATE_TOKEN_REQUEST__INIT;
    Reel__V1__CreateTokenResponse *r;
    char *list = NULL, *scopes[32], *s;
    size_t n = 0;
    int rc;

    if ((list = strdup(a->str[TF_SCOPE])) == NULL)
        return EXIT_FAIL;
    /* Every name between commas is sent: an empty one ("a,,b", a comma at
     * either end) is a mistake to name, not to skip. */
    for (s = list; *s != '\0';) {
        char *comma = strchr(s, ',');

        if (comma != NULL)
            *comma = '\0';
        if (*s == '\0' || (comma != NULL && comma[1] == '\0')) {
            size_t empty = *s == '\0' ? n + 1 : n + 2;

            free(list);
            return ctl_usage_error(a, "--scope: scope %zu is empty (a "
                                      "comma-separated list, e.g. "
                                      "kv:read,kv:write)",
                                   empty);
        }
        if (n == sizeof(scopes) / sizeof(*scopes)) {
            free(list);
            return ctl_usage_error(a, "--scope: more than %zu scopes",
                                   sizeof(scopes) / sizeof(*scopes));
        }
        scopes[n++] = s;
        if (comma == NULL)
            break;
        s = comma + 1;
    }
    if (n == 0) {
        free(list);
        return ctl_usage_error(a, "--scope: at least one scope, e.g. "
                                  "kv:read,kv:write");
    }
    req.tenant = a->str[TF_TENANT];
    req.scopes = scopes;
    req.n_scopes = n;
    if (ctl_has(a, TF_NAME))
        req.name = a->str[TF_NAME];
    if (ctl_has(a, TF_TTL))
        req.ttl_ms = (int64_t)a->num[TF_TTL];
    r = ctl_call(ctl, a, "CreateToken", &req,
                 &reel__v1__create_token_response__descriptor, &rc);
    free(list);
    if (r == NULL)
        return rc;
    if (ctl->json) {
        cJSON *o = r->info ? info_json(r->info) : cJSON_CreateObject();

        cJSON_AddStringToObject(o, "token", r->token);
        ctl_print_json_line(o);
    } else {
        printf("%s\n", r->token);
        ctl_hint("token %s created: it is shown this once (reel keeps only "
                 "its hash)",
                 r->info ? r->info->id : "");
    }
    memset(r->token, 0, strlen(r->token));
    reel__v1__create_token_response__free_unpacked(r, NULL);
    return EXIT_OK;
}

static int token_ls(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__ListTokensRequest req = REEL__V1__LIST_TOKENS_REQUEST__INIT;
    Reel__V1__ListTokensResponse *r;
    int rc;

    if (ctl_has(a, TF_TENANT))
        req.tenant = a->str[TF_TENANT];
    r = ctl_call(ctl, a, "ListTokens", &req,
                 &reel__v1__list_tokens_response__descriptor, &rc);
    if (r == NULL)
        return rc;
    for (size_t i = 0; i < r->n_tokens; i++) {
        if (ctl->json)
            ctl_print_json_line(info_json(r->tokens[i]));
        else
            info_text(r->tokens[i]);
    }
    reel__v1__list_tokens_response__free_unpacked(r, NULL);
    return EXIT_OK;
}

static int token_revoke(ctl_t *ctl, const ctl_args_t *a) {
    Reel__V1__RevokeTokenRequest req = REEL__V1__REVOKE_TOKEN_REQUEST__INIT;
    Reel__V1__RevokeTokenResponse *r;
    int rc;

    req.id = a->pos[0];
    r = ctl_call(ctl, a, "RevokeToken", &req,
                 &reel__v1__revoke_token_response__descriptor, &rc);
    if (r == NULL)
        return rc;
    if (ctl->json) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "id", a->pos[0]);
        cJSON_AddNumberToObject(o, "streams_ended",
                                (double)r->streams_ended);
        ctl_print_json_line(o);
    } else {
        printf("revoked %s (%llu open streams ended)\n", a->pos[0],
               (unsigned long long)r->streams_ended);
    }
    reel__v1__revoke_token_response__free_unpacked(r, NULL);
    return EXIT_OK;
}

static const ctl_command_t token_commands[] = {
    {"create", {NULL}, 0, TF(TF_TENANT) | TF(TF_SCOPE) | TF(TF_TTL) | TF(TF_NAME),
     TF(TF_TENANT) | TF(TF_SCOPE),
     "create a token of TENANT with the scopes (kv:read, kv:write,\n"
     "      journal:read, journal:write, signals:send, signals:await, "
     "wal:read,\n"
     "      wal:consume, workspace:read, workspace:write, admin); prints "
     "it\n"
     "      once (--json: its \"token\" field)",
     token_create},
    {"ls", {NULL}, 0, TF(TF_TENANT), 0,
     "list tokens (never their secrets), one per line; --tenant: only its",
     token_ls},
    {"revoke", {"ID"}, 1, 0, 0,
     "revoke the token ID at once: its open streams end UNAUTHENTICATED",
     token_revoke},
    {NULL, {NULL}, 0, 0, 0, NULL, NULL},
};

const ctl_group_t ctl_token_group = {
    "token", "reel.v1.Admin", token_flags, TF_COUNT, token_commands,
};
