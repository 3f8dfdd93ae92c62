/*
 * store/rocks_crc.h: RocksDB's CRC-32C computed with the CPU's instruction
 * where it has one (private to store/; see rocks_crc.cc for how).
 */
#ifndef REEL_STORE_ROCKS_CRC_H
#define REEL_STORE_ROCKS_CRC_H

#ifdef __cplusplus
extern "C" {
#endif

/* What computes RocksDB's checksums in this process: "sse4.2" (the CPU's
 * CRC32 instruction, through this module) or "rocksdb" (the library's own
 * code, on a CPU without SSE4.2 or off x86-64). */
const char *store_crc32c_engine(void);

#ifdef __cplusplus
}
#endif

#endif
