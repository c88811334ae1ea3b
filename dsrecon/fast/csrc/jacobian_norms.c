/* Spectral norms of the shPLRNN's Jacobians J(z) = diag(A) + W1 diag(m) W2 at given states, for the
 * growth bound G of adaptive GTF: out[k][s] = ||J_k(z_ks)||_2 (double). m = 1[u + h2 > 0] - clipped 1[u > 0],
 * u = z W2t. J is formed in REAL (as the model's jacobian), S = J^T J and its largest eigenvalue in
 * double (jacobi_max_eig), NL = 16 states per SIMD block. Return: 0 ok, 1 M too large, 2 out of memory. */
#define NL 16
#define JC 12  /* Jacobian entries formed at once (all 9 for M = 3: no lone FMA chain) */
#define NLANES _Pragma("omp simd") for (int i = 0; i < NL; ++i)
#define DEFINE_NORMS(REAL, SUF, DISPATCH)                                                           \
INLINE void norms_one_##SUF(int S, int M, int L, REAL cl, const REAL *Zk, const REAL *Ak,           \
                            const REAL *w1, const REAL *w2, const REAL *h2k, double *outk,          \
                            REAL *P, REAL *msk, REAL *J, double *a) {                               \
    for (int rc = 0; rc < M * M; ++rc)  /* P[r M + c][l] = W1[r][l] W2[l][c], once per model */     \
        for (int l = 0; l < L; ++l) P[(size_t)rc * L + l] = w1[(size_t)(rc / M) * L + l] * w2[(size_t)(rc % M) * L + l]; \
    double c2[NG], c1[NG], c0[NG], lam[NG];  /* M = 3: polynomials of a group of NG states */     \
    int g0 = 0;  /* the group's first state */                                                      \
    for (int s0 = 0; s0 < S; s0 += NL) {                                                            \
        const int ns = S - s0 < NL ? S - s0 : NL;                                                   \
        REAL z[MAXM][NL];                                                                           \
        for (int m = 0; m < M; ++m) NLANES z[m][i] = i < ns ? Zk[(size_t)(s0 + i) * M + m] : 0;     \
        for (int l = 0; l < L; ++l) {                                                               \
            REAL u[NL] = {0};                                                                       \
            for (int m = 0; m < M; ++m) { const REAL w = w2[(size_t)m * L + l]; NLANES u[i] += w * z[m][i]; } \
            const REAL h = h2k[l];                                                                  \
            NLANES msk[(size_t)l * NL + i] = (u[i] + h > 0 ? (REAL)1 : (REAL)0)                     \
                                           - (cl > 0 && u[i] > 0 ? (REAL)1 : (REAL)0);              \
        }                                                                                           \
        for (int r0 = 0; r0 < M * M; r0 += JC) {  /* J = sum_l P[l] m_l + diag(A), as the model's jacobian; */ \
            const int nr = M * M - r0 < JC ? M * M - r0 : JC;  /* JC entries at once: independent FMA chains */ \
            REAL acc[JC][NL];                                                                       \
            for (int r = 0; r < nr; ++r) NLANES acc[r][i] = 0;                                      \
            for (int l = 0; l < L; ++l) {                                                           \
                const REAL *mm = msk + (size_t)l * NL;                                              \
                for (int r = 0; r < nr; ++r) {                                                      \
                    const REAL w = P[(size_t)(r0 + r) * L + l];                                     \
                    NLANES acc[r][i] += w * mm[i];                                                  \
                }                                                                                   \
            }                                                                                       \
            for (int r = 0; r < nr; ++r) {                                                          \
                const int rc = r0 + r;                                                              \
                NLANES J[(size_t)rc * NL + i] = acc[r][i] + (rc / M == rc % M ? Ak[rc / M] : 0);    \
            }                                                                                       \
        }                                                                                           \
        for (int p = 0; p < M; ++p)                                                                 \
            for (int q = p; q < M; ++q) {                                                           \
                double acc[NL] = {0};                                                               \
                for (int r = 0; r < M; ++r) {                                                       \
                    const REAL *jp = J + ((size_t)r * M + p) * NL, *jq = J + ((size_t)r * M + q) * NL; \
                    NLANES acc[i] += (double)jp[i] * (double)jq[i];                                 \
                }                                                                                   \
                NLANES { a[((size_t)p * M + q) * NL + i] = acc[i]; a[((size_t)q * M + p) * NL + i] = acc[i]; } \
            }                                                                                       \
        if (M != 3) { jacobi_max_eig(M, a, outk + s0, ns); continue; }                              \
        const int g = (s0 - g0) / NL;  /* M = 3: this block's lanes in the group from state g0 */   \
        sym3_poly(a, c2 + g * NL, c1 + g * NL, c0 + g * NL, lam + g * NL);                          \
        if (g + 1 == NG / NL || s0 + NL >= S) {  /* group full, or the last block: solve it */      \
            newton3(c2, c1, c0, lam, (g + 1) * NL);                                                 \
            for (int i = 0; i < s0 + ns - g0; ++i) outk[g0 + i] = sqrt(lam[i] > 0 ? lam[i] : 0);    \
            g0 = s0 + NL;                                                                           \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
typedef struct {                                                                                   \
    job_head h;  /* first member: run_jobs reads the status through it */                           \
    int K, S, M, L;                                                                                 \
    REAL cl;                                                                                        \
    const REAL *Z, *A, *W1, *W2t, *h2;                                                              \
    double *out;                                                                                    \
} norm_job_##SUF;                                                                                   \
                                                                                                    \
static void *norms_worker_##SUF(void *arg) {                                                        \
    norm_job_##SUF *j = arg;                                                                        \
    const int S = j->S, M = j->M, L = j->L;                                                         \
    const size_t ML = (size_t)M * L;                                                                \
    REAL *buf = aligned_scratch(sizeof(REAL) * ((size_t)M * M * L + (size_t)L * NL + (size_t)M * M * NL)); \
    double *a = aligned_scratch(sizeof(double) * (size_t)M * M * NL);                               \
    if (buf == NULL || a == NULL) { free(buf); free(a); j->h.status = 2; return NULL; }             \
    SAVE_FTZ                                                                                        \
    for (int k; (k = next_model(&j->h)) < j->K;)                                                    \
        DISPATCH(M, norms_one_##SUF(S, MC, L, j->cl, j->Z + (size_t)k * S * M, j->A + (size_t)k * M, \
                        j->W1 + k * ML,                                                             \
                        j->W2t + k * ML, j->h2 + (size_t)k * L, j->out + (size_t)k * S, buf,        \
                        buf + (size_t)M * M * L, buf + (size_t)M * M * L + (size_t)L * NL, a))      \
    RESTORE_FTZ                                                                                     \
    free(buf);                                                                                      \
    free(a);                                                                                        \
    return NULL;                                                                                    \
}                                                                                                   \
                                                                                                    \
int jacobian_norms_##SUF(int K, int S, int M, int L, int clipped, int nthreads, const REAL *Z,      \
                         const REAL *A, const REAL *W1, const REAL *W2t, const REAL *h2, double *out) { \
    if (M > MAXM) return 1;                                                                         \
    const int n = n_workers(nthreads, K);                                                           \
    norm_job_##SUF jobs[MAXT];                                                                      \
    for (int i = 0; i < n; ++i)                                                                     \
        jobs[i] = (norm_job_##SUF){{0, NULL}, K, S, M, L, clipped ? 1 : 0, Z, A, W1, W2t, h2, out}; \
    return run_jobs(norms_worker_##SUF, jobs, sizeof(norm_job_##SUF), n);                           \
}

/* M = 3: the characteristic polynomial p(l) = l^3 - c2 l^2 + c1 l - c0 of NL symmetric 3 x 3
 * matrices a[p][q][lane], and Newton's starting point l = ||S||_F = sqrt(sum of lambda^2) (above
 * lambda_max, and within sqrt(3) of it), written at c2, c1, c0, l (NL lanes each). */
INLINE void sym3_poly(const double *a, double *c2, double *c1, double *c0, double *l) {
#define AT3(p, q) (a + ((size_t)(p) * 3 + (q)) * NL)
    NLANES {
        const double s00 = AT3(0, 0)[i], s11 = AT3(1, 1)[i], s22 = AT3(2, 2)[i];
        const double s01 = AT3(0, 1)[i], s02 = AT3(0, 2)[i], s12 = AT3(1, 2)[i];
        c2[i] = s00 + s11 + s22;
        c1[i] = s00 * s11 - s01 * s01 + s00 * s22 - s02 * s02 + s11 * s22 - s12 * s12;
        c0[i] = s00 * (s11 * s22 - s12 * s12) - s01 * (s01 * s22 - s12 * s02) + s02 * (s01 * s12 - s11 * s02);
        l[i] = sqrt(s00 * s00 + s11 * s11 + s22 * s22 + 2 * (s01 * s01 + s02 * s02 + s12 * s12));
    }
#undef AT3
}

/* Newton's method on n lanes' polynomials (sym3_poly) from above, in place on l: p is increasing
 * and convex there, so the iterates fall monotonically onto the largest root (quadratically for a
 * simple root; a double largest root converges linearly and to ~1e-8 relative); one division per
 * step, ~5x cheaper than rotations. All lanes step until none moves. NG lanes (several blocks of
 * states) at once keep the divider and FMA units busy, where one block's 16 lanes waited on each
 * step's latency (Newton took 38 % of the norms with 16). */
#define NG 64
static void newton3(const double *c2, const double *c1, const double *c0, double *l, int n) {
    for (int it = 0; it < 200; ++it) {
        int moving = 0;
        _Pragma("omp simd reduction(|:moving)") for (int i = 0; i < n; ++i) {
            const double p = ((l[i] - c2[i]) * l[i] + c1[i]) * l[i] - c0[i];
            const double dp = (3 * l[i] - 2 * c2[i]) * l[i] + c1[i];
            const double step = p > 0 && dp > 0 ? p / dp : 0;
            l[i] -= step;
            moving |= step > 1e-15 * l[i];  /* 1e-16 kept some lanes stepping on rounding noise for 200 iterations */
        }
        if (!moving) break;
    }
}

/* Largest eigenvalue of NL symmetric positive semi-definite M x M matrices a[p][q][lane]
 * (overwritten); writes sqrt(max(lambda_max, 0)) for the first ns lanes.
 * M <= 2: closed form. M = 3 goes to sym3_poly and newton3 (norms_one). M > 3: cyclic Jacobi
 * rotations (a rotation with a_pq = 0 is the identity, selected lane by lane so the loops stay
 * branch-free). */
INLINE void jacobi_max_eig(int M, double *a, double *out, int ns) {
#define AT(p, q) (a + ((size_t)(p) * M + (q)) * NL)
    if (M == 1) {
        for (int i = 0; i < ns; ++i) out[i] = sqrt(AT(0, 0)[i] > 0 ? AT(0, 0)[i] : 0);
        return;
    }
    if (M == 2) {
        for (int i = 0; i < ns; ++i) {
            const double h = 0.5 * (AT(0, 0)[i] - AT(1, 1)[i]), b = AT(0, 1)[i];
            const double l = 0.5 * (AT(0, 0)[i] + AT(1, 1)[i]) + sqrt(h * h + b * b);
            out[i] = sqrt(l > 0 ? l : 0);
        }
        return;
    }
    for (int sweep = 0; sweep < 50; ++sweep) {
        double off[NL] = {0}, dia[NL] = {0};
        for (int p = 0; p < M; ++p) {
            const double *ap = AT(p, p);
            NLANES dia[i] += ap[i] * ap[i];
            for (int q = p + 1; q < M; ++q) { const double *aq = AT(p, q); NLANES off[i] += aq[i] * aq[i]; }
        }
        int done = 1;
        for (int i = 0; i < NL; ++i) done &= off[i] <= 1e-30 * dia[i];
        if (done) break;
        for (int p = 0; p < M - 1; ++p)
            for (int q = p + 1; q < M; ++q) {
                double c[NL], s[NL], t[NL];
                double *app = AT(p, p), *aqq = AT(q, q), *apq = AT(p, q), *aqp = AT(q, p);
                NLANES {
                    const double x = apq[i], th = (aqq[i] - app[i]) / (2 * (x != 0 ? x : 1));
                    const double tt = (th >= 0 ? 1.0 : -1.0) / (fabs(th) + sqrt(th * th + 1));
                    t[i] = x != 0 && isfinite(th) ? tt : 0;
                    c[i] = 1 / sqrt(t[i] * t[i] + 1);
                    s[i] = t[i] * c[i];
                    app[i] -= t[i] * x;
                    aqq[i] += t[i] * x;
                    apq[i] = 0;
                    aqp[i] = 0;
                }
                for (int r = 0; r < M; ++r) {
                    if (r == p || r == q) continue;
                    double *arp = AT(r, p), *arq = AT(r, q), *apr = AT(p, r), *aqr = AT(q, r);
                    NLANES {
                        const double vp = arp[i], vq = arq[i];
                        arp[i] = apr[i] = c[i] * vp - s[i] * vq;
                        arq[i] = aqr[i] = s[i] * vp + c[i] * vq;
                    }
                }
            }
    }
    for (int i = 0; i < ns; ++i) {
        double mx = AT(0, 0)[i];
        for (int p = 1; p < M; ++p) mx = AT(p, p)[i] > mx ? AT(p, p)[i] : mx;
        out[i] = sqrt(mx > 0 ? mx : 0);
    }
#undef AT
}

DEFINE_NORMS(float, f32, SPECIALIZE_M)
DEFINE_NORMS(double, f64, RUNTIME_M)


