/* One RAdam step (torch.optim.RAdam with weight_decay = 0, as dsrecon.fast.radam.FusedRAdam uses
 * it) over n tensors: p, g, m (exp_avg), v (exp_avg_sq) of numel[i] elements each; steps[i] is
 * tensor i's step count (float32 or float64 scalar, steps_f64), incremented here. Per element, in
 * the order of torch's multi-tensor implementation: m += (1 - beta1) (g - m); v = v beta2 +
 * (1 - beta2) g g; p += m / ((sqrt(v) + eps) / c2) + u, with c2 = -lr rect sqrt(bc2) / bc1 and u =
 * -lr / bc1 when the variance is not yet rectifiable (rho_t <= 5, rect = 0: then p += m u). */
#define DEFINE_RADAM(REAL, SUF, SQRT)                                                               \
void radam_##SUF(int n, REAL *const *p, const REAL *const *g, REAL *const *m, REAL *const *v,       \
                 const long long *numel, void *const *steps, int steps_f64, double lr, double beta1, \
                 double beta2, double eps) {                                                        \
    const double rho_inf = 2 / (1 - beta2) - 1;                                                     \
    for (int k = 0; k < n; ++k) {                                                                   \
        double step;                                                                                \
        if (steps_f64) step = ++*(double *)steps[k];                                                \
        else step = ++*(float *)steps[k];                                                           \
        const double bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step);                        \
        const double rho_t = rho_inf - 2 * step * pow(beta2, step) / bc2;                           \
        const double rect = rho_t > 5 ? sqrt((rho_t - 4) * (rho_t - 2) * rho_inf                    \
                                             / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) : 0;        \
        const REAL w1 = (REAL)(1 - beta1), b2 = (REAL)beta2, w2 = (REAL)(1 - beta2), e = (REAL)eps; \
        const REAL c2 = (REAL)(sqrt(bc2) * (lr * rect / bc1) * -1), u = (REAL)(-(lr * (rect > 0 ? 0 : 1) / bc1)); \
        REAL *pk = p[k], *mk = m[k], *vk = v[k];                                                    \
        const REAL *gk = g[k];                                                                      \
        const long long N = numel[k];                                                               \
        if (rect > 0) {                                                                             \
            _Pragma("omp simd") for (long long j = 0; j < N; ++j) {                                 \
                mk[j] += w1 * (gk[j] - mk[j]);                                                      \
                vk[j] = vk[j] * b2 + w2 * gk[j] * gk[j];                                            \
                pk[j] += mk[j] * ((REAL)1 / ((SQRT(vk[j]) + e) / c2) + u);                          \
            }                                                                                       \
        } else {                                                                                    \
            _Pragma("omp simd") for (long long j = 0; j < N; ++j) {                                 \
                mk[j] += w1 * (gk[j] - mk[j]);                                                      \
                vk[j] = vk[j] * b2 + w2 * gk[j] * gk[j];                                            \
                pk[j] += mk[j] * u;                                                                 \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}
DEFINE_RADAM(float, f32, sqrtf)
DEFINE_RADAM(double, f64, sqrt)

