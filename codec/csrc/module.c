/*
 * Python bindings of the codec kernels: the module codec._kernels. Each function takes Python buffers and
 * integers, checks every size against the buffers it was given (overflow-safe, see internal.h), releases the
 * GIL, calls the kernel of its concern (quantize.c, stats.c, represent.c, tables.c, contexts.c,
 * rans_encode.c, rans_decode.c, frame.c, crc32.c; the allocator hook and the CPU features in runtime.c) and
 * converts the result. A refused argument or size raises codec.errors.CodecError (a ValueError); a buffer of
 * the wrong kind raises TypeError. No codec logic here, and nothing here is reached by the kernels: they
 * include internal.h only (tests/test_csrc_layout.py checks both directions of that).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "internal.h"

static PyObject *codec_error; /* codec.errors.CodecError */

/* ------------------------------------------------------------------------------------------------ */
/* buffers and context specs                                                                         */

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

static PyObject *bad(const char *msg) {
    PyErr_SetString(codec_error, msg);
    return NULL;
}

/* spec = (channels, inner, mult, group_bytes|None, nb_dist, nb_ref, nbuckets), for n symbols */
static int parse_ctx(PyObject *spec, Ctx *c, Buf *gb, int64_t n) {
    PyObject *gobj;
    long long channels, inner, mult, nbd;
    int nbuckets, nb_ref;
    gb->held = 0;
    if (!PyArg_ParseTuple(spec, "LLLOLii", &channels, &inner, &mult, &gobj, &nbd, &nb_ref, &nbuckets)) return -1;
    c->channels = channels;
    c->inner = inner;
    c->mult = mult;
    c->nb_dist = nbd;
    c->nbuckets = nbuckets;
    c->nb_ref = nb_ref;
    c->group = NULL;
    if (gobj != Py_None) {
        if (get_buf(gobj, gb, 0, "group map") < 0) return -1;
        c->group = (const uint8_t *)gb->view.buf;
    }
    const char *msg = ctx_check(c, gb->held ? gb->view.len : 0, n);
    if (msg) {
        bad(msg);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* quantization                                                                                      */

/* minmax(x f32, mins f32[C], maxs f32[C], channels, inner) -> bool all finite.  min/max include 0. */
static PyObject *py_minmax(PyObject *self, PyObject *args) {
    PyObject *xo, *mino, *maxo;
    long long channels, inner;
    if (!PyArg_ParseTuple(args, "OOOLL", &xo, &mino, &maxo, &channels, &inner)) return NULL;
    Buf xb = {0}, mnb = {0}, mxb = {0};
    PyObject *ret = NULL;
    if (get_buf(xo, &xb, 0, "x") < 0 || get_buf(mino, &mnb, 1, "mins") < 0 || get_buf(maxo, &mxb, 1, "maxs") < 0)
        goto done;
    int64_t n = xb.view.len / 4;
    if (!whole_runs(n, channels, inner) || !fits(mnb.view.len, channels, 4) || !fits(mxb.view.len, channels, 4)) {
        bad("minmax: inconsistent sizes");
        goto done;
    }
    int finite;
    Py_BEGIN_ALLOW_THREADS;
    finite = minmax((const float *)xb.view.buf, n, channels, inner, (float *)mnb.view.buf, (float *)mxb.view.buf);
    Py_END_ALLOW_THREADS;
    ret = PyBool_FromLong(finite);
done:
    rel_buf(&xb), rel_buf(&mnb), rel_buf(&mxb);
    return ret;
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
    if (qb.view.len < n || !whole_runs(n, channels, inner) || !fits(sb.view.len, channels, 4) ||
        !fits(zb.view.len, channels, 1) || qmax < 1 || qmax > 255 || (hb.held && !fits(hb.view.len, 256, 4)) ||
        stride < 1) {
        bad("quantize: inconsistent sizes");
        goto done;
    }
    int64_t counted;
    uint8_t smin, smax;
    Py_BEGIN_ALLOW_THREADS;
    quantize((const float *)xb.view.buf, (uint8_t *)qb.view.buf, n, (const float *)sb.view.buf,
             (const uint8_t *)zb.view.buf, channels, inner, qmax, hb.held ? (uint32_t *)hb.view.buf : NULL, stride,
             &smin, &smax, &counted);
    Py_END_ALLOW_THREADS;
    ret = Py_BuildValue("iiL", n ? (int)smin : 0, n ? (int)smax : 0, (long long)counted);
done:
    rel_buf(&xb), rel_buf(&qb), rel_buf(&sb), rel_buf(&zb), rel_buf(&hb);
    return ret;
}

/* quantize_tensor(x f32, bits, stride, out u8[n], hist u32[256] | None) -> (status, scale, zero, smallest symbol,
 * largest symbol): per-tensor quantization in one call (quantize.c quantize_tensor); status 0 ok, 1 NaN or Inf,
 * 2 a range too wide. */
static PyObject *py_quantize_tensor(PyObject *self, PyObject *args) {
    PyObject *xo, *qo, *ho;
    int bits, stride;
    if (!PyArg_ParseTuple(args, "OiiOO", &xo, &bits, &stride, &qo, &ho)) return NULL;
    Buf xb = {0}, qb = {0}, hb = {0};
    PyObject *ret = NULL;
    if (get_buf(xo, &xb, 0, "x") < 0 || get_buf(qo, &qb, 1, "out") < 0) goto done;
    if (ho != Py_None && get_buf(ho, &hb, 1, "hist") < 0) goto done;
    int64_t n = xb.view.len / 4;
    if (n < 1 || xb.view.len % 4 || qb.view.len < n || bits < 1 || bits > 8 || stride < 1 ||
        (hb.held && !fits(hb.view.len, 256, 4))) {
        bad("quantize_tensor: bad arguments");
        goto done;
    }
    float scale = 1.0f;
    uint8_t zero = 0, lo = 0, hi = 0;
    int status;
    Py_BEGIN_ALLOW_THREADS;
    status = quantize_tensor((const float *)xb.view.buf, n, bits, stride, (uint8_t *)qb.view.buf,
                             hb.held ? (uint32_t *)hb.view.buf : NULL, &scale, &zero, &lo, &hi);
    Py_END_ALLOW_THREADS;
    ret = Py_BuildValue("(ifiii)", status, (double)scale, (int)zero, (int)lo, (int)hi);
done:
    rel_buf(&xb), rel_buf(&qb), rel_buf(&hb);
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
    if (!fits(xb.view.len, n, 4) || !whole_runs(n, channels, inner) || !fits(sb.view.len, channels, 4) ||
        !fits(zb.view.len, channels, 1)) {
        bad("dequantize: inconsistent sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    dequantize((const uint8_t *)qb.view.buf, (float *)xb.view.buf, n, (const float *)sb.view.buf,
               (const uint8_t *)zb.view.buf, channels, inner);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&qb), rel_buf(&xb), rel_buf(&sb), rel_buf(&zb);
    return ret;
}

/* transpose_u8(src u8[batch*rows*cols], dst u8[batch*cols*rows], batch, rows, cols): each (rows x cols)
 * matrix to (cols x rows). */
static PyObject *py_transpose_u8(PyObject *self, PyObject *args) {
    PyObject *so, *dobj;
    long long batch, rows, cols;
    if (!PyArg_ParseTuple(args, "OOLLL", &so, &dobj, &batch, &rows, &cols)) return NULL;
    Buf sb = {0}, db = {0};
    PyObject *ret = NULL;
    if (get_buf(so, &sb, 0, "src") < 0 || get_buf(dobj, &db, 1, "dst") < 0) goto done;
    int64_t plane, total;
    if (!size_mul(rows, cols, &plane) || !size_mul(batch, plane, &total) || sb.view.len != total ||
        db.view.len != total) {
        bad("transpose_u8: inconsistent sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    transpose_u8((const uint8_t *)sb.view.buf, (uint8_t *)db.view.buf, batch, rows, cols);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&sb), rel_buf(&db);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* statistics                                                                                        */

/* histogram(sym u8, counts u32[256]) */
static PyObject *py_histogram(PyObject *self, PyObject *args) {
    PyObject *so, *co;
    if (!PyArg_ParseTuple(args, "OO", &so, &co)) return NULL;
    Buf sb = {0}, cb = {0};
    PyObject *ret = NULL;
    if (get_buf(so, &sb, 0, "symbols") < 0 || get_buf(co, &cb, 1, "counts") < 0) goto done;
    if (cb.view.len < 256 * 4) {
        bad("histogram: counts too small");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    histogram4((const uint8_t *)sb.view.buf, sb.view.len, (uint32_t *)cb.view.buf);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&sb), rel_buf(&cb);
    return ret;
}

/* histogram_sampled(q u8, stride, hist u32[256]) -> symbols counted: the histogram quantize() takes with
 * the same stride, for symbols produced another way (e.g. reordered after quantizing in memory order). */
static PyObject *py_histogram_sampled(PyObject *self, PyObject *args) {
    PyObject *qo, *ho;
    int stride;
    if (!PyArg_ParseTuple(args, "OiO", &qo, &stride, &ho)) return NULL;
    Buf qb = {0}, hb = {0};
    PyObject *ret = NULL;
    if (get_buf(qo, &qb, 0, "q") < 0 || get_buf(ho, &hb, 1, "hist") < 0) goto done;
    if (!fits(hb.view.len, 256, 4) || stride < 1) {
        bad("histogram_sampled: bad arguments");
        goto done;
    }
    int64_t counted;
    Py_BEGIN_ALLOW_THREADS;
    counted = histogram_sampled((const uint8_t *)qb.view.buf, qb.view.len, stride, (uint32_t *)hb.view.buf);
    Py_END_ALLOW_THREADS;
    ret = PyLong_FromLongLong(counted);
done:
    rel_buf(&qb), rel_buf(&hb);
    return ret;
}

/* the sampled chunks and distances family_histograms reads: chunk even, at most SAMPLE_CHUNK_MAX and n; every
 * start within q (and a whole packed byte with a slot); mask 2^bits - 1 of the slot (or 31..255 without);
 * at most max_nd distances, each in 1..n */
static int family_args_ok(int64_t n, const Buf *sb, long long chunk, int mask, int slot, const Buf *db, int max_nd) {
    const int64_t nstarts = sb->view.len / 8, nd = db->view.len / 8;
    const int64_t *starts = (const int64_t *)sb->view.buf, *dist = (const int64_t *)db->view.buf;
    int ok = chunk >= 2 && chunk % 2 == 0 && chunk <= SAMPLE_CHUNK_MAX && chunk <= n &&
             ((slot == 0 && mask >= 31 && mask <= 255) || ((slot == 1 || slot == 2 || slot == 4) && mask < (1 << slot))) &&
             !(mask & (mask + 1)) && nd <= max_nd && sb->view.len % 8 == 0 && db->view.len % 8 == 0;
    for (int64_t k = 0; ok && k < nstarts; k++)
        ok = starts[k] >= 0 && starts[k] <= n - chunk && (slot == 0 || (starts[k] % (8 / slot) == 0 && chunk % (8 / slot) == 0));
    for (int64_t k = 0; ok && k < nd; k++) ok = dist[k] >= 1 && dist[k] <= n;
    return ok;
}

/* family_histograms(q u8, starts i64[K], chunk, mask, slot, distances i64[D], hist u32[(2+2D or 2+3D)*256]): the
 * histograms of the sampled chunks q[s, s + chunk) as they are (row 0), bit-packed (row 1; slot 0: none), as
 * residuals at each distance (rows 2..D+1) and, with a slot (mask below 2^slot), as packed residuals (rows
 * D+2..2D+1), else (mask 31..255) as the residuals' nibble pairs (rows D+2..2D+1) and escapes (rows
 * 2D+2..3D+1). Every start is checked to lie in q, and to be a whole packed byte. */
static PyObject *py_family_histograms(PyObject *self, PyObject *args) {
    PyObject *qo, *so, *dobj, *ho;
    long long chunk;
    int mask, slot;
    if (!PyArg_ParseTuple(args, "OOLiiOO", &qo, &so, &chunk, &mask, &slot, &dobj, &ho)) return NULL;
    Buf qb = {0}, sb = {0}, db = {0}, hb = {0};
    PyObject *ret = NULL;
    if (get_buf(qo, &qb, 0, "q") < 0 || get_buf(so, &sb, 0, "starts") < 0 || get_buf(dobj, &db, 0, "distances") < 0 ||
        get_buf(ho, &hb, 1, "hist") < 0)
        goto done;
    int64_t n = qb.view.len, nstarts = sb.view.len / 8, nd = db.view.len / 8;
    const int64_t *starts = (const int64_t *)sb.view.buf, *dist = (const int64_t *)db.view.buf;
    int ok = family_args_ok(n, &sb, chunk, mask, slot, &db, 16) &&
             fits(hb.view.len, 2 + (slot ? 2 : 3) * nd, 256 * 4);
    if (!ok) {
        bad("family_histograms: bad sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    family_histograms((const uint8_t *)qb.view.buf, starts, nstarts, chunk, (uint8_t)mask, slot, dist, (int)nd,
                      (uint32_t *)hb.view.buf);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&qb), rel_buf(&sb), rel_buf(&db), rel_buf(&hb);
    return ret;
}

/* lean_choice(q u8, bits, starts i64[K], chunk, distances i64[D <= 3], given u32[256] | None, block_log2, zero,
 *             sparse_share) -> None | (kind, param, ((coding, predicted bytes), ...), predicted bytes)
 * The lean levels' choice of codec/costmodel.py in one call (costmodel.c); None where the level would weigh
 * sparse rows too. */
static PyObject *py_lean_choice(PyObject *self, PyObject *args) {
    PyObject *qo, *so, *dobj, *go;
    long long chunk;
    int bits, blog, zero;
    double share;
    if (!PyArg_ParseTuple(args, "OiOLOOiid", &qo, &bits, &so, &chunk, &dobj, &go, &blog, &zero, &share)) return NULL;
    Buf qb = {0}, sb = {0}, db = {0}, gb = {0};
    PyObject *ret = NULL;
    if (get_buf(qo, &qb, 0, "q") < 0 || get_buf(so, &sb, 0, "starts") < 0 || get_buf(dobj, &db, 0, "distances") < 0)
        goto done;
    if (go != Py_None && get_buf(go, &gb, 0, "given") < 0) goto done;
    const int slot = bits == 1 ? 1 : bits == 2 ? 2 : bits <= 4 ? 4 : 0;
    const int64_t n = qb.view.len;
    if (bits < 1 || bits > 8 || !family_args_ok(n, &sb, chunk, (1 << bits) - 1, slot, &db, LEAN_MAX_DISTANCES) ||
        sb.view.len < 8 || blog < 5 || blog > 24 || zero < 0 || zero > 255 || (gb.held && gb.view.len < 1024)) {
        bad("lean_choice: bad arguments");
        goto done;
    }
    LeanChoice c;
    int r;
    Py_BEGIN_ALLOW_THREADS;
    r = lean_choice((const uint8_t *)qb.view.buf, n, bits, (const int64_t *)sb.view.buf, sb.view.len / 8, chunk,
                    (const int64_t *)db.view.buf, (int)(db.view.len / 8),
                    gb.held ? (const uint32_t *)gb.view.buf : NULL, blog, zero, share, &c);
    Py_END_ALLOW_THREADS;
    if (r == LEAN_SPARSE) {
        ret = Py_NewRef(Py_None);
    } else if (c.nstreams == 2) {
        ret = Py_BuildValue("(ii((id)(id))d)", c.kind, c.param, c.coding[0], c.predicted[0], c.coding[1],
                            c.predicted[1], c.total);
    } else {
        ret = Py_BuildValue("(ii((id))d)", c.kind, c.param, c.coding[0], c.predicted[0], c.total);
    }
done:
    rel_buf(&qb), rel_buf(&sb), rel_buf(&db), rel_buf(&gb);
    return ret;
}

/* clip_choice(hist u32[C*256], scale8 f32[C], zero8 u8[C], mins f32[C], maxs f32[C], factors f64[K], qmax,
 *             weight, best i32[C]) -> None: best[c] = the candidate range with the least (weighted) error */
static PyObject *py_clip_choice(PyObject *self, PyObject *args) {
    PyObject *ho, *so, *zo, *mno, *mxo, *fo, *bo;
    int qmax;
    double weight;
    if (!PyArg_ParseTuple(args, "OOOOOOidO", &ho, &so, &zo, &mno, &mxo, &fo, &qmax, &weight, &bo)) return NULL;
    Buf hb = {0}, sb = {0}, zb = {0}, mnb = {0}, mxb = {0}, fb = {0}, bb = {0};
    PyObject *ret = NULL;
    if (get_buf(ho, &hb, 0, "hist") < 0 || get_buf(so, &sb, 0, "scale8") < 0 || get_buf(zo, &zb, 0, "zero8") < 0 ||
        get_buf(mno, &mnb, 0, "mins") < 0 || get_buf(mxo, &mxb, 0, "maxs") < 0 ||
        get_buf(fo, &fb, 0, "factors") < 0 || get_buf(bo, &bb, 1, "best") < 0)
        goto done;
    int64_t channels = bb.view.len / 4, nf = fb.view.len / 8;
    if (channels < 1 || nf < 1 || nf > INT32_MAX || !fits(hb.view.len, channels, 256 * 4) ||
        !fits(sb.view.len, channels, 4) || !fits(zb.view.len, channels, 1) || !fits(mnb.view.len, channels, 4) ||
        !fits(mxb.view.len, channels, 4) || qmax < 1 || qmax > 255 || !(weight >= 0 && weight <= 1e6)) {
        bad("clip_choice: bad sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    clip_choice((const uint32_t *)hb.view.buf, (const float *)sb.view.buf, (const uint8_t *)zb.view.buf,
                (const float *)mnb.view.buf, (const float *)mxb.view.buf, channels, (const double *)fb.view.buf, nf,
                qmax, weight, (int32_t *)bb.view.buf);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&hb), rel_buf(&sb), rel_buf(&zb), rel_buf(&mnb), rel_buf(&mxb), rel_buf(&fb), rel_buf(&bb);
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
    if (!whole_runs(n, channels, inner) || !fits(cb.view.len, channels, 256 * 4)) {
        bad("channel_histogram: bad sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    channel_histogram((const uint8_t *)qb.view.buf, n, channels, inner, (uint32_t *)cb.view.buf);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&qb), rel_buf(&cb);
    return ret;
}

/* group_sum(counts u32[channels*256], group u8[channels], out u32[ngroups*256]): per-group sums of the
 * per-channel counts (the channel count is the group map's length; ngroups from out's length) */
static PyObject *py_group_sum(PyObject *self, PyObject *args) {
    PyObject *co, *go, *oo;
    if (!PyArg_ParseTuple(args, "OOO", &co, &go, &oo)) return NULL;
    Buf cb = {0}, gb = {0}, ob = {0};
    PyObject *ret = NULL;
    if (get_buf(co, &cb, 0, "counts") < 0 || get_buf(go, &gb, 0, "group") < 0 || get_buf(oo, &ob, 1, "out") < 0)
        goto done;
    int64_t channels = gb.view.len, ngroups = ob.view.len / (256 * 4);
    const uint8_t *group = (const uint8_t *)gb.view.buf;
    if (ob.view.len % (256 * 4) || ngroups > 256 || !fits(cb.view.len, channels, 256 * 4)) {
        bad("group_sum: bad sizes");
        goto done;
    }
    for (int64_t ch = 0; ch < channels; ch++)
        if (group[ch] >= ngroups) {
            bad("group_sum: group index beyond the output");
            goto done;
        }
    Py_BEGIN_ALLOW_THREADS;
    group_sum((const uint32_t *)cb.view.buf, group, channels, (int)ngroups, (uint32_t *)ob.view.buf);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&cb), rel_buf(&gb), rel_buf(&ob);
    return ret;
}

/* context_histogram(sym u8, ctxspec, block_size, counts u32[ntables*256], stride) -> None
 * Counts every stride-th block (stride >= 1) so a cost model can sample cheaply. */
static PyObject *py_context_histogram(PyObject *self, PyObject *args) {
    PyObject *so, *spec, *co;
    long long block, stride;
    if (!PyArg_ParseTuple(args, "OOLOL", &so, &spec, &block, &co, &stride)) return NULL;
    Buf sb = {0}, cb = {0}, gb = {0};
    Ctx c;
    PyObject *ret = NULL;
    if (get_buf(so, &sb, 0, "symbols") < 0 || get_buf(co, &cb, 1, "counts") < 0) goto done;
    if (parse_ctx(spec, &c, &gb, sb.view.len) < 0) goto done;
    int64_t step, end;
    if (block < LANES || !size_mul(block, stride, &step) || !size_add(step, sb.view.len, &end) || stride < 1 ||
        !fits(cb.view.len, c.ntables, 256 * 4)) {
        bad("context_histogram: bad sizes");
        goto done;
    }
    int r;
    Py_BEGIN_ALLOW_THREADS;
    r = context_histogram((const uint8_t *)sb.view.buf, sb.view.len, &c, block, stride, (uint32_t *)cb.view.buf);
    Py_END_ALLOW_THREADS;
    ret = r < 0 ? PyErr_NoMemory() : Py_NewRef(Py_None);
done:
    rel_buf(&sb), rel_buf(&cb), rel_buf(&gb);
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
    int64_t *widths = NULL, *nnz = NULL;
    uint32_t *ch = NULL, *gh = NULL;
    if (get_buf(qo, &qb, 0, "q") < 0 || get_buf(zo, &zb, 0, "zero") < 0) goto done;
    int64_t n = qb.view.len;
    /* one channel: inner is not used (q may be a sample of the tensor) */
    if (!PyTuple_Check(wo) || channels < 1 || inner < 1 || (channels > 1 && !whole_runs(n, channels, inner)) ||
        !fits(zb.view.len, channels, 1) || row_step < 1) {
        bad("csr_stats: bad arguments");
        goto done;
    }
    Py_ssize_t nw = PyTuple_GET_SIZE(wo);
    widths = PyMem_New(int64_t, nw + 1);
    nnz = PyMem_New(int64_t, nw + 1);
    ch = PyMem_New(uint32_t, (nw + 1) * 256);
    gh = PyMem_New(uint32_t, (nw + 1) * 256);
    if (!widths || !nnz || !ch || !gh) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t w = 0; w < nw; w++) {
        long long width = PyLong_AsLongLong(PyTuple_GET_ITEM(wo, w));
        if (width < 1 || width > 255) {
            if (!PyErr_Occurred()) bad("csr_stats: width out of range");
            goto done;
        }
        widths[w] = width;
    }
    int r;
    Py_BEGIN_ALLOW_THREADS;
    r = csr_stats((const uint8_t *)qb.view.buf, n, (const uint8_t *)zb.view.buf, channels, inner, widths, nw, row_step,
                  ch, gh, nnz);
    Py_END_ALLOW_THREADS;
    if (r < 0) {
        PyErr_NoMemory();
        goto done;
    }
    ret = PyList_New(nw);
    for (Py_ssize_t w = 0; ret && w < nw; w++) {
        PyObject *t = Py_BuildValue("(y#y#L)", (const char *)(ch + w * 256), (Py_ssize_t)(256 * 4),
                                    (const char *)(gh + w * 256), (Py_ssize_t)(256 * 4), (long long)nnz[w]);
        if (!t) {
            Py_CLEAR(ret);
            break;
        }
        PyList_SET_ITEM(ret, w, t);
    }
done:
    PyMem_Free(widths);
    PyMem_Free(nnz);
    PyMem_Free(ch);
    PyMem_Free(gh);
    rel_buf(&qb), rel_buf(&zb);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* representations                                                                                   */

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
    int64_t rows = width >= 1 && width <= 255 ? (n + width - 1) / width : 0;
    if (width < 1 || width > 255 || !whole_runs(n, channels, inner) || !fits(zb.view.len, channels, 1) ||
        cb.view.len < rows || gb.view.len < n || vb.view.len < n) {
        bad("csr_split: bad sizes");
        goto done;
    }
    int64_t nnz;
    Py_BEGIN_ALLOW_THREADS;
    nnz = csr_split((const uint8_t *)qb.view.buf, n, (const uint8_t *)zb.view.buf, channels, inner, width,
                    (uint8_t *)cb.view.buf, (uint8_t *)gb.view.buf, (uint8_t *)vb.view.buf);
    Py_END_ALLOW_THREADS;
    ret = nnz < 0 ? PyErr_NoMemory() : PyLong_FromLongLong(nnz);
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
    int64_t rows = width >= 1 && width <= 255 ? (n + width - 1) / width : 0;
    if (width < 1 || width > 255 || !whole_runs(n, channels, inner) || !fits(zb.view.len, channels, 1) ||
        cb.view.len != rows || vb.view.len != nnz) {
        bad("csr_merge: bad sizes");
        goto done;
    }
    int ok;
    Py_BEGIN_ALLOW_THREADS;
    ok = csr_merge((const uint8_t *)cb.view.buf, rows, (const uint8_t *)gb.view.buf, (const uint8_t *)vb.view.buf,
                   nnz, (const uint8_t *)zb.view.buf, channels, inner, width, (uint8_t *)ob.view.buf, n);
    Py_END_ALLOW_THREADS;
    ret = PyBool_FromLong(ok);
done:
    rel_buf(&cb), rel_buf(&gb), rel_buf(&vb), rel_buf(&zb), rel_buf(&ob);
    return ret;
}

/* pack(q u8, bits, out u8[ceil(n * bits / 8)]): 8 / bits symbols per byte, first in the low bits */
static PyObject *py_pack(PyObject *self, PyObject *args) {
    PyObject *qo, *oo;
    int bits;
    if (!PyArg_ParseTuple(args, "OiO", &qo, &bits, &oo)) return NULL;
    Buf qb = {0}, ob = {0};
    PyObject *ret = NULL;
    if (get_buf(qo, &qb, 0, "q") < 0 || get_buf(oo, &ob, 1, "out") < 0) goto done;
    if (bits != 1 && bits != 2 && bits != 4) {
        bad("pack: bits must be 1, 2 or 4");
        goto done;
    }
    int k = 8 / bits;
    int64_t n = qb.view.len, m = (n + k - 1) / k;
    if (ob.view.len < m) {
        bad("pack: output too small");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    pack_bits((const uint8_t *)qb.view.buf, n, bits, (uint8_t *)ob.view.buf);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&qb), rel_buf(&ob);
    return ret;
}

/* unpack(packed u8, bits, out u8[n]): the inverse of pack */
static PyObject *py_unpack(PyObject *self, PyObject *args) {
    PyObject *po, *oo;
    int bits;
    if (!PyArg_ParseTuple(args, "OiO", &po, &bits, &oo)) return NULL;
    Buf pb = {0}, ob = {0};
    PyObject *ret = NULL;
    if (get_buf(po, &pb, 0, "packed") < 0 || get_buf(oo, &ob, 1, "out") < 0) goto done;
    if (bits != 1 && bits != 2 && bits != 4) {
        bad("unpack: bits must be 1, 2 or 4");
        goto done;
    }
    int k = 8 / bits;
    int64_t n = ob.view.len;
    if (pb.view.len < (n + k - 1) / k) {
        bad("unpack: input too small");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    unpack_bits((const uint8_t *)pb.view.buf, bits, (uint8_t *)ob.view.buf, n);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&pb), rel_buf(&ob);
    return ret;
}

/* delta(src u8, dst u8, d, mask, inverse): residuals at distance d (or their inverse) */
static PyObject *py_delta(PyObject *self, PyObject *args) {
    PyObject *so, *dobj;
    long long d;
    int mask, inverse;
    if (!PyArg_ParseTuple(args, "OOLip", &so, &dobj, &d, &mask, &inverse)) return NULL;
    Buf sb = {0}, db = {0};
    PyObject *ret = NULL;
    if (get_buf(so, &sb, 0, "src") < 0 || get_buf(dobj, &db, 1, "dst") < 0) goto done;
    if (d < 1 || mask < 1 || mask > 255 || db.view.len < sb.view.len) {
        bad("delta: bad arguments");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    delta((const uint8_t *)sb.view.buf, (uint8_t *)db.view.buf, sb.view.len, d, (uint8_t)mask, inverse);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&sb), rel_buf(&db);
    return ret;
}

/* nibble_split(residuals u8[n], mask, pairs u8[ceil(n/2)], escapes u8[n + 64]) -> escape count: the delta-nibble
 * representation's two streams (mask 31..255: bit widths 5 to 8). */
static PyObject *py_nibble_split(PyObject *self, PyObject *args) {
    PyObject *ro, *po, *eo;
    int mask;
    if (!PyArg_ParseTuple(args, "OiOO", &ro, &mask, &po, &eo)) return NULL;
    Buf rb = {0}, pb = {0}, eb = {0};
    PyObject *ret = NULL;
    if (get_buf(ro, &rb, 0, "residuals") < 0 || get_buf(po, &pb, 1, "pairs") < 0 || get_buf(eo, &eb, 1, "escapes") < 0)
        goto done;
    int64_t n = rb.view.len, need;
    if (mask < 31 || mask > 255 || (mask & (mask + 1)) || pb.view.len < (n + 1) / 2 || !size_add(n, 64, &need) ||
        eb.view.len < need) {
        bad("nibble_split: bad arguments");
        goto done;
    }
    int64_t k;
    Py_BEGIN_ALLOW_THREADS;
    k = nibble_split((const uint8_t *)rb.view.buf, n, (uint8_t)mask, (uint8_t *)pb.view.buf, (uint8_t *)eb.view.buf);
    Py_END_ALLOW_THREADS;
    ret = PyLong_FromLongLong(k);
done:
    rel_buf(&rb), rel_buf(&pb), rel_buf(&eb);
    return ret;
}

/* nibble_merge(pairs u8, escapes u8[nesc + 64], nesc, mask, out u8[n]) -> bool: n residuals back; False if the
 * escape nibbles do not use exactly nesc escapes. */
static PyObject *py_nibble_merge(PyObject *self, PyObject *args) {
    PyObject *po, *eo, *oo;
    long long nesc;
    int mask;
    if (!PyArg_ParseTuple(args, "OOLiO", &po, &eo, &nesc, &mask, &oo)) return NULL;
    Buf pb = {0}, eb = {0}, ob = {0};
    PyObject *ret = NULL;
    if (get_buf(po, &pb, 0, "pairs") < 0 || get_buf(eo, &eb, 0, "escapes") < 0 || get_buf(oo, &ob, 1, "out") < 0)
        goto done;
    int64_t n = ob.view.len, need;
    if (mask < 31 || mask > 255 || (mask & (mask + 1)) || pb.view.len < (n + 1) / 2 || nesc < 0 ||
        !size_add(nesc, 64, &need) || eb.view.len < need) {
        bad("nibble_merge: bad arguments");
        goto done;
    }
    int64_t pos = 0;
    int r;
    Py_BEGIN_ALLOW_THREADS;
    r = nibble_merge((const uint8_t *)pb.view.buf, n, (const uint8_t *)eb.view.buf, nesc, &pos, (uint8_t)mask,
                     (uint8_t *)ob.view.buf);
    Py_END_ALLOW_THREADS;
    ret = PyBool_FromLong(r == 0 && pos == nesc);
done:
    rel_buf(&pb), rel_buf(&eb), rel_buf(&ob);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* frequency tables                                                                                  */

/* normalize(counts u32[ntab*256], prob_bits, out u16[ntab*256]) */
static PyObject *py_normalize(PyObject *self, PyObject *args) {
    PyObject *co, *oo;
    int pb;
    if (!PyArg_ParseTuple(args, "OiO", &co, &pb, &oo)) return NULL;
    Buf cb = {0}, ob = {0};
    PyObject *ret = NULL;
    if (get_buf(co, &cb, 0, "counts") < 0 || get_buf(oo, &ob, 1, "out") < 0) goto done;
    if (pb < 8 || pb > 15 || cb.view.len % 1024 != 0 || ob.view.len < cb.view.len / 2) {
        bad("normalize: bad sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    normalize_tables((const uint32_t *)cb.view.buf, cb.view.len / 1024, pb, (uint16_t *)ob.view.buf);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&cb), rel_buf(&ob);
    return ret;
}

/* table_cost(counts u32[ntab*256], prob_bits) -> (ideal bits under the normalized tables, serialized table bytes)
 * One call per candidate stream for the cost model: normalization, code length and table size together. */
static PyObject *py_table_cost(PyObject *self, PyObject *args) {
    PyObject *co;
    int pb;
    if (!PyArg_ParseTuple(args, "Oi", &co, &pb)) return NULL;
    Buf cb = {0};
    PyObject *ret = NULL;
    if (get_buf(co, &cb, 0, "counts") < 0) goto done;
    if (pb < 8 || pb > 15 || cb.view.len % 1024 != 0) {
        bad("table_cost: bad sizes");
        goto done;
    }
    double bits;
    int64_t tbytes;
    Py_BEGIN_ALLOW_THREADS;
    bits = table_cost((const uint32_t *)cb.view.buf, cb.view.len / 1024, pb, &tbytes);
    Py_END_ALLOW_THREADS;
    ret = Py_BuildValue("(dL)", bits, (long long)tbytes);
done:
    rel_buf(&cb);
    return ret;
}

/* row_costs(counts u32[R*256], prob_bits, bits f64[R], table_bytes i64[R]): table_cost of each row on its own
 * (one call for all the cost model's order-0 candidates). */
static PyObject *py_row_costs(PyObject *self, PyObject *args) {
    PyObject *co, *bo, *to;
    int pb;
    if (!PyArg_ParseTuple(args, "OiOO", &co, &pb, &bo, &to)) return NULL;
    Buf cb = {0}, bb = {0}, tb = {0};
    PyObject *ret = NULL;
    if (get_buf(co, &cb, 0, "counts") < 0 || get_buf(bo, &bb, 1, "bits") < 0 || get_buf(to, &tb, 1, "table_bytes") < 0)
        goto done;
    int64_t rows = cb.view.len / 1024;
    if (pb < 8 || pb > 15 || cb.view.len % 1024 != 0 || !fits(bb.view.len, rows, 8) || !fits(tb.view.len, rows, 8)) {
        bad("row_costs: bad sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    row_costs((const uint32_t *)cb.view.buf, rows, pb, (double *)bb.view.buf, (int64_t *)tb.view.buf);
    Py_END_ALLOW_THREADS;
    ret = Py_NewRef(Py_None);
done:
    rel_buf(&cb), rel_buf(&bb), rel_buf(&tb);
    return ret;
}

/* write_tables(freqs u16[ntab*256]) -> bytes (the inverse of read_tables) */
static PyObject *py_write_tables(PyObject *self, PyObject *args) {
    PyObject *fo;
    if (!PyArg_ParseTuple(args, "O", &fo)) return NULL;
    Buf fb = {0};
    PyObject *ret = NULL;
    uint8_t *buf = NULL;
    if (get_buf(fo, &fb, 0, "freqs") < 0) goto done;
    if (fb.view.len % 512 != 0) {
        bad("write_tables: bad sizes");
        goto done;
    }
    int64_t ntab = fb.view.len / 512;
    buf = (uint8_t *)ss_malloc((size_t)TABLES_MAX_BYTES(ntab) + 1);
    if (!buf) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t len = write_tables((const uint16_t *)fb.view.buf, ntab, buf);
    ret = PyBytes_FromStringAndSize((const char *)buf, len);
done:
    ss_free(buf);
    rel_buf(&fb);
    return ret;
}

/* read_tables(buf, ntables, prob_bits, out u16[ntables*256]) -> bytes consumed, or -1 if malformed.
 * Every non-empty table must sum to 2^prob_bits. */
static PyObject *py_read_tables(PyObject *self, PyObject *args) {
    PyObject *bo, *oo;
    int ntables, pb;
    if (!PyArg_ParseTuple(args, "OiiO", &bo, &ntables, &pb, &oo)) return NULL;
    Buf bb = {0}, ob = {0};
    PyObject *ret = NULL;
    if (get_buf(bo, &bb, 0, "buf") < 0 || get_buf(oo, &ob, 1, "out") < 0) goto done;
    if (ntables < 1 || ntables > MAX_TABLES || pb < 8 || pb > 15 || !fits(ob.view.len, ntables, 512)) {
        bad("read_tables: bad arguments");
        goto done;
    }
    int64_t used = read_tables((const uint8_t *)bb.view.buf, bb.view.len, ntables, pb, (uint16_t *)ob.view.buf);
    ret = PyLong_FromLongLong(used);
done:
    rel_buf(&bb), rel_buf(&ob);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* rANS                                                                                              */

/* rans_encode(sym u8, ctxspec, freqs u16[ntab*256], prob_bits, block_size, block_first, block_last,
 *             out writable, sizes u32[nb]) -> bytes written into out (blocks back to back)
 * out must hold (block_last - block_first) * STATE_BYTES + 2 * symbols in those blocks. */
static PyObject *py_rans_encode(PyObject *self, PyObject *args) {
    PyObject *so, *spec, *fo, *oo, *zo;
    int pb;
    long long block, bf, bl;
    if (!PyArg_ParseTuple(args, "OOOiLLLOO", &so, &spec, &fo, &pb, &block, &bf, &bl, &oo, &zo)) return NULL;
    Buf sb = {0}, fb = {0}, ob = {0}, zb = {0}, gb = {0};
    Ctx c;
    PyObject *ret = NULL;
    if (get_buf(so, &sb, 0, "symbols") < 0 || get_buf(fo, &fb, 0, "freqs") < 0 || get_buf(oo, &ob, 1, "out") < 0 ||
        get_buf(zo, &zb, 1, "sizes") < 0)
        goto done;
    int64_t n = sb.view.len;
    if (parse_ctx(spec, &c, &gb, n) < 0) goto done;
    if (pb < 8 || pb > 15 || block < LANES || block > (1 << 24)) {
        bad("rans_encode: bad arguments");
        goto done;
    }
    int64_t nblocks = (n + block - 1) / block;
    if (bf < 0 || bl > nblocks || bf > bl || !fits(fb.view.len, c.ntables, 512) || !fits(zb.view.len, bl - bf, 4)) {
        bad("rans_encode: bad arguments");
        goto done;
    }
    /* blocks [bf, bl) hold symbols [bf * block, min(bl * block, n)): bl * block <= n + block */
    int64_t first = bf * block, last = min64(bl * block, n), states, need;
    if (!size_mul(bl - bf, STATE_BYTES, &states) || !size_add(states, 2 * (last - first), &need) ||
        ob.view.len < need) {
        bad("rans_encode: output too small");
        goto done;
    }
    int64_t r;
    Py_BEGIN_ALLOW_THREADS;
    r = rans_encode((const uint8_t *)sb.view.buf, n, &c, (const uint16_t *)fb.view.buf, pb, block, bf, bl,
                    (uint8_t *)ob.view.buf, (uint32_t *)zb.view.buf);
    Py_END_ALLOW_THREADS;
    if (r == RANS_ENOMEM)
        PyErr_NoMemory();
    else if (r == RANS_EFREQ)
        bad("rans_encode: frequencies do not sum to 2^prob_bits");
    else if (r == RANS_EMISSING)
        bad("rans_encode: a symbol has zero frequency in its context");
    else
        ret = PyLong_FromLongLong(r);
done:
    rel_buf(&sb), rel_buf(&fb), rel_buf(&ob), rel_buf(&zb), rel_buf(&gb);
    return ret;
}

/* rans_decode(payload, ctxspec, freqs, prob_bits, block_size, n_symbols, block_first, block_last, out, dq)
 *   -> 0 ok | 1 bad block index | 2 corrupted block
 * payload: u32 block sizes, then the blocks. out: u8[n_symbols], or None when dq is given.
 * dq: None, or (x f32[elements], scale f32[C], zero u8[C], channels, inner[, rep, param, bits, elements, q u8[n],
 * escapes, nesc]):
 * the decoded symbols of each block are turned into float32 in x right away (they never leave the cache; out may
 * then be None): as they are (rep DQ_DENSE), as residuals at distance param (DQ_DELTA, every symbol written to q),
 * bit-packed param bits per slot (DQ_PACKED, elements of them), residuals at distance param bit-packed as bits
 * allow (DQ_DELTA_PACKED, elements of them written to q), or their nibble pairs (DQ_DELTA_NIBBLE, all blocks at
 * once, with escapes u8[nesc + 64]). */
static PyObject *py_rans_decode(PyObject *self, PyObject *args) {
    PyObject *po, *spec, *fo, *outo, *dqo;
    int pb;
    long long block, n, bf, bl;
    if (!PyArg_ParseTuple(args, "OOOiLLLLOO", &po, &spec, &fo, &pb, &block, &n, &bf, &bl, &outo, &dqo)) return NULL;
    Buf pbuf = {0}, fb = {0}, outb = {0}, gb = {0}, xb = {0}, sb = {0}, zb = {0}, qb = {0}, eb = {0};
    Ctx c;
    PyObject *ret = NULL;
    long long channels = 1, inner = 1, param = 0, elements = 0, nesc = 0;
    int rep = DQ_DENSE, bits = 8;
    PyObject *qo = Py_None, *eo = Py_None;
    if (get_buf(po, &pbuf, 0, "payload") < 0 || get_buf(fo, &fb, 0, "freqs") < 0) goto done;
    if (outo != Py_None && get_buf(outo, &outb, 1, "out") < 0) goto done;
    if (dqo != Py_None) {
        PyObject *xo, *so, *zo;
        if (!PyArg_ParseTuple(dqo, "OOOLL|iLiLOOL", &xo, &so, &zo, &channels, &inner, &rep, &param, &bits, &elements,
                              &qo, &eo, &nesc))
            goto done;
        if (get_buf(xo, &xb, 1, "x") < 0 || get_buf(so, &sb, 0, "scale") < 0 || get_buf(zo, &zb, 0, "zero") < 0)
            goto done;
        if (qo != Py_None && get_buf(qo, &qb, 1, "q") < 0) goto done;
        if (eo != Py_None && get_buf(eo, &eb, 0, "escapes") < 0) goto done;
    }
    /* n is bounded by the output buffers before anything is computed from it */
    int sizes_ok = n >= 0 && (outb.held ? outb.view.len >= n : xb.held) && bits >= 1 && bits <= 8;
    Dequant dq = {0};
    if (xb.held) {
        /* the representation's rules (rans_decode.c), then the buffers against the elements they give */
        sizes_ok = sizes_ok &&
                   dequant_plan(&dq, rep, param, bits, elements, nesc, qb.held ? (int64_t)qb.view.len : -1,
                                eb.held ? (int64_t)eb.view.len : -1, n, block, bf, bl) == 0 &&
                   fits(xb.view.len, dq.elements, 4) && whole_runs(dq.elements, channels, inner) &&
                   fits(sb.view.len, channels, 4) && fits(zb.view.len, channels, 1);
        dq.x = (float *)xb.view.buf;
        dq.scale = (const float *)sb.view.buf;
        dq.zero = (const uint8_t *)zb.view.buf;
        dq.channels = channels;
        dq.inner = inner;
        dq.q = qb.held ? (uint8_t *)qb.view.buf : NULL;
        dq.esc = eb.held ? (const uint8_t *)eb.view.buf : NULL;
    }
    if (!sizes_ok || pb < 8 || pb > 15 || block < LANES || block > (1 << 24)) {
        bad("rans_decode: bad arguments");
        goto done;
    }
    if (parse_ctx(spec, &c, &gb, n) < 0) goto done;
    int64_t nblocks = (n + block - 1) / block;
    if (bf < 0 || bl > nblocks || bf > bl || !fits(fb.view.len, c.ntables, 512)) {
        bad("rans_decode: bad arguments");
        goto done;
    }
    int r;
    Py_BEGIN_ALLOW_THREADS;
    r = rans_decode((const uint8_t *)pbuf.view.buf, pbuf.view.len, &c, (const uint16_t *)fb.view.buf, pb, block, n,
                    bf, bl, outb.held ? (uint8_t *)outb.view.buf : NULL, xb.held ? &dq : NULL);
    Py_END_ALLOW_THREADS;
    ret = r == RANS_ENOMEM ? PyErr_NoMemory() : PyLong_FromLong(r);
done:
    rel_buf(&pbuf), rel_buf(&fb), rel_buf(&outb), rel_buf(&gb), rel_buf(&xb), rel_buf(&sb), rel_buf(&zb);
    rel_buf(&qb), rel_buf(&eb);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* frame header                                                                                      */

/* frame_header(frame, max_elements) -> (dtype, bits, shape, axis, nq, scale_at, zero_at, kind, param, nnz,
 *   streams), streams a tuple of (coding, prob_bits, block_log2, channels, inner, mult, group_at, nb_dist,
 *   nbuckets, nb_ref, freqs u16 bytes of ntables x 256 | None, payload_at, payload_len); offsets into the frame.
 * A malformed frame raises CodecError with what is wrong (frame.c). */
static PyObject *py_frame_header(PyObject *self, PyObject *args) {
    PyObject *bo;
    long long max_elements;
    if (!PyArg_ParseTuple(args, "OL", &bo, &max_elements)) return NULL;
    Buf bb = {0};
    PyObject *ret = NULL, *shape = NULL, *streams = NULL;
    if (get_buf(bo, &bb, 0, "frame") < 0) goto done;
    FrameHeader h;
    const uint8_t *buf = (const uint8_t *)bb.view.buf;
    int r;
    Py_BEGIN_ALLOW_THREADS;
    r = frame_parse(buf, bb.view.len, max_elements, &h);
    Py_END_ALLOW_THREADS;
    if (r < 0) {
        bad(h.error);
        goto done;
    }
    shape = PyTuple_New(h.ndim);
    streams = PyTuple_New(h.nstreams);
    if (!shape || !streams) goto done;
    for (int d = 0; d < h.ndim; d++) {
        PyObject *v = PyLong_FromUnsignedLong(h.shape[d]);
        if (!v) goto done;
        PyTuple_SET_ITEM(shape, d, v);
    }
    for (int k = 0; k < h.nstreams; k++) {
        const FrameStream *s = &h.streams[k];
        PyObject *freqs = Py_None;
        if (s->coding == 1) {
            freqs = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)s->ntables * 512);
            if (!freqs) goto done;
            read_tables(buf + s->tables_at, bb.view.len - 4 - s->tables_at, s->ntables, s->prob_bits,
                        (uint16_t *)PyBytes_AS_STRING(freqs));
        } else {
            Py_INCREF(freqs);
        }
        PyObject *t = Py_BuildValue("(iiiLLiLLiiNLL)", s->coding, s->prob_bits, s->block_log2, (long long)s->channels,
                                    (long long)s->inner, s->mult, (long long)s->group_at, (long long)s->nb_dist,
                                    s->nbuckets, s->nb_ref, freqs, (long long)s->payload_at, (long long)s->payload_len);
        if (!t) goto done;
        PyTuple_SET_ITEM(streams, k, t);
    }
    ret = Py_BuildValue("(iiOiLLLiiLO)", h.dtype, h.bits, shape, h.axis, (long long)h.nq, (long long)h.scale_at,
                        (long long)h.zero_at, h.kind, h.param, (long long)h.nnz, streams);
done:
    Py_XDECREF(shape);
    Py_XDECREF(streams);
    rel_buf(&bb);
    return ret;
}

/* lean_frame(q u8, dtype, bits, shape, axis (-1: none), scale f32[nq], zero u8[nq], kind, param, prob_bits,
 *            block_log2, streams ((coding, count, top), ...), given u32[256] | None, sample_min, work u8)
 *   -> frame bytes
 * The frame of a configuration whose streams are each order-0 rANS (coding 1) or stored (0), in one call: see
 * frame_write.c. count: 0 all symbols, 1 the given counts (the dense stream), 2 about one chunk in 4 with
 * 0..top kept codable, in a stream of at least sample_min symbols (all counted in a shorter one). work: scratch of LEAN_WORK_BYTES(n) + lean_frame_bound bytes, which the caller reuses
 * (codec/api.py lean_work_bytes). */
static PyObject *py_lean_frame(PyObject *self, PyObject *args) {
    PyObject *qo, *shape, *so, *zo, *streams, *go, *wo;
    LeanFrame f;
    memset(&f, 0, sizeof f);
    long long sample_min;
    if (!PyArg_ParseTuple(args, "OiiO!iOOiiiiO!OLO", &qo, &f.dtype, &f.bits, &PyTuple_Type, &shape, &f.axis, &so,
                          &zo, &f.kind, &f.param, &f.pb, &f.block_log2, &PyTuple_Type, &streams, &go, &sample_min,
                          &wo))
        return NULL;
    Buf qb = {0}, sb = {0}, zb = {0}, gb = {0}, wb = {0};
    PyObject *ret = NULL;
    if (get_buf(qo, &qb, 0, "q") < 0 || get_buf(so, &sb, 0, "scale") < 0 || get_buf(zo, &zb, 0, "zero") < 0 ||
        get_buf(wo, &wb, 1, "work") < 0)
        goto done;
    if (go != Py_None) {
        if (get_buf(go, &gb, 0, "given") < 0) goto done;
        if (gb.view.len < 1024) {
            bad("lean_frame: given counts too small");
            goto done;
        }
        f.given = (const uint32_t *)gb.view.buf;
    }
    f.ndim = (int)PyTuple_GET_SIZE(shape);
    f.nstreams = (int)PyTuple_GET_SIZE(streams);
    if (f.ndim > FRAME_MAX_NDIM || f.nstreams > LEAN_MAX_STREAMS || sb.view.len % 4 || sb.view.len / 4 != zb.view.len ||
        f.axis < -1 || f.axis >= (f.ndim ? f.ndim : 1)) {
        bad("lean_frame: bad arguments");
        goto done;
    }
    f.nq = zb.view.len;
    f.sample_min = sample_min;
    f.scale = (const float *)sb.view.buf;
    f.zero = (const uint8_t *)zb.view.buf;
    for (int d = 0; d < f.ndim; d++) {
        unsigned long long v = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(shape, d));
        if (PyErr_Occurred()) goto done;
        if (v > 0xFFFFFFFFull) {
            bad("lean_frame: a dimension is out of the frame's range");
            goto done;
        }
        f.shape[d] = (uint32_t)v;
    }
    for (int k = 0; k < f.nstreams; k++) {
        LeanStream *ls = &f.s[k];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(streams, k), "iii", &ls->coding, &ls->count, &ls->top)) goto done;
    }
    int64_t n = qb.view.len, cap = lean_frame_bound(n, &f);
    if (cap < 0) {
        bad("lean_frame: not a lean configuration");
        goto done;
    }
    /* coded into the reused scratch (the bound is about twice the frame: a fresh allocation of it would
     * fault in pages the frame never uses), then copied once into bytes of the frame's size */
    if (wb.view.len < LEAN_WORK_BYTES(n) + cap) {
        bad("lean_frame: work buffer too small");
        goto done;
    }
    uint8_t *frame = (uint8_t *)wb.view.buf + LEAN_WORK_BYTES(n);
    int64_t r;
    Py_BEGIN_ALLOW_THREADS;
    r = lean_frame_write((const uint8_t *)qb.view.buf, n, &f, (uint8_t *)wb.view.buf, frame);
    Py_END_ALLOW_THREADS;
    if (r == RANS_ENOMEM)
        PyErr_NoMemory();
    else if (r == RANS_EMISSING)
        bad("rans_encode: a symbol has zero frequency in its context");
    else if (r < 0)
        bad("lean_frame: not a lean configuration");
    else
        ret = PyBytes_FromStringAndSize((const char *)frame, (Py_ssize_t)r);
done:
    rel_buf(&qb), rel_buf(&sb), rel_buf(&zb), rel_buf(&gb), rel_buf(&wb);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* CRC-32 and the SIMD switches                                                                      */

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

/* set_simd(enabled, avx512=enabled) -> previous setting of the first: lets tests compare the vector (AVX2,
 * AVX-512) and scalar paths byte for byte; set_simd(True, False) keeps the AVX2 paths where AVX-512 ones exist. */
static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    int on, wide = -1;
    if (!PyArg_ParseTuple(args, "p|p", &on, &wide)) return NULL;
    return PyBool_FromLong(simd_select(on, wide));
}

static PyMethodDef methods[] = {
    {"crc32", py_crc32, METH_VARARGS, "CRC-32 (zlib's), continued from an optional previous value."},
    {"frame_header", py_frame_header, METH_VARARGS, "Parse and check a frame's header."},
    {"lean_frame", py_lean_frame, METH_VARARGS, "Write the frame of a lean (order-0 or stored) configuration."},
    {"set_clmul", py_set_clmul, METH_VARARGS, "Enable/disable the carry-less-multiply CRC path."},
    {"table_cost", py_table_cost, METH_VARARGS, "Ideal code bits and table bytes of counts."},
    {"write_tables", py_write_tables, METH_VARARGS, "Serialize frequency tables."},
    {"row_costs", py_row_costs, METH_VARARGS, "Ideal code bits and table bytes of each row of counts."},
    {"set_simd", py_set_simd, METH_VARARGS, "Enable/disable the AVX2 (and AVX-512) paths; returns the previous state."},
    {"minmax", py_minmax, METH_VARARGS, "Per-channel min/max (including 0); returns False on NaN/Inf."},
    {"quantize", py_quantize, METH_VARARGS, "Asymmetric per-channel quantization to u8 (+ optional histogram)."},
    {"quantize_tensor", py_quantize_tensor, METH_VARARGS, "Per-tensor quantization from the floats in one call."},
    {"dequantize", py_dequantize, METH_VARARGS, "u8 symbols back to float32."},
    {"context_histogram", py_context_histogram, METH_VARARGS, "Symbol counts per context table."},
    {"histogram", py_histogram, METH_VARARGS, "256-bin symbol histogram."},
    {"transpose_u8", py_transpose_u8, METH_VARARGS, "Batched byte-matrix transpose."},
    {"histogram_sampled", py_histogram_sampled, METH_VARARGS, "Histogram of hash-picked 4 Ki chunks."},
    {"family_histograms", py_family_histograms, METH_VARARGS, "Sampled histograms of packed and residual streams."},
    {"lean_choice", py_lean_choice, METH_VARARGS, "The lean levels' order-0 choice of the cost model."},
    {"clip_choice", py_clip_choice, METH_VARARGS, "Per channel, the clip candidate with the least error."},
    {"channel_histogram", py_channel_histogram, METH_VARARGS, "Symbol counts per channel."},
    {"group_sum", py_group_sum, METH_VARARGS, "Per-group sums of per-channel symbol counts."},
    {"csr_stats", py_csr_stats, METH_VARARGS, "Row-occupancy and gap histograms per candidate row width."},
    {"csr_split", py_csr_split, METH_VARARGS, "Split symbols into CSR counts/gaps/values."},
    {"csr_merge", py_csr_merge, METH_VARARGS, "Merge CSR counts/gaps/values back to symbols."},
    {"delta", py_delta, METH_VARARGS, "Prediction residuals at a distance (or their inverse)."},
    {"nibble_split", py_nibble_split, METH_VARARGS, "Residuals to nibble pairs and escapes."},
    {"nibble_merge", py_nibble_merge, METH_VARARGS, "Nibble pairs and escapes back to residuals."},
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
    ss_set_allocator(PyMem_RawMalloc, PyMem_RawFree);
    runtime_init();
    if (!codec_error) {
        PyObject *errors = PyImport_ImportModule("codec.errors");
        if (!errors) return NULL;
        codec_error = PyObject_GetAttrString(errors, "CodecError");
        Py_DECREF(errors);
        if (!codec_error) return NULL;
    }
    PyObject *m = PyModule_Create(&moduledef);
    if (m && (PyModule_AddIntConstant(m, "AVX2", cpu_has_avx2 > 0) < 0 ||
              PyModule_AddIntConstant(m, "AVX512", cpu_has_avx512 > 0) < 0 ||
              PyModule_AddIntConstant(m, "FRAME_VERSION", FRAME_VERSION) < 0 ||
              PyModule_AddIntConstant(m, "FRAME_MAX_GROUPS", FRAME_MAX_GROUPS) < 0 ||
              PyModule_AddIntConstant(m, "CLMUL", crc32_clmul_active()) < 0))
        Py_CLEAR(m);
    return m;
}
