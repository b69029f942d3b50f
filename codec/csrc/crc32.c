/*
 * CRC-32 of the frame checksum (polynomial 0x04C11DB7, bit-reflected, init and final xor 0xFFFFFFFF: the
 * zlib value). Two paths with one result:
 *
 *  - carry-less multiplication (PCLMULQDQ, chosen at run time): the buffer is folded 64 bytes at a time in
 *    four 128-bit accumulators (128 bytes at a time in four 256-bit ones where VPCLMULQDQ exists), the
 *    accumulators are folded into one, the remaining 16-byte chunks are folded in, and the 128-bit remainder
 *    is reduced to 32 bits (128 -> 64 -> 32, then a Barrett step). Folding a 128-bit lane forward by D bits
 *    multiplies its halves by x^(D+32) and x^(D-32) mod P (bit-reflected, shifted left by one), for
 *    D = 512, 128 (and 1024, 256 on the wide path); 64 -> 32 uses x^64 mod P, and Barrett the quotient
 *    floor(x^64 / P). The values were derived with carry-less arithmetic and checked against zlib.
 *  - a slicing-by-8 table for short buffers, tails and machines without the instruction.
 */
#include "internal.h"

#include <string.h>

static uint32_t table[8][256];
static int clmul_on = -1;
static int wide_on = 0; /* 256-bit carry-less multiply (VPCLMULQDQ) */

static void init_tables(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        table[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; b++)
        for (int t = 1; t < 8; t++) table[t][b] = (table[t - 1][b] >> 8) ^ table[0][table[t - 1][b] & 0xFF];
}

/* the running (inverted) register over n bytes */
static uint32_t crc_table(uint32_t c, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= c; /* little-endian byte order of the register */
        c = table[7][lo & 0xFF] ^ table[6][(lo >> 8) & 0xFF] ^ table[5][(lo >> 16) & 0xFF] ^ table[4][lo >> 24] ^
            table[3][hi & 0xFF] ^ table[2][(hi >> 8) & 0xFF] ^ table[1][(hi >> 16) & 0xFF] ^ table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ table[0][(c ^ *p++) & 0xFF];
    return c;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_CLMUL_PATH 1

/* fold a 128-bit accumulator forward by the distance whose constants are k (low: x^(d+32), high: x^(d-32)) */
__attribute__((target("pclmul,sse4.1"))) static inline __m128i fold(__m128i acc, __m128i k, __m128i data) {
    __m128i lo = _mm_clmulepi64_si128(acc, k, 0x00);
    __m128i hi = _mm_clmulepi64_si128(acc, k, 0x11);
    return _mm_xor_si128(_mm_xor_si128(lo, hi), data);
}

/* 256-bit variant (VPCLMULQDQ): four 256-bit accumulators fold 128 bytes per step, are folded into one, and
 * its two 128-bit halves into one; the caller goes on with 16-byte chunks. n >= 256. Constants as above for
 * distances 1024 and 256 bits. Returns the 128-bit accumulator; *p_io advances past what was folded. */
__attribute__((target("vpclmulqdq,avx2,pclmul,sse4.1"))) static __m128i fold256(uint32_t c, const uint8_t **p_io,
                                                                                  const uint8_t *end) {
    const uint8_t *p = *p_io;
    const __m256i k1024 = _mm256_set_epi64x(0x14a7fe880LL, 0x1e88ef372LL, 0x14a7fe880LL, 0x1e88ef372LL);
    const __m256i k256 = _mm256_set_epi64x(0x15a546366LL, 0x0f1da05aaLL, 0x15a546366LL, 0x0f1da05aaLL);
    const __m128i k128 = _mm_set_epi64x(0x0ccaa009eLL, 0x1751997d0LL);
    __m256i a0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)p), _mm256_zextsi128_si256(_mm_cvtsi32_si128((int)c)));
    __m256i a1 = _mm256_loadu_si256((const __m256i *)(p + 32));
    __m256i a2 = _mm256_loadu_si256((const __m256i *)(p + 64));
    __m256i a3 = _mm256_loadu_si256((const __m256i *)(p + 96));
#define FOLD256(acc, k, data)                                                                                  \
    _mm256_xor_si256(_mm256_xor_si256(_mm256_clmulepi64_epi128(acc, k, 0x00), _mm256_clmulepi64_epi128(acc, k, 0x11)), \
                     data)
    for (p += 128; end - p >= 128; p += 128) {
        a0 = FOLD256(a0, k1024, _mm256_loadu_si256((const __m256i *)p));
        a1 = FOLD256(a1, k1024, _mm256_loadu_si256((const __m256i *)(p + 32)));
        a2 = FOLD256(a2, k1024, _mm256_loadu_si256((const __m256i *)(p + 64)));
        a3 = FOLD256(a3, k1024, _mm256_loadu_si256((const __m256i *)(p + 96)));
    }
    __m256i a = FOLD256(FOLD256(FOLD256(a0, k256, a1), k256, a2), k256, a3);
#undef FOLD256
    *p_io = p;
    return fold(_mm256_castsi256_si128(a), k128, _mm256_extracti128_si256(a, 1));
}

/* n >= 64; returns the register after the largest multiple of 16 bytes, *done = bytes consumed */
__attribute__((target("pclmul,sse4.1"))) static uint32_t crc_clmul(uint32_t c, const uint8_t *p, size_t n,
                                                                    size_t *done) {
    const __m128i k512 = _mm_set_epi64x(0x1c6e41596LL, 0x154442bd4LL);
    const __m128i k128 = _mm_set_epi64x(0x0ccaa009eLL, 0x1751997d0LL);
    const __m128i k64 = _mm_set_epi64x(0, 0x163cd6124LL);
    const __m128i barrett = _mm_set_epi64x(0x1F7011641LL, 0x1DB710641LL); /* quotient, polynomial */
    const __m128i mask32 = _mm_set_epi32(0, 0, 0, -1);
    const uint8_t *end = p + (n & ~(size_t)15);
    __m128i a;
    if (wide_on && n >= 256) {
        a = fold256(c, &p, end);
    } else {
        __m128i a0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_cvtsi32_si128((int)c));
        __m128i a1 = _mm_loadu_si128((const __m128i *)(p + 16));
        __m128i a2 = _mm_loadu_si128((const __m128i *)(p + 32));
        __m128i a3 = _mm_loadu_si128((const __m128i *)(p + 48));
        p += 64;
        for (; end - p >= 64; p += 64) {
            a0 = fold(a0, k512, _mm_loadu_si128((const __m128i *)p));
            a1 = fold(a1, k512, _mm_loadu_si128((const __m128i *)(p + 16)));
            a2 = fold(a2, k512, _mm_loadu_si128((const __m128i *)(p + 32)));
            a3 = fold(a3, k512, _mm_loadu_si128((const __m128i *)(p + 48)));
        }
        a = fold(fold(fold(a0, k128, a1), k128, a2), k128, a3);
    }
    for (; p < end; p += 16) a = fold(a, k128, _mm_loadu_si128((const __m128i *)p));
    /* 128 -> 64 bits: the low half moves 64 bits forward onto the high half */
    a = _mm_xor_si128(_mm_clmulepi64_si128(a, k128, 0x10), _mm_srli_si128(a, 8));
    /* 64 -> 32 bits */
    a = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(a, mask32), k64, 0x00), _mm_srli_si128(a, 4));
    /* Barrett reduction to the 32-bit remainder */
    __m128i t = _mm_clmulepi64_si128(_mm_and_si128(a, mask32), barrett, 0x10);
    t = _mm_clmulepi64_si128(_mm_and_si128(t, mask32), barrett, 0x00);
    *done = n & ~(size_t)15;
    return (uint32_t)_mm_extract_epi32(_mm_xor_si128(a, t), 1);
}
#endif

void crc32_use_clmul(int on) {
    if (!table[0][1]) init_tables();
#ifdef HAVE_CLMUL_PATH
    clmul_on = on && cpu_supports(CPU_CLMUL);
    wide_on = clmul_on && cpu_supports(CPU_VPCLMUL);
#else
    (void)on;
    clmul_on = 0;
#endif
}

int crc32_clmul_active(void) {
    if (clmul_on < 0) crc32_use_clmul(1);
    return clmul_on;
}

uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    if (clmul_on < 0) crc32_use_clmul(1);
    uint32_t c = ~crc;
#ifdef HAVE_CLMUL_PATH
    if (clmul_on && n >= 64) {
        size_t done;
        c = crc_clmul(c, p, n, &done);
        p += done;
        n -= done;
    }
#endif
    return ~crc_table(c, p, n);
}
