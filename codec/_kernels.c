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

/* Context id of every symbol in [b0, b1) (block-local neighbor rule), written to ctx[0 .. b1-b0). */
static void block_contexts(const Ctx *c, const uint8_t *sym, int64_t b0, int64_t b1, uint8_t *ctx) {
    ChanIter it = {0, 0};
    int have_group = c->group != NULL && c->channels > 1;
    if (have_group) chan_init(c, &it, b0);
    for (int64_t i = b0; i < b1; i++) {
        int g = have_group ? c->group[it.ch] : 0;
        int b = 0;
        if (c->nb_dist && i - b0 >= c->nb_dist) b = c->nbmap[sym[i - c->nb_dist]];
        ctx[i - b0] = (uint8_t)(g * c->nbuckets + b);
        if (have_group) chan_next(c, &it);
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
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t c = 0; c < channels; c++) {
            const float *p = x + (o * channels + c) * inner;
            float lo = mins[c], hi = maxs[c];
            float bad = 0.0f;
            for (int64_t k = 0; k < inner; k++) {
                float v = p[k];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
                bad += v * 0.0f; /* NaN for NaN or +-Inf */
            }
            if (bad != 0.0f) finite = 0; /* NaN != 0 */
            mins[c] = lo;
            maxs[c] = hi;
        }
    }
    Py_END_ALLOW_THREADS;
    rel_buf(&xb), rel_buf(&mnb), rel_buf(&mxb);
    return PyBool_FromLong(finite);
}

/* quantize(x f32, out u8, inv_scale f32[C], zero u8[C], channels, inner, qmax, hist u32[256] or None) */
static PyObject *py_quantize(PyObject *self, PyObject *args) {
    PyObject *xo, *qo, *so, *zo, *ho;
    long long channels, inner;
    int qmax;
    if (!PyArg_ParseTuple(args, "OOOOLLiO", &xo, &qo, &so, &zo, &channels, &inner, &qmax, &ho)) return NULL;
    Buf xb = {0}, qb = {0}, sb = {0}, zb = {0}, hb = {0};
    PyObject *ret = NULL;
    if (get_buf(xo, &xb, 0, "x") < 0 || get_buf(qo, &qb, 1, "out") < 0 || get_buf(so, &sb, 0, "scale") < 0 ||
        get_buf(zo, &zb, 0, "zero") < 0)
        goto done;
    if (ho != Py_None && get_buf(ho, &hb, 1, "hist") < 0) goto done;
    int64_t n = xb.view.len / 4;
    if (qb.view.len < n || channels < 1 || inner < 1 || sb.view.len < channels * 4 || zb.view.len < channels ||
        n % (channels * inner) != 0 || qmax < 1 || qmax > 255 || (hb.held && hb.view.len < 256 * 4)) {
        PyErr_SetString(PyExc_ValueError, "quantize: inconsistent sizes");
        goto done;
    }
    const float *x = (const float *)xb.view.buf;
    uint8_t *q = (uint8_t *)qb.view.buf;
    const float *inv = (const float *)sb.view.buf;
    const uint8_t *zero = (const uint8_t *)zb.view.buf;
    uint32_t *hist = hb.held ? (uint32_t *)hb.view.buf : NULL;
    Py_BEGIN_ALLOW_THREADS;
    int64_t outer = n / (channels * inner);
    const float fq = (float)qmax;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t c = 0; c < channels; c++) {
            int64_t base = (o * channels + c) * inner;
            const float s = inv[c];
            const float z = (float)zero[c];
            for (int64_t k = 0; k < inner; k++) {
                float v = nearbyintf(x[base + k] * s) + z;
                v = v < 0.0f ? 0.0f : v;
                v = v > fq ? fq : v;
                q[base + k] = (uint8_t)v;
            }
        }
    }
    if (hist) {
        /* four partial histograms break the store-to-load dependency on repeated symbols */
        uint32_t h[4][256];
        memset(h, 0, sizeof h);
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
            h[0][q[i]]++;
            h[1][q[i + 1]]++;
            h[2][q[i + 2]]++;
            h[3][q[i + 3]]++;
        }
        for (; i < n; i++) h[0][q[i]]++;
        for (int s = 0; s < 256; s++) hist[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s];
    }
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
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
            float lut[256];
            for (int s = 0; s < 256; s++) lut[s] = (float)(s - (int)zero[c]) * scale[c];
            for (int64_t k = 0; k < inner; k++) x[base + k] = lut[q[base + k]];
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
        for (int64_t r = 0; r < rows; r += row_step) {
            int64_t r0 = r * width, r1 = r0 + width < n ? r0 + width : n;
            int cnt = 0, prev = -1;
            for (int64_t i = r0; i < r1; i++)
                if (nz[i]) {
                    int col = (int)(i - r0);
                    gh[col - prev - 1]++;
                    prev = col;
                    cnt++;
                }
            ch_[cnt]++;
            nnz += cnt;
        }
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
    Py_BEGIN_ALLOW_THREADS;
    Ctx c = {channels, inner, 1, NULL, 0, NULL, 1, 1};
    ChanIter it = {0, 0};
    chan_init(&c, &it, 0);
    for (int64_t r = 0; r < rows; r++) {
        int64_t r0 = r * width, r1 = r0 + width < n ? r0 + width : n;
        int cnt = 0, prev = -1;
        for (int64_t i = r0; i < r1; i++) {
            uint8_t z = channels == 1 ? zero[0] : zero[it.ch];
            if (q[i] != z) {
                int col = (int)(i - r0);
                gaps[nnz] = (uint8_t)(col - prev - 1);
                vals[nnz] = q[i];
                nnz++;
                prev = col;
                cnt++;
            }
            if (channels > 1) chan_next(&c, &it);
        }
        counts[r] = (uint8_t)cnt;
    }
    Py_END_ALLOW_THREADS;
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
    for (int64_t i = 0; i < n; i++) o[i] = (uint8_t)((p[i / k] >> ((i % k) * bits)) & mask);
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
done:
    rel_buf(&pb), rel_buf(&ob);
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
    return cum == M ? 0 : -1;
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

static inline uint32_t enc_step(uint32_t x, const EncSym *e, int pb, uint16_t **wp) {
    if (x >= e->x_max) {
        *--(*wp) = (uint16_t)(x & 0xFFFF);
        x >>= 16;
    }
    uint32_t t = (uint32_t)(((uint64_t)x * e->rcp) >> 32);
    uint32_t q = (t + ((x - t) >> e->sh1)) >> e->sh2;
    (void)pb;
    return x + e->bias + q * e->cmpl;
}

/* Encode symbols [b0, b1) into dst (capacity STATE_BYTES + 2*(b1-b0)); returns bytes written. */
static int64_t encode_block(const uint8_t *sym, int64_t b0, int64_t b1, const uint8_t *ctx, const EncSym *tabs,
                            int pb, uint8_t *dst, uint16_t *scratch_end) {
    uint32_t st[LANES];
    for (int j = 0; j < LANES; j++) st[j] = RANS_L;
    uint16_t *wp = scratch_end;
    int64_t n = b1 - b0;
    const uint8_t *s = sym + b0;
    if (ctx) {
        for (int64_t i = n - 1; i >= 0; i--) {
            int j = (int)(i & (LANES - 1));
            st[j] = enc_step(st[j], &tabs[(int)ctx[i] * 256 + s[i]], pb, &wp);
        }
    } else {
        int64_t i = n - 1;
        for (; i >= 0 && ((i + 1) & (LANES - 1)); i--) {
            int j = (int)(i & (LANES - 1));
            st[j] = enc_step(st[j], &tabs[s[i]], pb, &wp);
        }
        for (; i >= 0; i -= LANES) {
            const uint8_t *p = s + i - (LANES - 1);
            for (int j = LANES - 1; j >= 0; j--) st[j] = enc_step(st[j], &tabs[p[j]], pb, &wp);
        }
    }
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
    scratch = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)block);
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
    const uint8_t *sym = (const uint8_t *)sb.view.buf;
    /* every symbol must have a non-zero frequency in its context */
    int missing = 0;
    uint8_t *out = (uint8_t *)ob.view.buf;
    uint32_t *sizes = (uint32_t *)zb.view.buf;
    int64_t pos = 0;
    Py_BEGIN_ALLOW_THREADS;
    for (int64_t b = bf; b < bl && !missing; b++) {
        int64_t b0 = b * block, b1 = b0 + block < n ? b0 + block : n;
        if (ctx) {
            block_contexts(&c, sym, b0, b1, ctx);
            for (int64_t i = b0; i < b1; i++)
                if (freqs[(int)ctx[i - b0] * 256 + sym[i]] == 0) missing = 1;
        } else {
            for (int64_t i = b0; i < b1; i++)
                if (freqs[sym[i]] == 0) missing = 1;
        }
        if (missing) break;
        int64_t sz = encode_block(sym, b0, b1, ctx, tabs, pb, out + pos, scratch + block);
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
    free(scratch);
    free(ctx);
    rel_buf(&sb), rel_buf(&fb), rel_buf(&ob), rel_buf(&zb), rel_buf(&gb), rel_buf(&nb);
    return ret;
}

/* Decode one block. Returns 0 on success, -1 if the block is inconsistent. */
static int decode_block(const uint8_t *src, int64_t len, const Ctx *c, const DecSlot *tabs, int pb, uint8_t *out,
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
    const uint8_t *w = src + STATE_BYTES;
    int64_t wi = 0;
    const uint32_t mask = (1u << pb) - 1;
    uint8_t *o = out + b0;
    if (c->ntables == 1) {
        const DecSlot *d = tabs;
        int64_t i = 0;
        for (; i + LANES <= n; i += LANES) {
            for (int j = 0; j < LANES; j++) {
                uint32_t x = st[j];
                const DecSlot e = d[x & mask];
                o[i + j] = e.sym;
                x = (uint32_t)e.freq * (x >> pb) + e.bias;
                if (x < RANS_L) {
                    uint16_t v = 0;
                    if (wi < nw) memcpy(&v, w + 2 * wi, 2);
                    wi++;
                    x = (x << 16) | v;
                }
                st[j] = x;
            }
        }
        for (int j = 0; i < n; i++, j++) {
            uint32_t x = st[j];
            const DecSlot e = d[x & mask];
            o[i] = e.sym;
            x = (uint32_t)e.freq * (x >> pb) + e.bias;
            if (x < RANS_L) {
                uint16_t v = 0;
                if (wi < nw) memcpy(&v, w + 2 * wi, 2);
                wi++;
                x = (x << 16) | v;
            }
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
            if (x < RANS_L) {
                uint16_t v = 0;
                if (wi < nw) memcpy(&v, w + 2 * wi, 2);
                wi++;
                x = (x << 16) | v;
            }
            st[j] = x;
            if (have_group) chan_next(c, &it);
        }
    }
    if (wi != nw) return -1;
    for (int j = 0; j < LANES; j++)
        if (st[j] != RANS_L) return -1;
    return 0;
}

/* rans_decode(payload, offsets u64[nb+1] (byte offsets of blocks in payload), ctxspec, freqs, prob_bits,
 *             block_size, n_symbols, block_first, block_last, out u8[n_symbols]) -> bool ok */
static PyObject *py_rans_decode(PyObject *self, PyObject *args) {
    PyObject *po, *oo, *spec, *fo, *outo;
    int pb;
    long long block, n, bf, bl;
    if (!PyArg_ParseTuple(args, "OOOOiLLLLO", &po, &oo, &spec, &fo, &pb, &block, &n, &bf, &bl, &outo)) return NULL;
    Buf pbuf = {0}, ob = {0}, fb = {0}, outb = {0}, gb = {0}, nb = {0};
    Ctx c;
    PyObject *ret = NULL;
    DecSlot *tabs = NULL;
    if (get_buf(po, &pbuf, 0, "payload") < 0 || get_buf(oo, &ob, 0, "offsets") < 0 || get_buf(fo, &fb, 0, "freqs") < 0 ||
        get_buf(outo, &outb, 1, "out") < 0)
        goto done;
    if (parse_ctx(spec, &c, &gb, &nb) < 0) goto done;
    int64_t nblocks = block > 0 ? (n + block - 1) / block : -1;
    if (pb < 8 || pb > 15 || block < LANES || block > (1 << 24) || n < 0 || outb.view.len < n || bf < 0 ||
        bl > nblocks || bf > bl || ob.view.len < (nblocks + 1) * 8 || fb.view.len < (Py_ssize_t)c.ntables * 512) {
        PyErr_SetString(PyExc_ValueError, "rans_decode: bad arguments");
        goto done;
    }
    const uint64_t *off = (const uint64_t *)ob.view.buf;
    for (int64_t b = bf; b < bl; b++)
        if (off[b] > off[b + 1] || off[b + 1] > (uint64_t)pbuf.view.len) {
            ret = PyBool_FromLong(0);
            goto done;
        }
    tabs = (DecSlot *)malloc(sizeof(DecSlot) * ((size_t)c.ntables << pb));
    if (!tabs) {
        PyErr_NoMemory();
        goto done;
    }
    const uint16_t *freqs = (const uint16_t *)fb.view.buf;
    for (int t = 0; t < c.ntables; t++) {
        const uint16_t *f = freqs + t * 256;
        int empty = 1;
        for (int s = 0; s < 256; s++)
            if (f[s]) empty = 0;
        if (empty) {
            memset(tabs + ((size_t)t << pb), 0, sizeof(DecSlot) << pb);
            continue;
        }
        if (build_dec(f, pb, tabs + ((size_t)t << pb)) < 0) {
            ret = PyBool_FromLong(0);
            goto done;
        }
    }
    if (c.ntables == 1) {
        int empty = 1;
        for (int s = 0; s < 256; s++)
            if (freqs[s]) empty = 0;
        if (empty && n > 0) {
            ret = PyBool_FromLong(0);
            goto done;
        }
    }
    const uint8_t *payload = (const uint8_t *)pbuf.view.buf;
    uint8_t *out = (uint8_t *)outb.view.buf;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS;
    for (int64_t b = bf; b < bl && ok; b++) {
        int64_t b0 = b * block, b1 = b0 + block < n ? b0 + block : n;
        if (decode_block(payload + off[b], (int64_t)(off[b + 1] - off[b]), &c, tabs, pb, out, b0, b1) < 0) ok = 0;
    }
    Py_END_ALLOW_THREADS;
    ret = PyBool_FromLong(ok);
done:
    free(tabs);
    rel_buf(&pbuf), rel_buf(&ob), rel_buf(&fb), rel_buf(&outb), rel_buf(&gb), rel_buf(&nb);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"minmax", py_minmax, METH_VARARGS, "Per-channel min/max (including 0); returns False on NaN/Inf."},
    {"quantize", py_quantize, METH_VARARGS, "Asymmetric per-channel quantization to u8 (+ optional histogram)."},
    {"dequantize", py_dequantize, METH_VARARGS, "u8 symbols back to float32."},
    {"context_histogram", py_context_histogram, METH_VARARGS, "Symbol counts per context table."},
    {"channel_histogram", py_channel_histogram, METH_VARARGS, "Symbol counts per channel."},
    {"csr_stats", py_csr_stats, METH_VARARGS, "Row-occupancy and gap histograms per candidate row width."},
    {"csr_split", py_csr_split, METH_VARARGS, "Split symbols into CSR counts/gaps/values."},
    {"csr_merge", py_csr_merge, METH_VARARGS, "Merge CSR counts/gaps/values back to symbols."},
    {"pack", py_pack, METH_VARARGS, "Pack 1/2/4-bit symbols into bytes."},
    {"unpack", py_unpack, METH_VARARGS, "Unpack bytes into 1/2/4-bit symbols."},
    {"normalize", py_normalize, METH_VARARGS, "Normalize counts to rANS frequencies."},
    {"rans_encode", py_rans_encode, METH_VARARGS, "Interleaved 32-lane rANS encode of a block range."},
    {"rans_decode", py_rans_decode, METH_VARARGS, "Interleaved 32-lane rANS decode of a block range."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_kernels", "splitstream codec kernels", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&moduledef); }
