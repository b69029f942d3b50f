/*
 * rANS decoder (the decode half of codec/rans.py): reads the block index of a stream payload, builds the
 * slot tables of every context from the frequencies, and decodes blocks [first, last) of 32 interleaved
 * lanes (bitstream described in rans_encode.c), optionally dequantizing each block while it is in cache.
 * Order-0 blocks take an AVX-512 loop where the CPU has it (gathers, and an expand for the renormalization).
 * Every block is checked: final states at least L, word count within bounds, all words consumed and every
 * lane back at L at the end. Packed 32-bit slot entries (prob_bits <= 12) feed both the scalar loop and the
 * AVX2 loop beside it; wider tables use a slot-to-symbol map and scalar code.
 */
#include "internal.h"

/* Tables for prob_bits > 12 (this encoder never writes them; the wire allows them): the symbol of each slot
 * (2^prob_bits bytes per table) and the cumulative frequency of each symbol; the frequencies themselves are
 * the caller's. A quarter of the memory of full 8-byte slot entries: 256 tables at prob_bits 15 take 8 MiB. */
typedef struct {
    uint8_t *sym;         /* ntables << pb */
    uint16_t *cum;        /* ntables x 256 */
    const uint16_t *freq; /* ntables x 256 */
} WideTabs;

/* One table's slots and cumulative frequencies. Returns 0, or -1 if the table does not sum to 2^pb. */
static int build_wide(const uint16_t *f, int pb, uint8_t *sym, uint16_t *cum) {
    const uint32_t M = 1u << pb;
    uint32_t acc = 0;
    for (int s = 0; s < 256; s++) {
        uint32_t fr = f[s];
        if (acc + fr > M) return -1;
        cum[s] = (uint16_t)acc;
        memset(sym + acc, s, fr);
        acc += fr;
    }
    return acc == M ? 0 : -1;
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

/* One decode step with wide tables: the slot's symbol to o, the state advanced and renormalized. */
#define WIDE_STEP(x, sy, f, cm, o)                                           \
    do {                                                                     \
        const uint32_t slot_ = (x) & mask;                                   \
        const int s_ = (sy)[slot_];                                          \
        (o) = (uint8_t)s_;                                                   \
        (x) = (uint32_t)(f)[s_] * ((x) >> pb) + slot_ - (cm)[s_];            \
        RENORM(x, w, wi, last);                                              \
    } while (0)

/* Decode one block with wide tables. Returns 0 on success, -1 if the block is inconsistent. */
static int decode_block(const uint8_t *src, int64_t len, const Ctx *c, const WideTabs *tabs, int pb, uint8_t *o,
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
        const uint8_t *sy = tabs->sym;
        const uint16_t *f = tabs->freq, *cm = tabs->cum;
        int64_t i = 0;
        for (; i + LANES <= n; i += LANES) {
            for (int j = 0; j < LANES; j++) {
                uint32_t x = st[j];
                WIDE_STEP(x, sy, f, cm, o[i + j]);
                st[j] = x;
            }
        }
        for (int j = 0; i < n; i++, j++) {
            uint32_t x = st[j];
            WIDE_STEP(x, sy, f, cm, o[i]);
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
            size_t t = (size_t)(g * c->nbuckets + bk);
            const uint16_t *f = tabs->freq + t * 256;
            int j = (int)(i & (LANES - 1));
            uint32_t x = st[j];
            if (f[tabs->sym[(t << pb) + (x & mask)]] == 0) return -1; /* empty context table */
            WIDE_STEP(x, tabs->sym + (t << pb), f, tabs->cum + t * 256, o[i]);
            st[j] = x;
            if (have_group) chan_next(c, &it);
        }
    }
    if (wi != nw) return -1;
    for (int j = 0; j < LANES; j++)
        if (st[j] != RANS_L) return -1;
    return 0;
}

#ifdef HAVE_AVX2_PATH
static uint32_t perm_lut[256][8] __attribute__((aligned(32))); /* lanes set in m take the next words */
#endif

/* The word-distribution permutations of the AVX2 decoder (called once at import). */
void rans_decode_init(void) {
#ifdef HAVE_AVX2_PATH
    for (int m = 0; m < 256; m++) {
        int k = 0;
        for (int lane = 0; lane < 8; lane++) perm_lut[m][lane] = (m >> lane) & 1 ? (uint32_t)k++ : 0;
    }
#endif
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
                                                                  int64_t b0) {
    /* tabs: ntables x 2^pb packed entries; per step, the neighbor buckets of the 32 symbols one distance
     * back add bucket << pb and the channel group (when present) group * nbuckets << pb. Steps start at i
     * (a multiple of 32, at least the neighbor distance). */
    __m256i X[4];
    for (int v = 0; v < 4; v++) X[v] = _mm256_loadu_si256((const __m256i *)(st + 8 * v));
    const __m256i maskv = _mm256_set1_epi32((1 << pb) - 1), m12 = _mm256_set1_epi32(0xFFF);
    const __m256i one = _mm256_set1_epi32(1), zero = _mm256_setzero_si256();
    const __m128i zero128 = _mm_setzero_si128();
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m128i pbv = _mm_cvtsi32_si128(pb);
    const int have_group = c && c->group != NULL && c->channels > 1;
    const int64_t nbd = c ? c->nb_dist : 0;
    const __m256i nb_ref = _mm256_set1_epi8((char)(c ? c->nb_ref : 0));
    /* A neighbor 33..63 symbols back lies in the last two steps' output. Loading it from memory would read
     * across the last step's store before it reaches the cache (a store-forwarding stall in the chain of
     * dependent steps), so it is shifted out of the two steps' registers instead: within each 128-bit lane,
     * byte j comes from `lo` at 16 - r + j (j < r) or from `hi` at j - r, r = (nbd - 32) % 16. */
    __m256i prev1 = zero, prev2 = zero, funnel_lo = zero, funnel_hi = zero;
    int far = 0;
    if (nbd > LANES && nbd < 2 * LANES) {
        int r = (int)(nbd - LANES) % 16;
        far = nbd - LANES >= 16;
        uint8_t lo_idx[32], hi_idx[32];
        for (int j = 0; j < 32; j++) {
            int k = j % 16;
            lo_idx[j] = k < r ? (uint8_t)(16 - r + k) : 0x80;
            hi_idx[j] = k < r ? 0x80 : (uint8_t)(k - r);
        }
        funnel_lo = _mm256_loadu_si256((const __m256i *)lo_idx);
        funnel_hi = _mm256_loadu_si256((const __m256i *)hi_idx);
    }
    /* i is at least nbd rounded up to a whole step here (the scalar code decoded the first steps) */
    if (nbd && nbd < 2 * LANES) prev1 = _mm256_loadu_si256((const __m256i *)(o + i - LANES));
    if (nbd > LANES && nbd < 2 * LANES) prev2 = _mm256_loadu_si256((const __m256i *)(o + i - 2 * LANES));
    int64_t wi = *wi_io;
    for (; i + LANES <= n && wi + LANES <= nw; i += LANES) {
        __m256i S[4];
        __m256i base = zero;
        if (have_group) {
            int64_t ch = ((b0 + i) / c->inner) % c->channels;
            base = _mm256_set1_epi32((int)(((uint32_t)c->group[ch] * (uint32_t)c->nbuckets) << pb));
        }
        __m128i bk[4] = {zero128, zero128, zero128, zero128}; /* the buckets of lanes 8v .. 8v+7 */
        if (nbd) {
            __m256i above;
            if (nbd >= 2 * LANES) {
                above = _mm256_loadu_si256((const __m256i *)(o + i - nbd));
            } else if (nbd == LANES) {
                above = prev1;
            } else { /* the last nbd - 32 bytes of the step before last, then the last step's first ones */
                __m256i lo = far ? prev2 : _mm256_permute2x128_si256(prev2, prev1, 0x21);
                __m256i hi = far ? _mm256_permute2x128_si256(prev2, prev1, 0x21) : prev1;
                above = _mm256_or_si256(_mm256_shuffle_epi8(lo, funnel_lo), _mm256_shuffle_epi8(hi, funnel_hi));
            }
            __m256i b = nb_buckets32(above, nb_ref, c->nbuckets);
            bk[0] = _mm256_castsi256_si128(b);
            bk[2] = _mm256_extracti128_si256(b, 1);
            bk[1] = _mm_srli_si128(bk[0], 8);
            bk[3] = _mm_srli_si128(bk[2], 8);
        }
        for (int v = 0; v < 4; v++) {
            __m256i x = X[v];
            __m256i idx = _mm256_add_epi32(base, _mm256_and_si256(x, maskv));
            if (nbd) idx = _mm256_add_epi32(idx, _mm256_sll_epi32(_mm256_cvtepu8_epi32(bk[v]), pbv));
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
        prev2 = prev1;
        prev1 = bytes;
    }
    for (int v = 0; v < 4; v++) _mm256_storeu_si256((__m256i *)(st + 8 * v), X[v]);
    *wi_io = wi;
    return i;
}
#endif

#ifdef HAVE_AVX512_PATH
/* One AVX-512 step on 16 lanes: look up the packed slot entries, advance the states, take the next words into
 * the lanes that fell below L (in lane order, from word wi of w on), and give the 16 symbols. Shared by
 * the one-block and the two-block decoders. */
#define STEP16(X, w, wi, sym_out)                                                                                 \
    do {                                                                                                      \
        __m512i e_ = _mm512_i32gather_epi32(_mm512_and_si512(X, maskv), (const void *)tabs, 4);              \
        __m512i f_ = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(e_, 12), m12), one);                  \
        __m512i x_ = _mm512_add_epi32(_mm512_mullo_epi32(f_, _mm512_srl_epi32(X, pbv)), _mm512_and_si512(e_, m12)); \
        __mmask16 k_ = _mm512_cmplt_epu32_mask(x_, low);                                                      \
        __m512i w_ = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((w) + 2 * (wi))));            \
        (wi) += _mm_popcnt_u32(k_);                                                                           \
        X = _mm512_mask_or_epi32(x_, k_, _mm512_slli_epi32(x_, 16), _mm512_maskz_expand_epi32(k_, w_));      \
        (sym_out) = _mm512_cvtepi32_epi8(_mm512_srli_epi32(e_, 24));                                          \
    } while (0)

/* AVX-512 order-0 decoder: the 32 states in two 16-lane vectors, one gather each for the packed slot entries
 * (as in the AVX2 decoder), and the renormalization without a permutation table: a compare gives the mask of
 * lanes that need a word, and an expand moves the next words into exactly those lanes, in lane order. Same
 * integer steps, so the same output as the scalar and AVX2 decoders. Steps start at i (a multiple of 32) and
 * stop where fewer than 32 words or symbols remain. */
__attribute__((target(AVX512_TARGET))) static int64_t decode_steps_avx512(uint32_t *st, const uint8_t *w, int64_t nw,
                                                                        int64_t *wi_io, const uint32_t *tabs, int pb,
                                                                        uint8_t *o, int64_t i, int64_t n) {
    __m512i X0 = _mm512_loadu_si512((const void *)st), X1 = _mm512_loadu_si512((const void *)(st + 16));
    const __m512i maskv = _mm512_set1_epi32((1 << pb) - 1), m12 = _mm512_set1_epi32(0xFFF);
    const __m512i one = _mm512_set1_epi32(1), low = _mm512_set1_epi32(RANS_L);
    const __m128i pbv = _mm_cvtsi32_si128(pb);
    int64_t wi = *wi_io;
    for (; i + LANES <= n && wi + LANES <= nw; i += LANES) {
        __m128i s0, s1;
        STEP16(X0, w, wi, s0);
        STEP16(X1, w, wi, s1);
        _mm256_storeu_si256((__m256i *)(o + i), _mm256_set_m128i(s1, s0));
    }
    _mm512_storeu_si512((void *)st, X0);
    _mm512_storeu_si512((void *)(st + 16), X1);
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


#ifdef HAVE_AVX512_PATH
/* Two opened order-0 blocks decoded side by side: four independent 16-lane state vectors instead of two, so
 * one block's gathers overlap the other's renormalization. Each block takes exactly the steps it would take
 * alone (same output); both stop where either has fewer than 32 words or symbols left, and block_finish
 * completes them one at a time. */
__attribute__((target(AVX512_TARGET))) static void decode_pair_avx512(BlockDec *a, BlockDec *b, const uint32_t *tabs,
                                                                    int pb) {
    __m512i A0 = _mm512_loadu_si512((const void *)a->st), A1 = _mm512_loadu_si512((const void *)(a->st + 16));
    __m512i B0 = _mm512_loadu_si512((const void *)b->st), B1 = _mm512_loadu_si512((const void *)(b->st + 16));
    const __m512i maskv = _mm512_set1_epi32((1 << pb) - 1), m12 = _mm512_set1_epi32(0xFFF);
    const __m512i one = _mm512_set1_epi32(1), low = _mm512_set1_epi32(RANS_L);
    const __m128i pbv = _mm_cvtsi32_si128(pb);
    const uint8_t *wa = a->w, *wb = b->w;
    int64_t ia = a->i, ib = b->i, wia = a->wi, wib = b->wi;
    while (ia + LANES <= a->n && wia + LANES <= a->nw && ib + LANES <= b->n && wib + LANES <= b->nw) {
        __m128i sa0, sa1, sb0, sb1;
        STEP16(A0, wa, wia, sa0);
        STEP16(B0, wb, wib, sb0);
        STEP16(A1, wa, wia, sa1);
        STEP16(B1, wb, wib, sb1);
        _mm256_storeu_si256((__m256i *)(a->o + ia), _mm256_set_m128i(sa1, sa0));
        _mm256_storeu_si256((__m256i *)(b->o + ib), _mm256_set_m128i(sb1, sb0));
        ia += LANES;
        ib += LANES;
    }
    _mm512_storeu_si512((void *)a->st, A0);
    _mm512_storeu_si512((void *)(a->st + 16), A1);
    _mm512_storeu_si512((void *)b->st, B0);
    _mm512_storeu_si512((void *)(b->st + 16), B1);
    a->i = ia, a->wi = wia, b->i = ib, b->wi = wib;
}
#endif
#undef STEP16

/* Decode an opened block with packed tables (prob_bits <= 12), any context, from where it stands. The AVX2
 * kernel takes the bulk when the context allows it (order-0, neighbor, or channel groups constant over each
 * 32-symbol step); scalar code does the first steps (before the neighbor distance), the tail, and everything
 * else. Checks the end state. */
static int block_finish(BlockDec *d, const Ctx *c, const uint32_t *tabs, int pb) {
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
#ifdef HAVE_AVX512_PATH
    if (simple && cpu_has_avx512 > 0) i = decode_steps_avx512(st, w, nw, &wi, tabs, pb, o, i, n);
#endif
#ifdef HAVE_AVX2_PATH
    int vector_ok = cpu_has_avx2 > 0 && (!have_group || (c->mult == 1 && c->inner % LANES == 0));
    if (vector_ok) {
        int64_t start = nbd ? ((nbd + LANES - 1) / LANES) * LANES : 0;
        if (start > n) start = n;
        if (start > i) {
            SCALAR_RANGE(i, start);
            i = start;
        }
        i = decode_steps_avx2(st, w, nw, &wi, tabs, pb, o, i, n, c, b0);
    }
#endif
    SCALAR_RANGE(i, n);
#undef SCALAR_RANGE
    if (wi != nw) return -1;
    for (int j = 0; j < LANES; j++)
        if (st[j] != RANS_L) return -1;
    return 0;
}

static int decode_block_packed(const uint8_t *src, int64_t len, const Ctx *c, const uint32_t *tabs, int pb,
                               uint8_t *o, int64_t b0, int64_t b1) {
    BlockDec d;
    if (block_open(&d, src, len, o, b0, b1) < 0) return -1;
    return block_finish(&d, c, tabs, pb);
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

/* A decoded block of stream symbols [b0, b1) to float32 (see Dequant); tmp holds 8 symbols per byte. Returns
 * 0, or -1 if the block's escape nibbles ask for more escapes than there are. */
static int block_output(Dequant *dq, const uint8_t *o, int64_t b0, int64_t b1, uint8_t *tmp) {
    int64_t e0 = b0, e1 = b1;
    const uint8_t *sym = o;
    if (dq->slot) {
        const int64_t per = 8 / dq->slot;
        e0 = b0 * per;
        e1 = min64(b1 * per, dq->elements);
        if (dq->rep == DQ_DELTA_NIBBLE) {
            if (nibble_merge(o, e1 - e0, dq->esc, dq->nesc, &dq->esc_pos, dq->mask, tmp) < 0) return -1;
        } else {
            unpack_bits(o, dq->slot, tmp, e1 - e0);
        }
        sym = tmp;
    }
    if (dq->rep != DQ_DENSE && dq->rep != DQ_PACKED) {
        delta_inverse_range(sym, dq->q, e0, e1, dq->distance, dq->mask);
        sym = dq->q + e0;
    }
    dequantize_range(sym, dq->x, e0, e1, dq->scale, dq->zero, dq->channels, dq->inner);
    return 0;
}

/* The rules of a decode's dequantization (see Dequant), for a stream of n symbols in blocks of block symbols
 * of which [bf, bl) are decoded: the slot of the representation rep (DQ_PACKED: param bits; DQ_DELTA_PACKED:
 * bits as 1, 2 or 4 allow; DQ_DELTA_NIBBLE: 4) and the elements the n symbols stand for (the given count
 * for the packed and nibble forms, which it must fit, else n). The residual forms need param >= 1 (their
 * distance) and q_len >= elements; DQ_DELTA_NIBBLE needs nesc + 64 <= esc_len and the whole stream at once
 * (its escapes are used in block order). q_len, esc_len: -1 where there is no buffer. Sets dq's rep,
 * distance, slot, mask, elements, nesc and esc_pos (the buffers and the channels are the caller's); 0, or -1
 * if the arguments break a rule. */
int dequant_plan(Dequant *dq, int rep, int64_t param, int bits, int64_t elements, int64_t nesc, int64_t q_len,
                 int64_t esc_len, int64_t n, int64_t block, int64_t bf, int64_t bl) {
    int ok = n >= 0 && bits >= 1 && bits <= 8, slot = 0;
    if (rep == DQ_DELTA_NIBBLE) {
        int64_t need;
        slot = 4;
        ok = ok && bits >= 5 && esc_len >= 0 && nesc >= 0 && size_add(nesc, 64, &need) && esc_len >= need &&
             elements >= 0 && elements <= 2 * n && elements > 2 * (n - 1) && block >= LANES && bf == 0 &&
             bl == (n + block - 1) / block;
    } else if (rep == DQ_PACKED || rep == DQ_DELTA_PACKED) {
        slot = rep == DQ_PACKED ? (int)param : bits == 3 ? 4 : bits;
        int per = (slot == 1 || slot == 2 || slot == 4) && bits <= slot ? 8 / slot : 0;
        ok = ok && per && elements >= 0 && elements <= n * per && elements > (n - 1) * per;
    } else if (rep == DQ_DENSE) {
        elements = n;
    } else {
        ok = ok && rep == DQ_DELTA;
        elements = n;
    }
    if (rep == DQ_DELTA || rep == DQ_DELTA_PACKED || rep == DQ_DELTA_NIBBLE)
        ok = ok && param >= 1 && q_len >= 0 && q_len >= elements;
    if (!ok) return -1;
    dq->rep = rep;
    dq->distance = rep == DQ_DENSE || rep == DQ_PACKED ? 0 : param;
    dq->slot = slot;
    dq->mask = (uint8_t)((1u << bits) - 1);
    dq->elements = elements;
    dq->nesc = nesc;
    dq->esc_pos = 0;
    return 0;
}

/* Decode blocks [bf, bl) of a stream of n symbols (blocks of block symbols) from payload (u32 block sizes,
 * then the blocks) with the context tables freqs (ntables x 256). Symbols go to out (n symbols), or, when
 * out is NULL, are dequantized into dq->x. Returns 0, 1 if the block index does not match the payload,
 * 2 if a table or block is corrupted, or RANS_ENOMEM. */
int rans_decode(const uint8_t *payload, int64_t plen, const Ctx *c, const uint16_t *freqs, int pb, int64_t block,
                int64_t n, int64_t bf, int64_t bl, uint8_t *out, Dequant *dq) {
    int64_t nblocks = (n + block - 1) / block;
    if (plen < 4 * nblocks) return 1;
    int ret = RANS_ENOMEM;
    WideTabs wide = {NULL, NULL, NULL};
    uint32_t *packed = NULL;
    uint8_t *scratch = NULL;
    /* the block index: sizes must cover the payload exactly */
    uint64_t *off = (uint64_t *)ss_malloc(sizeof(uint64_t) * (size_t)(nblocks + 1));
    if (!off) goto done;
    off[0] = (uint64_t)(4 * nblocks);
    for (int64_t b = 0; b < nblocks; b++) off[b + 1] = off[b] + rd32(payload + 4 * b);
    if (off[nblocks] != (uint64_t)plen) {
        ret = 1;
        goto done;
    }
    int bad_table = 0;
    if (pb <= 12) {
        packed = (uint32_t *)ss_malloc(sizeof(uint32_t) * ((size_t)c->ntables << pb));
        if (!packed) goto done;
        for (int t = 0; t < c->ntables && !bad_table; t++) {
            int r = build_packed(freqs + t * 256, pb, packed + ((size_t)t << pb));
            if (r < 0 || (r == 1 && c->ntables == 1 && n > 0)) bad_table = 1;
        }
    } else {
        wide.freq = freqs;
        wide.sym = (uint8_t *)ss_malloc((size_t)c->ntables << pb);
        wide.cum = (uint16_t *)ss_malloc((size_t)c->ntables * 256 * sizeof(uint16_t));
        if (!wide.sym || !wide.cum) goto done;
        for (int t = 0; t < c->ntables && !bad_table; t++) {
            const uint16_t *f = freqs + t * 256;
            int empty = 1;
            for (int s = 0; s < 256; s++)
                if (f[s]) empty = 0;
            if (empty) {
                if (c->ntables == 1 && n > 0) bad_table = 1;
                memset(wide.sym + ((size_t)t << pb), 0, (size_t)1 << pb);
                memset(wide.cum + (size_t)t * 256, 0, 256 * sizeof(uint16_t));
            } else if (build_wide(f, pb, wide.sym + ((size_t)t << pb), wide.cum + (size_t)t * 256) < 0) {
                bad_table = 1;
            }
        }
    }
    if (bad_table) {
        ret = 2;
        goto done;
    }
    /* dequantizing: two blocks' symbols (a block holds at most n), then room to unpack one (8 elements per
     * symbol at most) */
    const size_t most = (size_t)min64(block, n) + 1;
    if (!out) {
        scratch = (uint8_t *)ss_malloc(dq->slot ? most * 10 : most * 2);
        if (!scratch) goto done;
    }
    uint8_t *tmp = scratch ? scratch + 2 * most : NULL;
    int ok = 1;
    for (int64_t b = bf; b < bl && ok; b++) {
        int64_t b0 = b * block, b1 = b0 + block < n ? b0 + block : n;
        uint8_t *o = out ? out + b0 : scratch;
        const uint8_t *src = payload + off[b];
        int64_t len = (int64_t)(off[b + 1] - off[b]);
#ifdef HAVE_AVX512_PATH
        if (b + 1 < bl && pb <= 12 && c->ntables == 1 && cpu_has_avx512 > 0) {
            /* order-0: this block and the next side by side, then each completed and output in order */
            int64_t c0 = b1, c1 = c0 + block < n ? c0 + block : n;
            uint8_t *o2 = out ? out + c0 : scratch + most;
            BlockDec da, db;
            if (block_open(&da, src, len, o, b0, b1) < 0 ||
                block_open(&db, payload + off[b + 1], (int64_t)(off[b + 2] - off[b + 1]), o2, c0, c1) < 0) {
                ok = 0;
                break;
            }
            decode_pair_avx512(&da, &db, packed, pb);
            if (block_finish(&da, c, packed, pb) < 0 || block_finish(&db, c, packed, pb) < 0 ||
                (dq && (block_output(dq, o, b0, b1, tmp) < 0 || block_output(dq, o2, c0, c1, tmp) < 0)))
                ok = 0;
            b++;
            continue;
        }
#endif
        int r = pb <= 12 ? decode_block_packed(src, len, c, packed, pb, o, b0, b1)
                         : decode_block(src, len, c, &wide, pb, o, b0, b1);
        if (r < 0 || (dq && block_output(dq, o, b0, b1, tmp) < 0)) ok = 0;
    }
    /* the escapes of a nibble stream are used up exactly once its last block is decoded */
    if (ok && dq && dq->rep == DQ_DELTA_NIBBLE && bl == nblocks && dq->esc_pos != dq->nesc) ok = 0;
    ret = ok ? 0 : 2;
done:
    ss_free(wide.sym);
    ss_free(wide.cum);
    ss_free(packed);
    ss_free(off);
    ss_free(scratch);
    return ret;
}
