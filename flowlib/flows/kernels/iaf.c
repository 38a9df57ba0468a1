/* The gated IAF step's elementwise part (Kingma et al. 2016, eq. 14-15) on float32, eight numbers at a
 * time: flowlib/flows/iaf.py calls these through ctypes (_Gate) where the MADE has given its outputs;
 * tests/test_iaf_gate.py checks them against the PyTorch path, autograd and exact values in float64.
 *
 *   sigma = sigmoid(s + b),  z' = m + sigma (z - m) = sigma z + (1 - sigma) m,  log|det| = sum_i log sigma_i,
 *
 * with m and s the MADE's two outputs, side by side in each row of out (m = out[:D], s = out[D:2D]) and
 * b the forget bias. One pass forward and one backward replace some fifteen PyTorch operations and
 * their autograd nodes on a 128 x 40 batch (views, sigmoid, log, lerp, sum and their backwards), each
 * of which costs more in dispatch than in arithmetic.
 *
 * sigmoid and log sigmoid from e = exp(-|a|), a = s + b (vexp.h): sigma = 1 / (1 + e) for a >= 0 and
 * e / (1 + e) below; log sigma = -log1p(e) for a >= 0 and a - log1p(e) below, so neither overflows nor
 * loses the result to a rounded sigma of 0 (for a < -87, where PyTorch's path takes log sigma = a).
 *
 * Sizes: N rows of D numbers (z, z', sigma: N x D; out: N x 2D; logdet: N); the other two sizes every
 * kernel function takes (flowlib/flows/kernels/__init__.py) are unused. Only float32. */
#include "vexp.h"

/* count <= LANES floats from p, zeros beyond; and back */
INLINE vf load(const float *p, long count) {
    if (count == LANES) return *(const vf *)p;
    vf v = {0};
    memcpy(&v, p, count * sizeof(float));
    return v;
}
INLINE void store(float *p, vf v, long count) {
    if (count == LANES) *(vf *)p = v;
    else memcpy(p, &v, count * sizeof(float));
}

/* sigma and log sigma of a = s + b for LANES numbers */
INLINE void gate8(vf a, vf *sigma, vf *log_sigma) {
    const vf zero = {0}, one = zero + 1;
    const vi negative = a < 0;
    const vf e = exp_nonpositive(blend(negative, a, -a));  /* exp(-|a|), NaN kept */
    const vf r = one / (one + e);
    *sigma = blend(negative, e * r, r);
    *log_sigma = blend(negative, a, zero) - log1p_unit(e);
}

/* z' (N x D), logdet (N) and sigma (N x D, kept for the backward) from out (N x 2D), z (N x D) and the
 * forget bias b[0]. */
VECTOR_CLONES void iaf_forward_f32(long N, long D, long unused1, long unused2, const float *out,
                                   const float *z, const float *b, float *y, float *logdet, float *sigma) {
    (void)unused1, (void)unused2;
    const vf zero = {0};
    for (long n = 0; n < N; n++) {
        const float *m = out + n * 2 * D, *s = m + D, *zn = z + n * D;
        float *yn = y + n * D, *sn = sigma + n * D;
        vf total = zero;
        for (long d = 0; d < D; d += LANES) {
            const long count = D - d < LANES ? D - d : LANES;
            const vf mv = load(m + d, count), zv = load(zn + d, count);
            vf sig, log_sig;
            gate8(load(s + d, count) + b[0], &sig, &log_sig);
            store(yn + d, mv + sig * (zv - mv), count);
            store(sn + d, sig, count);
            if (count < LANES) {  /* padding lanes add nothing */
                for (long v = count; v < LANES; v++) log_sig[v] = 0;
            }
            total += log_sig;
        }
        float sum = 0;
        for (long v = 0; v < LANES; v++) sum += total[v];
        logdet[n] = sum;
    }
}

/* From g = dL/dz' (N x D) and gl = dL/dlogdet (N): g_out = [dL/dm, dL/ds] (N x 2D) and g_z = dL/dz
 * (N x D), with o = 1 - sigma:
 *   dL/dz = g sigma,  dL/dm = g o,  dL/ds = o (g (z - m) sigma + gl)
 * (d sigma / ds = sigma o, d log sigma / ds = o). */
VECTOR_CLONES void iaf_backward_f32(long N, long D, long unused1, long unused2, const float *out,
                                    const float *z, const float *sigma, const float *g, const float *gl,
                                    float *g_out, float *g_z) {
    (void)unused1, (void)unused2;
    const vf zero = {0}, one = zero + 1;
    for (long n = 0; n < N; n++) {
        const float *m = out + n * 2 * D, *zn = z + n * D, *sn = sigma + n * D, *gn = g + n * D;
        float *gm = g_out + n * 2 * D, *gs = gm + D, *gz = g_z + n * D;
        const float gln = gl[n];
        for (long d = 0; d < D; d += LANES) {
            const long count = D - d < LANES ? D - d : LANES;
            const vf mv = load(m + d, count), zv = load(zn + d, count), sig = load(sn + d, count);
            const vf gv = load(gn + d, count), o = one - sig;
            store(gz + d, gv * sig, count);
            store(gm + d, gv * o, count);
            store(gs + d, o * (gv * (zv - mv) * sig + gln), count);
        }
    }
}
