/* fuzz/fuzz_json.c: the JSON validator on any bytes: no crash, no read past
 * the end, and an error offset inside the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t off = 0;
    const char *why = NULL;

    if (reel_json_validate((const char *)data, size, &off, &why) != 0 &&
        (off > size || why == NULL))
        abort();
    return 0;
}
