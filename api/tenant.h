/*
 * api/tenant.h: the names a tenant gives, kept inside its tenant (private
 * to api/; docs/security.md).
 *
 * A call's tenant comes from its token (rpc_call_principal). Tenants
 * "default" (and calls without --auth token) and "admin" use names as
 * they are: a data dir from before tenants is the default tenant's,
 * unchanged, and admin sees everything. Any other tenant T stores a name
 * N as "::T:N" and reads it back as N. No tenant but admin may give a
 * name starting with "::", so no input can spell another tenant's prefix:
 * T is [a-z0-9-] and ends at the first ':' after "::", so a stored name
 * has one owner. What is kept apart this way: KV namespaces, apps (and so
 * runs: a run is its app's tenant's, and every call naming a run_id
 * checks it, answering another tenant's run as a missing one), and
 * durable consumers' names. Signals belong to their run.
 *
 * WAL events: a tenant's event has "::T:" in front of its subject's
 * second token (kv.::T:<ns>.<key>, run.::T:<run_id>.<STATUS>,
 * journal.::T:<run_id>.<kind>, signal.::T:<run_id>.<name>.<sent|...>),
 * so a tail tells an event's tenant from its subject alone: the default
 * tenant's skips every event whose second token starts with "::", a
 * tenant's keeps those with its own prefix and strips it (and the
 * prefix of a namespace or app in the body). The encoders learn a run's
 * app from the change itself (journal_entry_t.app, signal_t.app), never
 * from a read. Admin sees the subjects as stored.
 *
 * Thread safety: pure functions of the call; any thread.
 */
#ifndef REEL_API_TENANT_H
#define REEL_API_TENANT_H

#include <stddef.h>
#include <stdint.h>

#include "api/rpc.h"
#include "base/status.h"
#include "store/store.h"

#define API_TENANT_MARK "::"

/* The call's tenant when it is one whose names get a prefix, else NULL. */
const char *api_tenant_scoped(rpc_call_t *call);

/* That tenant's prefix "::T:" written into buf (cap bytes); for the
 * default tenant under token auth WAL_SCOPE_UNMARKED (its tails take the
 * events of no tenant's prefix); else NULL. */
const char *api_tenant_mark(rpc_call_t *call, char *buf, size_t cap);

/*
 * The stored form of name (field names it in errors; max: the stored
 * form's limit in bytes) into *out (malloc'd, or NULL for "name as it
 * is": then *out_name is name). INVALID_ARGUMENT when a non-admin call
 * gives a name starting with "::", or when the stored form would pass
 * max (the limit said as the tenant sees it).
 */
reel_code_t api_tenant_name_in(rpc_call_t *call, const char *field,
                               const char *name, size_t max, char **out,
                               const char **out_name, reel_status_t *st);

/* As api_tenant_name_in, for a name of the bytes allowed (a namespace:
 * reel_check_charset's rule); a tenant's name is checked as it gave it,
 * so an error's "byte N" counts from its own first byte. limit names the
 * flag max comes from ("--kv-max-namespace-bytes"), said when the
 * tenant's prefix alone fills max. */
reel_code_t api_tenant_charset_in(rpc_call_t *call, const char *field,
                                  const char *name, size_t max,
                                  const char *limit, const char *allowed,
                                  char **out, const char **out_name,
                                  reel_status_t *st);

/* The bytes of the prefix "::T:" in front of each name of tenant: 0 for
 * a tenant whose names get none (default, admin, NULL). */
size_t api_tenant_prefix_bytes_as(const char *tenant);

/*
 * For CreateToken: INVALID_ARGUMENT when tenant's prefix leaves no byte
 * of max (a stored name's limit, set by the flag limit names) for a name,
 * so no token is made whose every KV and workspace call would be refused.
 * The message names the tenant, its length, the flag and the room left.
 */
reel_code_t api_tenant_check_room(const char *tenant, size_t max,
                                  const char *limit, reel_status_t *st);

/* 1 for a call of the default tenant (under --auth token): what other
 * tenants name is hidden from it (their WAL events). */
int api_tenant_hides_scoped(rpc_call_t *call);

/* 1 if the method keeps tenants apart, so a tenant with a prefix may call
 * it (KV, Journal, Signals, Wal, and GetStatus, which names nothing of a
 * tenant; not the token methods, which are admin's). */
int api_tenant_keeps_apart(const char *path);

/* 1 when the call sees every tenant's names as stored: admin, or no
 * --auth token. Nothing of a name needs checking then. */
int api_tenant_sees_all(rpc_call_t *call);

/* 1 if a stored name (an app, a consumer) is the call's tenant's: for a
 * tenant T it starts with "::T:", for default it has no "::" in front;
 * admin owns every name. */
int api_tenant_owns(rpc_call_t *call, const char *stored);

/* The length of the tenant prefix "::T:" a stored name starts with, 0 if
 * it starts with none (the default tenant's). */
size_t api_tenant_prefix_len(const char *stored);

/*
 * For a data dir of store format 1, before any module starts: builds
 * before tenants took any name, "::acme:orders" among them, and such a
 * name would now be tenant acme's (readable and writable by it) and out of
 * the default tenant's reach. FAILED_PRECONDITION naming the first such KV
 * namespace, app, durable consumer or workspace namespace, and what to do;
 * the dir is left as it is (format 1), so the reeld that wrote it still
 * opens it.
 */
reel_code_t api_tenant_check_upgrade(store_t *store, const char *dir,
                                     reel_status_t *st);

/* A stored subject pattern as the call's tenant gave it (its prefix off
 * the second token): malloc'd, NULL out of memory. */
char *api_tenant_pattern_out(rpc_call_t *call, const char *stored);

/* Takes the call's own prefix "::T:" out of st's message, so an error
 * names the tenant's apps and consumers as it gave them. */
void api_tenant_status_out(rpc_call_t *call, reel_status_t *st);

/*
 * A WAL subscription's subject_pattern as stored, for a tenant with a
 * prefix: a literal namespace token (kv.<ns>..., *.<ns>...) gets the
 * prefix (*out malloc'd, *out_pattern it); anything else stays as given,
 * and api_tenant_event_out() keeps the tenant's own events of what it
 * matches. INVALID_ARGUMENT for a namespace token starting with "::".
 */
reel_code_t api_tenant_pattern_in(rpc_call_t *call, const char *pattern,
                                  char **out, const char **out_pattern,
                                  reel_status_t *st);

/*
 * For a tenant with a prefix, a stored reel.v1.Event as it sees it: 1 with
 * *out (malloc'd) holding it, its subject's second token and the body's
 * namespace or app without the prefix; 0 when the event is not the
 * tenant's (or does not decode); -1 out of memory.
 */
int api_tenant_event_out(rpc_call_t *call, const uint8_t *bytes, size_t len,
                         uint8_t **out, size_t *olen);

/* A stored name as the call's tenant sees it: past its own prefix. */
const char *api_tenant_name_out(rpc_call_t *call, const char *stored);

/*
 * 1 if a stored reel.v1.Event (its bytes) names something of a tenant
 * with a prefix (its subject's second token, kv.<namespace>...,
 * run.<run_id>..., starts with "::"), 0 if not or if the bytes hold no
 * subject.
 */
int api_tenant_event_is_scoped(const uint8_t *bytes, size_t len);

/*
 * The same for a tenant named directly (NULL: no --auth token, which sees
 * all), so the mapping is tested without a call (tenant_test.c).
 */
int api_tenant_owns_as(const char *tenant, const char *stored);
void api_tenant_status_out_as(const char *tenant, reel_status_t *st);
reel_code_t api_tenant_pattern_in_as(const char *tenant, const char *pattern,
                                     char **out, const char **out_pattern,
                                     reel_status_t *st);
int api_tenant_event_out_as(const char *tenant, const uint8_t *bytes,
                            size_t len, uint8_t **out, size_t *olen);
char *api_tenant_pattern_out_as(const char *tenant, const char *stored);
reel_code_t api_tenant_name_in_as(const char *tenant, const char *field,
                                  const char *name, size_t max, char **out,
                                  const char **out_name, reel_status_t *st);
reel_code_t api_tenant_charset_in_as(const char *tenant, const char *field,
                                     const char *name, size_t max,
                                     const char *limit, const char *allowed,
                                     char **out, const char **out_name,
                                     reel_status_t *st);
const char *api_tenant_name_out_as(const char *tenant, const char *stored);

#endif
