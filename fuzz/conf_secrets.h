/*
 * fuzz/conf_secrets.h: the promise of reel-sink's and reel-reactor's
 * configuration errors that secrets are never repeated (sink/conf.h), as
 * a fuzz property shared by fuzz_sink_config and fuzz_reactor_config.
 *
 * Single-threaded (cJSON's error pointer is global).
 */
#ifndef REEL_FUZZ_CONF_SECRETS_H
#define REEL_FUZZ_CONF_SECRETS_H

#include <stddef.h>

/*
 * Aborts if msg holds a secret of the configuration text[0..len): a
 * "whsec_" string of a "secrets" array that decodes, a URL's user and
 * password (between "://" and "@"), or a header's value (a bearer
 * token). Only text no other key or string of the file holds counts (an
 * error may name those), and only text that could not come from a
 * message's own words: secrets of at least 4 base64 characters after the
 * prefix, credentials of 8 or more letters, digits and ':' with a ':',
 * header values of 10 or more letters, digits, spaces and "_.~+/=" with a
 * letter and a digit. Text that is not JSON holds no secret.
 */
void fuzz_conf_secrets_check(const char *text, size_t len, const char *msg);

#endif
