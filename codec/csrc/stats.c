/*
 * Symbol statistics (what codec/costmodel.py measures): plain, sampled, per-channel and per-context
 * histograms, and the row-occupancy / column-gap histograms of the sparse representation for candidate
 * row widths. Histograms spread consecutive symbols over four tables so that repeated symbols do not
 * serialize on one counter.
 */
#include "internal.h"

/* 256-bin histogram added into h, eight symbols per 64-bit load spread over four tables. */
static void histogram_add(const uint8_t *q, int64_t n, uint32_t (*h)[256]) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, q + i, 8);
        h[0][w & 0xFF]++;
        h[1][(w >> 8) & 0xFF]++;
        h[2][(w >> 16) & 0xFF]++;
        h[3][(w >> 24) & 0xFF]++;
        h[0][(w >> 32) & 0xFF]++;
        h[1][(w >> 40) & 0xFF]++;
        h[2][(w >> 48) & 0xFF]++;
        h[3][w >> 56]++;
    }
    for (; i < n; i++) h[0][q[i]]++;
}

/* the four tables summed into hist */
void histogram_fold(uint32_t (*h)[256], uint32_t *hist) {
    for (int s = 0; s < 256; s++) hist[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s];
}

void histogram4(const uint8_t *q, int64_t n, uint32_t *hist) {
    uint32_t h[4][256];
    memset(h, 0, sizeof h);
    histogram_add(q, n, h);
    histogram_fold(h, hist);
}

#ifdef HAVE_AVX2_PATH
/* nonzero_bits 64 bytes at a time (compare with zero, gather the sign bits); returns where it stopped */
__attribute__((target("avx2"))) static int64_t nonzero_bits_avx2(const uint8_t *nz, int64_t n, uint64_t *words) {
    const __m256i zero = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint32_t lo = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(nz + i)), zero));
        uint32_t hi = (uint32_t)_mm256_movemask_epi8(
            _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(nz + i + 32)), zero));
        words[i >> 6] = ~((uint64_t)hi << 32 | lo);
    }
    return i;
}
#endif

/* Add the chunks [i * QCHUNK, ...) of q within [from, to) (chunk-aligned, to may be the end) that the
 * sample picks: a multiplicative (Fibonacci) hash of the chunk index spreads them evenly, without aliasing
 * with the tensor's own periods (channels, images) as every k-th chunk would. Returns symbols counted. */
int64_t sampled_histogram(const uint8_t *q, int64_t from, int64_t to, int stride, uint32_t (*h)[256]) {
    int64_t counted = 0;
    for (int64_t i = from; i < to; i += QCHUNK) {
        int64_t m = to - i < QCHUNK ? to - i : QCHUNK;
        uint32_t pick = (uint32_t)((uint64_t)(i / QCHUNK) * 2654435761u);
        if (stride == 1 || pick < UINT32_MAX / (uint32_t)stride) {
            histogram_add(q + i, m, h);
            counted += m;
        }
    }
    return counted;
}

/* counts[ch * 256 + s]: symbol counts per channel of q (outer x channels x inner). Long runs go through the
 * four-table histogram (a run of one repeated symbol would otherwise serialize on one counter). */
void channel_histogram(const uint8_t *q, int64_t n, int64_t channels, int64_t inner, uint32_t *counts) {
    memset(counts, 0, (size_t)channels * 256 * 4);
    int64_t outer = n / (channels * inner);
    uint32_t h[4][256];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t ch = 0; ch < channels; ch++) {
            const uint8_t *p = q + (o * channels + ch) * inner;
            uint32_t *row = counts + ch * 256;
            if (inner >= 1024) {
                memset(h, 0, sizeof h);
                histogram_add(p, inner, h);
                for (int s = 0; s < 256; s++) row[s] += h[0][s] + h[1][s] + h[2][s] + h[3][s];
            } else {
                for (int64_t k = 0; k < inner; k++) row[p[k]]++;
            }
        }
}

/* out[g * 256 + s] = sum of counts[ch * 256 + s] over the channels ch with group[ch] == g (every group
 * index below ngroups, checked by the caller) */
void group_sum(const uint32_t *counts, const uint8_t *group, int64_t channels, int ngroups, uint32_t *out) {
    memset(out, 0, (size_t)ngroups * 256 * 4);
    for (int64_t ch = 0; ch < channels; ch++) {
        uint32_t *o = out + (size_t)group[ch] * 256;
        const uint32_t *c = counts + ch * 256;
        for (int s = 0; s < 256; s++) o[s] += c[s];
    }
}

/* counts[table * 256 + s] over every stride-th block (so a cost model can sample cheaply). Returns 0, or
 * -1 if the context scratch could not be allocated. */
int context_histogram(const uint8_t *sym, int64_t n, const Ctx *c, int64_t block, int64_t stride,
                      uint32_t *counts) {
    memset(counts, 0, (size_t)c->ntables * 256 * 4);
    if (c->ntables == 1) {
        for (int64_t b0 = 0; b0 < n; b0 += block * stride) {
            int64_t b1 = b0 + block < n ? b0 + block : n;
            for (int64_t i = b0; i < b1; i++) counts[sym[i]]++;
        }
        return 0;
    }
    uint8_t *ctx = (uint8_t *)ss_malloc((size_t)min64(block, n)); /* a block holds at most n symbols */
    if (!ctx) return -1;
    for (int64_t b0 = 0; b0 < n; b0 += block * stride) {
        int64_t b1 = b0 + block < n ? b0 + block : n;
        block_contexts(c, sym, b0, b1, ctx);
        for (int64_t i = b0; i < b1; i++) counts[(int)ctx[i - b0] * 256 + sym[i]]++;
    }
    ss_free(ctx);
    return 0;
}

/* The non-zero mask nz (n bytes of 0 / 1) as bits, 64 per word, bit i of word i / 64; words holds n / 64 + 2
 * words, the ones past the end zero (so a row's 64 bits can always be read from two words). */
void nonzero_bits(const uint8_t *nz, int64_t n, uint64_t *words) {
    memset(words, 0, (size_t)(n / 64 + 2) * 8);
    int64_t i = 0;
#ifdef HAVE_AVX2_PATH
    if (cpu_has_avx2 > 0) i = nonzero_bits_avx2(nz, n, words);
#endif
    for (; i < n; i++) words[i >> 6] |= (uint64_t)(nz[i] != 0) << (i & 63);
}

/* Sparse rows of width (1..255) over the non-zero bits (see nonzero_bits): histograms of the non-zero count
 * per row and of the column gap before each non-zero, over every row_step-th row. The set bits of a row are
 * visited 64 columns at a time, so the work follows the non-zeros, not the columns. Returns the non-zeros
 * seen. */
int64_t csr_row_stats(const uint64_t *words, int64_t n, int64_t width, int64_t row_step, uint32_t *count_hist,
                      uint32_t *gap_hist) {
    int64_t nnz = 0, rows = (n + width - 1) / width;
    uint32_t ch[256], gh[4][256]; /* gaps spread over four tables: runs of gap 0 do not chain on one counter */
    memset(ch, 0, sizeof ch);
    memset(gh, 0, sizeof gh);
    for (int64_t r = 0; r < rows; r += row_step) {
        const int64_t r0 = r * width, len = min64(width, n - r0);
        int cnt = 0, prev = -1;
        for (int64_t c0 = 0; c0 < len; c0 += 64) {
            const int64_t at = r0 + c0, sh = at & 63;
            uint64_t bits = words[at >> 6] >> sh;
            if (sh) bits |= words[(at >> 6) + 1] << (64 - sh);
            if (len - c0 < 64) bits &= (UINT64_C(1) << (len - c0)) - 1;
            while (bits) {
                const int col = (int)c0 + __builtin_ctzll(bits);
                gh[cnt & 3][col - prev - 1]++;
                prev = col;
                cnt++;
                bits &= bits - 1;
            }
        }
        ch[cnt]++;
        nnz += cnt;
    }
    memcpy(count_hist, ch, sizeof ch);
    histogram_fold(gh, gap_hist);
    return nnz;
}

/* The sparse representation's statistics for nw candidate row widths (each 1..255) at once: one non-zero
 * mask of q (the zero symbol of element i is zero[channel(i)]; with one channel, inner is not used), then
 * for width k the row-occupancy and column-gap histograms over every row_step-th row (count_hist and
 * gap_hist, 256 bins from k * 256) and the non-zeros seen (nnz[k]). 0, or -1 if an allocation failed. */
int csr_stats(const uint8_t *q, int64_t n, const uint8_t *zero, int64_t channels, int64_t inner, const int64_t *widths,
              int64_t nw, int64_t row_step, uint32_t *count_hist, uint32_t *gap_hist, int64_t *nnz) {
    uint8_t *nz = (uint8_t *)ss_malloc((size_t)(n ? n : 1));
    uint64_t *words = (uint64_t *)ss_malloc((size_t)(n / 64 + 2) * 8);
    int ret = -1;
    if (!nz || !words) goto done;
    /* one non-zero mask, as bits, for all widths */
    nonzero_mask(q, n, zero, channels, inner, nz);
    nonzero_bits(nz, n, words);
    for (int64_t k = 0; k < nw; k++)
        nnz[k] = csr_row_stats(words, n, widths[k], row_step, count_hist + k * 256, gap_hist + k * 256);
    ret = 0;
done:
    ss_free(nz);
    ss_free(words);
    return ret;
}

/* The histogram (hist, 256 bins) that quantize() takes with the same stride, of n symbols produced another
 * way (e.g. reordered after quantizing in memory order); returns the symbols counted. */
int64_t histogram_sampled(const uint8_t *q, int64_t n, int stride, uint32_t *hist) {
    uint32_t h[4][256];
    memset(h, 0, sizeof h);
    int64_t counted = sampled_histogram(q, 0, n, stride, h);
    histogram_fold(h, hist);
    return counted;
}

/* Histograms of sampled chunks of several representations at once (the cost model's candidate statistics):
 * for every start s, the chunk q[s, s + chunk) itself (row 0) and as residuals (q[i] - q[i - d]) & mask at
 * each distance d (row 2 + k; q[i] itself where i < d). With a slot (bit widths up to 4), also bit-packed
 * slot bits per symbol: row 1 q itself, row 2 + nd + k the residuals at distance k. Without one (bit widths
 * 5 to 8; row 1 left empty), the residuals' delta-nibble streams: row 2 + nd + k the nibble pairs, row
 * 2 + 2 nd + k the escapes. The caller has checked the starts (in range; multiples of 8) and that chunk is
 * even and at most SAMPLE_CHUNK_MAX. */
void family_histograms(const uint8_t *q, const int64_t *starts, int64_t nstarts, int64_t chunk, uint8_t mask,
                       int slot, const int64_t *dist, int nd, uint32_t *hist) {
    uint32_t h[4][256], hp[4][256], he[4][256];
    uint8_t res[SAMPLE_CHUNK_MAX], packed[SAMPLE_CHUNK_MAX], esc[SAMPLE_CHUNK_MAX + 64];
    const int64_t per = slot ? 8 / slot : 2;
    for (int row = -1; row < nd; row++) { /* -1: q itself */
        memset(h, 0, sizeof h);
        memset(hp, 0, sizeof hp);
        memset(he, 0, sizeof he);
        for (int64_t k = 0; k < nstarts; k++) {
            const uint8_t *p = q + starts[k];
            const uint8_t *r = p;
            if (row >= 0) {
                const int64_t d = dist[row];
                int64_t head = d - starts[k];
                head = head < 0 ? 0 : head > chunk ? chunk : head;
                memcpy(res, p, (size_t)head);
                for (int64_t j = head; j < chunk; j++) res[j] = (uint8_t)((p[j] - p[j - d]) & mask);
                r = res;
            }
            histogram_add(r, chunk, h);
            if (slot) {
                pack_run(r, chunk / per * per, slot, packed);
                histogram_add(packed, chunk / per, hp);
            } else if (row >= 0) {
                int64_t ne = nibble_split(r, chunk, mask, packed, esc);
                histogram_add(packed, chunk / 2, hp);
                histogram_add(esc, ne, he);
            }
        }
        if (row < 0) {
            histogram_fold(h, hist);
            histogram_fold(hp, hist + 256); /* all zero without a slot */
            continue;
        }
        histogram_fold(h, hist + (size_t)(2 + row) * 256);
        histogram_fold(hp, hist + (size_t)(2 + nd + row) * 256);
        if (!slot) histogram_fold(he, hist + (size_t)(2 + 2 * nd + row) * 256);
    }
}
