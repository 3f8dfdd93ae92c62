/* fuzz/fuzz_ws_records.c: the workspace's stored artifact records, as a
 * damaged data dir (or a change from the writer) would feed them to
 * ws_change_decode: a put or, when the first byte is odd, a delete. The
 * decoder must reject, never crash or read past the end; what it accepts
 * must have every string inside the record and ending in a NUL, and no
 * more metadata entries than the bytes could hold. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "workspace/workspace.h"

static void check_string(const char *s, size_t size) {
    if (s == NULL || strlen(s) >= size)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    store_change_t c = {0};
    ws_artifact_t a;

    if (size < 1)
        return 0;
    c.module = WS_MODULE_ID;
    c.type = data[0] & 1 ? WS_EVENT_DELETE : WS_EVENT_PUT;
    c.event = data + 1;
    c.len = size - 1;
    if (ws_change_decode(&c, &a) != 1)
        return 0;
    check_string(a.ns, size);
    check_string(a.key, size);
    check_string(a.content_type, size);
    if (a.n_meta > size / 10)
        abort();
    for (size_t i = 0; i < a.n_meta; i++) {
        check_string(a.meta_keys[i], size);
        check_string(a.meta_vals[i], size);
    }
    if (a.size > 0 && a.chunk_size == 0)
        abort();
    ws_artifact_fini(&a);
    return 0;
}
