/*
 * The lean frame writer: the frame of a configuration whose streams are each order-0 rANS or stored bytes
 * (dense, packed, delta, delta-packed or delta-nibble symbols; every level-1 choice but sparse), written in
 * one call from the quantized symbols. It splits the symbols into the representation's streams, counts each
 * (the given dense counts, all symbols, or about one chunk in 4 with every symbol of 0..top kept codable, as
 * codec/quantize.py's sampled_table_counts), normalizes and serializes the tables, lays out the header of
 * codec/frame.py, codes each stream in place behind it and appends the CRC. The bytes are those of the
 * Python writer (codec/api.py encode_prepared + codec/frame.py write); tests/test_frame_write.py checks that.
 */
#include "internal.h"

enum { K_DENSE = 1, K_PACKED = 2, K_SPARSE = 3, K_DELTA = 4, K_DELTA_PACKED = 5, K_DELTA_NIBBLE = 6 };

/* bits per slot when b-bit symbols are bit-packed (represent.py pack_slot), 0 where they do not pack */
static int pack_slot(int bits) { return bits == 1 ? 1 : bits == 2 ? 2 : bits <= 4 ? 4 : 0; }

static int streams_of(int kind) { return kind == K_DELTA_NIBBLE ? 2 : kind == K_SPARSE ? 3 : 1; }

/* the slot of the kinds that pack (0 for the others; -1 for a slot that is not 1, 2 or 4) */
static int slot_of(const LeanFrame *f) {
    int slot = f->kind == K_PACKED ? f->param : f->kind == K_DELTA_PACKED ? pack_slot(f->bits) : 0;
    if (f->kind == K_PACKED || f->kind == K_DELTA_PACKED) return slot == 1 || slot == 2 || slot == 4 ? slot : -1;
    return 0;
}

enum { FIXED_BYTES = 13 }; /* magic, version, flags, dtype, bits, ndim, axis, kind (a byte each but magic) and param */

static int64_t header_bound(const LeanFrame *f) {
    /* fixed part, shape, nq, scale and zero, nnz and stream count; per stream coding, context, tables, length */
    return FIXED_BYTES + 4 * (int64_t)f->ndim + 4 + 5 * f->nq + 5 +
           LEAN_MAX_STREAMS * (1 + 14 + TABLES_MAX_BYTES(1) + 4);
}

int64_t lean_frame_bound(int64_t n, const LeanFrame *f) {
    if (n < 0 || n > ((int64_t)1 << 40) || f->nq < 1 || f->nq > ((int64_t)1 << 32) || f->ndim < 0 ||
        f->ndim > FRAME_MAX_NDIM || f->bits < 1 || f->bits > 8 || f->pb < 8 || f->pb > 15 || f->block_log2 < 5 ||
        f->block_log2 > 24 || f->kind == K_SPARSE || f->kind < K_DENSE || f->kind > K_DELTA_NIBBLE ||
        f->nstreams != streams_of(f->kind) || slot_of(f) < 0 || (f->kind == K_DELTA_NIBBLE && f->bits < 5) ||
        f->param < 0 || f->param > 0xFFFF || ((f->kind == K_DELTA || f->kind >= K_DELTA_PACKED) && f->param < 1))
        return -1;
    for (int k = 0; k < f->nstreams; k++) {
        const LeanStream *s = &f->s[k];
        if ((s->coding != 0 && s->coding != 1) || s->count < COUNT_ALL || s->count > COUNT_SAMPLED ||
            (s->count == COUNT_GIVEN && (!f->given || k != 0 || f->kind != K_DENSE)) ||
            (s->count == COUNT_SAMPLED && (s->top < 0 || s->top > 255)))
            return -1;
    }
    /* every stream holds at most n symbols; coded: 4 + STATE_BYTES per block and 2 bytes per symbol */
    const int64_t blocks = (n >> f->block_log2) + 1;
    return header_bound(f) + f->nstreams * (blocks * (4 + STATE_BYTES) + 2 * n + 64) + 4;
}

/* sampled_table_counts(sym, LEAN_SAMPLE_STRIDE, 0, top) of codec/quantize.py */
static void sampled_counts(const uint8_t *sym, int64_t m, int top, uint32_t *hist) {
    histogram_sampled(sym, m, LEAN_SAMPLE_STRIDE, hist);
    int unseen = 0;
    for (int s = 0; s <= top; s++) unseen += hist[s] == 0;
    if (unseen > LEAN_MAX_UNSEEN) {
        histogram4(sym, m, hist);
    } else if (unseen) {
        for (int s = 0; s <= top; s++)
            if (!hist[s]) hist[s] = 1;
    }
}

static uint8_t *put32(uint8_t *p, uint32_t v) {
    wr32(p, v);
    return p + 4;
}

int64_t lean_frame_write(const uint8_t *q, int64_t n, const LeanFrame *f, uint8_t *work, uint8_t *out) {
    if (lean_frame_bound(n, f) < 0) return LEAN_EBAD;
    const int slot = slot_of(f);
    const uint8_t mask = (uint8_t)((1u << f->bits) - 1);
    int64_t ret = RANS_ENOMEM;
    uint32_t *sizes = NULL;
    /* the streams, in work: residuals (n bytes), then packed symbols or nibble pairs, then escapes */
    uint8_t *res = work, *packed = work + n, *esc = packed + (n + 1) / 2 + 8;
    const uint8_t *sym[LEAN_MAX_STREAMS] = {q, NULL};
    int64_t len[LEAN_MAX_STREAMS] = {n, 0}, nnz = 0;
    const uint8_t *src = q;
    if (f->kind >= K_DELTA && n) {
        delta(q, res, n, f->param, mask, 0);
        src = sym[0] = res;
    }
    if (slot && n) {
        const int per = 8 / slot;
        len[0] = (n + per - 1) / per;
        pack_bits(src, n, slot, packed);
        sym[0] = packed;
    } else if (f->kind == K_DELTA_NIBBLE) {
        len[0] = (n + 1) / 2;
        nnz = n ? nibble_split(src, n, mask, packed, esc) : 0;
        sym[0] = packed, sym[1] = esc, len[1] = nnz;
    }
    /* the tables */
    uint16_t freqs[LEAN_MAX_STREAMS][256];
    int coded[LEAN_MAX_STREAMS];
    for (int k = 0; k < f->nstreams; k++) {
        coded[k] = f->s[k].coding == 1 && len[k] > 0;
        if (!coded[k]) continue;
        uint32_t counts[256];
        if (f->s[k].count == COUNT_GIVEN)
            memcpy(counts, f->given, sizeof counts);
        else if (f->s[k].count == COUNT_SAMPLED && len[k] >= f->sample_min)
            sampled_counts(sym[k], len[k], f->s[k].top, counts);
        else
            histogram4(sym[k], len[k], counts);
        normalize_tables(counts, 1, f->pb, freqs[k]);
    }
    /* the header (codec/frame.py write) */
    uint8_t *p = out;
    memcpy(p, "SPLT", 4);
    p[4] = FRAME_VERSION, p[5] = 0, p[6] = (uint8_t)f->dtype, p[7] = (uint8_t)f->bits, p[8] = (uint8_t)f->ndim;
    p[9] = (uint8_t)(int8_t)f->axis, p[10] = (uint8_t)f->kind, p[11] = (uint8_t)(f->param & 0xFF);
    p[12] = (uint8_t)(f->param >> 8);
    p += FIXED_BYTES;
    for (int d = 0; d < f->ndim; d++) p = put32(p, f->shape[d]);
    p = put32(p, (uint32_t)f->nq);
    memcpy(p, f->scale, 4 * (size_t)f->nq); /* float32, little endian on every target of the SIMD paths */
    p += 4 * f->nq;
    memcpy(p, f->zero, (size_t)f->nq);
    p += f->nq;
    p = put32(p, (uint32_t)nnz);
    *p++ = (uint8_t)f->nstreams;
    uint8_t *len_at[LEAN_MAX_STREAMS];
    for (int k = 0; k < f->nstreams; k++) {
        *p++ = (uint8_t)coded[k];
        if (coded[k]) {
            /* order 0: prob_bits, block_log2, channels 1, inner 1, mult 1, one group, no neighbor context */
            *p++ = (uint8_t)f->pb, *p++ = (uint8_t)f->block_log2;
            p = put32(p, 1), p = put32(p, 1);
            *p++ = 1, *p++ = 1;
            p = put32(p, 0);
            *p++ = 0, *p++ = 0;
            p += write_tables(freqs[k], 1, p);
        }
        len_at[k] = p;
        p += 4;
    }
    /* the payloads, each written in place: stored bytes, or the block index and the rANS blocks */
    const int64_t block = (int64_t)1 << f->block_log2;
    for (int k = 0; k < f->nstreams; k++) {
        int64_t used;
        if (!coded[k]) {
            if (len[k]) memcpy(p, sym[k], (size_t)len[k]);
            used = len[k];
        } else {
            const int64_t nb = (len[k] + block - 1) / block;
            if (!(sizes = (uint32_t *)ss_malloc(4 * (size_t)nb))) goto done;
            Ctx c;
            memset(&c, 0, sizeof c);
            c.channels = c.inner = c.mult = 1, c.nbuckets = 1, c.ntables = 1;
            int64_t r = rans_encode(sym[k], len[k], &c, freqs[k], f->pb, block, 0, nb, p + 4 * nb, sizes);
            if (r < 0) {
                ret = r;
                goto done;
            }
            for (int64_t b = 0; b < nb; b++) wr32(p + 4 * b, sizes[b]);
            ss_free(sizes);
            sizes = NULL;
            used = 4 * nb + r;
        }
        wr32(len_at[k], (uint32_t)used);
        p += used;
    }
    const int64_t body = p - out;
    wr32(p, crc32_update(0, out, (size_t)body));
    ret = body + 4;
done:
    ss_free(sizes);
    return ret;
}
