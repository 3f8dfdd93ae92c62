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
 * has one owner. This version keeps KV namespaces apart this way, and a
 * tenant's WAL tail holds its own KV events only (a durable consumer's
 * name is not kept apart yet: tenants subscribe without one); the other
 * services refuse other tenants (api_authorize).
 *
 * Thread safety: pure functions of the call; any thread.
 */
#ifndef REEL_API_TENANT_H
#define REEL_API_TENANT_H

#include <stddef.h>
#include <stdint.h>

#include "api/rpc.h"
#include "base/status.h"

#define API_TENANT_MARK "::"

/* The call's tenant when it is one whose names get a prefix, else NULL. */
const char *api_tenant_scoped(rpc_call_t *call);

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

/* 1 for a call of the default tenant (under --auth token): what other
 * tenants name is hidden from it (their WAL events). */
int api_tenant_hides_scoped(rpc_call_t *call);

/* 1 if the method keeps tenants apart, so a tenant with a prefix may call
 * it (KV, and GetStatus, which names nothing of a tenant). */
int api_tenant_keeps_apart(const char *path);

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
 * *out (malloc'd) holding it, its subject and namespace without the
 * prefix; 0 when the event is not the tenant's (or does not decode);
 * -1 out of memory.
 */
int api_tenant_event_out(rpc_call_t *call, const uint8_t *bytes, size_t len,
                         uint8_t **out, size_t *olen);

/* A stored name as the call's tenant sees it: past its own prefix. */
const char *api_tenant_name_out(rpc_call_t *call, const char *stored);

/*
 * 1 if a stored reel.v1.Event (its bytes) names something of a tenant
 * with a prefix (its subject's second token, kv.<namespace>..., starts
 * with "::"), 0 if not or if the bytes hold no subject.
 */
int api_tenant_event_is_scoped(const uint8_t *bytes, size_t len);

#endif
