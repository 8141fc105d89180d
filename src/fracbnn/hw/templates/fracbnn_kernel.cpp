// FracBNN CIFAR accelerator kernel (Vitis HLS C++; also builds with plain g++).
//
// Written by `fracbnn hw generate`; the numbers live in fracbnn_config.h and
// fracbnn_params.h. The arithmetic is the golden engine's
// (fracbnn.deploy.golden, docs/deploy-format.md) in plain integer C++:
// XNOR-popcount over valid taps only, and the scalar primitives (round_shift,
// saturate, quantize2, the gate test, scale_shift / block_post, thermometer
// level) from fracbnn_int.h, the header the fast CPU engine uses too.
//
// One shared engine runs every layer from the LAYERS descriptor table:
//   load + encode : image bytes over AXI, thermometer-encoded into the MSB plane
//   shortcut      : 2x2 sum of the incoming residual (down-sampling blocks)
//   msb           : every tile of SLOTS adjacent output pixels x P lanes;
//                   records the tiles with at least one open gate (lanes take the
//                   output channels in CH_MAP order: channels sorted by measured
//                   gate density, so rarely-open channels share lane groups)
//   lsb           : only the recorded tiles (closed tiles cost no cycles); with LSB_LANES, each
//                   lane instead walks its own list of open (pixel, channel) entries (lsb_lanes)
//   epilogue      : UNITS (channel, pixel) pairs per cycle: BN/RPReLU/shortcut/BN
//                   folded to integers, saturate, 2-bit quantize, pack planes
//   pool + fc     : integer global sum pool and classifier -> int64 logits
// Under C simulation every pipelined loop counts its iterations and entries;
// cycles = iterations x II + entries x depth (see fb_report_cycles).
#include <cstdint>
#include <cstdio>

#include "fracbnn_config.h"
#include "fracbnn_int.h"
#include "fracbnn_params.h"

// a coefficient table entry with its common trailing zero bits restored (the tables are stored without them,
// see hw/widths.py SHIFTED_TABLES): a left shift by a constant, wiring in hardware
#define FB_COEF(T, i) ((int64_t)((uint64_t)(int64_t)T[i] << T##_SHIFT))

#ifndef __SYNTHESIS__
struct FbLoopCount { uint64_t iters, entries; };
FbLoopCount fb_counts[FB_NUM_ROWS][FB_NUM_LOOPS];
#define FB_ENTER(row, loop) (fb_counts[row][loop].entries++)
#define FB_ITER(row, loop) (fb_counts[row][loop].iters++)
#else
#define FB_ENTER(row, loop) ((void)0)
#define FB_ITER(row, loop) ((void)0)
#endif

#define COLS (2 * MAX_SLOTS + 1)

#ifndef __SYNTHESIS__
enum { FB_ACC = 0, FB_RES = 1, FB_SC = 2 };
static int fb_bank_use[3][FB_MAX_BANKS];
int fb_bank_worst = 0;  // most accesses to one bank of acc/res/sc_buf in one iteration (epilogue, shortcut, pool,
                        // per-lane LSB pass)
static inline void fb_bank_clear() {
    for (int b = 0; b < 3; b++)
        for (int k = 0; k < FB_MAX_BANKS; k++) fb_bank_use[b][k] = 0;
}
static inline void fb_bank(int buf, int idx, int banks) {
    const int n = ++fb_bank_use[buf][idx % banks];
    if (n > fb_bank_worst) fb_bank_worst = n;
}
#define FB_BANK_CLEAR() fb_bank_clear()
#define FB_BANK(buf, idx, banks) fb_bank(buf, idx, banks)
#else
#define FB_BANK_CLEAR() ((void)0)
#define FB_BANK(buf, idx, banks) ((void)0)
#endif

// ---- on-chip buffers -------------------------------------------------------
// Planes are banked by (row mod 3, column mod COLS): one cycle reads the
// 3 x ((SLOTS-1)*stride+3) window of a tile without bank conflicts.
static word_t msb_plane[3][COLS][MSB_DEPTH];
static word_t lsb_plane[3][COLS][LSB_DEPTH];
// acc_buf, res_buf and sc_buf hold C x H*W maps channel-interleaved (fm_index): the UNITS channels one
// epilogue / shortcut / pool iteration touches at one pixel are consecutive addresses, and so are the
// channels x pixels of a narrow (C < UNITS) layer, so cyclic partitioning by UNITS gives each parallel access
// its own bank (the shortcut's stride-2 reads too, see shortcut_pool; sc_buf has 2 UNITS banks, each shallow
// enough for distributed RAM). Under C simulation
// FB_BANK counts the accesses per bank in one iteration of those loops (see fb_bank_worst).
static acc_t acc_buf[ACC_DEPTH];     // conv results
static res_t res_buf[RES_DEPTH];     // residual stream
static sc_t sc_buf[SC_DEPTH];        // 2x2 sums of the residual for down-sampling blocks
static uint16_t tile_list[TILE_MAX]; // LSB work list of one output-channel group (tile design)
#if LSB_LANES
// Per-lane design: one work list per (lane, slot) of the open (output pixel) entries, group-major, with
// the count per group; each lane walks its own lists in the LSB pass (docs/hw.md).
static uint16_t unit_list[P_LANES][MAX_SLOTS][ULIST_MAX];
static acc_t unit_acc[P_LANES][MAX_SLOTS][ULIST_MAX];  // the entry's 2 S_M: the LSB pass only writes acc_buf
static uint16_t unit_count[P_LANES][MAX_SLOTS][MAX_GROUPS];
// Each lane's own copy of the next layer's LSB plane as 9 tap memories addressed by that layer's output
// pixel: lsb_copy[p][3u+v][(i w + j) kw + k] = LSB word k at input (i s + u - 1, j s + v - 1). One address
// per slot reads a whole 3x3 window (two read ports: the two slots). Written by the epilogue.
static word_t lsb_copy[P_LANES][9][COPY_DEPTH];

// Store a finished LSB plane word of input pixel (r, c) into every lane's tap memories that hold it.
static void lsb_copy_word(const LayerDesc &d, int r, int c, int k, word_t w) {
    for (int u = 0; u < 3; u++) {
        const int ri = r - u + 1;
        if (ri < 0 || ri % d.next_stride || ri / d.next_stride >= d.next_h_out) continue;
        for (int v = 0; v < 3; v++) {
            const int ci = c - v + 1;
            if (ci < 0 || ci % d.next_stride || ci / d.next_stride >= d.next_w_out) continue;
            const int a = ((ri / d.next_stride) * d.next_w_out + ci / d.next_stride) * d.next_kw + k;
            for (int p = 0; p < P_LANES; p++) {
#pragma HLS UNROLL
                lsb_copy[p][u * 3 + v][a] = w;
            }
        }
    }
}
#endif
static uint8_t img_buf[IMG_BYTES];

// ---- integer helpers (the scalar primitives are fracbnn_int.h's) -------------
// Address of (channel c, pixel pix) of a C-channel, hw-pixel map in acc/res/sc_buf: channels in groups of
// ce = min(C, UNITS), pixel-major within a group: ((c / ce) * hw + pix) * ce + c % ce.
static inline int fm_index(int c, int pix, int C, int hw) {
    const int ce = C < UNITS ? C : UNITS;
    return ((c / ce) * hw + pix) * ce + c % ce;
}
static inline int plane_addr(int r, int c, int w_in, int kw, int k) {
    return ((r / 3) * ((w_in + COLS - 1) / COLS) + c / COLS) * kw + k;
}

// ---- image load and thermometer encoding ------------------------------------
static void load_image(const uint8_t *image) {
    const int beats = (IMG_BYTES + AXI_BYTES - 1) / AXI_BYTES;
    FB_ENTER(0, LOOP_LOAD);
LOAD:
    for (int b = 0; b < beats; b++) {
#pragma HLS PIPELINE II=1
        FB_ITER(0, LOOP_LOAD);
        for (int e = 0; e < AXI_BYTES; e++) {
#pragma HLS UNROLL
            const int idx = b * AXI_BYTES + e;
            if (idx < IMG_BYTES) img_buf[idx] = image[idx];
        }
    }
}

static void encode_image() {
    const LayerDesc &d = LAYERS[0];
    const int tpr = (IMG_W + COLS - 1) / COLS;
    FB_ENTER(0, LOOP_ENCODE);
ENCODE:
    for (int it = 0; it < IMG_H * tpr; it++) {
#pragma HLS PIPELINE II=1
        FB_ITER(0, LOOP_ENCODE);
        const int i = it / tpr, j0 = (it % tpr) * COLS;
        for (int s = 0; s < COLS; s++) {
#pragma HLS UNROLL
            const int j = j0 + s;
            if (j >= IMG_W) continue;
            word_t words[MAX_KW];
            for (int k = 0; k < MAX_KW; k++) words[k] = 0;
            for (int col = 0; col < IMG_C; col++) {
                const int n = fbi_thermometer_level(img_buf[(col * IMG_H + i) * IMG_W + j], THERMO_RES);
                for (int t = 0; t < THERMO_BITS; t++) {
                    const int ch = col * THERMO_BITS + t;
                    if (t < n) words[ch / d.seg] |= (word_t)1 << (ch % d.seg);
                }
            }
            for (int k = 0; k < d.kw; k++)
                msb_plane[i % 3][j % COLS][plane_addr(i, j, IMG_W, d.kw, k)] = words[k];
        }
    }
}

// ---- 2x2 shortcut sums (down-sampling blocks) -------------------------------
static void shortcut_pool(int l) {
    const LayerDesc &d = LAYERS[l];
    const int hw = d.h_out * d.w_out, hw_in = d.h_in * d.w_in;
    const int ceff = d.cin < UNITS ? d.cin : UNITS;
    const int ppc = UNITS / ceff, passes = (d.cin + UNITS - 1) / UNITS;
    const int n = (hw + ppc - 1) / ppc * passes;
    FB_ENTER(l + 1, LOOP_SHORTCUT);
SHORTCUT:
    for (int it = 0; it < n * 4; it++) {
#pragma HLS PIPELINE II=1
        FB_ITER(l + 1, LOOP_SHORTCUT);
        const int step = it % 4, pt = (it / 4) / passes, cp = (it / 4) % passes;
        FB_BANK_CLEAR();
        for (int u = 0; u < UNITS; u++) {
#pragma HLS UNROLL
            const int po = u / ceff, pix = pt * ppc + po, c = cp * ceff + u % ceff;
            if (po >= ppc || pix >= hw || c >= d.cin) continue;
            // the upper half of the pixels visits the 2x2 sources in column-swapped order: in one iteration the
            // sources then differ in (column mod ppc), so the UNITS residual reads fall in distinct banks of
            // RES_BANKS = UNITS (without the swap, narrow layers read pixels 2 apart: one bank twice)
            const int a = step ^ (2 * po >= ppc ? 1 : 0);
            const int i = pix / d.w_out, j = pix % d.w_out;
            const int src = (2 * i + a / 2) * d.w_in + 2 * j + a % 2;
            const int si = fm_index(c, pix, d.cin, hw), ri = fm_index(c, src, d.cin, hw_in);
            FB_BANK(FB_SC, si, SC_BANKS);  // read (step > 0) and write of one element
            FB_BANK(FB_SC, si, SC_BANKS);
            FB_BANK(FB_RES, ri, RES_BANKS);
            const sc_t prev = step == 0 ? (sc_t)0 : sc_buf[si];
            sc_buf[si] = prev + (sc_t)res_buf[ri];
        }
    }
}

// ---- binary convolution engine: MSB pass over all tiles, LSB over open ones ---
#if LSB_LANES
// LSB pass of the per-lane design: lane p's slot s works through its own list of open (pixel) entries of
// the output channels it holds (one per group), reading its pixel's 3x3 window from the lane's copy of
// the LSB plane. Both slots of a lane share one weight-ROM address, so a lane finishes a group (the longer
// of its two slot lists) before the next; lanes are independent. Cycles = max over lanes of
// sum_g max_s count(p, s, g) x kw (+ one pipeline fill).
static void lsb_lanes(int l) {
    const LayerDesc &d = LAYERS[l];
    const int hw = d.h_out * d.w_out;
    int lane_cycles[P_LANES], lg[P_LANES], lt[P_LANES], lk[P_LANES], base[P_LANES][MAX_SLOTS];
    int32_t part[P_LANES][MAX_SLOTS];
    int total = 0;
    for (int p = 0; p < P_LANES; p++) {
        lane_cycles[p] = 0;
        for (int g = 0; g < d.groups; g++) {
            int m = 0;
            for (int s = 0; s < d.slots; s++) m = unit_count[p][s][g] > m ? unit_count[p][s][g] : m;
            lane_cycles[p] += m * d.kw;
        }
        total = lane_cycles[p] > total ? lane_cycles[p] : total;
        lg[p] = 0; lt[p] = 0; lk[p] = 0;
        for (int s = 0; s < MAX_SLOTS; s++) base[p][s] = 0;
        // skip leading groups with no open entry (they cost no cycle)
        while (lg[p] < d.groups) {
            int m = 0;
            for (int s = 0; s < d.slots; s++) m = unit_count[p][s][lg[p]] > m ? unit_count[p][s][lg[p]] : m;
            if (m > 0) break;
            lg[p]++;
        }
    }
    if (total > 0) FB_ENTER(l + 1, LOOP_LSB);
LANES:
    for (int c = 0; c < total; c++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=1 max=1024
        FB_ITER(l + 1, LOOP_LSB);
        FB_BANK_CLEAR();
        for (int p = 0; p < P_LANES; p++) {
#pragma HLS UNROLL
            if (lg[p] >= d.groups) continue;
            const int g = lg[p], k = lk[p];
            const int slot = g * P_LANES + p;
            if (slot >= d.cout) { lg[p] = d.groups; continue; }
            const int oc = CH_MAP[d.p_off + slot];
            const int nvalid = d.cin - k * d.seg < d.seg ? d.cin - k * d.seg : d.seg;
            int m = 0;
            for (int s = 0; s < d.slots; s++) {
                const int n = unit_count[p][s][g];
                m = n > m ? n : m;
                if (lt[p] >= n) continue;
                const int pix = unit_list[p][s][base[p][s] + lt[p]];
                const int i = pix / d.w_out, j = pix % d.w_out;
                int32_t sum = 0;
                for (int u = 0; u < 3; u++)
                    for (int v = 0; v < 3; v++) {
                        const int r = i * d.stride + u - 1, cc = j * d.stride + v - 1;
                        if (r < 0 || r >= d.h_in || cc < 0 || cc >= d.w_in) continue;
                        const word_t x = lsb_copy[p][u * 3 + v][pix * d.kw + k];  // the lane's own copy
                        sum += fbi_xnor_dot(x, WEIGHTS[d.w_off + g * d.kw + k][u * 3 + v][p], nvalid);
                    }
                part[p][s] = (k == 0 ? 0 : part[p][s]) + sum;
                if (k == d.kw - 1) {  // write only (2 S_M comes with the entry): <= 2 writes per bank per cycle
                    const int idx = fm_index(oc, pix, d.cout, hw);
                    FB_BANK(FB_ACC, idx, ACC_BANKS);
                    acc_buf[idx] = (acc_t)((int64_t)unit_acc[p][s][base[p][s] + lt[p]] + part[p][s]);
                }
            }
            // advance the lane's cursor: next word, next entry, next non-empty group
            if (++lk[p] < d.kw) continue;
            lk[p] = 0;
            if (++lt[p] < m) continue;
            for (int s = 0; s < d.slots; s++) base[p][s] += unit_count[p][s][g];
            lt[p] = 0;
            lg[p]++;
            while (lg[p] < d.groups) {
                int m2 = 0;
                for (int s = 0; s < d.slots; s++) m2 = unit_count[p][s][lg[p]] > m2 ? unit_count[p][s][lg[p]] : m2;
                if (m2 > 0) break;
                lg[p]++;
            }
        }
    }
}
#endif

static void conv_layer(int l) {
    const LayerDesc &d = LAYERS[l];
    const int tpr = (d.w_out + d.slots - 1) / d.slots;
    const int tiles = d.h_out * tpr, hw = d.h_out * d.w_out;
    const int ncols = (d.slots - 1) * d.stride + 3;
    const int passes = d.kind == KIND_FRAC ? (LSB_LANES ? 1 : 2) : 1;
#if LSB_LANES
    for (int p = 0; p < P_LANES; p++)
        for (int s = 0; s < MAX_SLOTS; s++)
            for (int g = 0; g < MAX_GROUPS; g++) unit_count[p][s][g] = 0;
    int unit_len[P_LANES][MAX_SLOTS];
    for (int p = 0; p < P_LANES; p++)
        for (int s = 0; s < MAX_SLOTS; s++) unit_len[p][s] = 0;
#endif
GROUPS:
    for (int g = 0; g < d.groups; g++) {
        int n_open = 0;
        for (int pass = 0; pass < passes; pass++) {
            const int n = pass == 0 ? tiles : n_open;
            const int loop = pass == 0 ? LOOP_MSB : LOOP_LSB;
            if (n > 0) FB_ENTER(l + 1, loop);
            int32_t part[MAX_SLOTS][P_LANES];
#pragma HLS ARRAY_PARTITION variable=part complete dim=0
        TILES:
            for (int it = 0; it < n * d.kw; it++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=1 max=1024
                FB_ITER(l + 1, loop);
                const int q = it / d.kw, k = it % d.kw;
                const int t = pass == 0 ? q : (int)tile_list[q];
                const int i = t / tpr, j0 = (t % tpr) * d.slots;
                const int nvalid = d.cin - k * d.seg < d.seg ? d.cin - k * d.seg : d.seg;
                word_t win[3][COLS];
                bool inside[3][COLS];
#pragma HLS ARRAY_PARTITION variable=win complete dim=0
#pragma HLS ARRAY_PARTITION variable=inside complete dim=0
                for (int u = 0; u < 3; u++) {
                    for (int v = 0; v < COLS; v++) {
                        const int r = i * d.stride + u - 1, c = j0 * d.stride + v - 1;
                        const bool ok = v < ncols && r >= 0 && r < d.h_in && c >= 0 && c < d.w_in;
                        inside[u][v] = ok;
                        win[u][v] = 0;
                        if (ok) {
                            const int addr = plane_addr(r, c, d.w_in, d.kw, k);
                            win[u][v] = pass == 0 ? msb_plane[r % 3][c % COLS][addr] : lsb_plane[r % 3][c % COLS][addr];
                        }
                    }
                }
                bool any_open = false;
                for (int s = 0; s < MAX_SLOTS; s++) {
                    const int j = j0 + s;
                    for (int p = 0; p < P_LANES; p++) {
                        const int slot = g * P_LANES + p;  // engine slot -> output channel (gate-density order)
                        if (s >= d.slots || j >= d.w_out || slot >= d.cout) continue;
                        const int oc = CH_MAP[d.p_off + slot];
                        int32_t sum = 0;
                        for (int u = 0; u < 3; u++)
                            for (int v = 0; v < 3; v++) {
                                const int cv = s * d.stride + v;
                                if (inside[u][cv])
                                    sum += fbi_xnor_dot(win[u][cv], WEIGHTS[d.w_off + g * d.kw + k][u * 3 + v][p], nvalid);
                            }
                        part[s][p] = (k == 0 ? 0 : part[s][p]) + sum;
                        if (k != d.kw - 1) continue;
                        const int idx = fm_index(oc, i * d.w_out + j, d.cout, hw);
                        if (pass == 0) {
                            if (d.kind == KIND_FRAC) {
                                acc_buf[idx] = (acc_t)(2 * part[s][p]);
                                if (!d.gated || fbi_gate_open(part[s][p], GATE_THR[d.p_off + oc])) {
                                    any_open = true;
#if LSB_LANES
                                    unit_acc[p][s][unit_len[p][s]] = (acc_t)(2 * part[s][p]);
                                    unit_list[p][s][unit_len[p][s]++] = (uint16_t)(i * d.w_out + j);
                                    unit_count[p][s][g]++;
#endif
                                }
                            } else {
                                acc_buf[idx] = (acc_t)part[s][p];
                            }
                        } else {
                            const int64_t a = acc_buf[idx];
                            if (!d.gated || fbi_gate_open(a / 2, GATE_THR[d.p_off + oc])) acc_buf[idx] = (acc_t)(a + part[s][p]);  // a = 2 S_M
                        }
                    }
                }
                if (pass == 0 && k == d.kw - 1 && any_open) tile_list[n_open++] = (uint16_t)t;
            }
        }
    }
#if LSB_LANES
    if (d.kind == KIND_FRAC) lsb_lanes(l);
#endif
}

// ---- fused epilogue ----------------------------------------------------------
static void epilogue(int l) {
    const LayerDesc &d = LAYERS[l];
    const int C = d.cout, hw = d.h_out * d.w_out;
    const int ceff = C < UNITS ? C : UNITS;
    const int ppc = UNITS / ceff, passes = (C + UNITS - 1) / UNITS;
    const int n = (hw + ppc - 1) / ppc * passes;
    FB_ENTER(l + 1, LOOP_EPILOGUE);
EPILOGUE:
    for (int it = 0; it < n; it++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT min=64 max=1024
        FB_ITER(l + 1, LOOP_EPILOGUE);
        const int pt = it / passes, cp = it % passes;
        FB_BANK_CLEAR();
        for (int u = 0; u < UNITS; u++) {
#pragma HLS UNROLL
            const int po = u / ceff, pix = pt * ppc + po, c = cp * ceff + u % ceff;
            if (po >= ppc || pix >= hw || c >= C) continue;
            const int fi = fm_index(c, pix, C, hw);
            FB_BANK(FB_ACC, fi, ACC_BANKS);
            const int64_t a = acc_buf[fi];
            const int pc = d.p_off + c;
            int64_t r;
            if (d.kind == KIND_INPUT) {
                r = fbi_scale_shift(a, FB_COEF(POS_MUL, pc), FB_COEF(POS_ADD, pc), d.shift, d.bits);
            } else {
                const int si = fm_index(c % d.cin, pix, d.cin, hw);
                if (d.residual == RES_DOWN) FB_BANK(FB_SC, si, SC_BANKS);
                else FB_BANK(FB_RES, fi, RES_BANKS);
                const int64_t sc = d.residual == RES_DOWN ? (int64_t)sc_buf[si] : (int64_t)res_buf[fi];
                r = fbi_block_post(a, SIGN[pc], THRESH[pc], FB_COEF(POS_MUL, pc), FB_COEF(POS_ADD, pc),
                                   FB_COEF(NEG_MUL, pc), FB_COEF(NEG_ADD, pc), FB_COEF(SC_MUL, pc), sc, d.shift,
                                   d.bits);
            }
            FB_BANK(FB_RES, fi, RES_BANKS);
            res_buf[fi] = (res_t)r;
            if (d.last) continue;
            const int code = fbi_quantize2_code(r, d.qfrac);  // MSB = code >> 1, LSB = code & 1
            const int i = pix / d.w_out, j = pix % d.w_out;
            const int addr = plane_addr(i, j, d.w_out, d.next_kw, c / d.next_seg);
            const word_t bit = (word_t)1 << (c % d.next_seg);
            word_t m = c % d.next_seg == 0 ? (word_t)0 : msb_plane[i % 3][j % COLS][addr];
            word_t ls = c % d.next_seg == 0 ? (word_t)0 : lsb_plane[i % 3][j % COLS][addr];
            msb_plane[i % 3][j % COLS][addr] = (code >> 1) ? (m | bit) : m;
            lsb_plane[i % 3][j % COLS][addr] = (code & 1) ? (ls | bit) : ls;
#if LSB_LANES
            // the word is complete after its last channel: copy it to the lanes' tap memories
            if (c % d.next_seg == d.next_seg - 1 || c == C - 1)
                lsb_copy_word(d, i, j, c / d.next_seg, lsb_plane[i % 3][j % COLS][addr]);
#endif
        }
    }
}

// ---- global sum pool and classifier ------------------------------------------
static void head(int64_t *logits) {
    const LayerDesc &d = LAYERS[NUM_LAYERS - 1];
    const int C = d.cout, hw = d.h_out * d.w_out, passes = (C + UNITS - 1) / UNITS;
    pool_t psum[MAX_C];
    int64_t out[NUM_CLASSES];
#pragma HLS ARRAY_PARTITION variable=psum cyclic factor=UNITS
#pragma HLS ARRAY_PARTITION variable=out complete
    for (int c = 0; c < MAX_C; c++) psum[c] = 0;
    FB_ENTER(NUM_LAYERS + 1, LOOP_POOL);
POOL:
    for (int it = 0; it < hw * passes; it++) {
#pragma HLS PIPELINE II=1
        FB_ITER(NUM_LAYERS + 1, LOOP_POOL);
        const int pix = it / passes, cp = it % passes;
        FB_BANK_CLEAR();
        for (int u = 0; u < UNITS; u++) {
#pragma HLS UNROLL
            const int c = cp * UNITS + u;
            if (c >= C) continue;
            const int ri = fm_index(c, pix, C, hw);
            FB_BANK(FB_RES, ri, RES_BANKS);
            psum[c] += res_buf[ri];
        }
    }
    for (int k = 0; k < NUM_CLASSES; k++) out[k] = FC_BIAS[k];
    FB_ENTER(NUM_LAYERS + 1, LOOP_FC);
FC:
    for (int c = 0; c < C; c++) {
#pragma HLS PIPELINE II=1
        FB_ITER(NUM_LAYERS + 1, LOOP_FC);
        for (int k = 0; k < NUM_CLASSES; k++) {
#pragma HLS UNROLL
            out[k] += psum[c] * (int64_t)FC_W[k][c];
        }
    }
    for (int k = 0; k < NUM_CLASSES; k++) logits[k] = out[k];
}

// ---- top ------------------------------------------------------------------
void fracbnn_top(const uint8_t image[IMG_BYTES], int64_t logits[NUM_CLASSES]) {
#pragma HLS INTERFACE m_axi port=image offset=slave bundle=gmem0 depth=IMG_BYTES
#pragma HLS INTERFACE m_axi port=logits offset=slave bundle=gmem1 depth=NUM_CLASSES
#pragma HLS INTERFACE s_axilite port=return
#pragma HLS ARRAY_PARTITION variable=msb_plane complete dim=1
#pragma HLS ARRAY_PARTITION variable=msb_plane complete dim=2
#pragma HLS ARRAY_PARTITION variable=lsb_plane complete dim=1
#pragma HLS ARRAY_PARTITION variable=lsb_plane complete dim=2
#if LSB_LANES
#pragma HLS ARRAY_PARTITION variable=lsb_copy complete dim=1
#pragma HLS ARRAY_PARTITION variable=lsb_copy complete dim=2
#pragma HLS ARRAY_PARTITION variable=unit_list complete dim=1
#pragma HLS ARRAY_PARTITION variable=unit_list complete dim=2
#pragma HLS ARRAY_PARTITION variable=unit_acc complete dim=1
#pragma HLS ARRAY_PARTITION variable=unit_acc complete dim=2
#endif
#pragma HLS ARRAY_PARTITION variable=WEIGHTS complete dim=2
#pragma HLS ARRAY_PARTITION variable=WEIGHTS complete dim=3
#pragma HLS ARRAY_PARTITION variable=acc_buf cyclic factor=ACC_BANKS
#pragma HLS ARRAY_PARTITION variable=res_buf cyclic factor=RES_BANKS
#pragma HLS ARRAY_PARTITION variable=sc_buf cyclic factor=SC_BANKS
    load_image(image);
    encode_image();
LAYERS_LOOP:
    for (int l = 0; l < NUM_LAYERS; l++) {
#pragma HLS LOOP_TRIPCOUNT min=NUM_LAYERS max=NUM_LAYERS
        if (LAYERS[l].residual == RES_DOWN) shortcut_pool(l);
        conv_layer(l);
        epilogue(l);
    }
    head(logits);
}

#ifndef __SYNTHESIS__
// Cycles of one row/loop: iterations x II (1) + entries x pipeline depth.
uint64_t fb_loop_cycles(int row, int loop) {
    return fb_counts[row][loop].iters + fb_counts[row][loop].entries * (uint64_t)LOOP_DEPTH[loop];
}
void fb_reset_counts() {
    for (int r = 0; r < FB_NUM_ROWS; r++)
        for (int k = 0; k < FB_NUM_LOOPS; k++) fb_counts[r][k].iters = fb_counts[r][k].entries = 0;
}
#endif
