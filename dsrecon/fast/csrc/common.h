/* Sequential loops of the fused shPLRNN rollout (dsrecon.fast), forward and backward through time.
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

