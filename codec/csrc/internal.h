/*
 * Internal header of the codec kernels (the C side of codec._kernels). Holds what the per-concern files
 * share: the rANS block constants, the context walker, little-endian loads, the allocator, checked size
 * arithmetic, the runtime (runtime.c: the allocator hook and the CPU features) and each file's entry
 * points. Kernels take plain pointers and sizes that module.c (the Python bindings) has already checked;
 * none of them touches a Python object or reaches a symbol of module.c (tests/test_csrc_layout.py).
 */
#ifndef SPLITSTREAM_INTERNAL_H
#define SPLITSTREAM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#define HAVE_AVX512_PATH 1
/* the AVX-512 subsets the byte kernels use (Ice Lake, Zen 4 and later) */
#define AVX512_TARGET "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt"
#endif

#pragma GCC visibility push(hidden)

#define LANES 32
#define RANS_L (1u << 16)
#define MAX_TABLES 256
#define STATE_BYTES (LANES * 4)
#define QCHUNK 4096 /* quantization and sampled histograms work in chunks of this many symbols */

/* ---- runtime (runtime.c): the allocator hook and the CPU features ---------------------------------- */

/* run-time SIMD switches: CPU support, or 0 when a test asks for the scalar paths (simd_select) */
extern int cpu_has_avx2;
extern int cpu_has_avx512;

/* Allocations of the kernels (their sizes follow the input), through a hook: malloc / free by default; the
 * bindings set PyMem_RawMalloc / PyMem_RawFree at module init, so that tracemalloc sees them. Callable
 * without the GIL. ss_set_allocator(NULL, NULL) restores malloc / free; set it before any allocation. */
void *ss_malloc(size_t n);
void ss_free(void *p);
void ss_set_allocator(void *(*alloc)(size_t), void (*release)(void *));

/* the one CPU-feature detection: 1 if this CPU has the feature and this build has its path */
enum { CPU_AVX2 = 1, CPU_AVX512 = 2, CPU_CLMUL = 3, CPU_VPCLMUL = 4 };
int cpu_supports(int feature);
/* set the SIMD switches: AVX2 if on, AVX-512 if wide (wide < 0: as on), each only where supported;
 * returns the previous AVX2 switch */
int simd_select(int on, int wide);
/* the kernels' lookup tables and the SIMD switches (once, at import) */
void runtime_init(void);

/* ---- checked size arithmetic: every size from a caller or a frame goes through these -------------- */

/* 1 if count items of size bytes fit in len bytes (count, size >= 0; no overflow) */
static inline int fits(int64_t len, int64_t count, int64_t size) {
    int64_t need;
    return count >= 0 && size >= 0 && !__builtin_mul_overflow(count, size, &need) && need <= len;
}

/* 1 if n elements are whole runs of channels x inner (both >= 1; no overflow) */
static inline int whole_runs(int64_t n, int64_t channels, int64_t inner) {
    int64_t run;
    return channels >= 1 && inner >= 1 && !__builtin_mul_overflow(channels, inner, &run) && n % run == 0;
}

/* *out = a * b or a + b for non-negative sizes; 1 if it fits in int64, 0 on overflow */
static inline int size_mul(int64_t a, int64_t b, int64_t *out) {
    return a >= 0 && b >= 0 && !__builtin_mul_overflow(a, b, out);
}
static inline int size_add(int64_t a, int64_t b, int64_t *out) {
    return a >= 0 && b >= 0 && !__builtin_add_overflow(a, b, out);
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* ---- contexts (contexts.c) ---------------------------------------------------------------------- */

typedef struct {
    int64_t channels, inner, mult; /* channel(i) = ((i*mult)/inner) % channels */
    const uint8_t *group;         /* channels entries, or NULL -> group 0 */
    int64_t nb_dist;              /* 0 -> no neighbor context */
    int nb_ref;                   /* the reference symbol of the neighbor buckets */
    int nbuckets;                 /* 2 or 4 with a neighbor context, else 1 */
    uint8_t nbmap[256];           /* symbol -> bucket, built by ctx_check from nb_ref and nbuckets */
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

const char *ctx_check(Ctx *c, int64_t group_len, int64_t n);

#ifdef HAVE_AVX2_PATH
/* The neighbor bucket of 32 symbols at once: the vector form of ctx_check's map (same thresholds on the
 * distance from the reference symbol, d = |s - ref|: bucket 0 at d = 0, then d <= 2, d <= 8, beyond). */
__attribute__((target("avx2"))) static inline __m256i nb_buckets32(__m256i s, __m256i ref, int nbuckets) {
    const __m256i one = _mm256_set1_epi8(1);
    __m256i d = _mm256_or_si256(_mm256_subs_epu8(s, ref), _mm256_subs_epu8(ref, s));
    __m256i b = _mm256_min_epu8(d, one);
    if (nbuckets == 4) {
        b = _mm256_add_epi8(b, _mm256_min_epu8(_mm256_subs_epu8(d, _mm256_set1_epi8(2)), one));
        b = _mm256_add_epi8(b, _mm256_min_epu8(_mm256_subs_epu8(d, _mm256_set1_epi8(8)), one));
    }
    return b;
}
#endif
void block_contexts(const Ctx *c, const uint8_t *sym, int64_t b0, int64_t b1, uint8_t *ctx);

/* ---- quantization (quantize.c) ------------------------------------------------------------------ */

int minmax(const float *x, int64_t n, int64_t channels, int64_t inner, float *mins, float *maxs);
void quantize(const float *x, uint8_t *q, int64_t n, const float *inv, const uint8_t *zero, int64_t channels,
              int64_t inner, int qmax, uint32_t *hist, int stride, uint8_t *smin, uint8_t *smax, int64_t *counted);
#define QUANT_MAX_UNSEEN 128 /* quantize.py MAX_UNSEEN */
int quantize_tensor(const float *x, int64_t n, int bits, int stride, uint8_t *q, uint32_t *hist, float *scale,
                    uint8_t *zero, uint8_t *lo, uint8_t *hi);
void dequantize(const uint8_t *q, float *x, int64_t n, const float *scale, const uint8_t *zero, int64_t channels,
                int64_t inner);
void dequantize_range(const uint8_t *q, float *x, int64_t start, int64_t end, const float *scale,
                      const uint8_t *zero, int64_t channels, int64_t inner);
void transpose_u8(const uint8_t *src, uint8_t *dst, int64_t batch, int64_t rows, int64_t cols);
void clip_choice(const uint32_t *hist, const float *scale8, const uint8_t *zero8, const float *mins,
                 const float *maxs, int64_t channels, const double *factors, int64_t nf, int qmax, double weight,
                 int32_t *best);

/* ---- statistics (stats.c) ----------------------------------------------------------------------- */

void histogram_fold(uint32_t (*h)[256], uint32_t *hist);
void histogram4(const uint8_t *q, int64_t n, uint32_t *hist);
int64_t sampled_histogram(const uint8_t *q, int64_t from, int64_t to, int stride, uint32_t (*h)[256]);
void channel_histogram(const uint8_t *q, int64_t n, int64_t channels, int64_t inner, uint32_t *counts);
void group_sum(const uint32_t *counts, const uint8_t *group, int64_t channels, int ngroups, uint32_t *out);
int context_histogram(const uint8_t *sym, int64_t n, const Ctx *c, int64_t block, int64_t stride,
                      uint32_t *counts);
#define SAMPLE_CHUNK_MAX 8192 /* the longest chunk family_histograms takes */
void family_histograms(const uint8_t *q, const int64_t *starts, int64_t nstarts, int64_t chunk, uint8_t mask,
                       int slot, const int64_t *dist, int nd, uint32_t *hist);
void pack_run(const uint8_t *q, int64_t m, int slot, uint8_t *o);
void nonzero_bits(const uint8_t *nz, int64_t n, uint64_t *words);
int64_t csr_row_stats(const uint64_t *words, int64_t n, int64_t width, int64_t row_step, uint32_t *count_hist,
                      uint32_t *gap_hist);
int csr_stats(const uint8_t *q, int64_t n, const uint8_t *zero, int64_t channels, int64_t inner, const int64_t *widths,
              int64_t nw, int64_t row_step, uint32_t *count_hist, uint32_t *gap_hist, int64_t *nnz);
int64_t histogram_sampled(const uint8_t *q, int64_t n, int stride, uint32_t *hist);

/* ---- representations (represent.c) -------------------------------------------------------------- */

void nonzero_mask(const uint8_t *q, int64_t n, const uint8_t *zero, int64_t channels, int64_t inner, uint8_t *nz);
int64_t csr_split(const uint8_t *q, int64_t n, const uint8_t *zero, int64_t channels, int64_t inner,
                  int64_t width, uint8_t *counts, uint8_t *gaps, uint8_t *vals);
int csr_merge(const uint8_t *counts, int64_t rows, const uint8_t *gaps, const uint8_t *vals, int64_t nnz,
              const uint8_t *zero, int64_t channels, int64_t inner, int64_t width, uint8_t *out, int64_t n);
void pack_bits(const uint8_t *q, int64_t n, int bits, uint8_t *o);
void unpack_bits(const uint8_t *p, int bits, uint8_t *o, int64_t n);
void delta(const uint8_t *src, uint8_t *dst, int64_t n, int64_t d, uint8_t mask, int inverse);
void delta_inverse_range(const uint8_t *r, uint8_t *q, int64_t b0, int64_t b1, int64_t d, uint8_t mask);
/* delta-nibble: n residuals (bits >= 5, mask = 2^bits - 1) to ceil(n / 2) nibble-pair bytes and the escapes
 * (esc holds n + 64 bytes); returns the escape count */
int64_t nibble_split(const uint8_t *r, int64_t n, uint8_t mask, uint8_t *pairs, uint8_t *esc);
/* the inverse for m residuals whose pairs start at pairs, taking escapes from esc[*pos] (esc holds nesc + 64
 * bytes); returns 0, or -1 if the escapes run out */
int nibble_merge(const uint8_t *pairs, int64_t m, const uint8_t *esc, int64_t nesc, int64_t *pos, uint8_t mask,
                 uint8_t *r);

/* ---- frequency tables (tables.c) ---------------------------------------------------------------- */

void normalize_tables(const uint32_t *counts, int64_t ntab, int pb, uint16_t *out);
double table_cost(const uint32_t *counts, int64_t ntab, int pb, int64_t *table_bytes);
void row_costs(const uint32_t *counts, int64_t rows, int pb, double *bits, int64_t *table_bytes);
void tables_init(void); /* the log2 lookup of table_cost (once, at import) */
/* ntab tables serialized into buf, which holds at least TABLES_MAX_BYTES(ntab); returns the bytes written */
#define TABLES_MAX_BYTES(ntab) ((ntab) * (32 + 512)) /* a 32-byte presence bitmap, then at most 2 bytes a symbol */
int64_t write_tables(const uint16_t *freqs, int64_t ntab, uint8_t *buf);
/* parse ntables serialized tables (out: ntables x 256, or NULL to check them only); bytes read, or -1 */
int64_t read_tables(const uint8_t *p, int64_t len, int ntables, int pb, uint16_t *out);

/* ---- rANS (rans_encode.c, rans_decode.c) -------------------------------------------------------- */

#define RANS_ENOMEM (-1)  /* an allocation failed */
#define RANS_EFREQ (-2)   /* frequencies do not sum to 2^prob_bits */
#define RANS_EMISSING (-3) /* a symbol has zero frequency in its context */

void rans_encode_init(void);
int64_t rans_encode(const uint8_t *sym, int64_t n, const Ctx *c, const uint16_t *freqs, int pb, int64_t block,
                    int64_t bf, int64_t bl, uint8_t *out, uint32_t *sizes);

/* Decoded symbols straight to float32, block by block while they are in cache: x[i] = (q[i] - zero[ch]) *
 * scale[ch], ch = (i / inner) % channels, where the stream's symbols are q itself (DQ_DENSE), its residuals at
 * distance param (DQ_DELTA; the inverse writes every symbol to q, as it reads back across blocks), q
 * bit-packed slot bits per symbol (DQ_PACKED), its residuals bit-packed (DQ_DELTA_PACKED) or its residuals'
 * nibble pairs with the escapes beside (DQ_DELTA_NIBBLE, blocks in order); packed streams hold elements
 * symbols, the last byte perhaps partly used. */
enum { DQ_DENSE = 0, DQ_DELTA = 1, DQ_PACKED = 2, DQ_DELTA_PACKED = 3, DQ_DELTA_NIBBLE = 4 };
typedef struct {
    float *x;
    const float *scale;
    const uint8_t *zero;
    int64_t channels, inner;
    int rep;
    int64_t distance; /* DQ_DELTA, DQ_DELTA_PACKED, DQ_DELTA_NIBBLE */
    int slot;         /* DQ_PACKED, DQ_DELTA_PACKED: 1, 2 or 4; DQ_DELTA_NIBBLE: 4 */
    uint8_t mask;     /* 2^bits - 1 */
    uint8_t *q;       /* DQ_DELTA, DQ_DELTA_PACKED, DQ_DELTA_NIBBLE: all elements */
    int64_t elements;
    const uint8_t *esc; /* DQ_DELTA_NIBBLE: the escapes (nesc, then 64 bytes of room) ... */
    int64_t nesc;
    int64_t esc_pos;    /* ... and how many the blocks so far used */
} Dequant;

int dequant_plan(Dequant *dq, int rep, int64_t param, int bits, int64_t elements, int64_t nesc, int64_t q_len,
                 int64_t esc_len, int64_t n, int64_t block, int64_t bf, int64_t bl);
void rans_decode_init(void);
int rans_decode(const uint8_t *payload, int64_t plen, const Ctx *c, const uint16_t *freqs, int pb, int64_t block,
                int64_t n, int64_t bf, int64_t bl, uint8_t *out, Dequant *dq);

/* ---- frame header (frame.c) ---------------------------------------------------------------------- */

#define FRAME_VERSION 1
#define FRAME_FIXED_BYTES 14 /* magic .. param */
#define FRAME_MAX_NDIM 16
#define FRAME_MAX_GROUPS 64

typedef struct {
    int coding, prob_bits, block_log2, mult, ngroups, nbuckets, nb_ref, ntables;
    int64_t channels, inner, nb_dist;
    int64_t group_at;   /* offset of the group map in the frame, or -1 */
    int64_t tables_at;  /* offset of the stream's frequency tables in the frame */
    int64_t payload_at, payload_len;
} FrameStream;

typedef struct {
    int dtype, bits, ndim, axis, kind, param, nstreams;
    uint32_t shape[FRAME_MAX_NDIM];
    int64_t numel, nq, nnz, scale_at, zero_at;
    FrameStream streams[3];
    char error[120];
} FrameHeader;

/* Parse and check a frame of len bytes (at most max_elements elements): 0, or -1 with h->error set. */
int frame_parse(const uint8_t *buf, int64_t len, int64_t max_elements, FrameHeader *h);

/* ---- the lean levels' choice (costmodel.c) -------------------------------------------------------- */

#define LEAN_MAX_DISTANCES 3 /* costmodel.py delta_distances gives at most three */
#define LEAN_PROB_BITS 12    /* tables.DEFAULT_PROB_BITS: the tables the lean levels cost */
#define LEAN_SPARSE 1        /* lean_choice: the level would weigh sparse rows too; the Python decides */

typedef struct {
    int kind, param, nstreams;
    int coding[2];       /* per stream: 0 stored bytes, 1 order-0 rANS */
    double predicted[2]; /* per stream: predicted bytes */
    double total;
} LeanChoice;

/* codec/costmodel.py's choice at the lean levels for n per-tensor symbols q (bits wide, zero point zero): the
 * family histograms of the nstarts chunks at starts, the representations costed order-0 in the Python's order,
 * the first cheapest into best. given: the dense symbols' counts (level 1), or NULL (from the sample). Returns 0,
 * or LEAN_SPARSE when the share of zero-point symbols exceeds sparse_share (and n >= 64). The caller has checked
 * the sizes as family_histograms' binding does, and nd <= LEAN_MAX_DISTANCES. */
int lean_choice(const uint8_t *q, int64_t n, int bits, const int64_t *starts, int64_t nstarts, int64_t chunk,
                const int64_t *dist, int nd, const uint32_t *given, int block_log2, int zero, double sparse_share,
                LeanChoice *best);

/* ---- the lean frame writer (frame_write.c) ------------------------------------------------------- */

/* How each stream of a lean configuration is counted before its table is built */
enum { COUNT_ALL = 0, COUNT_GIVEN = 1, COUNT_SAMPLED = 2 };
#define LEAN_MAX_STREAMS 2
#define LEAN_SAMPLE_STRIDE 4 /* COUNT_SAMPLED: about one chunk in 4 (codec/api.py SAMPLED_HIST_STRIDE) */
#define LEAN_MAX_UNSEEN QUANT_MAX_UNSEEN /* ... past this many symbols of 0..top missing, all are counted */

typedef struct {
    int coding; /* 0: stored bytes, 1: order-0 rANS */
    int count;  /* COUNT_ALL, COUNT_GIVEN (the dense stream's counts, given) or COUNT_SAMPLED */
    int top;    /* COUNT_SAMPLED: every symbol of 0..top keeps a non-zero count */
} LeanStream;

/* A frame whose streams are each order-0 rANS or stored bytes: dense, packed, delta, delta-packed or
 * delta-nibble symbols (every representation but sparse) */
typedef struct {
    int dtype, bits, ndim, axis, kind, param, pb, block_log2, nstreams;
    uint32_t shape[FRAME_MAX_NDIM];
    int64_t nq;
    const float *scale;
    const uint8_t *zero;
    const uint32_t *given; /* COUNT_GIVEN's 256 counts */
    int64_t sample_min;    /* COUNT_SAMPLED applies to streams of at least this many symbols (else all) */
    LeanStream s[LEAN_MAX_STREAMS];
} LeanFrame;

/* An upper bound of the frame's size for n symbols (-1 if the configuration is not lean or n is too large) */
int64_t lean_frame_bound(int64_t n, const LeanFrame *f);
/* the scratch lean_frame_write needs for n symbols: residuals, packed symbols or nibble pairs, escapes */
#define LEAN_WORK_BYTES(n) (2 * (n) + ((n) + 1) / 2 + 80)
/* Write the frame of the n symbols q into out (lean_frame_bound bytes), the streams split into work
 * (LEAN_WORK_BYTES(n)): bytes written, or RANS_ENOMEM, RANS_EMISSING (a symbol the counts missed) or LEAN_EBAD
 * (a configuration lean_frame_bound refuses) */
#define LEAN_EBAD (-4)
int64_t lean_frame_write(const uint8_t *q, int64_t n, const LeanFrame *f, uint8_t *work, uint8_t *out);

/* ---- CRC-32 (crc32.c) --------------------------------------------------------------------------- */

/* zlib's CRC-32, continued: crc32_update(0, data) is zlib.crc32(data). */
uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n);
/* choose the carry-less-multiply path (on) or the table (off); tests compare the two */
void crc32_use_clmul(int on);
int crc32_clmul_active(void);

#pragma GCC visibility pop

#endif
