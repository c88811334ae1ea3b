/* Per-model sums over n stacked tensors x[i] of numel[i] = K * chunk elements (model k's slice is
 * the k-th chunk): sumsq[k] = sum of x^2 and finite[k] = 1 when every element of model k is finite
 * (x * 0 is 0 for a finite x, NaN otherwise), accumulated in double, in one pass. Element j of a
 * slice always goes to lane j % SL, counted from the slice's start, and the lanes are added in a
 * fixed order: the sum does not depend on the slice's place in memory (an "omp simd reduction"
 * lets the compiler peel iterations up to an aligned address, so model k's rounding would depend
 * on k and on K), and model k's norm equals its one-model run's. */
#define DEFINE_STACKED_SUMSQ(REAL, SUF)                                                             \
void stacked_sumsq_##SUF(int K, int n, const REAL *const *x, const long long *numel, double *sumsq, \
                         unsigned char *finite) {                                                   \
    for (int k = 0; k < K; ++k) {                                                                   \
        double sq[SL] = {0}, zero[SL] = {0};                                                        \
        for (int i = 0; i < n; ++i) {                                                               \
            const long long chunk = numel[i] / K, full = chunk - chunk % SL;                        \
            const REAL *xk = x[i] + (size_t)k * chunk;                                              \
            for (long long j = 0; j < full; j += SL)                                                \
                for (int l = 0; l < SL; ++l) {                                                      \
                    const double v = xk[j + l];                                                     \
                    sq[l] += v * v;                                                                 \
                    zero[l] += v * 0;                                                               \
                }                                                                                   \
            for (long long j = full; j < chunk; ++j) {                                              \
                const double v = xk[j];                                                             \
                sq[j - full] += v * v;                                                              \
                zero[j - full] += v * 0;                                                            \
            }                                                                                       \
        }                                                                                           \
        double s = 0, z = 0;                                                                        \
        for (int l = 0; l < SL; ++l) { s += sq[l]; z += zero[l]; }                                  \
        sumsq[k] = s;                                                                               \
        finite[k] = z == 0;                                                                         \
    }                                                                                               \
}
DEFINE_STACKED_SUMSQ(float, f32)
DEFINE_STACKED_SUMSQ(double, f64)
