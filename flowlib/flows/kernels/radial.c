/* A run of K radial layers (Rezende & Mohamed 2015, Sec. 4.1 and Appendix A.2): forward and backward
 * in one call each, sample by sample, with no per-layer dispatch. flowlib/flows/radial.py calls these
 * through ctypes (_RadialKernel); _RadialChain's docstring derives the backward, and
 * tests/test_fused_chains.py checks both against the PyTorch path, autograd and gradcheck.
 *
 * Row n of z (N rows of D numbers) uses the parameter row p = n % P: P = 1 for a static run (every
 * sample shares the layers), P = B for an amortized one (z holds S blocks of the same B samples).
 * z0 is (P, K, D); alpha > 0 and s = alpha + beta > 0 are (P, K). */
#include <math.h>

#include "clones.h"
#include <string.h>

#define RADIAL(T, SUFFIX, SQRT, LOG, TINY)                                                                \
/* z_{k+1} = z0_k + c_k d_k, d_k = z_k - z0_k, r_k = ||d_k||, c_k = (r_k + s_k) / (alpha_k + r_k)       \
 * (eq. 14), in place on z (N, D); logdet[n] = sum_k (D - 1) log c_k + log P_k - 2 log(alpha_k + r_k),  \
 * P_k = r_k^2 + 2 alpha_k r_k + alpha_k s_k. Keeps r and c (N, K) and, unless ds is NULL, every        \
 * layer's d (N, K, D) for the backward. */                                                              \
VECTOR_CLONES void radial_forward_##SUFFIX(long N, long K, long D, long P, const T *z0, const T *alpha, const T *s,     \
                             T *z, T *logdet, T *r, T *c, T *ds) {                                        \
    T dk[D];                                                                                              \
    for (long n = 0; n < N; n++) {                                                                        \
        const long p = n % P;                                                                             \
        T *zn = z + n * D;                                                                                \
        T total = 0;                                                                                      \
        for (long k = 0; k < K; k++) {                                                                    \
            const long i = p * K + k;                                                                     \
            const T *ck0 = z0 + i * D;                                                                    \
            T r2 = 0;                                                                                     \
            for (long d = 0; d < D; d++) { dk[d] = zn[d] - ck0[d]; r2 += dk[d] * dk[d]; }                 \
            const T rk = SQRT(r2), a = alpha[i], sk = s[i];                                               \
            const T scale = (rk + sk) / (a + rk);                                                         \
            for (long d = 0; d < D; d++) zn[d] = ck0[d] + scale * dk[d];                                  \
            if (ds) memcpy(ds + (n * K + k) * D, dk, D * sizeof(T));                                     \
            total += (D - 1) * LOG(scale) + (LOG(rk * (rk + 2 * a) + a * sk) - 2 * LOG(a + rk));          \
            r[n * K + k] = rk;                                                                            \
            c[n * K + k] = scale;                                                                         \
        }                                                                                                 \
        logdet[n] = total;                                                                                \
    }                                                                                                     \
}                                                                                                         \
                                                                                                          \
/* g (N, D) holds dL/dz_K on entry and dL/dz_0 on return; gl (N) is dL/dlogdet. Accumulates into the     \
 * zeroed g_z0 (P, K, D), g_alpha and g_s (P, K). Layer by layer in reverse, with g' the gradient of the  \
 * layer's output:                                                                                        \
 *   dL/dc = g'^T d + gl (D - 1) / c,                                                                     \
 *   dL/dr = dL/dc (alpha - s) / (alpha + r)^2 + gl ((2 r + 2 alpha) / P - 2 / (alpha + r)),               \
 *   dL/dz = c g' + dL/dr d / r,   dL/dz0 = g' - dL/dz,                                                   \
 *   dL/dalpha = -dL/dc c / (alpha + r) + gl ((2 r + s) / P - 2 / (alpha + r)),                            \
 *   dL/ds = dL/dc / (alpha + r) + gl alpha / P. */                                                        \
VECTOR_CLONES void radial_backward_##SUFFIX(long N, long K, long D, long P, const T *alpha, const T *s, const T *r,     \
                              const T *c, const T *ds, const T *gl, T *g, T *g_z0, T *g_alpha, T *g_s) { \
    for (long n = 0; n < N; n++) {                                                                        \
        const long p = n % P;                                                                             \
        T *gn = g + n * D;                                                                                \
        const T gln = gl[n];                                                                              \
        for (long k = K - 1; k >= 0; k--) {                                                               \
            const long i = p * K + k;                                                                     \
            const T *dk = ds + (n * K + k) * D;                                                           \
            const T rk = r[n * K + k], ck = c[n * K + k], a = alpha[i], sk = s[i];                        \
            const T inv_ar = 1 / (a + rk), gl_P = gln / (rk * (rk + 2 * a) + a * sk);                     \
            T gd = 0;                                                                                     \
            _Pragma("omp simd reduction(+:gd)")                                                           \
            for (long d = 0; d < D; d++) gd += gn[d] * dk[d];                                             \
            const T gc = gd + gln * ((D - 1) / ck);                                                       \
            const T gr = gc * (a - sk) * inv_ar * inv_ar + (2 * (rk + a) * gl_P - 2 * gln * inv_ar);      \
            const T gr_r = gr / (rk > TINY ? rk : TINY);                                                  \
            T *gz0 = g_z0 + i * D;                                                                        \
            for (long d = 0; d < D; d++) {                                                                \
                const T gdz = ck * gn[d] + gr_r * dk[d];                                                  \
                gz0[d] += gn[d] - gdz;                                                                    \
                gn[d] = gdz;                                                                              \
            }                                                                                             \
            g_alpha[i] += ((2 * rk + sk) * gl_P - 2 * gln * inv_ar) - gc * ck * inv_ar;                   \
            g_s[i] += a * gl_P + gc * inv_ar;                                                             \
        }                                                                                                 \
    }                                                                                                     \
}

RADIAL(float, f32, sqrtf, logf, 1.17549435082228750797e-38F)
RADIAL(double, f64, sqrt, log, 2.22507385850720138309e-308)
