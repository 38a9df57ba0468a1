/* A run of K Householder reflections (Tomczak & Welling 2016, eq. 9-10): forward and backward in one
 * call each, sample by sample, with no per-layer dispatch. flowlib/flows/householder.py calls these
 * through ctypes; _ReflectChain's docstring derives the backward, and tests/test_fused_chains.py checks
 * both against the PyTorch path, reflect_many and gradcheck.
 *
 * Row n of z (N rows of D numbers) uses the parameter row p = n % P: P = 1 for a static run (every
 * sample shares the reflections), P = B for an amortized one (z holds S blocks of the same B samples).
 * v is (P, K, D). */
#include <string.h>

#include "clones.h"

#define HOUSEHOLDER(T, SUFFIX, TINY)                                                                      \
/* z_{k+1} = z_k - (v_k^T z_k) c_k, c_k = 2 v_k / ||v_k||^2 (||v_k||^2 clamped to the smallest normal     \
 * number), in place on z (N, D). Writes c (P, K, D), and keeps for the backward v^T z (N, K) and,        \
 * unless zs is NULL, every reflection's input zs (N, K, D). */                                            \
VECTOR_CLONES void householder_forward_##SUFFIX(long N, long K, long D, long P, const T *v, T *c, T *z, T *vz, T *zs) { \
    for (long i = 0; i < P * K; i++) {                                                                    \
        T v_sq = 0;                                                                                       \
        for (long d = 0; d < D; d++) v_sq += v[i * D + d] * v[i * D + d];                                 \
        v_sq = v_sq > TINY ? v_sq : TINY;                                                                 \
        for (long d = 0; d < D; d++) c[i * D + d] = 2 * v[i * D + d] / v_sq;                              \
    }                                                                                                     \
    for (long n = 0; n < N; n++) {                                                                        \
        const long p = n % P;                                                                             \
        T *zn = z + n * D;                                                                                \
        for (long k = 0; k < K; k++) {                                                                    \
            const long i = p * K + k;                                                                     \
            const T *vk = v + i * D, *ck = c + i * D;                                                     \
            if (zs) memcpy(zs + (n * K + k) * D, zn, D * sizeof(T));                                     \
            T a = 0;                                                                                      \
            _Pragma("omp simd reduction(+:a)")                                                            \
            for (long d = 0; d < D; d++) a += vk[d] * zn[d];                                              \
            for (long d = 0; d < D; d++) zn[d] -= a * ck[d];                                              \
            vz[n * K + k] = a;                                                                            \
        }                                                                                                 \
    }                                                                                                     \
}                                                                                                         \
                                                                                                          \
/* g (N, D) holds dL/dz_K on entry and dL/dz_0 on return. Writes dL/dv into the zeroed g_v (P, K, D),    \
 * using the zeroed g_c (P, K, D) as scratch. In reverse over the reflections, g' the gradient of a       \
 * reflection's output: g = g' - (c^T g') v, dL/dv = -(c^T g') z, dL/dc = -(v^T z) g' (summed over the    \
 * rows that share v); then through c = 2 v / ||v||^2:                                                    \
 *   dL/dv += 2 dL/dc / ||v||^2 - 4 (dL/dc^T v) v / ||v||^4  (the last term 0 where the clamp binds). */  \
VECTOR_CLONES void householder_backward_##SUFFIX(long N, long K, long D, long P, const T *v, const T *c, const T *vz,   \
                                   const T *zs, T *g, T *g_v, T *g_c) {                                   \
    for (long n = 0; n < N; n++) {                                                                        \
        const long p = n % P;                                                                             \
        T *gn = g + n * D;                                                                                \
        for (long k = K - 1; k >= 0; k--) {                                                               \
            const long i = p * K + k;                                                                     \
            const T *vk = v + i * D, *ck = c + i * D, *zk = zs + (n * K + k) * D;                         \
            T *gvk = g_v + i * D, *gck = g_c + i * D;                                                     \
            const T a = vz[n * K + k];                                                                    \
            T cg = 0;                                                                                     \
            _Pragma("omp simd reduction(+:cg)")                                                           \
            for (long d = 0; d < D; d++) cg += ck[d] * gn[d];                                             \
            for (long d = 0; d < D; d++) {                                                                \
                gvk[d] -= cg * zk[d];                                                                     \
                gck[d] -= a * gn[d];                                                                      \
                gn[d] -= cg * vk[d];                                                                      \
            }                                                                                             \
        }                                                                                                 \
    }                                                                                                     \
    for (long i = 0; i < P * K; i++) {                                                                    \
        const T *vi = v + i * D, *gci = g_c + i * D;                                                      \
        T v_sq_raw = 0, gcv = 0;                                                                          \
        for (long d = 0; d < D; d++) { v_sq_raw += vi[d] * vi[d]; gcv += gci[d] * vi[d]; }                \
        const T v_sq = v_sq_raw > TINY ? v_sq_raw : TINY;                                                 \
        const T radial = v_sq_raw >= TINY ? 4 * gcv / (v_sq * v_sq) : 0;                                  \
        for (long d = 0; d < D; d++) g_v[i * D + d] += 2 * gci[d] / v_sq - radial * vi[d];                \
    }                                                                                                     \
}

HOUSEHOLDER(float, f32, 1.17549435082228750797e-38F)
HOUSEHOLDER(double, f64, 2.22507385850720138309e-308)
