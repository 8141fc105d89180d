/*
 * Loop bodies of the training kernels, included twice by trainops.c: once
 * for any x86-64/other CPU (TK_SUFFIX _generic) and once compiled for AVX2
 * (TK_SUFFIX _avx2, chosen at run time). No FMA: a fused multiply-add rounds
 * once instead of twice and would change results against PyTorch.
 * Each function works on a range so the caller can split it over threads.
 */
#define TK_CAT2(a, b) a##b
#define TK_CAT(a, b) TK_CAT2(a, b)
#define TK(name) TK_CAT(name, TK_SUFFIX)

/* Level j = round((clamp(x, -1, 1) + 1) / (2/3)) in 0..3 (float32, ties to even, like
 * torch.round), its bit planes M = j >= 2 ? 1 : -1 and L = j odd ? 1 : -1 (x_q =
 * (2M + L) / 3), packed as P = M + s L for the one-convolution forward; inside = 1
 * where -1 < x < 1 (the straight-through window). NaN gives NaN. */
static void TK(quantize_pack_range)(const float *restrict x, float *restrict packed, uint8_t *restrict inside,
                                    float s, i64 i0, i64 i1)
{
    const float step = (float)(2.0 / 3.0);
    const float magic = 12582912.0f; /* (r + 1.5 * 2^23) - 1.5 * 2^23 rounds r to nearest, ties to even */
    for (i64 i = i0; i < i1; i++) {
        float v = x[i];
        float c = v < -1.0f ? -1.0f : v;
        c = c > 1.0f ? 1.0f : c;
        float r = (c + 1.0f) / step; /* in [0, 3] */
        float j = (r + magic) - magic;              /* level 0..3 */
        float half = j > 1.5f ? 1.0f : 0.0f;        /* 0, 0, 1, 1 */
        float msb = 2.0f * half - 1.0f;            /* j >= 2 */
        float lsb = 2.0f * (j - 2.0f * half) - 1.0f; /* j odd */
        float p = msb + s * lsb;
        packed[i] = v == v ? p : v;                /* NaN in, NaN out */
        inside[i] = (uint8_t)((v > -1.0f) & (v < 1.0f));
    }
}

/* P = M + s L  ->  M, L (the weight gradient correlates each plane with its own gradient). */
static void TK(unpack_range)(const float *restrict packed, float *restrict msb, float *restrict lsb, float s,
                             i64 i0, i64 i1)
{
    for (i64 i = i0; i < i1; i++) {
        float p = packed[i];
        float l = p > 0.0f ? 1.0f : -1.0f; /* |s L| > |M| */
        lsb[i] = l;
        msb[i] = p - s * l;
    }
}

/* S = conv(P, w) = A + s B exactly (integers below 2^24), A = conv(M, w), B = conv(L, w),
 * |A| <= K < s / 2, s a power of two: B = round(S / s), A = S - s B. */
#define TK_DECODE(S, inv_s, s, A, B)                                 \
    do {                                                             \
        const float magic_ = 12582912.0f;                            \
        (B) = ((S) * (inv_s) + magic_) - magic_;                     \
        (A) = (S) - (s) * (B);                                       \
    } while (0)

/* out = z + m * lsb with z = A * (2/3), lsb = B * (1/3), m = [z > theta_c] (the PyTorch
 * formula term by term). Returns the number of open gates. */
static i64 TK(gate_forward_planes)(const float *restrict S, float *restrict out, const float *restrict theta,
                                   float s, i64 C, i64 HW, i64 nc0, i64 nc1)
{
    const float k2 = (float)(2.0 / 3.0), k1 = (float)(1.0 / 3.0), inv_s = 1.0f / s;
    i64 opened = 0;
    for (i64 nc = nc0; nc < nc1; nc++) {
        const float th = theta[nc % C];
        const i64 off = nc * HW;
        i64 cnt = 0;
        for (i64 i = 0; i < HW; i++) {
            float a, b;
            TK_DECODE(S[off + i], inv_s, s, a, b);
            float z = a * k2;
            float m = z > th ? 1.0f : 0.0f;
            out[off + i] = z + m * (b * k1);
            cnt += z > th;
        }
        opened += cnt;
    }
    return opened;
}

/* With g = dL/dout and r = 5 s (1 - s), s = sigmoid(5 (z - theta)) read from a
 * per-channel table indexed by the integer A:
 *   d = g lsb r [m],  gA = (g + d) (2/3),  gB = g m (1/3),  g_in = gA + gB,
 *   dtheta_part[n, c] = sum over the plane of d. */
static void TK(gate_backward_planes)(const float *restrict g, const float *restrict S, const float *restrict theta,
                                     const float *restrict lut, i64 K, float s, int sparse, float *restrict ga,
                                     float *restrict gb, float *restrict gin, float *restrict dth, i64 C, i64 HW,
                                     i64 nc0, i64 nc1)
{
    const float k2 = (float)(2.0 / 3.0), k1 = (float)(1.0 / 3.0), inv_s = 1.0f / s;
    const i64 width = 2 * K + 1;
    for (i64 nc = nc0; nc < nc1; nc++) {
        const i64 c = nc % C;
        const float th = theta[c];
        const float *tab = lut + c * width + K; /* tab[j] for j = -K..K */
        const i64 off = nc * HW;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (i64 i = 0; i < HW; i++) {
            float a, b;
            TK_DECODE(S[off + i], inv_s, s, a, b);
            float z = a * k2;
            float m = z > th ? 1.0f : 0.0f;
            int j = (int)a;
            j = j < -(int)K ? -(int)K : (j > (int)K ? (int)K : j);
            float gv = g[off + i];
            float d = gv * (b * k1) * tab[j];
            d = sparse ? d * m : d;
            float va = (gv + d) * k2;
            float vb = gv * m * k1;
            ga[off + i] = va;
            gb[off + i] = vb;
            gin[off + i] = va + vb;
            acc += d;
        }
        dth[nc] = acc;
    }
}

static void TK(mask_range)(float *restrict g, const uint8_t *restrict m, i64 i0, i64 i1)
{
    for (i64 i = i0; i < i1; i++) g[i] = m[i] ? g[i] : 0.0f;
}

/* dst[0:O] += src[0:O]; blocks of 8 so the compiler emits whole vector adds (O is
 * small, 16 or 32 for the CIFAR and ImageNet stems, and not known at compile time). */
static inline void TK(add_vec)(float *restrict dst, const float *restrict src, i64 O)
{
    i64 o = 0;
    for (; o + 8 <= O; o += 8)
        for (int q = 0; q < 8; q++) dst[o + q] += src[o + q];
    for (; o < O; o++) dst[o] += src[o];
}

/* Table offsets of the valid taps of output pixel (y, x) of image n; returns how many. */
static inline i64 TK(tap_offsets)(const thermo_geom *g, const uint8_t *restrict pix, i64 nimg, i64 y, i64 x,
                                  i64 *restrict offs)
{
    const i64 K = g->K, H = g->H, W = g->W, LO = g->L * g->O;
    i64 nt = 0;
    for (i64 c = 0; c < g->C; c++) {
        const uint8_t *plane = pix + (nimg * g->C + c) * H * W;
        for (i64 u = 0; u < K; u++) {
            const i64 iy = y * g->stride + u - g->pad;
            if (iy < 0 || iy >= H) continue;
            for (i64 v = 0; v < K; v++) {
                const i64 ix = x * g->stride + v - g->pad;
                if (ix < 0 || ix >= W) continue;
                offs[nt++] = ((c * K + u) * K + v) * LO + (i64)g->level_of[plane[iy * W + ix]] * g->O;
            }
        }
    }
    return nt;
}

/* Rows (n, y) of the thermometer conv: each output pixel sums its taps' table
 * rows in registers (8 channels at a time), then the row is stored as NCHW. */
static void TK(thermo_forward_rows)(const thermo_geom *g, const uint8_t *restrict pix, const float *restrict tab,
                                    float *restrict out, float *restrict row, i64 *restrict offs, i64 ny0, i64 ny1)
{
    const i64 O = g->O, Ho = g->Ho, Wo = g->Wo;
    for (i64 ny = ny0; ny < ny1; ny++) {
        const i64 nimg = ny / Ho, y = ny % Ho;
        for (i64 x = 0; x < Wo; x++) {
            const i64 nt = TK(tap_offsets)(g, pix, nimg, y, x, offs);
            float *r = row + x * O;
            i64 o = 0;
            for (; o + 8 <= O; o += 8) {
                float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
                for (i64 t = 0; t < nt; t++) {
                    const float *e = tab + offs[t] + o;
                    for (int q = 0; q < 8; q++) acc[q] += e[q];
                }
                for (int q = 0; q < 8; q++) r[o + q] = acc[q];
            }
            for (; o < O; o++) {
                float acc = 0.0f;
                for (i64 t = 0; t < nt; t++) acc += tab[offs[t] + o];
                r[o] = acc;
            }
        }
        for (i64 o = 0; o < O; o++) {
            float *dst = out + ((nimg * O + o) * Ho + y) * Wo;
            for (i64 x = 0; x < Wo; x++) dst[x] = row[x * O + o];
        }
    }
}

/* Adds the output gradient of rows (n, y) into the table rows their taps read. */
static void TK(thermo_grad_rows)(const thermo_geom *g, const uint8_t *restrict pix, const float *restrict grad,
                                 float *restrict dtab, float *restrict row, i64 *restrict offs, i64 ny0, i64 ny1)
{
    const i64 O = g->O, Ho = g->Ho, Wo = g->Wo;
    for (i64 ny = ny0; ny < ny1; ny++) {
        const i64 nimg = ny / Ho, y = ny % Ho;
        for (i64 o = 0; o < O; o++) {
            const float *src = grad + ((nimg * O + o) * Ho + y) * Wo;
            for (i64 x = 0; x < Wo; x++) row[x * O + o] = src[x];
        }
        for (i64 x = 0; x < Wo; x++) {
            const i64 nt = TK(tap_offsets)(g, pix, nimg, y, x, offs);
            for (i64 t = 0; t < nt; t++) TK(add_vec)(dtab + offs[t], row + x * O, O);
        }
    }
}

#undef TK
#undef TK_CAT
#undef TK_CAT2
