/* Run CALL with MC = the latent dimension, a compile-time constant for M <= 8 and M = 10, 12, 16
 * (the per-model loops below are always inlined, so each case is compiled with fully unrolled
 * M-loops: forward 2x / 1.7x, backward 1.3x / 1.2x faster for M = 3 / 10), a run-time value else. */
#define CASE_M(V, CALL) case V: { enum { MC = V }; CALL; } break;
#define SPECIALIZE_M(MV, CALL) switch (MV) { CASE_M(1, CALL) CASE_M(2, CALL) CASE_M(3, CALL)       \
    CASE_M(4, CALL) CASE_M(5, CALL) CASE_M(6, CALL) CASE_M(7, CALL) CASE_M(8, CALL)                 \
    CASE_M(10, CALL) CASE_M(12, CALL) CASE_M(16, CALL)                                              \
    default: { const int MC = MV; CALL; } }
#define RUNTIME_M(MV, CALL) { const int MC = MV; CALL; }
#define INLINE static inline __attribute__((always_inline))
#define ROLL_FORWARD 1   /* passes a kernel job runs per model (roll_job.what) */
#define ROLL_LOSS 2
#define ROLL_BACKWARD 4

#define DEFINE_KERNELS(REAL, SUF, DISPATCH)                                                         \
/* one model, all blocks of windows */                                                              \
INLINE void forward_one_##SUF(int T, int B, int M, int L, REAL cl, const REAL *z1, const REAL *Ak,  \
                              const REAL *w1, const REAL *w2, const REAL *h1k, const REAL *h2k,     \
                              const REAL *alk, const REAL *q, const REAL *ck, int Tc, REAL *Ztk,    \
                              REAL *Zk) {                                                           \
    REAL z[MAXM][BC], zt[MAXM][BC];                                                                 \
    for (int b0 = 0; b0 < B; b0 += BC) {                                                            \
        const int nb = B - b0 < BC ? B - b0 : BC;                                                   \
        for (int m = 0; m < M; ++m) LANES z[m][i] = i < nb ? z1[(size_t)(b0 + i) * M + m] : 0;      \
        for (int t = 0; t < T; ++t) {                                                               \
            const REAL a = alk[t];                                                                  \
            const REAL *ct = ck + ((size_t)b0 * Tc + t) * M;  /* window b0 + i at ct[i Tc M] */     \
            if (a == 0) {                                                                           \
                for (int m = 0; m < M; ++m) LANES zt[m][i] = z[m][i];                               \
            } else {                                                                                \
                for (int m = 0; m < M; ++m) {                                                       \
                    REAL zq[BC] = {0};                                                              \
                    for (int j = 0; j < M; ++j) {                                                   \
                        const REAL qj = q[j * M + m];                                               \
                        LANES zq[i] += qj * z[j][i];                                                \
                    }                                                                               \
                    LANES zt[m][i] = z[m][i] + a * (zq[i] - z[m][i]) + a * (i < nb ? ct[(size_t)i * Tc * M + m] : 0); \
                }                                                                                   \
            }                                                                                       \
            REAL acc[MAXM][BC];  /* z' = A * zt + h1 + sum_l W1[:, l] phi_l: M chains, one pass over l */ \
            for (int m = 0; m < M; ++m) LANES acc[m][i] = Ak[m] * zt[m][i] + h1k[m];                \
            for (int l = 0; l < L; ++l) {                                                           \
                REAL u[BC] = {0}, ph[BC];                                                           \
                for (int m = 0; m < M; ++m) {                                                       \
                    const REAL w = w2[(size_t)m * L + l];                                           \
                    LANES u[i] += w * zt[m][i];                                                     \
                }                                                                                   \
                const REAL h = h2k[l];                                                              \
                LANES {                                                                             \
                    const REAL p = u[i] + h;                                                        \
                    ph[i] = (p > 0 ? p : 0) - cl * (u[i] > 0 ? u[i] : 0);                           \
                }                                                                                   \
                for (int m = 0; m < M; ++m) {                                                       \
                    const REAL w = w1[(size_t)m * L + l];                                           \
                    LANES acc[m][i] += w * ph[i];                                                   \
                }                                                                                   \
            }                                                                                       \
            for (int m = 0; m < M; ++m) LANES z[m][i] = acc[m][i];                                  \
            REAL *ztt = Ztk + ((size_t)b0 * T + t) * M;                                             \
            REAL *zn = Zk + ((size_t)b0 * T + t) * M;                                               \
            for (int i = 0; i < nb; ++i)                                                            \
                for (int m = 0; m < M; ++m) {                                                       \
                    ztt[(size_t)i * T * M + m] = zt[m][i];                                          \
                    zn[(size_t)i * T * M + m] = z[m][i];                                            \
                }                                                                                   \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* one model; scratch: gh2 (L*BC), PHc, Sc (TC*L*BC each), LAc, ZTc (TC*M*BC each), gW1, gW2 (M*L*BC) */ \
/* Weight gradients dW1 += lam^T phi, dW2t += zt^T gu are summed over chunks of TC steps from the   */ \
/* stored per-step factors (accumulators stay in registers) instead of read-modify-write per step.  */ \
INLINE void flush_##SUF(int nt, int M, int L, const REAL *PHc, const REAL *Sc, const REAL *LAc,     \
                        const REAL *ZTc, REAL *gW1, REAL *gW2) {                                    \
    const size_t LB = (size_t)L * BC, MB = (size_t)M * BC;                                          \
    for (int m = 0; m < M; ++m) {                                                                   \
        int l = 0;                                                                                  \
        for (; l + 4 <= L; l += 4) {                                                                \
            REAL a1[4][BC] = {{0}}, a2[4][BC] = {{0}};                                              \
            for (int t = 0; t < nt; ++t) {                                                          \
                const REAL *la = LAc + t * MB + (size_t)m * BC, *zt = ZTc + t * MB + (size_t)m * BC; \
                const REAL *ph = PHc + t * LB + (size_t)l * BC, *gs = Sc + t * LB + (size_t)l * BC; \
                for (int j = 0; j < 4; ++j) LANES {                                                 \
                    a1[j][i] += la[i] * ph[j * BC + i];                                             \
                    a2[j][i] += zt[i] * gs[j * BC + i];                                             \
                }                                                                                   \
            }                                                                                       \
            for (int j = 0; j < 4; ++j) {                                                           \
                REAL *g1 = gW1 + ((size_t)m * L + l + j) * BC, *g2 = gW2 + ((size_t)m * L + l + j) * BC; \
                LANES { g1[i] += a1[j][i]; g2[i] += a2[j][i]; }                                     \
            }                                                                                       \
        }                                                                                           \
        for (; l < L; ++l) {                                                                        \
            REAL a1[BC] = {0}, a2[BC] = {0};                                                        \
            for (int t = 0; t < nt; ++t) {                                                          \
                const REAL *la = LAc + t * MB + (size_t)m * BC, *zt = ZTc + t * MB + (size_t)m * BC; \
                const REAL *ph = PHc + t * LB + (size_t)l * BC, *gs = Sc + t * LB + (size_t)l * BC; \
                LANES { a1[i] += la[i] * ph[i]; a2[i] += zt[i] * gs[i]; }                           \
            }                                                                                       \
            REAL *g1 = gW1 + ((size_t)m * L + l) * BC, *g2 = gW2 + ((size_t)m * L + l) * BC;        \
            LANES { g1[i] += a1[i]; g2[i] += a2[i]; }                                               \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
INLINE void backward_one_##SUF(int T, int B, int M, int L, REAL cl, const REAL *Gk,                 \
                               const REAL *Ztk, const REAL *Ak, const REAL *w1, const REAL *w2,     \
                               const REAL *h2k, const REAL *alk, const REAL *q, REAL *dz1k,         \
                               REAL *dAk, REAL *dw1, REAL *dw2, REAL *dh1k, REAL *dh2k,             \
                               REAL *PHc, REAL *Sc, REAL *LAc, REAL *ZTc, REAL *gW1, REAL *gW2, REAL *gh2) { \
    REAL lam[MAXM][BC], zt[MAXM][BC], lt[MAXM][BC], gA[MAXM][BC], gh1[MAXM][BC];                    \
    const size_t ML = (size_t)M * L, LB = (size_t)L * BC, MB = (size_t)M * BC;                      \
    for (int b0 = 0; b0 < B; b0 += BC) {                                                            \
        const int nb = B - b0 < BC ? B - b0 : BC;                                                   \
        memset(gW1, 0, sizeof(REAL) * ML * BC);                                                     \
        memset(gW2, 0, sizeof(REAL) * ML * BC);                                                     \
        memset(gh2, 0, sizeof(REAL) * LB);                                                          \
        for (int m = 0; m < M; ++m) LANES { gA[m][i] = 0; gh1[m][i] = 0; }                          \
        const REAL *gl = Gk + ((size_t)b0 * T + T - 1) * M;                                         \
        for (int m = 0; m < M; ++m) LANES lam[m][i] = i < nb ? gl[(size_t)i * T * M + m] : 0;       \
        int nt = 0;  /* steps stored in the current chunk */                                        \
        for (int t = T - 1; t >= 0; --t) {                                                          \
            const REAL a = alk[t];                                                                  \
            const REAL *ztt = Ztk + ((size_t)b0 * T + t) * M;                                       \
            REAL *ph_t = PHc + nt * LB, *gs_t = Sc + nt * LB, *la_t = LAc + nt * MB, *zt_t = ZTc + nt * MB; \
            for (int m = 0; m < M; ++m) {                                                           \
                LANES zt[m][i] = i < nb ? ztt[(size_t)i * T * M + m] : 0;                           \
                LANES { la_t[(size_t)m * BC + i] = lam[m][i]; zt_t[(size_t)m * BC + i] = zt[m][i]; } \
            }                                                                                       \
            for (int m = 0; m < M; ++m)  /* lt = A * lam + sum_l W2t[:, l] gu_l, accumulated in the l loop */ \
                LANES { gA[m][i] += lam[m][i] * zt[m][i]; gh1[m][i] += lam[m][i]; lt[m][i] = Ak[m] * lam[m][i]; } \
            for (int l = 0; l < L; ++l) {                                                           \
                REAL u[BC] = {0}, s[BC] = {0};                                                      \
                for (int m = 0; m < M; ++m) {                                                       \
                    const REAL wa = w2[(size_t)m * L + l], wb = w1[(size_t)m * L + l];              \
                    LANES { u[i] += wa * zt[m][i]; s[i] += wb * lam[m][i]; }                        \
                }                                                                                   \
                const REAL h = h2k[l];                                                              \
                REAL *ph = ph_t + (size_t)l * BC, *gs = gs_t + (size_t)l * BC, *g2 = gh2 + (size_t)l * BC; \
                REAL gu[BC];                                                                        \
                LANES {  /* 0/1 factors, not selects of values: gcc made those masked stores */      \
                    const REAL p = u[i] + h, on = p > 0 ? 1 : 0, onu = u[i] > 0 ? cl : 0;            \
                    const REAL sp = s[i] * on;                                                      \
                    ph[i] = p * on - u[i] * onu;                                                    \
                    g2[i] += sp;                                                                    \
                    gu[i] = sp - s[i] * onu;                                                        \
                    gs[i] = gu[i];                                                                  \
                }                                                                                   \
                for (int m = 0; m < M; ++m) {                                                       \
                    const REAL w = w2[(size_t)m * L + l];                                           \
                    LANES lt[m][i] += w * gu[i];                                                    \
                }                                                                                   \
            }                                                                                       \
            if (++nt == TC || t == 0) {                                                             \
                flush_##SUF(nt, M, L, PHc, Sc, LAc, ZTc, gW1, gW2);                                 \
                nt = 0;                                                                             \
            }                                                                                       \
            const REAL *g = t > 0 ? Gk + ((size_t)b0 * T + t - 1) * M : NULL;                       \
            for (int m = 0; m < M; ++m) {                                                           \
                REAL nl[BC];                                                                        \
                if (a == 0) {                                                                       \
                    LANES nl[i] = lt[m][i];                                                         \
                } else {                                                                            \
                    REAL lq[BC] = {0};                                                              \
                    for (int j = 0; j < M; ++j) {                                                   \
                        const REAL qj = q[m * M + j];                                               \
                        LANES lq[i] += qj * lt[j][i];                                               \
                    }                                                                               \
                    LANES nl[i] = lt[m][i] + a * (lq[i] - lt[m][i]);                                \
                }                                                                                   \
                if (g != NULL) { LANES lam[m][i] = nl[i] + (i < nb ? g[(size_t)i * T * M + m] : 0); } \
                else { for (int i = 0; i < nb; ++i) dz1k[(size_t)(b0 + i) * M + m] = nl[i]; }       \
            }                                                                                       \
        }                                                                                           \
        for (int m = 0; m < M; ++m) {                                                               \
            REAL sa = 0, s1 = 0;                                                                    \
            SUM_LANES { sa += gA[m][i]; s1 += gh1[m][i]; }                                          \
            dAk[m] += sa;                                                                           \
            dh1k[m] += s1;                                                                          \
        }                                                                                           \
        for (size_t r = 0; r < ML; ++r) {                                                           \
            REAL s1 = 0, s2 = 0;                                                                    \
            SUM_LANES { s1 += gW1[r * BC + i]; s2 += gW2[r * BC + i]; }                             \
            dw1[r] += s1;                                                                           \
            dw2[r] += s2;                                                                           \
        }                                                                                           \
        for (int l = 0; l < L; ++l) {                                                               \
            REAL s2 = 0;                                                                            \
            SUM_LANES s2 += gh2[(size_t)l * BC + i];                                                \
            dh2k[l] += s2;                                                                          \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* The identity observation's loss of one model: returns sse = sum (Z - X_{t+1})^2 over its B x T x N  */ \
/* predictions (double) and writes G = scale (Z - X_{t+1}), zero for m >= N; Zk, Gk (B,T,M), Xk (B,T+1,N). */ \
INLINE double identity_loss_one_##SUF(int B, int T, int M, int N, REAL scale, const REAL *Zk,         \
                                      const REAL *Xk, REAL *Gk) {                                   \
    double acc = 0;                                                                                  \
    for (int b = 0; b < B; ++b) {                                                                    \
        const REAL *z = Zk + (size_t)b * T * M, *x = Xk + ((size_t)b * (T + 1) + 1) * N;             \
        REAL *g = Gk + (size_t)b * T * M;                                                            \
        if (M == N) {  /* the window's T x N block is contiguous in both: SL fixed lanes (see SL) */ \
            const size_t n = (size_t)T * N, full = n - n % SL;                                       \
            double lane[SL] = {0};                                                                   \
            for (size_t j = 0; j < full; j += SL)                                                    \
                for (int l = 0; l < SL; ++l) {                                                       \
                    const REAL r = z[j + l] - x[j + l];                                              \
                    lane[l] += (double)r * (double)r;                                                \
                    g[j + l] = r * scale;                                                            \
                }                                                                                    \
            for (size_t j = full; j < n; ++j) {                                                      \
                const REAL r = z[j] - x[j];                                                          \
                lane[j - full] += (double)r * (double)r;                                             \
                g[j] = r * scale;                                                                    \
            }                                                                                        \
            for (int l = 0; l < SL; ++l) acc += lane[l];                                             \
            continue;                                                                                \
        }                                                                                            \
        for (int t = 0; t < T; ++t) {                                                                \
            for (int n = 0; n < N; ++n) {                                                            \
                const REAL r = z[(size_t)t * M + n] - x[(size_t)t * N + n];                          \
                acc += (double)r * (double)r;                                                        \
                g[(size_t)t * M + n] = r * scale;                                                    \
            }                                                                                        \
            for (int m = N; m < M; ++m) g[(size_t)t * M + m] = 0;                                    \
        }                                                                                            \
    }                                                                                                \
    return acc;                                                                                      \
}                                                                                                    \
                                                                                                     \
/* One job type for every entry point: `what` selects the passes run for each model the thread     */ \
/* takes, in order: forward (states), loss (identity observation: sse and dL/dZ into a per-thread   */ \
/* buffer; zero dL/dZ where sse is not finite), backward (from that buffer, or from G).            */ \
typedef struct {                                                                                     \
    job_head h;  /* first member: run_jobs reads the status through it */                            \
    int what, K, T, B, M, N, L, Tc;                                                                  \
    REAL cl, scale;                                                                                  \
    const REAL *z1, *A, *W1, *W2t, *h1, *h2, *alpha, *Q, *c, *X, *G;                                 \
    REAL *Zt, *Z, *dz1, *dA, *dW1, *dW2t, *dh1, *dh2;                                                \
    double *sse;                                                                                     \
} roll_job_##SUF;                                                                                    \
                                                                                                     \
/* One model's forward and backward passes, each its own function with its own M dispatch (one   */ \
/* function holding both dispatches compiled the backward pass ~30 % slower).                     */ \
static __attribute__((noinline)) void forward_model_##SUF(const roll_job_##SUF *j, int k) {         \
    const int T = j->T, B = j->B, M = j->M, L = j->L;                                               \
    const size_t ML = (size_t)M * L, kz = IDX(k, 0, T) * B * M;                                     \
    DISPATCH(M, forward_one_##SUF(T, B, MC, L, j->cl, j->z1 + (size_t)k * B * M, j->A + (size_t)k * M, \
                      j->W1 + k * ML, j->W2t + k * ML, j->h1 + (size_t)k * M, j->h2 + (size_t)k * L, \
                      j->alpha + IDX(k, 0, T), j->Q + (size_t)k * M * M, j->c + (size_t)k * B * j->Tc * M, \
                      j->Tc, j->Zt + kz, j->Z + kz))                                                \
}                                                                                                   \
                                                                                                    \
/* scratch: gh2 (L*BC), PHc, Sc (TC*L*BC each), LAc, ZTc (TC*M*BC each), gW1, gW2 (M*L*BC) */       \
static __attribute__((noinline)) void backward_model_##SUF(const roll_job_##SUF *j, int k, const REAL *Gk, \
                                                           REAL *scratch) {                         \
    const int T = j->T, B = j->B, M = j->M, L = j->L;                                               \
    const size_t ML = (size_t)M * L, LB = (size_t)L * BC, MB = (size_t)M * BC, kz = IDX(k, 0, T) * B * M; \
    REAL *gh2 = scratch, *PHc = gh2 + LB, *Sc = PHc + TC * LB, *LAc = Sc + TC * LB, *ZTc = LAc + TC * MB; \
    REAL *gW1 = ZTc + TC * MB, *gW2 = gW1 + ML * BC;                                                \
    DISPATCH(M, backward_one_##SUF(T, B, MC, L, j->cl, Gk, j->Zt + kz, j->A + (size_t)k * M, j->W1 + k * ML, \
                       j->W2t + k * ML, j->h2 + (size_t)k * L, j->alpha + IDX(k, 0, T),             \
                       j->Q + (size_t)k * M * M, j->dz1 + (size_t)k * B * M, j->dA + (size_t)k * M, \
                       j->dW1 + k * ML, j->dW2t + k * ML, j->dh1 + (size_t)k * M, j->dh2 + (size_t)k * L, \
                       PHc, Sc, LAc, ZTc, gW1, gW2, gh2))                                           \
}                                                                                                   \
                                                                                                    \
static void *roll_worker_##SUF(void *arg) {                                                         \
    roll_job_##SUF *j = arg;                                                                        \
    const int what = j->what;                                                                       \
    const size_t ML = (size_t)j->M * j->L, LB = (size_t)j->L * BC, MB = (size_t)j->M * BC;          \
    const size_t BTM = (size_t)j->B * j->T * j->M, n_scratch = LB + 2 * TC * LB + 2 * TC * MB + 2 * ML * BC; \
    REAL *buf = NULL, *Gb = NULL;  /* backward scratch, then (loss) this thread's dL/dZ of one model */ \
    if (what & ROLL_BACKWARD) {                                                                     \
        buf = aligned_scratch(sizeof(REAL) * (n_scratch + (what & ROLL_LOSS ? BTM : 0)));           \
        if (buf == NULL) { j->h.status = 2; return NULL; }                                          \
        Gb = buf + n_scratch;                                                                       \
    }                                                                                               \
    SAVE_FTZ                                                                                        \
    for (int k; (k = next_model(&j->h)) < j->K;) {                                                  \
        if (what & ROLL_FORWARD) forward_model_##SUF(j, k);                                         \
        const REAL *Gk = j->G == NULL ? NULL : j->G + IDX(k, 0, j->T) * j->B * j->M;                \
        if (what & ROLL_LOSS) {                                                                     \
            const size_t kz = IDX(k, 0, j->T) * j->B * j->M;                                        \
            const double sse = identity_loss_one_##SUF(j->B, j->T, j->M, j->N, j->scale, j->Z + kz, \
                                                       j->X + (size_t)k * j->B * (j->T + 1) * j->N, Gb); \
            if (!isfinite(sse)) memset(Gb, 0, sizeof(REAL) * BTM);                                  \
            j->sse[k] = sse;                                                                        \
            Gk = Gb;                                                                                \
        }                                                                                           \
        if (what & ROLL_BACKWARD) backward_model_##SUF(j, k, Gk, buf);                              \
    }                                                                                               \
    RESTORE_FTZ                                                                                     \
    free(buf);                                                                                      \
    return NULL;                                                                                    \
}                                                                                                   \
static int roll_##SUF(roll_job_##SUF job, int nthreads) {                                            \
    if (job.M > MAXM) return 1;                                                                      \
    const int n = n_workers(nthreads, job.K);                                                        \
    roll_job_##SUF jobs[MAXT];                                                                       \
    for (int i = 0; i < n; ++i) jobs[i] = job;                                                       \
    return run_jobs(roll_worker_##SUF, jobs, sizeof(roll_job_##SUF), n);                             \
}                                                                                                    \
                                                                                                     \
int forward_##SUF(int K, int T, int B, int M, int L, int Tc, int clipped, int nthreads, const REAL *z1, \
                  const REAL *A, const REAL *W1, const REAL *W2t, const REAL *h1, const REAL *h2,    \
                  const REAL *alpha, const REAL *Q, const REAL *c, REAL *Zt, REAL *Z) {              \
    return roll_##SUF((roll_job_##SUF){.what = ROLL_FORWARD, .K = K, .T = T, .B = B, .M = M, .L = L, \
                                       .Tc = Tc, .cl = clipped ? 1 : 0, .z1 = z1, .A = A, .W1 = W1, \
                                       .W2t = W2t, .h1 = h1, .h2 = h2, .alpha = alpha, .Q = Q,       \
                                       .c = c, .Zt = Zt, .Z = Z}, nthreads);                         \
}                                                                                                    \
                                                                                                     \
int backward_##SUF(int K, int T, int B, int M, int L, int clipped, int nthreads, const REAL *G,     \
                   const REAL *Zt, const REAL *A, const REAL *W1, const REAL *W2t, const REAL *h2,   \
                   const REAL *alpha, const REAL *Q, REAL *dz1, REAL *dA, REAL *dW1, REAL *dW2t,     \
                   REAL *dh1, REAL *dh2) {                                                           \
    return roll_##SUF((roll_job_##SUF){.what = ROLL_BACKWARD, .K = K, .T = T, .B = B, .M = M,        \
                                       .L = L, .cl = clipped ? 1 : 0, .G = G, .Zt = (REAL *)Zt,      \
                                       .A = A, .W1 = W1, .W2t = W2t, .h2 = h2, .alpha = alpha,       \
                                       .Q = Q, .dz1 = dz1, .dA = dA, .dW1 = dW1, .dW2t = dW2t,       \
                                       .dh1 = dh1, .dh2 = dh2}, nthreads);                           \
}                                                                                                    \
                                                                                                     \
/* forward, identity-observation loss and backward of each model in one pass over it (its states  */ \
/* and dL/dZ still in this core's cache for the backward pass), one call for the whole update.     */ \
int identity_step_##SUF(int K, int T, int B, int M, int N, int L, int Tc, int clipped, int nthreads, \
                        REAL scale, const REAL *z1, const REAL *A, const REAL *W1, const REAL *W2t, \
                        const REAL *h1, const REAL *h2, const REAL *alpha, const REAL *Q,            \
                        const REAL *c, const REAL *X, REAL *Zt, REAL *Z, double *sse, REAL *dz1,     \
                        REAL *dA, REAL *dW1, REAL *dW2t, REAL *dh1, REAL *dh2) {                     \
    return roll_##SUF((roll_job_##SUF){.what = ROLL_FORWARD | ROLL_LOSS | ROLL_BACKWARD, .K = K,     \
                                       .T = T, .B = B, .M = M, .N = N, .L = L, .Tc = Tc,             \
                                       .cl = clipped ? 1 : 0, .scale = scale, .z1 = z1, .A = A,      \
                                       .W1 = W1, .W2t = W2t, .h1 = h1, .h2 = h2, .alpha = alpha,     \
                                       .Q = Q, .c = c, .X = X, .Zt = Zt, .Z = Z, .sse = sse,         \
                                       .dz1 = dz1, .dA = dA, .dW1 = dW1, .dW2t = dW2t, .dh1 = dh1,   \
                                       .dh2 = dh2}, nthreads);                                       \
}

/* float32, the models' default dtype, gets the M-specialized loops; float64 (tests, checks) the
 * run-time-M ones: each specialization costs compile time (~15 s for all of them, once per machine) */
DEFINE_KERNELS(float, f32, SPECIALIZE_M)
DEFINE_KERNELS(double, f64, RUNTIME_M)
