/* fuzz/fuzz_records.c: the stored record encodings (what a corrupted data
 * dir would feed the decoders). The first byte picks the record kind; the
 * decoders must reject, never crash or read past the end. */
#include <stddef.h>
#include <stdint.h>

#include "journal/journal.h"
#include "kv/kv.h"
#include "signals/signals.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    store_change_t c = {0};
    kv_event_t ev;
    run_t run = {0};
    journal_entry_t entry = {0};
    signal_t sig = {0};
    int consumed;

    if (size < 1)
        return 0;
    c.event = data + 1;
    c.len = size - 1;
    switch (data[0] % 5) {
    case 0:
        c.module = KV_MODULE_ID, c.type = 1;
        if (kv_change_decode(&c, &ev) == 1)
            kv_event_fini(&ev);
        break;
    case 1:
        c.module = JOURNAL_MODULE_ID, c.type = 1;
        journal_change_decode(&c, &run, &entry);
        break;
    case 2:
        c.module = JOURNAL_MODULE_ID, c.type = 2;
        journal_change_decode(&c, &run, &entry);
        break;
    default:
        c.module = SIGNALS_MODULE_ID, c.type = data[0] % 5 == 3 ? 1 : 2;
        if (signals_change_decode(&c, &sig, &consumed) == 1)
            signal_fini(&sig);
        break;
    }
    run_fini(&run);
    journal_entry_fini(&entry);
    return 0;
}
