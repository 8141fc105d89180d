// FracBNN ImageNet (ReActNet) accelerator kernel (Vitis HLS C++; also builds with plain g++).
//
// Written by `fracbnn hw generate`; the sizes and the layer table live in
// fracbnn_config.h, the weights and per-channel constants in params.bin (DRAM).
// The arithmetic is the golden engine's (fracbnn.deploy.golden): XNOR-popcount
// over the valid taps only, and every rounding, saturation, quantizer code and
// gate test from fracbnn_int.h, the header the fast CPU engine is built with.
//
// Per layer, per output-channel tile (LANES channels), per row tile (TILE_ROWS
// output rows), see fracbnn/hw/reactnet/design.py:
//   MSB pass : per input word (3x3, stem) or group of WORDS_1X1 words (1x1) one
//              sweep of the row tile; weight registers reloaded per step from the
//              on-chip weight cache (double-buffered: the next tile's weights and
//              constants are fetched from DRAM while this tile computes)
//   gates    : per (lane, pixel) S_M > threshold; each lane lists its open pixels
//   LSB pass : 3x3 gated: per output row, each lane walks its own list over a
//              private LUTRAM copy of the three input rows of the current word;
//              1x1 / ungated: a full sweep
//   epilogue : block_post (stem: scale_shift) with the shortcut = the input's 4-bit
//              codes read from DRAM (identity, 2x2 sum, or channel c mod cin), then
//              at once the next layer's MSB/LSB planes (on chip, ping-pong) and its
//              4-bit codes (to the other DRAM code buffer); the last layer sums into
//              the global-pool accumulators instead.
// The stem reads its row tile's image rows from DRAM and thermometer-encodes them
// on the fly. The classifier runs on the host (ARM) from `pooled`.
//
// Under C simulation the kernel counts, per layer, the cycle terms of design.py:
// per (tile, row tile) msb, lsb (busiest lane per row, or the full sweep),
// lsb_full (the full sweep's, for comparison), epilogue; per DRAM transfer
// ceil(bytes / DRAM_BYTES_PER_CYCLE) + DRAM_LATENCY; a tile takes
// max(compute, DRAM) cycles.
#include <cstdint>

#include "fracbnn_config.h"
#include "fracbnn_int.h"

#ifndef __SYNTHESIS__
RxCount rx_counts[NUM_LAYERS];
void rx_reset_counts() {
    for (int l = 0; l < NUM_LAYERS; l++) rx_counts[l] = RxCount{0, 0, 0, 0, 0, 0, 0, 0};
}
#define RX_COUNT(l, field, v) (rx_counts[l].field += (uint64_t)(v))
#else
#define RX_COUNT(l, field, v) ((void)0)
#endif

// ---- on-chip buffers ----------------------------------------------------------------------------
// Feature maps as two bit planes (MSB, LSB), ping-pong between a layer's input and output:
// word w of pixel p at w * pstride + p (pstride prime to 3: 9 cyclic banks serve the 1x1 engine's 9 words).
static word_t plane_m[2][PLANE_DEPTH];
static word_t plane_l[2][PLANE_DEPTH];
// weight cache (one channel tile's words, [word][lane][tap] / [word][lane]) and constants, double-buffered
static word_t wcache[2][WCACHE_DEPTH];
static int64_t ctab[2][CONST_TABLES][LANES];
// per (lane, pixel of the row tile): S_M and S_L
static acc_t acc_m[LANES][ACC_DEPTH];
static acc_t acc_l[LANES][ACC_DEPTH];
// per-lane lists of open pixels (column) of each output row of the row tile
static uint16_t open_list[LANES][TILE_ROWS][MAX_W_OUT];
static int open_count[LANES][TILE_ROWS];
// each lane's LUTRAM copy of the three input rows (with halo columns) of one LSB word; two of them, so the
// next word's copy fills while the lanes walk the current one
static word_t lsb_rows[LANES][2][3][MAX_W_IN + 2];
// shortcut codes read for the row tile, and the output codes written for it (LANES nibbles per entry)
static uint64_t sc_buf[SC_ENTRIES][CODE_ENTRY_U64];
static uint64_t code_out[ACC_DEPTH][CODE_ENTRY_U64];
// the stem's image rows of the row tile (all colours)
static uint8_t img_rows[IMG_C][IMG_ROWS_MAX][IMG_W];
// global sum pool of the last layer
static int64_t pool_acc[MAX_TILES * LANES];

// ---- small helpers ------------------------------------------------------------------------------

// one valid tap of one word: +-1 products summed over the word's real channels (fbi_xnor_dot). Channels beyond cin
// hold 0 in the planes and 1 in the weights, so each of the WORD_BITS - nvalid padding bits counts as one mismatch
// (-2 x that) in fbi_xnor_dot over nvalid; adding it back leaves exactly the real channels.
static inline int tap_sum(word_t x, word_t w, int nvalid) { return fbi_xnor_dot(x, w, nvalid) + 2 * (WORD_BITS - nvalid); }

static inline int word_channels(const RxLayerDesc &d, int w) {
    const int n = d.cin - w * WORD_BITS;
    return n < WORD_BITS ? n : WORD_BITS;
}

#ifndef __SYNTHESIS__
// design.dram_cycles for one transfer
static uint64_t dram_cycles(long long bytes) {
    if (bytes <= 0) return 0;
    const double q = (double)bytes / DRAM_BYTES_PER_CYCLE;
    uint64_t c = (uint64_t)q;
    if ((double)c < q) c++;
    return c + DRAM_LATENCY;
}
#endif

// ---- DRAM transfers (burst over the bus beats that cover the range) -----------------------------
// 64-bit words at an 8-byte aligned byte offset
static void dram_read_u64(const bus_t *m, long long byte_off, int n, uint64_t *dst) {
    const long long first = byte_off / 8;
READ_U64:
    for (int i = 0; i < n; i++) {
#pragma HLS PIPELINE II=1
        const long long idx = first + i;
        dst[i] = m[idx / BUS_U64].w[idx % BUS_U64];
    }
}
static void dram_write_u64(bus_t *m, long long byte_off, int n, const uint64_t *src) {
    const long long first = byte_off / 8;
WRITE_U64:
    for (int i = 0; i < n; i++) {
#pragma HLS PIPELINE II=1
        const long long idx = first + i;
        m[idx / BUS_U64].w[idx % BUS_U64] = src[i];  // a beat with the byte strobes of this word
    }
}

// one channel tile's weights and constants (tile_bytes at a bus-aligned offset) into cache buffer b
static void load_tile(const bus_t *params, const RxLayerDesc &d, int t, int b) {
    const long long base = (long long)d.param_off + (long long)t * d.tile_bytes;
    const int wbeats = d.weight_bytes / BUS_BYTES, per_u64 = 64 / WORD_BITS;
LOAD_WEIGHTS:
    for (int beat = 0; beat < wbeats; beat++) {
#pragma HLS PIPELINE II=1
        const bus_t v = params[base / BUS_BYTES + beat];
        for (int k = 0; k < BUS_U64; k++)
            for (int e = 0; e < per_u64; e++) {
                const int i = (beat * BUS_U64 + k) * per_u64 + e;
                if (i < WCACHE_DEPTH) wcache[b][i] = (word_t)(v.w[k] >> (e * WORD_BITS));
            }
    }
    const long long cbase = base + d.weight_bytes;
LOAD_CONSTS:
    for (int i = 0; i < CONST_TABLES * LANES; i++) {
#pragma HLS PIPELINE II=1
        const long long q = cbase / 8 + i;
        ctab[b][i / LANES][i % LANES] = (int64_t)params[q / BUS_U64].w[q % BUS_U64];
    }
}

// ---- the stem's image rows ------------------------------------------------------------------------
// Rows [r0, r0 + n) of every colour; one transfer per colour.
static void load_image_rows(const bus_t *image, int r0, int n) {
    for (int col = 0; col < IMG_C; col++) {
        const long long off = ((long long)col * IMG_H + r0) * IMG_W, len = (long long)n * IMG_W;
        const long long b0 = off / BUS_BYTES, b1 = (off + len - 1) / BUS_BYTES;
    LOAD_IMAGE:
        for (long long beat = b0; beat <= b1; beat++) {
#pragma HLS PIPELINE II=1
            const bus_t v = image[beat];
            for (int e = 0; e < BUS_BYTES; e++) {
#pragma HLS UNROLL
                const long long i = beat * BUS_BYTES + e - off;
                if (i >= 0 && i < len)
                    img_rows[col][i / IMG_W][i % IMG_W] = (uint8_t)(v.w[e / 8] >> ((e % 8) * 8));
            }
        }
    }
}

// the stem's input word w at image pixel (r, c): thermometer channel col * T + k is 1 iff k < level(pixel)
static word_t stem_word(const RxLayerDesc &d, int w, int r_local, int c) {
    word_t x = 0;
    int level[IMG_C];
    for (int col = 0; col < IMG_C; col++) level[col] = fbi_thermometer_level(img_rows[col][r_local][c], THERMO_RES);
    for (int b = 0; b < WORD_BITS; b++) {
#pragma HLS UNROLL
        const int ch = w * WORD_BITS + b;
        if (ch < d.cin && ch % THERMO_BITS < level[ch / THERMO_BITS]) x |= (word_t)1 << b;
    }
    return x;
}

// ---- MSB / full LSB sweeps ----------------------------------------------------------------------
// One step (input word w) of a 3x3 layer over a row tile: the band's input pixels stream in with a one-pixel
// halo, ((rows - 1) s + 3) x (w_in + 2) iterations, through two line buffers and a 3x3 window; each completed
// window gives every lane its tap sums. src: plane buffer (-1: the stem's encoded image rows).
static void sweep3(const RxLayerDesc &d, int cb, const word_t *plane, int w, int y0, int rows, int img_r0,
                   acc_t acc[LANES][ACC_DEPTH]) {
    word_t wreg[LANES][9];
#pragma HLS ARRAY_PARTITION variable=wreg complete dim=0
    for (int l = 0; l < LANES; l++)
        for (int tap = 0; tap < 9; tap++) wreg[l][tap] = wcache[cb][(w * LANES + l) * 9 + tap];
    word_t lb[2][MAX_W_IN + 2];
    bool lbv[2][MAX_W_IN + 2];
    word_t win[3][3];
    bool winv[3][3];
#pragma HLS ARRAY_PARTITION variable=win complete dim=0
#pragma HLS ARRAY_PARTITION variable=winv complete dim=0
    const int s = d.stride, nrows = (rows - 1) * s + 3, ncols = d.w_in + 2, r_first = y0 * s - 1;
    const int nvalid = word_channels(d, w);
    for (int ci = 0; ci < MAX_W_IN + 2; ci++) {
        lb[0][ci] = lb[1][ci] = 0;
        lbv[0][ci] = lbv[1][ci] = false;
    }
    for (int u = 0; u < 3; u++)
        for (int v = 0; v < 3; v++) {
            win[u][v] = 0;
            winv[u][v] = false;
        }
SWEEP3:
    for (int it = 0; it < nrows * ncols; it++) {
#pragma HLS PIPELINE II=1
        const int ri = it / ncols, ci = it % ncols, r = r_first + ri, c = ci - 1;
        const bool v = r >= 0 && r < d.h_in && c >= 0 && c < d.w_in;
        word_t x = 0;
        if (v) x = plane ? plane[w * d.pstride_in + r * d.w_in + c] : stem_word(d, w, r - img_r0, c);
        for (int u = 0; u < 3; u++) {
            win[u][0] = win[u][1]; win[u][1] = win[u][2];
            winv[u][0] = winv[u][1]; winv[u][1] = winv[u][2];
        }
        win[0][2] = lb[0][ci]; winv[0][2] = lbv[0][ci];
        win[1][2] = lb[1][ci]; winv[1][2] = lbv[1][ci];
        win[2][2] = x; winv[2][2] = v;
        lb[0][ci] = lb[1][ci]; lbv[0][ci] = lbv[1][ci];
        lb[1][ci] = x; lbv[1][ci] = v;
        if (ri < 2 || (ri - 2) % s || ci < 2 || (ci - 2) % s) continue;
        const int oy = (ri - 2) / s, ox = (ci - 2) / s;
        if (ox >= d.w_out) continue;
        const int p = oy * d.w_out + ox;
        for (int l = 0; l < LANES; l++) {
#pragma HLS UNROLL
            int sum = 0;
            for (int u = 0; u < 3; u++)
                for (int vv = 0; vv < 3; vv++)
                    if (winv[u][vv]) sum += tap_sum(win[u][vv], wreg[l][u * 3 + vv], nvalid);
            acc[l][p] = (w == 0 ? 0 : acc[l][p]) + sum;
        }
    }
}

// One step (words WORDS_1X1 g .. WORDS_1X1 g + WORDS_1X1 - 1) of a 1x1 layer: one output pixel per cycle.
static void sweep1(const RxLayerDesc &d, int cb, const word_t *plane, int g, int y0, int rows,
                   acc_t acc[LANES][ACC_DEPTH]) {
    word_t wreg[LANES][WORDS_1X1];
#pragma HLS ARRAY_PARTITION variable=wreg complete dim=0
    for (int l = 0; l < LANES; l++)
        for (int j = 0; j < WORDS_1X1; j++) {
            const int w = g * WORDS_1X1 + j;
            wreg[l][j] = w < d.words ? wcache[cb][w * LANES + l] : (word_t)0;
        }
SWEEP1:
    for (int p = 0; p < rows * d.w_out; p++) {
#pragma HLS PIPELINE II=1
        const int pix = (y0 + p / d.w_out) * d.w_in + p % d.w_out;
        word_t x[WORDS_1X1];
        for (int j = 0; j < WORDS_1X1; j++) {
            const int w = g * WORDS_1X1 + j;
            x[j] = w < d.words ? plane[w * d.pstride_in + pix] : (word_t)0;
        }
        for (int l = 0; l < LANES; l++) {
#pragma HLS UNROLL
            int sum = 0;
            for (int j = 0; j < WORDS_1X1; j++) {
                const int w = g * WORDS_1X1 + j;
                if (w < d.words) sum += tap_sum(x[j], wreg[l][j], word_channels(d, w));
            }
            acc[l][p] = (g == 0 ? 0 : acc[l][p]) + sum;
        }
    }
}

// ---- LSB pass over each lane's own open pixels (3x3 gated layers) -------------------------------------
// Returns the cycles of the row: design.lsb_row_cycles(busiest lane).
static uint64_t lsb_lanes_row(const RxLayerDesc &d, int cb, const word_t *plane, int y0, int oy) {
    int busiest = 0;
    for (int l = 0; l < LANES; l++) busiest = open_count[l][oy] > busiest ? open_count[l][oy] : busiest;
    if (busiest == 0) return 0;  // no lane has an open gate in this row: skipped
    const int s = d.stride, y = y0 + oy, fill = (d.w_in + 2 + LSB_FILL_COLS - 1) / LSB_FILL_COLS;
LSB_WORDS:
    for (int w = 0; w < d.words; w++) {
        const int nvalid = word_channels(d, w);
        // fill every lane's copy with the three input rows of word w: LSB_FILL_COLS columns (3 x LSB_FILL_COLS
        // plane words) per iteration, ceil((w_in + 2) / LSB_FILL_COLS) iterations, as design.lsb_fill_cycles counts
    LSB_FILL:
        for (int c0 = 0; c0 < d.w_in + 2; c0 += LSB_FILL_COLS) {
#pragma HLS PIPELINE II=1
            for (int j = 0; j < LSB_FILL_COLS; j++) {
#pragma HLS UNROLL
                const int ci = c0 + j;
                if (ci >= d.w_in + 2) break;
                for (int u = 0; u < 3; u++) {
                    const int r = y * s - 1 + u, c = ci - 1;
                    const word_t x = (r >= 0 && r < d.h_in && c >= 0 && c < d.w_in)
                                         ? plane[w * d.pstride_in + r * d.w_in + c] : (word_t)0;
                    for (int l = 0; l < LANES; l++) {
#pragma HLS UNROLL
                        lsb_rows[l][w % 2][u][ci] = x;
                    }
                }
            }
        }
        // each lane walks its own list (lanes are independent; the row takes the busiest lane's count)
    LSB_WALK:
        for (int k = 0; k < busiest; k++) {
#pragma HLS PIPELINE II=1
            for (int l = 0; l < LANES; l++) {
#pragma HLS UNROLL
                if (k >= open_count[l][oy]) continue;
                const int ox = open_list[l][oy][k];
                int sum = 0;
                for (int u = 0; u < 3; u++)
                    for (int v = 0; v < 3; v++) {
                        const int r = y * s - 1 + u, c = ox * s - 1 + v;
                        if (r >= 0 && r < d.h_in && c >= 0 && c < d.w_in)
                            sum += tap_sum(lsb_rows[l][w % 2][u][c + 1], wcache[cb][(w * LANES + l) * 9 + u * 3 + v],
                                           nvalid);
                    }
                const int p = oy * d.w_out + ox;
                acc_l[l][p] = (w == 0 ? 0 : acc_l[l][p]) + sum;
            }
        }
    }
    return (uint64_t)fill + (uint64_t)d.words * (uint64_t)(fill > busiest ? fill : busiest) + RX_DEPTH_LSB;
}

// ---- shortcut codes ---------------------------------------------------------------------------------
static inline int nibble(const uint64_t *entry, int lane) {
    return (int)((entry[lane / 16] >> ((lane % 16) * 4)) & 15);
}

// Read the row tile's shortcut codes of output tile t; returns the bytes read and adds the transfers' cycles.
static long long load_shortcut(const RxLayerDesc &d, const bus_t *codes_in, int t, int y0, int rows,
                               uint64_t *dram) {
    const long long EB = CODE_ENTRY_BYTES;
    if (d.shortcut == SC_IDENTITY || d.shortcut == SC_POOL) {
        const int sr = d.shortcut == SC_POOL ? 2 * y0 : y0, nr = d.shortcut == SC_POOL ? 2 * rows : rows;
        const long long n = (long long)nr * d.w_in;
        dram_read_u64(codes_in, (((long long)t * d.h_in + sr) * d.w_in) * EB, (int)(n * CODE_ENTRY_U64), &sc_buf[0][0]);
#ifndef __SYNTHESIS__
        *dram += dram_cycles(n * EB);
#endif
        return n * EB;
    }
    // SC_DUP: channel c reads source channel c mod cin; its tiles, in lane order
    const int first = ((t * LANES) % d.cin) / LANES;
    long long bytes = 0;
    for (int k = 0; k < d.sc_tiles; k++) {
        const int st = (first + k) % ((d.cin + LANES - 1) / LANES);
        bool used = false;
        for (int l = 0; l < LANES; l++)
            if (t * LANES + l < d.cout && ((t * LANES + l) % d.cin) / LANES == st) used = true;
        if (!used) continue;
        const long long n = (long long)rows * d.w_in;
        dram_read_u64(codes_in, (((long long)st * d.h_in + y0) * d.w_in) * EB, (int)(n * CODE_ENTRY_U64),
                      &sc_buf[k * rows * d.w_in][0]);
#ifndef __SYNTHESIS__
        *dram += dram_cycles(n * EB);
#endif
        bytes += n * EB;
    }
    return bytes;
}

// shortcut value of lane l (channel c) at output pixel (oy local, ox): odd integers 2 code - L
static int64_t shortcut_value(const RxLayerDesc &d, int t, int l, int oy, int ox, int rows) {
    const int64_t L = ((int64_t)1 << d.sc_bits) - 1;
    if (d.shortcut == SC_IDENTITY) return 2 * nibble(sc_buf[oy * d.w_out + ox], l) - L;
    if (d.shortcut == SC_POOL) {
        int64_t s = 0;
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) s += 2 * nibble(sc_buf[(2 * oy + a) * d.w_in + 2 * ox + b], l) - L;
        return s;
    }
    const int c = (t * LANES + l) % d.cin, first = ((t * LANES) % d.cin) / LANES, tiles = (d.cin + LANES - 1) / LANES;
    const int k = ((c / LANES) - first + tiles) % tiles;
    return 2 * nibble(sc_buf[k * rows * d.w_in + oy * d.w_out + ox], c % LANES) - L;
}

// ---- epilogue: one output pixel per cycle for all lanes -------------------------------------------------
static void epilogue(const RxLayerDesc &d, int cb, int t, int y0, int rows, word_t *out_m, word_t *out_l) {
    const int c0 = t * LANES;
EPILOGUE:
    for (int p = 0; p < rows * d.w_out; p++) {
#pragma HLS PIPELINE II=1
        const int oy = p / d.w_out, ox = p % d.w_out, pix = (y0 + oy) * d.w_out + ox;
        word_t mw[TILE_WORDS], lw[TILE_WORDS];
        for (int k = 0; k < TILE_WORDS; k++) mw[k] = lw[k] = 0;
        uint64_t codes[CODE_ENTRY_U64];
        for (int k = 0; k < CODE_ENTRY_U64; k++) codes[k] = 0;
        for (int l = 0; l < LANES; l++) {
#pragma HLS UNROLL
            const int c = c0 + l;
            if (c >= d.cout) continue;  // padded lane: never stored
            int64_t r;
            if (d.kind == KIND_STEM) {
                r = fbi_scale_shift(acc_m[l][p], ctab[cb][0][l], ctab[cb][1][l], d.shift, d.bits);
            } else {
                const int64_t sm = acc_m[l][p];
                const int64_t a = 2 * sm + (fbi_gate_open(sm, ctab[cb][0][l]) ? (int64_t)acc_l[l][p] : 0);
                r = fbi_block_post(a, ctab[cb][1][l], ctab[cb][2][l], ctab[cb][3][l], ctab[cb][4][l], ctab[cb][5][l],
                                   ctab[cb][6][l], ctab[cb][7][l], shortcut_value(d, t, l, oy, ox, rows), d.shift,
                                   d.bits);
            }
            if (d.last) {
                pool_acc[c] = fbi_add(pool_acc[c], r);
                continue;
            }
            const int q2 = fbi_quantize2_code(r, d.q2_frac);  // MSB = q2 >> 1, LSB = q2 & 1
            const int k = c / WORD_BITS - c0 / WORD_BITS;
            if (q2 >> 1) mw[k] |= (word_t)1 << (c % WORD_BITS);
            if (q2 & 1) lw[k] |= (word_t)1 << (c % WORD_BITS);
            codes[l / 16] |= (uint64_t)fbi_uniform_code(r, d.q4_frac, d.q4_bits) << ((l % 16) * 4);
        }
        if (d.last) continue;
        const int c_end = c0 + LANES < d.cout ? c0 + LANES : d.cout;
        for (int k = 0; k < TILE_WORDS; k++) {
            const int w = c0 / WORD_BITS + k;
            if (w * WORD_BITS >= c_end) break;
            const int a = w * d.pstride_out + pix;
            const bool shared = w * WORD_BITS < c0;  // the word began in the previous tile: keep its bits
            out_m[a] = shared ? (word_t)(out_m[a] | mw[k]) : mw[k];
            out_l[a] = shared ? (word_t)(out_l[a] | lw[k]) : lw[k];
        }
        for (int k = 0; k < CODE_ENTRY_U64; k++) code_out[p][k] = codes[k];
    }
}

// ---- one (channel tile, row tile) ------------------------------------------------------------------
static void row_tile(const RxLayerDesc &d, int li, int cb, int t, int y0, int rows, const bus_t *image,
                     const bus_t *codes_in, bus_t *codes_out, const word_t *in_m, const word_t *in_l, word_t *out_m,
                     word_t *out_l, uint64_t *compute, uint64_t *dram) {
    (void)li;
    int img_r0 = 0;
    if (d.kind == KIND_STEM) {
        const int n = (rows - 1) * d.stride + 3 < d.h_in ? (rows - 1) * d.stride + 3 : d.h_in;
        int r0 = y0 * d.stride - 1;
        if (r0 < 0) r0 = 0;
        if (r0 + n > d.h_in) r0 = d.h_in - n;
        load_image_rows(image, r0, n);
        img_r0 = r0;
#ifndef __SYNTHESIS__
        for (int col = 0; col < IMG_C; col++) *dram += dram_cycles((long long)n * IMG_W);
        RX_COUNT(li, dram_bytes, (long long)IMG_C * n * IMG_W);
#endif
    } else {
        const long long b = load_shortcut(d, codes_in, t, y0, rows, dram);
        RX_COUNT(li, dram_bytes, b);
    }
    // MSB pass
    const int sweep = d.k == 1 ? rows * d.w_out : ((rows - 1) * d.stride + 3) * (d.w_in + 2);
    for (int st = 0; st < d.steps; st++) {
        if (d.k == 1) sweep1(d, cb, in_m, st, y0, rows, acc_m);
        else sweep3(d, cb, d.kind == KIND_STEM ? (const word_t *)0 : in_m, st, y0, rows, img_r0, acc_m);
    }
    const uint64_t msb = (uint64_t)d.steps * (uint64_t)(sweep > WEIGHT_RELOAD_CYCLES ? sweep : WEIGHT_RELOAD_CYCLES) +
                         RX_DEPTH_MSB;
    uint64_t lsb = 0;
    if (d.kind != KIND_STEM) {
        // gates: each lane lists its open pixels per output row (done as each S_M completes in the last step)
        for (int oy = 0; oy < rows; oy++)
            for (int l = 0; l < LANES; l++) {
                int n = 0;
                for (int ox = 0; ox < d.w_out; ox++) {
                    const int p = oy * d.w_out + ox;
                    if (t * LANES + l < d.cout && fbi_gate_open(acc_m[l][p], ctab[cb][0][l])) open_list[l][oy][n++] = ox;
                }
                open_count[l][oy] = n;
            }
        if (d.skip) {
            for (int oy = 0; oy < rows; oy++) lsb += lsb_lanes_row(d, cb, in_l, y0, oy);
        } else {
            for (int st = 0; st < d.steps; st++) {
                if (d.k == 1) sweep1(d, cb, in_l, st, y0, rows, acc_l);
                else sweep3(d, cb, in_l, st, y0, rows, 0, acc_l);
            }
            lsb = msb;
        }
        RX_COUNT(li, lsb_full, msb);
    }
    epilogue(d, cb, t, y0, rows, out_m, out_l);
    const uint64_t epi = (uint64_t)rows * d.w_out + RX_DEPTH_EPILOGUE;
    if (!d.last) {
        const long long n = (long long)rows * d.w_out;
        dram_write_u64(codes_out, (((long long)t * d.h_out + y0) * d.w_out) * CODE_ENTRY_BYTES,
                       (int)(n * CODE_ENTRY_U64), &code_out[0][0]);
#ifndef __SYNTHESIS__
        *dram += dram_cycles(n * CODE_ENTRY_BYTES);
        RX_COUNT(li, dram_bytes, n * CODE_ENTRY_BYTES);
#endif
    }
    RX_COUNT(li, msb, msb);
    RX_COUNT(li, lsb, lsb);
    RX_COUNT(li, epilogue, epi);
    *compute += msb + lsb + epi;
}

// ---- top ----------------------------------------------------------------------------------------------
void fracbnn_top(const bus_t *params, const bus_t *image, bus_t *codes_a, bus_t *codes_b, int64_t *pooled) {
#pragma HLS INTERFACE m_axi port=params offset=slave bundle=gmem0 depth=1024 max_read_burst_length=64
#pragma HLS INTERFACE m_axi port=image offset=slave bundle=gmem1 depth=1024
#pragma HLS INTERFACE m_axi port=codes_a offset=slave bundle=gmem2 depth=1024
#pragma HLS INTERFACE m_axi port=codes_b offset=slave bundle=gmem2 depth=1024  // one adapter: a layer reads one, writes the other
#pragma HLS INTERFACE m_axi port=pooled offset=slave bundle=gmem1 depth=POOL_C
#pragma HLS INTERFACE s_axilite port=params
#pragma HLS INTERFACE s_axilite port=image
#pragma HLS INTERFACE s_axilite port=codes_a
#pragma HLS INTERFACE s_axilite port=codes_b
#pragma HLS INTERFACE s_axilite port=pooled
#pragma HLS INTERFACE s_axilite port=return
#pragma HLS ARRAY_PARTITION variable=plane_m cyclic factor=9 dim=2
#pragma HLS ARRAY_PARTITION variable=plane_l cyclic factor=9 dim=2
#pragma HLS ARRAY_PARTITION variable=wcache cyclic factor=LANES dim=2
#pragma HLS ARRAY_PARTITION variable=ctab complete dim=3
#pragma HLS ARRAY_PARTITION variable=acc_m complete dim=1
#pragma HLS ARRAY_PARTITION variable=acc_l complete dim=1
#pragma HLS ARRAY_PARTITION variable=open_list complete dim=1
#pragma HLS ARRAY_PARTITION variable=open_count complete dim=1
#pragma HLS ARRAY_PARTITION variable=lsb_rows complete dim=1
#pragma HLS ARRAY_PARTITION variable=lsb_rows complete dim=2
#pragma HLS ARRAY_PARTITION variable=lsb_rows complete dim=3
#pragma HLS BIND_STORAGE variable=lsb_rows type=ram_2p impl=lutram
    for (int c = 0; c < MAX_TILES * LANES; c++) pool_acc[c] = 0;
    // the very first tile's weights are fetched up front (charged to the stem)
    load_tile(params, LAYERS[0], 0, 0);
#ifndef __SYNTHESIS__
    RX_COUNT(0, dram, dram_cycles(LAYERS[0].tile_bytes));
    RX_COUNT(0, cycles, dram_cycles(LAYERS[0].tile_bytes));
    RX_COUNT(0, dram_bytes, LAYERS[0].tile_bytes);
#endif
    int g = 0;  // tiles done, in global order: the cache buffer is g % 2
LAYER:
    for (int li = 0; li < NUM_LAYERS; li++) {
        const RxLayerDesc &d = LAYERS[li];
        // layer li reads the planes (and 4-bit codes) layer li - 1 wrote, and writes the other ones
        const int in = (li + 1) % 2, outb = li % 2;
        const bus_t *codes_in = in == 0 ? codes_a : codes_b;
        bus_t *codes_out = outb == 0 ? codes_a : codes_b;
    TILE:
        for (int t = 0; t < d.c_tiles; t++) {
            const int cb = g % 2;
            uint64_t compute = 0, dram = 0;
            // prefetch the next tile in global order (this layer's next, or the next layer's first)
            const bool more = t + 1 < d.c_tiles || li + 1 < NUM_LAYERS;
            if (more) {
                const RxLayerDesc &nd = t + 1 < d.c_tiles ? d : LAYERS[li + 1];
                load_tile(params, nd, t + 1 < d.c_tiles ? t + 1 : 0, 1 - cb);
#ifndef __SYNTHESIS__
                dram += dram_cycles(nd.tile_bytes);
                RX_COUNT(li, dram_bytes, nd.tile_bytes);
#endif
            }
        ROW_TILE:
            for (int y0 = 0; y0 < d.h_out; y0 += TILE_ROWS) {
                const int rows = d.h_out - y0 < TILE_ROWS ? d.h_out - y0 : TILE_ROWS;
                row_tile(d, li, cb, t, y0, rows, image, codes_in, codes_out, plane_m[in], plane_l[in], plane_m[outb],
                         plane_l[outb], &compute, &dram);
            }
            RX_COUNT(li, compute, compute);
            RX_COUNT(li, dram, dram);
            RX_COUNT(li, cycles, compute > dram ? compute : dram);
            g++;
        }
    }
    // the global-pool sums, one transfer
WRITE_POOL:
    for (int c = 0; c < POOL_C; c++) {
#pragma HLS PIPELINE II=1
        pooled[c] = pool_acc[c];
    }
#ifndef __SYNTHESIS__
    RX_COUNT(NUM_LAYERS - 1, dram, dram_cycles((long long)POOL_C * 8));
    RX_COUNT(NUM_LAYERS - 1, cycles, dram_cycles((long long)POOL_C * 8));
    RX_COUNT(NUM_LAYERS - 1, dram_bytes, (long long)POOL_C * 8);
#endif
}
