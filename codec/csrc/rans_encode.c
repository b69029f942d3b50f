/*
 * rANS encoder (the encode half of codec/rans.py): 32-lane interleaved static rANS with 32-bit states and
 * 16-bit renormalization words, over independent fixed-size blocks.
 *
 * Block bitstream (identical on every device):
 *   32 x u32 final lane states (little endian), then the u16 renormalization words in decoder read order.
 *   Symbol i of a block belongs to lane i % 32 and step i / 32. The decoder walks steps forward and, inside
 *   a step, lanes 0..31; a lane that falls below L after decoding reads the next word. The encoder walks the
 *   same order backwards and writes words from the end of its buffer, so the words land in read order
 *   (a warp does the same with a ballot/prefix-sum compaction). Initial states are L; after decoding, every
 *   lane must be back at L and every word consumed, which doubles as an integrity check.
 *
 * The scalar encoder divides by the frequency with a precomputed reciprocal; the AVX2 encoder beside it
 * codes whole 32-symbol steps with gathers and produces the same bytes.
 */
#include "internal.h"

typedef struct {
    uint32_t x_max;  /* renormalize (emit a word) when state >= x_max; 0 marks "always" never used */
    uint32_t rcp;    /* magic multiplier: floor(x / freq) without a divide */
    uint16_t sh1, sh2;
    uint16_t bias;   /* cumulative frequency */
    uint16_t cmpl;   /* M - freq */
} EncSym;

#ifdef HAVE_AVX2_PATH
static uint32_t perm_hi_enc[256][8] __attribute__((aligned(32))); /* needing lanes packed to the top */
static const int ENC_ORDER[8] = {0, 1, 4, 5, 2, 3, 6, 7};
#endif

/* The word-compaction permutations of the AVX2 encoder (called once at import). */
void rans_encode_init(void) {
#ifdef HAVE_AVX2_PATH
    /* perm_hi[m]: the lanes set in m packed to the top of 8 slots, in lane order */
    uint32_t perm_hi[256][8];
    for (int m = 0; m < 256; m++) {
        int c = 0, t = 0;
        for (int lane = 0; lane < 8; lane++) c += (m >> lane) & 1;
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
#endif
}

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

/* Encode blocks [bf, bl) of the n symbols (blocks of block symbols) with the context tables freqs
 * (ntables x 256) into out, back to back; sizes[b - bf] gets each block's byte size. out must hold
 * (bl - bf) * STATE_BYTES + 2 * symbols in those blocks. Returns bytes written, or RANS_ENOMEM, RANS_EFREQ
 * or RANS_EMISSING. */
int64_t rans_encode(const uint8_t *sym, int64_t n, const Ctx *c, const uint16_t *freqs, int pb, int64_t block,
                    int64_t bf, int64_t bl, uint8_t *out, uint32_t *sizes) {
    int64_t ret = RANS_ENOMEM;
    uint64_t *packed = NULL;
    uint8_t *ctx = NULL;
    const int64_t most = min64(block, n); /* symbols (and so words) in a block at most */
    EncSym *tabs = (EncSym *)ss_malloc(sizeof(EncSym) * 256 * (size_t)c->ntables);
    uint16_t *scratch = (uint16_t *)ss_malloc(sizeof(uint16_t) * ((size_t)most + 8)); /* 8 spare slots below */
    if (c->ntables > 1) ctx = (uint8_t *)ss_malloc((size_t)most + 1);
    if (!tabs || !scratch || (c->ntables > 1 && !ctx)) goto done;
    ret = RANS_EFREQ;
    for (int t = 0; t < c->ntables; t++)
        if (build_enc(freqs + t * 256, pb, tabs + t * 256) < 0) goto done;
    if (pb <= 12) {
        ret = RANS_ENOMEM;
        packed = (uint64_t *)ss_malloc(sizeof(uint64_t) * 256 * (size_t)c->ntables);
        if (!packed) goto done;
        for (int k = 0; k < 256 * c->ntables; k++) {
            uint32_t fr = freqs[k];
            uint32_t hi = fr ? (uint32_t)tabs[k].bias | (uint32_t)tabs[k].cmpl << 12 | (uint32_t)tabs[k].sh1 << 24 |
                                   1u << 27 | (uint32_t)tabs[k].sh2 << 28
                             : 0;
            packed[k] = (uint64_t)tabs[k].rcp | ((uint64_t)hi << 32);
        }
    }
    /* a symbol with zero frequency in its table is detected while coding (then the call fails) */
    int missing = 0;
    int64_t pos = 0;
    for (int64_t b = bf; b < bl && !missing; b++) {
        int64_t b0 = b * block, b1 = b0 + block < n ? b0 + block : n;
        if (ctx) block_contexts(c, sym, b0, b1, ctx);
        int64_t sz = encode_block(sym, b0, b1, ctx, tabs, packed, pb, out + pos, scratch + most + 8, &missing);
        sizes[b - bf] = (uint32_t)sz;
        pos += sz;
    }
    ret = missing ? RANS_EMISSING : pos;
done:
    ss_free(tabs);
    ss_free(packed);
    ss_free(scratch);
    ss_free(ctx);
    return ret;
}
