/* Eight float32 numbers at a time (GCC's and Clang's vector extension): exp of non-positive numbers,
 * log1p on [0, 1], log and tanh, for the kernels elu.c, iaf.c and planar.c, which include this file (a
 * change here rebuilds them: flowlib/flows/kernels/__init__.py hashes the headers with the source).
 * Checked against the C library in double (tests/test_elu.py, tests/test_iaf_gate.py,
 * tests/test_vexp.py): exp within one unit in the last place on every float of [-104, 0], like
 * PyTorch's own (SLEEF's u10); log1p within 2.5 on every float of [0, 1], log and tanh within 2 and 2.5
 * on every 7th float of their range. */
#ifndef FLOWLIB_VEXP_H
#define FLOWLIB_VEXP_H

#include <string.h>

#include "clones.h"

#define LANES 8

typedef float vf __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float))));
typedef int vi __attribute__((vector_size(LANES * sizeof(int)), aligned(sizeof(int))));

#define INLINE static inline __attribute__((always_inline))

/* a where mask (all ones), else b */
INLINE vf blend(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

/* 2^k for integers k in [-126, 127] */
INLINE vf pow2(vi k) { return (vf)((k + 127) << 23); }

/* exp(t) for t <= 0 (or NaN), as in SLEEF's expf (Shibata 2010; its coefficients): t = n ln 2 + s,
 * n = round(t / ln 2), ln 2 split into a high part with few bits (n ln2_hi is exact) and a low one,
 * |s| <= ln 2 / 2; exp(s) = 1 + p, p = s + s^2 u(s), u of degree 5; exp(t) = 2^n (1 + p), with 2^n
 * applied as two normal factors 2^n1 2^n2 (n1 = floor(n / 2)), so that results below the smallest
 * normal float (t < -87.3) are rounded once, as subnormals. t < -104 is taken as -104, where exp
 * already rounds to 0. Returns p and the two factors (exp_nonpositive and exp_and_expm1 combine them). */
INLINE void exp_parts(vf t, vf *p, vf *scale1, vf *scale2) {
    const vf zero = {0};
    t = blend(t < -104.0f, zero - 104.0f, t);
    /* adding 1.5 * 2^23 leaves round(t / ln 2) in the low bits */
    const vf shifted = t * 1.44269504088896341f + 12582912.0f;
    const vf n = shifted - 12582912.0f;
    const vi k = (vi)shifted - 0x4B400000;
    vf s = t - n * 0.693145751953125f;
    s = s - n * 1.428606765330187045e-06f;
    vf u = 0.000198527617612853646278381f + zero;
    u = u * s + 0.00139304355252534151077271f;
    u = u * s + 0.00833336077630519866943359f;
    u = u * s + 0.0416664853692054748535156f;
    u = u * s + 0.166666671633720397949219f;
    u = u * s + 0.5f;
    *p = s + (s * s) * u;
    const vi k1 = k >> 1;
    *scale1 = pow2(k1);
    *scale2 = pow2(k - k1);
}

/* exp(t), t <= 0 (exp_parts) */
INLINE vf exp_nonpositive(vf t) {
    vf p, scale1, scale2;
    exp_parts(t, &p, &scale1, &scale2);
    return ((1 + p) * scale1) * scale2;
}

/* exp(t) and exp(t) - 1, t <= 0, from one exp_parts: the second as 2^n p + (2^n - 1), accurate near 0
 * as expm1 is (2^n - 1 is 0 there, and p itself the result). */
INLINE void exp_and_expm1(vf t, vf *e, vf *em1) {
    vf p, scale1, scale2;
    exp_parts(t, &p, &scale1, &scale2);
    *e = ((1 + p) * scale1) * scale2;
    *em1 = (p * scale1) * scale2 + (scale1 * scale2 - 1);  /* 2^n: 0 or subnormal below 2^-126 */
}

/* log(1 + f) for |f| <= sqrt(2) - 1: 2 atanh(r) = 2 r + r^3 (2/3 + r^2 (2/5 + r^2 (2/7 + r^2 2/9))),
 * r = f / (2 + f), |r| <= 0.172 (the series' next term is below 2^-28 of the sum). */
INLINE vf log1p_reduced(vf f) {
    const vf r = f / (f + 2);
    const vf r2 = r * r;
    vf q = r2 * 0.222222222222222222f + 0.285714285714285714f;
    q = q * r2 + 0.4f;
    q = q * r2 + 0.666666666666666667f;
    return 2 * r + (r * r2) * q;
}

/* log1p(e) for e in [0, 1] (or NaN): w = 1 + e rounded, c = e - (w - 1) its rounding error (exact, as
 * e <= 1), log1p(e) = log(w) + c / w to first order; log(w) = j ln 2 + log(1 + f), j = 1 and f = w / 2 - 1
 * where w > sqrt(2), else j = 0 and f = w - 1 (both exact). */
INLINE vf log1p_unit(vf e) {
    const vf zero = {0}, one = zero + 1;
    const vf w = one + e;
    const vf c = e - (w - one);
    const vi big = w > 1.41421356237309505f;
    const vf f = blend(big, w * 0.5f - one, w - one);
    return blend(big, zero + 0.693147180559945309f, zero) + log1p_reduced(f) + c / w;
}

/* log(q), q >= 0 (0 gives -inf, infinity itself; negative numbers and NaN give NaN): q = 2^j m with
 * m in [sqrt(1/2), sqrt(2)) from q's bits (subnormal q scaled by 2^24 first), log q = j ln 2 + log(1 + f),
 * f = m - 1 (exact), ln 2 in two parts so that j ln2_hi is exact. */
INLINE vf log_nonnegative(vf q) {
    const vf zero = {0}, one = zero + 1;
    const vi subnormal = q < 1.17549435082228750797e-38f;
    const vi bits = (vi)blend(subnormal, q * 16777216.0f, q);
    vi j = ((bits >> 23) & 0xff) - 127 - (subnormal & 24);
    vf m = (vf)((bits & 0x007fffff) | 0x3f800000);  /* in [1, 2) */
    const vi big = m > 1.41421356237309505f;
    m = blend(big, m * 0.5f, m);
    j = j + (big & 1);
    const vf jf = __builtin_convertvector(j, vf);
    vf log_q = jf * 0.693145751953125f + (jf * 1.428606765330187045e-06f + log1p_reduced(m - one));
    log_q = blend(q == 0, zero - __builtin_inff(), log_q);
    log_q = blend(q == __builtin_inff(), q, log_q);
    return blend((q != q) | (q < 0), zero + __builtin_nanf(""), log_q);
}

/* tanh(a) = sign(a) t, t = -x / (2 + x), x = expm1(-2 |a|) (exp_and_expm1), accurate near 0 as expm1
 * is; NaN gives NaN. */
INLINE vf tanh_any(vf a) {
    const vf zero = {0};
    const vi negative = a < 0;
    vf e, x;
    exp_and_expm1(blend(negative, a + a, -(a + a)), &e, &x);
    const vf t = -x / (x + 2);
    return blend(negative, zero - t, t);
}

#endif
