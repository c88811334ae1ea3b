"""The time recursions of the fused shPLRNN rollout in three interchangeable backends, and the
growth bound's Jacobian norms (C only).

Only the sequential part of the rollout lives here; :mod:`dsrecon.fast.fused_plrnn` builds the
inputs and maps the gradients back to the model's parameters. Shapes (K models, T steps, B windows,
M latent, L hidden; row vectors; ``W2t = W2^T``); every per-step array is window-major, as the
windows themselves, so no caller transposes::

    forward(z1 (K,B,M), A (K,M), W1 (K,M,L), W2t (K,M,L), h1 (K,M), h2 (K,L), clipped,
            alpha (K,T), Q (K,M,M), c (K,B,Tc,M), Tc >= T) -> (Zt, Z), both (K,B,T,M)
        zt_t    = z_t + alpha_t (z_t Q - z_t) + alpha_t c_t    forced state z~_t
        u_t     = zt_t W2t,  phi_t = relu(u_t + h2) - relu(u_t)   (clipped; else relu(u_t + h2))
        z_{t+1} = A * zt_t + phi_t W1^T + h1
    backward(G (K,B,T,M) = dL/dZ, Zt, A, W1, W2t, h1, h2, clipped, alpha, Q)
            -> (dz1, dA, dW1, dW2t, dh1, dh2)
        s = lam_{t+1} W1,  gu = s * (1[u + h2 > 0] - 1[u > 0]),  dh2 += s * 1[u + h2 > 0]
        dW1 += lam^T phi,  dW2t += zt^T gu,  dA += lam * zt,  dh1 += lam
        lam_t = G_{t-1} + lt + alpha_t (lt Q^T - lt),  lt = A * lam_{t+1} + gu W2t^T
    identity_step(z1, A, W1, W2t, h1, h2, clipped, alpha, Q, c, X (K,B,T+1,N), scale)   (C only)
        forward, the identity observation's squared error and dL/dZ, and backward of each model
        in one call (one model's three passes on one thread, while its arrays are in cache)

Backends
--------
``"c"``
    A small C kernel compiled once with the system C compiler (``cc -O3 -march=native``) into a
    per-user cache (``dsrecon._cache.cache_dir()``:
    ``$DSRECON_CACHE_DIR``, default ``~/.cache/dsrecon``) and called through ``ctypes``: no
    per-step interpreter overhead; ``u`` recomputed in the backward pass so only the states
    (O(T B M)) are stored; the clipped difference of ReLUs evaluated from one product ``zt W2t``
    (half the work of the stacked form below). Windows are processed in blocks of 16 with every
    per-window quantity stored window-innermost, so the inner loops are fixed-length SIMD loops
    (no horizontal sums; weight gradients summed per lane over chunks of 4 stored steps, reduced
    once per block). For float32 the latent sizes M <= 8, 10, 12, 16 are compile-time constants (fully
    unrolled M-loops: forward 2x, backward 1.3x faster for M = 3; the build takes ~15 s, once per machine).
    The K models of an ensemble run on the threads of a persistent pool that sleeps between calls
    after a short spin (50 us; 1 ms while an ensemble trains on more than one kernel thread:
    :func:`set_kernel_threads`, :func:`set_kernel_spin`; starting threads per call cost ~40
    microseconds each); each thread
    takes the next model not yet taken, so a thread that wakes late takes fewer. It flushes
    denormals (FTZ/DAZ) inside the call and restores the caller's floating-point state on return.
``"numpy"``
    The same loops, on the stacked form ``v = zt [W2t, W2t, diag(A)] + [h2, 0, h1]``,
    ``z' = relu(v[:2L]) [W1, -W1]^T + v[2L:]`` (:func:`stack_weights`), with NumPy calls (about 1
    microsecond each); no compiler needed.
``"torch"``
    The same loops with PyTorch calls; the only one that runs on a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

BACKENDS = ("c", "numpy", "torch")
_MAX_M = 64  # the C kernel keeps one M-vector on the stack

_C_SOURCE = r"""/* Sequential loops of the fused shPLRNN rollout (dsrecon.fast), forward and backward through time.
 * Row vectors, C order. K models, T steps, B windows, M latent, L hidden:
 *   z1 (K,B,M), A (K,M), W1 (K,M,L), W2t (K,M,L) = W2^T, h1 (K,M), h2 (K,L), alpha (K,T), Q (K,M,M),
 *   c (K,B,Tc,M), Zt, Z, G (K,B,T,M); gradients dz1 (K,B,M) and dA, dW1, dW2t, dh1, dh2 (shapes
 *   as the parameters, zeroed by the caller). clipped = 1: phi = relu(u + h2) - relu(u); 0: relu(u + h2).
 * Forward:  zt = z + a_t (z Q - z) + a_t c_t;  u = zt W2t;  z' = A * zt + phi(u) W1^T + h1.
 * Backward (u recomputed from zt, so only O(T B M) is stored), lam = dL/dz':
 *   s = lam W1;  gu = s * (1[u + h2 > 0] - clipped 1[u > 0]);  dh2 += s * 1[u + h2 > 0];
 *   dW1 += lam^T phi;  dW2t += zt^T gu;  dA += lam * zt;  dh1 += lam;
 *   lt = A * lam + gu W2t^T;  lam <- G_{t-1} + lt + a_t (lt Q^T - lt).
 * Layout inside: windows are processed in blocks of BC = 16 and every per-window quantity is stored
 * window-innermost (x[m][i], i < BC), so each inner loop is a fixed-length SIMD loop over the
 * block with no horizontal sums; the weight-gradient sums over windows are kept per lane and
 * reduced once per block; the backward pass sums them over chunks of TC stored steps. Lanes past B
 * are padded with zeros and contribute nothing. Arrays outside are window-major (b, t, m).
 * a_t = 0 skips the forcing product (z~ = z exactly, as the plain loop's shortcut).
 * The K models are shared out over nthreads threads of a persistent pool, each thread taking the
 * next model not yet taken (next_model); each thread flushes denormals (FTZ/DAZ) for its models and
 * restores its own MXCSR afterwards.
 * Return: 0 ok, 1 M too large, 2 out of memory.
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <math.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#define SAVE_FTZ unsigned int csr_ = _mm_getcsr(); _mm_setcsr(csr_ | 0x8040);
#define RESTORE_FTZ _mm_setcsr(csr_);
#else
#define SAVE_FTZ
#define RESTORE_FTZ
#endif
#define MAXM 64
#define BC 16
#define SL 8  /* lanes of the double sums whose order must not depend on alignment (stacked_sumsq) */
#define TC 4  /* backward: steps per chunk of stored weight-gradient factors (3-6: ~20 % faster than 16) */
#define IDX(k, t, T) ((size_t)(k) * (T) + (t))
#define LANES _Pragma("omp simd") for (int i = 0; i < BC; ++i)  /* independent lanes */
#define SUM_LANES for (int i = 0; i < BC; ++i)                     /* sums over lanes */

#define MAXT 64  /* most threads per call */

/* Scratch memory on a cache-line boundary (free() releases it): malloc's 16-byte alignment made
 * every 64-byte vector load of the blocked buffers straddle two cache lines. NULL on failure. */
static void *aligned_scratch(size_t bytes) {
    void *p = NULL;
    return posix_memalign(&p, 64, bytes) == 0 ? p : NULL;
}

static int n_workers(int nthreads, int K) {
    int n = nthreads < K ? nthreads : K;
    return n < 1 ? 1 : n > MAXT ? MAXT : n;
}

/* Worker pool: run fn(args[i]) for i < n, i = 0 on the caller's thread and i >= 1 on pool threads
 * that are started once and then sleep on a condition variable between calls (no spinning, so a
 * busy machine loses nothing to them; waking one costs a few microseconds, starting a thread per
 * call cost ~40). One call at a time uses the pool; a concurrent caller (another Python thread)
 * starts threads of its own for its call. A forked child starts with an empty pool (the parent's
 * threads do not exist there). A thread that cannot be started runs its share on the caller's. */
static pthread_mutex_t pool_job = PTHREAD_MUTEX_INITIALIZER;  /* held for a whole call */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER, pool_done = PTHREAD_COND_INITIALIZER;
static int pool_size = 0, pool_atfork = 0;
static unsigned long pool_gen = 0, pool_pending = 0;  /* written under pool_mu, also read atomically */
static void *(*pool_fn[MAXT])(void *);
static void *pool_arg[MAXT];
static unsigned long pool_born[MAXT];  /* the generation current when worker i started */

static void pool_child_reset(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pool_job = m; pool_mu = m; pool_wake = c; pool_done = c;
    pool_size = 0; pool_pending = 0;
}

/* Before sleeping, a waiting thread watches the flag for up to pool_spin_ns (set_pool_spin_ns;
 * the next call of a training update may come within that, and a futex wake-up costs tens of
 * microseconds, more where the idle core has to be woken by the hypervisor). */
static long pool_spin_ns = 50000L;
void set_pool_spin_ns(long ns) { __atomic_store_n(&pool_spin_ns, ns < 0 ? 0 : ns, __ATOMIC_RELAXED); }
long get_pool_spin_ns(void) { return __atomic_load_n(&pool_spin_ns, __ATOMIC_RELAXED); }
static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}
static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}
/* spin while *flag == value (equal = 1) or while *flag != value (equal = 0), at most pool_spin_ns */
static void spin_while(const unsigned long *flag, unsigned long value, int equal) {
    const long end = now_ns() + __atomic_load_n(&pool_spin_ns, __ATOMIC_RELAXED);
    for (int i = 0; (__atomic_load_n(flag, __ATOMIC_ACQUIRE) == value) == equal; ++i) {
        cpu_relax();
        if ((i & 63) == 63 && now_ns() > end) return;
    }
}

static void *pool_main(void *arg) {
    const int id = (int)(size_t)arg;
    pthread_mutex_lock(&pool_mu);
    unsigned long seen = pool_born[id];
    for (;;) {
        if (pool_gen == seen) {
            pthread_mutex_unlock(&pool_mu);
            spin_while(&pool_gen, seen, 1);
            pthread_mutex_lock(&pool_mu);
        }
        while (pool_gen == seen) pthread_cond_wait(&pool_wake, &pool_mu);
        seen = pool_gen;
        void *(*fn)(void *) = pool_fn[id];
        if (fn == NULL) continue;
        pool_fn[id] = NULL;
        pthread_mutex_unlock(&pool_mu);
        fn(pool_arg[id]);
        pthread_mutex_lock(&pool_mu);
        if (__atomic_sub_fetch(&pool_pending, 1, __ATOMIC_RELEASE) == 0) pthread_cond_signal(&pool_done);
    }
    return NULL;
}

static void run_on_new_threads(void *(*fn)(void *), void **args, int n) {
    pthread_t th[MAXT];
    int started[MAXT] = {0};
    for (int i = 1; i < n; ++i) started[i] = pthread_create(&th[i], NULL, fn, args[i]) == 0;
    fn(args[0]);
    for (int i = 1; i < n; ++i) {
        if (started[i]) pthread_join(th[i], NULL);
        else fn(args[i]);
    }
}

static void run_workers(void *(*fn)(void *), void **args, int n) {
    if (n <= 1) { fn(args[0]); return; }
    if (pthread_mutex_trylock(&pool_job) != 0) { run_on_new_threads(fn, args, n); return; }
    pthread_mutex_lock(&pool_mu);
    if (!pool_atfork) pool_atfork = pthread_atfork(NULL, NULL, pool_child_reset) == 0;
    while (pool_size < n - 1) {  /* worker ids 1 .. pool_size */
        pthread_t th;
        pool_born[pool_size + 1] = pool_gen;
        if (pthread_create(&th, NULL, pool_main, (void *)(size_t)(pool_size + 1)) != 0) break;
        pthread_detach(th);
        pool_size++;
    }
    const int m = n - 1 < pool_size ? n - 1 : pool_size;  /* shares handed to pool threads */
    for (int i = 1; i <= m; ++i) { pool_fn[i] = fn; pool_arg[i] = args[i]; }
    __atomic_store_n(&pool_pending, (unsigned long)m, __ATOMIC_RELEASE);
    __atomic_add_fetch(&pool_gen, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_mu);
    fn(args[0]);
    for (int i = m + 1; i < n; ++i) fn(args[i]);  /* threads that could not be started */
    spin_while(&pool_pending, 0, 0);
    pthread_mutex_lock(&pool_mu);
    while (pool_pending > 0) pthread_cond_wait(&pool_done, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
    pthread_mutex_unlock(&pool_job);
}

/* Every kernel's job struct starts with this: the worker's failure code, and the call's shared
 * counter from which each worker takes its next model (next_model): models go to whichever thread
 * is free, so a worker that wakes late (a futex wake-up takes tens of microseconds) or a core that
 * is busy with another process takes fewer, instead of holding up the call with a fixed share.
 * Each model is computed by one thread alone, so the results do not depend on the split. */
typedef struct { int status; int *next; } job_head;
static int next_model(job_head *h) { return __atomic_fetch_add(h->next, 1, __ATOMIC_RELAXED); }

/* Run fn on n jobs of `size` bytes each (run_workers), return the largest status they set. */
static int run_jobs(void *(*fn)(void *), void *jobs, size_t size, int n) {
    void *args[MAXT];
    int next = 0;
    for (int i = 0; i < n; ++i) {
        args[i] = (char *)jobs + (size_t)i * size;
        ((job_head *)args[i])->next = &next;
    }
    run_workers(fn, args, n);
    int status = 0;
    for (int i = 0; i < n; ++i) {
        const int st = ((const job_head *)args[i])->status;
        status = st > status ? st : status;
    }
    return status;
}

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
"""

_CFLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-ffp-contract=fast", "-pthread", "-std=c99", "-shared", "-fPIC"]
_LIB = None  # the loaded ctypes library, or the reason it could not be built (str)
_THREADS: int | None = None  # kernel threads over the K models (None: every core this process may use)
_SPIN_DEFAULT_S = 50e-6  # pool threads' spin before sleeping, outside ensemble training
ENSEMBLE_SPIN_S = 1e-3  # ... while an ensemble trains on more than one kernel thread (ensemble_spin)
_SPIN_USER: float | None = None  # set_kernel_spin's value; None: automatic (the two above)
_SPIN_HOLDS = 0  # ensemble runs now holding ENSEMBLE_SPIN_S
_SPIN_LOCK = threading.Lock()


def _cache_dir() -> Path:
    from dsrecon._cache import cache_dir

    return cache_dir() / "kernels"


def _cpu_signature() -> str:
    """CPU model and feature flags: a library built with -march=native must not move machines."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


def _compile(cc: str, flags: list, target: Path) -> str | None:
    """Compile the kernel source into ``target`` (atomically); the compiler's error text on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "shplrnn.c"
        src.write_text(_C_SOURCE)
        out = Path(tmp) / "shplrnn.so"
        proc = subprocess.run([cc, *flags, str(src), "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            return proc.stderr[-2000:]
        os.replace(out, target)  # atomic: concurrent builders never see a half-written file
    return None


_PRUNE_AGE_S = 7 * 24 * 3600


def _prune_old_builds(keep: Path, max_age_s: float = _PRUNE_AGE_S) -> list[Path]:
    """Delete the other kernel builds in ``keep``'s folder not modified for ``max_age_s`` (default
    a week): every new dsrecon version or compiler flag leaves a ~0.3 MB library behind. A build
    another machine sharing the folder still uses is younger (its mtime is its build time, so a
    pruned one is rebuilt on its next use there); a library already loaded stays valid after its
    file is deleted. Returns the deleted paths; files that cannot be deleted are left alone."""
    import time

    gone = []
    for old in keep.parent.glob("shplrnn_*.so"):
        try:
            if old != keep and time.time() - old.stat().st_mtime > max_age_s:
                old.unlink()
                gone.append(old)
        except OSError:
            pass
    return gone


def _build_library() -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (set CC or install gcc)")
    key = hashlib.sha1("\n".join([_C_SOURCE, " ".join(_CFLAGS), cc, _cpu_signature()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"shplrnn_{key}.so"
    if not target.exists():
        err = _compile(cc, _CFLAGS, target)
        if err is not None:
            raise RuntimeError(f"compiling the fused kernel with {cc} failed:\n{err}")
        _prune_old_builds(target)
    lib = ctypes.CDLL(str(target))
    ptr = ctypes.c_void_p
    for name in ("forward_f32", "forward_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] * 8 + [ptr] * 11
        getattr(lib, name).restype = ctypes.c_int
    for name in ("backward_f32", "backward_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] * 7 + [ptr] * 14
        getattr(lib, name).restype = ctypes.c_int
    for name, real in (("identity_step_f32", ctypes.c_float), ("identity_step_f64", ctypes.c_double)):
        getattr(lib, name).argtypes = [ctypes.c_int] * 9 + [real] + [ptr] * 19
        getattr(lib, name).restype = ctypes.c_int
    for name in ("radam_f32", "radam_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] + [ptr] * 6 + [ctypes.c_int] + [ctypes.c_double] * 4
        getattr(lib, name).restype = None
    for name in ("jacobian_norms_f32", "jacobian_norms_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] * 6 + [ptr] * 6
        getattr(lib, name).restype = ctypes.c_int
    for name in ("stacked_sumsq_f32", "stacked_sumsq_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] * 2 + [ptr] * 4
        getattr(lib, name).restype = None
    lib.set_pool_spin_ns.argtypes = [ctypes.c_long]
    lib.set_pool_spin_ns.restype = None
    lib.get_pool_spin_ns.argtypes = []
    lib.get_pool_spin_ns.restype = ctypes.c_long
    lib.set_pool_spin_ns(int(kernel_spin() * 1e9))
    return lib


def set_kernel_threads(n: int | None) -> None:
    """Threads the C kernel uses across the K models of an ensemble (None: all usable cores).

    One model always runs on one thread (its time loop is sequential); with K models the kernel
    hands models to up to ``n`` threads. Set 1 when other processes already occupy the cores.
    """
    global _THREADS
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"kernel threads must be a positive integer or None, got {n!r}")
    _THREADS = n


def set_kernel_spin(seconds: float | None) -> None:
    """How long the kernel's pool threads stay awake (spinning) after a call before they sleep.

    A training update calls the kernel every ~0.5-1 ms; a sleeping thread takes tens of
    microseconds to wake (more on a virtual machine whose idle core the hypervisor parked), and
    on this project's 2-core virtual machine the update's Python part itself ran ~10 % slower
    while the other core slept. ``None`` (the default) is automatic: 50 microseconds, which
    suits a shared machine (a spinning thread takes a core another process could use), and
    ``ENSEMBLE_SPIN_S`` (1 ms) while :func:`~dsrecon.fast.train_ensemble` trains its models on
    more than one kernel thread with one torch thread (it then owns those cores; see
    :func:`ensemble_spin`): a K = 10 update there took 3-6 % less wall time for ~20 % more CPU
    time (``benchmarks/train_speed.py``, section 6, 2026-11-23). A number of seconds in [0, 1] is used
    everywhere, ensembles included (0: sleep at once; e.g. on a machine shared with other jobs).
    Results do not depend on it (test).
    """
    global _SPIN_USER
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not 0 <= seconds <= 1):
        raise ValueError(f"kernel spin must be None (automatic) or a number of seconds in [0, 1], got {seconds!r}")
    with _SPIN_LOCK:
        _SPIN_USER = None if seconds is None else float(seconds)
        _apply_spin()


def kernel_spin() -> float:
    """The pool threads' spin before sleeping now, in seconds (see :func:`set_kernel_spin`)."""
    if _SPIN_USER is not None:
        return _SPIN_USER
    return ENSEMBLE_SPIN_S if _SPIN_HOLDS > 0 else _SPIN_DEFAULT_S


def _loaded_library():
    """The C library if it is already loaded, else None; unlike :func:`c_library`, never builds it."""
    return None if _LIB is None or isinstance(_LIB, str) else _LIB


def _apply_spin() -> None:
    """Hand :func:`kernel_spin` to the loaded library (a library loaded later reads it when built)."""
    lib = _loaded_library()
    if lib is not None:
        lib.set_pool_spin_ns(int(kernel_spin() * 1e9))


@contextlib.contextmanager
def ensemble_spin(active: bool):
    """Within the block, the automatic spin is ``ENSEMBLE_SPIN_S`` when ``active`` (nested and
    concurrent holders counted; an explicit :func:`set_kernel_spin` value wins throughout)."""
    global _SPIN_HOLDS
    if not active:
        yield
        return
    with _SPIN_LOCK:
        _SPIN_HOLDS += 1
        _apply_spin()
    try:
        yield
    finally:
        with _SPIN_LOCK:
            _SPIN_HOLDS -= 1
            _apply_spin()


def kernel_threads() -> int:
    """The thread count the next kernel call uses (see :func:`set_kernel_threads`)."""
    if _THREADS is not None:
        return _THREADS
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def c_library():
    """The compiled kernel library, built on first use; raises ``RuntimeError`` if it cannot be."""
    global _LIB
    if _LIB is None:
        try:
            _LIB = _build_library()
        except (RuntimeError, OSError) as err:
            _LIB = str(err)
    if isinstance(_LIB, str):
        raise RuntimeError(f"the 'c' backend is unavailable: {_LIB}")
    return _LIB


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``"auto"`` into a concrete backend: ``"c"`` on CPU when it builds, else ``"numpy"``;
    ``"torch"`` off the CPU. An explicit name is checked against the device."""
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"unknown backend {backend!r}; valid: auto, {', '.join(BACKENDS)}")
    if device.type != "cpu":
        if backend not in ("auto", "torch"):
            raise ValueError(f"backend {backend!r} runs on the CPU only; the tensors are on {device}: use 'torch'")
        return "torch"
    if backend != "auto":
        return backend
    try:
        c_library()
        return "c"
    except RuntimeError as err:
        warnings.warn(f"{err}; using the NumPy backend (about 2x slower)", RuntimeWarning, stacklevel=3)
        return "numpy"


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _check_status(status: int, M: int) -> None:
    if status == 1:
        raise ValueError(f"the 'c' backend supports latent_dim <= {_MAX_M}, got {M}; use backend='numpy'")
    if status:
        raise MemoryError("the 'c' kernel could not allocate its scratch memory")


def stack_weights(A, W1, W2t, h1, h2, clipped: bool):
    """The step as one product for the NumPy/PyTorch loops: ``v = zt Wbig + bias``,
    ``z' = relu(v[:R]) W1c^T + v[R:]`` with ``Wbig = [W2t, W2t, diag(A)]``, ``bias = [h2, 0, h1]``,
    ``W1c = [W1, -W1]`` (clipped; ``R = 2L``) or ``[W2t, diag(A)]``, ``[h2, h1]``, ``W1`` (``R = L``).
    Shapes ``(K, M, D)``, ``(K, D)``, ``(K, M, R)``."""
    diagA = torch.diag_embed(A)  # (K, M, M)
    if clipped:
        return (torch.cat([W2t, W2t, diagA], dim=2), torch.cat([h2, torch.zeros_like(h2), h1], dim=1),
                torch.cat([W1, -W1], dim=2).contiguous())
    return torch.cat([W2t, diagA], dim=2), torch.cat([h2, h1], dim=1), W1.contiguous()


# ----------------------------------------------------------------------------- forward
def forward(backend: str, z1, A, W1, W2t, h1, h2, clipped: bool, alpha, Q, c):
    """Forward recursion (module docstring); all inputs contiguous, one dtype. ``c (K, B, Tc, M)``
    holds the data term of steps 0..Tc-1 (only the first T = ``alpha.shape[1]`` are read). Returns
    ``(Zt, Z)``, the forced states z~_1..z~_T and the unforced states z_2..z_{T+1}, each ``(K, B, T, M)``."""
    K, T = alpha.shape
    _, B, Tc, M = c.shape
    L = W1.shape[-1]
    if Tc < T:
        raise ValueError(f"c covers {Tc} steps, the recursion needs T = {T}")
    if backend == "c":
        Zt = torch.empty((K, B, T, M), dtype=c.dtype, device=c.device)
        Z = torch.empty_like(Zt)
        lib = c_library()
        fn = lib.forward_f32 if c.dtype == torch.float32 else lib.forward_f64
        status = fn(K, T, B, M, L, Tc, int(clipped), kernel_threads(),
                    *map(_ptr, (z1, A, W1, W2t, h1, h2, alpha, Q, c, Zt, Z)))
        _check_status(status, M)
        return Zt, Z
    Wbig, bias, W1c = stack_weights(A, W1, W2t, h1, h2, clipped)
    return _forward_stacked(backend, z1, Wbig, bias, W1c, alpha, Q, c[:, :, :T])


def backward(backend: str, G, Zt, A, W1, W2t, h1, h2, clipped: bool, alpha, Q):
    """Adjoint recursion (module docstring); ``G, Zt (K, B, T, M)``. Returns ``(dz1 (K,B,M), dA, dW1,
    dW2t, dh1, dh2)``."""
    K, B, T, M = G.shape
    L = W1.shape[-1]
    if backend == "c":
        lib = c_library()
        fn = lib.backward_f32 if G.dtype == torch.float32 else lib.backward_f64
        dz1 = torch.empty((K, B, M), dtype=G.dtype)
        dA, dW1, dW2t, dh1, dh2 = (torch.zeros_like(p) for p in (A, W1, W2t, h1, h2))
        status = fn(K, T, B, M, L, int(clipped), kernel_threads(),
                    *map(_ptr, (G, Zt, A, W1, W2t, h2, alpha, Q, dz1, dA, dW1, dW2t, dh1, dh2)))
        _check_status(status, M)
        return dz1, dA, dW1, dW2t, dh1, dh2
    Wbig, bias, W1c = stack_weights(A, W1, W2t, h1, h2, clipped)
    dz1, dWbig, db, dW1c = _backward_stacked(backend, G, Zt, Wbig, bias, W1c, alpha, Q)
    R = W1c.shape[-1]
    dA = torch.diagonal(dWbig[:, :, R:], dim1=1, dim2=2)  # (K, M)
    dW2t = dWbig[:, :, :L] + dWbig[:, :, L:R] if clipped else dWbig[:, :, :L]  # (K, M, L)
    dW1 = dW1c[:, :, :L] - dW1c[:, :, L:] if clipped else dW1c  # (K, M, L)
    return dz1, dA, dW1, dW2t, db[:, R:], db[:, :L]


def identity_step(z1, A, W1, W2t, h1, h2, clipped: bool, alpha, Q, c, X, scale: float):
    """Forward, squared-error loss of the identity observation and backward in one C call.

    Inputs as for :func:`forward`, plus the target windows ``X (K, B, T + 1, N)`` (``X[:, :, 1:]``
    is compared with the predictions ``Z[..., :N]``) and ``scale``, the loss gradient's factor:
    ``dL/dZ = scale * (Z[..., :N] - X[:, :, 1:])``, zero-padded to M, i.e. the gradient of
    ``scale / 2 * sse``; a model whose sse is not finite gets ``dL/dZ = 0``. All contiguous, one dtype.
    Each model runs its three passes on one thread, so its states and dL/dZ are still in that
    core's cache for the backward pass, and the pool is woken once per update, not twice.

    Returns
    -------
    Zt, Z : (K, B, T, M), as :func:`forward`
    sse : (K,) float64, the sum of squared residuals per model
    dz1, dA, dW1, dW2t, dh1, dh2 : as :func:`backward`
    """
    K, T = alpha.shape
    _, B, Tc, M = c.shape
    N, L = X.shape[-1], W1.shape[-1]
    if Tc < T or X.shape != (K, B, T + 1, N):
        raise ValueError(f"need c covering T = {T} steps and X of shape ({K}, {B}, {T + 1}, N), "
                         f"got c {tuple(c.shape)}, X {tuple(X.shape)}")
    lib = c_library()
    fn = lib.identity_step_f32 if c.dtype == torch.float32 else lib.identity_step_f64
    Zt = torch.empty((K, B, T, M), dtype=c.dtype)
    Z = torch.empty_like(Zt)
    sse = torch.empty(K, dtype=torch.float64)
    dz1 = torch.empty((K, B, M), dtype=c.dtype)
    dA, dW1, dW2t, dh1, dh2 = (torch.zeros_like(p) for p in (A, W1, W2t, h1, h2))
    status = fn(K, T, B, M, N, L, Tc, int(clipped), kernel_threads(), scale,
                *map(_ptr, (z1, A, W1, W2t, h1, h2, alpha, Q, c, X, Zt, Z, sse, dz1, dA, dW1, dW2t, dh1, dh2)))
    _check_status(status, M)
    return Zt, Z, sse, dz1, dA, dW1, dW2t, dh1, dh2


def jacobian_norms(z, A, W1, W2t, h2, clipped: bool) -> torch.Tensor:
    """``||J_k(z_ks)||_2`` of the shPLRNN Jacobians ``diag(A) + W1 diag(m) W2`` with the C kernel.

    ``z (K, S, M)``, weights as for :func:`forward` (contiguous, one dtype); returns ``(K, S)``
    float64. J is formed in the weights' dtype, the largest eigenvalue of ``J^T J`` found in float64
    (closed form for M <= 2, Newton's method on the characteristic polynomial for M = 3, Jacobi
    rotations above): agrees with ``eigvalsh`` to ~1e-15 relative, ~1e-8 where the two largest
    singular values of a 3 x 3 J coincide. Raises ``RuntimeError`` when the kernel cannot be built
    (callers fall back to PyTorch).
    """
    K, S, M = z.shape
    L = W1.shape[-1]
    lib = c_library()
    fn = lib.jacobian_norms_f32 if z.dtype == torch.float32 else lib.jacobian_norms_f64
    out = torch.empty((K, S), dtype=torch.float64)
    status = fn(K, S, M, L, int(clipped), kernel_threads(), *map(_ptr, (z, A, W1, W2t, h2, out)))
    _check_status(status, M)
    return out


def stacked_sumsq(tensors, K: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-model sum of squares and finiteness of K-stacked tensors, in one C pass.

    ``tensors``: CPU tensors of one dtype (float32 or float64), each contiguous with leading axis K
    (model k's slice is ``t[k]``). Returns ``sumsq (K,) float64`` (over every tensor) and
    ``finite (K,) bool`` (every element of model k finite), or None where the C kernel does not
    apply (not built yet, another device or dtype, a non-contiguous tensor): callers use torch then.
    It never builds the library: the trainers call it after a kernel step has loaded it, and a
    model without a kernel (an LSTM's training) should not wait ~15 s for a compiler.
    """
    tensors = list(tensors)
    lib = _loaded_library()
    if not tensors or lib is None:
        return None
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64) or not all(
            t.dtype == dtype and t.is_cpu and t.is_contiguous() and t.dim() > 0 and t.shape[0] == K for t in tensors):
        return None
    n = len(tensors)
    sumsq, finite = np.empty(K, dtype=np.float64), np.empty(K, dtype=np.bool_)  # bool_ is one byte
    fn = lib.stacked_sumsq_f32 if dtype == torch.float32 else lib.stacked_sumsq_f64
    fn(K, n, (ctypes.c_void_p * n)(*[t.data_ptr() for t in tensors]),
       (ctypes.c_longlong * n)(*[t.numel() for t in tensors]), sumsq.ctypes.data, finite.ctypes.data)
    return sumsq, finite


# ----------------------------------------------------------------------------- NumPy / PyTorch loops
def _forward_stacked(backend: str, z1, Wbig, bias, W1c, alpha, Q, c) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward recursion on the stacked weights (:func:`stack_weights`); ``c (K, B, T, M)``. Returns ``(Zt, Z)``."""
    K, B, T, M = c.shape
    R = W1c.shape[-1]
    Zt = torch.empty_like(c)  # (K, B, T, M) forced states z~_1 .. z~_T
    Z = torch.empty_like(c)  # (K, B, T, M) unforced states z_2 .. z_{T+1}
    if backend == "numpy":
        z1n, Wn, bn, W1n, an, Qn, cn, Ztn, Zn = (t.numpy() for t in (z1, Wbig, bias, W1c, alpha, Q, c, Zt, Z))
        W1t = np.ascontiguousarray(W1n.transpose(0, 2, 1))  # (K, R, M)
        bn = bn[:, None, :]  # (K, 1, D)
        a = an[:, :, None, None]  # (K, T, 1, 1)
        z = z1n
        for t in range(T):
            zt = np.matmul(z, Qn)  # (K, B, M)
            zt -= z
            zt *= a[:, t]
            zt += z
            zt += a[:, t] * cn[:, :, t]
            Ztn[:, :, t] = zt
            v = np.matmul(zt, Wn)  # (K, B, D)
            v += bn
            z = np.matmul(np.maximum(v[..., :R], 0), W1t)
            z += v[..., R:]
            Zn[:, :, t] = z
    else:
        W1t = W1c.transpose(1, 2)  # (K, R, M)
        a = alpha[:, :, None, None]  # (K, T, 1, 1)
        z = z1
        for t in range(T):
            zt = z + a[:, t] * (torch.bmm(z, Q) - z) + a[:, t] * c[:, :, t]  # (K, B, M)
            Zt[:, :, t] = zt
            v = torch.baddbmm(bias[:, None, :], zt, Wbig)  # (K, B, D)
            z = torch.baddbmm(v[..., R:], torch.relu(v[..., :R]), W1t)  # (K, B, M)
            Z[:, :, t] = z
    return Zt, Z


def _backward_stacked(backend: str, G, Zt, Wbig, bias, W1c, alpha, Q):
    """Adjoint recursion on the stacked weights; ``G, Zt (K, B, T, M)``. Returns ``(dz1 (K,B,M),
    dWbig (K,M,D), db (K,D), dW1c (K,M,R))``."""
    K, B, T, M = G.shape
    R = W1c.shape[-1]
    D = R + M
    # numpy / torch: pre-activations for all steps at once, then the recursion storing dL/dv
    V = torch.baddbmm(bias[:, None, :], Zt.reshape(K, B * T, M), Wbig).reshape(K, B, T, D)  # (K, B, T, D)
    GV = torch.empty_like(V)  # (K, B, T, D)
    if backend == "numpy":
        Gn, Vn, GVn, Wn, W1n, Qn, an = (t.numpy() for t in (G, V, GV, Wbig, W1c, Q, alpha))
        WT, QT = np.ascontiguousarray(Wn.transpose(0, 2, 1)), np.ascontiguousarray(Qn.transpose(0, 2, 1))
        mask = Vn[..., :R] > 0  # (K, B, T, R)
        a = an[:, :, None, None]  # (K, T, 1, 1)
        lam = Gn[:, :, T - 1].copy()  # (K, B, M)
        for t in range(T - 1, -1, -1):
            gv = np.empty((K, B, D), dtype=Gn.dtype)
            np.matmul(lam, W1n, out=gv[..., :R])
            gv[..., :R] *= mask[:, :, t]
            gv[..., R:] = lam
            GVn[:, :, t] = gv
            lt = np.matmul(gv, WT)  # (K, B, M)
            lam = np.matmul(lt, QT)
            lam -= lt
            lam *= a[:, t]
            lam += lt
            if t > 0:
                lam += Gn[:, :, t - 1]
        dz1 = torch.from_numpy(lam)
    else:
        mask = V[..., :R] > 0  # (K, B, T, R)
        a = alpha[:, :, None, None]  # (K, T, 1, 1)
        WT, QT = Wbig.transpose(1, 2), Q.transpose(1, 2)
        lam = G[:, :, T - 1]
        for t in range(T - 1, -1, -1):
            gv = torch.cat([torch.bmm(lam, W1c) * mask[:, :, t], lam], dim=-1)  # (K, B, D)
            GV[:, :, t] = gv
            lt = torch.bmm(gv, WT)  # (K, B, M)
            lam = lt + a[:, t] * (torch.bmm(lt, QT) - lt)
            if t > 0:
                lam = lam + G[:, :, t - 1]
        dz1 = lam
    gv = GV.reshape(K, B * T, D)
    dWbig = Zt.reshape(K, B * T, M).transpose(1, 2) @ gv  # (K, M, D)
    db = gv.sum(1)  # (K, D)
    dW1c = GV[..., R:].reshape(K, B * T, M).transpose(1, 2) @ V[..., :R].clamp(min=0).reshape(K, B * T, R)
    return dz1, dWbig, db, dW1c  # dW1c (K, M, R)
