/*
 * sink/subject.h: a reel subject as a NATS subject (private to sink/).
 *
 * A nats sink publishes an event with subject S to "<prefix>.<S'>", S'
 * being S with its '.' tokens kept (so a NATS consumer filters the way a
 * reel subscriber does: reel.kv.shop.>) and every byte a NATS subject may
 * not carry escaped as %XX (two upper-case hex digits):
 *
 *   - bytes 0x00-0x20 (space, tab, line breaks, controls) and 0x7f;
 *   - '%' itself (so the escaping reads back unambiguously);
 *   - a token that is exactly "*" or ">" (NATS wildcards; reel refuses
 *     them in names, but an event stored before that rule may carry one)
 *     becomes %2A or %3E;
 *   - an empty token (likewise only in old events) becomes %00.
 *
 * Other bytes, UTF-8 included, pass unchanged. The exact subject also
 * travels in the Reel-Subject header. Pure; thread-safe.
 */
#ifndef REEL_SINK_SUBJECT_H
#define REEL_SINK_SUBJECT_H

#include <stddef.h>

/* prefix "." escaped(subject[0..len)), malloc'd; NULL when out of memory. */
char *sink_nats_subject(const char *prefix, const char *subject, size_t len);

#endif
