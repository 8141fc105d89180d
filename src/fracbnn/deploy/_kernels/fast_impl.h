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
#define FB_DOT_LOOP(NK, EXPR_M, EXPR_L)                                        \
    for (int o = 0; o < O; o++) {                                              \
        const uint64_t *wo = wts + (size_t)o * (NK);                           \
        int dm = 0, dl = 0;                                                    \
        for (int j = 0; j < (NK); j++) {                                       \
            dm += __builtin_popcountll(EXPR_M);                                \
            dl += __builtin_popcountll(EXPR_L);                                \
        }                                                                      \
        sm[o] = nvalid - 2 * dm;                                               \
        sl[o] = nvalid - 2 * dl;                                               \
    }
#define FB_DOT_BODY(NK)                                                                   \
    if (two && full) { FB_DOT_LOOP(NK, xm[j] ^ wo[j], xl[j] ^ wo[j]) }                    \
    else if (two) { FB_DOT_LOOP(NK, (xm[j] ^ wo[j]) & msk[j], (xl[j] ^ wo[j]) & msk[j]) } \
    else if (full) { FB_DOT_LOOP(NK, xm[j] ^ wo[j], 0) }                                  \
    else { FB_DOT_LOOP(NK, (xm[j] ^ wo[j]) & msk[j], 0) }

static void FB(dot_planes)(const uint64_t *restrict xm, const uint64_t *restrict xl, const uint64_t *restrict msk,
                           int full, int two, const uint64_t *restrict wts, int nK, int O, int nvalid,
                           int32_t *restrict sm, int32_t *restrict sl)
{
    /* constant trip counts for the common sizes keep the window in registers */
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

/* LSB sums only for the output channels listed in idx (the open gates):
 * acc[o] += S_L(o). The list is built branch-free, so the data-dependent
 * gate costs no branch per output, and closed gates cost no LSB work. */
#define FB_LDOT_BODY(NK, EXPR)                                                 \
    for (int k = 0; k < nopen; k++) {                                          \
        const int o = idx[k];                                                  \
        const uint64_t *wo = wts + (size_t)o * (NK);                           \
        int dl = 0;                                                            \
        for (int j = 0; j < (NK); j++) dl += __builtin_popcountll(EXPR);       \
        acc[o] += nvalid - 2 * dl;                                             \
    }
#define FB_LDOT(NK)                                                            \
    if (full) { FB_LDOT_BODY(NK, xl[j] ^ wo[j]) }                              \
    else { FB_LDOT_BODY(NK, (xl[j] ^ wo[j]) & msk[j]) }

static void FB(lsb_sparse)(const uint64_t *restrict xl, const uint64_t *restrict msk, int full,
                           const uint64_t *restrict wts, int nK, const int *restrict idx, int nopen, int nvalid,
                           int32_t *restrict acc)
{
    switch (nK) {
    case 1: FB_LDOT(1) break;
    case 2: FB_LDOT(2) break;
    case 3: FB_LDOT(3) break;
    case 4: FB_LDOT(4) break;
    case 5: FB_LDOT(5) break;
    case 9: FB_LDOT(9) break;
    case 18: FB_LDOT(18) break;
    default: FB_LDOT(nK) break;
    }
}

/* Window of an interior output pixel (all taps valid): no bounds tests, no mask.
 * CC is the channel count when it is 16, 32 or 64 (taps never straddle words
 * in a way that needs the general append), or 0 for the general case. */
#define FB_GATHER_INTERIOR(CC)                                                                  \
    static void FB(gather_in_##CC)(const fb_conv_geom *g, const uint64_t *pm, const uint64_t *pl, \
                                   int oy, int ox, uint64_t *restrict xm, uint64_t *restrict xl)  \
    {                                                                                           \
        const int C = (CC) ? (CC) : g->Cin, K = g->K, W = g->W, wpp = (CC) ? 1 : g->wpp;        \
        for (int i = 0; i <= g->nK; i++) { xm[i] = 0; if (pl) xl[i] = 0; }                      \
        int pos = 0;                                                                            \
        for (int u = 0; u < K; u++) {                                                           \
            size_t at = ((size_t)(oy * g->stride + u - g->pad) * W + (ox * g->stride - g->pad)) * wpp; \
            for (int v = 0; v < K; v++, pos += C, at += wpp) {                                  \
                if ((CC) == 64) {                                                               \
                    xm[pos >> 6] = pm[at];                                                      \
                    if (pl) xl[pos >> 6] = pl[at];                                              \
                } else if (CC) {                                                                \
                    xm[pos >> 6] |= pm[at] << (pos & 63);                                       \
                    if (pl) xl[pos >> 6] |= pl[at] << (pos & 63);                               \
                } else {                                                                        \
                    FB(bits_append)(xm, pm + at, C, pos);                                       \
                    if (pl) FB(bits_append)(xl, pl + at, C, pos);                               \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }
FB_GATHER_INTERIOR(16)
FB_GATHER_INTERIOR(32)
FB_GATHER_INTERIOR(64)
FB_GATHER_INTERIOR(0)

/* Gather the KxK window of output pixel (oy, ox) from one or two packed planes. */
static int FB(gather)(const fb_conv_geom *g, const uint64_t *pm, const uint64_t *pl, int oy, int ox,
                      uint64_t *xm, uint64_t *xl, uint64_t *msk, const uint64_t *ones)
{
    int nK = g->nK, C = g->Cin, wpp = g->wpp, nvalid = 0, pos = 0;
    int iy0 = oy * g->stride - g->pad, ix0 = ox * g->stride - g->pad;
    if (iy0 >= 0 && ix0 >= 0 && iy0 + g->K <= g->H && ix0 + g->K <= g->W) {
        if (C == 16) FB(gather_in_16)(g, pm, pl, oy, ox, xm, xl);
        else if (C == 32) FB(gather_in_32)(g, pm, pl, oy, ox, xm, xl);
        else if (C == 64) FB(gather_in_64)(g, pm, pl, oy, ox, xm, xl);
        else FB(gather_in_0)(g, pm, pl, oy, ox, xm, xl);
        return g->K * g->K * C;
    }
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
    const int C = st->g.Cin, wpp = st->g.wpp, two = st->qbits == 2;
    const int64_t b = (int64_t)((uint64_t)1 << (st->frac_bits + 1));
    for (int p = p0; p < p1; p++) {
        const int64_t *restrict r = src + (size_t)p * C;
        uint64_t *restrict dm = pm + (size_t)p * wpp, *restrict dl = pl + (size_t)p * wpp;
        for (int w = 0; w < wpp; w++) {
            uint64_t m = 0, l = 0;
            const int c0 = w * 64, n = C - c0 < 64 ? C - c0 : 64;
            int c = 0;
#ifdef FB_USE_AVX2
            /* 4 values per step: compares give lane masks, movemask packs them into bits */
            {
                const __m256i minus1 = _mm256_set1_epi64x(-1), vb = _mm256_set1_epi64x(b),
                              vnb = _mm256_set1_epi64x(-b);
                for (; c + 4 <= n; c += 4) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(r + c0 + c));
                    __m256i ge = _mm256_cmpgt_epi64(v, minus1);
                    m |= (uint64_t)_mm256_movemask_pd(_mm256_castsi256_pd(ge)) << c;
                    if (two) {
                        __m256i t = _mm256_add_epi64(_mm256_add_epi64(v, v), v);
                        __m256i x = _mm256_xor_si256(_mm256_xor_si256(_mm256_cmpgt_epi64(t, vnb), ge),
                                                     _mm256_cmpgt_epi64(t, vb));
                        l |= (uint64_t)_mm256_movemask_pd(_mm256_castsi256_pd(x)) << c;
                    }
                }
            }
#endif
            /* branch-free: the signs are data, a branch per value would mispredict half the time */
            for (int c1 = c; c1 < n; c1++) m |= (uint64_t)(r[c0 + c1] >= 0) << c1;
            if (two) {
                /* code = [3r > -b] + [r >= 0] + [3r > b]; its low bit is the XOR of the three */
                for (int c1 = c; c1 < n; c1++) {
                    int64_t v = r[c0 + c1], t = (int64_t)((uint64_t)v * 3u);
                    l |= (uint64_t)((t > -b) ^ (v >= 0) ^ (t > b)) << c1;
                }
                dl[w] = l;
            }
            dm[w] = m;
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

/* Post op over one output row: acc (Wo x O) -> dst (Wo x O); scrow is the
 * shortcut row (Wo x O, already expanded for avgpool2_dup) or NULL. */
static void FB(post_row)(const fb_step *st, const int32_t *restrict acc, int64_t *restrict dst,
                         const int64_t *restrict scrow, int Wo)
{
    const int O = st->g.O, shift = st->shift;
    const int64_t hi = (int64_t)((((uint64_t)1) << (st->bits - 1)) - 1), lo = -hi - 1;
    const uint64_t half = shift > 0 ? (uint64_t)1 << (shift - 1) : 0;
    if (st->post == FB_POST_SCALE_SHIFT) {
        const int64_t *restrict mul = st->mul, *restrict add = st->add;
        for (int x = 0; x < Wo; x++, acc += O, dst += O)
            for (int o = 0; o < O; o++) {
                uint64_t v = (uint64_t)(int64_t)acc[o] * (uint64_t)mul[o] + (uint64_t)add[o] + half;
                int64_t r = (int64_t)v >> shift;
                dst[o] = r < lo ? lo : (r > hi ? hi : r);
            }
        return;
    }
    const int64_t *restrict sign = st->sign, *restrict thr = st->thr, *restrict pm = st->pos_mul,
                  *restrict pa = st->pos_add, *restrict nm = st->neg_mul, *restrict na = st->neg_add,
                  *restrict scm = st->sc_mul;
    for (int x = 0; x < Wo; x++, acc += O, dst += O, scrow += O)
        for (int o = 0; o < O; o++) {
            int64_t a = acc[o];
            int pos = (int64_t)((uint64_t)sign[o] * (uint64_t)a) > thr[o];
            uint64_t m = (uint64_t)(pos ? pm[o] : nm[o]), b = (uint64_t)(pos ? pa[o] : na[o]);
            uint64_t v = m * (uint64_t)a + b + (uint64_t)scm[o] * (uint64_t)scrow[o] + half;
            int64_t r = (int64_t)v >> shift;
            dst[o] = r < lo ? lo : (r > hi ? hi : r);
        }
}

/* Shortcut row oy as the golden engine's buffer holds it: direct, or for
 * avgpool2_dup the 2x2 window SUM of the source, channels repeated. */
static const int64_t *FB(shortcut_row)(const fb_step *st, const int64_t *sc, int oy, int64_t *tmp)
{
    const int O = st->g.O, Wo = st->g.Wo;
    if (st->sc_mode == 1) return sc + (size_t)oy * Wo * O;
    const int Cs = st->sc_C, Ws = st->sc_W;
    for (int x = 0; x < Wo; x++) {
        const int64_t *a = sc + ((size_t)(2 * oy) * Ws + 2 * x) * Cs, *b = a + (size_t)Ws * Cs;
        int64_t *t = tmp + (size_t)x * O;
        for (int c = 0; c < Cs; c++)
            t[c] = (int64_t)((uint64_t)a[c] + (uint64_t)a[Cs + c] + (uint64_t)b[c] + (uint64_t)b[Cs + c]);
        for (int c = Cs; c < O; c++) t[c] = t[c - Cs];
    }
    return tmp;
}

/* ---- fused step bodies, one output row at a time ------------------------ */

/* quantized conv (1 or 2 planes, optional gate) + post op, rows [oy0, oy1) */
static void FB(qconv_rows)(const fb_step *st, const uint64_t *pm, const uint64_t *pl, const int64_t *sc,
                           int64_t *dst, int oy0, int oy1, fb_scratch *s, int64_t *gate_open)
{
    const fb_conv_geom *g = &st->g;
    const int O = g->O, Wo = g->Wo, two = st->qbits == 2, kfull = g->K * g->K * g->Cin;
    const int64_t *gate = st->gate;
    int64_t opened = 0;
    for (int oy = oy0; oy < oy1; oy++) {
        for (int ox = 0; ox < Wo; ox++) {
            int32_t *restrict acc = s->rowacc + (size_t)ox * O;
            const int32_t *restrict sm = s->sm, *restrict sl = s->sl;
            int nvalid = FB(gather)(g, pm, two ? pl : NULL, oy, ox, s->xm, s->xl, s->msk, s->ones);
            int full = nvalid == kfull;
            if (two && gate && st->sparse_lsb) {
                /* A = 2 S_M + open * S_L, open = S_M > gate threshold: the MSB pass for
                 * every output, the LSB pass only for the open ones (sparse) */
                FB(dot_planes)(s->xm, s->xl, s->msk, full, 0, st->wbits, g->nK, O, nvalid, s->sm, s->sl);
                int nopen = 0;
                for (int o = 0; o < O; o++) {
                    int open = (int64_t)sm[o] > gate[o];
                    s->idx[nopen] = o;
                    nopen += open;
                    acc[o] = 2 * sm[o];
                }
                opened += nopen;
                FB(lsb_sparse)(s->xl, s->msk, full, st->wbits, g->nK, s->idx, nopen, nvalid, acc);
                continue;
            }
            FB(dot_planes)(s->xm, s->xl, s->msk, full, two, st->wbits, g->nK, O, nvalid, s->sm, s->sl);
            if (!two) {
                for (int o = 0; o < O; o++) acc[o] = sm[o];
            } else if (!gate) {
                for (int o = 0; o < O; o++) acc[o] = 2 * sm[o] + sl[o];
            } else {
                /* dense variant: both passes everywhere, the gate selects */
                for (int o = 0; o < O; o++) {
                    int open = (int64_t)sm[o] > gate[o];
                    opened += open;
                    acc[o] = 2 * sm[o] + (open ? sl[o] : 0);
                }
            }
        }
        const int64_t *scrow = st->post == FB_POST_BLOCK ? FB(shortcut_row)(st, sc, oy, s->scrow) : NULL;
        FB(post_row)(st, s->rowacc, dst + (size_t)oy * Wo * O, scrow, Wo);
    }
    if (gate_open) *gate_open += opened;
}

/* thermometer input layer through the partial-sum table + post op */
static void FB(thermo_rows)(const fb_step *st, const uint8_t *img, int64_t *dst, int oy0, int oy1, fb_scratch *s)
{
    const fb_conv_geom *g = &st->g;
    const int O = g->O, K = g->K, L = st->levels, Ci = st->img_C, Wo = g->Wo;
    const size_t plane = (size_t)g->H * g->W;
    const int32_t *restrict lut = st->lut, *restrict level_of = st->level_of;
    for (int oy = oy0; oy < oy1; oy++) {
        for (int ox = 0; ox < Wo; ox++) {
            int32_t *restrict acc = s->rowacc + (size_t)ox * O;
            for (int o = 0; o < O; o++) acc[o] = 0;
            for (int u = 0; u < K; u++) {
                int iy = oy * g->stride + u - g->pad;
                if (iy < 0 || iy >= g->H) continue;
                for (int v = 0; v < K; v++) {
                    int ix = ox * g->stride + v - g->pad;
                    if (ix < 0 || ix >= g->W) continue;
                    for (int c = 0; c < Ci; c++) {
                        int n = level_of[img[c * plane + (size_t)iy * g->W + ix]];
                        const int32_t *restrict t = lut + ((((size_t)c * K + u) * K + v) * L + n) * O;
                        for (int o = 0; o < O; o++) acc[o] += t[o];
                    }
                }
            }
        }
        const int64_t *scrow = NULL;
        FB(post_row)(st, s->rowacc, dst + (size_t)oy * Wo * O, scrow, Wo);
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
#undef FB_LDOT
#undef FB_LDOT_BODY
#undef FB
#undef FB_CAT
#undef FB_CAT2
