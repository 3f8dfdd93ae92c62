/* fuzz/fuzz_sink_conf.c: the configuration text as JSON (sink_conf_parse,
 * reel-sink's and reel-reactor's first step) on any bytes. Properties: a
 * text that parses holds no NUL byte and no \u escape cJSON would read as
 * one, no object in it repeats a key, and it is refused with a byte after
 * it; one that does not is
 * INVALID_ARGUMENT (or RESOURCE_EXHAUSTED) with a "config: " message. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sink/conf.h"

/* Whether an object in v repeats a key (quadratic: inputs are small). */
static int repeats_a_key(const cJSON *v) {
    const cJSON *e, *f;

    cJSON_ArrayForEach(e, v) {
        if (cJSON_IsObject(v))
            for (f = e->next; f != NULL; f = f->next)
                if (strcmp(e->string, f->string) == 0)
                    return 1;
        if (repeats_a_key(e))
            return 1;
    }
    return 0;
}

/* Whether text holds a \u escape without four hex digits, or \u0000. */
static int nul_escape(const uint8_t *p, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        size_t hex = 0;

        if (p[i] != '\\')
            continue;
        if (p[i + 1] != 'u') {
            i++;
            continue;
        }
        while (hex < 4 && i + 2 + hex < n &&
               strchr("0123456789abcdefABCDEF", p[i + 2 + hex]) != NULL &&
               p[i + 2 + hex] != '\0')
            hex++;
        if (hex < 4 || memcmp(p + i + 2, "0000", 4) == 0)
            return 1;
        i += 5;
    }
    return 0;
}

/* sink_conf_parse, and the checks of a refusal. */
static cJSON *parse(const char *text, size_t len) {
    reel_status_t st = REEL_STATUS_INIT;
    cJSON *root = sink_conf_parse(text, len, &st);

    if (root == NULL &&
        ((st.code != REEL_INVALID_ARGUMENT &&
          st.code != REEL_RESOURCE_EXHAUSTED) ||
         strncmp(reel_status_message(&st), "config: ", 8) != 0))
        abort();
    if (root != NULL && st.code != REEL_OK)
        abort();
    reel_status_fini(&st);
    return root;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cJSON *root;
    char *more;

    if ((root = parse((const char *)data, size)) == NULL)
        return 0;
    if (memchr(data, 0, size) != NULL || nul_escape(data, size) ||
        repeats_a_key(root))
        abort();
    cJSON_Delete(root);
    if ((more = malloc(size + 1)) == NULL)
        return 0;
    memcpy(more, data, size);
    more[size] = 'x';
    if ((root = parse(more, size + 1)) != NULL)
        abort();
    free(more);
    return 0;
}
