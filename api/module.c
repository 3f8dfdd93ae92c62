/*
 * api/module.c: reeld's module table: its checks, and the steps of start
 * and shutdown that go through it (api/module.h).
 *
 * The checks run once, before the store opens, so a table that would
 * misroute changes (two modules under one id or one subject token) or
 * open one column family for two modules never starts.
 */
#include "api/module.h"

#include <string.h>
#include <time.h>

#include "api/services.h"
#include "base/fault.h"

/* The module in list[0..n) that declares subject token or column family
 * `name` (which: 0 subjects, 1 column families), or NULL. */
static const api_module_t *claims(const api_module_t *const *list, size_t n,
                                  int which, const char *name) {
    for (size_t i = 0; i < n; i++) {
        if (which == 0 && list[i]->subjects != NULL) {
            for (const char *const *s = list[i]->subjects; *s != NULL; s++)
                if (strcmp(*s, name) == 0)
                    return list[i];
        } else if (which == 1 && list[i]->cfs != NULL) {
            for (const store_cf_desc_t *d = list[i]->cfs; d->name != NULL; d++)
                if (strcmp(d->name, name) == 0)
                    return list[i];
        }
    }
    return NULL;
}

static reel_code_t check_one(const api_module_t *const *list, size_t i,
                             const api_module_t *const *by_id,
                             reel_status_t *st) {
    const api_module_t *m = list[i], *other;

    if (m->name == NULL || *m->name == '\0')
        return reel_status_set(st, REEL_INTERNAL,
                               "module %zu of the table has no name", i);
    for (size_t j = 0; j < i; j++)
        if (strcmp(list[j]->name, m->name) == 0)
            return reel_status_set(st, REEL_INTERNAL,
                                   "two modules are named \"%s\"", m->name);
    if (m->id > API_MODULE_ID_MAX)
        return reel_status_set(st, REEL_INTERNAL,
                               "module %s: id %u is past %d", m->name, m->id,
                               API_MODULE_ID_MAX);
    if (m->id != 0 && by_id[m->id] != NULL)
        return reel_status_set(st, REEL_INTERNAL,
                               "modules %s and %s both have id %u",
                               by_id[m->id]->name, m->name, m->id);
    if ((m->id != 0) != (m->encode != NULL))
        return reel_status_set(st, REEL_INTERNAL,
                               "module %s: %s", m->name,
                               m->id != 0 ? "emits changes (id) but has no "
                                            "encoder"
                                          : "has an encoder but no id");
    if (m->id != 0 && (m->subjects == NULL || *m->subjects == NULL))
        return reel_status_set(st, REEL_INTERNAL,
                               "module %s: emits changes but names no "
                               "subject token",
                               m->name);
    for (const char *const *s = m->subjects; s != NULL && *s != NULL; s++) {
        if (**s == '\0' || strpbrk(*s, ".*>") != NULL)
            return reel_status_set(st, REEL_INTERNAL,
                                   "module %s: subject token \"%s\" is not "
                                   "one token",
                                   m->name, *s);
        if ((other = claims(list, i, 0, *s)) != NULL)
            return reel_status_set(st, REEL_INTERNAL,
                                   "modules %s and %s both claim subject "
                                   "token \"%s\"",
                                   other->name, m->name, *s);
    }
    for (const store_cf_desc_t *d = m->cfs; d != NULL && d->name != NULL; d++)
        if ((other = claims(list, i, 1, d->name)) != NULL)
            return reel_status_set(st, REEL_INTERNAL,
                                   "modules %s and %s both declare column "
                                   "family \"%s\"",
                                   other->name, m->name, d->name);
    return REEL_OK;
}

reel_code_t api_modules_init(api_ctx_t *ctx, const api_module_t *const *list,
                             size_t n, reel_status_t *st) {
    api_modules_t *t = &ctx->modules;
    size_t n_cfs = 0;
    reel_code_t rc;

    memset(t, 0, sizeof(*t));
    if (n > API_MODULES_MAX)
        return reel_status_set(st, REEL_INTERNAL,
                               "the module table lists %zu modules; at most "
                               "%d",
                               n, API_MODULES_MAX);
    for (size_t i = 0; i < n; i++) {
        if ((rc = check_one(list, i, t->by_id, st)) != REEL_OK) {
            memset(t, 0, sizeof(*t));
            return rc;
        }
        if (list[i]->id != 0)
            t->by_id[list[i]->id] = list[i];
        if (list[i]->cfs != NULL)
            t->cfs[n_cfs++] = list[i]->cfs;
    }
    t->list = list;
    t->n = n;
    return REEL_OK;
}

int api_modules_serve(rpc_server_t *srv, api_ctx_t *ctx) {
    for (size_t i = 0; i < ctx->modules.n; i++) {
        const api_module_t *m = ctx->modules.list[i];

        if (m->serve != NULL && m->serve(srv, ctx) != 0)
            return -1;
    }
    return 0;
}

reel_code_t api_modules_start(api_ctx_t *ctx, reel_status_t *st) {
    reel_code_t rc;

    for (size_t i = 0; i < ctx->modules.n; i++) {
        const api_module_t *m = ctx->modules.list[i];

        /* A test's slow start (recovery work on a large data dir): what
         * an earlier module set going must wait for ready regardless. */
        if (i > 0 && REEL_FAULT("api.module_start_slow"))
            nanosleep(&(struct timespec){0, 300 * 1000000L}, NULL);
        if (m->start != NULL && (rc = m->start(ctx, st)) != REEL_OK)
            return rc;
    }
    for (size_t i = 0; i < ctx->modules.n; i++) {
        const api_module_t *m = ctx->modules.list[i];

        if (m->ready != NULL && (rc = m->ready(ctx, st)) != REEL_OK)
            return rc;
    }
    return REEL_OK;
}

void api_modules_stop(api_ctx_t *ctx) {
    for (size_t i = ctx->modules.n; i > 0; i--)
        if (ctx->modules.list[i - 1]->stop != NULL)
            ctx->modules.list[i - 1]->stop(ctx);
}

void api_modules_destroy(api_ctx_t *ctx) {
    for (size_t i = ctx->modules.n; i > 0; i--)
        if (ctx->modules.list[i - 1]->destroy != NULL)
            ctx->modules.list[i - 1]->destroy(ctx);
}
