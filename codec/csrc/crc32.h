/* CRC-32 (the zlib / gzip polynomial, reflected), bit-identical to zlib.crc32. */
#ifndef SPLITSTREAM_CRC32_H
#define SPLITSTREAM_CRC32_H
#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: crc32_update(0, data) is zlib.crc32(data); pass a previous result to chain buffers. */
uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n);
/* Force the portable table path (tests compare it with the carry-less-multiply path). */
void crc32_use_clmul(int on);
int crc32_clmul_active(void);

#endif
