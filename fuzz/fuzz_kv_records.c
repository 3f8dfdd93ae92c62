/* fuzz/fuzz_kv_records.c: KV's stored records, as a damaged data dir would
 * feed them to kv_event_decode (kv_history events) and kv_entry_decode (kv
 * entries under their "ns\0key"). The first byte picks the record: 0 an
 * event; 1 an entry, the next byte the length of its key and the key
 * before the record; 2 an entry's trimmed field. A decoder must reject,
 * never crash or read past the end; what it accepts must add up to the
 * bytes it was given, every string ending in a NUL. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "kv/kv_int.h"

/* The string s of length len is all there, NUL after it. */
static void check_string(const char *s, size_t len, size_t limit) {
    if (s == NULL || len > limit || s[len] != '\0')
        abort();
}

static void event(const uint8_t *data, size_t size) {
    kv_event_t ev;

    if (kv_event_decode(data, size, &ev) != 0)
        return;
    check_string(ev.ns, ev.ns_len, size);
    check_string(ev.key, ev.key_len, size);
    check_string(ev.writer, ev.writer_len, size);
    check_string(ev.value, ev.value_len, size);
    check_string(ev.prev_value, ev.prev_value_len, size);
    if (ev.ns_len + ev.key_len + ev.writer_len + ev.value_len +
            ev.prev_value_len >
        size)
        abort();
    kv_event_fini(&ev);
}

static void entry(const uint8_t *data, size_t size) {
    size_t klen = size > 0 ? data[0] : 0;
    const char *k = (const char *)data + 1;
    kv_entry_t e;

    if (size < 1 || klen > size - 1)
        return;
    data += 1 + klen, size -= 1 + klen;
    if (kv_entry_decode(k, klen, data, size, &e) != 0)
        return;
    check_string(e.ns, e.ns_len, klen);
    check_string(e.key, e.key_len, klen);
    check_string(e.writer, e.writer_len, size);
    check_string(e.value, e.value_len, size);
    /* The key splits at its first NUL; the record holds writer, value. */
    if (e.ns_len + 1 + e.key_len != klen ||
        e.writer_len + e.value_len > size)
        abort();
    kv_entry_fini(&e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t trimmed;

    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        event(data + 1, size - 1);
        break;
    case 1:
        entry(data + 1, size - 1);
        break;
    default:
        kv_entry_trimmed(data + 1, size - 1, &trimmed);
        break;
    }
    return 0;
}
