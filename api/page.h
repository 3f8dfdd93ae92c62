/*
 * api/page.h: the response byte budget (private to api/).
 *
 * gRPC clients receive at most 4 MiB a message unless told otherwise, so
 * reeld never sends a larger one by default (--max-response-bytes). Paged
 * reads hand their module a reel_page_t (base/page.h) whose size function
 * is the element's encoded size inside the response, as protobuf-c will
 * pack it: the element's packed size plus its tag and length prefix. The
 * response's other fields (the next cursor, `more`) get API_PAGE_RESERVE;
 * ListValues' cursor is a key of any length, so its measure counts each
 * entry's key twice instead. reeld checks at start that its limits let
 * one element of every kind fit (api_check_response_budget in
 * services.h), so a page of one always goes.
 */
#ifndef REEL_API_PAGE_H
#define REEL_API_PAGE_H

#include <stddef.h>

#include "api/services.h"
#include "base/page.h"

/* Bytes a paged response keeps for its fields besides the repeated one: a
 * cursor of up to a run id or a consumer name (128 bytes), `more`, a
 * flag or two. */
#define API_PAGE_RESERVE 256

/* kv_service.c's cap on WatchValues' watches: a coalesced event's `also`
 * names up to all the others. */
#define API_MAX_WATCHES_PER_STREAM 10000

/* What an element of packed size `packed` adds to a repeated field
 * numbered under 16: a one-byte tag, a varint length, the bytes. */
size_t api_page_elem_size(size_t packed);

/* A budget for one page of ctx's responses, measured by fn(arg, elem). */
reel_page_t api_page(const api_ctx_t *ctx, reel_page_size_fn fn, void *arg);

#endif
