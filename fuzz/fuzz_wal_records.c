/* fuzz/fuzz_wal_records.c: the WAL's stored records, as a damaged data dir
 * would feed them to its decoders (wal/wal_int.h). The first byte picks
 * the record: 0 an event record, split into subject and event bytes; 1 a
 * durable consumer's record. A decoder must reject, never crash or read
 * past the end; an accepted split covers the record exactly, and a refused
 * consumer is DATA_LOSS or RESOURCE_EXHAUSTED naming the consumer. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wal/wal_int.h"

#define NAME "fuzz-consumer"

static void event(const uint8_t *data, size_t size) {
    const char *subj;
    const uint8_t *ev;
    size_t slen, elen;

    if (wal_record_split(data, size, &subj, &slen, &ev, &elen) != 0)
        return;
    /* ts_ms(8), subject length(2), subject, event: nothing left over. */
    if ((const uint8_t *)subj != data + 10 || ev != data + 10 + slen ||
        10 + slen + elen != size)
        abort();
}

static void consumer(const uint8_t *data, size_t size) {
    reel_status_t st = REEL_STATUS_INIT;
    wal_consumer_t c;
    reel_code_t rc;

    rc = wal_consumer_record_decode(NAME, data, size, &c, &st);
    if (rc == REEL_OK) {
        if (c.name == NULL || strcmp(c.name, NAME) != 0 || c.pattern == NULL)
            abort();
        wal_consumer_fini(&c);
    } else if ((rc != REEL_DATA_LOSS && rc != REEL_RESOURCE_EXHAUSTED) ||
               strstr(reel_status_message(&st), NAME) == NULL) {
        abort();
    }
    reel_status_fini(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    if (data[0] % 2 == 0)
        event(data + 1, size - 1);
    else
        consumer(data + 1, size - 1);
    return 0;
}
