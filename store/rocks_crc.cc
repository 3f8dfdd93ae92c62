/*
 * store/rocks_crc.cc: RocksDB's CRC-32C, computed by the CPU.
 *
 * RocksDB checksums every WAL record and every blob record with CRC-32C,
 * through one function, rocksdb::crc32c::Extend. Debian builds librocksdb
 * portable, without SSE4.2, so that function computes in software: about
 * 1.1 GB/s on the CPU it was measured on, where the CRC32 instruction does
 * 3 to 5. Every byte of an artifact passes through it twice, when the
 * flush writes its blob and when a download reads it back
 * (bench/ANALYSIS.md, "Workspace").
 *
 * This file defines that same function, which replaces the library's for
 * the whole process: librocksdb calls Extend through its procedure linkage
 * table, and the dynamic linker binds the call to the first definition in
 * the process's lookup order, the program's own before any library's (the
 * way a program's malloc replaces libc's). Same function, same values:
 * what reeld writes stays readable by RocksDB's own tools, and the other
 * way round. On a CPU without SSE4.2 it calls the library's own.
 *
 * If a later librocksdb renames or retypes the function, this definition
 * simply goes unused; store_test checks that RocksDB calls it.
 */
#include "store/rocks_crc.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

uint32_t store_crc32c_bitwise(uint32_t crc, const void *buf, size_t size) {
    const uint8_t *p = (const uint8_t *)buf;

    crc = ~crc;
    while (size-- > 0) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

typedef uint32_t (*extend_fn)(uint32_t crc, const char *buf, size_t size);

#define EXTEND_SYMBOL "_ZN7rocksdb6crc32c6ExtendEjPKcm"

__attribute__((target("sse4.2"))) static uint32_t
extend_sse42(uint32_t crc, const char *buf, size_t size) {
    uint64_t l = crc ^ 0xffffffffu;

    while (size >= 8) {
        uint64_t word;

        memcpy(&word, buf, 8);
        l = _mm_crc32_u64(l, word);
        buf += 8;
        size -= 8;
    }
    while (size > 0) {
        l = _mm_crc32_u8((uint32_t)l, (uint8_t)*buf);
        buf++;
        size--;
    }
    return (uint32_t)l ^ 0xffffffffu;
}

static uint32_t extend_bitwise(uint32_t crc, const char *buf, size_t size) {
    return store_crc32c_bitwise(crc, buf, size);
}

static extend_fn choose(void) {
    extend_fn own;

    /* The first call may come from a library's constructor, before the
     * CPU's features are known to __builtin_cpu_supports. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2"))
        return extend_sse42;
    /* The next definition after this one: librocksdb's. */
    own = (extend_fn)dlsym(RTLD_NEXT, EXTEND_SYMBOL);
    return own != NULL ? own : extend_bitwise;
}

static extend_fn chosen(void) {
    static const extend_fn fn = choose(); /* once, thread-safe */
    return fn;
}

namespace rocksdb {
namespace crc32c {

/* Declared by RocksDB's util/crc32c.h, which Debian does not install. */
uint32_t Extend(uint32_t crc, const char *buf, size_t size);

uint32_t Extend(uint32_t crc, const char *buf, size_t size) {
    return chosen()(crc, buf, size);
}

} // namespace crc32c
} // namespace rocksdb

uint32_t store_crc32c(uint32_t crc, const void *buf, size_t size) {
    return chosen()(crc, (const char *)buf, size);
}

const char *store_crc32c_engine(void) {
    extend_fn fn = chosen();

    return fn == extend_sse42 ? "sse4.2"
           : fn == extend_bitwise ? "reel's bitwise loop"
                                  : "rocksdb";
}

#else

namespace rocksdb {
namespace crc32c {
uint32_t Extend(uint32_t crc, const char *buf, size_t size);
} // namespace crc32c
} // namespace rocksdb

uint32_t store_crc32c(uint32_t crc, const void *buf, size_t size) {
    return rocksdb::crc32c::Extend(crc, (const char *)buf, size);
}

const char *store_crc32c_engine(void) { return "rocksdb"; }

#endif
