/*
 * api/timers_service.c: the timers module as reeld runs it.
 *
 * timers/ has no service of its own: its timers are what other modules
 * schedule (lease expiries, backoffs, suspension timeouts, delayed
 * signals). Its descriptor comes after those modules in reeld's table, so
 * its start can hand them the timers (each registers its kinds). Its
 * ready, once every module has started, arms the store's alarm for the
 * earliest stored timer: timers that fell due while reeld was down fire
 * in the first alarm, once, with every kind's owner there to fire them and
 * the WAL there to store their events (armed in start, they fired while
 * the modules after it were still starting, and their commits had
 * revisions but no WAL events).
 */
#include "api/services.h"
#include "timers/timers.h"

reel_code_t api_alarm(void *arg, store_txn_t *txn, reel_status_t *st) {
    api_ctx_t *ctx = arg;

    /* Armed only by timers_arm() and the timers' own writes: never before
     * every module started (timers_module_ready). */
    return ctx->durable_timers != NULL
               ? timers_alarm(ctx->durable_timers, txn, st)
               : REEL_OK;
}

static reel_code_t timers_module_start(api_ctx_t *ctx, reel_status_t *st) {
    timers_t *t = NULL;
    reel_code_t rc;

    if (ctx->journal == NULL || ctx->signals == NULL)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "module timers: the journal and signals "
                               "modules must start before it");
    if ((rc = timers_create(ctx->store, &t, st)) != REEL_OK)
        return rc;
    journal_use_timers(ctx->journal, t);
    signals_use_timers(ctx->signals, t);
    ctx->durable_timers = t;
    return REEL_OK;
}

static reel_code_t timers_module_ready(api_ctx_t *ctx, reel_status_t *st) {
    reel_code_t rc;

    /* Before format 4, runs could lack index entries and timers. Here,
     * once every module (the WAL last) has started: a lease timer it sets
     * may be due at once, and its firing has a WAL event. */
    if (store_format_opened(ctx->store) < STORE_FORMAT_VERSION &&
        (rc = journal_upgrade(ctx->journal, store_format_opened(ctx->store),
                              st)) != REEL_OK)
        return rc;
    return timers_arm(ctx->durable_timers, st);
}

static void timers_module_destroy(api_ctx_t *ctx) {
    timers_destroy(ctx->durable_timers);
    ctx->durable_timers = NULL;
}

const api_module_t api_timers_module = {
    .name = "timers",
    .cfs = timers_cfs,
    .start = timers_module_start,
    .ready = timers_module_ready,
    .destroy = timers_module_destroy,
};
