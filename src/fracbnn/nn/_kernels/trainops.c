/*
 * CPU kernels for training FracBNN layers: fused element-wise passes of the
 * gated (fractional) convolution and the thermometer input layer as a table
 * lookup. The convolutions themselves stay in PyTorch (oneDNN); these kernels
 * replace chains of 10-20 separate PyTorch element-wise ops, each of which
 * reads and writes the whole activation tensor, by one pass each, and pack
 * the two bit planes of the 2-bit code into one tensor M + s L so that one
 * forward convolution yields both plane sums exactly.
 *
 * All tensors are float32 (uint8 for masks and pixels), C-contiguous NCHW,
 * passed as buffers (numpy views of CPU tensors). Python (fracbnn.nn.cpu_ops)
 * checks shapes, types and layout before calling; this file re-checks sizes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define ABI_VERSION 4

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

/* --------------------------------------------------------- kernel instances */

/* Thermometer conv geometry; level_of maps a pixel value to its code's table row (0..L-1). */
typedef struct {
    i64 N, C, H, W, O, K, stride, pad, Ho, Wo, L;
    const uint8_t *level_of;
} thermo_geom;

#define TK_SUFFIX _generic
#include "train_impl.h"
#undef TK_SUFFIX

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define TK_HAVE_AVX2 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif
#define TK_SUFFIX _avx2
#include "train_impl.h"
#undef TK_SUFFIX
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

typedef struct {
    const char *name;
    void (*quantize_pack_range)(const float *, float *, uint8_t *, float, i64, i64);
    void (*unpack_range)(const float *, float *, float *, float, i64, i64);
    i64 (*gate_forward_planes)(const float *, float *, const float *, float, i64, i64, i64, i64);
    void (*gate_backward_planes)(const float *, const float *, const float *, const float *, i64, float, int, float *,
                                 float *, float *, float *, i64, i64, i64, i64);
    void (*mask_range)(float *, const uint8_t *, i64, i64);
    void (*thermo_forward_rows)(const thermo_geom *, const uint8_t *, const float *, float *, float *, i64 *, i64,
                                i64);
    void (*thermo_grad_rows)(const thermo_geom *, const uint8_t *, const float *, float *, float *, i64 *, i64, i64);
} kernel_set;

static const kernel_set KERNELS_GENERIC = {"generic", quantize_pack_range_generic, unpack_range_generic,
                                           gate_forward_planes_generic,
                                           gate_backward_planes_generic, mask_range_generic,
                                           thermo_forward_rows_generic, thermo_grad_rows_generic};
#ifdef TK_HAVE_AVX2
static const kernel_set KERNELS_AVX2 = {"avx2", quantize_pack_range_avx2, unpack_range_avx2, gate_forward_planes_avx2,
                                        gate_backward_planes_avx2, mask_range_avx2, thermo_forward_rows_avx2,
                                        thermo_grad_rows_avx2};
#endif

static int allow_simd = 1; /* set_simd(False) forces the generic instances (tests compare the two) */

static const kernel_set *kernels(void)
{
#ifdef TK_HAVE_AVX2
    static int avx2 = -1;
    if (avx2 < 0) {
        __builtin_cpu_init();
        avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    if (avx2 && allow_simd) return &KERNELS_AVX2;
#endif
    return &KERNELS_GENERIC;
}

/* Element ranges handed to one thread at a time. */
#define CHUNK 16384

/* Runs CALL (which may use i0, i1) over [0, n) in CHUNK-sized ranges on `threads`
 * threads, with the GIL released. */
#define FOR_CHUNKS(n, threads, CALL)                                              \
    do {                                                                          \
        const i64 n_ = (n), nchunks_ = (n_ + CHUNK - 1) / CHUNK;                  \
        Py_BEGIN_ALLOW_THREADS                                                    \
        _Pragma("omp parallel for schedule(static) num_threads(threads)")         \
        for (i64 ch_ = 0; ch_ < nchunks_; ch_++) {                                \
            const i64 i0 = ch_ * CHUNK, i1 = i0 + CHUNK < n_ ? i0 + CHUNK : n_;   \
            CALL;                                                                 \
        }                                                                         \
        Py_END_ALLOW_THREADS                                                      \
    } while (0)

/* ------------------------------------------------- 2-bit input quantization */

/* Packing scale s of P = M + s L: a power of two above 2 * taps, checked by the
 * caller so that |conv(P, w)| <= (s + 1) * taps stays below 2^24 (exact float32). */
static int check_scale(double s)
{
    if (!(s >= 4.0 && s <= 8388608.0)) {
        PyErr_SetString(PyExc_ValueError, "packing scale must be in [4, 2^23]");
        return -1;
    }
    return 0;
}

/* x -> P = M + s L (the two bit planes of the 2-bit code) and the STE window. */
static PyObject *frac_quantize_pack(PyObject *self, PyObject *args)
{
    PyObject *xo, *po, *io;
    i64 n;
    double scale;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOdLi", &xo, &po, &io, &scale, &n, &threads)) return NULL;
    if (check_scale(scale) < 0) return NULL;
    bufset s = {.n = 0};
    const float *x = take(&s, xo, 0, 4, n, "x");
    float *packed = x ? take(&s, po, 1, 4, n, "packed") : NULL;
    uint8_t *inside = packed ? take(&s, io, 1, 1, n, "inside") : NULL;
    if (!inside) { release_all(&s); return NULL; }
    const kernel_set *k = kernels();
    const float sc = (float)scale;
    FOR_CHUNKS(n, threads, k->quantize_pack_range(x, packed, inside, sc, i0, i1));
    release_all(&s);
    Py_RETURN_NONE;
}

/* P -> M, L. */
static PyObject *unpack_planes(PyObject *self, PyObject *args)
{
    PyObject *po, *mo, *lo;
    i64 n;
    double scale;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOdLi", &po, &mo, &lo, &scale, &n, &threads)) return NULL;
    if (check_scale(scale) < 0) return NULL;
    bufset s = {.n = 0};
    const float *packed = take(&s, po, 0, 4, n, "packed");
    float *msb = packed ? take(&s, mo, 1, 4, n, "msb") : NULL;
    float *lsb = msb ? take(&s, lo, 1, 4, n, "lsb") : NULL;
    if (!lsb) { release_all(&s); return NULL; }
    const kernel_set *k = kernels();
    const float sc = (float)scale;
    FOR_CHUNKS(n, threads, k->unpack_range(packed, msb, lsb, sc, i0, i1));
    release_all(&s);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------- precision gate fwd */

/* From S = conv(P, w) = A + s B: out = A (2/3) + [A (2/3) > theta_c] B (1/3).
 * Returns the number of open gates. */
static PyObject *frac_gate_forward(PyObject *self, PyObject *args)
{
    PyObject *so, *oo, *to;
    i64 N, C, HW;
    double scale;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOdLLLi", &so, &oo, &to, &scale, &N, &C, &HW, &threads)) return NULL;
    if (check_scale(scale) < 0) return NULL;
    i64 n = N * C * HW;
    bufset s = {.n = 0};
    const float *S = take(&s, so, 0, 4, n, "conv output");
    float *out = S ? take(&s, oo, 1, 4, n, "out") : NULL;
    const float *theta = out ? take(&s, to, 0, 4, C, "theta") : NULL;
    if (!theta) { release_all(&s); return NULL; }
    const kernel_set *k = kernels();
    const float sc = (float)scale;
    i64 opened = 0;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : opened)
    for (i64 nc = 0; nc < N * C; nc++) opened += k->gate_forward_planes(S, out, theta, sc, C, HW, nc, nc + 1);
    Py_END_ALLOW_THREADS
    release_all(&s);
    return PyLong_FromLongLong(opened);
}

/* ------------------------------------------------------ precision gate bwd */

/* Gradients of out = z + m lsb (see train_impl.h): gA, gB (of conv(M), conv(L)),
 * g_in = gA + gB (input of the one transposed convolution) and per-plane sums of d
 * (-dL/dtheta before the sum over the batch). */
static PyObject *frac_gate_backward(PyObject *self, PyObject *args)
{
    PyObject *go, *so, *to, *lo, *gao, *gbo, *gio, *dto;
    i64 N, C, HW, K;
    double scale;
    int sparse, threads;
    if (!PyArg_ParseTuple(args, "OOOOOOOOdLLLLii", &go, &so, &to, &lo, &gao, &gbo, &gio, &dto, &scale, &N, &C, &HW,
                          &K, &sparse, &threads))
        return NULL;
    if (check_scale(scale) < 0) return NULL;
    i64 n = N * C * HW;
    bufset s = {.n = 0};
    const float *g = take(&s, go, 0, 4, n, "grad");
    const float *S = g ? take(&s, so, 0, 4, n, "conv output") : NULL;
    const float *theta = S ? take(&s, to, 0, 4, C, "theta") : NULL;
    const float *lut = theta ? take(&s, lo, 0, 4, C * (2 * K + 1), "slope table") : NULL;
    float *ga = lut ? take(&s, gao, 1, 4, n, "grad_msb") : NULL;
    float *gb = ga ? take(&s, gbo, 1, 4, n, "grad_lsb") : NULL;
    float *gin = gb ? take(&s, gio, 1, 4, n, "grad_in") : NULL;
    float *dth = gin ? take(&s, dto, 1, 4, N * C, "dtheta") : NULL;
    if (!dth) { release_all(&s); return NULL; }
    const kernel_set *k = kernels();
    const float sc = (float)scale;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) num_threads(threads)
    for (i64 nc = 0; nc < N * C; nc++)
        k->gate_backward_planes(g, S, theta, lut, K, sc, sparse, ga, gb, gin, dth, C, HW, nc, nc + 1);
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
    const kernel_set *k = kernels();
    FOR_CHUNKS(n, threads, k->mask_range(g, m, i0, i1));
    release_all(&s);
    Py_RETURN_NONE;
}

/* ------------------------------------------------ thermometer input layer */

/* A thermometer bit plane of colour c is decided by the pixel value alone, so
 * conv(thermometer(pix), w) at a tap (c, u, v) is a row of a table
 * tab[c, u, v, l, :] holding the dot products of the code of level l with the
 * weights of that tap (l = level_of[pixel], L levels). Zero padding adds nothing.
 *   out[n, o, y, x] = sum_{c,u,v valid} tab[c, u, v, level_of[pix[n, c, y*s+u-pad, x*s+v-pad]], o]
 */
static int parse_geom(PyObject *t, thermo_geom *g)
{
    if (!PyArg_ParseTuple(t, "LLLLLLLLLLL", &g->N, &g->C, &g->H, &g->W, &g->O, &g->K, &g->stride, &g->pad, &g->Ho,
                          &g->Wo, &g->L))
        return -1;
    if (g->O < 1 || g->O > 4096 || g->K < 1 || g->stride < 1 || g->pad < 0 || g->Ho < 1 || g->Wo < 1 || g->L < 1 ||
        g->L > 256) {
        PyErr_SetString(PyExc_ValueError, "thermometer conv: bad geometry");
        return -1;
    }
    return 0;
}

/* level_of must map every byte to a row below L. */
static int check_levels(const uint8_t *level_of, i64 L)
{
    for (int p = 0; p < 256; p++)
        if (level_of[p] >= L) {
            PyErr_Format(PyExc_ValueError, "thermometer conv: level_of[%d] = %d is not below %lld", p, level_of[p], L);
            return -1;
        }
    return 0;
}

typedef struct { float *row; i64 *offs; } thermo_scratch;

static int scratch_alloc(thermo_scratch *sc, const thermo_geom *g)
{
    sc->row = malloc(sizeof(float) * (size_t)(g->Wo * g->O));
    sc->offs = malloc(sizeof(i64) * (size_t)(g->C * g->K * g->K));
    return sc->row && sc->offs ? 0 : -1;
}

static PyObject *thermo_conv_forward(PyObject *self, PyObject *args)
{
    PyObject *po, *lvo, *to, *oo, *go;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOOi", &po, &lvo, &to, &oo, &go, &threads)) return NULL;
    thermo_geom g;
    if (parse_geom(go, &g) < 0) return NULL;
    bufset s = {.n = 0};
    const uint8_t *pix = take(&s, po, 0, 1, g.N * g.C * g.H * g.W, "pixels");
    g.level_of = pix ? take(&s, lvo, 0, 1, 256, "level_of") : NULL;
    const float *tab = g.level_of ? take(&s, to, 0, 4, g.C * g.K * g.K * g.L * g.O, "table") : NULL;
    float *out = tab ? take(&s, oo, 1, 4, g.N * g.O * g.Ho * g.Wo, "out") : NULL;
    if (!out || check_levels(g.level_of, g.L) < 0) { release_all(&s); return NULL; }
    const kernel_set *k = kernels();
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
    {
        thermo_scratch sc;
        int ok = scratch_alloc(&sc, &g) == 0;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (i64 ny = 0; ny < g.N * g.Ho; ny++)
            if (ok) k->thermo_forward_rows(&g, pix, tab, out, sc.row, sc.offs, ny, ny + 1);
        free(sc.row);
        free(sc.offs);
    }
    Py_END_ALLOW_THREADS
    release_all(&s);
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* Gradient of the table: dtab[c, u, v, l, o] = sum of grad[n, o, y, x] over the
 * outputs whose tap (c, u, v) reads a pixel of level l. Each thread fills a
 * private table over a fixed share of the rows; the tables are then summed in
 * thread order (deterministic for a given thread count). */
static PyObject *thermo_conv_table_grad(PyObject *self, PyObject *args)
{
    PyObject *po, *lvo, *gro, *dto, *go;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOOi", &po, &lvo, &gro, &dto, &go, &threads)) return NULL;
    thermo_geom g;
    if (parse_geom(go, &g) < 0) return NULL;
    const i64 tsize = g.C * g.K * g.K * g.L * g.O;
    bufset s = {.n = 0};
    const uint8_t *pix = take(&s, po, 0, 1, g.N * g.C * g.H * g.W, "pixels");
    g.level_of = pix ? take(&s, lvo, 0, 1, 256, "level_of") : NULL;
    const float *grad = g.level_of ? take(&s, gro, 0, 4, g.N * g.O * g.Ho * g.Wo, "grad") : NULL;
    float *dtab = grad ? take(&s, dto, 1, 4, tsize, "table grad") : NULL;
    if (!dtab || check_levels(g.level_of, g.L) < 0) { release_all(&s); return NULL; }
    if (threads < 1) threads = 1;
    float *priv = calloc((size_t)threads * (size_t)tsize, sizeof(float));
    if (!priv) { release_all(&s); return PyErr_NoMemory(); }
    const kernel_set *k = kernels();
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads)
    {
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        thermo_scratch sc;
        int ok = scratch_alloc(&sc, &g) == 0;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        const i64 rows = g.N * g.Ho, per = (rows + nt - 1) / nt;
        const i64 r0 = (i64)tid * per, r1 = r0 + per < rows ? r0 + per : rows;
        if (ok && r0 < r1) k->thermo_grad_rows(&g, pix, grad, priv + (i64)tid * tsize, sc.row, sc.offs, r0, r1);
        free(sc.row);
        free(sc.offs);
#pragma omp barrier
#pragma omp for schedule(static)
        for (i64 i = 0; i < tsize; i++) {
            float acc = 0.0f;
            for (int t = 0; t < nt; t++) acc += priv[(i64)t * tsize + i];
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
    return Py_BuildValue("{s:i,s:i,s:i,s:s}", "abi", ABI_VERSION, "openmp", omp, "max_threads", max_threads,
                         "simd", kernels()->name);
}

static PyObject *set_simd(PyObject *self, PyObject *args)
{
    int flag;
    if (!PyArg_ParseTuple(args, "p", &flag)) return NULL;
    allow_simd = flag;
    return PyUnicode_FromString(kernels()->name);
}

static PyMethodDef methods[] = {
    {"frac_quantize_pack", frac_quantize_pack, METH_VARARGS, "2-bit code as packed planes M + s L, STE window"},
    {"unpack_planes", unpack_planes, METH_VARARGS, "packed planes -> M, L"},
    {"frac_gate_forward", frac_gate_forward, METH_VARARGS, "precision-gated combination of the two convolutions"},
    {"frac_gate_backward", frac_gate_backward, METH_VARARGS, "gradients of the precision-gated combination"},
    {"mask_multiply", mask_multiply, METH_VARARGS, "in-place multiply by a 0/1 uint8 mask"},
    {"thermo_conv_forward", thermo_conv_forward, METH_VARARGS, "thermometer input conv as a table lookup"},
    {"thermo_conv_table_grad", thermo_conv_table_grad, METH_VARARGS, "gradient of the lookup table"},
    {"set_simd", set_simd, METH_VARARGS, "allow (True) or forbid the AVX2 kernel set; returns the set in use"},
    {"info", info, METH_NOARGS, "ABI version, OpenMP availability, kernel set in use"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_trainops", "FracBNN training kernels (CPU)", -1,
                                    methods};

PyMODINIT_FUNC PyInit__trainops(void) { return PyModule_Create(&module); }
