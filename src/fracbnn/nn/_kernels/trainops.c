/*
 * CPU kernels for training FracBNN layers: fused element-wise passes of the
 * gated (fractional) convolution and the thermometer input layer as a table
 * lookup. The convolutions themselves stay in PyTorch (oneDNN); these kernels
 * replace chains of 10-20 separate PyTorch element-wise ops, each of which
 * reads and writes the whole activation tensor, by one pass each.
 *
 * All tensors are float32 (uint8 for masks and pixels), C-contiguous NCHW,
 * passed as buffers (numpy views of CPU tensors). Python (fracbnn.nn.cpu_ops)
 * checks shapes, types and layout before calling; this file re-checks sizes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define ABI_VERSION 1

typedef long long i64;

/* ------------------------------------------------------------------ buffers */

static int get_buf(PyObject *obj, Py_buffer *v, int writable, Py_ssize_t itemsize, i64 count, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, v, flags) < 0) return -1;
    if (v->itemsize != itemsize || v->len != count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %lld items of %zd bytes, got %zd bytes of %zd-byte items",
                     what, count, itemsize, v->len, v->itemsize);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

#define MAXBUF 12
typedef struct { Py_buffer v[MAXBUF]; int n; } bufset;

static void release_all(bufset *s)
{
    for (int i = 0; i < s->n; i++) PyBuffer_Release(&s->v[i]);
    s->n = 0;
}

static void *take(bufset *s, PyObject *obj, int writable, Py_ssize_t itemsize, i64 count, const char *what)
{
    if (s->n >= MAXBUF) { PyErr_SetString(PyExc_RuntimeError, "too many buffers"); return NULL; }
    if (get_buf(obj, &s->v[s->n], writable, itemsize, count, what) < 0) return NULL;
    return s->v[s->n++].buf;
}

/* ------------------------------------------------- 2-bit input quantization */

/* xq = round((clamp(x, -1, 1) + 1) / step) * step - 1 with step = 2/3 (ties to
 * even, float32 arithmetic as in PyTorch, NaN stays NaN); msb = sign(xq) (the
 * levels are never 0); inside = 1 where -1 < x < 1 (the straight-through
 * window). Adding and subtracting 1.5 * 2^23 rounds a float in [0, 2^22) to the
 * nearest integer, ties to even (the default rounding mode), without a libm
 * call per element. The pass is memory-bound, so the division costs nothing. */
static PyObject *frac_quantize(PyObject *self, PyObject *args)
{
    PyObject *xo, *qo, *mo, *io;
    i64 n;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOLi", &xo, &qo, &mo, &io, &n, &threads)) return NULL;
    bufset s = {.n = 0};
    const float *x = take(&s, xo, 0, 4, n, "x");
    float *xq = x ? take(&s, qo, 1, 4, n, "xq") : NULL;
    float *msb = xq ? take(&s, mo, 1, 4, n, "msb") : NULL;
    uint8_t *inside = msb ? take(&s, io, 1, 1, n, "inside") : NULL;
    if (!inside) { release_all(&s); return NULL; }
    const float step = (float)(2.0 / 3.0);
    const float magic = 12582912.0f;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) num_threads(threads)
    for (i64 i = 0; i < n; i++) {
        float v = x[i];
        float c = v < -1.0f ? -1.0f : v;
        c = c > 1.0f ? 1.0f : c;
        float r = (c + 1.0f) / step; /* in [0, 3] */
        float q = ((r + magic) - magic) * step - 1.0f;
        xq[i] = q;
        msb[i] = q >= 0.0f ? 1.0f : -1.0f;
        inside[i] = (uint8_t)((v > -1.0f) & (v < 1.0f));
    }
    Py_END_ALLOW_THREADS
    release_all(&s);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------- precision gate fwd */

/* From the raw convolutions Zr = conv(msb, w) and F = conv(xq, w):
 *   z = Zr * (2/3), m = [z > theta_c], out = z + m * (F - z).
 * F is overwritten with diff = F - z (what backward needs); Zr is kept.
 * Returns the number of open gates. */
static PyObject *frac_gate_forward(PyObject *self, PyObject *args)
{
    PyObject *zo, *fo, *oo, *to;
    i64 N, C, HW;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOLLLi", &zo, &fo, &oo, &to, &N, &C, &HW, &threads)) return NULL;
    i64 n = N * C * HW;
    bufset s = {.n = 0};
    const float *zr = take(&s, zo, 0, 4, n, "z_raw");
    float *f = zr ? take(&s, fo, 1, 4, n, "full") : NULL;
    float *out = f ? take(&s, oo, 1, 4, n, "out") : NULL;
    const float *theta = out ? take(&s, to, 0, 4, C, "theta") : NULL;
    if (!theta) { release_all(&s); return NULL; }
    const float k = (float)(2.0 / 3.0);
    i64 opened = 0;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : opened)
    for (i64 nc = 0; nc < N * C; nc++) {
        const float th = theta[nc % C];
        const float *zp = zr + nc * HW;
        float *fp = f + nc * HW, *op = out + nc * HW;
        i64 cnt = 0;
        for (i64 i = 0; i < HW; i++) {
            float z = zp[i] * k;
            float m = z > th ? 1.0f : 0.0f;
            float d = fp[i] - z;
            fp[i] = d;
            op[i] = z + m * d;
            cnt += z > th;
        }
        opened += cnt;
    }
    Py_END_ALLOW_THREADS
    release_all(&s);
    return PyLong_FromLongLong(opened);
}

/* ------------------------------------------------------ precision gate bwd */

/* With g = dL/dout, z = Zr * (2/3), m = [z > theta], diff = F - z and
 * r = 5 s (1 - s), s = sigmoid(5 (z - theta)) read from a per-channel table
 * indexed by the integer Zr (Zr is a sum of +-1 products, so it is integral):
 *   d = g diff r [m],  g_full = g m,  g_msb = (2/3) (g (1 - m) + d),
 *   g_in = g_msb + g_full (the transposed convolution's input),
 *   dtheta_part[n, c] = sum over the plane of d.
 * Zr values outside the table get r = 0 (cannot happen for valid inputs). */
static PyObject *frac_gate_backward(PyObject *self, PyObject *args)
{
    PyObject *go, *zo, *dfo, *to, *lo, *gio, *gmo, *gfo, *dto;
    i64 N, C, HW, K;
    int sparse, threads;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOLLLLii", &go, &zo, &dfo, &to, &lo, &gio, &gmo, &gfo, &dto, &N, &C, &HW,
                          &K, &sparse, &threads))
        return NULL;
    i64 n = N * C * HW, width = 2 * K + 1;
    bufset s = {.n = 0};
    const float *g = take(&s, go, 0, 4, n, "grad");
    const float *zr = g ? take(&s, zo, 0, 4, n, "z_raw") : NULL;
    const float *diff = zr ? take(&s, dfo, 0, 4, n, "diff") : NULL;
    const float *theta = diff ? take(&s, to, 0, 4, C, "theta") : NULL;
    const float *lut = theta ? take(&s, lo, 0, 4, C * width, "slope table") : NULL;
    float *gin = lut ? take(&s, gio, 1, 4, n, "g_in") : NULL;
    float *gmsb = gin ? take(&s, gmo, 1, 4, n, "g_msb") : NULL;
    float *gfull = gmsb ? take(&s, gfo, 1, 4, n, "g_full") : NULL;
    float *dth = gfull ? take(&s, dto, 1, 4, N * C, "dtheta") : NULL;
    if (!dth) { release_all(&s); return NULL; }
    const float k = (float)(2.0 / 3.0);
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) num_threads(threads)
    for (i64 nc = 0; nc < N * C; nc++) {
        const i64 c = nc % C;
        const float th = theta[c];
        const float *tab = lut + c * width;
        const i64 off = nc * HW;
        double acc = 0.0;
        for (i64 i = 0; i < HW; i++) {
            float zraw = zr[off + i];
            float z = zraw * k;
            float m = z > th ? 1.0f : 0.0f;
            long idx = (long)zraw + (long)K; /* zraw is integral (a sum of +-1 products) */
            float r = (idx >= 0 && idx < width) ? tab[idx] : 0.0f;
            float gv = g[off + i];
            float d = gv * diff[off + i] * r;
            if (sparse) d *= m;
            float gf = gv * m;
            float gm = (gv - gf + d) * k;
            gfull[off + i] = gf;
            gmsb[off + i] = gm;
            gin[off + i] = gm + gf;
            acc += d;
        }
        dth[nc] = (float)acc;
    }
    Py_END_ALLOW_THREADS
    release_all(&s);
    Py_RETURN_NONE;
}

/* g[i] *= mask[i] (the straight-through window of the input quantizer), in place. */
static PyObject *mask_multiply(PyObject *self, PyObject *args)
{
    PyObject *go, *mo;
    i64 n;
    int threads;
    if (!PyArg_ParseTuple(args, "OOLi", &go, &mo, &n, &threads)) return NULL;
    bufset s = {.n = 0};
    float *g = take(&s, go, 1, 4, n, "grad");
    const uint8_t *m = g ? take(&s, mo, 0, 1, n, "mask") : NULL;
    if (!m) { release_all(&s); return NULL; }
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) num_threads(threads)
    for (i64 i = 0; i < n; i++) g[i] = m[i] ? g[i] : 0.0f;
    Py_END_ALLOW_THREADS
    release_all(&s);
    Py_RETURN_NONE;
}

/* ------------------------------------------------ thermometer input layer */

/* A thermometer bit plane of colour c is decided by the pixel value alone, so
 * conv(thermometer(pix), w) at a tap (c, u, v) is a row of a table
 * tab[c, u, v, p, :] (p = 0..255) holding the dot products of the code of p
 * with the weights of that tap. Zero padding contributes nothing.
 *   out[n, o, y, x] = sum_{c,u,v valid} tab[c, u, v, pix[n, c, y*s+u-pad, x*s+v-pad], o]
 */
typedef struct { i64 N, C, H, W, O, K, stride, pad, Ho, Wo; } thermo_geom;

static int parse_geom(PyObject *t, thermo_geom *g)
{
    if (!PyArg_ParseTuple(t, "LLLLLLLLLL", &g->N, &g->C, &g->H, &g->W, &g->O, &g->K, &g->stride, &g->pad, &g->Ho,
                          &g->Wo))
        return -1;
    if (g->O < 1 || g->O > 4096 || g->K < 1 || g->stride < 1 || g->pad < 0) {
        PyErr_SetString(PyExc_ValueError, "thermometer conv: bad geometry");
        return -1;
    }
    return 0;
}

static PyObject *thermo_conv_forward(PyObject *self, PyObject *args)
{
    PyObject *po, *to, *oo, *go;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOi", &po, &to, &oo, &go, &threads)) return NULL;
    thermo_geom g;
    if (parse_geom(go, &g) < 0) return NULL;
    const i64 O = g.O, K = g.K, C = g.C, H = g.H, W = g.W, Ho = g.Ho, Wo = g.Wo;
    bufset s = {.n = 0};
    const uint8_t *pix = take(&s, po, 0, 1, g.N * C * H * W, "pixels");
    const float *tab = pix ? take(&s, to, 0, 4, C * K * K * 256 * O, "table") : NULL;
    float *out = tab ? take(&s, oo, 1, 4, g.N * O * Ho * Wo, "out") : NULL;
    if (!out) { release_all(&s); return NULL; }
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
    {
        float *row = malloc(sizeof(float) * (size_t)(Wo * O));
        if (!row) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (i64 ny = 0; ny < g.N * Ho; ny++) {
            if (!row) continue;
            const i64 nimg = ny / Ho, y = ny % Ho;
            memset(row, 0, sizeof(float) * (size_t)(Wo * O));
            for (i64 c = 0; c < C; c++) {
                const uint8_t *plane = pix + (nimg * C + c) * H * W;
                for (i64 u = 0; u < K; u++) {
                    const i64 iy = y * g.stride + u - g.pad;
                    if (iy < 0 || iy >= H) continue;
                    const uint8_t *prow = plane + iy * W;
                    for (i64 v = 0; v < K; v++) {
                        const float *t = tab + ((c * K + u) * K + v) * 256 * O;
                        for (i64 x = 0; x < Wo; x++) {
                            const i64 ix = x * g.stride + v - g.pad;
                            if (ix < 0 || ix >= W) continue;
                            const float *e = t + (i64)prow[ix] * O;
                            float *r = row + x * O;
                            for (i64 o = 0; o < O; o++) r[o] += e[o];
                        }
                    }
                }
            }
            for (i64 o = 0; o < O; o++) {
                float *dst = out + ((nimg * O + o) * Ho + y) * Wo;
                for (i64 x = 0; x < Wo; x++) dst[x] = row[x * O + o];
            }
        }
        free(row);
    }
    Py_END_ALLOW_THREADS
    release_all(&s);
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* Gradient of the table: dtab[c, u, v, p, o] = sum of grad[n, o, y, x] over the
 * outputs whose tap (c, u, v) reads pixel value p. Each thread fills a private
 * table; they are summed at the end (deterministic for a fixed thread count). */
static PyObject *thermo_conv_table_grad(PyObject *self, PyObject *args)
{
    PyObject *po, *gro, *dto, *go;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOi", &po, &gro, &dto, &go, &threads)) return NULL;
    thermo_geom g;
    if (parse_geom(go, &g) < 0) return NULL;
    const i64 O = g.O, K = g.K, C = g.C, H = g.H, W = g.W, Ho = g.Ho, Wo = g.Wo;
    const i64 tsize = C * K * K * 256 * O;
    bufset s = {.n = 0};
    const uint8_t *pix = take(&s, po, 0, 1, g.N * C * H * W, "pixels");
    const float *grad = pix ? take(&s, gro, 0, 4, g.N * O * Ho * Wo, "grad") : NULL;
    float *dtab = grad ? take(&s, dto, 1, 4, tsize, "table grad") : NULL;
    if (!dtab) { release_all(&s); return NULL; }
    if (threads < 1) threads = 1;
    float *priv = calloc((size_t)threads * (size_t)tsize, sizeof(float));
    if (!priv) { release_all(&s); return PyErr_NoMemory(); }
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *mine = priv + (i64)tid * tsize;
        float *row = malloc(sizeof(float) * (size_t)(Wo * O));
        if (!row) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (i64 ny = 0; ny < g.N * Ho; ny++) {
            if (!row) continue;
            const i64 nimg = ny / Ho, y = ny % Ho;
            for (i64 o = 0; o < O; o++) {
                const float *src = grad + ((nimg * O + o) * Ho + y) * Wo;
                for (i64 x = 0; x < Wo; x++) row[x * O + o] = src[x];
            }
            for (i64 c = 0; c < C; c++) {
                const uint8_t *plane = pix + (nimg * C + c) * H * W;
                for (i64 u = 0; u < K; u++) {
                    const i64 iy = y * g.stride + u - g.pad;
                    if (iy < 0 || iy >= H) continue;
                    const uint8_t *prow = plane + iy * W;
                    for (i64 v = 0; v < K; v++) {
                        float *t = mine + ((c * K + u) * K + v) * 256 * O;
                        for (i64 x = 0; x < Wo; x++) {
                            const i64 ix = x * g.stride + v - g.pad;
                            if (ix < 0 || ix >= W) continue;
                            float *e = t + (i64)prow[ix] * O;
                            const float *r = row + x * O;
                            for (i64 o = 0; o < O; o++) e[o] += r[o];
                        }
                    }
                }
            }
        }
        free(row);
#pragma omp barrier
#pragma omp for schedule(static)
        for (i64 i = 0; i < tsize; i++) {
            float acc = 0.0f;
            for (int t = 0; t < threads; t++) acc += priv[(i64)t * tsize + i];
            dtab[i] = acc;
        }
    }
    Py_END_ALLOW_THREADS
    free(priv);
    release_all(&s);
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *info(PyObject *self, PyObject *noargs)
{
    int omp = 0, max_threads = 1;
#ifdef _OPENMP
    omp = 1;
    max_threads = omp_get_max_threads();
#endif
    return Py_BuildValue("{s:i,s:i,s:i}", "abi", ABI_VERSION, "openmp", omp, "max_threads", max_threads);
}

static PyMethodDef methods[] = {
    {"frac_quantize", frac_quantize, METH_VARARGS, "2-bit quantization, MSB plane and STE window in one pass"},
    {"frac_gate_forward", frac_gate_forward, METH_VARARGS, "precision-gated combination of the two convolutions"},
    {"frac_gate_backward", frac_gate_backward, METH_VARARGS, "gradients of the precision-gated combination"},
    {"mask_multiply", mask_multiply, METH_VARARGS, "in-place multiply by a 0/1 uint8 mask"},
    {"thermo_conv_forward", thermo_conv_forward, METH_VARARGS, "thermometer input conv as a table lookup"},
    {"thermo_conv_table_grad", thermo_conv_table_grad, METH_VARARGS, "gradient of the lookup table"},
    {"info", info, METH_NOARGS, "ABI version and OpenMP availability"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_trainops", "FracBNN training kernels (CPU)", -1,
                                    methods};

PyMODINIT_FUNC PyInit__trainops(void) { return PyModule_Create(&module); }
