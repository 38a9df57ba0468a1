/* Batches of small symmetric positive definite matrices: the Cholesky factorization with its
 * log-determinant (forward) and the inverse from the factor (backward), for PCP-Map's log det Hess G
 * (flowlib/flows/spd.py calls these through ctypes; tests/test_spd.py checks them against
 * torch.linalg.cholesky_ex and torch.cholesky_inverse).
 *
 * LAPACK factors one matrix at a time, and for a 40 x 40 matrix a call is mostly overhead and short
 * loops: about 3 to 12 us a matrix, depending on the CPU and the library. Here LANES matrices are
 * factored at once, each arithmetic step done for all of them by one vector instruction: the matrices
 * are copied into a buffer W that interleaves them (entry (i, j) of lane v at W[(i n + j) LANES + v]),
 * and every loop over the lanes has a constant trip count the compiler vectorizes. A last group with
 * fewer than LANES matrices is padded with identity matrices.
 *
 * Sizes: N matrices of n x n, row-major and contiguous; the two other sizes every kernel function
 * takes (flowlib/flows/kernels/__init__.py) are unused here. */
#include <math.h>

#include "clones.h"

#define LANES 8

/* LANES numbers, one per matrix of a group, as one value of GCC's and Clang's vector extension: the
 * compiler maps its arithmetic onto the CPU's vector registers (two SSE ones, or one AVX one for
 * float). Aligned like a single number, so loads and stores need no particular alignment. */
typedef float vf32 __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float))));
typedef double vf64 __attribute__((vector_size(LANES * sizeof(double)), aligned(sizeof(double))));

#define SPD(T, SUFFIX, SQRT, LOG)                                                                         \
/* sum_{k < count} a[k sa] b[k sb] for the LANES lanes, in four partial sums: each product-sum            \
 * waits for the one before it in its own chain only, so four run at once. */                             \
static inline __attribute__((always_inline)) v##SUFFIX dot_##SUFFIX(const T *a, long sa, const T *b,      \
                                                                   long sb, long count) {                 \
    typedef v##SUFFIX V;                                                                                  \
    V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};                                                             \
    long k = 0;                                                                                           \
    for (; k + 4 <= count; k += 4) {                                                                      \
        s0 += *(V *)(a + k * sa) * *(V *)(b + k * sb);                                                    \
        s1 += *(V *)(a + (k + 1) * sa) * *(V *)(b + (k + 1) * sb);                                        \
        s2 += *(V *)(a + (k + 2) * sa) * *(V *)(b + (k + 2) * sb);                                        \
        s3 += *(V *)(a + (k + 3) * sa) * *(V *)(b + (k + 3) * sb);                                        \
    }                                                                                                     \
    for (; k < count; k++) s0 += *(V *)(a + k * sa) * *(V *)(b + k * sb);                                 \
    return (s0 + s1) + (s2 + s3);                                                                         \
}                                                                                                         \
/* Cholesky-Banachiewicz, row by row, on the lower triangle of W (n x n x LANES), in place:               \
 *   L_ij = (A_ij - sum_{k<j} L_ik L_jk) / L_jj,   L_ii = sqrt(A_ii - sum_{k<i} L_ik^2).                  \
 * info[v] becomes i + 1 for the first i whose pivot A_ii - sum L_ik^2 is not positive (LAPACK's          \
 * convention), where it was 0; that lane's later entries are then not meaningful. inv_diag: n            \
 * groups of LANES numbers, 1 / L_jj. */                                                                  \
VECTOR_CLONES static void factor_##SUFFIX(long n, T *W, T *inv_diag, int *info) {                         \
    typedef v##SUFFIX V;                                                                                  \
    for (long i = 0; i < n; i++) {                                                                        \
        T *Wi = W + i * n * LANES;                                                                        \
        for (long j = 0; j <= i; j++) {                                                                   \
            const T *Wj = W + j * n * LANES;                                                              \
            V s = *(V *)(Wi + j * LANES) - dot_##SUFFIX(Wi, LANES, Wj, LANES, j);                                                                 \
            if (j < i) {                                                                                  \
                *(V *)(Wi + j * LANES) = s * *(V *)(inv_diag + j * LANES);                                \
                continue;                                                                                 \
            }                                                                                             \
            V d, inv;                                                                                     \
            for (int v = 0; v < LANES; v++) {                                                             \
                if (!(s[v] > 0) && info[v] == 0) info[v] = (int)i + 1;                                    \
                d[v] = SQRT(s[v]);                                                                        \
            }                                                                                             \
            inv = 1 / d;                                                                                  \
            *(V *)(Wi + i * LANES) = d;                                                                   \
            *(V *)(inv_diag + i * LANES) = inv;                                                           \
        }                                                                                                 \
    }                                                                                                     \
}                                                                                                         \
                                                                                                          \
/* From L in W (lower triangle), A^{-1} = L^{-T} L^{-1} into the lower triangle of out (the same          \
 * layout): M = L^{-1} in place, row by row (M_ii = 1 / L_ii, M_ij = -M_ii sum_{j<=k<i} L_ik M_kj,        \
 * j ascending, so that the L_ik still needed are not yet overwritten), then                              \
 * (A^{-1})_ij = sum_{k>=i} M_ki M_kj for j <= i. */                                                      \
VECTOR_CLONES static void inverse_##SUFFIX(long n, T *W, T *out) {                                        \
    typedef v##SUFFIX V;                                                                                  \
    for (long i = 0; i < n; i++) {                                                                        \
        T *Wi = W + i * n * LANES;                                                                        \
        const V d = 1 / *(V *)(Wi + i * LANES);                                                           \
        for (long j = 0; j < i; j++) {                                                                    \
            V s = dot_##SUFFIX(Wi + j * LANES, LANES, W + (j * n + j) * LANES, n * LANES, i - j);                               \
            *(V *)(Wi + j * LANES) = -s * d;                                                              \
        }                                                                                                 \
        *(V *)(Wi + i * LANES) = d;                                                                       \
    }                                                                                                     \
    for (long i = 0; i < n; i++)                                                                          \
        for (long j = 0; j <= i; j++) {                                                                   \
            V s = dot_##SUFFIX(W + (i * n + i) * LANES, n * LANES, W + (i * n + j) * LANES, n * LANES, n - i);                      \
            *(V *)(out + (i * n + j) * LANES) = s;                                                        \
        }                                                                                                 \
}                                                                                                         \
                                                                                                          \
/* Copies the lower triangles of matrices first .. first + LANES - 1 of X (N, n, n) into W, lanes past    \
 * N as identity matrices; returns how many are real. */                                                  \
static long gather_##SUFFIX(long N, long n, long first, const T *X, T *W) {                               \
    const long real = N - first < LANES ? N - first : LANES;                                              \
    for (long v = 0; v < real; v++) {                                                                     \
        const T *Xv = X + (first + v) * n * n;                                                            \
        for (long i = 0; i < n; i++)                                                                      \
            for (long j = 0; j <= i; j++) W[(i * n + j) * LANES + v] = Xv[i * n + j];                     \
    }                                                                                                     \
    for (long v = real; v < LANES; v++)                                                                   \
        for (long i = 0; i < n; i++)                                                                      \
            for (long j = 0; j <= i; j++) W[(i * n + j) * LANES + v] = (T)(i == j);                       \
    return real;                                                                                          \
}                                                                                                         \
                                                                                                          \
/* A (N, n, n), lower triangle read -> L (N, n, n) with zeros above the diagonal, log det A =             \
 * 2 sum_i log L_ii into logdet (N), and LAPACK's info (N, int32). work: (n + 1) n LANES numbers. */      \
void spd_forward_##SUFFIX(long N, long n, long unused_k, long unused_p, const T *A, T *L, T *logdet,      \
                          int *info, T *work) {                                                           \
    (void)unused_k; (void)unused_p;                                                                       \
    T *W = work, *inv_diag = work + n * n * LANES;                                                        \
    for (long first = 0; first < N; first += LANES) {                                                     \
        int lane_info[LANES] = {0};                                                                       \
        const long real = gather_##SUFFIX(N, n, first, A, W);                                             \
        factor_##SUFFIX(n, W, inv_diag, lane_info);                                                       \
        for (long v = 0; v < real; v++) {                                                                 \
            T *Lv = L + (first + v) * n * n;                                                              \
            T sum = 0;                                                                                    \
            for (long i = 0; i < n; i++) {                                                                \
                for (long j = 0; j <= i; j++) Lv[i * n + j] = W[(i * n + j) * LANES + v];                 \
                for (long j = i + 1; j < n; j++) Lv[i * n + j] = 0;                                       \
                sum += LOG(Lv[i * n + i]);                                                                \
            }                                                                                             \
            logdet[first + v] = 2 * sum;                                                                  \
            info[first + v] = lane_info[v];                                                               \
        }                                                                                                 \
    }                                                                                                     \
}                                                                                                         \
                                                                                                          \
/* L (N, n, n), lower triangle read, and g (N) -> out (N, n, n) = g A^{-1}, A = L L^T, both triangles:    \
 * the gradient of log det A times g (Jacobi's formula). work: 2 n n LANES numbers. */                    \
void spd_backward_##SUFFIX(long N, long n, long unused_k, long unused_p, const T *L, const T *g, T *out,  \
                           T *work) {                                                                     \
    (void)unused_k; (void)unused_p;                                                                       \
    T *W = work, *P = work + n * n * LANES;                                                               \
    for (long first = 0; first < N; first += LANES) {                                                     \
        const long real = gather_##SUFFIX(N, n, first, L, W);                                             \
        inverse_##SUFFIX(n, W, P);                                                                        \
        for (long v = 0; v < real; v++) {                                                                 \
            T *Ov = out + (first + v) * n * n;                                                            \
            const T gv = g[first + v];                                                                    \
            for (long i = 0; i < n; i++) {                                                                \
                for (long j = 0; j <= i; j++) Ov[i * n + j] = gv * P[(i * n + j) * LANES + v];            \
                for (long j = i + 1; j < n; j++) Ov[i * n + j] = gv * P[(j * n + i) * LANES + v];         \
            }                                                                                             \
        }                                                                                                 \
    }                                                                                                     \
}

/* How many matrices a group holds (the work sizes above are in its units). */
long spd_lanes(void) { return LANES; }

SPD(float, f32, sqrtf, logf)
SPD(double, f64, sqrt, log)
