/* fuzz/fuzz_cursor.c: a run listing's page token as a caller sends it
 * (api/cursor.c), on any bytes. Properties: bytes that are not a cursor
 * this process sealed never unseal, and are refused with
 * INVALID_ARGUMENT naming the field; a run id sealed from the input
 * unseals to itself; one hex digit of that cursor changed to another
 * never unseals. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/cursor.h"

static void refused(const char *s) {
    char id[27];
    reel_status_t st = REEL_STATUS_INIT;

    if (api_cursor_unseal("page_token", s, id, &st) != REEL_INVALID_ARGUMENT ||
        st.code != REEL_INVALID_ARGUMENT ||
        strstr(reel_status_message(&st), "page_token") == NULL)
        abort();
    reel_status_fini(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1), sealed[API_SEALED_CURSOR_LEN + 1];
    char run_id[27], back[27];
    reel_status_t st = REEL_STATUS_INIT;
    size_t at;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    refused(s); /* no input is a cursor sealed with this run's key */
    free(s);

    for (size_t i = 0; i < 26; i++) /* a run id's alphabet, from the input */
        run_id[i] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"[
            (i < size ? data[i] : (uint8_t)i) % 32];
    run_id[26] = '\0';
    if (api_cursor_seal(run_id, sealed) != 0)
        return 0; /* no randomness: the caller fails the request */
    if (!api_cursor_is_sealed(sealed) ||
        strlen(sealed) != API_SEALED_CURSOR_LEN ||
        api_cursor_unseal("page_token", sealed, back, &st) != REEL_OK ||
        strcmp(back, run_id) != 0)
        abort();
    reel_status_fini(&st);
    at = 1 + (size > 26 ? data[26] : size) % (API_SEALED_CURSOR_LEN - 1);
    sealed[at] = sealed[at] == '0' ? '1' : '0';
    refused(sealed);
    return 0;
}
