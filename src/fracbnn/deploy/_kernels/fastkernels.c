/* fracbnn.deploy._fastkernels: the compiled part of the fast CPU engine.
 *
 * Python (fracbnn/deploy/fast.py) compiles a packed model's op program into a
 * short list of fused steps and hands it here once (make_plan); forward()
 * then runs whole batches without returning to Python:
 *
 *   THERMO   thermometer + binary conv through a partial-sum table + post op
 *   QCONV    quantize a residual buffer into packed bit planes, XNOR-popcount
 *            conv (1 or 2 planes, optional precision gate) + post op
 *   POOLFC   global sum pool + integer linear layer -> logits
 *
 * Post ops are the golden engine's scale_shift and block_post. Activations are
 * kept per image in HWC order: residual buffers as int64, bit planes as
 * 64-bit words per pixel (channel c is bit c % 64 of word c / 64).
 *
 * Only the CPython C API and the buffer protocol are used (no numpy headers),
 * so the extension builds without numpy present at build time.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fracbnn_int.h" /* scalar integer primitives shared with the HLS kernel (src/fracbnn/_csrc) */

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

/* Bump when the plan layout changes; fast.py refuses a stale build. */
#define FB_MAX_CHANNELS 4096
#define FB_ABI_VERSION 5

enum { FB_STEP_THERMO = 1, FB_STEP_QCONV = 2, FB_STEP_POOLFC = 3 };
enum { FB_POST_SCALE_SHIFT = 1, FB_POST_BLOCK = 2 };
/* block_post shortcut: present; the 2x2 window sum of the source; the source's quantize codes first */
enum { FB_SC_ON = 1, FB_SC_POOL = 2, FB_SC_QUANT = 4 };

typedef struct {
    int Cin, H, W, O, Ho, Wo, K, stride, pad;
    int wpp;    /* 64-bit words per pixel of an input bit plane */
    int nK;     /* 64-bit words of one gathered window (K*K*Cin bits) */
    int Hp, Wp; /* plane size with its ring of pad zero pixels */
    /* border classes: output pixel (y, x) has class row_cls[y] * ncc + col_cls[x]; per class the
     * number of valid window bits and, per output channel, the weight ones on padded taps */
    int ncc;
    const int32_t *row_cls, *col_cls, *corr, *nvalid;
} fb_conv_geom;

typedef struct {
    int kind;
    fb_conv_geom g;
    int src_slot, dst_slot, sc_slot;
    int qbits, frac_bits; /* QCONV input quantizer: 1 = sign, 2 = Q2 */
    int post, shift, bits;
    int sc_mode, sc_C, sc_W;       /* shortcut flags (FB_SC_*); source residual's channels and width: channel
                                    * c of the output reads c mod sc_C (channel duplication when sc_C < O) */
    int sc_qbits, sc_qfrac;        /* FB_SC_QUANT: k and F of the quantize op giving the shortcut codes */
    int levels, img_C;             /* THERMO: table rows per tap, image channels */
    int ncls;                      /* POOLFC */
    int gate_index;                /* QCONV: index into the gate counters, -1 none */
    int sparse_lsb;                /* QCONV: skip the LSB pass where the gate is closed */
    int post32;                    /* block_post: sign, sc_mul and shortcut values fit in int32 */
    int16_t *w16, *kc16, *g16;     /* 3 x 3 conv of 16 input channels, O % 16 == 0 (taps16_tables, owned):
                                    * weights per 16 output channels and tap, n_valid + 2 corr per border class
                                    * and channel, gate thresholds clamped to int16 (gated) */
    uint32_t *w32;                 /* the same for 32 input channels, O % 8 == 0 (taps32_tables, owned) */
    int32_t *kc32;
    int64_t *fold;                 /* post32 block_post with the sign folded into the threshold (owned, 5 x O,
                                    * fold_branches): t, then mul and add taken when a > t, then when not */
    int q32;                       /* QCONV: the residuals it quantizes, 3 x them and +-2^(frac_bits+1) fit in int32 */
    int sc_q32;                    /* FB_SC_QUANT: the shortcut's residuals are |r| <= 2^29 and sc_qfrac <= 30 */
    int32_t *gate32;               /* gate thresholds clamped to int32 (owned by the plan), or NULL */
    int64_t *split;                /* owned storage of the split multipliers below, or NULL */
    const int64_t *mul31, *pm31, *nm31; /* mul / pos_mul / neg_mul as (m mod 2^31) | (m >> 31) << 32, or NULL */
    int m32, mshift;                /* m32: the same arrays hold m >> mshift instead, an int32 (every multiplier is
                                     * a multiple of 2^mshift, as the exporter's coefficient grid makes them) */
    const uint64_t *wbits;
    const uint64_t *wbits_t; /* same, 4 output channels interleaved (O % 4 == 0), or NULL */
    const int64_t *gate;
    const int64_t *mul, *add;
    const int64_t *sign, *thr, *pos_mul, *pos_add, *neg_mul, *neg_add, *sc_mul;
    const int32_t *lut;
    int16_t *lut16;                /* THERMO: lut as int16 when every output's sum fits (owned), or NULL */
    const int32_t *level_of;
    const int64_t *fc_w, *fc_b;
} fb_step;

typedef struct {
    uint64_t *xm, *xl;
    int32_t *sm, *sl;
    int *idx;        /* output channels whose gate is open */
    int32_t *rowacc; /* one output row of accumulators, Wo x O */
    int64_t *scrow;  /* one row of the (pooled) shortcut, Wo x O */
    int32_t *taprow; /* THERMO with the int16 table: table offsets of a row's K input rows, K x img_C x W */
    int64_t *nsat;   /* the running step's count of values clipped by its post op, or NULL: not counting */
} fb_scratch;

typedef struct {
    int nsteps, nslots, nbufs, max_O, max_nK, max_wpp_pixels, ncls, n_gates, max_row, max_taprow;
    int in_C, in_H, in_W;
    size_t slot_elems;
    fb_step *steps;
    Py_buffer *bufs;
    struct fb_work_ *cache; /* image buffers kept between calls (see works_take) */
    int ncache, cache_busy;
} fb_plan;

/* ---- per-target kernel instances --------------------------------------- */

#define FB_SUFFIX _generic
#include "fast_impl.h"
#undef FB_SUFFIX

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define FB_HAVE_AVX2 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("popcnt,avx2,bmi,bmi2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("popcnt,avx2,bmi,bmi2")
#endif
#define FB_SUFFIX _avx2
#define FB_USE_AVX2 1
#include "fast_impl.h"
#undef FB_USE_AVX2
#undef FB_SUFFIX
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

typedef struct {
    const char *name;
    void (*binconv_rows)(const fb_conv_geom *, const uint64_t *, const uint64_t *, int32_t *, int, int, fb_scratch *);
    void (*quantize_rows)(const fb_step *, const int64_t *, uint64_t *, uint64_t *, int, int);
    void (*qconv_rows)(const fb_step *, const uint64_t *, const uint64_t *, const int64_t *, int64_t *, int, int,
                       fb_scratch *, int64_t *);
    void (*thermo_rows)(const fb_step *, const uint8_t *, int64_t *, int, int, fb_scratch *);
    void (*pool_linear)(const fb_step *, const int64_t *, int64_t *, int64_t *);
    unsigned long long (*popcount_loop)(const uint64_t *, size_t, long long, int);
    unsigned long long (*popcount_loop_vec)(const uint64_t *, size_t, long long, int); /* NULL: none */
} fb_kernels;

static const fb_kernels KERNELS_GENERIC = {"generic", binconv_rows_generic, quantize_rows_generic,
                                           qconv_rows_generic, thermo_rows_generic, pool_linear_generic,
                                           popcount_loop_generic, NULL};
#ifdef FB_HAVE_AVX2
static const fb_kernels KERNELS_AVX2 = {"avx2+popcnt", binconv_rows_avx2, quantize_rows_avx2, qconv_rows_avx2,
                                        thermo_rows_avx2, pool_linear_avx2, popcount_loop_avx2,
                                        popcount_loop_vec_avx2};
#endif

static const fb_kernels *select_kernels(int allow_simd)
{
#ifdef FB_HAVE_AVX2
    if (allow_simd) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi2"))
            return &KERNELS_AVX2;
    }
#else
    (void)allow_simd;
#endif
    return &KERNELS_GENERIC;
}

/* ---- threads ------------------------------------------------------------ */

static int default_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int resolve_threads(int requested) { return requested > 0 ? requested : default_threads(); }

/* ---- scratch ------------------------------------------------------------ */

static int scratch_alloc(fb_scratch *s, int max_nK, int max_O, int max_row, int max_taprow)
{
    s->nsat = NULL;
    s->taprow = calloc((size_t)max_taprow + 1, sizeof(int32_t));
    s->rowacc = calloc((size_t)max_row + 1, sizeof(int32_t));
    s->idx = calloc((size_t)max_O + 1, sizeof(int));
    s->scrow = calloc((size_t)max_row + 1, sizeof(int64_t));
    size_t nw = (size_t)max_nK + 2;
    s->xm = calloc(nw, sizeof(uint64_t));
    s->xl = calloc(nw, sizeof(uint64_t));
    s->sm = calloc((size_t)max_O + 1, sizeof(int32_t));
    s->sl = calloc((size_t)max_O + 1, sizeof(int32_t));
    return s->xm && s->xl && s->sm && s->sl && s->rowacc && s->scrow && s->idx && s->taprow;
}

static void scratch_free(fb_scratch *s)
{
    free(s->xm); free(s->xl); free(s->sm); free(s->sl);
    free(s->rowacc); free(s->scrow); free(s->idx); free(s->taprow);
}

/* One image in flight: residual slots, the two bit planes and pool scratch. */
typedef struct fb_work_ {
    int64_t *slots;
    uint64_t *pm, *pl;
    int64_t *pooled;
} fb_work;

static int work_alloc(fb_work *w, const fb_plan *pl)
{
    w->slots = malloc((size_t)pl->nslots * pl->slot_elems * sizeof(int64_t) + 64);
    w->pm = calloc((size_t)pl->max_wpp_pixels + 1, sizeof(uint64_t));
    w->pl = calloc((size_t)pl->max_wpp_pixels + 1, sizeof(uint64_t));
    w->pooled = calloc((size_t)pl->slot_elems + 1, sizeof(int64_t));
    return w->slots && w->pm && w->pl && w->pooled;
}

static void work_free(fb_work *w) { free(w->slots); free(w->pm); free(w->pl); free(w->pooled); }

/* The plan's image buffers, kept between calls: at 224 x 224 they are tens of MB, and fresh pages
 * from the OS (zeroed by the kernel) cost as much as the smaller layers. Taken and given back while
 * holding the GIL, so two Python threads running one plan at once never share them: the second
 * gets buffers of its own for that call. No kernel relies on their contents being zero. */
static fb_work *works_take(fb_plan *pl, int n, int *owned)
{
    fb_work *w;
    if (!pl->cache_busy) {
        if (pl->ncache < n) {
            w = realloc(pl->cache, (size_t)n * sizeof(fb_work));
            if (!w) return NULL;
            pl->cache = w;
            for (; pl->ncache < n; pl->ncache++)
                if (!work_alloc(&w[pl->ncache], pl)) { work_free(&w[pl->ncache]); return NULL; }
        }
        pl->cache_busy = 1;
        *owned = 0;
        return pl->cache;
    }
    w = calloc((size_t)n, sizeof(fb_work));
    if (!w) return NULL;
    int ok = 1;
    for (int i = 0; i < n; i++) ok &= work_alloc(&w[i], pl);
    if (!ok) {
        for (int i = 0; i < n; i++) work_free(&w[i]);
        free(w);
        return NULL;
    }
    *owned = 1;
    return w;
}

static void works_give(fb_plan *pl, fb_work *w, int n, int owned)
{
    if (!w) return;
    if (!owned) { pl->cache_busy = 0; return; }
    for (int i = 0; i < n; i++) work_free(&w[i]);
    free(w);
}

static inline int64_t *slot(const fb_plan *pl, fb_work *w, int i) { return w->slots + (size_t)i * pl->slot_elems; }

/* ---- running a plan ----------------------------------------------------- */

/* ---- sharing one image among threads ------------------------------------
 * With few images, the threads share every layer. Instead of a barrier per
 * layer (which, when other processes compete for the cores, waits for a
 * descheduled thread's whole time slice), each layer is a "phase" whose rows
 * are claimed one at a time from an atomic counter; a thread starts a phase
 * once every row of the previous phase is *done*. A thread that is not
 * running holds no row, so nobody waits for it; only a row in progress can
 * delay the others. Phases follow each other in program order, so every read
 * of a buffer finishes before the buffer is written again (as with barriers).
 */
#if defined(__GNUC__) || defined(__clang__)
#define FB_HAVE_PHASES 1
#if defined(__unix__) || defined(__APPLE__)
#include <sched.h>
#define FB_YIELD() sched_yield()
#else
#define FB_YIELD() ((void)0)
#endif
#if defined(__x86_64__) || defined(__i386__)
#define FB_PAUSE() __builtin_ia32_pause()
#else
#define FB_PAUSE() ((void)0)
#endif

typedef struct {
    int *claim, *done, *total; /* per phase of the whole batch */
} fb_sync;

static void phase_wait(const fb_sync *y, int ph)
{
    if (ph == 0) return;
    int spins = 0;
    while (__atomic_load_n(&y->done[ph - 1], __ATOMIC_ACQUIRE) < y->total[ph - 1]) {
        if (++spins > 4000) FB_YIELD(); /* let a preempted row holder run */
        else FB_PAUSE();
    }
}

/* for each unit r of phase ph claimed by this thread: BODY */
#define FB_PHASE(y, ph, BODY)                                                           \
    do {                                                                                \
        phase_wait(y, ph);                                                              \
        for (int r_; (r_ = __atomic_fetch_add(&(y)->claim[ph], 1, __ATOMIC_RELAXED)) < (y)->total[ph];) { \
            BODY;                                                                       \
            __atomic_fetch_add(&(y)->done[ph], 1, __ATOMIC_RELEASE);                    \
        }                                                                               \
        (ph)++;                                                                         \
    } while (0)

/* phases of one image: THERMO rows; QCONV plane rows then output rows; POOLFC one unit */
static int phases_per_image(const fb_plan *pl) {
    int n = 0;
    for (int i = 0; i < pl->nsteps; i++) n += pl->steps[i].kind == FB_STEP_QCONV ? 2 : 1;
    return n;
}

static void phase_totals(const fb_plan *pl, int *total)
{
    int k = 0;
    for (int i = 0; i < pl->nsteps; i++) {
        const fb_step *st = &pl->steps[i];
        if (st->kind == FB_STEP_THERMO) total[k++] = st->g.Ho;
        else if (st->kind == FB_STEP_QCONV) { total[k++] = st->g.Hp; total[k++] = st->g.Ho; }
        else total[k++] = 1;
    }
}
#endif

/* Run image ``img`` through all steps. With ``y`` (threads sharing the image,
 * phases from ``ph0``) every thread of the team calls this; otherwise the
 * calling thread does everything. */
static void run_image(const fb_plan *pl, const fb_kernels *kr, fb_work *w, fb_scratch *s, const uint8_t *img,
                      int64_t *logits, int64_t *gates, int64_t *sat, void *sync, int ph0)
{
    int ph = ph0;
    (void)ph;
#ifdef FB_HAVE_PHASES
    const fb_sync *y = sync;
#else
    (void)sync;
#endif
    for (int i = 0; i < pl->nsteps; i++) {
        const fb_step *st = &pl->steps[i];
        int64_t clipped = 0; /* this thread's share of the step's saturation count */
        s->nsat = sat ? &clipped : NULL;
        do { /* one step; a `continue` below ends the step (it leaves this do-while) */
        const fb_conv_geom *g = &st->g;
        if (st->kind == FB_STEP_THERMO) {
            int64_t *dst = slot(pl, w, st->dst_slot);
#ifdef FB_HAVE_PHASES
            if (y) { FB_PHASE(y, ph, kr->thermo_rows(st, img, dst, r_, r_ + 1, s)); continue; }
#endif
            kr->thermo_rows(st, img, dst, 0, g->Ho, s);
        } else if (st->kind == FB_STEP_QCONV) {
            const int64_t *src = slot(pl, w, st->src_slot);
            const int64_t *sc = st->sc_mode ? slot(pl, w, st->sc_slot) : NULL;
            int64_t *dst = slot(pl, w, st->dst_slot);
            int64_t opened = 0;
            int64_t *gp = (gates && st->gate_index >= 0) ? &opened : NULL;
#ifdef FB_HAVE_PHASES
            if (y) {
                FB_PHASE(y, ph, kr->quantize_rows(st, src, w->pm, w->pl, r_, r_ + 1));
                FB_PHASE(y, ph, kr->qconv_rows(st, w->pm, w->pl, sc, dst, r_, r_ + 1, s, gp));
            } else
#endif
            {
                kr->quantize_rows(st, src, w->pm, w->pl, 0, g->Hp);
                kr->qconv_rows(st, w->pm, w->pl, sc, dst, 0, g->Ho, s, gp);
            }
            if (gp) {
#ifdef _OPENMP
#pragma omp atomic
#endif
                gates[st->gate_index] += opened;
            }
        } else if (st->kind == FB_STEP_POOLFC) {
            const int64_t *src = slot(pl, w, st->src_slot);
#ifdef FB_HAVE_PHASES
            if (y) { FB_PHASE(y, ph, kr->pool_linear(st, src, logits, w->pooled)); continue; }
#endif
            kr->pool_linear(st, src, logits, w->pooled);
        }
        } while (0);
        if (sat && clipped) {
#ifdef _OPENMP
#pragma omp atomic
#endif
            sat[i] += clipped;
        }
    }
    s->nsat = NULL;
}

/* ---- plan capsule ------------------------------------------------------- */

static const char *PLAN_CAPSULE = "fracbnn.fastkernels.plan";

static void plan_free(fb_plan *pl)
{
    if (!pl) return;
    if (pl->bufs) {
        for (int i = 0; i < pl->nbufs; i++)
            if (pl->bufs[i].obj) PyBuffer_Release(&pl->bufs[i]);
        free(pl->bufs);
    }
    if (pl->steps)
        for (int i = 0; i < pl->nsteps; i++) { free(pl->steps[i].gate32); free(pl->steps[i].split); free(pl->steps[i].lut16);
            free(pl->steps[i].fold); free(pl->steps[i].w16); free(pl->steps[i].kc16); free(pl->steps[i].g16);
            free(pl->steps[i].w32); free(pl->steps[i].kc32);
        }
    free(pl->steps);
    for (int i = 0; i < pl->ncache; i++) work_free(&pl->cache[i]);
    free(pl->cache);
    free(pl);
}

static void plan_capsule_destructor(PyObject *cap)
{
    plan_free((fb_plan *)PyCapsule_GetPointer(cap, PLAN_CAPSULE));
}

static int fits_i32(const int64_t *a, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i] < INT32_MIN || a[i] > INT32_MAX) return 0;
    return 1;
}

/* The thermometer table as int16 for the AVX2 table layer (16 output channels per 256-bit add, and half
 * the table in cache: 3 x 9 x 33 x 16 entries are 57 KB as int32, more than L1): only when O is 16 or 32
 * and no partial sum can leave int16 (each entry is a sum of `bits` +-1 terms; an output adds one entry
 * per colour and tap, so the sum of the per-(colour, tap) maxima bounds every partial sum). */
static int thermo_table16(fb_step *st)
{
    const int O = st->g.O, per_tap = st->levels * O, taps = st->img_C * st->g.K * st->g.K;
    st->lut16 = NULL;
    if (st->kind != FB_STEP_THERMO || (O != 16 && O != 32)) return 0;
    int64_t bound = 0;
    for (int t = 0; t < taps; t++) {
        int64_t m = 0;
        for (int i = 0; i < per_tap; i++) {
            const int64_t v = st->lut[(size_t)t * per_tap + i];
            m = v > m ? v : (-v > m ? -v : m);
        }
        bound += m;
    }
    if (bound > INT16_MAX) return 0;
    st->lut16 = malloc((size_t)taps * per_tap * sizeof(int16_t));
    if (!st->lut16) return -1;
    for (size_t i = 0; i < (size_t)taps * per_tap; i++) st->lut16[i] = (int16_t)st->lut[i];
    return 0;
}

/* floor(x / y) for y > 0, |x| <= 2^62 */
static int64_t floor_div(int64_t x, int64_t y) { return x >= 0 ? x / y : -((-x + y - 1) / y); }

/* post32 block_post: pos = sign a > threshold as one compare of a itself, a > t, with the branches
 * swapped where sign < 0. Exact because sign a is an exact int64 product here (both int32) and a is an
 * integer: for s > 0, s a > thr <=> a > floor(thr / s); for s < 0, s a > thr <=> a < -thr / |s| <=>
 * NOT a > ceil(-thr / |s|) - 1 = -floor(thr / |s|) - 1; for s = 0 the test is the constant 0 > thr
 * (t = 2^62, never exceeded, and the other branch is the one that constant picks). thr is first
 * clamped to +-2^62, beyond |s a|, which changes no comparison. Saves a multiply per vector. */
static int fold_branches(fb_step *st)
{
    const int O = st->g.O;
    st->fold = NULL;
    if (!st->post32) return 0;
    st->fold = malloc((size_t)5 * O * sizeof(int64_t));
    if (!st->fold) return -1;
    const int64_t *pm = st->pm31 ? st->pm31 : st->pos_mul, *nm = st->nm31 ? st->nm31 : st->neg_mul;
    const int64_t lim = (int64_t)1 << 62;
    int64_t *t = st->fold, *gm = t + O, *ga = t + 2 * O, *lm = t + 3 * O, *la = t + 4 * O;
    for (int o = 0; o < O; o++) {
        const int64_t s = st->sign[o], thr = st->thr[o] < -lim ? -lim : (st->thr[o] > lim ? lim : st->thr[o]);
        int gt_is_pos; /* which branch a > t selects */
        if (s > 0) { t[o] = floor_div(thr, s); gt_is_pos = 1; }
        else if (s < 0) { t[o] = -floor_div(thr, -s) - 1; gt_is_pos = 0; }
        else { t[o] = lim; gt_is_pos = !(0 > thr); }
        gm[o] = gt_is_pos ? pm[o] : nm[o];
        ga[o] = gt_is_pos ? st->pos_add[o] : st->neg_add[o];
        lm[o] = gt_is_pos ? nm[o] : pm[o];
        la[o] = gt_is_pos ? st->neg_add[o] : st->pos_add[o];
    }
    return 0;
}

/* Border classes of a conv's output pixels (row class x column class): the tap-wise kernels keep one
 * n_valid + 2 corr entry per class and channel. */
static int border_classes(const fb_conv_geom *g)
{
    int nrc = 0;
    for (int y = 0; y < g->Ho; y++) nrc = g->row_cls[y] + 1 > nrc ? g->row_cls[y] + 1 : nrc;
    return nrc * g->ncc;
}

/* Tables of the tap-wise kernel for 3 x 3 convs over 16 input channels (taps16_row), O % 16 == 0:
 * w16[(ob / 16) * 9 + t][o % 16] = the 16 weight bits of tap t (bits 16 t .. 16 t + 15 of the packed
 * window) of output channel o; kc16 = n_valid + 2 corr per border class and channel (|.| <= 3 * 144);
 * g16 = the gate thresholds clamped to int16, which decides S > t alike for every |S| <= 144. */
static int taps16_tables(fb_step *st)
{
    const fb_conv_geom *g = &st->g;
    st->w16 = st->kc16 = st->g16 = NULL;
    if (st->kind != FB_STEP_QCONV || g->K != 3 || g->Cin != 16 || g->O % 16 != 0 || !st->wbits_t) return 0;
    const int O = g->O, ncls = border_classes(g);
    st->w16 = malloc((size_t)9 * O * sizeof(int16_t));
    st->kc16 = malloc((size_t)ncls * O * sizeof(int16_t));
    st->g16 = st->gate ? malloc((size_t)O * sizeof(int16_t)) : NULL;
    if (!st->w16 || !st->kc16 || (st->gate && !st->g16)) return -1;
    for (int o = 0; o < O; o++) {
        for (int t = 0; t < 9; t++) {
            const uint64_t word = st->wbits[(size_t)o * g->nK + (16 * t) / 64];
            st->w16[((size_t)(o / 16) * 9 + t) * 16 + o % 16] = (int16_t)(uint16_t)(word >> ((16 * t) % 64));
        }
        for (int c = 0; c < ncls; c++)
            st->kc16[(size_t)c * O + o] = (int16_t)(g->nvalid[c] + 2 * g->corr[(size_t)c * O + o]);
        if (st->gate)
            st->g16[o] = (int16_t)(st->gate[o] < INT16_MIN ? INT16_MIN : (st->gate[o] > INT16_MAX ? INT16_MAX : st->gate[o]));
    }
    return 0;
}

/* Tables of the tap-wise kernel for 3 x 3 convs over 32 input channels (taps32_row), O % 8 == 0:
 * w32[(ob / 8) * 9 + t][o % 8] = the 32 weight bits of tap t of output channel o; kc32 = n_valid + 2 corr
 * per border class and channel. The gate uses gate32. */
static int taps32_tables(fb_step *st)
{
    const fb_conv_geom *g = &st->g;
    st->w32 = NULL;
    st->kc32 = NULL;
    if (st->kind != FB_STEP_QCONV || g->K != 3 || g->Cin != 32 || g->O % 8 != 0 || !st->wbits_t) return 0;
    const int O = g->O, ncls = border_classes(g);
    st->w32 = malloc((size_t)9 * O * sizeof(uint32_t));
    st->kc32 = malloc((size_t)ncls * O * sizeof(int32_t));
    if (!st->w32 || !st->kc32) return -1;
    for (int o = 0; o < O; o++) {
        for (int t = 0; t < 9; t++) {
            const uint64_t word = st->wbits[(size_t)o * g->nK + (32 * t) / 64];
            st->w32[((size_t)(o / 8) * 9 + t) * 8 + o % 8] = (uint32_t)(word >> ((32 * t) % 64));
        }
        for (int c = 0; c < ncls; c++) st->kc32[(size_t)c * O + o] = g->nvalid[c] + 2 * g->corr[(size_t)c * O + o];
    }
    return 0;
}

/* Facts the kernels' fast paths need, derived once per plan (they change no result):
 * post32 (block_post) when sign and sc_mul are in int32 range and every post op of the plan
 * saturates to at most 30 bits, so a shortcut value, or the sum of 4 (avgpool2_dup), fits in
 * int32 too: sign * acc and sc_mul * shortcut are then exact signed 32x32->64 products (the
 * same low 64 bits as the int64 wrap); accumulators are int32 (|S| <= window bits). gate32: the int64 thresholds clamped to int32, which decides S > t alike
 * for every S of the conv (|S| <= K*K*Cin < 2^31 - 1). q32 (QCONV): the slot it quantizes was last written
 * by a post op saturating to at most 30 bits (|r| <= 2^29, so 3 r fits in int32) and 2^(frac_bits+1) fits in
 * int32: the quantizer's compares are then exact on the low 32 bits of each residual. */
static int derive_fast_paths(fb_plan *pl)
{
    int small = 1;
    for (int i = 0; i < pl->nsteps; i++)
        if (pl->steps[i].kind != FB_STEP_POOLFC && pl->steps[i].bits > 30) small = 0;
    /* bits of the post op that last wrote each slot (0: none yet) */
    int *slot_bits = calloc((size_t)pl->nslots + 1, sizeof(int));
    if (!slot_bits) return -1;
    for (int i = 0; i < pl->nsteps; i++) {
        fb_step *st = &pl->steps[i];
        st->q32 = 0;
        if (st->kind == FB_STEP_QCONV && st->src_slot >= 0 && st->src_slot < pl->nslots) {
            const int sb = slot_bits[st->src_slot];
            st->q32 = sb >= 2 && sb <= 30 && st->frac_bits + 1 <= 29;
        }
        st->sc_q32 = 0;
        if (st->kind == FB_STEP_QCONV && (st->sc_mode & FB_SC_QUANT) && st->sc_slot >= 0 && st->sc_slot < pl->nslots) {
            const int sb = slot_bits[st->sc_slot];
            st->sc_q32 = sb >= 2 && sb <= 30 && st->sc_qfrac <= 30;
        }
        if (st->kind != FB_STEP_POOLFC && st->dst_slot >= 0 && st->dst_slot < pl->nslots) slot_bits[st->dst_slot] = st->bits;
    }
    free(slot_bits);
    for (int i = 0; i < pl->nsteps; i++) {
        fb_step *st = &pl->steps[i];
        const int O = st->g.O;
        st->post32 = 0;
        if (st->kind == FB_STEP_POOLFC) continue;
        if (thermo_table16(st) < 0 || taps16_tables(st) < 0 || taps32_tables(st) < 0) return -1;
        if (st->post == FB_POST_BLOCK) st->post32 = small && fits_i32(st->sign, O) && fits_i32(st->sc_mul, O);
        if (st->kind == FB_STEP_QCONV && st->gate) {
            st->gate32 = malloc((size_t)O * sizeof(int32_t));
            if (!st->gate32) return -1;
            for (int o = 0; o < O; o++)
                st->gate32[o] = st->gate[o] < INT32_MIN ? INT32_MIN : (st->gate[o] > INT32_MAX ? INT32_MAX : (int32_t)st->gate[o]);
        }
        /* multipliers in [-2^62, 2^62): m = (m >> 31) 2^31 + (m mod 2^31), both parts int32, so m * a
         * (a int32) is two exact signed 32x32->64 products, the high one shifted (mod 2^64 like numpy) */
        const int64_t *src[2] = {NULL, NULL};
        if (st->post == FB_POST_SCALE_SHIFT) src[0] = st->mul;
        else if (st->post == FB_POST_BLOCK) { src[0] = st->pos_mul; src[1] = st->neg_mul; }
        int ok = src[0] != NULL;
        for (int k = 0; k < 2 && ok; k++)
            for (int o = 0; src[k] && o < O; o++) ok = ok && src[k][o] >= -((int64_t)1 << 62) && src[k][o] < ((int64_t)1 << 62);
        /* the multipliers' common trailing zero bits: when m >> sh fits int32 for all of them, m a is one signed
         * 32x32->64 product shifted left by sh (exact mod 2^64: (m >> sh) a 2^sh = m a) */
        int sh = 0;
        if (ok) {
            uint64_t any = 0;
            for (int k = 0; k < 2; k++)
                for (int o = 0; src[k] && o < O; o++) any |= (uint64_t)src[k][o];
            while (sh < 62 && any && !(any & ((uint64_t)1 << sh))) sh++;
        }
        int fits32 = ok;
        for (int k = 0; k < 2 && fits32; k++)
            for (int o = 0; src[k] && o < O; o++) {
                const int64_t v = src[k][o] >> sh;
                fits32 = fits32 && v >= INT32_MIN && v <= INT32_MAX;
            }
        st->m32 = fits32;
        st->mshift = fits32 ? sh : 0;
        if (ok) {
            st->split = malloc((size_t)2 * O * sizeof(int64_t));
            if (!st->split) return -1;
            for (int k = 0; k < 2 && src[k]; k++)
                for (int o = 0; o < O; o++) {
                    const int64_t m = src[k][o];
                    st->split[(size_t)k * O + o] = fits32 ? (m >> sh)
                        : (int64_t)(((uint64_t)m & 0x7fffffffu) | ((uint64_t)(uint32_t)(int32_t)(m >> 31) << 32));
                }
            if (st->post == FB_POST_SCALE_SHIFT) st->mul31 = st->split;
            else { st->pm31 = st->split; st->nm31 = st->split + O; }
        }
        if (st->post == FB_POST_BLOCK && fold_branches(st) < 0) return -1;
    }
    return 0;
}

/* Integer fields of one step, in this order (fast.py builds the same tuple). */
#define FB_NINTS 29

/* Array fields of one step, in this order; None where unused. Item sizes are
 * checked so a wrong dtype from Python cannot be misread. */
static const struct { const char *name; int itemsize; } ARRAY_FIELDS[] = {
    {"wbits", 8}, {"gate", 8}, {"mul", 8}, {"add", 8}, {"sign", 8}, {"thr", 8}, {"pos_mul", 8},
    {"pos_add", 8}, {"neg_mul", 8}, {"neg_add", 8}, {"sc_mul", 8}, {"lut", 4}, {"level_of", 4},
    {"fc_w", 8}, {"fc_b", 8}, {"row_cls", 4}, {"col_cls", 4}, {"corr", 4}, {"nvalid", 4}, {"wbits_t", 8},
};
#define FB_NARRAYS ((int)(sizeof(ARRAY_FIELDS) / sizeof(ARRAY_FIELDS[0])))

static int get_array(PyObject *obj, Py_buffer *view, int itemsize, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "plan array %s must have %d-byte items, got %zd", what, itemsize,
                     view->itemsize);
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

static PyObject *py_make_plan(PyObject *self, PyObject *args)
{
    PyObject *steps_obj, *meta_obj;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &meta_obj, &steps_obj)) return NULL;
    /* meta: (nslots, slot_elems, max_wpp_pixels, max_O, max_nK, ncls, n_gates, in_C, in_H, in_W) */
    long long mv[10];
    if (!PyTuple_Check(meta_obj) || PyTuple_GET_SIZE(meta_obj) != 10) {
        PyErr_SetString(PyExc_TypeError, "plan meta must be a tuple of 10 ints");
        return NULL;
    }
    for (int i = 0; i < 10; i++) {
        mv[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(meta_obj, i));
        if (mv[i] == -1 && PyErr_Occurred()) return NULL;
    }
    PyObject *seq = PySequence_Fast(steps_obj, "steps must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    fb_plan *pl = calloc(1, sizeof(fb_plan));
    if (!pl) { Py_DECREF(seq); return PyErr_NoMemory(); }
    pl->nsteps = (int)n;
    pl->nslots = (int)mv[0]; pl->slot_elems = (size_t)mv[1]; pl->max_wpp_pixels = (int)mv[2];
    pl->max_O = (int)mv[3]; pl->max_nK = (int)mv[4]; pl->ncls = (int)mv[5]; pl->n_gates = (int)mv[6];
    pl->in_C = (int)mv[7]; pl->in_H = (int)mv[8]; pl->in_W = (int)mv[9];
    pl->steps = calloc((size_t)n + 1, sizeof(fb_step));
    pl->bufs = calloc((size_t)n * FB_NARRAYS + 1, sizeof(Py_buffer));
    if (!pl->steps || !pl->bufs) { plan_free(pl); Py_DECREF(seq); return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *ints, *arrs;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "each step must be (ints, arrays)");
            goto fail;
        }
        ints = PyTuple_GET_ITEM(item, 0);
        arrs = PyTuple_GET_ITEM(item, 1);
        if (!PyTuple_Check(ints) || PyTuple_GET_SIZE(ints) != FB_NINTS || !PyTuple_Check(arrs) ||
            PyTuple_GET_SIZE(arrs) != FB_NARRAYS) {
            PyErr_Format(PyExc_TypeError, "step %zd: expected %d ints and %d arrays", i, FB_NINTS, FB_NARRAYS);
            goto fail;
        }
        long long v[FB_NINTS];
        for (int k = 0; k < FB_NINTS; k++) {
            v[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(ints, k));
            if (v[k] == -1 && PyErr_Occurred()) goto fail;
        }
        fb_step *st = &pl->steps[i];
        fb_conv_geom *g = &st->g;
        st->kind = (int)v[0];
        g->Cin = (int)v[1]; g->H = (int)v[2]; g->W = (int)v[3]; g->O = (int)v[4]; g->Ho = (int)v[5];
        g->Wo = (int)v[6]; g->K = (int)v[7]; g->stride = (int)v[8]; g->pad = (int)v[9];
        st->src_slot = (int)v[10]; st->dst_slot = (int)v[11]; st->sc_slot = (int)v[12];
        st->qbits = (int)v[13]; st->frac_bits = (int)v[14]; st->post = (int)v[15]; st->shift = (int)v[16];
        st->bits = (int)v[17]; st->sc_mode = (int)v[18]; st->sc_C = (int)v[19]; st->sc_W = (int)v[20];
        st->levels = (int)v[21]; st->img_C = (int)v[22]; st->ncls = (int)v[23]; st->gate_index = (int)v[24];
        g->ncc = (int)v[26];
        st->sc_qbits = (int)v[27]; st->sc_qfrac = (int)v[28];
        st->sparse_lsb = 0; /* dense by default: faster on CPUs unless most gates are closed */
        if (v[25] != FB_ABI_VERSION) {
            PyErr_SetString(PyExc_ValueError, "plan was built for another kernel version");
            goto fail;
        }
        if (g->Cin < 1 || g->Cin > FB_MAX_CHANNELS) {
            PyErr_Format(PyExc_ValueError, "step %zd: %d input channels; the fast engine supports 1..%d", i,
                         g->Cin, FB_MAX_CHANNELS);
            goto fail;
        }
        if (st->bits < 2 || st->bits > 62 || st->shift < 0 || st->shift > 62 || st->frac_bits < 0 ||
            st->frac_bits > 60) {
            PyErr_Format(PyExc_ValueError, "step %zd: bits/shift/frac_bits out of range", i);
            goto fail;
        }
        g->wpp = (g->Cin + 63) / 64;
        g->nK = (g->K * g->K * g->Cin + 63) / 64;
        g->Hp = g->H + 2 * g->pad;
        g->Wp = g->W + 2 * g->pad;
        const void *ptr[FB_NARRAYS];
        for (int k = 0; k < FB_NARRAYS; k++) {
            PyObject *a = PyTuple_GET_ITEM(arrs, k);
            ptr[k] = NULL;
            if (a == Py_None) continue;
            Py_buffer *view = &pl->bufs[pl->nbufs];
            if (get_array(a, view, ARRAY_FIELDS[k].itemsize, ARRAY_FIELDS[k].name) < 0) goto fail;
            pl->nbufs++;
            ptr[k] = view->buf;
        }
        st->wbits = ptr[0]; st->gate = ptr[1]; st->mul = ptr[2]; st->add = ptr[3]; st->sign = ptr[4];
        st->thr = ptr[5]; st->pos_mul = ptr[6]; st->pos_add = ptr[7]; st->neg_mul = ptr[8]; st->neg_add = ptr[9];
        st->sc_mul = ptr[10]; st->lut = ptr[11]; st->level_of = ptr[12]; st->fc_w = ptr[13]; st->fc_b = ptr[14];
        g->row_cls = ptr[15]; g->col_cls = ptr[16]; g->corr = ptr[17]; g->nvalid = ptr[18];
        st->wbits_t = ptr[19];
        if (st->wbits_t && g->O % 4 != 0) {
            PyErr_Format(PyExc_ValueError, "step %zd: interleaved weights need a multiple of 4 channels", i);
            goto fail;
        }
        int ok = 1;
        if (st->kind == FB_STEP_THERMO) ok = st->lut && st->level_of;
        else if (st->kind == FB_STEP_QCONV)
            ok = st->wbits != NULL && (st->qbits == 1 || st->qbits == 2) && g->row_cls && g->col_cls && g->corr &&
                 g->nvalid && g->ncc >= 1;
        else if (st->kind == FB_STEP_POOLFC) ok = st->fc_w && st->fc_b;
        else ok = 0;
        if (st->kind != FB_STEP_POOLFC) {
            if (st->post == FB_POST_SCALE_SHIFT) ok = ok && st->mul && st->add;
            else if (st->post == FB_POST_BLOCK)
                ok = ok && st->sign && st->thr && st->pos_mul && st->pos_add && st->neg_mul && st->neg_add &&
                     st->sc_mul && (st->sc_mode & FB_SC_ON) && st->sc_C >= 1 && st->sc_C <= g->O &&
                     (!(st->sc_mode & FB_SC_QUANT) ||
                      (st->sc_qbits >= 2 && st->sc_qbits <= 8 && st->sc_qfrac >= 0 && st->sc_qfrac <= 52));
            else ok = 0;
        }
        if (!ok) {
            PyErr_Format(PyExc_ValueError, "step %zd is incomplete", i);
            goto fail;
        }
    }
    for (int i = 0; i < pl->nsteps; i++) {
        const fb_step *st = &pl->steps[i];
        if (st->g.Wo * st->g.O > pl->max_row) pl->max_row = st->g.Wo * st->g.O;
        if (st->kind == FB_STEP_THERMO && st->g.K * st->img_C * st->g.W > pl->max_taprow)
            pl->max_taprow = st->g.K * st->img_C * st->g.W;
    }
    if (derive_fast_paths(pl) < 0) { PyErr_NoMemory(); goto fail; }
    Py_DECREF(seq);
    return PyCapsule_New(pl, PLAN_CAPSULE, plan_capsule_destructor);
fail:
    Py_DECREF(seq);
    plan_free(pl);
    return NULL;
}

/* forward(plan, pixels_u8 (N,C,H,W), logits_i64 (N,ncls) out, gates_i64 (n_gates,) out or None,
 *         saturated_i64 (nsteps,) out or None (per step, values its post op clipped),
 *         threads, allow_simd) */
static PyObject *py_forward(PyObject *self, PyObject *args)
{
    PyObject *cap, *pix_obj, *out_obj, *gates_obj, *sat_obj;
    int threads, allow_simd;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOii", &cap, &pix_obj, &out_obj, &gates_obj, &sat_obj, &threads, &allow_simd))
        return NULL;
    fb_plan *pl = PyCapsule_GetPointer(cap, PLAN_CAPSULE);
    if (!pl) return NULL;
    Py_buffer pix, out, gv, sv;
    int have_gates = gates_obj != Py_None, have_sat = sat_obj != Py_None;
    if (PyObject_GetBuffer(pix_obj, &pix, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&pix);
        return NULL;
    }
    if (have_gates && PyObject_GetBuffer(gates_obj, &gv, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&pix); PyBuffer_Release(&out);
        return NULL;
    }
    if (have_sat && PyObject_GetBuffer(sat_obj, &sv, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&pix); PyBuffer_Release(&out);
        if (have_gates) PyBuffer_Release(&gv);
        return NULL;
    }
    size_t img_bytes = (size_t)pl->in_C * pl->in_H * pl->in_W;
    Py_ssize_t N = img_bytes ? pix.len / (Py_ssize_t)img_bytes : 0;
    int err = 0;
    if ((size_t)pix.len != (size_t)N * img_bytes || out.len != N * pl->ncls * 8 ||
        (have_gates && gv.len != (Py_ssize_t)pl->n_gates * 8) || (have_sat && sv.len != (Py_ssize_t)pl->nsteps * 8)) {
        PyErr_SetString(PyExc_ValueError, "forward: buffer sizes do not match the plan");
        err = 1;
    }
    const fb_kernels *kr = select_kernels(allow_simd);
    int nt = resolve_threads(threads);
    int64_t *gates = have_gates ? (int64_t *)gv.buf : NULL, *sat = have_sat ? (int64_t *)sv.buf : NULL;
    int alloc_fail = 0;
    if (!err && N > 0) {
        const uint8_t *px = pix.buf;
        int64_t *lg = out.buf;
        /* Many images: one image per thread at a time (no barriers, all in
         * cache). Few images: the threads share every layer's rows. */
        int by_image = N >= 4 * (Py_ssize_t)nt || nt == 1;
#ifndef FB_HAVE_PHASES
        by_image = 1; /* without the phase counters, threads take whole images */
#endif
        int nworks = by_image ? nt : 1, owned = 0;
        fb_work *works = works_take(pl, nworks, &owned);
        if (!works) alloc_fail = 1;
        Py_BEGIN_ALLOW_THREADS
        if (!works) {
            /* nothing to run: out of memory */
        } else if (by_image) {
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) reduction(|: alloc_fail)
#endif
            {
#ifdef _OPENMP
                fb_work *w = &works[omp_get_thread_num()];
#else
                fb_work *w = &works[0];
#endif
                fb_scratch s;
                int ok = scratch_alloc(&s, pl->max_nK, pl->max_O, pl->max_row, pl->max_taprow);
                alloc_fail |= !ok;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
                for (Py_ssize_t n = 0; n < N; n++)
                    if (ok) run_image(pl, kr, w, &s, px + (size_t)n * img_bytes, lg + (size_t)n * pl->ncls, gates, sat, NULL, 0);
                scratch_free(&s);
            }
        }
#ifdef FB_HAVE_PHASES
        else {
            fb_work *w = &works[0];
            int nph = phases_per_image(pl);
            fb_sync y;
            y.claim = calloc((size_t)N * nph + 1, sizeof(int));
            y.done = calloc((size_t)N * nph + 1, sizeof(int));
            y.total = calloc((size_t)N * nph + 1, sizeof(int));
            if (!y.claim || !y.done || !y.total) {
                alloc_fail = 1;
            } else {
                for (Py_ssize_t n = 0; n < N; n++) phase_totals(pl, y.total + (size_t)n * nph);
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) reduction(|: alloc_fail)
#endif
                {
                    fb_scratch s;
                    int ok = scratch_alloc(&s, pl->max_nK, pl->max_O, pl->max_row, pl->max_taprow);
                    alloc_fail |= !ok;
                    /* a thread that cannot run must still not block the others: it simply claims nothing */
                    for (Py_ssize_t n = 0; n < N && ok; n++)
                        run_image(pl, kr, w, &s, px + (size_t)n * img_bytes, lg + (size_t)n * pl->ncls, gates, sat, &y,
                                  (int)(n * nph));
                    scratch_free(&s);
                }
            }
            free(y.claim); free(y.done); free(y.total);
        }
#endif
        Py_END_ALLOW_THREADS
        works_give(pl, works, nworks, owned);
        if (alloc_fail) {
            PyErr_NoMemory();
            err = 1;
        }
    }
    PyBuffer_Release(&pix);
    PyBuffer_Release(&out);
    if (have_gates) PyBuffer_Release(&gv);
    if (have_sat) PyBuffer_Release(&sv);
    if (err) return NULL;
    Py_RETURN_NONE;
}

/* binary_conv(x_words (N,Hp,Wp,wpp) u64 with a zero ring of pad pixels, w_words (O,nK) u64,
 *             row_cls i32 (Ho), col_cls i32 (Wo), corr i32 (classes,O), nvalid i32 (classes),
 *             out (N,Ho,Wo,O) i32, geometry (N, Cin, H, W, O, K, stride, pad, ncc), threads, allow_simd)
 * The bare XNOR-popcount convolution with exact zero padding, on the engine's own code path. */
static PyObject *py_binary_conv(PyObject *self, PyObject *args)
{
    PyObject *xo, *wo, *oo, *rco, *cco, *cro, *nvo;
    int N, threads, allow_simd;
    fb_conv_geom g;
    (void)self;
    memset(&g, 0, sizeof(g));
    if (!PyArg_ParseTuple(args, "OOOOOOO(iiiiiiiii)ii", &xo, &wo, &rco, &cco, &cro, &nvo, &oo, &N, &g.Cin, &g.H,
                          &g.W, &g.O, &g.K, &g.stride, &g.pad, &g.ncc, &threads, &allow_simd))
        return NULL;
    if (N < 0 || g.Cin < 1 || g.Cin > FB_MAX_CHANNELS || g.H < 1 || g.W < 1 || g.O < 1 || g.K < 1 || g.stride < 1 || g.pad < 0 ||
        g.ncc < 1) {
        PyErr_SetString(PyExc_ValueError, "binary_conv: bad geometry (Cin must be 1..4096)");
        return NULL;
    }
    g.Ho = (g.H + 2 * g.pad - g.K) / g.stride + 1;
    g.Wo = (g.W + 2 * g.pad - g.K) / g.stride + 1;
    if (g.Ho < 1 || g.Wo < 1) {
        PyErr_SetString(PyExc_ValueError, "binary_conv: kernel larger than the padded input");
        return NULL;
    }
    g.wpp = (g.Cin + 63) / 64;
    g.nK = (g.K * g.K * g.Cin + 63) / 64;
    g.Hp = g.H + 2 * g.pad;
    g.Wp = g.W + 2 * g.pad;
    PyObject *objs[7] = {xo, wo, rco, cco, cro, nvo, oo};
    Py_buffer v[7];
    int got = 0, err = 0;
    for (; got < 7; got++) {
        int flags = PyBUF_C_CONTIGUOUS | (got == 6 ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(objs[got], &v[got], flags) < 0) { err = 1; break; }
    }
    size_t xin = (size_t)g.Hp * g.Wp * g.wpp, oimg = (size_t)g.Ho * g.Wo * g.O;
    if (!err) {
        int ncls = (int)(v[5].len / 4);
        if ((size_t)v[0].len != (size_t)N * xin * 8 || (size_t)v[1].len != (size_t)g.O * g.nK * 8 ||
            v[2].len != (Py_ssize_t)g.Ho * 4 || v[3].len != (Py_ssize_t)g.Wo * 4 ||
            v[4].len != (Py_ssize_t)ncls * g.O * 4 || (size_t)v[6].len != (size_t)N * oimg * 4) {
            PyErr_SetString(PyExc_ValueError, "binary_conv: buffer sizes do not match the geometry");
            err = 1;
        } else {
            const int32_t *rc = v[2].buf, *cc = v[3].buf;
            for (int i = 0; i < g.Ho && !err; i++) err = rc[i] < 0 || (rc[i] + 1) * g.ncc > ncls;
            for (int i = 0; i < g.Wo && !err; i++) err = cc[i] < 0 || cc[i] >= g.ncc;
            if (err) PyErr_SetString(PyExc_ValueError, "binary_conv: border class out of range");
        }
    }
    const fb_kernels *kr = select_kernels(allow_simd);
    int nt = resolve_threads(threads), alloc_fail = 0;
    if (!err) {
        const uint64_t *xp = v[0].buf, *wp = v[1].buf;
        int32_t *op = v[6].buf;
        g.row_cls = v[2].buf; g.col_cls = v[3].buf; g.corr = v[4].buf; g.nvalid = v[5].buf;
        Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) reduction(|: alloc_fail)
#endif
        {
            fb_scratch s;
            int ok = scratch_alloc(&s, g.nK, g.O, g.Wo * g.O, 0);
            alloc_fail |= !ok;
#ifdef _OPENMP
#pragma omp for collapse(2) schedule(static)
#endif
            for (int n = 0; n < N; n++)
                for (int oy = 0; oy < g.Ho; oy++)
                    if (ok) kr->binconv_rows(&g, xp + (size_t)n * xin, wp, op + (size_t)n * oimg, oy, oy + 1, &s);
            scratch_free(&s);
        }
        Py_END_ALLOW_THREADS
        if (alloc_fail) { PyErr_NoMemory(); err = 1; }
    }
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    if (err) return NULL;
    Py_RETURN_NONE;
}

/* popcount_rate(words u64 buffer, repeats, threads) -> total popcount; a tight loop to time this CPU's limit */
static PyObject *py_popcount_loop(PyObject *self, PyObject *args)
{
    PyObject *bo;
    long long repeats;
    int threads, allow_simd, vec = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "OLii|p", &bo, &repeats, &threads, &allow_simd, &vec)) return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(bo, &b, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    const uint64_t *p = b.buf;
    size_t n = (size_t)b.len / 8;
    int nt = resolve_threads(threads);
    const fb_kernels *kr = select_kernels(allow_simd);
    unsigned long long total = 0;
    if (vec && !kr->popcount_loop_vec) {
        PyBuffer_Release(&b);
        Py_RETURN_NONE; /* no vector popcount in this kernel set */
    }
    Py_BEGIN_ALLOW_THREADS
    total = vec ? kr->popcount_loop_vec(p, n, repeats, nt) : kr->popcount_loop(p, n, repeats, nt);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(total);
}

/* set_sparse(plan, flag): choose the sparse (skip closed-gate LSB work) or dense gated conv; same results */
static PyObject *py_set_sparse(PyObject *self, PyObject *args)
{
    PyObject *cap;
    int flag;
    (void)self;
    if (!PyArg_ParseTuple(args, "Op", &cap, &flag)) return NULL;
    fb_plan *pl = PyCapsule_GetPointer(cap, PLAN_CAPSULE);
    if (!pl) return NULL;
    for (int i = 0; i < pl->nsteps; i++) pl->steps[i].sparse_lsb = flag;
    Py_RETURN_NONE;
}

static PyObject *py_info(PyObject *self, PyObject *args)
{
    (void)self; (void)args;
#ifdef _OPENMP
    int omp = 1;
#else
    int omp = 0;
#endif
    return Py_BuildValue("{s:i,s:i,s:i,s:s,s:s}", "abi", FB_ABI_VERSION, "openmp", omp, "max_threads",
                         default_threads(), "kernels", select_kernels(1)->name, "portable_kernels",
                         KERNELS_GENERIC.name);
}

static PyMethodDef METHODS[] = {
    {"make_plan", py_make_plan, METH_VARARGS, "Compile a step list into an opaque plan."},
    {"forward", py_forward, METH_VARARGS, "Run a plan on uint8 images, writing int64 logits."},
    {"binary_conv", py_binary_conv, METH_VARARGS, "Packed XNOR-popcount convolution with exact zero padding."},
    {"popcount_loop", py_popcount_loop, METH_VARARGS, "Tight XOR+popcount loop over a word buffer (timing); vec=True: the AVX2 table popcount."},
    {"set_sparse", py_set_sparse, METH_VARARGS, "Sparse (skip closed-gate LSB work) or dense gated convs."},
    {"info", py_info, METH_NOARGS, "Build facts: ABI version, OpenMP, kernel set chosen on this CPU."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_fastkernels",
                                    "Compiled kernels of the fracbnn fast CPU engine.", -1, METHODS,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastkernels(void) { return PyModule_Create(&MODULE); }
