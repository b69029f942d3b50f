/*
 * Context models (mirrors codec/contexts.py): which frequency table codes each symbol. Symbol i of a block
 * uses table  group[channel(i)] * nbuckets + bucket(sym[i - nb_dist]),  channel(i) = ((i * mult) / inner)
 * % channels; the neighbor term is used only when nb_dist > 0 (nb_dist >= 32, so the neighbor was decoded
 * in an earlier step of the same block; outside the block it counts as bucket 0). Here: the validation of a
 * context description and the context id of every symbol of a block.
 */
#include "internal.h"

/* Validate a context for n symbols whose fields the bindings filled (group may be NULL; its length given),
 * derive ntables and build the neighbor map. Returns NULL, or what is wrong. */
const char *ctx_check(Ctx *c, int64_t group_len, int64_t n) {
    int64_t tmp;
    if (c->channels < 1 || c->inner < 1 || c->mult < 1 || c->nb_dist < 0 || c->nbuckets < 1 || c->nbuckets > 16)
        return "bad context spec";
    /* the channel walk computes i * mult (i < n) and rem + mult (rem < inner) */
    if (!size_mul(n, c->mult, &tmp) || !size_add(c->inner, c->mult, &tmp)) return "bad context spec";
    int ngroups = 1;
    if (c->group != NULL) {
        if (group_len != c->channels) return "group map length != channels";
        for (int64_t k = 0; k < c->channels; k++)
            if (c->group[k] + 1 > ngroups) ngroups = c->group[k] + 1;
    }
    if (c->nb_dist > 0) {
        if (c->nb_dist < LANES) return "neighbor distance must be >= 32";
        if (c->nbuckets != 2 && c->nbuckets != 4) return "neighbor bucket count must be 2 or 4";
        if (c->nb_ref < 0 || c->nb_ref > 255) return "neighbor reference must be a symbol (0..255)";
        /* the bucket of a neighbor by its distance from the reference; nb_buckets32 is the vector form */
        for (int k = 0; k < 256; k++) {
            int d = abs(k - c->nb_ref);
            c->nbmap[k] = (uint8_t)(c->nbuckets == 2 ? d > 0 : (d > 0) + (d > 2) + (d > 8));
        }
    } else {
        memset(c->nbmap, 0, sizeof c->nbmap);
        c->nbuckets = 1;
    }
    c->ntables = ngroups * c->nbuckets;
    if (c->ntables > MAX_TABLES) return "too many context tables";
    return NULL;
}

#ifdef HAVE_AVX2_PATH
/* ctx[k] += bucket(cur[k - nb_dist]) for k in [from, n), 32 at a time; returns where it stopped. */
__attribute__((target("avx2"))) static int64_t add_buckets_avx2(const Ctx *c, const uint8_t *cur, uint8_t *ctx,
                                                                 int64_t from, int64_t n) {
    const __m256i ref = _mm256_set1_epi8((char)c->nb_ref);
    int64_t k = from;
    for (; k + 32 <= n; k += 32) {
        __m256i above = _mm256_loadu_si256((const __m256i *)(cur + k - c->nb_dist));
        __m256i id = _mm256_loadu_si256((const __m256i *)(ctx + k));
        id = _mm256_add_epi8(id, nb_buckets32(above, ref, c->nbuckets));
        _mm256_storeu_si256((__m256i *)(ctx + k), id);
    }
    return k;
}
#endif

/* Context id of every symbol in [b0, b1) (block-local neighbor rule), written to ctx[0 .. b1-b0).
 * Channel groups are filled run by run (a channel covers inner / mult symbols), then neighbor buckets added. */
void block_contexts(const Ctx *c, const uint8_t *sym, int64_t b0, int64_t b1, uint8_t *ctx) {
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
        const uint8_t *cur = sym + b0;
        int64_t k = c->nb_dist;
#ifdef HAVE_AVX2_PATH
        if (cpu_has_avx2 > 0) k = add_buckets_avx2(c, cur, ctx, k, n);
#endif
        for (; k < n; k++) ctx[k] = (uint8_t)(ctx[k] + c->nbmap[cur[k - c->nb_dist]]);
    }
}
