/*
 * splitstream codec kernels: quantization, symbol statistics, CSR split/merge, symbol packing and
 * 32-lane interleaved static rANS (32-bit state, 16-bit renormalization words, fixed-size blocks).
 *
 * Block bitstream (identical on every device):
 *   32 x u32 final lane states (little endian), then the u16 renormalization words in decoder read order.
 *   Symbol i of a block belongs to lane i % 32 and step i / 32. The decoder walks steps forward and, inside
 *   a step, lanes 0..31; a lane that falls below L after decoding reads the next word. The encoder walks the
 *   same order backwards and writes words from the end of its buffer, so the words land in read order
 *   (a warp does the same with a ballot/prefix-sum compaction). Initial states are L; after decoding, every
 *   lane must be back at L and every word consumed, which doubles as an integrity check.
 *
 * Contexts: symbol i is coded with table  group[channel(i)] * nbuckets + bucket(sym[i - nb_dist]),
 * where channel(i) = ((i * mult) / inner) % channels and the neighbor term is used only when nb_dist > 0
 * (nb_dist >= 32, so the neighbor was decoded in an earlier step of the same block; outside the block it
 * counts as bucket 0).
 *
 * All entry points take Python buffers and release the GIL while they work.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "csrc/crc32.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
static uint32_t perm_lut[256][8] __attribute__((aligned(32)));
static uint32_t perm_hi[256][8] __attribute__((aligned(32))); /* needing lanes packed to the top, in order */
static uint32_t perm_hi_enc[256][8] __attribute__((aligned(32))); /* the same for the encoder's lane order */
static const int ENC_ORDER[8] = {0, 1, 4, 5, 2, 3, 6, 7};
static int cpu_has_avx2 = -1;

static void init_avx2(void) {
    for (int m = 0; m < 256; m++) {
        int k = 0;
        for (int lane = 0; lane < 8; lane++) perm_lut[m][lane] = (m >> lane) & 1 ? (uint32_t)k++ : 0;
        int c = k, t = 0;
        for (int lane = 0; lane < 8; lane++) perm_hi[m][lane] = 0;
        for (int lane = 0; lane < 8; lane++)
            if ((m >> lane) & 1) perm_hi[m][8 - c + t++] = (uint32_t)lane;
    }
    /* the encoder keeps lanes in the order ENC_ORDER (an involution): mask bit j is lane ENC_ORDER[j], and
     * lane L sits at position ENC_ORDER[L] */
    for (int m = 0; m < 256; m++) {
        int nat = 0;
        for (int j = 0; j < 8; j++)
            if ((m >> j) & 1) nat |= 1 << ENC_ORDER[j];
        for (int k = 0; k < 8; k++) perm_hi_enc[m][k] = (uint32_t)ENC_ORDER[perm_hi[nat][k]];
    }
    __builtin_cpu_init();
    cpu_has_avx2 = __builtin_cpu_supports("avx2");
}
#endif

#define LANES 32
#define RANS_L (1u << 16)
#define MAX_TABLES 256
#define STATE_BYTES (LANES * 4)

/* ------------------------------------------------------------------------------------------------ */
/* buffer helpers                                                                                    */

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static int get_buf(PyObject *obj, Buf *b, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous%s buffer", name, writable ? " writable" : "");
        b->held = 0;
        return -1;
    }
    b->held = 1;
    return 0;
}

static void rel_buf(Buf *b) {
    if (b->held) PyBuffer_Release(&b->view);
    b->held = 0;
}

static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* ------------------------------------------------------------------------------------------------ */
/* context walker: channel index and neighbor bucket for symbol i                                    */

typedef struct {
    int64_t channels, inner, mult; /* channel(i) = ((i*mult)/inner) % channels */
    const uint8_t *group;         /* channels entries, or NULL -> group 0 */
    int64_t nb_dist;              /* 0 -> no neighbor context */
    const uint8_t *nbmap;         /* 256 entries symbol -> bucket */
    int nbuckets;
    int ntables;
} Ctx;

typedef struct {
    int64_t ch, rem;
} ChanIter;

static inline void chan_init(const Ctx *c, ChanIter *it, int64_t i) {
    int64_t e = i * c->mult;
    it->ch = (e / c->inner) % c->channels;
    it->rem = e % c->inner;
}

static inline void chan_next(const Ctx *c, ChanIter *it) {
    it->rem += c->mult;
    while (it->rem >= c->inner) {
        it->rem -= c->inner;
        if (++it->ch == c->channels) it->ch = 0;
    }
}

static int parse_ctx(PyObject *spec, Ctx *c, Buf *gb, Buf *nb) {
    /* spec = (channels, inner, mult, group_bytes|None, nb_dist, nbmap_bytes|None, nbuckets) */
    PyObject *gobj, *nobj;
    long long channels, inner, mult, nbd;
    int nbuckets;
    gb->held = nb->held = 0;
    if (!PyArg_ParseTuple(spec, "LLLOLOi", &channels, &inner, &mult, &gobj, &nbd, &nobj, &nbuckets)) return -1;
    if (channels < 1 || inner < 1 || mult < 1 || nbd < 0 || nbuckets < 1 || nbuckets > 16) {
        PyErr_SetString(PyExc_ValueError, "bad context spec");
        return -1;
    }
    c->channels = channels;
    c->inner = inner;
    c->mult = mult;
    c->nb_dist = nbd;
    c->nbuckets = nbuckets;
    c->group = NULL;
    c->nbmap = NULL;
    int ngroups = 1;
    if (gobj != Py_None) {
        if (get_buf(gobj, gb, 0, "group map") < 0) return -1;
        if (gb->view.len != channels) {
            PyErr_SetString(PyExc_ValueError, "group map length != channels");
            return -1;
        }
        c->group = (const uint8_t *)gb->view.buf;
        for (int64_t k = 0; k < channels; k++)
            if (c->group[k] + 1 > ngroups) ngroups = c->group[k] + 1;
    }
    if (nbd > 0) {
        if (nbd < LANES) {
            PyErr_SetString(PyExc_ValueError, "neighbor distance must be >= 32");
            return -1;
        }
        if (nobj == Py_None || get_buf(nobj, nb, 0, "neighbor map") < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "neighbor map missing");
            return -1;
        }
        if (nb->view.len != 256) {
            PyErr_SetString(PyExc_ValueError, "neighbor map must have 256 entries");
            return -1;
        }
        c->nbmap = (const uint8_t *)nb->view.buf;
        for (int k = 0; k < 256; k++)
            if (c->nbmap[k] >= nbuckets) {
                PyErr_SetString(PyExc_ValueError, "neighbor bucket out of range");
                return -1;
            }
    } else {
        c->nbuckets = 1;
    }
    c->ntables = ngroups * c->nbuckets;
    if (c->ntables > MAX_TABLES) {
        PyErr_SetString(PyExc_ValueError, "too many context tables");
        return -1;
    }
    return 0;
}

/* Context id of every symbol in [b0, b1) (block-local neighbor rule), written to ctx[0 .. b1-b0).
 * Channel groups are filled run by run (a channel covers inner / mult symbols), then neighbor buckets added. */
static void block_contexts(const Ctx *c, const uint8_t *sym, int64_t b0, int64_t b1, uint8_t *ctx) {
    int64_t n = b1 - b0;
    if (c->group != NULL && c->channels > 1) {
        ChanIter it = {0, 0};
        chan_init(c, &it, b0);
        int64_t k = 0;
        while (k < n) {
            /* symbols left in this channel: ceil((inner - rem) / mult) */
            int64_t run = (c->inner - it.rem + c->mult - 1) / c->mult;
            if (run < 1) run = 1;
            if (run > n - k) run = n - k;
            memset(ctx + k, (int)(c->group[it.ch] * c->nbuckets), (size_t)run);
            for (int64_t t = 0; t < run; t++) chan_next(c, &it);
            k += run;
        }
    } else {
        memset(ctx, 0, (size_t)n);
    }
    if (c->nb_dist) {
        const uint8_t *above = sym + b0 - c->nb_dist;
        for (int64_t k = c->nb_dist; k < n; k++) ctx[k] = (uint8_t)(ctx[k] + c->nbmap[above[k]]);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* quantization                                                                                      */

/* minmax(x f32, mins f32[C], maxs f32[C], channels, inner) -> bool all finite.  min/max include 0. */
static PyObject *py_minmax(PyObject *self, PyObject *args) {
    PyObject *xo, *mino, *maxo;
    long long channels, inner;
    if (!PyArg_ParseTuple(args, "OOOLL", &xo, &mino, &maxo, &channels, &inner)) return NULL;
    Buf xb, mnb, mxb;
    if (get_buf(xo, &xb, 0, "x") < 0) return NULL;
    if (get_buf(mino, &mnb, 1, "mins") < 0 || get_buf(maxo, &mxb, 1, "maxs") < 0) {
        rel_buf(&xb);
        rel_buf(&mnb);
        return NULL;
    }
    int64_t n = xb.view.len / 4;
    if (channels < 1 || inner < 1 || mnb.view.len < channels * 4 || mxb.view.len < channels * 4 ||
        n % (channels * inner) != 0) {
        rel_buf(&xb), rel_buf(&mnb), rel_buf(&mxb);
        PyErr_SetString(PyExc_ValueError, "minmax: inconsistent sizes");
        return NULL;
    }
    const float *x = (const float *)xb.view.buf;
    float *mins = (float *)mnb.view.buf, *maxs = (float *)mxb.view.buf;
    int finite = 1;
    Py_BEGIN_ALLOW_THREADS;
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
    finite = !expmax;
    Py_END_ALLOW_THREADS;
    rel_buf(&xb), rel_buf(&mnb), rel_buf(&mxb);
    return PyBool_FromLong(finite);
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

/* 256-bin histogram added into hist, eight symbols per 64-bit load spread over four tables. */
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

/* smallest and largest symbol of q[0..n), folded into *lo / *hi (vectorizes) */
static void symbol_range(const uint8_t *q, int64_t n, uint8_t *lo, uint8_t *hi) {
    uint8_t a = *lo, b = *hi;
    for (int64_t i = 0; i < n; i++) {
        a = q[i] < a ? q[i] : a;
        b = q[i] > b ? q[i] : b;
    }
    *lo = a, *hi = b;
}

static void histogram4(const uint8_t *q, int64_t n, uint32_t *hist) {
    uint32_t h[4][256];
    memset(h, 0, sizeof h);
    histogram_add(q, n, h);
    for (int s = 0; s < 256; s++) hist[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s];
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

/* Add the chunks [i * QCHUNK, ...) of q within [from, to) (chunk-aligned, to may be the end) that the
 * sample picks: a multiplicative (Fibonacci) hash of the chunk index spreads them evenly, without aliasing
 * with the tensor's own periods (channels, images) as every k-th chunk would. Returns symbols counted. */
#define QCHUNK 4096
static int64_t sampled_histogram(const uint8_t *q, int64_t from, int64_t to, int stride, uint32_t (*h)[256]) {
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

/* transpose_u8(src u8[batch*rows*cols], dst u8[batch*cols*rows], batch, rows, cols): each (rows x cols)
 * matrix to (cols x rows), e.g. channels-last symbols (N, HW, C) to (N, C, HW), in 16 x 16 byte blocks. */
static PyObject *py_transpose_u8(PyObject *self, PyObject *args) {
    PyObject *so, *dobj;
    long long batch, rows, cols;
    if (!PyArg_ParseTuple(args, "OOLLL", &so, &dobj, &batch, &rows, &cols)) return NULL;
    Buf sb = {0}, db = {0};
    if (get_buf(so, &sb, 0, "src") < 0) return NULL;
    if (get_buf(dobj, &db, 1, "dst") < 0 || batch < 0 || rows < 0 || cols < 0 ||
        sb.view.len != batch * rows * cols || db.view.len != sb.view.len) {
        rel_buf(&sb), rel_buf(&db);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "transpose_u8: inconsistent sizes");
        return NULL;
    }
    const uint8_t *src = (const uint8_t *)sb.view.buf;
    uint8_t *dst = (uint8_t *)db.view.buf;
    Py_BEGIN_ALLOW_THREADS;
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
    Py_END_ALLOW_THREADS;
    rel_buf(&sb), rel_buf(&db);
    Py_RETURN_NONE;
}

/* histogram_sampled(q u8, stride, hist u32[256]) -> symbols counted: the histogram quantize() takes with
 * the same stride, for symbols produced another way (e.g. reordered after quantizing in memory order). */
static PyObject *py_histogram_sampled(PyObject *self, PyObject *args) {
    PyObject *qo, *ho;
    int stride;
    if (!PyArg_ParseTuple(args, "OiO", &qo, &stride, &ho)) return NULL;
    Buf qb = {0}, hb = {0};
    if (get_buf(qo, &qb, 0, "q") < 0) return NULL;
    if (get_buf(ho, &hb, 1, "hist") < 0 || hb.view.len < 1024 || stride < 1) {
        rel_buf(&qb), rel_buf(&hb);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "histogram_sampled: bad arguments");
        return NULL;
    }
    uint32_t h[4][256];
    memset(h, 0, sizeof h);
    int64_t counted;
    Py_BEGIN_ALLOW_THREADS;
    counted = sampled_histogram((const uint8_t *)qb.view.buf, 0, qb.view.len, stride, h);
    uint32_t *hist = (uint32_t *)hb.view.buf;
    for (int s = 0; s < 256; s++) hist[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s];
    Py_END_ALLOW_THREADS;
    rel_buf(&qb), rel_buf(&hb);
    return PyLong_FromLongLong(counted);
}

/* quantize(x f32, out u8, inv_scale f32[C], zero u8[C], channels, inner, qmax, hist u32[256] or None,
 *          hist_stride=1) -> (smallest symbol, largest symbol, symbols counted)
 * With hist_stride k > 1 the histogram counts about one chunk of QCHUNK symbols in k (all with k = 1). */
static PyObject *py_quantize(PyObject *self, PyObject *args) {
    PyObject *xo, *qo, *so, *zo, *ho;
    long long channels, inner;
    int qmax, stride = 1;
    if (!PyArg_ParseTuple(args, "OOOOLLiO|i", &xo, &qo, &so, &zo, &channels, &inner, &qmax, &ho, &stride)) return NULL;
    Buf xb = {0}, qb = {0}, sb = {0}, zb = {0}, hb = {0};
    PyObject *ret = NULL;
    if (get_buf(xo, &xb, 0, "x") < 0 || get_buf(qo, &qb, 1, "out") < 0 || get_buf(so, &sb, 0, "scale") < 0 ||
        get_buf(zo, &zb, 0, "zero") < 0)
        goto done;
    if (ho != Py_None && get_buf(ho, &hb, 1, "hist") < 0) goto done;
    int64_t n = xb.view.len / 4;
    if (qb.view.len < n || channels < 1 || inner < 1 || sb.view.len < channels * 4 || zb.view.len < channels ||
        n % (channels * inner) != 0 || qmax < 1 || qmax > 255 || (hb.held && hb.view.len < 256 * 4) || stride < 1) {
        PyErr_SetString(PyExc_ValueError, "quantize: inconsistent sizes");
        goto done;
    }
    const float *x = (const float *)xb.view.buf;
    uint8_t *q = (uint8_t *)qb.view.buf;
    const float *inv = (const float *)sb.view.buf;
    const uint8_t *zero = (const uint8_t *)zb.view.buf;
    uint32_t *hist = hb.held ? (uint32_t *)hb.view.buf : NULL;
    int64_t counted = 0;
    uint8_t smin = 255, smax = 0;
    Py_BEGIN_ALLOW_THREADS;
    const float fq = (float)qmax;
    /* chunks of whole channel runs (or of one long run) so the histogram reads symbols still in L1 */
    const int64_t chunk = QCHUNK;
    uint32_t h[4][256];
    memset(h, 0, sizeof h);
    int64_t done = 0; /* symbols already passed to the histogram / range */
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
                symbol_range(q + done, upto - done, &smin, &smax);
                if (hist) counted += sampled_histogram(q, done, upto, stride, h);
                done = upto;
            }
        }
    }
    if (hist)
        for (int s = 0; s < 256; s++) hist[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s];
    Py_END_ALLOW_THREADS;
    ret = Py_BuildValue("iiL", n ? (int)smin : 0, n ? (int)smax : 0, (long long)counted);
done:
    rel_buf(&xb), rel_buf(&qb), rel_buf(&sb), rel_buf(&zb), rel_buf(&hb);
    return ret;
}

/* dequantize(q u8, out f32, scale f32[C], zero u8[C], channels, inner) */
static PyObject *py_dequantize(PyObject *self, PyObject *args) {
    PyObject *qo, *xo, *so, *zo;
    long long channels, inner;
    if (!PyArg_ParseTuple(args, "OOOOLL", &qo, &xo, &so, &zo, &channels, &inner)) return NULL;
    Buf qb = {0}, xb = {0}, sb = {0}, zb = {0};
    PyObject *ret = NULL;
    if (get_buf(qo, &qb, 0, "q") < 0 || get_buf(xo, &xb, 1, "out") < 0 || get_buf(so, &sb, 0, "scale") < 0 ||
        get_buf(zo, &zb, 0, "zero") < 0)
        goto done;
    int64_t n = qb.view.len;
    if (xb.view.len < n * 4 || channels < 1 || inner < 1 || sb.view.len < channels * 4 || zb.view.len < channels ||
        n % (channels * inner) != 0) {
        PyErr_SetString(PyExc_ValueError, "dequantize: inconsistent sizes");
        goto done;
    }
    const uint8_t *q = (const uint8_t *)qb.view.buf;
    float *x = (float *)xb.view.buf;
    const float *scale = (const float *)sb.view.buf;
    const uint8_t *zero = (const uint8_t *)zb.view.buf;
    Py_BEGIN_ALLOW_THREADS;
    int64_t outer = n / (channels * inner);
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t c = 0; c < channels; c++) {
            int64_t base = (o * channels + c) * inner;
            dequantize_run(q + base, x + base, inner, (int32_t)zero[c], scale[c]);
        }
    }
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
done:
    rel_buf(&qb), rel_buf(&xb), rel_buf(&sb), rel_buf(&zb);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* statistics                                                                                        */

/* context_histogram(sym u8, ctxspec, block_size, counts u32[ntables*256], stride) -> None
 * Counts every stride-th block (stride >= 1) so a cost model can sample cheaply. */
static PyObject *py_context_histogram(PyObject *self, PyObject *args) {
    PyObject *so, *spec, *co;
    long long block, stride;
    if (!PyArg_ParseTuple(args, "OOLOL", &so, &spec, &block, &co, &stride)) return NULL;
    Buf sb = {0}, cb = {0}, gb = {0}, nb = {0};
    Ctx c;
    PyObject *ret = NULL;
    if (get_buf(so, &sb, 0, "symbols") < 0 || get_buf(co, &cb, 1, "counts") < 0) goto done;
    if (parse_ctx(spec, &c, &gb, &nb) < 0) goto done;
    if (block < LANES || stride < 1 || cb.view.len < (Py_ssize_t)c.ntables * 256 * 4) {
        PyErr_SetString(PyExc_ValueError, "context_histogram: bad sizes");
        goto done;
    }
    const uint8_t *sym = (const uint8_t *)sb.view.buf;
    uint32_t *counts = (uint32_t *)cb.view.buf;
    int64_t n = sb.view.len;
    Py_BEGIN_ALLOW_THREADS;
    memset(counts, 0, (size_t)c.ntables * 256 * 4);
    if (c.ntables == 1) {
        for (int64_t b0 = 0; b0 < n; b0 += block * stride) {
            int64_t b1 = b0 + block < n ? b0 + block : n;
            for (int64_t i = b0; i < b1; i++) counts[sym[i]]++;
        }
    } else {
        uint8_t *ctx = (uint8_t *)malloc((size_t)block);
        if (ctx) {
            for (int64_t b0 = 0; b0 < n; b0 += block * stride) {
                int64_t b1 = b0 + block < n ? b0 + block : n;
                block_contexts(&c, sym, b0, b1, ctx);
                for (int64_t i = b0; i < b1; i++) counts[(int)ctx[i - b0] * 256 + sym[i]]++;
            }
            free(ctx);
        }
    }
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
done:
    rel_buf(&sb), rel_buf(&cb), rel_buf(&gb), rel_buf(&nb);
    return ret;
}

/* histogram(sym u8, counts u32[256]) */
static PyObject *py_histogram(PyObject *self, PyObject *args) {
    PyObject *so, *co;
    if (!PyArg_ParseTuple(args, "OO", &so, &co)) return NULL;
    Buf sb = {0}, cb = {0};
    PyObject *ret = NULL;
    if (get_buf(so, &sb, 0, "symbols") < 0 || get_buf(co, &cb, 1, "counts") < 0) goto done;
    if (cb.view.len < 256 * 4) {
        PyErr_SetString(PyExc_ValueError, "histogram: counts too small");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    histogram4((const uint8_t *)sb.view.buf, sb.view.len, (uint32_t *)cb.view.buf);
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
done:
    rel_buf(&sb), rel_buf(&cb);
    return ret;
}

/* channel_histogram(q u8, channels, inner, counts u32[channels*256]) */
static PyObject *py_channel_histogram(PyObject *self, PyObject *args) {
    PyObject *qo, *co;
    long long channels, inner;
    if (!PyArg_ParseTuple(args, "OLLO", &qo, &channels, &inner, &co)) return NULL;
    Buf qb = {0}, cb = {0};
    PyObject *ret = NULL;
    if (get_buf(qo, &qb, 0, "q") < 0 || get_buf(co, &cb, 1, "counts") < 0) goto done;
    int64_t n = qb.view.len;
    if (channels < 1 || inner < 1 || n % (channels * inner) != 0 || cb.view.len < channels * 256 * 4) {
        PyErr_SetString(PyExc_ValueError, "channel_histogram: bad sizes");
        goto done;
    }
    const uint8_t *q = (const uint8_t *)qb.view.buf;
    uint32_t *counts = (uint32_t *)cb.view.buf;
    Py_BEGIN_ALLOW_THREADS;
    memset(counts, 0, (size_t)channels * 256 * 4);
    int64_t outer = n / (channels * inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t ch = 0; ch < channels; ch++) {
            const uint8_t *p = q + (o * channels + ch) * inner;
            uint32_t *h = counts + ch * 256;
            for (int64_t k = 0; k < inner; k++) h[p[k]]++;
        }
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
done:
    rel_buf(&qb), rel_buf(&cb);
    return ret;
}

/* csr_stats(q u8, zero u8[C], channels, inner, widths tuple, row_step) -> list of (count_hist, gap_hist, nnz)
 * Histograms (u32[256] as bytes) of row occupancy and column gaps for each candidate row width, over every
 * row_step-th row (row_step >= 1). Zero symbol of element i is zero[channel(i)]. */
static PyObject *py_csr_stats(PyObject *self, PyObject *args) {
    PyObject *qo, *zo, *wo;
    long long channels, inner, row_step;
    if (!PyArg_ParseTuple(args, "OOLLOL", &qo, &zo, &channels, &inner, &wo, &row_step)) return NULL;
    Buf qb = {0}, zb = {0};
    PyObject *ret = NULL;
    if (get_buf(qo, &qb, 0, "q") < 0 || get_buf(zo, &zb, 0, "zero") < 0) goto done;
    if (!PyTuple_Check(wo) || channels < 1 || inner < 1 || zb.view.len < channels || row_step < 1) {
        PyErr_SetString(PyExc_ValueError, "csr_stats: bad arguments");
        goto done;
    }
    int64_t n = qb.view.len;
    const uint8_t *q = (const uint8_t *)qb.view.buf;
    const uint8_t *zero = (const uint8_t *)zb.view.buf;
    Py_ssize_t nw = PyTuple_GET_SIZE(wo);
    ret = PyList_New(nw);
    if (!ret) goto done;
    /* one nonzero mask for all widths */
    uint8_t *nz = (uint8_t *)malloc((size_t)(n ? n : 1));
    if (!nz) {
        Py_CLEAR(ret);
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    if (channels == 1) {
        const uint8_t z = zero[0];
        for (int64_t i = 0; i < n; i++) nz[i] = q[i] != z;
    } else {
        int64_t outer = n / (channels * inner);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t ch = 0; ch < channels; ch++) {
                int64_t base = (o * channels + ch) * inner;
                const uint8_t z = zero[ch];
                for (int64_t k = 0; k < inner; k++) nz[base + k] = q[base + k] != z;
            }
    }
    Py_END_ALLOW_THREADS;
    for (Py_ssize_t w = 0; w < nw; w++) {
        long long width = PyLong_AsLongLong(PyTuple_GET_ITEM(wo, w));
        if (width < 1 || width > 255) {
            free(nz);
            Py_CLEAR(ret);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "csr_stats: width out of range");
            goto done;
        }
        uint32_t ch_[256], gh[256];
        memset(ch_, 0, sizeof ch_);
        memset(gh, 0, sizeof gh);
        int64_t nnz = 0, rows = (n + width - 1) / width;
        Py_BEGIN_ALLOW_THREADS;
        uint32_t gh_ext[257];
        memset(gh_ext, 0, sizeof gh_ext);
        for (int64_t r = 0; r < rows; r += row_step) {
            int64_t r0 = r * width, r1 = r0 + width < n ? r0 + width : n;
            int cnt = 0, prev = -1;
            for (int64_t i = r0; i < r1; i++) {
                /* branch-free: zero-point symbols count into the spare bin 256 */
                int col = (int)(i - r0), m = nz[i];
                gh_ext[m ? col - prev - 1 : 256]++;
                prev = m ? col : prev;
                cnt += m;
            }
            ch_[cnt]++;
            nnz += cnt;
        }
        memcpy(gh, gh_ext, sizeof gh);
        Py_END_ALLOW_THREADS;
        PyObject *t = Py_BuildValue("(y#y#L)", (const char *)ch_, (Py_ssize_t)sizeof ch_, (const char *)gh,
                                    (Py_ssize_t)sizeof gh, (long long)nnz);
        if (!t) {
            free(nz);
            Py_CLEAR(ret);
            goto done;
        }
        PyList_SET_ITEM(ret, w, t);
    }
    free(nz);
done:
    rel_buf(&qb), rel_buf(&zb);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* CSR split / merge                                                                                 */

/* csr_split(q, zero u8[C], channels, inner, width, counts_out u8[rows], gaps_out u8[n], vals_out u8[n]) -> nnz */
static PyObject *py_csr_split(PyObject *self, PyObject *args) {
    PyObject *qo, *zo, *co, *go, *vo;
    long long channels, inner, width;
    if (!PyArg_ParseTuple(args, "OOLLLOOO", &qo, &zo, &channels, &inner, &width, &co, &go, &vo)) return NULL;
    Buf qb = {0}, zb = {0}, cb = {0}, gb = {0}, vb = {0};
    PyObject *ret = NULL;
    if (get_buf(qo, &qb, 0, "q") < 0 || get_buf(zo, &zb, 0, "zero") < 0 || get_buf(co, &cb, 1, "counts") < 0 ||
        get_buf(go, &gb, 1, "gaps") < 0 || get_buf(vo, &vb, 1, "vals") < 0)
        goto done;
    int64_t n = qb.view.len;
    int64_t rows = width > 0 ? (n + width - 1) / width : 0;
    if (width < 1 || width > 255 || channels < 1 || inner < 1 || n % (channels * inner) != 0 ||
        zb.view.len < channels || cb.view.len < rows || gb.view.len < n || vb.view.len < n) {
        PyErr_SetString(PyExc_ValueError, "csr_split: bad sizes");
        goto done;
    }
    const uint8_t *q = (const uint8_t *)qb.view.buf, *zero = (const uint8_t *)zb.view.buf;
    uint8_t *counts = (uint8_t *)cb.view.buf, *gaps = (uint8_t *)gb.view.buf, *vals = (uint8_t *)vb.view.buf;
    int64_t nnz = 0;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS;
    uint8_t *mask = NULL;
    if (channels > 1) {
        /* per-channel zero points: one pass builds the non-zero mask run by run */
        mask = (uint8_t *)malloc((size_t)(n ? n : 1));
        if (mask) {
            int64_t outer = n / (channels * inner);
            for (int64_t o = 0; o < outer; o++)
                for (int64_t ch = 0; ch < channels; ch++) {
                    int64_t base = (o * channels + ch) * inner;
                    const uint8_t z = zero[ch];
                    for (int64_t k = 0; k < inner; k++) mask[base + k] = q[base + k] != z;
                }
        }
    }
    const uint8_t z0 = zero[0];
    for (int64_t r = 0; r < rows && (channels == 1 || mask); r++) {
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
    failed = channels > 1 && !mask;
    free(mask);
    Py_END_ALLOW_THREADS;
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    ret = PyLong_FromLongLong(nnz);
done:
    rel_buf(&qb), rel_buf(&zb), rel_buf(&cb), rel_buf(&gb), rel_buf(&vb);
    return ret;
}

/* csr_merge(counts u8[rows], gaps u8[nnz], vals u8[nnz], zero u8[C], channels, inner, width, out u8[n]) -> bool ok */
static PyObject *py_csr_merge(PyObject *self, PyObject *args) {
    PyObject *co, *go, *vo, *zo, *oo;
    long long channels, inner, width;
    if (!PyArg_ParseTuple(args, "OOOOLLLO", &co, &go, &vo, &zo, &channels, &inner, &width, &oo)) return NULL;
    Buf cb = {0}, gb = {0}, vb = {0}, zb = {0}, ob = {0};
    PyObject *ret = NULL;
    if (get_buf(co, &cb, 0, "counts") < 0 || get_buf(go, &gb, 0, "gaps") < 0 || get_buf(vo, &vb, 0, "vals") < 0 ||
        get_buf(zo, &zb, 0, "zero") < 0 || get_buf(oo, &ob, 1, "out") < 0)
        goto done;
    int64_t n = ob.view.len, nnz = gb.view.len;
    int64_t rows = width > 0 ? (n + width - 1) / width : 0;
    if (width < 1 || width > 255 || channels < 1 || inner < 1 || n % (channels * inner) != 0 ||
        zb.view.len < channels || cb.view.len != rows || vb.view.len != nnz) {
        PyErr_SetString(PyExc_ValueError, "csr_merge: bad sizes");
        goto done;
    }
    const uint8_t *counts = (const uint8_t *)cb.view.buf, *gaps = (const uint8_t *)gb.view.buf;
    const uint8_t *vals = (const uint8_t *)vb.view.buf, *zero = (const uint8_t *)zb.view.buf;
    uint8_t *out = (uint8_t *)ob.view.buf;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS;
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
    Py_END_ALLOW_THREADS;
    ret = PyBool_FromLong(ok);
done:
    rel_buf(&cb), rel_buf(&gb), rel_buf(&vb), rel_buf(&zb), rel_buf(&ob);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* symbol packing for small bit widths: k = 8 / bits symbols per byte, first symbol in the low bits  */

static PyObject *py_pack(PyObject *self, PyObject *args) {
    PyObject *qo, *oo;
    int bits;
    if (!PyArg_ParseTuple(args, "OiO", &qo, &bits, &oo)) return NULL;
    Buf qb = {0}, ob = {0};
    PyObject *ret = NULL;
    if (get_buf(qo, &qb, 0, "q") < 0 || get_buf(oo, &ob, 1, "out") < 0) goto done;
    if (bits != 1 && bits != 2 && bits != 4) {
        PyErr_SetString(PyExc_ValueError, "pack: bits must be 1, 2 or 4");
        goto done;
    }
    int k = 8 / bits;
    int64_t n = qb.view.len, m = (n + k - 1) / k;
    if (ob.view.len < m) {
        PyErr_SetString(PyExc_ValueError, "pack: output too small");
        goto done;
    }
    const uint8_t *q = (const uint8_t *)qb.view.buf;
    uint8_t *o = (uint8_t *)ob.view.buf;
    const uint8_t mask = (uint8_t)((1u << bits) - 1);
    Py_BEGIN_ALLOW_THREADS;
    int64_t full = n / k;
    for (int64_t j = 0; j < full; j++) {
        uint8_t v = 0;
        for (int t = 0; t < k; t++) v |= (uint8_t)((q[j * k + t] & mask) << (t * bits));
        o[j] = v;
    }
    if (m > full) {
        uint8_t v = 0;
        for (int64_t i = full * k; i < n; i++) v |= (uint8_t)((q[i] & mask) << ((i - full * k) * bits));
        o[full] = v;
    }
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
done:
    rel_buf(&qb), rel_buf(&ob);
    return ret;
}

static PyObject *py_unpack(PyObject *self, PyObject *args) {
    PyObject *po, *oo;
    int bits;
    if (!PyArg_ParseTuple(args, "OiO", &po, &bits, &oo)) return NULL;
    Buf pb = {0}, ob = {0};
    PyObject *ret = NULL;
    if (get_buf(po, &pb, 0, "packed") < 0 || get_buf(oo, &ob, 1, "out") < 0) goto done;
    if (bits != 1 && bits != 2 && bits != 4) {
        PyErr_SetString(PyExc_ValueError, "unpack: bits must be 1, 2 or 4");
        goto done;
    }
    int k = 8 / bits;
    int64_t n = ob.view.len;
    if (pb.view.len < (n + k - 1) / k) {
        PyErr_SetString(PyExc_ValueError, "unpack: input too small");
        goto done;
    }
    const uint8_t *p = (const uint8_t *)pb.view.buf;
    uint8_t *o = (uint8_t *)ob.view.buf;
    const uint8_t mask = (uint8_t)((1u << bits) - 1);
    Py_BEGIN_ALLOW_THREADS;
    int64_t full = n / k;
    for (int64_t j = 0; j < full; j++) {
        uint8_t v = p[j];
        for (int t = 0; t < k; t++) o[j * k + t] = (uint8_t)((v >> (t * bits)) & mask);
    }
    for (int64_t i = full * k; i < n; i++) o[i] = (uint8_t)((p[i / k] >> ((i % k) * bits)) & mask);
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
done:
    rel_buf(&pb), rel_buf(&ob);
    return ret;
}


/* ------------------------------------------------------------------------------------------------ */
/* prediction residuals: r[i] = (q[i] - q[i - d]) & mask for i >= d, r[i] = q[i] before               */

static void delta_fwd_run(const uint8_t *restrict q, uint8_t *restrict r, int64_t n, int64_t d, uint8_t mask) {
    int64_t head = d < n ? d : n;
    memcpy(r, q, (size_t)head);
    for (int64_t i = head; i < n; i++) r[i] = (uint8_t)((q[i] - q[i - d]) & mask);
}

static void delta_inv_run(const uint8_t *restrict r, uint8_t *restrict q, int64_t n, int64_t d, uint8_t mask) {
    int64_t head = d < n ? d : n;
    memcpy(q, r, (size_t)head);
    if (d >= 16) {
        /* rows of d are independent of each other's current row: vectorizes */
        for (int64_t i = head; i < n; i += d) {
            int64_t end = i + d < n ? i + d : n;
            const uint8_t *prev = q + i - d;
            for (int64_t k = 0; k < end - i; k++) q[i + k] = (uint8_t)((r[i + k] + prev[k]) & mask);
        }
    } else if (d == 1) {
        uint8_t prev = head ? q[0] : 0; /* running sum kept in a register */
        for (int64_t i = head; i < n; i++) {
            prev = (uint8_t)((r[i] + prev) & mask);
            q[i] = prev;
        }
    } else {
        for (int64_t i = head; i < n; i++) q[i] = (uint8_t)((r[i] + q[i - d]) & mask);
    }
}

/* delta(src u8, dst u8, d, mask, inverse) */
static PyObject *py_delta(PyObject *self, PyObject *args) {
    PyObject *so, *dobj;
    long long d;
    int mask, inverse;
    if (!PyArg_ParseTuple(args, "OOLip", &so, &dobj, &d, &mask, &inverse)) return NULL;
    Buf sb = {0}, db = {0};
    PyObject *ret = NULL;
    if (get_buf(so, &sb, 0, "src") < 0 || get_buf(dobj, &db, 1, "dst") < 0) goto done;
    if (d < 1 || mask < 1 || mask > 255 || db.view.len < sb.view.len) {
        PyErr_SetString(PyExc_ValueError, "delta: bad arguments");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    if (inverse)
        delta_inv_run((const uint8_t *)sb.view.buf, (uint8_t *)db.view.buf, sb.view.len, d, (uint8_t)mask);
    else
        delta_fwd_run((const uint8_t *)sb.view.buf, (uint8_t *)db.view.buf, sb.view.len, d, (uint8_t)mask);
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
done:
    rel_buf(&sb), rel_buf(&db);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* frequency tables                                                                                  */

/* normalize(counts u32[ntab*256], prob_bits, out u16[ntab*256]): every counted symbol gets >= 1,
 * each non-empty table sums to 2^prob_bits; empty tables stay all zero. Deterministic integer math. */
static void normalize_one(const uint32_t *cnt, int pb, uint16_t *f) {
    const uint32_t M = 1u << pb;
    uint64_t total = 0;
    for (int s = 0; s < 256; s++) total += cnt[s];
    memset(f, 0, 256 * sizeof(uint16_t));
    if (total == 0) return;
    int64_t sum = 0;
    int best = 0;
    for (int s = 0; s < 256; s++) {
        if (!cnt[s]) continue;
        uint64_t v = ((uint64_t)cnt[s] * M) / total;
        if (v == 0) v = 1;
        f[s] = (uint16_t)(v > M ? M : v);
        sum += f[s];
        if (cnt[s] > cnt[best]) best = s;
    }
    if (sum < M) {
        f[best] = (uint16_t)(f[best] + (M - sum));
        return;
    }
    while (sum > M) {
        /* take from the largest frequency first: it loses the least code length per unit */
        int arg = -1;
        for (int s = 0; s < 256; s++)
            if (f[s] > 1 && (arg < 0 || f[s] > f[arg])) arg = s;
        if (arg < 0) break; /* cannot happen: at most 256 symbols and M >= 256 */
        int64_t take = sum - M;
        if (take > f[arg] - 1) take = f[arg] - 1;
        if (take > f[arg] / 2 && f[arg] > 2) take = f[arg] / 2; /* spread the cut over the big ones */
        if (take < 1) take = 1;
        f[arg] = (uint16_t)(f[arg] - take);
        sum -= take;
    }
}

static PyObject *py_normalize(PyObject *self, PyObject *args) {
    PyObject *co, *oo;
    int pb;
    if (!PyArg_ParseTuple(args, "OiO", &co, &pb, &oo)) return NULL;
    Buf cb = {0}, ob = {0};
    PyObject *ret = NULL;
    if (get_buf(co, &cb, 0, "counts") < 0 || get_buf(oo, &ob, 1, "out") < 0) goto done;
    if (pb < 8 || pb > 15 || cb.view.len % 1024 != 0 || ob.view.len < cb.view.len / 2) {
        PyErr_SetString(PyExc_ValueError, "normalize: bad sizes");
        goto done;
    }
    int64_t ntab = cb.view.len / 1024;
    Py_BEGIN_ALLOW_THREADS;
    for (int64_t t = 0; t < ntab; t++)
        normalize_one((const uint32_t *)cb.view.buf + t * 256, pb, (uint16_t *)ob.view.buf + t * 256);
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
done:
    rel_buf(&cb), rel_buf(&ob);
    return ret;
}


/* read_tables(buf, ntables, prob_bits, out u16[ntables*256]) -> bytes consumed, or -1 if malformed.
 * Per table: a 32-byte presence bitmap, then f-1 of each present symbol in one byte (< 0x80) or two
 * (0x80 | high bits, low byte). Every non-empty table must sum to 2^prob_bits. */
static PyObject *py_read_tables(PyObject *self, PyObject *args) {
    PyObject *bo, *oo;
    int ntables, pb;
    if (!PyArg_ParseTuple(args, "OiiO", &bo, &ntables, &pb, &oo)) return NULL;
    Buf bb = {0}, ob = {0};
    PyObject *ret = NULL;
    if (get_buf(bo, &bb, 0, "buf") < 0 || get_buf(oo, &ob, 1, "out") < 0) goto done;
    if (ntables < 1 || ntables > MAX_TABLES || pb < 8 || pb > 15 || ob.view.len < (Py_ssize_t)ntables * 512) {
        PyErr_SetString(PyExc_ValueError, "read_tables: bad arguments");
        goto done;
    }
    const uint8_t *p = (const uint8_t *)bb.view.buf;
    int64_t len = bb.view.len, pos = 0;
    uint16_t *out = (uint16_t *)ob.view.buf;
    const uint32_t M = 1u << pb;
    memset(out, 0, (size_t)ntables * 512);
    for (int t = 0; t < ntables; t++) {
        if (pos + 32 > len) {
            ret = PyLong_FromLong(-1);
            goto done;
        }
        const uint8_t *bm = p + pos;
        pos += 32;
        uint32_t sum = 0;
        int present = 0;
        for (int sym = 0; sym < 256; sym++) {
            if (!((bm[sym >> 3] >> (sym & 7)) & 1)) continue;
            present = 1;
            if (pos >= len) {
                ret = PyLong_FromLong(-1);
                goto done;
            }
            uint32_t v = p[pos++];
            if (v & 0x80) {
                if (pos >= len) {
                    ret = PyLong_FromLong(-1);
                    goto done;
                }
                v = ((v & 0x7F) << 8) | p[pos++];
            }
            v += 1;
            if (v > M) {
                ret = PyLong_FromLong(-1);
                goto done;
            }
            out[t * 256 + sym] = (uint16_t)v;
            sum += v;
        }
        if (present && sum != M) {
            ret = PyLong_FromLong(-1);
            goto done;
        }
    }
    ret = PyLong_FromLongLong(pos);
done:
    rel_buf(&bb), rel_buf(&ob);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* rANS                                                                                              */

typedef struct {
    uint32_t x_max;  /* renormalize (emit a word) when state >= x_max; 0 marks "always" never used */
    uint32_t rcp;    /* magic multiplier: floor(x / freq) without a divide */
    uint16_t sh1, sh2;
    uint16_t bias;   /* cumulative frequency */
    uint16_t cmpl;   /* M - freq */
} EncSym;

typedef struct {
    uint16_t freq;
    uint16_t bias; /* slot - cumulative */
    uint8_t sym;
    uint8_t pad[3];
} DecSlot;

/* Build the encoder table of one context. Returns 0, or -1 if the frequencies do not sum to M. */
static int build_enc(const uint16_t *f, int pb, EncSym *e) {
    const uint32_t M = 1u << pb;
    uint32_t cum = 0;
    for (int s = 0; s < 256; s++) {
        uint32_t fr = f[s];
        memset(&e[s], 0, sizeof(EncSym));
        if (fr == 0) continue;
        if (fr > M) return -1;
        e[s].x_max = fr == M ? 0xFFFFFFFFu : ((RANS_L >> pb) << 16) * fr;
        /* Granlund-Montgomery round-up method, exact for every 32-bit numerator */
        int l = 0;
        while ((1u << l) < fr) l++;
        e[s].rcp = (uint32_t)((((uint64_t)1 << 32) * (((uint64_t)1 << l) - fr)) / fr + 1);
        e[s].sh1 = l < 1 ? (uint16_t)l : 1;
        e[s].sh2 = l > 1 ? (uint16_t)(l - 1) : 0;
        e[s].bias = (uint16_t)cum;
        e[s].cmpl = (uint16_t)(M - fr);
        cum += fr;
    }
    return cum == M || cum == 0 ? 0 : -1; /* an empty table belongs to a context no symbol uses */
}

static int build_dec(const uint16_t *f, int pb, DecSlot *d) {
    const uint32_t M = 1u << pb;
    uint32_t cum = 0;
    for (int s = 0; s < 256; s++) {
        uint32_t fr = f[s];
        if (cum + fr > M) return -1;
        for (uint32_t k = 0; k < fr; k++) {
            d[cum + k].freq = (uint16_t)fr;
            d[cum + k].bias = (uint16_t)k;
            d[cum + k].sym = (uint8_t)s;
        }
        cum += fr;
    }
    return cum == M ? 0 : -1;
}

/* One encode step on local state x and local word pointer wp. The word is always stored one slot below
 * the write pointer, which moves only when the word is needed (otherwise the slot is overwritten later),
 * so there is no branch to mispredict. Division by the frequency uses the precomputed reciprocal. */
#define ENC_STEP(x, e, wp)                                                   \
    do {                                                                     \
        missing |= (e)->x_max == 0; /* zero frequency: not codable */         \
        uint32_t need_ = (x) >= (e)->x_max;                                  \
        (wp)[-1] = (uint16_t)((x)&0xFFFF);                                   \
        (wp) -= need_;                                                       \
        (x) >>= (need_ << 4);                                                \
        uint32_t t_ = (uint32_t)(((uint64_t)(x) * (e)->rcp) >> 32);          \
        uint32_t q_ = (t_ + (((x)-t_) >> (e)->sh1)) >> (e)->sh2;             \
        (x) = (x) + (e)->bias + q_ * (e)->cmpl;                              \
    } while (0)

#ifdef HAVE_AVX2_PATH
/* AVX2 encoder for whole 32-symbol steps [0, steps*32) of a block, walked backwards like the scalar loop.
 * Per 8-lane vector, two 64-bit gathers fetch each symbol's packed entry:
 *   packed[sym] = rcp | (cum | (M - freq) << 12 | sh1 << 24 | present << 27 | sh2 << 28) << 32
 * (prob_bits <= 12). An in-lane shuffle splits reciprocals from the rest, which leaves the lanes in the order
 * ENC_ORDER (0 1 4 5 2 3 6 7); the states are kept in that order throughout, so no lane-crossing shuffle
 * is needed. Lanes whose state is at or above freq << (32 - prob_bits) emit their low 16 bits, packed to the
 * top of an 8-word store in lane order (a permutation table for this order), so the words land exactly where
 * the scalar encoder puts them; then the state is divided by the frequency with the reciprocal and updated.
 * The AND of all entries used proves every symbol was present in its table (no separate pass).
 * Integer-only: same bytes as the scalar path. */
__attribute__((target("avx2"))) static uint16_t *encode_steps_avx2(uint32_t *st, const uint8_t *s, const uint8_t *ctx,
                                                                   int64_t steps, const uint64_t *packed, int pb,
                                                                   uint16_t *wp, int *missing) {
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    __m256i X[4];
    for (int v = 0; v < 4; v++)
        X[v] = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(st + 8 * v)), order);
    const long long *base = (const long long *)packed;
    const __m256i lo16 = _mm256_set1_epi32(0xFFFF), m12 = _mm256_set1_epi32(0xFFF);
    const __m256i one = _mm256_set1_epi32(1), top = _mm256_set1_epi32((1 << pb) - 1);
    const __m128i renorm_shift = _mm_cvtsi32_si128(32 - pb);
    __m256i present = _mm256_set1_epi32(-1);
    for (int64_t k = steps - 1; k >= 0; k--) {
        const uint8_t *p = s + k * LANES;
        for (int v = 3; v >= 0; v--) {
            __m256i sym = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8 * v)));
            if (ctx) {
                __m256i cx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ctx + k * LANES + 8 * v)));
                sym = _mm256_add_epi32(sym, _mm256_slli_epi32(cx, 8));
            }
            __m256 g0 = _mm256_castsi256_ps(_mm256_i32gather_epi64(base, _mm256_castsi256_si128(sym), 8));
            __m256 g1 = _mm256_castsi256_ps(_mm256_i32gather_epi64(base, _mm256_extracti128_si256(sym, 1), 8));
            __m256i rcp = _mm256_castps_si256(_mm256_shuffle_ps(g0, g1, _MM_SHUFFLE(2, 0, 2, 0)));
            __m256i pk = _mm256_castps_si256(_mm256_shuffle_ps(g0, g1, _MM_SHUFFLE(3, 1, 3, 1)));
            present = _mm256_and_si256(present, pk);
            __m256i bias = _mm256_and_si256(pk, m12);
            __m256i cmpl = _mm256_and_si256(_mm256_srli_epi32(pk, 12), m12);
            __m256i sh1 = _mm256_and_si256(_mm256_srli_epi32(pk, 24), one);
            __m256i sh2 = _mm256_srli_epi32(pk, 28);
            __m256i x = X[v];
            /* x >= f << (32 - pb)  <=>  (x >> (32 - pb)) + (M - f) > M - 1   (sums below 2^13) */
            __m256i need = _mm256_cmpgt_epi32(_mm256_add_epi32(_mm256_srl_epi32(x, renorm_shift), cmpl), top);
            int m = _mm256_movemask_ps(_mm256_castsi256_ps(need));
            __m256i words = _mm256_permutevar8x32_epi32(_mm256_and_si256(x, lo16),
                                                        _mm256_load_si256((const __m256i *)perm_hi_enc[m]));
            __m256i pw = _mm256_permute4x64_epi64(_mm256_packus_epi32(words, words), 0x08);
            _mm_storeu_si128((__m128i *)(wp - 8), _mm256_castsi256_si128(pw));
            wp -= __builtin_popcount((unsigned)m);
            x = _mm256_blendv_epi8(x, _mm256_srli_epi32(x, 16), need);
            __m256i even = _mm256_srli_epi64(_mm256_mul_epu32(x, rcp), 32);
            __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(rcp, 32));
            __m256i t = _mm256_blend_epi32(even, odd, 0xAA);
            __m256i q = _mm256_srlv_epi32(_mm256_add_epi32(t, _mm256_srlv_epi32(_mm256_sub_epi32(x, t), sh1)), sh2);
            X[v] = _mm256_add_epi32(_mm256_add_epi32(x, bias), _mm256_mullo_epi32(q, cmpl));
        }
    }
    for (int v = 0; v < 4; v++)
        _mm256_storeu_si256((__m256i *)(st + 8 * v), _mm256_permutevar8x32_epi32(X[v], order));
    if (_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(present, 4))) != 0xFF) *missing = 1;
    return wp;
}
#endif

/* Encode symbols [b0, b1) into dst (capacity STATE_BYTES + 2*(b1-b0)); returns bytes written. */
static int64_t encode_block(const uint8_t *sym, int64_t b0, int64_t b1, const uint8_t *ctx, const EncSym *tabs,
                            const uint64_t *packed, int pb, uint8_t *dst, uint16_t *scratch_end, int *missing_out) {
    int missing = 0;
    uint32_t st[LANES];
    for (int j = 0; j < LANES; j++) st[j] = RANS_L;
    uint16_t *wp = scratch_end;
    int64_t n = b1 - b0;
    const uint8_t *s = sym + b0;
    (void)pb;
    if (ctx) {
        int64_t i = n - 1;
        for (; i >= 0 && ((i + 1) & (LANES - 1)); i--) {
            int j = (int)(i & (LANES - 1));
            uint32_t x = st[j];
            const EncSym *e = &tabs[(int)ctx[i] * 256 + s[i]];
            ENC_STEP(x, e, wp);
            st[j] = x;
        }
#ifdef HAVE_AVX2_PATH
        if (cpu_has_avx2 > 0 && packed && i >= 0) {
            wp = encode_steps_avx2(st, s, ctx, (i + 1) / LANES, packed, pb, wp, &missing);
            i = -1;
        }
#endif
        for (; i >= 0; i -= LANES) {
            const uint8_t *p = s + i - (LANES - 1), *cp = ctx + i - (LANES - 1);
            for (int j = LANES - 1; j >= 0; j--) {
                uint32_t x = st[j];
                const EncSym *e = &tabs[(int)cp[j] * 256 + p[j]];
                ENC_STEP(x, e, wp);
                st[j] = x;
            }
        }
    } else {
        int64_t i = n - 1;
        for (; i >= 0 && ((i + 1) & (LANES - 1)); i--) {
            int j = (int)(i & (LANES - 1));
            uint32_t x = st[j];
            const EncSym *e = &tabs[s[i]];
            ENC_STEP(x, e, wp);
            st[j] = x;
        }
#ifdef HAVE_AVX2_PATH
        if (cpu_has_avx2 > 0 && packed && i >= 0) {
            wp = encode_steps_avx2(st, s, NULL, (i + 1) / LANES, packed, pb, wp, &missing);
            i = -1;
        }
#endif
        for (; i >= 0; i -= LANES) {
            const uint8_t *p = s + i - (LANES - 1);
            for (int j = LANES - 1; j >= 0; j--) {
                uint32_t x = st[j];
                const EncSym *e = &tabs[p[j]];
                ENC_STEP(x, e, wp);
                st[j] = x;
            }
        }
    }
    if (missing) *missing_out = 1;
    for (int j = 0; j < LANES; j++) wr32(dst + 4 * j, st[j]);
    int64_t nw = scratch_end - wp;
    memcpy(dst + STATE_BYTES, wp, (size_t)nw * 2);
    return STATE_BYTES + nw * 2;
}

/* rans_encode(sym u8, ctxspec, freqs u16[ntab*256], prob_bits, block_size, block_first, block_last,
 *             out writable, sizes u32[nb]) -> bytes written into out (blocks back to back)
 * out must hold (block_last - block_first) * STATE_BYTES + 2 * symbols in those blocks. */
static PyObject *py_rans_encode(PyObject *self, PyObject *args) {
    PyObject *so, *spec, *fo, *oo, *zo;
    int pb;
    long long block, bf, bl;
    if (!PyArg_ParseTuple(args, "OOOiLLLOO", &so, &spec, &fo, &pb, &block, &bf, &bl, &oo, &zo)) return NULL;
    Buf sb = {0}, fb = {0}, ob = {0}, zb = {0}, gb = {0}, nb = {0};
    Ctx c;
    PyObject *ret = NULL;
    EncSym *tabs = NULL;
    uint64_t *packed = NULL;
    uint16_t *scratch = NULL;
    uint8_t *ctx = NULL;
    if (get_buf(so, &sb, 0, "symbols") < 0 || get_buf(fo, &fb, 0, "freqs") < 0 || get_buf(oo, &ob, 1, "out") < 0 ||
        get_buf(zo, &zb, 1, "sizes") < 0)
        goto done;
    if (parse_ctx(spec, &c, &gb, &nb) < 0) goto done;
    int64_t n = sb.view.len;
    int64_t nblocks = (n + block - 1) / (block > 0 ? block : 1);
    if (pb < 8 || pb > 15 || block < LANES || block > (1 << 24) || bf < 0 || bl > nblocks || bf > bl ||
        fb.view.len < (Py_ssize_t)c.ntables * 512 || zb.view.len < (bl - bf) * 4) {
        PyErr_SetString(PyExc_ValueError, "rans_encode: bad arguments");
        goto done;
    }
    int64_t first = bf * block, last = bl * block < n ? bl * block : n;
    if (ob.view.len < (bl - bf) * STATE_BYTES + 2 * (last - first)) {
        PyErr_SetString(PyExc_ValueError, "rans_encode: output too small");
        goto done;
    }
    tabs = (EncSym *)malloc(sizeof(EncSym) * 256 * (size_t)c.ntables);
    scratch = (uint16_t *)malloc(sizeof(uint16_t) * ((size_t)block + 8)); /* 8 spare slots below the words */
    if (c.ntables > 1) ctx = (uint8_t *)malloc((size_t)block);
    if (!tabs || !scratch || (c.ntables > 1 && !ctx)) {
        PyErr_NoMemory();
        goto done;
    }
    const uint16_t *freqs = (const uint16_t *)fb.view.buf;
    for (int t = 0; t < c.ntables; t++)
        if (build_enc(freqs + t * 256, pb, tabs + t * 256) < 0) {
            PyErr_SetString(PyExc_ValueError, "rans_encode: frequencies do not sum to 2^prob_bits");
            goto done;
        }
    if (pb <= 12) {
        packed = (uint64_t *)malloc(sizeof(uint64_t) * 256 * (size_t)c.ntables);
        if (!packed) {
            PyErr_NoMemory();
            goto done;
        }
        for (int k = 0; k < 256 * c.ntables; k++) {
            uint32_t fr = freqs[k];
            uint32_t hi = fr ? (uint32_t)tabs[k].bias | (uint32_t)tabs[k].cmpl << 12 | (uint32_t)tabs[k].sh1 << 24 |
                                   1u << 27 | (uint32_t)tabs[k].sh2 << 28
                             : 0;
            packed[k] = (uint64_t)tabs[k].rcp | ((uint64_t)hi << 32);
        }
    }
    const uint8_t *sym = (const uint8_t *)sb.view.buf;
    /* every symbol must have a non-zero frequency in its context */
    int missing = 0;
    uint8_t *out = (uint8_t *)ob.view.buf;
    uint32_t *sizes = (uint32_t *)zb.view.buf;
    int64_t pos = 0;
    Py_BEGIN_ALLOW_THREADS;
    for (int64_t b = bf; b < bl && !missing; b++) {
        int64_t b0 = b * block, b1 = b0 + block < n ? b0 + block : n;
        if (ctx) block_contexts(&c, sym, b0, b1, ctx);
        /* a symbol with zero frequency in its table is detected while coding (then the call fails) */
        int64_t sz = encode_block(sym, b0, b1, ctx, tabs, packed, pb, out + pos, scratch + block + 8, &missing);
        sizes[b - bf] = (uint32_t)sz;
        pos += sz;
    }
    Py_END_ALLOW_THREADS;
    if (missing) {
        PyErr_SetString(PyExc_ValueError, "rans_encode: a symbol has zero frequency in its context");
        goto done;
    }
    ret = PyLong_FromLongLong(pos);
done:
    free(tabs);
    free(packed);
    free(scratch);
    free(ctx);
    rel_buf(&sb), rel_buf(&fb), rel_buf(&ob), rel_buf(&zb), rel_buf(&gb), rel_buf(&nb);
    return ret;
}

/* Branch-free renormalization of local state x with local word index wi: read the next word when the
 * state fell below L. Reads are clamped to the block's last word; the caller checks afterwards that exactly
 * all words were consumed. */
#define RENORM(x, w, wi, last)                                               \
    do {                                                                     \
        int64_t idx_ = (wi) < (last) ? (wi) : (last);                        \
        uint16_t v_;                                                         \
        memcpy(&v_, (w) + 2 * idx_, 2);                                      \
        uint32_t need_ = (x) < RANS_L;                                       \
        (wi) += need_;                                                       \
        (x) = ((x) << (need_ << 4)) | ((uint32_t)v_ & (0u - need_));         \
    } while (0)

/* Decode one block. Returns 0 on success, -1 if the block is inconsistent. */
static int decode_block(const uint8_t *src, int64_t len, const Ctx *c, const DecSlot *tabs, int pb, uint8_t *o,
                        int64_t b0, int64_t b1) {
    if (len < STATE_BYTES || ((len - STATE_BYTES) & 1)) return -1;
    int64_t n = b1 - b0;
    int64_t nw = (len - STATE_BYTES) / 2;
    if (nw > n) return -1;
    uint32_t st[LANES];
    for (int j = 0; j < LANES; j++) {
        st[j] = rd32(src + 4 * j);
        if (st[j] < RANS_L) return -1;
    }
    static const uint8_t no_words[2] = {0, 0};
    const uint8_t *w = nw ? src + STATE_BYTES : no_words;
    const int64_t last = nw ? nw - 1 : 0;
    int64_t wi = 0;
    const uint32_t mask = (1u << pb) - 1;
    
    if (c->ntables == 1) {
        const DecSlot *d = tabs;
        int64_t i = 0;
        for (; i + LANES <= n; i += LANES) {
            for (int j = 0; j < LANES; j++) {
                uint32_t x = st[j];
                const DecSlot e = d[x & mask];
                o[i + j] = e.sym;
                x = (uint32_t)e.freq * (x >> pb) + e.bias;
                RENORM(x, w, wi, last);
                st[j] = x;
            }
        }
        for (int j = 0; i < n; i++, j++) {
            uint32_t x = st[j];
            const DecSlot e = d[x & mask];
            o[i] = e.sym;
            x = (uint32_t)e.freq * (x >> pb) + e.bias;
            RENORM(x, w, wi, last);
            st[j] = x;
        }
    } else {
        ChanIter it = {0, 0};
        int have_group = c->group != NULL && c->channels > 1;
        if (have_group) chan_init(c, &it, b0);
        const int64_t nbd = c->nb_dist;
        for (int64_t i = 0; i < n; i++) {
            int g = have_group ? c->group[it.ch] : 0;
            int bk = (nbd && i >= nbd) ? c->nbmap[o[i - nbd]] : 0;
            const DecSlot *d = tabs + ((size_t)(g * c->nbuckets + bk) << pb);
            int j = (int)(i & (LANES - 1));
            uint32_t x = st[j];
            const DecSlot e = d[x & mask];
            if (e.freq == 0) return -1; /* empty context table */
            o[i] = e.sym;
            x = (uint32_t)e.freq * (x >> pb) + e.bias;
            RENORM(x, w, wi, last);
            st[j] = x;
            if (have_group) chan_next(c, &it);
        }
    }
    if (wi != nw) return -1;
    for (int j = 0; j < LANES; j++)
        if (st[j] != RANS_L) return -1;
    return 0;
}


/* ------------------------------------------------------------------------------------------------ */
/* AVX2 order-0 decoder (x86-64, chosen at run time). Integer-only, so it produces exactly the scalar
 * decoder's output. Four 8-lane vectors hold the 32 states; per vector, a gather looks up the packed slot
 * entry (sym << 24 | (freq - 1) << 12 | bias, prob_bits <= 12), and the lanes that need a word take the
 * next ones in lane order through a permutation chosen by the lane mask. The last steps of a block, where
 * fewer than 32 words remain, finish in scalar code.                                                   */

#ifdef HAVE_AVX2_PATH
__attribute__((target("avx2"))) static int64_t decode_steps_avx2(uint32_t *st, const uint8_t *w, int64_t nw,
                                                                  int64_t *wi_io, const uint32_t *tabs, int pb,
                                                                  uint8_t *o, int64_t i, int64_t n, const Ctx *c,
                                                                  const uint32_t *nb_off, int64_t b0) {
    /* tabs: ntables x 2^pb packed entries; nb_off[sym] = bucket << pb (or NULL); per step, the channel
     * group (when present) adds group * nbuckets << pb. Steps start at i (a multiple of 32). */
    __m256i X[4];
    for (int v = 0; v < 4; v++) X[v] = _mm256_loadu_si256((const __m256i *)(st + 8 * v));
    const __m256i maskv = _mm256_set1_epi32((1 << pb) - 1), m12 = _mm256_set1_epi32(0xFFF);
    const __m256i one = _mm256_set1_epi32(1), zero = _mm256_setzero_si256();
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m128i pbv = _mm_cvtsi32_si128(pb);
    const int have_group = c && c->group != NULL && c->channels > 1;
    const int64_t nbd = c ? c->nb_dist : 0;
    int64_t wi = *wi_io;
    for (; i + LANES <= n && wi + LANES <= nw; i += LANES) {
        __m256i S[4];
        __m256i base = zero;
        if (have_group) {
            int64_t ch = ((b0 + i) / c->inner) % c->channels;
            base = _mm256_set1_epi32((int)(((uint32_t)c->group[ch] * (uint32_t)c->nbuckets) << pb));
        }
        for (int v = 0; v < 4; v++) {
            __m256i x = X[v];
            __m256i idx = _mm256_add_epi32(base, _mm256_and_si256(x, maskv));
            if (nb_off) {
                __m256i above = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(o + i + 8 * v - nbd)));
                idx = _mm256_add_epi32(idx, _mm256_i32gather_epi32((const int *)nb_off, above, 4));
            }
            __m256i e = _mm256_i32gather_epi32((const int *)tabs, idx, 4);
            S[v] = _mm256_srli_epi32(e, 24);
            __m256i f = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(e, 12), m12), one);
            x = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srl_epi32(x, pbv)), _mm256_and_si256(e, m12));
            __m256i need = _mm256_cmpeq_epi32(_mm256_srli_epi32(x, 16), zero);
            int m = _mm256_movemask_ps(_mm256_castsi256_ps(need));
            __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + 2 * wi)));
            __m256i ws = _mm256_permutevar8x32_epi32(words, _mm256_load_si256((const __m256i *)perm_lut[m]));
            X[v] = _mm256_blendv_epi8(x, _mm256_or_si256(_mm256_slli_epi32(x, 16), ws), need);
            wi += __builtin_popcount((unsigned)m);
        }
        __m256i ab = _mm256_packus_epi32(S[0], S[1]);
        __m256i cd = _mm256_packus_epi32(S[2], S[3]);
        __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
        _mm256_storeu_si256((__m256i *)(o + i), bytes);
    }
    for (int v = 0; v < 4; v++) _mm256_storeu_si256((__m256i *)(st + 8 * v), X[v]);
    *wi_io = wi;
    return i;
}
#endif

/* One block being decoded with packed tables: lane states, its words, and how far it got. */
typedef struct {
    uint32_t st[LANES];
    const uint8_t *w;
    int64_t nw, wi, i, n, b0;
    uint8_t *o;
} BlockDec;

/* Read a block's final states; -1 if the block cannot be valid. */
static int block_open(BlockDec *d, const uint8_t *src, int64_t len, uint8_t *o, int64_t b0, int64_t b1) {
    static const uint8_t no_words[2] = {0, 0};
    if (len < STATE_BYTES || ((len - STATE_BYTES) & 1)) return -1;
    d->n = b1 - b0;
    d->nw = (len - STATE_BYTES) / 2;
    if (d->nw > d->n) return -1;
    for (int j = 0; j < LANES; j++) {
        d->st[j] = rd32(src + 4 * j);
        if (d->st[j] < RANS_L) return -1;
    }
    d->w = d->nw ? src + STATE_BYTES : no_words;
    d->wi = d->i = 0;
    d->b0 = b0;
    d->o = o;
    return 0;
}


/* Decode an opened block with packed tables (prob_bits <= 12), any context, from where it stands. The AVX2
 * kernel takes the bulk when the context allows it (order-0, neighbor, or channel groups constant over each
 * 32-symbol step); scalar code does the first steps (before the neighbor distance), the tail, and everything
 * else. Checks the end state. */
static int block_finish(BlockDec *d, const Ctx *c, const uint32_t *tabs, const uint32_t *nb_off, int pb) {
    uint32_t *st = d->st;
    const uint8_t *w = d->w;
    uint8_t *o = d->o;
    const int64_t n = d->n, nw = d->nw, b0 = d->b0;
    const int64_t last = nw ? nw - 1 : 0;
    const uint32_t mask = (1u << pb) - 1;
    int64_t wi = d->wi, i = d->i;
    const int simple = c->ntables == 1;
    const int have_group = c->group != NULL && c->channels > 1;
    const int64_t nbd = c->nb_dist;
    ChanIter it = {0, 0};
    /* scalar symbols: [from, to) */
#define SCALAR_RANGE(from, to)                                                             \
    do {                                                                                   \
        if (have_group) chan_init(c, &it, b0 + (from));                                    \
        for (int64_t k = (from); k < (to); k++) {                                          \
            uint32_t t = 0;                                                                \
            if (!simple) {                                                                 \
                int g = have_group ? c->group[it.ch] : 0;                                  \
                int bk = (nbd && k >= nbd) ? c->nbmap[o[k - nbd]] : 0;                     \
                t = (uint32_t)(g * c->nbuckets + bk) << pb;                                \
                if (have_group) chan_next(c, &it);                                         \
            }                                                                              \
            int j = (int)(k & (LANES - 1));                                                \
            uint32_t x = st[j];                                                            \
            uint32_t e = tabs[t + (x & mask)];                                             \
            if (e == 0xFFFFFFFFu) return -1; /* empty context table */                    \
            o[k] = (uint8_t)(e >> 24);                                                     \
            x = (((e >> 12) & 0xFFF) + 1) * (x >> pb) + (e & 0xFFF);                       \
            RENORM(x, w, wi, last);                                                        \
            st[j] = x;                                                                     \
        }                                                                                  \
    } while (0)
#ifdef HAVE_AVX2_PATH
    int vector_ok = cpu_has_avx2 > 0 && (!have_group || (c->mult == 1 && c->inner % LANES == 0));
    if (vector_ok) {
        int64_t start = nbd ? ((nbd + LANES - 1) / LANES) * LANES : 0;
        if (start > n) start = n;
        if (start > i) {
            SCALAR_RANGE(i, start);
            i = start;
        }
        i = decode_steps_avx2(st, w, nw, &wi, tabs, pb, o, i, n, c, nbd ? nb_off : NULL, b0);
    }
#endif
    SCALAR_RANGE(i, n);
#undef SCALAR_RANGE
    if (wi != nw) return -1;
    for (int j = 0; j < LANES; j++)
        if (st[j] != RANS_L) return -1;
    return 0;
}

static int decode_block_packed(const uint8_t *src, int64_t len, const Ctx *c, const uint32_t *tabs,
                               const uint32_t *nb_off, int pb, uint8_t *o, int64_t b0, int64_t b1) {
    BlockDec d;
    if (block_open(&d, src, len, o, b0, b1) < 0) return -1;
    return block_finish(&d, c, tabs, nb_off, pb);
}

/* Symbols [start, end) to float32: out = (q - zero[ch]) * scale[ch], ch = (i / inner) % channels. q holds
 * the symbols of [start, end) from q[0]. */
static void dequantize_range(const uint8_t *q, float *x, int64_t start, int64_t end, const float *scale,
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

/* Packed decoder entries of one table straight from its frequencies: (sym << 24 | (freq - 1) << 12 | slot -
 * cumulative). Returns 0, or -1 if the table does not sum to 2^pb (an all-zero table is flagged empty). */
static int build_packed(const uint16_t *f, int pb, uint32_t *t) {
    const uint32_t M = 1u << pb;
    uint32_t cum = 0, any = 0;
    for (int s = 0; s < 256; s++) any |= f[s];
    if (!any) {
        for (uint32_t k = 0; k < M; k++) t[k] = 0xFFFFFFFFu;
        return 1;
    }
    for (int s = 0; s < 256; s++) {
        uint32_t fr = f[s];
        if (!fr) continue;
        if (fr > M - cum) return -1;
        uint32_t e = ((uint32_t)s << 24) | ((fr - 1) << 12);
        for (uint32_t k = 0; k < fr; k++) t[cum + k] = e | k;
        cum += fr;
    }
    return cum == M ? 0 : -1;
}

/* rans_decode(payload, ctxspec, freqs, prob_bits, block_size, n_symbols, block_first, block_last, out, dq)
 *   -> 0 ok | 1 bad block index | 2 corrupted block
 * payload: u32 block sizes, then the blocks. out: u8[n_symbols], or None when dq is given.
 * dq: None, or (x f32[n_symbols], scale f32[C], zero u8[C], channels, inner): the decoded symbols of each block
 * are dequantized into x right away (they never leave the cache; out may then be None). */
static PyObject *py_rans_decode(PyObject *self, PyObject *args) {
    PyObject *po, *spec, *fo, *outo, *dqo;
    int pb;
    long long block, n, bf, bl;
    if (!PyArg_ParseTuple(args, "OOOiLLLLOO", &po, &spec, &fo, &pb, &block, &n, &bf, &bl, &outo, &dqo)) return NULL;
    Buf pbuf = {0}, fb = {0}, outb = {0}, gb = {0}, nb = {0}, xb = {0}, sb = {0}, zb = {0};
    Ctx c;
    PyObject *ret = NULL;
    DecSlot *tabs = NULL;
    uint32_t *packed = NULL;
    uint64_t *off = NULL;
    uint8_t *scratch = NULL;
    long long channels = 1, inner = 1;
    if (get_buf(po, &pbuf, 0, "payload") < 0 || get_buf(fo, &fb, 0, "freqs") < 0) goto done;
    if (outo != Py_None && get_buf(outo, &outb, 1, "out") < 0) goto done;
    if (dqo != Py_None) {
        PyObject *xo, *so, *zo;
        if (!PyArg_ParseTuple(dqo, "OOOLL", &xo, &so, &zo, &channels, &inner)) goto done;
        if (get_buf(xo, &xb, 1, "x") < 0 || get_buf(so, &sb, 0, "scale") < 0 || get_buf(zo, &zb, 0, "zero") < 0)
            goto done;
    }
    if (parse_ctx(spec, &c, &gb, &nb) < 0) goto done;
    int64_t nblocks = block > 0 ? (n + block - 1) / block : -1;
    int sizes_ok = outb.held ? outb.view.len >= n : xb.held;
    if (xb.held && (xb.view.len < n * 4 || channels < 1 || inner < 1 || sb.view.len < channels * 4 ||
                    zb.view.len < channels || n % (channels * inner) != 0))
        sizes_ok = 0;
    if (pb < 8 || pb > 15 || block < LANES || block > (1 << 24) || n < 0 || !sizes_ok || bf < 0 || bl > nblocks ||
        bf > bl || fb.view.len < (Py_ssize_t)c.ntables * 512) {
        PyErr_SetString(PyExc_ValueError, "rans_decode: bad arguments");
        goto done;
    }
    /* the block index: sizes must cover the payload exactly */
    const uint8_t *payload = (const uint8_t *)pbuf.view.buf;
    const int64_t plen = pbuf.view.len;
    if (plen < 4 * nblocks) {
        ret = PyLong_FromLong(1);
        goto done;
    }
    off = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)(nblocks + 1));
    if (!off) {
        PyErr_NoMemory();
        goto done;
    }
    off[0] = (uint64_t)(4 * nblocks);
    for (int64_t b = 0; b < nblocks; b++) off[b + 1] = off[b] + rd32(payload + 4 * b);
    if (off[nblocks] != (uint64_t)plen) {
        ret = PyLong_FromLong(1);
        goto done;
    }
    const uint16_t *freqs = (const uint16_t *)fb.view.buf;
    int bad_table = 0;
    if (pb <= 12) {
        packed = (uint32_t *)malloc(sizeof(uint32_t) * ((size_t)c.ntables << pb));
        if (!packed) {
            PyErr_NoMemory();
            goto done;
        }
        for (int t = 0; t < c.ntables && !bad_table; t++) {
            int r = build_packed(freqs + t * 256, pb, packed + ((size_t)t << pb));
            if (r < 0 || (r == 1 && c.ntables == 1 && n > 0)) bad_table = 1;
        }
    } else {
        tabs = (DecSlot *)malloc(sizeof(DecSlot) * ((size_t)c.ntables << pb));
        if (!tabs) {
            PyErr_NoMemory();
            goto done;
        }
        for (int t = 0; t < c.ntables && !bad_table; t++) {
            const uint16_t *f = freqs + t * 256;
            int empty = 1;
            for (int s = 0; s < 256; s++)
                if (f[s]) empty = 0;
            if (empty) {
                if (c.ntables == 1 && n > 0) bad_table = 1;
                memset(tabs + ((size_t)t << pb), 0, sizeof(DecSlot) << pb);
            } else if (build_dec(f, pb, tabs + ((size_t)t << pb)) < 0) {
                bad_table = 1;
            }
        }
    }
    if (bad_table) {
        ret = PyLong_FromLong(2);
        goto done;
    }
    if (!outb.held) {
        scratch = (uint8_t *)malloc((size_t)block);
        if (!scratch) {
            PyErr_NoMemory();
            goto done;
        }
    }
    uint8_t *out = outb.held ? (uint8_t *)outb.view.buf : NULL;
    float *xf = xb.held ? (float *)xb.view.buf : NULL;
    const float *scale = xb.held ? (const float *)sb.view.buf : NULL;
    const uint8_t *zero = xb.held ? (const uint8_t *)zb.view.buf : NULL;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS;
    uint32_t nb_off[256];
    for (int k = 0; k < 256; k++) nb_off[k] = c.nbmap ? (uint32_t)c.nbmap[k] << pb : 0;
    int64_t b = bf;
    for (; b < bl && ok; b++) {
        int64_t b0 = b * block, b1 = b0 + block < n ? b0 + block : n;
        uint8_t *o = out ? out + b0 : scratch;
        const uint8_t *src = payload + off[b];
        int64_t len = (int64_t)(off[b + 1] - off[b]);
        int r = pb <= 12 ? decode_block_packed(src, len, &c, packed, nb_off, pb, o, b0, b1)
                         : decode_block(src, len, &c, tabs, pb, o, b0, b1);
        if (r < 0) ok = 0;
        else if (xf) dequantize_range(o, xf, b0, b1, scale, zero, channels, inner);
    }
    Py_END_ALLOW_THREADS;
    ret = PyLong_FromLong(ok ? 0 : 2);
done:
    free(tabs);
    free(packed);
    free(off);
    free(scratch);
    rel_buf(&pbuf), rel_buf(&fb), rel_buf(&outb), rel_buf(&gb), rel_buf(&nb), rel_buf(&xb), rel_buf(&sb), rel_buf(&zb);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */

/* set_simd(enabled) -> previous setting: lets tests compare the vector and scalar paths byte for byte. */
static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
#ifdef HAVE_AVX2_PATH
    int prev = cpu_has_avx2 > 0;
    if (on) {
        __builtin_cpu_init();
        cpu_has_avx2 = __builtin_cpu_supports("avx2");
    } else {
        cpu_has_avx2 = 0;
    }
    return PyBool_FromLong(prev);
#else
    (void)on;
    Py_RETURN_FALSE;
#endif
}

/* table_cost(counts u32[ntab*256], prob_bits) -> (ideal bits under the normalized tables, serialized table bytes)
 * One call per candidate stream for the cost model: normalization, code length and table size together. */
static PyObject *py_table_cost(PyObject *self, PyObject *args) {
    PyObject *co;
    int pb;
    if (!PyArg_ParseTuple(args, "Oi", &co, &pb)) return NULL;
    Buf cb = {0};
    if (get_buf(co, &cb, 0, "counts") < 0) return NULL;
    if (pb < 8 || pb > 15 || cb.view.len % 1024 != 0) {
        rel_buf(&cb);
        PyErr_SetString(PyExc_ValueError, "table_cost: bad sizes");
        return NULL;
    }
    int64_t ntab = cb.view.len / 1024;
    const uint32_t *counts = (const uint32_t *)cb.view.buf;
    double bits = 0.0;
    int64_t tbytes = 0;
    uint16_t f[256];
    Py_BEGIN_ALLOW_THREADS;
    for (int64_t t = 0; t < ntab; t++) {
        const uint32_t *c = counts + t * 256;
        normalize_one(c, pb, f);
        tbytes += 32;
        for (int k = 0; k < 256; k++) {
            if (!f[k]) continue;
            tbytes += f[k] > 0x80 ? 2 : 1;
            if (c[k]) bits += (double)c[k] * ((double)pb - log2((double)f[k]));
        }
    }
    Py_END_ALLOW_THREADS;
    rel_buf(&cb);
    return Py_BuildValue("(dL)", bits, (long long)tbytes);
}

/* write_tables(freqs u16[ntab*256]) -> bytes: per table a 32-byte presence bitmap, then f-1 of each present
 * symbol in one byte (< 0x80) or two (0x80 | high bits, low byte). The inverse of read_tables. */
static PyObject *py_write_tables(PyObject *self, PyObject *args) {
    PyObject *fo;
    if (!PyArg_ParseTuple(args, "O", &fo)) return NULL;
    Buf fb = {0};
    if (get_buf(fo, &fb, 0, "freqs") < 0) return NULL;
    if (fb.view.len % 512 != 0) {
        rel_buf(&fb);
        PyErr_SetString(PyExc_ValueError, "write_tables: bad sizes");
        return NULL;
    }
    int64_t ntab = fb.view.len / 512;
    const uint16_t *freqs = (const uint16_t *)fb.view.buf;
    uint8_t *buf = (uint8_t *)malloc((size_t)ntab * (32 + 512) + 1);
    if (!buf) {
        rel_buf(&fb);
        return PyErr_NoMemory();
    }
    int64_t pos = 0;
    for (int64_t t = 0; t < ntab; t++) {
        const uint16_t *f = freqs + t * 256;
        uint8_t *bm = buf + pos;
        memset(bm, 0, 32);
        pos += 32;
        for (int k = 0; k < 256; k++) {
            if (!f[k]) continue;
            bm[k >> 3] |= (uint8_t)(1u << (k & 7));
            uint32_t v = (uint32_t)f[k] - 1;
            if (v < 0x80) {
                buf[pos++] = (uint8_t)v;
            } else {
                buf[pos++] = (uint8_t)(0x80 | (v >> 8));
                buf[pos++] = (uint8_t)(v & 0xFF);
            }
        }
    }
    PyObject *ret = PyBytes_FromStringAndSize((const char *)buf, pos);
    free(buf);
    rel_buf(&fb);
    return ret;
}

/* crc32(data, prev=0) -> int: zlib's CRC-32, continued from prev (carry-less multiply when available). */
static PyObject *py_crc32(PyObject *self, PyObject *args) {
    PyObject *o;
    unsigned int prev = 0;
    if (!PyArg_ParseTuple(args, "O|I", &o, &prev)) return NULL;
    Buf b = {0};
    if (get_buf(o, &b, 0, "data") < 0) return NULL;
    uint32_t c;
    if (b.view.len >= (1 << 16)) {
        Py_BEGIN_ALLOW_THREADS;
        c = crc32_update(prev, (const uint8_t *)b.view.buf, (size_t)b.view.len);
        Py_END_ALLOW_THREADS;
    } else {
        c = crc32_update(prev, (const uint8_t *)b.view.buf, (size_t)b.view.len);
    }
    rel_buf(&b);
    return PyLong_FromUnsignedLong(c);
}

/* set_clmul(enabled) -> previous setting: lets tests compare the table and carry-less-multiply CRC paths. */
static PyObject *py_set_clmul(PyObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    int prev = crc32_clmul_active();
    crc32_use_clmul(on);
    return PyBool_FromLong(prev);
}

static PyMethodDef methods[] = {
    {"crc32", py_crc32, METH_VARARGS, "CRC-32 (zlib's), continued from an optional previous value."},
    {"set_clmul", py_set_clmul, METH_VARARGS, "Enable/disable the carry-less-multiply CRC path."},
    {"table_cost", py_table_cost, METH_VARARGS, "Ideal code bits and table bytes of counts."},
    {"write_tables", py_write_tables, METH_VARARGS, "Serialize frequency tables."},
    {"set_simd", py_set_simd, METH_VARARGS, "Enable/disable the AVX2 paths; returns the previous state."},
    {"minmax", py_minmax, METH_VARARGS, "Per-channel min/max (including 0); returns False on NaN/Inf."},
    {"quantize", py_quantize, METH_VARARGS, "Asymmetric per-channel quantization to u8 (+ optional histogram)."},
    {"dequantize", py_dequantize, METH_VARARGS, "u8 symbols back to float32."},
    {"context_histogram", py_context_histogram, METH_VARARGS, "Symbol counts per context table."},
    {"histogram", py_histogram, METH_VARARGS, "256-bin symbol histogram."},
    {"transpose_u8", py_transpose_u8, METH_VARARGS, "Batched byte-matrix transpose."},
    {"histogram_sampled", py_histogram_sampled, METH_VARARGS, "Histogram of hash-picked 4 Ki chunks."},
    {"channel_histogram", py_channel_histogram, METH_VARARGS, "Symbol counts per channel."},
    {"csr_stats", py_csr_stats, METH_VARARGS, "Row-occupancy and gap histograms per candidate row width."},
    {"csr_split", py_csr_split, METH_VARARGS, "Split symbols into CSR counts/gaps/values."},
    {"csr_merge", py_csr_merge, METH_VARARGS, "Merge CSR counts/gaps/values back to symbols."},
    {"delta", py_delta, METH_VARARGS, "Prediction residuals at a distance (or their inverse)."},
    {"pack", py_pack, METH_VARARGS, "Pack 1/2/4-bit symbols into bytes."},
    {"unpack", py_unpack, METH_VARARGS, "Unpack bytes into 1/2/4-bit symbols."},
    {"read_tables", py_read_tables, METH_VARARGS, "Parse serialized frequency tables."},
    {"normalize", py_normalize, METH_VARARGS, "Normalize counts to rANS frequencies."},
    {"rans_encode", py_rans_encode, METH_VARARGS, "Interleaved 32-lane rANS encode of a block range."},
    {"rans_decode", py_rans_decode, METH_VARARGS, "Interleaved 32-lane rANS decode of a block range."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_kernels", "splitstream codec kernels", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) {
#ifdef HAVE_AVX2_PATH
    init_avx2();
#endif
    PyObject *m = PyModule_Create(&moduledef);
    if (m) {
#ifdef HAVE_AVX2_PATH
        PyModule_AddIntConstant(m, "AVX2", cpu_has_avx2 > 0);
#else
        PyModule_AddIntConstant(m, "AVX2", 0);
#endif
    }
    return m;
}
