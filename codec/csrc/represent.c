/*
 * Symbol representations (mirrors codec/represent.py): CSR-style sparse rows (split into row counts, column
 * gaps and values, and merged back with every count and gap checked), bit packing of 1/2/4-bit symbols
 * (first symbol in the low bits) and prediction residuals at a distance with their inverse.
 */
#include "internal.h"

/* nz[i] = q[i] != zero[channel(i)] over outer x channels x inner symbols */
void nonzero_mask(const uint8_t *q, int64_t n, const uint8_t *zero, int64_t channels, int64_t inner, uint8_t *nz) {
    if (channels == 1) {
        const uint8_t z = zero[0];
        for (int64_t i = 0; i < n; i++) nz[i] = q[i] != z;
        return;
    }
    int64_t outer = n / (channels * inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t ch = 0; ch < channels; ch++) {
            int64_t base = (o * channels + ch) * inner;
            const uint8_t z = zero[ch];
            for (int64_t k = 0; k < inner; k++) nz[base + k] = q[base + k] != z;
        }
}

/* Rows of width: counts[row] = non-zero-point symbols in the row; gaps / vals (capacity n) get the column
 * gap before each of them and its value. Returns nnz, or -1 if the mask could not be allocated. */
int64_t csr_split(const uint8_t *q, int64_t n, const uint8_t *zero, int64_t channels, int64_t inner,
                  int64_t width, uint8_t *counts, uint8_t *gaps, uint8_t *vals) {
    int64_t rows = (n + width - 1) / width, nnz = 0;
    uint8_t *mask = NULL;
    if (channels > 1) {
        /* per-channel zero points: one pass builds the non-zero mask run by run */
        mask = (uint8_t *)ss_malloc((size_t)(n ? n : 1));
        if (!mask) return -1;
        nonzero_mask(q, n, zero, channels, inner, mask);
    }
    const uint8_t z0 = zero[0];
    for (int64_t r = 0; r < rows; r++) {
        int64_t r0 = r * width, r1 = r0 + width < n ? r0 + width : n;
        int cnt = 0, prev = -1;
        for (int64_t i = r0; i < r1; i++) {
            /* branch-free: always write (nnz <= i < n), advance only for non-zero-point symbols */
            int col = (int)(i - r0);
            int m = mask ? mask[i] : q[i] != z0;
            gaps[nnz] = (uint8_t)(col - prev - 1);
            vals[nnz] = q[i];
            nnz += m;
            prev = m ? col : prev;
            cnt += m;
        }
        counts[r] = (uint8_t)cnt;
    }
    ss_free(mask);
    return nnz;
}

/* The inverse of csr_split into out (n symbols). Returns 1, or 0 if counts, gaps and nnz disagree. */
int csr_merge(const uint8_t *counts, int64_t rows, const uint8_t *gaps, const uint8_t *vals, int64_t nnz,
              const uint8_t *zero, int64_t channels, int64_t inner, int64_t width, uint8_t *out, int64_t n) {
    int ok = 1;
    /* fill zeros */
    if (channels == 1)
        memset(out, zero[0], (size_t)n);
    else {
        int64_t outer = n / (channels * inner);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t ch = 0; ch < channels; ch++) memset(out + (o * channels + ch) * inner, zero[ch], (size_t)inner);
    }
    int64_t k = 0;
    for (int64_t r = 0; r < rows && ok; r++) {
        int64_t r0 = r * width, len = r0 + width < n ? width : n - r0;
        int64_t col = -1;
        int cnt = counts[r];
        if (cnt > len || k + cnt > nnz) {
            ok = 0;
            break;
        }
        for (int j = 0; j < cnt; j++, k++) {
            col += (int64_t)gaps[k] + 1;
            if (col >= len) {
                ok = 0;
                break;
            }
            out[r0 + col] = vals[k];
        }
    }
    if (k != nnz) ok = 0;
    return ok;
}

/* Whole bytes of k = 8 / slot symbols (slot 1, 2 or 4), first symbol in the low bits: m symbols (a multiple
 * of k) to m / k bytes. One loop per slot, so the compiler vectorizes each with its constants. */
#define PACK_LOOP(K, SLOT)                                                                   \
    for (int64_t j = 0; j < m / (K); j++) {                                                  \
        uint8_t v = 0;                                                                       \
        for (int t = 0; t < (K); t++) v |= (uint8_t)((q[j * (K) + t] & ((1u << (SLOT)) - 1)) << (t * (SLOT))); \
        o[j] = v;                                                                            \
    }
void pack_run(const uint8_t *restrict q, int64_t m, int slot, uint8_t *restrict o) {
    if (slot == 4) {
        PACK_LOOP(2, 4)
    } else if (slot == 2) {
        PACK_LOOP(4, 2)
    } else {
        PACK_LOOP(8, 1)
    }
}
#undef PACK_LOOP

/* k = 8 / bits symbols per byte (bits 1, 2 or 4), first symbol in the low bits; o holds ceil(n / k) bytes */
void pack_bits(const uint8_t *q, int64_t n, int bits, uint8_t *o) {
    int k = 8 / bits;
    int64_t full = n / k;
    const uint8_t mask = (uint8_t)((1u << bits) - 1);
    pack_run(q, full * k, bits, o);
    if (n > full * k) {
        uint8_t v = 0;
        for (int64_t i = full * k; i < n; i++) v |= (uint8_t)((q[i] & mask) << ((i - full * k) * bits));
        o[full] = v;
    }
}

/* the inverse of pack_bits: n symbols from ceil(n / k) bytes (one loop per slot, as for packing) */
#define UNPACK_LOOP(K, SLOT)                                                                 \
    for (int64_t j = 0; j < full; j++) {                                                     \
        uint8_t v = p[j];                                                                    \
        for (int t = 0; t < (K); t++) o[j * (K) + t] = (uint8_t)((v >> (t * (SLOT))) & ((1u << (SLOT)) - 1)); \
    }
void unpack_bits(const uint8_t *restrict p, int bits, uint8_t *restrict o, int64_t n) {
    int k = 8 / bits;
    const uint8_t mask = (uint8_t)((1u << bits) - 1);
    int64_t full = n / k;
    if (bits == 4) {
        UNPACK_LOOP(2, 4)
    } else if (bits == 2) {
        UNPACK_LOOP(4, 2)
    } else {
        UNPACK_LOOP(8, 1)
    }
    for (int64_t i = full * k; i < n; i++) o[i] = (uint8_t)((p[i / k] >> ((i % k) * bits)) & mask);
}
#undef UNPACK_LOOP

/* prediction residuals: r[i] = (q[i] - q[i - d]) & mask for i >= d, r[i] = q[i] before */
static void delta_fwd_run(const uint8_t *restrict q, uint8_t *restrict r, int64_t n, int64_t d, uint8_t mask) {
    int64_t head = d < n ? d : n;
    memcpy(r, q, (size_t)head);
    for (int64_t i = head; i < n; i++) r[i] = (uint8_t)((q[i] - q[i - d]) & mask);
}

#ifdef HAVE_AVX2_PATH
/* The running sum of the distance-1 inverse, 32 symbols at a time: a prefix sum within each 128-bit lane in
 * four shifted adds (modulo 256, which the mask then reduces to 2^bits), the low lane's total added to the
 * high lane, and the running sum before the vector added to all. Returns where it stopped; *prev is the
 * last symbol written. */
__attribute__((target("avx2"))) static int64_t prefix_sum_avx2(const uint8_t *r, uint8_t *q, int64_t i, int64_t n,
                                                                uint8_t mask, uint8_t *prev) {
    const __m256i last = _mm256_set1_epi8(15), maskv = _mm256_set1_epi8((char)mask);
    __m256i carry = _mm256_set1_epi8((char)*prev);
    for (; i + 32 <= n; i += 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(r + i));
        x = _mm256_add_epi8(x, _mm256_slli_si256(x, 1));
        x = _mm256_add_epi8(x, _mm256_slli_si256(x, 2));
        x = _mm256_add_epi8(x, _mm256_slli_si256(x, 4));
        x = _mm256_add_epi8(x, _mm256_slli_si256(x, 8));
        __m256i totals = _mm256_shuffle_epi8(x, last); /* each lane's total in all its bytes */
        x = _mm256_add_epi8(x, _mm256_permute2x128_si256(totals, totals, 0x08)); /* high lane += low total */
        x = _mm256_and_si256(_mm256_add_epi8(x, carry), maskv);
        _mm256_storeu_si256((__m256i *)(q + i), x);
        __m256i t = _mm256_shuffle_epi8(x, last);
        carry = _mm256_permute2x128_si256(t, t, 0x11); /* the high lane's last byte everywhere */
    }
    *prev = i > 0 ? q[i - 1] : *prev;
    return i;
}
#endif

/* The inverse for symbols [b0, b1): q[i] = (r[i - b0] + q[i - d]) & mask (r[i - b0] itself for i < d). r holds
 * the residuals of the range only; q is the whole symbol array, decoded up to b0. */
void delta_inverse_range(const uint8_t *r, uint8_t *q, int64_t b0, int64_t b1, int64_t d, uint8_t mask) {
    uint8_t *qb = q + b0;
    const int64_t m = b1 - b0;
    int64_t head = d - b0;
    head = head < 0 ? 0 : head > m ? m : head;
    memcpy(qb, r, (size_t)head);
    if (d >= 16) {
        /* rows of d are independent of each other's current row: vectorizes */
        for (int64_t i = head; i < m; i += d) {
            int64_t end = i + d < m ? i + d : m;
            const uint8_t *restrict prev = qb + i - d;
            uint8_t *restrict cur = qb + i;
            const uint8_t *restrict res = r + i;
            for (int64_t k = 0; k < end - i; k++) cur[k] = (uint8_t)((res[k] + prev[k]) & mask);
        }
    } else if (d == 1) {
        int64_t i = head;
        uint8_t prev = i > 0 ? qb[i - 1] : b0 > 0 ? qb[-1] : 0; /* running sum kept in a register */
#ifdef HAVE_AVX2_PATH
        if (cpu_has_avx2 > 0) i = prefix_sum_avx2(r, qb, i, m, mask, &prev);
#endif
        for (; i < m; i++) {
            prev = (uint8_t)((r[i] + prev) & mask);
            qb[i] = prev;
        }
    } else {
        for (int64_t i = head; i < m; i++) qb[i] = (uint8_t)((r[i] + qb[i - d]) & mask);
    }
}

void delta(const uint8_t *src, uint8_t *dst, int64_t n, int64_t d, uint8_t mask, int inverse) {
    if (inverse)
        delta_inverse_range(src, dst, 0, n, d, mask);
    else
        delta_fwd_run(src, dst, n, d, mask);
}

/* ---- delta-nibble: residuals within +-7 as nibbles, two per byte; the others escaped whole ---------- */
/* A residual v (modulo 2^bits, bits >= 5) within +-7 has the nibble (v + 7) & mask in 0..14, and back
 * v = (nibble - 7) & mask; any other residual gets the escape nibble 15 and goes, whole, to the escape stream,
 * in order. Nibbles pair into bytes, the first in the low half. */

#define NIBBLE_ESCAPE 15

#ifdef HAVE_AVX512_PATH
/* 64 residuals per step: escapes found with one compare, compressed in register; nibble pairs through a
 * multiply-add of neighbouring bytes (even + 16 * odd). Returns where it stopped; *k counts the escapes. */
__attribute__((target(AVX512_TARGET))) static int64_t nibble_split_avx512(const uint8_t *r, int64_t n, uint8_t mask,
                                                                        uint8_t *pairs, uint8_t *esc, int64_t *k) {
    const __m512i seven = _mm512_set1_epi8(7), maskv = _mm512_set1_epi8((char)mask);
    const __m512i fourteen = _mm512_set1_epi8(14), escape = _mm512_set1_epi8(NIBBLE_ESCAPE);
    const __m512i weights = _mm512_set1_epi16(0x1001); /* bytes (1, 16): even + 16 * odd */
    int64_t i = 0, cnt = *k;
    for (; i + 64 <= n; i += 64) {
        __m512i v = _mm512_loadu_si512((const void *)(r + i));
        __m512i t = _mm512_and_si512(_mm512_add_epi8(v, seven), maskv);
        __mmask64 e = _mm512_cmpgt_epu8_mask(t, fourteen);
        __m512i nib = _mm512_mask_mov_epi8(t, e, escape);
        _mm512_storeu_si512((void *)(esc + cnt), _mm512_maskz_compress_epi8(e, v));
        cnt += _mm_popcnt_u64(e);
        __m512i pair16 = _mm512_maddubs_epi16(nib, weights);
        _mm256_storeu_si256((__m256i *)(pairs + i / 2), _mm512_cvtepi16_epi8(pair16));
    }
    *k = cnt;
    return i;
}

/* the inverse, 64 residuals per step: nibbles out of their bytes, escapes expanded in register into the lanes
 * that carry the escape nibble. Stops early (returning where) if the escapes would run out. */
__attribute__((target(AVX512_TARGET))) static int64_t nibble_merge_avx512(const uint8_t *pairs, int64_t m,
                                                                        const uint8_t *esc, int64_t nesc, int64_t *pos,
                                                                        uint8_t mask, uint8_t *r) {
    const __m512i seven = _mm512_set1_epi8(7), maskv = _mm512_set1_epi8((char)mask);
    const __m512i low = _mm512_set1_epi16(0x0F), escape = _mm512_set1_epi8(NIBBLE_ESCAPE);
    int64_t i = 0, p = *pos;
    for (; i + 64 <= m; i += 64) {
        __m512i x = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(pairs + i / 2)));
        __m512i nib = _mm512_or_si512(_mm512_and_si512(x, low), _mm512_slli_epi16(_mm512_srli_epi16(x, 4), 8));
        __mmask64 e = _mm512_cmpeq_epi8_mask(nib, escape);
        int64_t c = (int64_t)_mm_popcnt_u64(e);
        if (p + c > nesc) break; /* the escape buffer holds 64 bytes beyond nesc: this load stays inside */
        __m512i base = _mm512_and_si512(_mm512_sub_epi8(nib, seven), maskv);
        __m512i v = _mm512_mask_expand_epi8(base, e, _mm512_loadu_si512((const void *)(esc + p)));
        _mm512_storeu_si512((void *)(r + i), v);
        p += c;
    }
    *pos = p;
    return i;
}
#endif

int64_t nibble_split(const uint8_t *r, int64_t n, uint8_t mask, uint8_t *pairs, uint8_t *esc) {
    int64_t i = 0, k = 0;
#ifdef HAVE_AVX512_PATH
    if (cpu_has_avx512 > 0) i = nibble_split_avx512(r, n, mask, pairs, esc, &k);
#endif
    for (; i < n; i++) {
        uint8_t t = (uint8_t)((r[i] + 7) & mask);
        int e = t > 14;
        esc[k] = r[i];
        k += e;
        uint8_t nib = e ? NIBBLE_ESCAPE : t;
        if (i & 1)
            pairs[i >> 1] |= (uint8_t)(nib << 4);
        else
            pairs[i >> 1] = nib;
    }
    return k;
}

int nibble_merge(const uint8_t *pairs, int64_t m, const uint8_t *esc, int64_t nesc, int64_t *pos, uint8_t mask,
                 uint8_t *r) {
    int64_t i = 0, p = *pos;
#ifdef HAVE_AVX512_PATH
    if (cpu_has_avx512 > 0) i = nibble_merge_avx512(pairs, m, esc, nesc, &p, mask, r);
#endif
    for (; i < m; i++) {
        uint8_t nib = (uint8_t)((pairs[i >> 1] >> ((i & 1) * 4)) & 0x0F);
        if (nib == NIBBLE_ESCAPE) {
            if (p >= nesc) {
                *pos = p;
                return -1;
            }
            r[i] = esc[p++];
        } else {
            r[i] = (uint8_t)((nib - 7) & mask);
        }
    }
    *pos = p;
    return 0;
}
