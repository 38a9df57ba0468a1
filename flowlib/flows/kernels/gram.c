/* The elementwise parts of W = J diag(d) J^T with J = diag(g) M + diag(f) B, forward and backward in
 * one pass each over the (n x H) matrices of the batch: PCP-Map's Hessian term of its second layer
 * (flowlib/flows/pcpmap.py, J_1 there), built by flowlib/flows/spd.py's gram_of_sum, which does the
 * batched matrix products (J diag(d) J^T forward, P = (G + G^T) J backward) with PyTorch and calls
 * these through ctypes; tests/test_spd.py checks them against autograd.
 *
 * Sizes: N rows (matrices) of n x H; row r uses row r % Pg of g and f (Pg = 1: one vector for every
 * row, a static flow; Pg = B: one per image, the samples of an image sharing it). M, J, JD, P, g_M are
 * (N, n, H); d, g_d (N, H); g, f, g_g, g_f (Pg, n); B, g_B (n, H); all contiguous. */

#define GRAM(T, SUFFIX)                                                                                   \
/* J = diag(g) M + diag(f) B and JD = J diag(d), row by row. */                                          \
void gram_forward_##SUFFIX(long N, long n, long H, long Pg, const T *g, const T *M, const T *f,          \
                           const T *B, const T *d, T *J, T *JD) {                                         \
    for (long r = 0; r < N; r++) {                                                                        \
        const T *gr = g + (r % Pg) * n, *fr = f + (r % Pg) * n, *dr = d + r * H;                          \
        for (long i = 0; i < n; i++) {                                                                    \
            const T gi = gr[i], fi = fr[i];                                                               \
            const T *Mi = M + (r * n + i) * H, *Bi = B + i * H;                                           \
            T *Ji = J + (r * n + i) * H, *JDi = JD + (r * n + i) * H;                                     \
            _Pragma("omp simd")                                                                           \
            for (long h = 0; h < H; h++) {                                                                \
                const T x = gi * Mi[h] + fi * Bi[h];                                                      \
                Ji[h] = x;                                                                                \
                JDi[h] = x * dr[h];                                                                       \
            }                                                                                             \
        }                                                                                                 \
    }                                                                                                     \
}                                                                                                         \
                                                                                                          \
/* From P = (G + G^T) J (G the gradient of W) and g_J_in (the gradient of J from elsewhere, or NULL):     \
 *   dL/dd_h = 1/2 sum_i J_ih P_ih,   dL/dJ = P diag(d) + g_J_in,                                         \
 * then through J = diag(g) M + diag(f) B:                                                                \
 *   dL/dM = diag(g) dL/dJ,  dL/dg_i = sum_h dL/dJ_ih M_ih,  dL/df_i = sum_h dL/dJ_ih B_ih,               \
 *   dL/dB = sum over rows of diag(f) dL/dJ,                                                              \
 * the sums over g's and f's rows taken over every row that uses them. g_g, g_f and g_B must be zeroed   \
 * by the caller; g_M and g_d are written. */                                                             \
void gram_backward_##SUFFIX(long N, long n, long H, long Pg, const T *g, const T *M, const T *f,         \
                            const T *B, const T *d, const T *J, const T *P, const T *g_J_in, T *g_M,      \
                            T *g_d, T *g_g, T *g_f, T *g_B) {                                             \
    for (long r = 0; r < N; r++) {                                                                        \
        const long p = r % Pg;                                                                            \
        const T *gr = g + p * n, *fr = f + p * n, *dr = d + r * H;                                        \
        T *gdr = g_d + r * H;                                                                             \
        for (long h = 0; h < H; h++) gdr[h] = 0;                                                          \
        for (long i = 0; i < n; i++) {                                                                    \
            const long at = (r * n + i) * H;                                                              \
            const T *Mi = M + at, *Bi = B + i * H, *Ji = J + at, *Pi = P + at;                            \
            const T *Gi = g_J_in ? g_J_in + at : 0;                                                       \
            T *gMi = g_M + at, *gBi = g_B + i * H;                                                        \
            const T gi = gr[i], fi = fr[i];                                                               \
            T sg = 0, sf = 0;                                                                             \
            _Pragma("omp simd reduction(+:sg, sf)")                                                       \
            for (long h = 0; h < H; h++) {                                                                \
                const T pv = Pi[h];                                                                       \
                const T gJ = pv * dr[h] + (Gi ? Gi[h] : 0);                                               \
                gdr[h] += (T)0.5 * Ji[h] * pv;                                                            \
                gMi[h] = gi * gJ;                                                                         \
                sg += gJ * Mi[h];                                                                         \
                sf += gJ * Bi[h];                                                                         \
                gBi[h] += fi * gJ;                                                                        \
            }                                                                                             \
            g_g[p * n + i] += sg;                                                                         \
            g_f[p * n + i] += sf;                                                                         \
        }                                                                                                 \
    }                                                                                                     \
}

GRAM(float, f32)
GRAM(double, f64)
