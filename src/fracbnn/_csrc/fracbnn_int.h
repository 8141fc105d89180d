/* fracbnn_int.h: the scalar integer primitives of the packed model, in C.
 *
 * One header shared by the fast CPU engine (fracbnn/deploy/_kernels) and the
 * generated HLS kernel (copied into every `fracbnn hw generate` project), so
 * both compute every rounding, saturation, quantizer code and gate test with
 * the same few lines. The readable specification stays the golden numpy
 * engine: fracbnn/ir/arith.py (round_shift, saturate, thermometer level) and
 * fracbnn/ir/ops (quantize2, sign_bit, quantize, frac_conv's gate,
 * scale_shift, block_post); tests/test_int_header.py proves these functions
 * bit-equal to it on random and edge-case int64 inputs.
 *
 * Plain C99 that is also valid C++ (Vitis HLS compiles it as C++): static
 * inline functions on int64_t, with numpy's int64 semantics. Sums and products
 * wrap around modulo 2^64 (they are done on uint64_t); right shifts of
 * negative values are floors, written so that no compiler-defined behaviour is
 * relied on. Shifts s are 0..62, saturation widths bits 2..63.
 */
#ifndef FRACBNN_INT_H
#define FRACBNN_INT_H

#include <stdint.h>

#define FBI_INLINE static inline

/* a + b and a * b modulo 2^64, as numpy int64 computes them */
FBI_INLINE int64_t fbi_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
FBI_INLINE int64_t fbi_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

/* floor(v / 2^s), numpy's v >> s (for negative v: ~v >= 0, and floor(v / 2^s) = ~(~v >> s)) */
FBI_INLINE int64_t fbi_floor_shift(int64_t v, int s) { return v < 0 ? ~(~v >> s) : v >> s; }

/* arith.round_shift: floor((v + 2^(s-1)) / 2^s), ties toward +infinity; v for s = 0 */
FBI_INLINE int64_t fbi_round_shift(int64_t v, int s)
{
    return s == 0 ? v : fbi_floor_shift(fbi_add(v, (int64_t)((uint64_t)1 << (s - 1))), s);
}

/* arith.saturate: clip to the signed range of `bits` bits, [-2^(bits-1), 2^(bits-1) - 1] */
FBI_INLINE int64_t fbi_saturate(int64_t v, int bits)
{
    const int64_t hi = (int64_t)(((uint64_t)1 << (bits - 1)) - 1), lo = -hi - 1;
    return v < lo ? lo : (v > hi ? hi : v);
}

/* the output stage of every saturating op: saturate(round_shift(v, shift), bits) */
FBI_INLINE int64_t fbi_round_shift_saturate(int64_t v, int shift, int bits)
{
    return fbi_saturate(fbi_round_shift(v, shift), bits);
}

/* sign_bit: 1 for r >= 0 (the +1 of sign(0) = +1), else 0; also the MSB of quantize2 */
FBI_INLINE int fbi_sign_bit(int64_t r) { return r >= 0; }

/* quantize2 code c in 0..3 of r with F fraction bits: [3r > -2^(F+1)] + [r >= 0] + [3r > 2^(F+1)]
 * (3r wraps like numpy); MSB plane bit = c >> 1, LSB plane bit = c & 1 */
FBI_INLINE int fbi_quantize2_code(int64_t r, int frac_bits)
{
    const int64_t b = (int64_t)((uint64_t)1 << (frac_bits + 1)), t = fbi_mul(r, 3);
    return (t > -b) + (r >= 0) + (t > b);
}

/* quantize.uniform_code: c = clamp(floor((L (r + 2^F) + 2^F) / 2^(F+1)), 0, L), L = 2^k - 1 (k = bits) */
FBI_INLINE int64_t fbi_uniform_code(int64_t r, int frac_bits, int bits)
{
    const int64_t L = ((int64_t)1 << bits) - 1, one = (int64_t)1 << frac_bits;
    const int64_t c = fbi_floor_shift(fbi_add(fbi_mul(L, fbi_add(r, one)), one), frac_bits + 1);
    return c < 0 ? 0 : (c > L ? L : c);
}

/* the quantize op (k-bit shortcut codes): v = 2c - L, an odd integer in -L..L */
FBI_INLINE int64_t fbi_quantize_value(int64_t r, int frac_bits, int bits)
{
    return 2 * fbi_uniform_code(r, frac_bits, bits) - (((int64_t)1 << bits) - 1);
}

/* frac_conv's precision gate: the LSB pass of output o is used iff S_M > threshold[o] */
FBI_INLINE int fbi_gate_open(int64_t s_m, int64_t threshold) { return s_m > threshold; }

/* 1 if v lies outside the signed range of `bits` bits (saturate would change it): the saturation count */
FBI_INLINE int fbi_clips(int64_t v, int bits) { return v != fbi_saturate(v, bits); }

/* scale_shift before saturation: round_shift(a * mul + add, shift) */
FBI_INLINE int64_t fbi_scale_shift_raw(int64_t a, int64_t mul, int64_t add, int shift)
{
    return fbi_round_shift(fbi_add(fbi_mul(a, mul), add), shift);
}

/* scale_shift: saturate(round_shift(a * mul + add, shift), bits) */
FBI_INLINE int64_t fbi_scale_shift(int64_t a, int64_t mul, int64_t add, int shift, int bits)
{
    return fbi_saturate(fbi_scale_shift_raw(a, mul, add, shift), bits);
}

/* block_post before saturation: pos = sign a > threshold;
 * round_shift((pos ? pos_mul a + pos_add : neg_mul a + neg_add) + sc_mul sc, shift) */
FBI_INLINE int64_t fbi_block_post_raw(int64_t a, int64_t sign, int64_t threshold, int64_t pos_mul, int64_t pos_add,
                                      int64_t neg_mul, int64_t neg_add, int64_t sc_mul, int64_t sc, int shift)
{
    const int pos = fbi_mul(sign, a) > threshold;
    const int64_t v = fbi_add(fbi_mul(pos ? pos_mul : neg_mul, a), pos ? pos_add : neg_add);
    return fbi_round_shift(fbi_add(v, fbi_mul(sc_mul, sc)), shift);
}

/* block_post: saturate(block_post_raw(...), bits) */
FBI_INLINE int64_t fbi_block_post(int64_t a, int64_t sign, int64_t threshold, int64_t pos_mul, int64_t pos_add,
                                  int64_t neg_mul, int64_t neg_add, int64_t sc_mul, int64_t sc, int shift, int bits)
{
    return fbi_saturate(fbi_block_post_raw(a, sign, threshold, pos_mul, pos_add, neg_mul, neg_add, sc_mul, sc, shift),
                        bits);
}

/* arith.thermometer_level: round(p / R) ties to even, for 0 <= p (the number of +1 bits of a pixel's code) */
FBI_INLINE int fbi_thermometer_level(int p, int resolution)
{
    const int q = p / resolution, rem = p - q * resolution;
    return q + ((2 * rem > resolution) || (2 * rem == resolution && (q & 1)) ? 1 : 0);
}

/* Number of 1 bits of a 64-bit word: the XNOR-popcount engines' one primitive (an adder tree in synthesis). */
FBI_INLINE int fbi_popcount64(uint64_t x)
{
#if defined(__GNUC__) && !defined(__SYNTHESIS__)
    return __builtin_popcountll((unsigned long long)x);
#else
    int c = 0, i;
    for (i = 0; i < 64; i++) c += (int)((x >> i) & 1u);
    return c;
#endif
}

/* arith.binary_conv2d, one valid tap of one word: the +-1 products of ``n`` channels (bits 0..n-1; higher bits
 * of x and w must be equal so they cancel, e.g. both 0) summed: n - 2 popcount(x XOR w). */
FBI_INLINE int fbi_xnor_dot(uint64_t x, uint64_t w, int n) { return n - 2 * fbi_popcount64(x ^ w); }

#endif /* FRACBNN_INT_H */
