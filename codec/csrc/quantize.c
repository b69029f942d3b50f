/*
 * Quantization (mirrors codec/quantize.py): per-channel min/max with a finiteness check, asymmetric
 * quantization to u8 symbols with their range and (sampled) histogram in the same pass, dequantization,
 * and the batched byte transpose that reorders symbols quantized in memory order (channels-last maps).
 * The AVX2 loops sit beside the scalar ones and perform the same float operations in the same order, so
 * every path gives the same symbols and floats bit for bit.
 */
#include "internal.h"

#include <math.h>

/* Per-channel min/max of x (both include 0) over outer x channels x inner floats; returns 1 if all finite. */
int minmax(const float *x, int64_t n, int64_t channels, int64_t inner, float *mins, float *maxs) {
    for (int64_t c = 0; c < channels; c++) mins[c] = maxs[c] = 0.0f;
    int64_t outer = n / (channels * inner);
    uint32_t expmax = 0; /* OR of (exponent == 0xFF) flags, checked on the raw bits */
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t c = 0; c < channels; c++) {
            const float *p = x + (o * channels + c) * inner;
            /* eight independent accumulators so the compiler can keep them in vector registers */
            float lo[8], hi[8];
            uint32_t bad[8];
            for (int t = 0; t < 8; t++) lo[t] = mins[c], hi[t] = maxs[c], bad[t] = 0;
            int64_t k = 0;
#if defined(__SSE2__)
            {
                __m128 vlo0 = _mm_set1_ps(mins[c]), vlo1 = vlo0, vhi0 = _mm_set1_ps(maxs[c]), vhi1 = vhi0;
                __m128i vbad = _mm_setzero_si128();
                const __m128i expm = _mm_set1_epi32(0x7F800000);
                for (; k + 8 <= inner; k += 8) {
                    __m128 a = _mm_loadu_ps(p + k), b = _mm_loadu_ps(p + k + 4);
                    vlo0 = _mm_min_ps(vlo0, a), vlo1 = _mm_min_ps(vlo1, b);
                    vhi0 = _mm_max_ps(vhi0, a), vhi1 = _mm_max_ps(vhi1, b);
                    __m128i ea = _mm_and_si128(_mm_castps_si128(a), expm), eb = _mm_and_si128(_mm_castps_si128(b), expm);
                    vbad = _mm_or_si128(vbad, _mm_or_si128(_mm_cmpeq_epi32(ea, expm), _mm_cmpeq_epi32(eb, expm)));
                }
                _mm_storeu_ps(lo, vlo0), _mm_storeu_ps(lo + 4, vlo1), _mm_storeu_ps(hi, vhi0), _mm_storeu_ps(hi + 4, vhi1);
                _mm_storeu_si128((__m128i *)bad, vbad);
                for (int t = 0; t < 4; t++) bad[t] &= 1;
            }
#endif
            for (; k + 8 <= inner; k += 8)
                for (int t = 0; t < 8; t++) {
                    float v = p[k + t];
                    uint32_t u;
                    memcpy(&u, &v, 4);
                    bad[t] |= (u & 0x7F800000u) == 0x7F800000u;
                    lo[t] = v < lo[t] ? v : lo[t];
                    hi[t] = v > hi[t] ? v : hi[t];
                }
            for (; k < inner; k++) {
                float v = p[k];
                uint32_t u;
                memcpy(&u, &v, 4);
                bad[0] |= (u & 0x7F800000u) == 0x7F800000u;
                lo[0] = v < lo[0] ? v : lo[0];
                hi[0] = v > hi[0] ? v : hi[0];
            }
            for (int t = 0; t < 8; t++) {
                expmax |= bad[t];
                mins[c] = lo[t] < mins[c] ? lo[t] : mins[c];
                maxs[c] = hi[t] > maxs[c] ? hi[t] : maxs[c];
            }
        }
    }
    return !expmax;
}

/* q = clamp(round_half_even(x * inv) + z, 0, qmax); vectorizes (the rounding uses the 1.5 * 2^23 trick,
 * exact because |x * inv| <= 2^9 here, and needs no libm call). */
static void quantize_run(const float *restrict x, uint8_t *restrict q, int64_t n, float inv, float z, float fq) {
    for (int64_t k = 0; k < n; k++) {
        float r = x[k] * inv;
        r = (r + 12582912.0f) - 12582912.0f;
        float v = r + z;
        v = v < 0.0f ? 0.0f : v;
        v = v > fq ? fq : v;
        q[k] = (uint8_t)(int32_t)v;
    }
}

#ifdef HAVE_AVX2_PATH
/* quantize_run for 32 elements at a time: the same float operations (multiply, round half to even, add the
 * zero point, clamp, truncate), so the symbols are identical to the scalar loop. Returns elements done. */
__attribute__((target("avx2"))) static int64_t quantize_run_avx2(const float *x, uint8_t *q, int64_t n, float inv,
                                                                  float z, float fq) {
    const __m256 vinv = _mm256_set1_ps(inv), vz = _mm256_set1_ps(z), vq = _mm256_set1_ps(fq);
    const __m256 lo = _mm256_setzero_ps();
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        __m256i v[4];
        for (int t = 0; t < 4; t++) {
            __m256 r = _mm256_mul_ps(_mm256_loadu_ps(x + k + 8 * t), vinv);
            r = _mm256_round_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, vz), lo), vq);
            v[t] = _mm256_cvttps_epi32(r);
        }
        __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(v[0], v[1]), _mm256_packus_epi32(v[2], v[3]));
        _mm256_storeu_si256((__m256i *)(q + k), _mm256_permutevar8x32_epi32(b, order));
    }
    return k;
}
#endif

/* smallest and largest symbol of q[0..n), folded into *lo / *hi (vectorizes) */
static void symbol_range(const uint8_t *q, int64_t n, uint8_t *lo, uint8_t *hi) {
    uint8_t a = *lo, b = *hi;
    for (int64_t i = 0; i < n; i++) {
        a = q[i] < a ? q[i] : a;
        b = q[i] > b ? q[i] : b;
    }
    *lo = a, *hi = b;
}

/* Quantize n floats (outer x channels x inner) to symbols; *smin / *smax get their range. With hist, also
 * the histogram of about one chunk of QCHUNK symbols in stride (all with stride 1); *counted symbols. */
void quantize(const float *x, uint8_t *q, int64_t n, const float *inv, const uint8_t *zero, int64_t channels,
              int64_t inner, int qmax, uint32_t *hist, int stride, uint8_t *smin, uint8_t *smax, int64_t *counted) {
    const float fq = (float)qmax;
    /* chunks of whole channel runs (or of one long run) so the histogram reads symbols still in L1 */
    const int64_t chunk = QCHUNK;
    uint32_t h[4][256];
    memset(h, 0, sizeof h);
    int64_t done = 0; /* symbols already passed to the histogram / range */
    uint8_t lo = 255, hi = 0;
    int64_t cnt = 0;
    for (int64_t base = 0; base < n; base += inner) {
        int64_t c = (base / inner) % channels;
        for (int64_t k = 0; k < inner; k += chunk) {
            int64_t m = inner - k < chunk ? inner - k : chunk, d = 0;
            const float *xs = x + base + k;
            uint8_t *qs = q + base + k;
#ifdef HAVE_AVX2_PATH
            if (cpu_has_avx2 > 0) d = quantize_run_avx2(xs, qs, m, inv[c], (float)zero[c], fq);
#endif
            quantize_run(xs + d, qs + d, m - d, inv[c], (float)zero[c], fq);
            /* every whole chunk [i * QCHUNK, (i + 1) * QCHUNK) of the flat index is counted once done */
            int64_t end = base + k + m;
            int64_t upto = end == n ? n : end / chunk * chunk;
            if (upto > done) {
                symbol_range(q + done, upto - done, &lo, &hi);
                if (hist) cnt += sampled_histogram(q, done, upto, stride, h);
                done = upto;
            }
        }
    }
    if (hist) histogram_fold(h, hist);
    *smin = lo, *smax = hi, *counted = cnt;
}

#ifdef HAVE_AVX2_PATH
__attribute__((target("avx2"))) static int64_t dequantize_run_avx2(const uint8_t *q, float *x, int64_t n, int32_t z,
                                                                    float scale) {
    const __m256i vz = _mm256_set1_epi32(z);
    const __m256 vs = _mm256_set1_ps(scale);
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m128i b = _mm_loadu_si128((const __m128i *)(q + k));
        __m256i lo = _mm256_sub_epi32(_mm256_cvtepu8_epi32(b), vz);
        __m256i hi = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(b, 8)), vz);
        _mm256_storeu_ps(x + k, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), vs));
        _mm256_storeu_ps(x + k + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), vs));
    }
    return k;
}
#endif

/* out = (q - z) * scale, one multiply per element (the same on every device; the AVX2 loop does the same
 * exact integer-to-float conversion and one rounded multiply). */
static void dequantize_run(const uint8_t *restrict q, float *restrict x, int64_t n, int32_t z, float scale) {
    int64_t k = 0;
#ifdef HAVE_AVX2_PATH
    if (cpu_has_avx2 > 0) k = dequantize_run_avx2(q, x, n, z, scale);
#endif
    for (; k < n; k++) x[k] = (float)((int32_t)q[k] - z) * scale;
}

/* n symbols (outer x channels x inner) back to float32 */
void dequantize(const uint8_t *q, float *x, int64_t n, const float *scale, const uint8_t *zero, int64_t channels,
                int64_t inner) {
    int64_t outer = n / (channels * inner);
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t c = 0; c < channels; c++) {
            int64_t base = (o * channels + c) * inner;
            dequantize_run(q + base, x + base, inner, (int32_t)zero[c], scale[c]);
        }
    }
}

/* Symbols [start, end) to float32: out = (q - zero[ch]) * scale[ch], ch = (i / inner) % channels. q holds
 * the symbols of [start, end) from q[0]. */
void dequantize_range(const uint8_t *q, float *x, int64_t start, int64_t end, const float *scale,
                      const uint8_t *zero, int64_t channels, int64_t inner) {
    int64_t i = start;
    while (i < end) {
        int64_t ch = (i / inner) % channels;
        int64_t seg = (i / inner + 1) * inner;
        if (seg > end) seg = end;
        dequantize_run(q + (i - start), x + i, seg - i, (int32_t)zero[ch], scale[ch]);
        i = seg;
    }
}

/* Each (rows x cols) byte matrix of src to (cols x rows) in dst, e.g. channels-last symbols (N, HW, C) to
 * (N, C, HW), in 16 x 16 byte blocks. */
void transpose_u8(const uint8_t *src, uint8_t *dst, int64_t batch, int64_t rows, int64_t cols) {
    for (int64_t b = 0; b < batch; b++) {
        const uint8_t *s = src + b * rows * cols;
        uint8_t *d = dst + b * rows * cols;
        int64_t r0 = 0;
#if defined(__SSE2__)
        /* 16 x 16 byte blocks through four rounds of unpacks */
        for (; r0 + 16 <= rows; r0 += 16) {
            int64_t c0 = 0;
            for (; c0 + 16 <= cols; c0 += 16) {
                __m128i v[16], t[16];
                for (int k = 0; k < 16; k++) v[k] = _mm_loadu_si128((const __m128i *)(s + (r0 + k) * cols + c0));
                for (int k = 0; k < 8; k++) {
                    t[2 * k] = _mm_unpacklo_epi8(v[2 * k], v[2 * k + 1]);
                    t[2 * k + 1] = _mm_unpackhi_epi8(v[2 * k], v[2 * k + 1]);
                }
                for (int k = 0; k < 4; k++)
                    for (int h = 0; h < 2; h++) {
                        v[4 * k + 2 * h] = _mm_unpacklo_epi16(t[4 * k + h], t[4 * k + 2 + h]);
                        v[4 * k + 2 * h + 1] = _mm_unpackhi_epi16(t[4 * k + h], t[4 * k + 2 + h]);
                    }
                for (int k = 0; k < 2; k++)
                    for (int h = 0; h < 4; h++) {
                        t[8 * k + 2 * h] = _mm_unpacklo_epi32(v[8 * k + h], v[8 * k + 4 + h]);
                        t[8 * k + 2 * h + 1] = _mm_unpackhi_epi32(v[8 * k + h], v[8 * k + 4 + h]);
                    }
                for (int h = 0; h < 8; h++) {
                    v[2 * h] = _mm_unpacklo_epi64(t[h], t[8 + h]);
                    v[2 * h + 1] = _mm_unpackhi_epi64(t[h], t[8 + h]);
                }
                for (int k = 0; k < 16; k++) _mm_storeu_si128((__m128i *)(d + (c0 + k) * rows + r0), v[k]);
            }
            for (int64_t c = c0; c < cols; c++)
                for (int64_t r = r0; r < r0 + 16; r++) d[c * rows + r] = s[r * cols + c];
        }
#endif
        for (int64_t c = 0; c < cols; c++)
            for (int64_t r = r0; r < rows; r++) d[c * rows + r] = s[r * cols + c];
    }
}

/* clip="mse" / "wmse": for each channel, the index of the candidate range factors[k] * [min, max] whose
 * (qmax + 1)-level quantization has the least squared error over the channel's 256-bin histogram (bin b
 * standing for (b - zero8) * scale8), the error of saturated bins multiplied by weight. Each candidate is
 * scored in O(qmax) from prefix sums of the counts, sums and squares: the bins of one level are a run.
 * Ties go to the lower index. The arithmetic is that of the NumPy reference in tests/test_quantize.py. */
void clip_choice(const uint32_t *hist, const float *scale8, const uint8_t *zero8, const float *mins,
                 const float *maxs, int64_t channels, const double *factors, int64_t nf, int qmax, double weight,
                 int32_t *best) {
    double p0[257], p1[257], p2[257];
    for (int64_t c = 0; c < channels; c++) {
        const uint32_t *h = hist + c * 256;
        const double s8 = scale8[c], z8 = zero8[c];
        p0[0] = p1[0] = p2[0] = 0.0;
        for (int b = 0; b < 256; b++) {
            const double centre = ((double)b - z8) * s8, n = h[b];
            p0[b + 1] = p0[b] + n;
            p1[b + 1] = p1[b] + n * centre;
            p2[b + 1] = p2[b] + n * (centre * centre);
        }
        double least = 0.0;
        int32_t pick = 0;
        for (int64_t k = 0; k < nf; k++) {
            const double lo = (double)mins[c] * factors[k], hi = (double)maxs[c] * factors[k];
            const double step = hi > lo ? (hi - lo) / qmax : 1.0;
            double zero = nearbyint(-lo / step);
            zero = zero < 0 ? 0 : (zero > qmax ? qmax : zero);
            /* cells: below the range (saturates to level 0), levels 0..qmax, above it (level qmax) */
            int from = 0;
            double err = 0.0;
            for (int cell = 0; cell <= qmax + 2; cell++) {
                int to = 256;
                if (cell <= qmax + 1) {
                    const double first = ceil(z8 + (((double)cell - zero) - 0.5) * step / s8);
                    to = first < 0 ? 0 : (first > 256 ? 256 : (int)first);
                }
                if (to < from) to = from;
                const int level = cell == 0 ? 0 : (cell == qmax + 2 ? qmax : cell - 1);
                const double v = ((double)level - zero) * step;
                const double n = p0[to] - p0[from], t = p1[to] - p1[from], s = p2[to] - p2[from];
                const double e = (s - (2.0 * v) * t) + (v * v) * n;
                err += (cell == 0 || cell == qmax + 2) ? weight * e : e;
                from = to;
            }
            if (k == 0 || err < least) least = err, pick = (int32_t)k;
        }
        best[c] = pick;
    }
}

/* Per-tensor quantization from the floats, in one call (codec/quantize.py's _quantize for one channel and no
 * clipping): min / max (both including 0), the scale and zero point by params_from_range's arithmetic (float64,
 * the step rounded once to float32, the zero point rounded half to even), the symbols, and with hist the
 * histogram (stride 1: all symbols; k > 1: about one chunk in k, then every symbol between the smallest and the
 * largest counted at least once, or, past QUANT_MAX_UNSEEN missing ones, all of them counted). Returns 0, 1 for
 * a NaN or Inf, 2 for a range too wide for a float32 step. */
int quantize_tensor(const float *x, int64_t n, int bits, int stride, uint8_t *q, uint32_t *hist, float *scale,
                    uint8_t *zero, uint8_t *lo, uint8_t *hi) {
    float mn, mx;
    if (!minmax(x, n, 1, n, &mn, &mx)) return 1;
    const int qmax = (1 << bits) - 1;
    const double step = ((double)mx - (double)mn) / qmax;
    if (step > 1e37) return 2; /* MAX_STEP */
    const float s32 = step > 0 ? (float)(step > 1e-30 ? step : 1e-30) : 1.0f; /* MIN_STEP */
    double z = nearbyint(-(double)mn / (double)s32);
    z = z < 0 ? 0 : z > qmax ? qmax : z;
    *scale = s32;
    *zero = (uint8_t)z;
    const float inv = 1.0f / s32;
    int64_t counted;
    quantize(x, q, n, &inv, zero, 1, n, qmax, hist, stride > 0 ? stride : 1, lo, hi, &counted);
    if (hist && stride > 1) {
        int unseen = 0;
        for (int s = *lo; s <= *hi; s++) unseen += hist[s] == 0;
        if (unseen > QUANT_MAX_UNSEEN) {
            histogram4(q, n, hist);
        } else {
            for (int s = *lo; s <= *hi; s++)
                if (!hist[s]) hist[s] = 1;
        }
    }
    return 0;
}
