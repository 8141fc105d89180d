/* Kernels of the fast CPU engine, compiled once per instruction-set target.
 *
 * fastkernels.c includes this file several times with a different FB_SUFFIX
 * (and a target pragma around it), so one source yields a portable build and
 * an AVX2+POPCNT build chosen at run time. Everything here is plain C; the
 * compiler turns __builtin_popcountll into the POPCNT instruction where the
 * target allows it.
 *
 * Arithmetic is the golden engine's (src/fracbnn/deploy/golden.py), done in
 * int64 with two's-complement wrap-around (via uint64) exactly like numpy.
 */

#define FB_CAT2(a, b) a##b
#define FB_CAT(a, b) FB_CAT2(a, b)
#define FB(name) FB_CAT(name, FB_SUFFIX)

/* ---- bit vectors ------------------------------------------------------- */

/* OR the low ``nbits`` bits of src (already zero above nbits) into dst at bit ``pos``. */
static inline void FB(bits_append)(uint64_t *dst, const uint64_t *src, int nbits, int pos)
{
    int words = (nbits + 63) >> 6;
    int w = pos >> 6, b = pos & 63;
    if (b == 0) {
        for (int i = 0; i < words; i++) dst[w + i] |= src[i];
        return;
    }
    for (int i = 0; i < words; i++) {
        uint64_t v = src[i];
        dst[w + i] |= v << b;
        dst[w + i + 1] |= v >> (64 - b);
    }
}

/* ---- the XNOR-popcount core --------------------------------------------
 * For one output pixel: x (and l) are the gathered window bits, msk has a 1
 * for every bit of a valid (non-padded) tap. The number of disagreeing bits
 * among valid taps is popcount((x ^ w) & msk); S = n_valid - 2 * that.
 */
#define FB_DOT_BODY(NK)                                                        \
    for (int o = 0; o < O; o++) {                                              \
        const uint64_t *wo = wts + (size_t)o * nK;                             \
        int dm = 0, dl = 0;                                                    \
        if (full) {                                                            \
            for (int j = 0; j < (NK); j++) {                                   \
                dm += __builtin_popcountll(xm[j] ^ wo[j]);                     \
                if (two) dl += __builtin_popcountll(xl[j] ^ wo[j]);            \
            }                                                                  \
        } else {                                                               \
            for (int j = 0; j < (NK); j++) {                                   \
                dm += __builtin_popcountll((xm[j] ^ wo[j]) & msk[j]);          \
                if (two) dl += __builtin_popcountll((xl[j] ^ wo[j]) & msk[j]); \
            }                                                                  \
        }                                                                      \
        sm[o] = nvalid - 2 * dm;                                               \
        sl[o] = nvalid - 2 * dl;                                               \
    }

static void FB(dot_planes)(const uint64_t *xm, const uint64_t *xl, const uint64_t *msk, int full, int two,
                           const uint64_t *wts, int nK, int O, int nvalid, int32_t *sm, int32_t *sl)
{
    /* constant trip counts for the common sizes let the compiler unroll */
    switch (nK) {
    case 1: FB_DOT_BODY(1) break;
    case 2: FB_DOT_BODY(2) break;
    case 3: FB_DOT_BODY(3) break;
    case 4: FB_DOT_BODY(4) break;
    case 5: FB_DOT_BODY(5) break;
    case 9: FB_DOT_BODY(9) break;
    case 18: FB_DOT_BODY(18) break;
    default: FB_DOT_BODY(nK) break;
    }
}

/* Gather the KxK window of output pixel (oy, ox) from one or two packed planes. */
static int FB(gather)(const fb_conv_geom *g, const uint64_t *pm, const uint64_t *pl, int oy, int ox,
                      uint64_t *xm, uint64_t *xl, uint64_t *msk, const uint64_t *ones)
{
    int nK = g->nK, C = g->Cin, wpp = g->wpp, nvalid = 0, pos = 0;
    memset(xm, 0, (size_t)(nK + 1) * sizeof(uint64_t));
    if (pl) memset(xl, 0, (size_t)(nK + 1) * sizeof(uint64_t));
    memset(msk, 0, (size_t)(nK + 1) * sizeof(uint64_t));
    for (int u = 0; u < g->K; u++) {
        int iy = oy * g->stride + u - g->pad;
        for (int v = 0; v < g->K; v++, pos += C) {
            int ix = ox * g->stride + v - g->pad;
            if (iy < 0 || iy >= g->H || ix < 0 || ix >= g->W) continue;
            size_t at = ((size_t)iy * g->W + ix) * wpp;
            FB(bits_append)(xm, pm + at, C, pos);
            if (pl) FB(bits_append)(xl, pl + at, C, pos);
            FB(bits_append)(msk, ones, C, pos);
            nvalid += C;
        }
    }
    return nvalid;
}

/* ---- the primitive: plain packed binary convolution (tests, tools) ---- */

static void FB(binconv_rows)(const fb_conv_geom *g, const uint64_t *planes, const uint64_t *wts, int32_t *out,
                             int oy0, int oy1, fb_scratch *s)
{
    for (int oy = oy0; oy < oy1; oy++)
        for (int ox = 0; ox < g->Wo; ox++) {
            int nvalid = FB(gather)(g, planes, NULL, oy, ox, s->xm, s->xl, s->msk, s->ones);
            int full = nvalid == g->K * g->K * g->Cin;
            int32_t *dst = out + ((size_t)oy * g->Wo + ox) * g->O;
            FB(dot_planes)(s->xm, s->xl, s->msk, full, 0, wts, g->nK, g->O, nvalid, dst, s->sl);
        }
}

/* ---- quantization of a residual buffer into packed bit planes ---------- */

static void FB(quantize_pixels)(const fb_step *st, const int64_t *src, uint64_t *pm, uint64_t *pl, int p0, int p1)
{
    int C = st->g.Cin, wpp = st->g.wpp;
    uint64_t b = (uint64_t)1 << (st->frac_bits + 1);
    for (int p = p0; p < p1; p++) {
        const int64_t *r = src + (size_t)p * C;
        uint64_t *dm = pm + (size_t)p * wpp, *dl = pl + (size_t)p * wpp;
        for (int w = 0; w < wpp; w++) {
            uint64_t m = 0, l = 0;
            int c0 = w * 64, c1 = c0 + 64 < C ? c0 + 64 : C;
            for (int c = c0; c < c1; c++) {
                int64_t v = r[c];
                uint64_t bit = (uint64_t)1 << (c - c0);
                if (v >= 0) m |= bit;
                if (st->qbits == 2) {
                    /* code = [3r > -b] + [r >= 0] + [3r > b]; l = code & 1 */
                    int64_t t = (int64_t)((uint64_t)v * 3u);
                    int code = (t > -(int64_t)b) + (v >= 0) + (t > (int64_t)b);
                    if (code & 1) l |= bit;
                }
            }
            dm[w] = m;
            if (st->qbits == 2) dl[w] = l;
        }
    }
}

/* ---- fixed-point post-processing ---------------------------------------- */

static inline int64_t FB(round_shift_sat)(uint64_t acc, int shift, int64_t lo, int64_t hi)
{
    int64_t v;
    if (shift > 0) v = (int64_t)(acc + ((uint64_t)1 << (shift - 1))) >> shift;
    else v = (int64_t)acc;
    return v < lo ? lo : (v > hi ? hi : v);
}

/* Shortcut value of channel o at output pixel (oy, ox), as the golden engine's
 * buffer would hold it (direct, or the 2x2 window SUM of avgpool2_dup). */
static inline int64_t FB(shortcut_at)(const fb_step *st, const int64_t *sc, int oy, int ox, int o)
{
    if (st->sc_mode == 1) return sc[((size_t)oy * st->g.Wo + ox) * st->g.O + o];
    int Cs = st->sc_C, Ws = st->sc_W, c = o % Cs;
    const int64_t *a = sc + ((size_t)(2 * oy) * Ws + 2 * ox) * Cs + c;
    uint64_t s = (uint64_t)a[0] + (uint64_t)a[Cs] + (uint64_t)a[(size_t)Ws * Cs] + (uint64_t)a[(size_t)Ws * Cs + Cs];
    return (int64_t)s;
}

static inline void FB(post_pixel)(const fb_step *st, const int32_t *acc, int64_t *dst, const int64_t *sc,
                                  int oy, int ox)
{
    int O = st->g.O, shift = st->shift;
    int64_t hi = (int64_t)((((uint64_t)1) << (st->bits - 1)) - 1), lo = -hi - 1;
    if (st->post == FB_POST_SCALE_SHIFT) {
        for (int o = 0; o < O; o++) {
            uint64_t v = (uint64_t)(int64_t)acc[o] * (uint64_t)st->mul[o] + (uint64_t)st->add[o];
            dst[o] = FB(round_shift_sat)(v, shift, lo, hi);
        }
        return;
    }
    for (int o = 0; o < O; o++) {
        int64_t a = acc[o];
        int pos = (int64_t)((uint64_t)st->sign[o] * (uint64_t)a) > st->thr[o];
        uint64_t v = pos ? (uint64_t)st->pos_mul[o] * (uint64_t)a + (uint64_t)st->pos_add[o]
                         : (uint64_t)st->neg_mul[o] * (uint64_t)a + (uint64_t)st->neg_add[o];
        v += (uint64_t)st->sc_mul[o] * (uint64_t)FB(shortcut_at)(st, sc, oy, ox, o);
        dst[o] = FB(round_shift_sat)(v, shift, lo, hi);
    }
}

/* ---- fused step bodies, one output row at a time ------------------------ */

/* quantized conv (1 or 2 planes, optional gate) + post op, rows [oy0, oy1) */
static void FB(qconv_rows)(const fb_step *st, const uint64_t *pm, const uint64_t *pl, const int64_t *sc,
                           int64_t *dst, int oy0, int oy1, fb_scratch *s, int64_t *gate_open)
{
    const fb_conv_geom *g = &st->g;
    int O = g->O, two = st->qbits == 2, kfull = g->K * g->K * g->Cin;
    int64_t opened = 0;
    for (int oy = oy0; oy < oy1; oy++)
        for (int ox = 0; ox < g->Wo; ox++) {
            int nvalid = FB(gather)(g, pm, two ? pl : NULL, oy, ox, s->xm, s->xl, s->msk, s->ones);
            FB(dot_planes)(s->xm, s->xl, s->msk, nvalid == kfull, two, st->wbits, g->nK, O, nvalid, s->sm, s->sl);
            if (two) {
                /* A = 2 S_M + open * S_L, open = S_M > gate threshold (all open without a gate) */
                for (int o = 0; o < O; o++) {
                    int open = st->gate ? (int64_t)s->sm[o] > st->gate[o] : 1;
                    opened += open;
                    s->acc[o] = 2 * s->sm[o] + (open ? s->sl[o] : 0);
                }
            } else {
                for (int o = 0; o < O; o++) s->acc[o] = s->sm[o];
            }
            FB(post_pixel)(st, s->acc, dst + ((size_t)oy * g->Wo + ox) * O, sc, oy, ox);
        }
    if (gate_open) *gate_open += opened;
}

/* thermometer input layer through the partial-sum table + post op */
static void FB(thermo_rows)(const fb_step *st, const uint8_t *img, int64_t *dst, int oy0, int oy1, fb_scratch *s)
{
    const fb_conv_geom *g = &st->g;
    int O = g->O, K = g->K, L = st->levels, Ci = st->img_C;
    size_t plane = (size_t)g->H * g->W;
    for (int oy = oy0; oy < oy1; oy++)
        for (int ox = 0; ox < g->Wo; ox++) {
            int32_t *acc = s->acc;
            for (int o = 0; o < O; o++) acc[o] = 0;
            for (int u = 0; u < K; u++) {
                int iy = oy * g->stride + u - g->pad;
                if (iy < 0 || iy >= g->H) continue;
                for (int v = 0; v < K; v++) {
                    int ix = ox * g->stride + v - g->pad;
                    if (ix < 0 || ix >= g->W) continue;
                    for (int c = 0; c < Ci; c++) {
                        int n = st->level_of[img[c * plane + (size_t)iy * g->W + ix]];
                        const int32_t *t = st->lut + ((((size_t)c * K + u) * K + v) * L + n) * O;
                        for (int o = 0; o < O; o++) acc[o] += t[o];
                    }
                }
            }
            FB(post_pixel)(st, acc, dst + ((size_t)oy * g->Wo + ox) * O, NULL, oy, ox);
        }
}

/* global sum pool + integer linear layer */
static void FB(pool_linear)(const fb_step *st, const int64_t *src, int64_t *logits, int64_t *pooled)
{
    int C = st->g.Cin;
    size_t P = (size_t)st->g.H * st->g.W;
    for (int c = 0; c < C; c++) pooled[c] = 0;
    for (size_t p = 0; p < P; p++)
        for (int c = 0; c < C; c++) pooled[c] = (int64_t)((uint64_t)pooled[c] + (uint64_t)src[p * C + c]);
    for (int k = 0; k < st->ncls; k++) {
        uint64_t v = 0;
        for (int c = 0; c < C; c++) v += (uint64_t)pooled[c] * (uint64_t)st->fc_w[(size_t)k * C + c];
        logits[k] = (int64_t)(v + (uint64_t)st->fc_b[k]);
    }
}

/* Tight XOR + popcount loop over an L1-resident buffer: the best rate at which
 * this build can do the engine's core operation (the "popcount limit"). */
static unsigned long long FB(popcount_loop)(const uint64_t *p, size_t n, long long repeats, int nt)
{
    unsigned long long total = 0;
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for reduction(+ : total) num_threads(nt) schedule(static)
#endif
    for (long long r = 0; r < repeats; r++) {
        uint64_t key = (uint64_t)r * 0x9E3779B97F4A7C15ull;
        unsigned long long a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (size_t i = 0; i + 3 < n; i += 4) {
            a0 += __builtin_popcountll(p[i] ^ key);
            a1 += __builtin_popcountll(p[i + 1] ^ key);
            a2 += __builtin_popcountll(p[i + 2] ^ key);
            a3 += __builtin_popcountll(p[i + 3] ^ key);
        }
        total += a0 + a1 + a2 + a3;
    }
    return total;
}

#undef FB_DOT_BODY
#undef FB
#undef FB_CAT
#undef FB_CAT2
