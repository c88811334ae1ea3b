"""The two time recursions of the fused shPLRNN rollout, in three interchangeable backends.

Only the sequential part of the rollout lives here; :mod:`dsrecon.fast.fused_plrnn` builds the
inputs and maps the gradients back to the model's parameters. Shapes (K models, T steps, B windows, M latent, L hidden; row vectors; ``W2t = W2^T``)::

    forward(z1 (K,B,M), A (K,M), W1 (K,M,L), W2t (K,M,L), h1 (K,M), h2 (K,L), clipped,
            alpha (K,T), Q (K,M,M), ac (K,T,B,M)) -> (Zt, Z), both (K,T,B,M)
        zt_t    = z_t + alpha_t (z_t Q - z_t) + ac_t        forced state z~_t
        u_t     = zt_t W2t,  phi_t = relu(u_t + h2) - relu(u_t)   (clipped; else relu(u_t + h2))
        z_{t+1} = A * zt_t + phi_t W1^T + h1
    backward(G (K,T,B,M) = dL/dZ, Zt, A, W1, W2t, h1, h2, clipped, alpha, Q)
            -> (dz1, dA, dW1, dW2t, dh1, dh2)
        s = lam_{t+1} W1,  gu = s * (1[u + h2 > 0] - 1[u > 0]),  dh2 += s * 1[u + h2 > 0]
        dW1 += lam^T phi,  dW2t += zt^T gu,  dA += lam * zt,  dh1 += lam
        lam_t = G_{t-1} + lt + alpha_t (lt Q^T - lt),  lt = A * lam_{t+1} + gu W2t^T

Backends
--------
``"c"``
    A small C kernel compiled once with the system C compiler (``cc -O3 -march=native``) into a
    per-user cache (``dsrecon._cache.cache_dir()``: ``$DSRECON_CACHE_DIR``, default ``~/.cache/dsrecon``) and called through ``ctypes``:
    no per-step interpreter overhead, ``u`` recomputed in the backward pass so only the states
    (O(T B M)) are stored, gradients accumulated in the loop, the clipped difference of ReLUs
    evaluated from one product ``zt W2t`` (half the work of the stacked form below). It flushes denormals (FTZ/DAZ)
    inside the call and restores the caller's floating-point state on return.
``"numpy"``
    The same loops, on the stacked form ``v = zt [W2t, W2t, diag(A)] + [h2, 0, h1]``,
    ``z' = relu(v[:2L]) [W1, -W1]^T + v[2L:]`` (:func:`stack_weights`), with NumPy calls (about 1 microsecond each); no compiler needed.
``"torch"``
    The same loops with PyTorch calls; the only one that runs on a GPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

BACKENDS = ("c", "numpy", "torch")
_MAX_M = 64  # the C kernel keeps one M-vector on the stack

_C_SOURCE = r"""/* Sequential loops of the fused shPLRNN rollout (dsrecon.fast), forward and backward through time.
 * Row vectors, C order. K models, T steps, B windows, M latent, L hidden:
 *   z1 (K,B,M), A (K,M), W1 (K,M,L), W2t (K,M,L) = W2^T, h1 (K,M), h2 (K,L), alpha (K,T), Q (K,M,M),
 *   ac (K,T,B,M), Zt, Z, G (K,T,B,M); gradients dz1 (K,B,M) and dA, dW1, dW2t, dh1, dh2 (shapes
 *   as the parameters, zeroed by the caller). clipped = 1: phi = relu(u + h2) - relu(u); 0: relu(u + h2).
 * Forward:  zt = z + a_t (z Q - z) + ac_t;  u = zt W2t;  z' = A * zt + phi(u) W1^T + h1.
 * Backward (u recomputed from zt, so only O(T B M) is stored), lam = dL/dz':
 *   s = lam W1;  gu = s * (1[u + h2 > 0] - clipped 1[u > 0]);  dh2 += s * 1[u + h2 > 0];
 *   dW1 += lam^T phi;  dW2t += zt^T gu;  dA += lam * zt;  dh1 += lam;
 *   lt = A * lam + gu W2t^T;  lam <- G_{t-1} + lt + a_t (lt Q^T - lt).
 * Denormals are flushed (FTZ/DAZ) inside the calls; the caller's MXCSR is restored on return.
 */
#include <stddef.h>
#include <string.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#define SAVE_FTZ unsigned int csr_ = _mm_getcsr(); _mm_setcsr(csr_ | 0x8040);
#define RESTORE_FTZ _mm_setcsr(csr_);
#else
#define SAVE_FTZ
#define RESTORE_FTZ
#endif
#define MAXM 64
#define IDX(k, t, T) ((size_t)(k) * (T) + (t))

#define DEFINE_KERNELS(REAL, SUF)                                                                   \
/* u = zt W2t (L) for one window; phi and the two ReLU masks from it */                             \
static void hidden_##SUF(int M, int L, const REAL *zt, const REAL *W2t, REAL *u) {                  \
    for (int l = 0; l < L; ++l) u[l] = 0;                                                           \
    for (int m = 0; m < M; ++m) {                                                                   \
        const REAL zm = zt[m];                                                                      \
        const REAL *wr = W2t + (size_t)m * L;                                                       \
        _Pragma("omp simd")                                                                         \
        for (int l = 0; l < L; ++l) u[l] += zm * wr[l];                                             \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
int forward_##SUF(int K, int T, int B, int M, int L, int clipped, const REAL *z1, const REAL *A,   \
                  const REAL *W1, const REAL *W2t, const REAL *h1, const REAL *h2,                  \
                  const REAL *alpha, const REAL *Q, const REAL *ac, REAL *Zt, REAL *Z, REAL *u,     \
                  REAL *phi) {                                                                      \
    if (M > MAXM) return 1;                                                                         \
    SAVE_FTZ                                                                                        \
    const REAL cl = clipped ? 1 : 0;                                                                \
    for (int k = 0; k < K; ++k) {                                                                   \
        const REAL *Ak = A + (size_t)k * M, *w1 = W1 + (size_t)k * M * L;                           \
        const REAL *w2 = W2t + (size_t)k * M * L, *h1k = h1 + (size_t)k * M;                        \
        const REAL *h2k = h2 + (size_t)k * L, *q = Q + (size_t)k * M * M;                           \
        for (int t = 0; t < T; ++t) {                                                               \
            const REAL a = alpha[IDX(k, t, T)];                                                     \
            const REAL *zp = t == 0 ? z1 + (size_t)k * B * M : Z + IDX(k, t - 1, T) * B * M;       \
            const REAL *act = ac + IDX(k, t, T) * B * M;                                            \
            REAL *ztt = Zt + IDX(k, t, T) * B * M, *zn = Z + IDX(k, t, T) * B * M;                 \
            for (int b = 0; b < B; ++b) {                                                           \
                const REAL *zb = zp + (size_t)b * M;                                                \
                REAL *zt = ztt + (size_t)b * M;                                                     \
                for (int m = 0; m < M; ++m) {                                                       \
                    REAL zq = 0;                                                                    \
                    for (int j = 0; j < M; ++j) zq += zb[j] * q[j * M + m];                         \
                    zt[m] = zb[m] + a * (zq - zb[m]) + act[b * M + m];                              \
                }                                                                                   \
                hidden_##SUF(M, L, zt, w2, u);                                                      \
                _Pragma("omp simd")                                                                 \
                for (int l = 0; l < L; ++l) {                                                       \
                    const REAL p = u[l] + h2k[l];                                                   \
                    phi[l] = (p > 0 ? p : 0) - cl * (u[l] > 0 ? u[l] : 0);                          \
                }                                                                                   \
                for (int m = 0; m < M; ++m) {                                                       \
                    const REAL *wr = w1 + (size_t)m * L;                                            \
                    REAL acc = 0;                                                                   \
                    _Pragma("omp simd reduction(+:acc)")                                            \
                    for (int l = 0; l < L; ++l) acc += phi[l] * wr[l];                              \
                    zn[b * M + m] = Ak[m] * zt[m] + acc + h1k[m];                                   \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    RESTORE_FTZ                                                                                     \
    return 0;                                                                                       \
}                                                                                                   \
                                                                                                    \
int backward_##SUF(int K, int T, int B, int M, int L, int clipped, const REAL *G, const REAL *Zt,  \
                   const REAL *A, const REAL *W1, const REAL *W2t, const REAL *h2,                  \
                   const REAL *alpha, const REAL *Q, REAL *dz1, REAL *dA, REAL *dW1, REAL *dW2t,    \
                   REAL *dh1, REAL *dh2, REAL *lam, REAL *u, REAL *s) {                             \
    if (M > MAXM) return 1;                                                                         \
    SAVE_FTZ                                                                                        \
    const REAL cl = clipped ? 1 : 0;                                                                \
    REAL lt[MAXM], lb[MAXM];                                                                        \
    for (int k = 0; k < K; ++k) {                                                                   \
        const REAL *Ak = A + (size_t)k * M, *w1 = W1 + (size_t)k * M * L;                           \
        const REAL *w2 = W2t + (size_t)k * M * L, *h2k = h2 + (size_t)k * L;                        \
        const REAL *q = Q + (size_t)k * M * M;                                                      \
        REAL *dAk = dA + (size_t)k * M, *dw1 = dW1 + (size_t)k * M * L;                             \
        REAL *dw2 = dW2t + (size_t)k * M * L, *dh1k = dh1 + (size_t)k * M;                          \
        REAL *dh2k = dh2 + (size_t)k * L;                                                           \
        memcpy(lam, G + IDX(k, T - 1, T) * B * M, sizeof(REAL) * B * M);                            \
        for (int t = T - 1; t >= 0; --t) {                                                          \
            const REAL a = alpha[IDX(k, t, T)];                                                     \
            const REAL *ztt = Zt + IDX(k, t, T) * B * M;                                            \
            const REAL *g = t > 0 ? G + IDX(k, t - 1, T) * B * M : NULL;                            \
            REAL *out = t > 0 ? lam : dz1 + (size_t)k * B * M;                                      \
            for (int b = 0; b < B; ++b) {                                                           \
                const REAL *zt = ztt + (size_t)b * M;                                               \
                for (int m = 0; m < M; ++m) lb[m] = lam[b * M + m];                                 \
                hidden_##SUF(M, L, zt, w2, u);                                                      \
                for (int l = 0; l < L; ++l) s[l] = 0;                                               \
                for (int m = 0; m < M; ++m) {                                                       \
                    const REAL lm = lb[m];                                                          \
                    const REAL *wr = w1 + (size_t)m * L;                                            \
                    REAL *dwr = dw1 + (size_t)m * L;                                                \
                    _Pragma("omp simd")                                                             \
                    for (int l = 0; l < L; ++l) {                                                   \
                        const REAL p = u[l] + h2k[l];                                               \
                        s[l] += lm * wr[l];                                                         \
                        dwr[l] += lm * ((p > 0 ? p : 0) - cl * (u[l] > 0 ? u[l] : 0));              \
                    }                                                                               \
                    dAk[m] += lm * zt[m];                                                           \
                    dh1k[m] += lm;                                                                  \
                }                                                                                   \
                _Pragma("omp simd")                                                                 \
                for (int l = 0; l < L; ++l) {                                                       \
                    const REAL s1 = u[l] + h2k[l] > 0 ? s[l] : 0;                                   \
                    dh2k[l] += s1;                                                                  \
                    s[l] = s1 - (cl > 0 && u[l] > 0 ? s[l] : 0);                                    \
                }                                                                                   \
                for (int m = 0; m < M; ++m) {                                                       \
                    const REAL zm = zt[m];                                                          \
                    const REAL *wr = w2 + (size_t)m * L;                                            \
                    REAL *dwr = dw2 + (size_t)m * L;                                                \
                    REAL acc = 0;                                                                   \
                    _Pragma("omp simd reduction(+:acc)")                                            \
                    for (int l = 0; l < L; ++l) {                                                   \
                        dwr[l] += zm * s[l];                                                        \
                        acc += s[l] * wr[l];                                                        \
                    }                                                                               \
                    lt[m] = Ak[m] * lb[m] + acc;                                                    \
                }                                                                                   \
                for (int m = 0; m < M; ++m) {                                                       \
                    REAL lq = 0;                                                                    \
                    for (int j = 0; j < M; ++j) lq += lt[j] * q[m * M + j];                         \
                    out[b * M + m] = (g ? g[b * M + m] : 0) + lt[m] + a * (lq - lt[m]);             \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    RESTORE_FTZ                                                                                     \
    return 0;                                                                                       \
}

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)
"""

_CFLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-std=c99", "-shared", "-fPIC"]
_LIB = None  # the loaded ctypes library, or the reason it could not be built (str)


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


def _build_library() -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (set CC or install gcc)")
    key = hashlib.sha1("\n".join([_C_SOURCE, " ".join(_CFLAGS), cc, _cpu_signature()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"shplrnn_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src = Path(tmp) / "shplrnn.c"
            src.write_text(_C_SOURCE)
            out = Path(tmp) / "shplrnn.so"
            proc = subprocess.run([cc, *_CFLAGS, str(src), "-o", str(out)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling the fused kernel with {cc} failed:\n{proc.stderr[-2000:]}")
            os.replace(out, target)  # atomic: concurrent builders never see a half-written file
    lib = ctypes.CDLL(str(target))
    ptr = ctypes.c_void_p
    for name in ("forward_f32", "forward_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] * 6 + [ptr] * 13
        getattr(lib, name).restype = ctypes.c_int
    for name in ("backward_f32", "backward_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] * 6 + [ptr] * 17
        getattr(lib, name).restype = ctypes.c_int
    return lib


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
def forward(backend: str, z1, A, W1, W2t, h1, h2, clipped: bool, alpha, Q, ac):
    """Forward recursion (module docstring); all inputs contiguous, one dtype. Returns ``(Zt, Z)``,
    the forced states z~_1..z~_T and the unforced states z_2..z_{T+1}, each ``(K, T, B, M)``."""
    K, T, B, M = ac.shape
    L = W1.shape[-1]
    if backend == "c":
        Zt, Z = torch.empty_like(ac), torch.empty_like(ac)
        lib = c_library()
        fn = lib.forward_f32 if ac.dtype == torch.float32 else lib.forward_f64
        u, phi = torch.empty(L, dtype=ac.dtype), torch.empty(L, dtype=ac.dtype)
        if fn(K, T, B, M, L, int(clipped), *map(_ptr, (z1, A, W1, W2t, h1, h2, alpha, Q, ac, Zt, Z, u, phi))):
            raise ValueError(f"the 'c' backend supports latent_dim <= {_MAX_M}, got {M}; use backend='numpy'")
        return Zt, Z
    Wbig, bias, W1c = stack_weights(A, W1, W2t, h1, h2, clipped)
    return _forward_stacked(backend, z1, Wbig, bias, W1c, alpha, Q, ac)


def backward(backend: str, G, Zt, A, W1, W2t, h1, h2, clipped: bool, alpha, Q):
    """Adjoint recursion (module docstring). Returns ``(dz1 (K,B,M), dA, dW1, dW2t, dh1, dh2)``."""
    K, T, B, M = G.shape
    L = W1.shape[-1]
    if backend == "c":
        lib = c_library()
        fn = lib.backward_f32 if G.dtype == torch.float32 else lib.backward_f64
        dz1 = torch.empty((K, B, M), dtype=G.dtype)
        dA, dW1, dW2t, dh1, dh2 = (torch.zeros_like(p) for p in (A, W1, W2t, h1, h2))
        lam, u, s = torch.empty(B * M, dtype=G.dtype), torch.empty(L, dtype=G.dtype), torch.empty(L, dtype=G.dtype)
        if fn(K, T, B, M, L, int(clipped), *map(_ptr, (G, Zt, A, W1, W2t, h2, alpha, Q, dz1, dA, dW1, dW2t,
                                                       dh1, dh2, lam, u, s))):
            raise ValueError(f"the 'c' backend supports latent_dim <= {_MAX_M}, got {M}; use backend='numpy'")
        return dz1, dA, dW1, dW2t, dh1, dh2
    Wbig, bias, W1c = stack_weights(A, W1, W2t, h1, h2, clipped)
    dz1, dWbig, db, dW1c = _backward_stacked(backend, G, Zt, Wbig, bias, W1c, alpha, Q)
    R = W1c.shape[-1]
    dA = torch.diagonal(dWbig[:, :, R:], dim1=1, dim2=2)  # (K, M)
    dW2t = dWbig[:, :, :L] + dWbig[:, :, L:R] if clipped else dWbig[:, :, :L]  # (K, M, L)
    dW1 = dW1c[:, :, :L] - dW1c[:, :, L:] if clipped else dW1c  # (K, M, L)
    return dz1, dA, dW1, dW2t, db[:, R:], db[:, :L]


# ----------------------------------------------------------------------------- NumPy / PyTorch loops
def _forward_stacked(backend: str, z1, Wbig, bias, W1c, alpha, Q, ac) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward recursion on the stacked weights (:func:`stack_weights`). Returns ``(Zt, Z)``."""
    K, T, B, M = ac.shape
    R = W1c.shape[-1]
    Zt = torch.empty_like(ac)  # (K, T, B, M) forced states z~_1 .. z~_T
    Z = torch.empty_like(ac)  # (K, T, B, M) unforced states z_2 .. z_{T+1}
    if backend == "numpy":
        z1n, Wn, bn, W1n, an, Qn, acn, Ztn, Zn = (t.numpy() for t in (z1, Wbig, bias, W1c, alpha, Q, ac, Zt, Z))
        W1t = np.ascontiguousarray(W1n.transpose(0, 2, 1))  # (K, R, M)
        bn = bn[:, None, :]  # (K, 1, D)
        a = an[:, :, None, None]  # (K, T, 1, 1)
        z = z1n
        for t in range(T):
            zt = Ztn[:, t]  # (K, B, M)
            np.matmul(z, Qn, out=zt)
            zt -= z
            zt *= a[:, t]
            zt += z
            zt += acn[:, t]
            v = np.matmul(zt, Wn)  # (K, B, D)
            v += bn
            z = Zn[:, t]
            np.matmul(np.maximum(v[..., :R], 0), W1t, out=z)
            z += v[..., R:]
    else:
        W1t = W1c.transpose(1, 2)  # (K, R, M)
        a = alpha[:, :, None, None]  # (K, T, 1, 1)
        z = z1
        for t in range(T):
            zt = Zt[:, t]
            zt.copy_(z + a[:, t] * (torch.bmm(z, Q) - z) + ac[:, t])  # (K, B, M)
            v = torch.baddbmm(bias[:, None, :], zt, Wbig)  # (K, B, D)
            z = Z[:, t]
            z.copy_(torch.baddbmm(v[..., R:], torch.relu(v[..., :R]), W1t))  # (K, B, M)
    return Zt, Z


def _backward_stacked(backend: str, G, Zt, Wbig, bias, W1c, alpha, Q):
    """Adjoint recursion on the stacked weights. Returns ``(dz1 (K,B,M), dWbig (K,M,D), db (K,D),
    dW1c (K,M,R))``."""
    K, T, B, M = G.shape
    R = W1c.shape[-1]
    D = R + M
    # numpy / torch: pre-activations for all steps at once, then the recursion storing dL/dv
    V = torch.baddbmm(bias[:, None, :], Zt.reshape(K, T * B, M), Wbig).reshape(K, T, B, D)  # (K, T, B, D)
    GV = torch.empty_like(V)  # (K, T, B, D)
    if backend == "numpy":
        Gn, Vn, GVn, Wn, W1n, Qn, an = (t.numpy() for t in (G, V, GV, Wbig, W1c, Q, alpha))
        WT, QT = np.ascontiguousarray(Wn.transpose(0, 2, 1)), np.ascontiguousarray(Qn.transpose(0, 2, 1))
        mask = Vn[..., :R] > 0  # (K, T, B, R)
        a = an[:, :, None, None]  # (K, T, 1, 1)
        lam = Gn[:, T - 1].copy()  # (K, B, M)
        for t in range(T - 1, -1, -1):
            gv = GVn[:, t]  # (K, B, D)
            np.matmul(lam, W1n, out=gv[..., :R])
            gv[..., :R] *= mask[:, t]
            gv[..., R:] = lam
            lt = np.matmul(gv, WT)  # (K, B, M)
            lam = np.matmul(lt, QT)
            lam -= lt
            lam *= a[:, t]
            lam += lt
            if t > 0:
                lam += Gn[:, t - 1]
        dz1 = torch.from_numpy(lam)
    else:
        mask = V[..., :R] > 0  # (K, T, B, R)
        a = alpha[:, :, None, None]  # (K, T, 1, 1)
        WT, QT = Wbig.transpose(1, 2), Q.transpose(1, 2)
        lam = G[:, T - 1]
        for t in range(T - 1, -1, -1):
            gv = GV[:, t]  # (K, B, D)
            gv[..., :R].copy_(torch.bmm(lam, W1c) * mask[:, t])
            gv[..., R:].copy_(lam)
            lt = torch.bmm(gv, WT)  # (K, B, M)
            lam = lt + a[:, t] * (torch.bmm(lt, QT) - lt)
            if t > 0:
                lam = lam + G[:, t - 1]
        dz1 = lam
    gv = GV.reshape(K, T * B, D)
    dWbig = Zt.reshape(K, T * B, M).transpose(1, 2) @ gv  # (K, M, D)
    db = gv.sum(1)  # (K, D)
    dW1c = GV[..., R:].reshape(K, T * B, M).transpose(1, 2) @ V[..., :R].clamp(min=0).reshape(K, T * B, R)
    return dz1, dWbig, db, dW1c  # dW1c (K, M, R)
