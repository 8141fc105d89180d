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

/* switch cases with a constant window size (64-bit words) for the common layers, so the
 * compiler keeps the window in registers: BODY(n) then END (break / return) */
#define FB_NK_CASES(BODY, END)                                                 \
    case 1: BODY(1) END;                                                       \
    case 2: BODY(2) END;                                                       \
    case 3: BODY(3) END;                                                       \
    case 4: BODY(4) END;                                                       \
    case 5: BODY(5) END;                                                       \
    case 9: BODY(9) END;                                                       \
    case 18: BODY(18) END;

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
 * Bit planes are stored with a ring of ``pad`` zero pixels around the image,
 * so every window is gathered the same way, without bounds tests. A padded
 * tap then holds 0 bits, and (x ^ w) counts the weight's ones there as
 * disagreements; cr[o] (per border class of the output pixel) is exactly
 * that count, so for the valid taps
 *     d = popcount(x ^ w) - cr[o],    S = n_valid - 2 d
 * which is the golden zero-padding semantics (padded taps contribute 0).
 */
#define FB_DOT_LOOP(NK, EXPR_M, EXPR_L)                                        \
    for (int o = 0; o < O; o++) {                                              \
        const uint64_t *wo = wts + (size_t)o * (NK);                           \
        int dm = 0, dl = 0;                                                    \
        for (int j = 0; j < (NK); j++) {                                       \
            dm += __builtin_popcountll(EXPR_M);                                \
            dl += __builtin_popcountll(EXPR_L);                                \
        }                                                                      \
        sm[o] = nvalid - 2 * (dm - cr[o]);                                     \
        sl[o] = nvalid - 2 * (dl - cr[o]);                                     \
    }
#define FB_DOT_BODY(NK)                                                        \
    if (two) { FB_DOT_LOOP(NK, xm[j] ^ wo[j], xl[j] ^ wo[j]) }                 \
    else { FB_DOT_LOOP(NK, xm[j] ^ wo[j], 0) }

static void FB(dot_planes)(const uint64_t *restrict xm, const uint64_t *restrict xl, const int32_t *restrict cr,
                           int two, const uint64_t *restrict wts, int nK, int O, int nvalid,
                           int32_t *restrict sm, int32_t *restrict sl)
{
    /* constant trip counts for the common sizes keep the window in registers */
    switch (nK) {
    FB_NK_CASES(FB_DOT_BODY, break)
    default: FB_DOT_BODY(nK) break;
    }
}

#ifdef FB_USE_AVX2
/* Byte-wise popcount of 32 bytes: two 4-bit table lookups (vpshufb). */
/* Bits set in each 4-bit value, twice (one per 128-bit lane): the shuffle table of popcnt8. */
static inline __m256i FB(nibble_table)(void)
{
    return _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
}

static inline __m256i FB(popcnt8)(__m256i v, __m256i table, __m256i low4)
{
    __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
}

/* frac_conv's A = 2 S_M + open S_L for 8 (4) output channels, open = S_M > gate (all open when ``gate`` is
 * NULL); adds the open gates to *opened. */
static inline __m256i FB(frac_acc8)(__m256i sm, __m256i sl, const int32_t *gate, int *opened)
{
    if (gate) {
        const __m256i open = _mm256_cmpgt_epi32(sm, _mm256_loadu_si256((const __m256i *)gate));
        *opened += __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(open)));
        sl = _mm256_and_si256(sl, open);
    }
    return _mm256_add_epi32(_mm256_add_epi32(sm, sm), sl);
}

static inline __m128i FB(frac_acc4)(__m128i sm, __m128i sl, const int32_t *gate, int *opened)
{
    if (gate) {
        const __m128i open = _mm_cmpgt_epi32(sm, _mm_loadu_si128((const __m128i *)gate));
        *opened += __builtin_popcount((unsigned)_mm_movemask_ps(_mm_castsi128_ps(open)));
        sl = _mm_and_si128(sl, open);
    }
    return _mm_add_epi32(_mm_add_epi32(sm, sm), sl);
}

/* Same sums as dot_planes, 4 output channels per 256-bit vector. Weights are
 * in the 4-channel interleaved order wT[((o/4) * nK + j) * 4 + o % 4], so a
 * load gives word j of 4 channels; the window word is broadcast. Byte counts
 * are folded into 64-bit lanes (vpsadbw) before they could overflow. */
/* one group of 4 output channels over NK window words (NK <= 31: byte counts cannot overflow) */
#define FB_DOT4_BODY(NK)                                                                                      \
    {                                                                                                         \
        __m256i bm[(NK) > 0 ? (NK) : 1], bl[(NK) > 0 ? (NK) : 1];                                            \
        for (int j = 0; j < (NK); j++) {                                                                      \
            bm[j] = _mm256_set1_epi64x((long long)xm[j]);                                                     \
            bl[j] = two ? _mm256_set1_epi64x((long long)xl[j]) : zero;                                        \
        }                                                                                                     \
        for (int ob = 0; ob < O; ob += 4) {                                                                   \
            const __m256i *w = (const __m256i *)(wT + (size_t)ob * (NK));                                     \
            __m256i am = zero, al = zero;                                                                     \
            for (int j = 0; j < (NK); j++) {                                                                  \
                __m256i wj = _mm256_loadu_si256(w + j);                                                       \
                am = _mm256_add_epi8(am, FB(popcnt8)(_mm256_xor_si256(wj, bm[j]), table, low4));              \
                if (two) al = _mm256_add_epi8(al, FB(popcnt8)(_mm256_xor_si256(wj, bl[j]), table, low4));     \
            }                                                                                                 \
            FB_DOT4_STORE(_mm256_sad_epu8(am, zero), _mm256_sad_epu8(al, zero));                              \
        }                                                                                                     \
    }

/* 8 output channels (two interleaved groups of 4) per step, for O % 8 == 0: independent
 * accumulator chains, the LSB plane of the second group counted with scalar POPCNT (the
 * integer units work alongside the vector ones), and the 8 sums combined into the
 * accumulator with 256-bit ops */
#define FB_DOT8_BODY(NK)                                                                                      \
    {                                                                                                         \
        __m256i bm[(NK) > 0 ? (NK) : 1], bl[(NK) > 0 ? (NK) : 1];                                            \
        for (int j = 0; j < (NK); j++) {                                                                      \
            bm[j] = _mm256_set1_epi64x((long long)xm[j]);                                                     \
            bl[j] = two ? _mm256_set1_epi64x((long long)xl[j]) : zero;                                        \
        }                                                                                                     \
        for (int ob = 0; ob < O; ob += 8) {                                                                   \
            const __m256i *wa = (const __m256i *)(wT + (size_t)ob * (NK)), *wb = wa + (NK);                   \
            __m256i ama = zero, ala = zero, amb = zero;                                                       \
            /* group B's LSB plane with scalar POPCNT: the integer units count alongside the vector ones */  \
            const uint64_t *wbs = (const uint64_t *)wb;                                                       \
            int d0 = 0, d1 = 0, d2 = 0, d3 = 0;                                                               \
            for (int j = 0; j < (NK); j++) {                                                                  \
                __m256i wj = _mm256_loadu_si256(wa + j), wk = _mm256_loadu_si256(wb + j);                     \
                ama = _mm256_add_epi8(ama, FB(popcnt8)(_mm256_xor_si256(wj, bm[j]), table, low4));            \
                amb = _mm256_add_epi8(amb, FB(popcnt8)(_mm256_xor_si256(wk, bm[j]), table, low4));            \
                if (two) {                                                                                    \
                    ala = _mm256_add_epi8(ala, FB(popcnt8)(_mm256_xor_si256(wj, bl[j]), table, low4));        \
                    d0 += __builtin_popcountll(xl[j] ^ wbs[4 * j]);                                           \
                    d1 += __builtin_popcountll(xl[j] ^ wbs[4 * j + 1]);                                       \
                    d2 += __builtin_popcountll(xl[j] ^ wbs[4 * j + 2]);                                       \
                    d3 += __builtin_popcountll(xl[j] ^ wbs[4 * j + 3]);                                       \
                }                                                                                             \
            }                                                                                                 \
            FB_DOT8_STORE(ama, amb, ala, _mm_set_epi64x((long long)((uint32_t)d2 | (uint64_t)(uint32_t)d3 << 32), (long long)((uint32_t)d0 | (uint64_t)(uint32_t)d1 << 32)));                                     \
        }                                                                                                     \
    }

/* 4 counts in the low 32 bits of each 64-bit lane -> S = n_valid - 2 (d - cr), combined
 * straight into the accumulator: S_M (one plane), 2 S_M + S_L (two planes), or with the
 * gate 2 S_M + [S_M > t] S_L, the open gates counted */
#define FB_DOT4_STORE(TM, TL)                                                                                  \
do {                                                                                                       \
    const __m128i c4 = _mm_loadu_si128((const __m128i *)(cr + ob));                                        \
    __m128i dm = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32((TM), pick));                          \
    __m128i sm4 = _mm_sub_epi32(nv, _mm_slli_epi32(_mm_sub_epi32(dm, c4), 1));                             \
    if (two) {                                                                                             \
        __m128i dl = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32((TL), pick));                      \
        sm4 = FB(frac_acc4)(sm4, _mm_sub_epi32(nv, _mm_slli_epi32(_mm_sub_epi32(dl, c4), 1)),               \
                            g32 ? g32 + ob : NULL, &opened);                                               \
    }                                                                                                      \
    _mm_storeu_si128((__m128i *)(acc + ob), sm4);                                                          \
} while (0)
/* byte counts of groups A (channels ob..ob+3) and B (ob+4..ob+7) -> lanes A0 B0 A1 B1 ... as
 * int32 (each count < 2^16), then in channel order */
#define FB_DOT8_SUMS(A, B)                                                                                     \
_mm256_permutevar8x32_epi32(_mm256_or_si256(_mm256_sad_epu8((A), zero),                                   \
                                            _mm256_slli_epi64(_mm256_sad_epu8((B), zero), 32)), pick)
#define FB_DOT8_STORE(AMA, AMB, ALA, ALB)                                                                      \
do {                                                                                                       \
    const __m256i c8 = _mm256_loadu_si256((const __m256i *)(cr + ob));                                     \
    __m256i sm8 = _mm256_sub_epi32(nv8, _mm256_slli_epi32(_mm256_sub_epi32(FB_DOT8_SUMS(AMA, AMB), c8), 1)); \
    if (two) {                                                                                             \
        __m256i dl8 = _mm256_inserti128_si256(                                                             \
            _mm256_permutevar8x32_epi32(_mm256_sad_epu8((ALA), zero), pick), (ALB), 1);                    \
        sm8 = FB(frac_acc8)(sm8, _mm256_sub_epi32(nv8, _mm256_slli_epi32(_mm256_sub_epi32(dl8, c8), 1)),    \
                            g32 ? g32 + ob : NULL, &opened);                                               \
    }                                                                                                      \
    _mm256_storeu_si256((__m256i *)(acc + ob), sm8);                                                       \
} while (0)
static int FB(dot4)(const uint64_t *restrict xm, const uint64_t *restrict xl, const int32_t *restrict cr, int two,
                    const uint64_t *restrict wT, int nK, int O, int nvalid, int32_t *restrict acc,
                    const int32_t *restrict g32)
{
    const __m256i table = FB(nibble_table)();
    const __m256i low4 = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m128i nv = _mm_set1_epi32(nvalid);
    int opened = 0;
    if (O % 8 == 0) {
        const __m256i nv8 = _mm256_set1_epi32(nvalid);
        switch (nK) {
        FB_NK_CASES(FB_DOT8_BODY, return opened)
        default: break;
        }
    }
    switch (nK) { /* constant trip counts: broadcasts and loop stay in registers */
    FB_NK_CASES(FB_DOT4_BODY, return opened)
    default: break;
    }
    for (int ob = 0; ob < O; ob += 4) {
        const __m256i *w = (const __m256i *)(wT + (size_t)ob * nK);
        __m256i tm = zero, tl = zero;
        for (int j0 = 0; j0 < nK; j0 += 31) { /* at most 31 * 8 = 248 per byte */
            const int j1 = j0 + 31 < nK ? j0 + 31 : nK;
            __m256i am = zero, al = zero;
            for (int j = j0; j < j1; j++) {
                __m256i wj = _mm256_loadu_si256(w + j);
                am = _mm256_add_epi8(am, FB(popcnt8)(_mm256_xor_si256(wj, _mm256_set1_epi64x((long long)xm[j])),
                                                     table, low4));
                if (two)
                    al = _mm256_add_epi8(al, FB(popcnt8)(_mm256_xor_si256(wj, _mm256_set1_epi64x((long long)xl[j])),
                                                         table, low4));
            }
            tm = _mm256_add_epi64(tm, _mm256_sad_epu8(am, zero));
            if (two) tl = _mm256_add_epi64(tl, _mm256_sad_epu8(al, zero));
        }
        FB_DOT4_STORE(tm, tl);
    }
    return opened;
}
#endif

/* LSB sums only for the output channels listed in idx (the open gates):
 * acc[o] += S_L(o). The list is built branch-free, so the data-dependent
 * gate costs no branch per output, and closed gates cost no LSB work. */
#define FB_LDOT(NK)                                                            \
    for (int k = 0; k < nopen; k++) {                                          \
        const int o = idx[k];                                                  \
        const uint64_t *wo = wts + (size_t)o * (NK);                           \
        int dl = 0;                                                            \
        for (int j = 0; j < (NK); j++) dl += __builtin_popcountll(xl[j] ^ wo[j]); \
        acc[o] += nvalid - 2 * (dl - cr[o]);                                   \
    }

static void FB(lsb_sparse)(const uint64_t *restrict xl, const int32_t *restrict cr, const uint64_t *restrict wts,
                           int nK, const int *restrict idx, int nopen, int nvalid, int32_t *restrict acc)
{
    switch (nK) {
    FB_NK_CASES(FB_LDOT, break)
    default: FB_LDOT(nK) break;
    }
}

/* Gather the K x K window of output pixel (oy, ox) from the zero-ringed
 * plane(s) into dense bit vectors (tap-major, channels inside: the order the
 * weights are packed in). CC is the channel count when it is 16, 32 or 64
 * (a tap never straddles two words), or 0 for the general bit append. */
#define FB_GATHER(CC)                                                                             \
    static void FB(gather_##CC)(const fb_conv_geom *g, const uint64_t *pm, const uint64_t *pl,   \
                                int oy, int ox, uint64_t *restrict xm, uint64_t *restrict xl)     \
    {                                                                                             \
        const int C = (CC) ? (CC) : g->Cin, K = g->K, Wp = g->Wp, wpp = (CC) ? 1 : g->wpp;        \
        for (int i = 0; i <= g->nK; i++) { xm[i] = 0; if (pl) xl[i] = 0; }                        \
        int pos = 0;                                                                              \
        for (int u = 0; u < K; u++) {                                                             \
            size_t at = ((size_t)(oy * g->stride + u) * Wp + (size_t)ox * g->stride) * wpp;       \
            for (int v = 0; v < K; v++, pos += C, at += wpp) {                                    \
                if ((CC) == 64) {                                                                 \
                    xm[pos >> 6] = pm[at];                                                        \
                    if (pl) xl[pos >> 6] = pl[at];                                                \
                } else if (CC) {                                                                  \
                    xm[pos >> 6] |= pm[at] << (pos & 63);                                         \
                    if (pl) xl[pos >> 6] |= pl[at] << (pos & 63);                                 \
                } else {                                                                          \
                    FB(bits_append)(xm, pm + at, C, pos);                                         \
                    if (pl) FB(bits_append)(xl, pl + at, C, pos);                                 \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }
FB_GATHER(16)
FB_GATHER(32)
FB_GATHER(64)
FB_GATHER(0)

/* 3 x 3 windows of 16, 32 or 64 channels (one word per pixel): the window words are
 * assembled in registers, tap t = 3 u + v at bit t * C as in the general gather. */
#define FB_P(u, v) p[(size_t)(u) * Wp + (v)]
#define FB_WIN3(CC, x)                                                                                         \
    do {                                                                                                       \
        if ((CC) == 16) {                                                                                      \
            x[0] = FB_P(0, 0) | FB_P(0, 1) << 16 | FB_P(0, 2) << 32 | FB_P(1, 0) << 48;                        \
            x[1] = FB_P(1, 1) | FB_P(1, 2) << 16 | FB_P(2, 0) << 32 | FB_P(2, 1) << 48;                        \
            x[2] = FB_P(2, 2);                                                                                 \
        } else if ((CC) == 32) {                                                                               \
            x[0] = FB_P(0, 0) | FB_P(0, 1) << 32;                                                              \
            x[1] = FB_P(0, 2) | FB_P(1, 0) << 32;                                                              \
            x[2] = FB_P(1, 1) | FB_P(1, 2) << 32;                                                              \
            x[3] = FB_P(2, 0) | FB_P(2, 1) << 32;                                                              \
            x[4] = FB_P(2, 2);                                                                                 \
        } else {                                                                                               \
            x[0] = FB_P(0, 0); x[1] = FB_P(0, 1); x[2] = FB_P(0, 2);                                           \
            x[3] = FB_P(1, 0); x[4] = FB_P(1, 1); x[5] = FB_P(1, 2);                                           \
            x[6] = FB_P(2, 0); x[7] = FB_P(2, 1); x[8] = FB_P(2, 2);                                           \
        }                                                                                                      \
    } while (0)
#define FB_GATHER3(CC)                                                                            \
    static void FB(gather3_##CC)(const fb_conv_geom *g, const uint64_t *pm, const uint64_t *pl,  \
                                 int oy, int ox, uint64_t *restrict xm, uint64_t *restrict xl)    \
    {                                                                                             \
        const size_t Wp = (size_t)g->Wp;                                                          \
        const size_t at = (size_t)(oy * g->stride) * Wp + (size_t)ox * g->stride;                 \
        const uint64_t *restrict p = pm + at;                                                     \
        FB_WIN3(CC, xm);                                                                          \
        if (pl) { p = pl + at; FB_WIN3(CC, xl); }                                                 \
    }
FB_GATHER3(16)
FB_GATHER3(32)
FB_GATHER3(64)
#undef FB_GATHER3

static inline void FB(gather)(const fb_conv_geom *g, const uint64_t *pm, const uint64_t *pl, int oy, int ox,
                              uint64_t *xm, uint64_t *xl)
{
    if (g->K == 3)
        switch (g->Cin) {
        case 16: FB(gather3_16)(g, pm, pl, oy, ox, xm, xl); return;
        case 32: FB(gather3_32)(g, pm, pl, oy, ox, xm, xl); return;
        case 64: FB(gather3_64)(g, pm, pl, oy, ox, xm, xl); return;
        default: break;
        }
    switch (g->Cin) {
    case 16: FB(gather_16)(g, pm, pl, oy, ox, xm, xl); break;
    case 32: FB(gather_32)(g, pm, pl, oy, ox, xm, xl); break;
    case 64: FB(gather_64)(g, pm, pl, oy, ox, xm, xl); break;
    default: FB(gather_0)(g, pm, pl, oy, ox, xm, xl); break;
    }
}

/* border class of output pixel (oy, ox): its padded-tap correction and valid bit count */
#define FB_BORDER(g, oy, ox, cr, nvalid)                                       \
    do {                                                                       \
        int ci_ = (g)->row_cls[oy] * (g)->ncc + (g)->col_cls[ox];              \
        cr = (g)->corr + (size_t)ci_ * (g)->O;                                 \
        nvalid = (g)->nvalid[ci_];                                             \
    } while (0)

#ifdef FB_USE_AVX2
/* One output row of a 3 x 3 conv over 16, 32 or 64 input channels (one word per pixel), O % 8 == 0:
 * window assembly and the 8-channel dot (FB_DOT8_BODY, the same sums as dot4) fused per pixel, with
 * the constants hoisted out of the pixel loop. Small layers spend as long calling gather and dot4
 * per pixel as counting bits, so this is the path ResNet-20's layers take. Returns the open gates. */
#define FB_ROW3_LOOP(CC, NK, OUT)                                                                              \
        for (int ox = 0; ox < g->Wo; ox++) {                                                                   \
            const int O = (OUT);                                                                               \
            const int32_t *cr;                                                                                 \
            int nvalid;                                                                                        \
            FB_BORDER(g, oy, ox, cr, nvalid);                                                                  \
            const __m256i nv8 = _mm256_set1_epi32(nvalid);                                                     \
            uint64_t xm[NK], xl[NK];                                                                           \
            const size_t at = (size_t)(oy * g->stride) * Wp + (size_t)ox * g->stride;                          \
            const uint64_t *restrict p = pm + at;                                                              \
            FB_WIN3(CC, xm);                                                                                   \
            if (two) { p = pl + at; FB_WIN3(CC, xl); }                                                         \
            else for (int j = 0; j < (NK); j++) xl[j] = 0;                                                     \
            int32_t *restrict acc = rowacc + (size_t)ox * O;                                                   \
            FB_DOT8_BODY(NK)                                                                                   \
        }
#define FB_ROW3(CC, NK)                                                                                        \
    static int FB(row3_##CC)(const fb_conv_geom *g, const uint64_t *pm, const uint64_t *pl, int two, int oy,    \
                             const uint64_t *restrict wT, int32_t *restrict rowacc, const int32_t *restrict g32) \
    {                                                                                                          \
        const __m256i table = FB(nibble_table)();                                                              \
        const __m256i low4 = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();                            \
        const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);                                        \
        const size_t Wp = (size_t)g->Wp;                                                                       \
        int opened = 0;                                                                                        \
        /* as many output channels as input channels (most layers): a constant channel loop */                 \
        if (g->O == (CC)) FB_ROW3_LOOP(CC, NK, CC)                                                             \
        else FB_ROW3_LOOP(CC, NK, g->O)                                                                        \
        return opened;                                                                                         \
    }
FB_ROW3(16, 3)
FB_ROW3(32, 5)
FB_ROW3(64, 9)
#undef FB_ROW3
#undef FB_ROW3_LOOP
#endif
#undef FB_WIN3
#undef FB_P
#ifdef FB_USE_AVX2
/* Plane indices of the 3 x 3 window of output pixel (oy, ox) in a padded plane, tap t = 3 ky + kx. */
static inline void FB(window_taps)(const fb_conv_geom *g, int oy, int ox, size_t taps[9])
{
    const size_t Wp = (size_t)g->Wp, at = (size_t)(oy * g->stride) * Wp + (size_t)ox * g->stride;
    for (int t = 0; t < 9; t++) taps[t] = at + (size_t)(t / 3) * Wp + t % 3;
}

/* taps16_row for 32 input channels, O % 8 == 0 (taps32_tables): a tap is 32 bits, 8 output channels per
 * vector in 32-bit lanes; two multiply-adds with ones sum each lane's four byte counts. (row3_32 packs 2
 * taps per word: its 5-word window has 32 empty bits, and it reduces 8 channels from 64-bit lanes with
 * permutes.) Returns the open gates. */
static int FB(taps32_row)(const fb_step *st, const uint64_t *pm, const uint64_t *pl, int two, int oy,
                          int32_t *restrict rowacc, const int32_t *restrict g32)
{
    const fb_conv_geom *g = &st->g;
    const __m256i table = FB(nibble_table)();
    const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    const int O = g->O;
    const int rc = g->row_cls[oy] * g->ncc;
    int opened = 0;
    for (int ox = 0; ox < g->Wo; ox++) {
        const int32_t *restrict kc = st->kc32 + (size_t)(rc + g->col_cls[ox]) * O;
        size_t taps[9];
        FB(window_taps)(g, oy, ox, taps);
        __m256i xm[9], xl[9];
        for (int t = 0; t < 9; t++) { /* the low 32 bits of each plane word (little-endian) */
            const size_t q = taps[t];
            xm[t] = _mm256_set1_epi32((int)(uint32_t)pm[q]);
            xl[t] = two ? _mm256_set1_epi32((int)(uint32_t)pl[q]) : xm[t];
        }
        for (int ob = 0; ob < O; ob += 8) {
            const __m256i *w = (const __m256i *)(st->w32 + (size_t)ob * 9);
            __m256i am = _mm256_setzero_si256(), al = am;
            for (int t = 0; t < 9; t++) {
                const __m256i wt = _mm256_loadu_si256(w + t);
                am = _mm256_add_epi8(am, FB(popcnt8)(_mm256_xor_si256(wt, xm[t]), table, low4));
                if (two) al = _mm256_add_epi8(al, FB(popcnt8)(_mm256_xor_si256(wt, xl[t]), table, low4));
            }
            const __m256i k = _mm256_loadu_si256((const __m256i *)(kc + ob));
            const __m256i dm = _mm256_madd_epi16(_mm256_maddubs_epi16(am, ones), ones16);
            __m256i a = _mm256_sub_epi32(k, _mm256_add_epi32(dm, dm)); /* S_M */
            if (two) {
                const __m256i dl = _mm256_madd_epi16(_mm256_maddubs_epi16(al, ones), ones16);
                a = FB(frac_acc8)(a, _mm256_sub_epi32(k, _mm256_add_epi32(dl, dl)), g32 ? g32 + ob : NULL, &opened);
            }
            _mm256_storeu_si256((__m256i *)(rowacc + (size_t)ox * O + ob), a);
        }
    }
    return opened;
}
#endif
#ifdef FB_USE_AVX2
/* One output row of a 3 x 3 conv over 16 input channels, O % 16 == 0 (taps16_tables): tap-wise, 16
 * output channels per vector in 16-bit lanes. A tap of a pixel is 16 bits (its plane word), broadcast to
 * the 16 lanes and XORed with that tap's weights of 16 output channels; the byte counts of the 9 taps add
 * up (at most 72 per byte) and one multiply-add with ones sums each lane's two bytes. The row3 layout
 * packs 4 taps per 64-bit word and leaves 48 of the 192 window bits empty (the 9th tap alone in a word),
 * and reduces 8 channels at a time from 64-bit lanes; here every counted bit is a window bit and the
 * arithmetic after the counts (S = n_valid + 2 corr - 2 d, the gate, 2 S_M + S_L) runs on 16 channels
 * per op, exactly (|S| <= 144, |A| <= 432). Returns the open gates. */
static int FB(taps16_row)(const fb_step *st, const uint64_t *pm, const uint64_t *pl, int two, int oy,
                          int32_t *restrict rowacc, int gated)
{
    const fb_conv_geom *g = &st->g;
    const __m256i table = FB(nibble_table)();
    const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi8(1);
    const int O = g->O;
    const int rc = g->row_cls[oy] * g->ncc;
    int opened = 0;
    for (int ox = 0; ox < g->Wo; ox++) {
        const int16_t *restrict kc = st->kc16 + (size_t)(rc + g->col_cls[ox]) * O;
        size_t taps[9];
        FB(window_taps)(g, oy, ox, taps);
        __m256i xm[9], xl[9];
        for (int t = 0; t < 9; t++) { /* the low 16 bits of each plane word (little-endian) */
            const size_t q = taps[t];
            xm[t] = _mm256_broadcastw_epi16(_mm_loadu_si16(pm + q));
            xl[t] = two ? _mm256_broadcastw_epi16(_mm_loadu_si16(pl + q)) : xm[t];
        }
        for (int ob = 0; ob < O; ob += 16) {
            const __m256i *w = (const __m256i *)(st->w16 + (size_t)ob * 9);
            __m256i am = _mm256_setzero_si256(), al = am;
            for (int t = 0; t < 9; t++) {
                const __m256i wt = _mm256_loadu_si256(w + t);
                am = _mm256_add_epi8(am, FB(popcnt8)(_mm256_xor_si256(wt, xm[t]), table, low4));
                if (two) al = _mm256_add_epi8(al, FB(popcnt8)(_mm256_xor_si256(wt, xl[t]), table, low4));
            }
            const __m256i k = _mm256_loadu_si256((const __m256i *)(kc + ob));
            const __m256i dm = _mm256_maddubs_epi16(am, ones);
            __m256i a = _mm256_sub_epi16(k, _mm256_add_epi16(dm, dm)); /* S_M */
            if (two) {
                const __m256i dl = _mm256_maddubs_epi16(al, ones);
                __m256i sl = _mm256_sub_epi16(k, _mm256_add_epi16(dl, dl));
                if (gated) {
                    const __m256i open = _mm256_cmpgt_epi16(a, _mm256_loadu_si256((const __m256i *)(st->g16 + ob)));
                    opened += __builtin_popcount((unsigned)_mm256_movemask_epi8(open)) >> 1;
                    sl = _mm256_and_si256(sl, open);
                }
                a = _mm256_add_epi16(_mm256_add_epi16(a, a), sl);
            }
            int32_t *acc = rowacc + (size_t)ox * O + ob;
            _mm256_storeu_si256((__m256i *)acc, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a)));
            _mm256_storeu_si256((__m256i *)(acc + 8), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a, 1)));
        }
    }
    return opened;
}
#endif

/* ---- the primitive: plain packed binary convolution (tests, tools) ---- */

static void FB(binconv_rows)(const fb_conv_geom *g, const uint64_t *planes, const uint64_t *wts, int32_t *out,
                             int oy0, int oy1, fb_scratch *s)
{
    for (int oy = oy0; oy < oy1; oy++)
        for (int ox = 0; ox < g->Wo; ox++) {
            const int32_t *cr;
            int nvalid;
            FB_BORDER(g, oy, ox, cr, nvalid);
            FB(gather)(g, planes, NULL, oy, ox, s->xm, s->xl);
            int32_t *dst = out + ((size_t)oy * g->Wo + ox) * g->O;
            FB(dot_planes)(s->xm, s->xl, cr, 0, wts, g->nK, g->O, nvalid, dst, s->sl);
        }
}

/* ---- quantization of a residual buffer into packed bit planes ---------- */

/* n pixels from src (HWC int64) into consecutive pixels of pm / pl */
static void FB(quantize_pixels)(const fb_step *st, const int64_t *src, uint64_t *pm, uint64_t *pl, int n_pix)
{
    const int C = st->g.Cin, wpp = st->g.wpp, two = st->qbits == 2;
    const int64_t b = (int64_t)((uint64_t)1 << (st->frac_bits + 1));
    (void)b; /* the vector paths' bound; the scalar tails use fbi_quantize2_code */
#ifdef FB_USE_AVX2
    if (st->q32 && two && (C == 16 || C == 32 || C == 64)) {
        /* one word per pixel, two planes: the q32 loop below with its per-pixel bookkeeping hoisted, and
         * a constant channel count (CC) so the loop over a pixel's channels is unrolled */
        const __m256i vb32 = _mm256_set1_epi32((int)b), vnb32 = _mm256_set1_epi32((int)-b);
#define FB_Q2_PIXELS(CC)                                                                                       \
        for (int p = 0; p < n_pix; p++) {                                                                      \
            const int64_t *restrict r = src + (size_t)p * (CC);                                                \
            uint64_t m = 0, l = 0;                                                                             \
            for (int c = 0; c < (CC); c += 8) {                                                                \
                __m256 lo2 = _mm256_shuffle_ps(_mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(r + c))), \
                                               _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(r + c + 4))), \
                                               _MM_SHUFFLE(2, 0, 2, 0));                                       \
                __m256i v = _mm256_permute4x64_epi64(_mm256_castps_si256(lo2), _MM_SHUFFLE(3, 1, 2, 0));       \
                __m256i t = _mm256_add_epi32(_mm256_add_epi32(v, v), v);                                       \
                __m256i x = _mm256_xor_si256(_mm256_xor_si256(_mm256_cmpgt_epi32(t, vnb32), v), _mm256_cmpgt_epi32(t, vb32)); \
                m |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(v)) << c;                      \
                l |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(x)) << c;                      \
            }                                                                                                  \
            const uint64_t full = (CC) == 64 ? ~(uint64_t)0 : (((uint64_t)1 << ((CC) & 63)) - 1);              \
            pm[p] = ~m & full;                                                                                 \
            pl[p] = ~l & full;                                                                                 \
        }
        if (C == 16) FB_Q2_PIXELS(16)
        else if (C == 32) FB_Q2_PIXELS(32)
        else FB_Q2_PIXELS(64)
#undef FB_Q2_PIXELS
        return;
    }
#endif
    for (int p = 0; p < n_pix; p++) {
        const int64_t *restrict r = src + (size_t)p * C;
        uint64_t *restrict dm = pm + (size_t)p * wpp, *restrict dl = pl + (size_t)p * wpp;
        for (int w = 0; w < wpp; w++) {
            uint64_t m = 0, l = 0;
            const int c0 = w * 64, n = C - c0 < 64 ? C - c0 : 64;
            int c = 0;
#ifdef FB_USE_AVX2
            if (st->q32) {
                /* 8 values per step on their low 32 bits (exact, see q32): the sign bits give the MSB
                 * plane, the LSB is [3r > -b] ^ [r >= 0] ^ [3r > b] = NOT ([3r > -b] ^ sign(r) ^ [3r > b]) */
                const __m256i vb32 = _mm256_set1_epi32((int)b), vnb32 = _mm256_set1_epi32((int)-b);
                for (; c + 8 <= n; c += 8) {
                    __m256 lo2 = _mm256_shuffle_ps(_mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(r + c0 + c))),
                                                   _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(r + c0 + c + 4))),
                                                   _MM_SHUFFLE(2, 0, 2, 0));
                    __m256i v = _mm256_permute4x64_epi64(_mm256_castps_si256(lo2), _MM_SHUFFLE(3, 1, 2, 0));
                    m |= (uint64_t)(~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(v)) & 0xffu) << c;
                    if (two) {
                        __m256i t = _mm256_add_epi32(_mm256_add_epi32(v, v), v);
                        __m256i x = _mm256_xor_si256(_mm256_xor_si256(_mm256_cmpgt_epi32(t, vnb32), v),
                                                     _mm256_cmpgt_epi32(t, vb32));
                        l |= (uint64_t)(~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(x)) & 0xffu) << c;
                    }
                }
            }
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
            for (int c1 = c; c1 < n; c1++) m |= (uint64_t)fbi_sign_bit(r[c0 + c1]) << c1;
            if (two) {
                /* code = [3r > -b] + [r >= 0] + [3r > b]; its low bit is the XOR of the three */
                for (int c1 = c; c1 < n; c1++) l |= (uint64_t)(fbi_quantize2_code(r[c0 + c1], st->frac_bits) & 1) << c1;
                dl[w] = l;
            }
            dm[w] = m;
        }
    }
}

/* Padded plane rows [yp0, yp1): the zero ring, and the quantized residual inside it. */
static void FB(quantize_rows)(const fb_step *st, const int64_t *src, uint64_t *pm, uint64_t *pl, int yp0, int yp1)
{
    const fb_conv_geom *g = &st->g;
    const int wpp = g->wpp, pad = g->pad, W = g->W, Wp = g->Wp, two = st->qbits == 2;
    for (int yp = yp0; yp < yp1; yp++) {
        uint64_t *rm = pm + (size_t)yp * Wp * wpp, *rl = pl + (size_t)yp * Wp * wpp;
        if (yp < pad || yp >= pad + g->H) {
            memset(rm, 0, (size_t)Wp * wpp * sizeof(uint64_t));
            if (two) memset(rl, 0, (size_t)Wp * wpp * sizeof(uint64_t));
            continue;
        }
        for (int x = 0; x < pad; x++)
            for (int w = 0; w < wpp; w++) {
                rm[(size_t)x * wpp + w] = rm[(size_t)(pad + W + x) * wpp + w] = 0;
                if (two) rl[(size_t)x * wpp + w] = rl[(size_t)(pad + W + x) * wpp + w] = 0;
            }
        FB(quantize_pixels)(st, src + (size_t)(yp - pad) * W * g->Cin, rm + (size_t)pad * wpp, rl + (size_t)pad * wpp, W);
    }
}

/* ---- fixed-point post-processing ---------------------------------------- */

#ifdef FB_USE_AVX2
/* Low 64 bits of x * y per lane (two's-complement wrap, like numpy int64):
 * lo*lo + ((hi(x)*lo(y) + lo(x)*hi(y)) << 32) with 32x32->64 multiplies. */
static inline __m256i FB(mul64)(__m256i x, __m256i y)
{
    __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(x, 32), y),
                                     _mm256_mul_epu32(x, _mm256_srli_epi64(y, 32)));
    return _mm256_add_epi64(_mm256_mul_epu32(x, y), _mm256_slli_epi64(cross, 32));
}

/* Low 64 bits of x * a per lane, for a sign-extended int32 a (two's-complement wrap, like
 * numpy int64): with a = a_lo - 2^32 [a < 0] (a_lo its low 32 bits, unsigned),
 * x a = x_lo a_lo + (x_hi a_lo) 2^32 - x 2^32 [a < 0]  (mod 2^64): two multiplies instead of three. */
static inline __m256i FB(mul64x32)(__m256i x, __m256i a)
{
    __m256i neg = _mm256_srai_epi32(a, 31); /* both halves all ones iff a < 0 (a fits in int32) */
    __m256i cross = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), a);
    return _mm256_sub_epi64(_mm256_add_epi64(_mm256_mul_epu32(x, a), _mm256_slli_epi64(cross, 32)),
                            _mm256_and_si256(_mm256_slli_epi64(x, 32), neg));
}

/* Low 64 bits of m * a per lane for a split multiplier s = (m mod 2^31) | (m >> 31) << 32
 * (fastkernels.c) and an int32 a: (m >> 31) a 2^31 + (m mod 2^31) a, two exact signed products. */
static inline __m256i FB(mul31)(__m256i s, __m256i a)
{
    return _mm256_add_epi64(_mm256_slli_epi64(_mm256_mul_epi32(_mm256_srli_epi64(s, 32), a), 31), _mm256_mul_epi32(s, a));
}

/* block_post for 4 channels before saturation: the scalar formula of post_row, lane by lane. */
static inline __m256i FB(block_post4)(__m256i a, __m256i sign, __m256i thr, __m256i pm, __m256i pa, __m256i nm,
                                      __m256i na, __m256i scm, __m256i sc, __m256i half, __m128i cnt,
                                      __m128i cnt_fill, int shift)
{
    __m256i pos = _mm256_cmpgt_epi64(FB(mul64)(sign, a), thr);
    __m256i m = _mm256_blendv_epi8(nm, pm, pos), b = _mm256_blendv_epi8(na, pa, pos);
    __m256i v = _mm256_add_epi64(_mm256_add_epi64(FB(mul64)(m, a), b), _mm256_add_epi64(FB(mul64)(scm, sc), half));
    if (shift > 0) { /* arithmetic shift right: logical shift, then the sign bits filled in */
        __m256i neg = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
        v = _mm256_or_si256(_mm256_srl_epi64(v, cnt), _mm256_sll_epi64(neg, cnt_fill));
    }
    return v; /* before saturation (post_row clamps and counts) */
}
#endif

/* lane-wise mask ? y : x for 64-bit lane masks (all ones or zero); the pd form reads only each lane's sign
 * bit, so the compiler does not re-derive byte masks from a compare result (it did, one more op) */
#define FB_BLEND64(x, y, mask)                                                                                 \
    _mm256_castpd_si256(_mm256_blendv_pd(_mm256_castsi256_pd(x), _mm256_castsi256_pd(y), _mm256_castsi256_pd(mask)))

/* m a for multipliers stored as m >> mshift (m32, fastkernels.c): one signed product, shifted back (mcnt) */
#define FB_MUL_M32(m, a) _mm256_sll_epi64(_mm256_mul_epi32((m), (a)), mcnt)

/* Round-shift-saturate with the arithmetic shift done as a logical one: with C = 2^(63 - shift)
 * (0 for shift 0), v + 2^63 (mod 2^64, folded into the rounding constant) read unsigned and
 * shifted is floor(v / 2^shift) + C exactly; it is clamped to [lo + C, hi + C] (signed compares
 * are right, it is below 2^63) and C taken off: the golden (v >> shift) clamped to [lo, hi]. */
#define FB_OFFSET_SHIFT                                                                                        \
    const uint64_t off_ = shift > 0 ? (uint64_t)1 << 63 : 0, C_ = shift > 0 ? (uint64_t)1 << (63 - shift) : 0; \
    const __m256i vhalf_c = _mm256_set1_epi64x((long long)(half + off_)),                                      \
                  vlo_c = _mm256_set1_epi64x((long long)((uint64_t)lo + C_)),                                  \
                  vhi_c = _mm256_set1_epi64x((long long)((uint64_t)hi + C_)), vC = _mm256_set1_epi64x((long long)C_); \
    const __m128i cnt = _mm_cvtsi32_si128(shift), mcnt = _mm_cvtsi32_si128(st->mshift)

/* Post op over one output row: acc (Wo x O) -> dst (Wo x O); scrow is the
 * shortcut row (Wo x O, already expanded for avgpool2_dup) or NULL. */
/* Clamp v to [LO, HI] (the same offset as v) and, when counting (nsat), count the lanes that clip. */
#define FB_CLAMP_COUNT(v, LO, HI)                                                                              \
    do {                                                                                                       \
        const __m256i l_ = _mm256_cmpgt_epi64((LO), (v)), h_ = _mm256_cmpgt_epi64((v), (HI));                  \
        if (nsat) ns += __builtin_popcount((unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_or_si256(l_, h_)))); \
        (v) = _mm256_blendv_epi8(_mm256_blendv_epi8((v), (LO), l_), (HI), h_);                                 \
    } while (0)
/* The same clamp counting in a vector (nsv: minus the clipped lanes, each a -1 mask), for the row loops:
 * always counting is cheaper than a branch and a move to the integer unit per vector. */
#define FB_CLAMP_COUNTV(v, LO, HI, nsv)                                                                        \
    do {                                                                                                       \
        const __m256i l_ = _mm256_cmpgt_epi64((LO), (v)), h_ = _mm256_cmpgt_epi64((v), (HI));                  \
        nsv = _mm256_add_epi64(nsv, _mm256_or_si256(l_, h_));                                                  \
        (v) = _mm256_blendv_epi8(_mm256_blendv_epi8((v), (LO), l_), (HI), h_);                                 \
    } while (0)
/* clipped lanes counted by FB_CLAMP_COUNTV */
static inline int64_t FB(count_clipped)(__m256i nsv)
{
    __m128i t = _mm_add_epi64(_mm256_castsi256_si128(nsv), _mm256_extracti128_si256(nsv, 1));
    return -(_mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1));
}

static void FB(post_row)(const fb_step *st, const int32_t *restrict acc, int64_t *restrict dst,
                         const int64_t *restrict scrow, int Wo, int64_t *nsat)
{
    int64_t ns = 0; /* values clipped to the width, added to *nsat (when counting) */
    const int O = st->g.O, shift = st->shift;
    const int64_t hi = (int64_t)((((uint64_t)1) << (st->bits - 1)) - 1), lo = -hi - 1;
    const uint64_t half = shift > 0 ? (uint64_t)1 << (shift - 1) : 0;
    (void)lo; (void)half; /* the vector paths' constants; the scalar loops use fracbnn_int.h */
    if (st->post == FB_POST_SCALE_SHIFT) {
        const int64_t *restrict mul = st->mul, *restrict add = st->add, *restrict mul31 = st->mul31;
        (void)mul31; /* the AVX2 path's split multipliers */
#ifdef FB_USE_AVX2
        if (O % 4 == 0) { /* the accumulator fits in int32: two multiplies per product (mul64x32) */
            FB_OFFSET_SHIFT;
            __m256i nsv = _mm256_setzero_si256();
            /* channel-major: a group's constants stay in registers along the row; one loop per
             * multiplier kind (FB_MUL_M32 / FB_MUL_31 / FB_MUL_64X32), chosen once per row */
#define FB_SCALE_LOOP(MUL)                                                                                     \
            for (int o = 0; o < O; o += 4) {                                                                   \
                const __m256i m = _mm256_loadu_si256((const __m256i *)((mul31 ? mul31 : mul) + o));            \
                const __m256i b = _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(add + o)), vhalf_c);   \
                for (int x = 0; x < Wo; x++) {                                                                 \
                    __m256i a = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(acc + (size_t)x * O + o))); \
                    __m256i v = _mm256_srl_epi64(_mm256_add_epi64(MUL(m, a), b), cnt); /* r + C (FB_OFFSET_SHIFT) */ \
                    FB_CLAMP_COUNTV(v, vlo_c, vhi_c, nsv);                                                     \
                    _mm256_storeu_si256((__m256i *)(dst + (size_t)x * O + o), _mm256_sub_epi64(v, vC));        \
                }                                                                                              \
            }
            if (st->m32) FB_SCALE_LOOP(FB_MUL_M32)
            else if (mul31) FB_SCALE_LOOP(FB(mul31))
            else FB_SCALE_LOOP(FB(mul64x32))
#undef FB_SCALE_LOOP
            ns += FB(count_clipped)(nsv);
            goto done;
        }
#endif
        for (int x = 0; x < Wo; x++, acc += O, dst += O)
            for (int o = 0; o < O; o++) {
                const int64_t r = fbi_scale_shift_raw(acc[o], mul[o], add[o], shift);
                ns += fbi_clips(r, st->bits);
                dst[o] = fbi_saturate(r, st->bits);
            }
        goto done;
    }
    const int64_t *restrict sign = st->sign, *restrict thr = st->thr, *restrict pm = st->pos_mul,
                  *restrict pa = st->pos_add, *restrict nm = st->neg_mul, *restrict na = st->neg_add,
                  *restrict scm = st->sc_mul, *restrict pm31 = st->pm31, *restrict nm31 = st->nm31;
    (void)pm31; (void)nm31; /* the AVX2 path's split multipliers */
#ifdef FB_USE_AVX2
    if (O % 4 == 0) {
        const __m256i vhalf = _mm256_set1_epi64x((long long)half), vlo = _mm256_set1_epi64x(lo),
                      vhi = _mm256_set1_epi64x(hi);
        const __m128i cnt = _mm_cvtsi32_si128(shift), cnt_fill = _mm_cvtsi32_si128(64 - shift);
        if (st->post32) { /* sign, sc_mul and the shortcut fit in int32: exact signed 32x32->64 products */
            FB_OFFSET_SHIFT;
            __m256i nsv = _mm256_setzero_si256();
            /* channel-major: a group's six constant vectors stay in registers along the row; the
             * rounding constant is folded into both additive constants; one loop per multiplier kind */
#define FB_BLOCK_LOOP(MUL)                                                                                     \
            for (int o = 0; o < O; o += 4) {                                                                   \
                const __m256i vt = FB_LD(ft), vscm = FB_LD(scm);                                               \
                const __m256i vla = _mm256_add_epi64(FB_LD(fla), vhalf_c), vga = _mm256_add_epi64(FB_LD(fga), vhalf_c); \
                const __m256i vlm = FB_LD(flm), vgm = FB_LD(fgm);                                              \
                for (int x = 0; x < Wo; x++) {                                                                 \
                    const size_t at = (size_t)x * O + o;                                                       \
                    __m256i a = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(acc + at)));           \
                    __m256i gt = _mm256_cmpgt_epi64(a, vt); /* the sign test, folded (fold_branches) */        \
                    __m256i b = FB_BLEND64(vla, vga, gt);                                                      \
                    const __m256i ms = FB_BLEND64(vlm, vgm, gt);                                               \
                    __m256i v = _mm256_add_epi64(_mm256_add_epi64(MUL(ms, a), b),                              \
                                                 _mm256_mul_epi32(vscm, _mm256_loadu_si256((const __m256i *)(scrow + at)))); \
                    v = _mm256_srl_epi64(v, cnt); /* r + C, unsigned (see FB_OFFSET_SHIFT) */                  \
                    FB_CLAMP_COUNTV(v, vlo_c, vhi_c, nsv);                                                     \
                    _mm256_storeu_si256((__m256i *)(dst + at), _mm256_sub_epi64(v, vC));                       \
                }                                                                                              \
            }
#define FB_LD(p) _mm256_loadu_si256((const __m256i *)((p) + o))
            const int64_t *ft = st->fold, *fgm = ft + O, *fga = ft + 2 * O, *flm = ft + 3 * O, *fla = ft + 4 * O;
            if (st->m32) FB_BLOCK_LOOP(FB_MUL_M32)
            else if (pm31) FB_BLOCK_LOOP(FB(mul31))
            else FB_BLOCK_LOOP(FB(mul64x32))
#undef FB_LD
#undef FB_BLOCK_LOOP
            ns += FB(count_clipped)(nsv);
            goto done;
        }
        for (int x = 0; x < Wo; x++, acc += O, dst += O, scrow += O)
            for (int o = 0; o < O; o += 4) {
#define LD(p) _mm256_loadu_si256((const __m256i *)((p) + o))
                __m256i a = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(acc + o)));
                __m256i r = FB(block_post4)(a, LD(sign), LD(thr), LD(pm), LD(pa), LD(nm), LD(na), LD(scm), LD(scrow),
                                            vhalf, cnt, cnt_fill, shift);
#undef LD
                FB_CLAMP_COUNT(r, vlo, vhi);
                _mm256_storeu_si256((__m256i *)(dst + o), r);
            }
        goto done;
    }
#endif
    for (int x = 0; x < Wo; x++, acc += O, dst += O, scrow += O)
        for (int o = 0; o < O; o++) {
            const int64_t r = fbi_block_post_raw(acc[o], sign[o], thr[o], pm[o], pa[o], nm[o], na[o], scm[o], scrow[o],
                                                 shift);
            ns += fbi_clips(r, st->bits);
            dst[o] = fbi_saturate(r, st->bits);
        }
done:
    if (nsat) *nsat += ns;
}

/* Code v = 2c - L of the k-bit quantize op (L = 2^k - 1) on residual r with F fraction bits, as the golden
 * uniform_code: c = clamp(floor((L (r + 2^F) + 2^F) / 2^(F+1)), 0, L), int64 wrap-around like numpy
 * (fbi_quantize_value, fracbnn_int.h). */
static inline int64_t FB(shortcut_code)(int64_t r, int frac_bits, int bits)
{
    return fbi_quantize_value(r, frac_bits, bits);
}

/* Shortcut row oy as the golden engine's buffer holds it, from the source residual: its quantize
 * codes (FB_SC_QUANT) or the residual itself, 2x2 window sums (FB_SC_POOL), channels repeated when the
 * source has fewer than O (channel_dup / avgpool2_dup). A plain residual row is returned in place. */
static const int64_t *FB(shortcut_row)(const fb_step *st, const int64_t *sc, int oy, int64_t *tmp)
{
    const int O = st->g.O, Wo = st->g.Wo, Cs = st->sc_C, Ws = st->sc_W;
    const int pool = st->sc_mode & FB_SC_POOL, quant = st->sc_mode & FB_SC_QUANT;
    if (!pool && !quant && Cs == O) return sc + (size_t)oy * Wo * O;
    const uint64_t one = quant ? (uint64_t)1 << st->sc_qfrac : 0, L = quant ? ((uint64_t)1 << st->sc_qbits) - 1 : 0;
    const int sh = st->sc_qfrac + 1;
    (void)one; (void)L; (void)sh; /* the vector path's constants */
#ifdef FB_USE_AVX2
    if (quant && st->sc_q32 && Cs % 4 == 0) {
        /* |r| <= 2^29 (sc_q32) and 2^(F+1) <= 2^31: L (r + 2^F) + 2^F cannot wrap, and the code is a
         * non-decreasing function of r that reaches 0 at r = -2^F and L at r = 2^F, so clamping r to
         * [-2^F, 2^F] first gives the same code; then t = r + 2^F fits in 32 bits, L t + 2^F is one
         * exact 32x32->64 multiply, and the shift is a logical one (t >= 0). 4 channels per vector. */
        const __m256i vone = _mm256_set1_epi64x((long long)one), vnone = _mm256_set1_epi64x(-(long long)one),
                      vL = _mm256_set1_epi64x((long long)L);
        const __m128i cnt = _mm_cvtsi32_si128(sh);
#define FB_CODE4(p)                                                                                            \
    ({                                                                                                         \
        __m256i r_ = _mm256_loadu_si256((const __m256i *)(p));                                                 \
        r_ = _mm256_blendv_epi8(r_, vnone, _mm256_cmpgt_epi64(vnone, r_));                                     \
        r_ = _mm256_blendv_epi8(r_, vone, _mm256_cmpgt_epi64(r_, vone));                                       \
        __m256i c_ = _mm256_srl_epi64(_mm256_add_epi64(_mm256_mul_epu32(_mm256_add_epi64(r_, vone), vL), vone), cnt); \
        _mm256_sub_epi64(_mm256_add_epi64(c_, c_), vL);                                                        \
    })
        for (int x = 0; x < Wo; x++) {
            int64_t *restrict t = tmp + (size_t)x * O;
            if (pool) {
                const int64_t *a = sc + ((size_t)(2 * oy) * Ws + 2 * x) * Cs, *b = a + (size_t)Ws * Cs;
                for (int c = 0; c < Cs; c += 4)
                    _mm256_storeu_si256((__m256i *)(t + c),
                                        _mm256_add_epi64(_mm256_add_epi64(FB_CODE4(a + c), FB_CODE4(a + Cs + c)),
                                                         _mm256_add_epi64(FB_CODE4(b + c), FB_CODE4(b + Cs + c))));
            } else {
                const int64_t *a = sc + ((size_t)oy * Ws + x) * Cs;
                for (int c = 0; c < Cs; c += 4) _mm256_storeu_si256((__m256i *)(t + c), FB_CODE4(a + c));
            }
            for (int c = Cs; c < O; c += Cs) memcpy(t + c, t, (size_t)(O - c < Cs ? O - c : Cs) * sizeof(int64_t));
        }
#undef FB_CODE4
        return tmp;
    }
#endif
#define FB_SCV(v) (quant ? FB(shortcut_code)((v), st->sc_qfrac, st->sc_qbits) : (v))
    for (int x = 0; x < Wo; x++) {
        int64_t *restrict t = tmp + (size_t)x * O;
        if (pool) {
            const int64_t *a = sc + ((size_t)(2 * oy) * Ws + 2 * x) * Cs, *b = a + (size_t)Ws * Cs;
            for (int c = 0; c < Cs; c++)
                t[c] = (int64_t)((uint64_t)FB_SCV(a[c]) + (uint64_t)FB_SCV(a[Cs + c]) + (uint64_t)FB_SCV(b[c]) +
                                 (uint64_t)FB_SCV(b[Cs + c]));
        } else {
            const int64_t *a = sc + ((size_t)oy * Ws + x) * Cs;
            for (int c = 0; c < Cs; c++) t[c] = FB_SCV(a[c]);
        }
        for (int c = Cs; c < O; c++) t[c] = t[c - Cs];
    }
#undef FB_SCV
    return tmp;
}

/* ---- fused step bodies, one output row at a time ------------------------ */

/* quantized conv (1 or 2 planes, optional gate) + post op, rows [oy0, oy1) */
static void FB(qconv_rows)(const fb_step *st, const uint64_t *pm, const uint64_t *pl, const int64_t *sc,
                           int64_t *dst, int oy0, int oy1, fb_scratch *s, int64_t *gate_open)
{
    const fb_conv_geom *g = &st->g;
    const int O = g->O, Wo = g->Wo, two = st->qbits == 2;
    const int64_t *gate = st->gate;
    int64_t opened = 0;
#ifdef FB_USE_AVX2
    /* the fused 3 x 3 row kernels (row3_*) where they apply */
    int row3 = st->wbits_t && O % 8 == 0 && g->K == 3 && (!gate || st->gate32) && !(two && gate && st->sparse_lsb)
               && (g->Cin == 16 || g->Cin == 32 || g->Cin == 64);
    /* 16 input channels: the tap-wise kernel (taps16_row) where its tables were made */
    const int taps16 = row3 && st->w16 && (!(gate && two) || st->g16), taps32 = row3 && st->w32;
#endif
    for (int oy = oy0; oy < oy1; oy++) {
#ifdef FB_USE_AVX2
        if (taps16) {
            opened += FB(taps16_row)(st, pm, pl, two, oy, s->rowacc, gate && two);
        } else if (taps32) {
            opened += FB(taps32_row)(st, pm, pl, two, oy, s->rowacc, gate && two ? st->gate32 : NULL);
        } else if (row3) {
            const int32_t *g32 = gate && two ? st->gate32 : NULL;
            if (g->Cin == 16) opened += FB(row3_16)(g, pm, pl, two, oy, st->wbits_t, s->rowacc, g32);
            else if (g->Cin == 32) opened += FB(row3_32)(g, pm, pl, two, oy, st->wbits_t, s->rowacc, g32);
            else opened += FB(row3_64)(g, pm, pl, two, oy, st->wbits_t, s->rowacc, g32);
        } else
#endif
        for (int ox = 0; ox < Wo; ox++) {
            int32_t *restrict acc = s->rowacc + (size_t)ox * O;
            const int32_t *restrict sm = s->sm, *restrict sl = s->sl;
            const int32_t *cr;
            int nvalid;
            FB_BORDER(g, oy, ox, cr, nvalid);
            FB(gather)(g, pm, two ? pl : NULL, oy, ox, s->xm, s->xl);
            if (two && gate && st->sparse_lsb) {
                /* A = 2 S_M + open * S_L, open = S_M > gate threshold: the MSB pass for
                 * every output, the LSB pass only for the open ones (sparse) */
#ifdef FB_USE_AVX2
                if (st->wbits_t)
                    FB(dot4)(s->xm, s->xl, cr, 0, st->wbits_t, g->nK, O, nvalid, s->sm, NULL);
                else
#endif
                    FB(dot_planes)(s->xm, s->xl, cr, 0, st->wbits, g->nK, O, nvalid, s->sm, s->sl);
                int nopen = 0;
                for (int o = 0; o < O; o++) {
                    int open = fbi_gate_open(sm[o], gate[o]);
                    s->idx[nopen] = o;
                    nopen += open;
                    acc[o] = 2 * sm[o];
                }
                opened += nopen;
                FB(lsb_sparse)(s->xl, cr, st->wbits, g->nK, s->idx, nopen, nvalid, acc);
                continue;
            }
#ifdef FB_USE_AVX2
            if (st->wbits_t && (!gate || st->gate32)) { /* the sums go straight into the accumulator */
                opened += FB(dot4)(s->xm, s->xl, cr, two, st->wbits_t, g->nK, O, nvalid, acc, gate ? st->gate32 : NULL);
                continue;
            }
#endif
                FB(dot_planes)(s->xm, s->xl, cr, two, st->wbits, g->nK, O, nvalid, s->sm, s->sl);
            if (!two) {
                for (int o = 0; o < O; o++) acc[o] = sm[o];
            } else if (!gate) {
                for (int o = 0; o < O; o++) acc[o] = 2 * sm[o] + sl[o];
            } else {
                /* dense variant: both passes everywhere, the gate selects */
                for (int o = 0; o < O; o++) {
                    int open = fbi_gate_open(sm[o], gate[o]);
                    opened += open;
                    acc[o] = 2 * sm[o] + (open ? sl[o] : 0);
                }
            }
        }
        const int64_t *scrow = st->post == FB_POST_BLOCK ? FB(shortcut_row)(st, sc, oy, s->scrow) : NULL;
        FB(post_row)(st, s->rowacc, dst + (size_t)oy * Wo * O, scrow, Wo, s->nsat);
    }
    if (gate_open) *gate_open += opened;
}

#ifdef FB_USE_AVX2
/* One output row of the table layer with the int16 table (thermo_table16), OUT (16 or 32) output
 * channels: 16 channels per add, widened to int32 at the end. The table offset of every pixel in the
 * row's K input rows is looked up once per row (taprow), not once per tap that reads it (K x more). */
#define FB_THERMO16_TAP(E)                                                                                     \
    do {                                                                                                       \
        const int16_t *e_ = (E);                                                                               \
        a0 = _mm256_add_epi16(a0, _mm256_loadu_si256((const __m256i *)e_));                                    \
        if (O > 16) a1 = _mm256_add_epi16(a1, _mm256_loadu_si256((const __m256i *)(e_ + 16)));                 \
    } while (0)
#define FB_THERMO16_ROW(OUT)                                                                                   \
    {                                                                                                          \
        const int O = (OUT);                                                                                   \
        for (int u = 0; u < K; u++) {                                                                          \
            const int iy = iy0 + u;                                                                            \
            if (iy < 0 || iy >= g->H) continue;                                                                \
            for (int c = 0; c < Ci; c++) {                                                                     \
                const uint8_t *px = img + c * plane + (size_t)iy * W;                                          \
                int32_t *restrict t = taprow + ((size_t)u * Ci + c) * W;                                       \
                for (int x = 0; x < W; x++) t[x] = level_of[px[x]] * O;                                        \
            }                                                                                                  \
        }                                                                                                      \
        for (int ox = 0; ox < Wo; ox++) {                                                                      \
            const int ix0 = ox * g->stride - g->pad;                                                           \
            /* the valid taps: a sub-rectangle [u0, u1) x [v0, v1) of the window */                            \
            const int v0 = ix0 < 0 ? -ix0 : 0, v1 = ix0 + K > W ? W - ix0 : K;                                 \
            __m256i a0 = _mm256_setzero_si256(), a1 = a0;                                                      \
            for (int c = 0; c < Ci; c++)                                                                       \
                for (int u = u0; u < u1; u++) {                                                                \
                    const int32_t *t = taprow + ((size_t)u * Ci + c) * W + ix0;                                \
                    const int16_t *tu = lut16 + (((size_t)c * K + u) * K) * tap_stride;                        \
                    if (K == 3 && v0 == 0 && v1 == 3) { /* all three columns: unrolled */                      \
                        FB_THERMO16_TAP(tu + t[0]);                                                            \
                        FB_THERMO16_TAP(tu + tap_stride + t[1]);                                               \
                        FB_THERMO16_TAP(tu + 2 * tap_stride + t[2]);                                           \
                    } else                                                                                     \
                        for (int v = v0; v < v1; v++) FB_THERMO16_TAP(tu + v * tap_stride + t[v]);             \
                }                                                                                              \
            int32_t *restrict acc = rowacc + (size_t)ox * O;                                                   \
            _mm256_storeu_si256((__m256i *)acc, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a0)));           \
            _mm256_storeu_si256((__m256i *)(acc + 8), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a0, 1))); \
            if (O > 16) {                                                                                      \
                _mm256_storeu_si256((__m256i *)(acc + 16), _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a1))); \
                _mm256_storeu_si256((__m256i *)(acc + 24), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a1, 1))); \
            }                                                                                                  \
        }                                                                                                      \
    }
static void FB(thermo16_row)(const fb_step *st, const uint8_t *img, int oy, int32_t *restrict taprow,
                             int32_t *restrict rowacc)
{
    const fb_conv_geom *g = &st->g;
    const int K = g->K, Ci = st->img_C, Wo = g->Wo, W = g->W;
    const size_t plane = (size_t)g->H * W, tap_stride = (size_t)st->levels * g->O;
    const int16_t *restrict lut16 = st->lut16;
    const int32_t *restrict level_of = st->level_of;
    const int iy0 = oy * g->stride - g->pad;
    const int u0 = iy0 < 0 ? -iy0 : 0, u1 = iy0 + K > g->H ? g->H - iy0 : K;
    if (g->O == 16) FB_THERMO16_ROW(16)
    else FB_THERMO16_ROW(32)
}
#undef FB_THERMO16_ROW
#undef FB_THERMO16_TAP
#endif

/* thermometer input layer through the partial-sum table + post op */
static void FB(thermo_rows)(const fb_step *st, const uint8_t *img, int64_t *dst, int oy0, int oy1, fb_scratch *s)
{
    const fb_conv_geom *g = &st->g;
    const int O = g->O, K = g->K, L = st->levels, Ci = st->img_C, Wo = g->Wo;
    const size_t plane = (size_t)g->H * g->W;
    const int32_t *restrict lut = st->lut, *restrict level_of = st->level_of;
    const size_t tap_stride = (size_t)L * O; /* table entries between neighbouring taps */
    for (int oy = oy0; oy < oy1; oy++) {
#ifdef FB_USE_AVX2
        if (st->lut16) {
            FB(thermo16_row)(st, img, oy, s->taprow, s->rowacc);
            FB(post_row)(st, s->rowacc, dst + (size_t)oy * Wo * O, NULL, Wo, s->nsat);
            continue;
        }
#endif
        for (int ox = 0; ox < Wo; ox++) {
            int32_t *restrict acc = s->rowacc + (size_t)ox * O;
            const int iy0 = oy * g->stride - g->pad, ix0 = ox * g->stride - g->pad;
            /* the valid taps: a sub-rectangle [u0, u1) x [v0, v1) of the window */
            const int u0 = iy0 < 0 ? -iy0 : 0, v0 = ix0 < 0 ? -ix0 : 0;
            const int u1 = iy0 + K > g->H ? g->H - iy0 : K, v1 = ix0 + K > g->W ? g->W - ix0 : K;
#ifdef FB_USE_AVX2
            if (O % 8 == 0 && O <= 32) {
                /* accumulators stay in registers: up to 4 x 8 output channels */
                __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
#define FB_THERMO_TAP(T)                                                                              \
    do {                                                                                              \
        const int32_t *t_ = (T);                                                                      \
        a0 = _mm256_add_epi32(a0, _mm256_loadu_si256((const __m256i *)t_));                           \
        if (O > 8) a1 = _mm256_add_epi32(a1, _mm256_loadu_si256((const __m256i *)(t_ + 8)));          \
        if (O > 16) a2 = _mm256_add_epi32(a2, _mm256_loadu_si256((const __m256i *)(t_ + 16)));        \
        if (O > 24) a3 = _mm256_add_epi32(a3, _mm256_loadu_si256((const __m256i *)(t_ + 24)));        \
    } while (0)
                if (K == 3 && u0 == 0 && v0 == 0 && u1 == 3 && v1 == 3) {
                    /* interior 3 x 3 window: constant trip counts, fully unrolled */
                    for (int c = 0; c < Ci; c++) {
                        const uint8_t *row = img + c * plane + (size_t)iy0 * g->W + ix0;
                        const int32_t *tc = lut + (size_t)c * 9 * tap_stride;
                        for (int u = 0; u < 3; u++, row += g->W)
                            for (int v = 0; v < 3; v++)
                                FB_THERMO_TAP(tc + (size_t)(3 * u + v) * tap_stride + (size_t)level_of[row[v]] * O);
                    }
                } else
                for (int c = 0; c < Ci; c++)
                    for (int u = u0; u < u1; u++) {
                        const uint8_t *row = img + c * plane + (size_t)(iy0 + u) * g->W + ix0;
                        const int32_t *tu = lut + (((size_t)c * K + u) * K) * tap_stride;
                        for (int v = v0; v < v1; v++) FB_THERMO_TAP(tu + v * tap_stride + (size_t)level_of[row[v]] * O);
                    }
#undef FB_THERMO_TAP
                _mm256_storeu_si256((__m256i *)acc, a0);
                if (O > 8) _mm256_storeu_si256((__m256i *)(acc + 8), a1);
                if (O > 16) _mm256_storeu_si256((__m256i *)(acc + 16), a2);
                if (O > 24) _mm256_storeu_si256((__m256i *)(acc + 24), a3);
                continue;
            }
#endif
            for (int o = 0; o < O; o++) acc[o] = 0;
            for (int c = 0; c < Ci; c++)
                for (int u = u0; u < u1; u++) {
                    const uint8_t *row = img + c * plane + (size_t)(iy0 + u) * g->W + ix0;
                    const int32_t *tu = lut + (((size_t)c * K + u) * K) * tap_stride;
                    for (int v = v0; v < v1; v++) {
                        const int32_t *restrict t = tu + v * tap_stride + (size_t)level_of[row[v]] * O;
                        for (int o = 0; o < O; o++) acc[o] += t[o];
                    }
                }
        }
        FB(post_row)(st, s->rowacc, dst + (size_t)oy * Wo * O, NULL, Wo, s->nsat);
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

#ifdef FB_USE_AVX2
/* The same loop with the AVX2 byte-table popcount (what dot4 uses), 4 words per vector. */
static unsigned long long FB(popcount_loop_vec)(const uint64_t *p, size_t n, long long repeats, int nt)
{
    unsigned long long total = 0;
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for reduction(+ : total) num_threads(nt) schedule(static)
#endif
    for (long long r = 0; r < repeats; r++) {
        const __m256i table = FB(nibble_table)();
        const __m256i low4 = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
        const __m256i key = _mm256_set1_epi64x((long long)((uint64_t)r * 0x9E3779B97F4A7C15ull));
        __m256i t0 = zero, t1 = zero;
        for (size_t i0 = 0; i0 + 8 <= n; i0 += 8 * 31) { /* byte counts folded before they overflow */
            __m256i a0 = zero, a1 = zero;
            size_t i1 = i0 + 8 * 31 < n ? i0 + 8 * 31 : n;
            for (size_t i = i0; i + 8 <= i1; i += 8) {
                a0 = _mm256_add_epi8(a0, FB(popcnt8)(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p + i)), key),
                                                     table, low4));
                a1 = _mm256_add_epi8(a1, FB(popcnt8)(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(p + i + 4)), key),
                                                     table, low4));
            }
            t0 = _mm256_add_epi64(t0, _mm256_sad_epu8(a0, zero));
            t1 = _mm256_add_epi64(t1, _mm256_sad_epu8(a1, zero));
        }
        uint64_t out[4];
        _mm256_storeu_si256((__m256i *)out, _mm256_add_epi64(t0, t1));
        total += out[0] + out[1] + out[2] + out[3];
    }
    return total;
}
#endif

#undef FB_DOT_BODY
#undef FB_DOT4_BODY
#undef FB_DOT8_BODY
#undef FB_DOT_LOOP
#undef FB_LDOT
#undef FB_BORDER
#undef FB
#undef FB_CAT
#undef FB_CAT2
