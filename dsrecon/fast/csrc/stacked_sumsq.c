/* Per-model sums over n stacked tensors x[i] of numel[i] = K * chunk elements (model k's slice is
 * the k-th chunk): sumsq[k] = sum of x^2 and finite[k] = 1 when every element of model k is finite
 * (x * 0 is 0 for a finite x, NaN otherwise), accumulated in double, in one pass. */
#define DEFINE_STACKED_SUMSQ(REAL, SUF)                                                             \
void stacked_sumsq_##SUF(int K, int n, const REAL *const *x, const long long *numel, double *sumsq, \
                         unsigned char *finite) {                                                   \
    for (int k = 0; k < K; ++k) {                                                                   \
        double sq = 0, zero = 0;                                                                    \
        for (int i = 0; i < n; ++i) {                                                               \
            const long long chunk = numel[i] / K;                                                   \
            const REAL *xk = x[i] + (size_t)k * chunk;                                              \
            _Pragma("omp simd reduction(+:sq, zero)") for (long long j = 0; j < chunk; ++j) {      \
                const double v = xk[j];                                                             \
                sq += v * v;                                                                        \
                zero += v * 0;                                                                      \
            }                                                                                       \
        }                                                                                           \
        sumsq[k] = sq;                                                                              \
        finite[k] = zero == 0;                                                                      \
    }                                                                                               \
}
DEFINE_STACKED_SUMSQ(float, f32)
DEFINE_STACKED_SUMSQ(double, f64)
