/* The exponential linear unit (Clevert et al. 2016, eq. 15, alpha = 1) on float32, eight numbers at a
 * time: flowlib/flows/elu.py calls these through ctypes; tests/test_elu.py checks them against
 * PyTorch's ELU, the exact derivative in float64, and every float in [-104, 0] against exp in double.
 *
 *   elu(x) = x for x > 0,  exp(x) - 1 for x <= 0;      elu'(x) = 1 for x > 0,  exp(x) for x <= 0.
 *
 * Why: IAF's MADE applies it to every hidden unit, twice a step, and on some CPUs PyTorch's exp and
 * expm1 take 1.5 to 14 ns a number (one thread), while the arithmetic below takes a fraction of one.
 *
 * exp and exp - 1 are vexp.h's exp_and_expm1 (exp within one unit in the last place; exp - 1 accurate
 * relative to small results, as expm1 is). The derivative exp(x) is kept for the backward pass.
 *
 * Sizes: N numbers, contiguous; the other three sizes every kernel function takes
 * (flowlib/flows/kernels/__init__.py) are unused. Only float32: float64 runs PyTorch's path. */
#include "vexp.h"

/* y = elu(x) and e = elu'(x) for LANES numbers (module comment). NaN gives NaN in both. */
INLINE void elu8(vf x, vf *y, vf *e) {
    const vf zero = {0}, one = zero + 1;
    const vi positive = x > 0;
    vf exp_x, expm1_x;
    exp_and_expm1(blend(positive, zero, x), &exp_x, &expm1_x);  /* of min(x, 0), NaN kept */
    *e = blend(positive, one, exp_x);
    *y = blend(positive, x, expm1_x);
}

/* y = elu(x), e = elu'(x); x, y, e: N floats each. */
VECTOR_CLONES void elu_forward_f32(long N, long unused1, long unused2, long unused3, const float *x,
                                   float *y, float *e) {
    (void)unused1, (void)unused2, (void)unused3;
    long i = 0;
    for (; i + LANES <= N; i += LANES) elu8(*(const vf *)(x + i), (vf *)(y + i), (vf *)(e + i));
    if (i < N) {  /* the last N mod LANES numbers, through a padded copy */
        vf xs = {0}, ys, es;
        memcpy(&xs, x + i, (N - i) * sizeof(float));
        elu8(xs, &ys, &es);
        memcpy(y + i, &ys, (N - i) * sizeof(float));
        memcpy(e + i, &es, (N - i) * sizeof(float));
    }
}

/* gx = g e: the gradient of the input from the output's g and the kept derivative e (N floats each). */
VECTOR_CLONES void elu_backward_f32(long N, long unused1, long unused2, long unused3, const float *g,
                                    const float *e, float *gx) {
    (void)unused1, (void)unused2, (void)unused3;
    for (long i = 0; i < N; i++) gx[i] = g[i] * e[i];
}
