/*
 * Frame header parsing (the read half of codec/frame.py, which documents the layout): the checksum, then
 * every field in order, each bounded before use. Returns the fields and where each stream's tables and
 * payload lie (the tables are checked, not kept); a malformed frame gets the message codec.CodecError
 * carries. Nothing is allocated.
 */
#include <stdio.h>

#include "internal.h"

typedef struct {
    const uint8_t *p;
    int64_t len, pos;
} Cursor;

static int need(Cursor *c, int64_t n) { return n >= 0 && n <= c->len - c->pos; }
static uint8_t u8(Cursor *c) { return c->p[c->pos++]; }
static uint16_t u16(Cursor *c) {
    uint16_t v;
    memcpy(&v, c->p + c->pos, 2);
    c->pos += 2;
    return v;
}
static uint32_t u32(Cursor *c) {
    uint32_t v = rd32(c->p + c->pos);
    c->pos += 4;
    return v;
}

#define FAIL(...)                                            \
    do {                                                     \
        snprintf(h->error, sizeof h->error, __VA_ARGS__);    \
        return -1;                                           \
    } while (0)
#define NEED(n)                                              \
    do {                                                     \
        if (!need(&c, (n))) FAIL("truncated frame");         \
    } while (0)

static const int STREAMS_OF_KIND[7] = {0, 1, 1, 3, 1, 1, 2}; /* kinds 1..6: dense packed sparse delta ... */

int frame_parse(const uint8_t *buf, int64_t len, int64_t max_elements, FrameHeader *h) {
    memset(h, 0, sizeof *h);
    if (len < FRAME_FIXED_BYTES + 4) FAIL("frame too short");
    if (memcmp(buf, "SPLT", 4) != 0) FAIL("not a splitstream frame (bad magic)");
    if (buf[4] != FRAME_VERSION)
        FAIL("unsupported frame version %d (this decoder reads version %d)", buf[4], FRAME_VERSION);
    const int64_t body = len - 4;
    if (crc32_update(0, buf, (size_t)body) != rd32(buf + body)) FAIL("frame checksum mismatch (corrupted or truncated)");
    Cursor c = {buf, body, 5};
    int flags = u8(&c);
    h->dtype = u8(&c);
    h->bits = u8(&c);
    h->ndim = u8(&c);
    h->axis = (int8_t)u8(&c);
    h->kind = u8(&c);
    h->param = u16(&c);
    if (flags != 0) FAIL("unknown frame flags");
    if (h->dtype > 3) FAIL("unknown dtype code %d", h->dtype);
    if (h->bits < 1 || h->bits > 8) FAIL("bad bit width %d", h->bits);
    if (h->ndim > FRAME_MAX_NDIM) FAIL("too many dimensions (%d)", h->ndim);
    NEED(4 * (int64_t)h->ndim);
    /* extent: the product of the non-zero dimensions. It bounds an empty frame too, whose shape (0, 2^31, 2^31)
     * holds no element yet is more than numpy will make an array of. */
    uint64_t extent = 1;
    int over = 0, empty = 0; /* over: the product no longer fits, more than any limit */
    for (int d = 0; d < h->ndim; d++) {
        h->shape[d] = u32(&c);
        if (h->shape[d] == 0) empty = 1;
        else if (!over && __builtin_mul_overflow(extent, (uint64_t)h->shape[d], &extent)) over = 1;
    }
    if (over) FAIL("frame declares a shape of more than 2^64 elements, more than the limit of %lld",
                   (long long)max_elements);
    if (extent > (uint64_t)max_elements)
        FAIL("frame declares %s%llu elements, more than the limit of %lld", empty ? "a shape of " : "",
             (unsigned long long)extent, (long long)max_elements);
    const uint64_t numel = empty ? 0 : extent;
    h->numel = (int64_t)numel;
    if (h->axis < -1 || h->axis >= (h->ndim > 0 ? h->ndim : 0) || (h->axis >= 0 && h->ndim == 0))
        FAIL("bad quantization axis");
    NEED(4);
    uint32_t nq = u32(&c);
    uint32_t expected = h->axis < 0 ? 1 : h->shape[h->axis];
    if (nq != (expected > 1 ? expected : 1)) FAIL("quantization parameter count does not match the shape");
    h->nq = nq;
    NEED(5 * (int64_t)nq);
    h->scale_at = c.pos;
    for (uint32_t k = 0; k < nq; k++) {
        float s;
        memcpy(&s, buf + c.pos + 4 * (int64_t)k, 4);
        if (!(s > 0 && s <= 3.4028234663852886e38f)) FAIL("bad quantization scale"); /* NaN and inf fail too */
    }
    c.pos += 4 * (int64_t)nq;
    h->zero_at = c.pos;
    for (uint32_t k = 0; k < nq; k++)
        if (buf[c.pos + k] > (1u << h->bits) - 1) FAIL("zero point out of range");
    c.pos += nq;
    NEED(5);
    uint32_t nnz = u32(&c);
    int nstreams = u8(&c);
    if (h->kind < 1 || h->kind > 6) FAIL("unknown representation %d", h->kind);
    if (nstreams != STREAMS_OF_KIND[h->kind]) FAIL("stream count does not match the representation");
    int counted = h->kind == 3 || h->kind == 6; /* sparse: non-zeros; delta-nibble: escapes */
    if ((uint64_t)nnz > numel || (!counted && nnz)) FAIL("bad non-zero count");
    h->nnz = nnz;
    h->nstreams = nstreams;
    for (int k = 0; k < nstreams; k++) {
        FrameStream *s = &h->streams[k];
        NEED(1);
        s->coding = u8(&c);
        s->group_at = -1;
        s->ngroups = 1;
        s->nbuckets = 1;
        if (s->coding == 1) {
            NEED(12);
            s->prob_bits = u8(&c);
            s->block_log2 = u8(&c);
            s->channels = u32(&c);
            s->inner = u32(&c);
            s->mult = u8(&c);
            int ngroups = u8(&c);
            if (s->prob_bits < 8 || s->prob_bits > 15 || s->block_log2 < 5 || s->block_log2 > 24)
                FAIL("bad rANS parameters");
            if (ngroups > FRAME_MAX_GROUPS) FAIL("too many channel groups");
            if (s->channels < 1 || s->inner < 1) FAIL("bad context layout");
            if (ngroups > 1) {
                if ((uint64_t)s->channels > numel * 8) FAIL("bad context channel count");
                NEED(s->channels);
                int top = 0;
                for (int64_t j = 0; j < s->channels; j++)
                    if (buf[c.pos + j] > top) top = buf[c.pos + j];
                if (top + 1 != ngroups) FAIL("channel group map does not match its group count");
                s->group_at = c.pos;
                s->ngroups = ngroups;
                c.pos += s->channels;
            }
            NEED(6);
            s->nb_dist = u32(&c);
            int nbuckets = u8(&c);
            s->nb_ref = u8(&c);
            if (s->nb_dist && nbuckets != 2 && nbuckets != 4) FAIL("bad neighbor context");
            s->nbuckets = s->nb_dist ? nbuckets : 1;
            s->ntables = s->ngroups * s->nbuckets;
            int64_t used = read_tables(buf + c.pos, body - c.pos, s->ntables, s->prob_bits, NULL);
            if (used < 0) FAIL("malformed frequency table");
            s->tables_at = c.pos;
            c.pos += used;
        } else if (s->coding != 0) {
            FAIL("unknown stream coding %d", s->coding);
        }
        NEED(4);
        s->payload_len = u32(&c);
    }
    for (int k = 0; k < nstreams; k++) {
        NEED(h->streams[k].payload_len);
        h->streams[k].payload_at = c.pos;
        c.pos += h->streams[k].payload_len;
    }
    if (c.pos != body) FAIL("trailing bytes after the last stream");
    return 0;
}
