/*
 * store/rocks_crc.h: RocksDB's CRC-32C computed with the CPU's instruction
 * where it has one (private to store/; see rocks_crc.cc for how).
 */
#ifndef REEL_STORE_ROCKS_CRC_H
#define REEL_STORE_ROCKS_CRC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What computes RocksDB's checksums in this process: "sse4.2" (the CPU's
 * CRC32 instruction, through this module), "rocksdb" (the library's own
 * code, on a CPU without SSE4.2 or off x86-64), or "reel's bitwise loop"
 * (store_crc32c_bitwise, should the library's own not be found). */
const char *store_crc32c_engine(void);

/* RocksDB's CRC-32C of buf, extending crc (0 to begin): the function
 * RocksDB's own checksums use, for reading its files as it does. */
uint32_t store_crc32c(uint32_t crc, const void *buf, size_t size);

/* CRC-32C bit by bit, extending crc over buf as RocksDB's Extend does:
 * what computes them should the library's own not be found. */
uint32_t store_crc32c_bitwise(uint32_t crc, const void *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif
