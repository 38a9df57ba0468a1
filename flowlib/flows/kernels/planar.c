/* A run of K planar layers (Rezende & Mohamed 2015, Sec. 4.1 and Appendix A.1): forward and backward
 * in one call each, sample by sample, with no per-layer dispatch. flowlib/flows/planar.py calls these
 * through ctypes (_PlanarKernel); _PlanarChain's docstring derives the backward, and
 * tests/test_fused_chains.py checks both against the PyTorch path, autograd and gradcheck.
 *
 * Row n of z (N rows of D numbers) uses the parameter row p = n % P: P = 1 for a static run (every
 * sample shares the layers), P = B for an amortized one (z holds S blocks of the same B samples).
 * theta (P, K, 2D + 1) holds each layer's raw [u, w, b]. */
#include <math.h>
#include <string.h>

#include "vexp.h"

/* Samples are taken BLOCK at a time, layer by layer: the K layers of one sample are a chain of
 * dependent steps (a dot product, tanh, an update), and BLOCK independent chains side by side let the
 * CPU overlap them. Each sample's arithmetic, and the order in which the rows that share a layer add
 * into its gradient, are those of one sample at a time: the results are the same to the bit. In float32
 * the block's BLOCK tanh and log are one vector call each (vexp.h); planar x 80 forward and backward
 * on a batch of 128 x 40 took 0.90 of the time with the C library's tanhf and logf (bench/kernel_ab.py). */
#define BLOCK LANES

/* tanh and log of BLOCK numbers in place: for float32 eight at a time with vexp.h's (within a few units
 * in the last place), for float64 one at a time with the C library's. */
INLINE void tanh_block_f32(float *a) { vf v; memcpy(&v, a, sizeof v); v = tanh_any(v); memcpy(a, &v, sizeof v); }
INLINE void log_block_f32(float *q) { vf v; memcpy(&v, q, sizeof v); v = log_nonnegative(v); memcpy(q, &v, sizeof v); }
INLINE void tanh_block_f64(double *a) { for (int j = 0; j < BLOCK; j++) a[j] = tanh(a[j]); }
INLINE void log_block_f64(double *q) { for (int j = 0; j < BLOCK; j++) q[j] = log(q[j]); }

#define PLANAR(T, SUFFIX, TANH, LOG, LOG1P, EXP, TINY)                                                    \
static T softplus_##SUFFIX(T x) { return x > 20 ? x : LOG1P(EXP(x)); } /* torch's threshold of 20 */    \
                                                                                                          \
/* Appendix A.1, for every layer i of the P x K: u_hat = u + m w, m = (softplus(-w^T u) - 1) / ||w||^2,   \
 * so that w^T u_hat > -1; and c = softplus(w^T u) = 1 + w^T u_hat, the determinant's constant. */        \
static void constrain_##SUFFIX(long PK, long D, const T *theta, T *u_hat, T *c) {                          \
    for (long i = 0; i < PK; i++) {                                                                       \
        const T *u = theta + i * (2 * D + 1), *w = u + D;                                                 \
        T wu = 0, w_sq = 0;                                                                               \
        for (long d = 0; d < D; d++) { wu += w[d] * u[d]; w_sq += w[d] * w[d]; }                          \
        const T m = (softplus_##SUFFIX(-wu) - 1) / (w_sq > TINY ? w_sq : TINY);                            \
        for (long d = 0; d < D; d++) u_hat[i * D + d] = u[d] + m * w[d];                                  \
        c[i] = softplus_##SUFFIX(wu);                                                                     \
    }                                                                                                     \
}                                                                                                         \
                                                                                                          \
/* z_{k+1} = z_k + u_hat_k t_k, t_k = tanh(w_k^T z_k + b_k) (eq. 10), in place on z (N, D); logdet[n] =  \
 * sum_k log q_k, q_k = t_k^2 + (1 - t_k^2) c_k (eq. 12). Writes u_hat (P, K, D) and c (P, K), and keeps  \
 * for the backward t (N, K) and, unless zs is NULL, every layer's input zs (N, K, D). */                 \
VECTOR_CLONES void planar_forward_##SUFFIX(long N, long K, long D, long P, const T *theta, T *u_hat, T *c, T *z,        \
                             T *logdet, T *t, T *zs) {                                                    \
    constrain_##SUFFIX(P * K, D, theta, u_hat, c);                                                        \
    for (long n0 = 0; n0 < N; n0 += BLOCK) {                                                              \
        const long nb = N - n0 < BLOCK ? N - n0 : BLOCK;                                                  \
        T total[BLOCK], tk[BLOCK], qk[BLOCK];                                                             \
        for (long j = 0; j < nb; j++) total[j] = 0;                                                       \
        for (long k = 0; k < K; k++) {                                                                    \
            for (long j = 0; j < BLOCK; j++) tk[j] = 0, qk[j] = 1; /* rows past N: harmless values */    \
            for (long j = 0; j < nb; j++) {                                                               \
                const long n = n0 + j, i = (n % P) * K + k;                                               \
                const T *wk = theta + i * (2 * D + 1) + D, *zn = z + n * D;                               \
                if (zs) memcpy(zs + (n * K + k) * D, zn, D * sizeof(T));                                 \
                T a = 0;                                                                                  \
                _Pragma("omp simd reduction(+:a)")                                                        \
                for (long d = 0; d < D; d++) a += wk[d] * zn[d];                                          \
                tk[j] = a + wk[D];                                                                        \
            }                                                                                             \
            TANH(tk);                                                                                     \
            for (long j = 0; j < nb; j++) {                                                               \
                const long n = n0 + j, i = (n % P) * K + k;                                               \
                const T *uk = u_hat + i * D;                                                              \
                T *zn = z + n * D;                                                                        \
                for (long d = 0; d < D; d++) zn[d] += tk[j] * uk[d];                                      \
                const T t2 = tk[j] * tk[j];                                                               \
                qk[j] = t2 + (1 - t2) * c[i];                                                             \
                t[n * K + k] = tk[j];                                                                     \
            }                                                                                             \
            LOG(qk);                                                                                      \
            for (long j = 0; j < nb; j++) total[j] += qk[j];                                              \
        }                                                                                                 \
        for (long j = 0; j < nb; j++) logdet[n0 + j] = total[j];                                          \
    }                                                                                                     \
}                                                                                                         \
                                                                                                          \
/* g (N, D) holds dL/dz_K on entry and dL/dz_0 on return; gl (N) is dL/dlogdet. Writes dL/dtheta into   \
 * the zeroed g_theta (P, K, 2D + 1), using the zeroed g_uhat (P, K, D) and g_c (P, K) as scratch.        \
 * Layer by layer in reverse (sums over the rows that share a layer's parameters):                        \
 *   dL/dt = u_hat^T g + gl 2 t (1 - c) / q,  dL/da = (1 - t^2) dL/dt,  g <- g + w dL/da,                 \
 *   dL/du_hat = sum t g,  dL/dw = sum dL/da z,  dL/db = sum dL/da,  dL/dc = sum gl (1 - t^2) / q;         \
 * then through the constraint, with sigma = sigmoid(-w^T u):                                             \
 *   dL/dm = dL/du_hat^T w,  dL/d(w^T u) = dL/dc (1 - sigma) - dL/dm sigma / ||w||^2,                     \
 *   dL/du = dL/du_hat + dL/d(w^T u) w,                                                                   \
 *   dL/dw += m dL/du_hat + dL/d(w^T u) u - 2 dL/dm m w / ||w||^2  (the last term 0 where ||w||^2 is      \
 *   clamped). */                                                                                         \
VECTOR_CLONES void planar_backward_##SUFFIX(long N, long K, long D, long P, const T *theta, const T *u_hat,             \
                              const T *c, const T *t, const T *zs, const T *gl, T *g, T *g_theta,         \
                              T *g_uhat, T *g_c) {                                                        \
    const long R = 2 * D + 1;                                                                             \
    for (long n0 = 0; n0 < N; n0 += BLOCK) {                                                              \
      const long nb = N - n0 < BLOCK ? N - n0 : BLOCK;                                                    \
      for (long k = K - 1; k >= 0; k--) {                                                                 \
        for (long n = n0; n < n0 + nb; n++) {                                                             \
            const long i = (n % P) * K + k;                                                               \
            T *gn = g + n * D;                                                                            \
            const T *uk = u_hat + i * D, *wk = theta + i * R + D, *zk = zs + (n * K + k) * D;            \
            T *guk = g_uhat + i * D, *gwk = g_theta + i * R + D;                                          \
            const T tk = t[n * K + k], h1 = 1 - tk * tk;                                                  \
            const T gl_q = gl[n] / (tk * tk + h1 * c[i]);                                                 \
            T ug = 0;                                                                                     \
            _Pragma("omp simd reduction(+:ug)")                                                           \
            for (long d = 0; d < D; d++) ug += uk[d] * gn[d];                                             \
            const T ga = h1 * (ug + 2 * gl_q * tk * (1 - c[i]));                                          \
            gwk[D] += ga;                                                                                 \
            g_c[i] += gl_q * h1;                                                                          \
            for (long d = 0; d < D; d++) {                                                                \
                guk[d] += tk * gn[d];                                                                     \
                gwk[d] += ga * zk[d];                                                                     \
                gn[d] += ga * wk[d];                                                                      \
            }                                                                                             \
        }                                                                                                 \
      }                                                                                                   \
    }                                                                                                     \
    for (long i = 0; i < P * K; i++) {                                                                    \
        const T *u = theta + i * R, *w = u + D, *gu_hat = g_uhat + i * D;                                 \
        T *gu = g_theta + i * R, *gw = gu + D;                                                            \
        T wu = 0, w_sq_raw = 0, g_m = 0;                                                                  \
        for (long d = 0; d < D; d++) { wu += w[d] * u[d]; w_sq_raw += w[d] * w[d]; g_m += gu_hat[d] * w[d]; } \
        const T w_sq = w_sq_raw > TINY ? w_sq_raw : TINY;                                                 \
        const T m = (softplus_##SUFFIX(-wu) - 1) / w_sq, sigma = 1 / (1 + EXP(wu));                       \
        const T g_wu = g_c[i] * (1 - sigma) - g_m * sigma / w_sq;                                         \
        const T g_wsq = w_sq_raw >= TINY ? -g_m * m / w_sq : 0;                                           \
        for (long d = 0; d < D; d++) {                                                                    \
            gw[d] += m * gu_hat[d] + g_wu * u[d] + 2 * g_wsq * w[d];                                      \
            gu[d] = gu_hat[d] + g_wu * w[d];                                                              \
        }                                                                                                 \
    }                                                                                                     \
}

PLANAR(float, f32, tanh_block_f32, log_block_f32, log1pf, expf, 1.17549435082228750797e-38F)
PLANAR(double, f64, tanh_block_f64, log_block_f64, log1p, exp, 2.22507385850720138309e-308)
