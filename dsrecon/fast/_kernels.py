"""The two time recursions of the fused shPLRNN rollout, in three interchangeable backends.

Only the sequential part of the rollout lives here; :mod:`dsrecon.fast.fused_plrnn` builds the
inputs and maps the gradients back to the model's parameters. Shapes (K models, T steps, B windows,
M latent, R relu units, D = R + M; row vectors)::

    forward(z1 (K,B,M), Wbig (K,M,D), bias (K,D), W1c (K,M,R), alpha (K,T), Q (K,M,M),
            ac (K,T,B,M)) -> (Zt, Z), both (K,T,B,M)
        zt_t    = z_t + alpha_t (z_t Q - z_t) + ac_t       forced state z~_t
        v_t     = zt_t Wbig + bias
        z_{t+1} = relu(v_t[:R]) W1c^T + v_t[R:]
    backward(G (K,T,B,M), Zt, Wbig, bias, W1c, alpha, Q) -> (dz1, dWbig, db, dW1c)
        gv_t  = [(lam_{t+1} W1c) * 1[v_t[:R] > 0], lam_{t+1}]          dL/dv_t
        lam_t = G_{t-1} + lt + alpha_t (lt Q^T - lt),  lt = gv_t Wbig^T   dL/dz_t
        dWbig = sum zt_t^T gv_t,  db = sum gv_t,  dW1c = sum lam_{t+1}^T relu(v_t[:R])

Backends
--------
``"c"``
    A small C kernel compiled once with the system C compiler (``cc -O3 -march=native``) into a
    per-user cache (``$DSRECON_CACHE`` or ``~/.cache/dsrecon``) and called through ``ctypes``:
    no per-step interpreter overhead, ``v`` recomputed in the backward pass so only the states
    (O(T B M)) are stored, gradients accumulated in the loop. It flushes denormals (FTZ/DAZ)
    inside the call and restores the caller's floating-point state on return.
``"numpy"``
    The same loops with NumPy calls (about 1 microsecond each); no compiler needed.
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
 * Row vectors, C order. K models, T steps, B windows, M latent, R relu units, D = R + M:
 *   z1 (K,B,M), Wbig (K,M,D), bias (K,D), W1c (K,M,R), alpha (K,T), Q (K,M,M), ac (K,T,B,M),
 *   Zt, Z, G (K,T,B,M), dz1 (K,B,M), dWbig (K,M,D), db (K,D), dW1c (K,M,R).
 * Forward:  zt = z + a_t (z Q - z) + ac_t;  v = zt Wbig + bias;  z' = relu(v[:R]) W1c^T + v[R:].
 * Backward (v recomputed from zt, so only O(T B M) is stored):
 *   gv = [(lam W1c) * 1[v[:R] > 0], lam];  dW1c += lam^T relu(v[:R]);  dWbig += zt^T gv;  db += gv;
 *   lt = gv Wbig^T;  lam <- G_{t-1} + (1 - a_t) lt + a_t lt Q^T.
 * Denormals are flushed (FTZ/DAZ) inside the calls; the caller's MXCSR is restored on return.
 * Gradient outputs dWbig, db, dW1c must be zeroed by the caller.
 */
#include <stddef.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#define SAVE_FTZ unsigned int csr_ = _mm_getcsr(); _mm_setcsr(csr_ | 0x8040);
#define RESTORE_FTZ _mm_setcsr(csr_);
#else
#define SAVE_FTZ
#define RESTORE_FTZ
#endif
#define MAXM 64
#define IDX3(k, t, T) ((size_t)(k) * (T) + (t))

#define DEFINE_KERNELS(REAL, SUF)                                                                   \
static void hidden_##SUF(int M, int D, const REAL *zt, const REAL *W, const REAL *bias, REAL *v) { \
    for (int d = 0; d < D; ++d) v[d] = bias[d];                                                     \
    for (int m = 0; m < M; ++m) {                                                                   \
        const REAL zm = zt[m];                                                                      \
        const REAL *wr = W + (size_t)m * D;                                                         \
        _Pragma("omp simd")                                                                         \
        for (int d = 0; d < D; ++d) v[d] += zm * wr[d];                                             \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
int forward_##SUF(int K, int T, int B, int M, int R, const REAL *z1, const REAL *Wbig,             \
                  const REAL *bias, const REAL *W1c, const REAL *alpha, const REAL *Q,              \
                  const REAL *ac, REAL *Zt, REAL *Z, REAL *v) {                                     \
    if (M > MAXM) return 1;                                                                         \
    SAVE_FTZ                                                                                        \
    const int D = R + M;                                                                            \
    for (int k = 0; k < K; ++k) {                                                                   \
        const REAL *W = Wbig + (size_t)k * M * D, *bk = bias + (size_t)k * D;                       \
        const REAL *w1 = W1c + (size_t)k * M * R, *q = Q + (size_t)k * M * M;                       \
        for (int t = 0; t < T; ++t) {                                                               \
            const REAL a = alpha[IDX3(k, t, T)];                                                    \
            const REAL *zp = t == 0 ? z1 + (size_t)k * B * M : Z + IDX3(k, t - 1, T) * B * M;      \
            const REAL *act = ac + IDX3(k, t, T) * B * M;                                           \
            REAL *ztt = Zt + IDX3(k, t, T) * B * M, *zn = Z + IDX3(k, t, T) * B * M;               \
            for (int b = 0; b < B; ++b) {                                                           \
                const REAL *zb = zp + (size_t)b * M;                                                \
                REAL *zt = ztt + (size_t)b * M;                                                     \
                for (int m = 0; m < M; ++m) {                                                       \
                    REAL zq = 0;                                                                    \
                    for (int j = 0; j < M; ++j) zq += zb[j] * q[j * M + m];                         \
                    zt[m] = zb[m] + a * (zq - zb[m]) + act[b * M + m];                              \
                }                                                                                   \
                hidden_##SUF(M, D, zt, W, bk, v);                                                   \
                for (int m = 0; m < M; ++m) {                                                       \
                    const REAL *wr = w1 + (size_t)m * R;                                            \
                    REAL acc = 0;                                                                   \
                    _Pragma("omp simd reduction(+:acc)")                                            \
                    for (int r = 0; r < R; ++r) acc += (v[r] > 0 ? v[r] : 0) * wr[r];               \
                    zn[b * M + m] = v[R + m] + acc;                                                 \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    RESTORE_FTZ                                                                                     \
    return 0;                                                                                       \
}                                                                                                   \
                                                                                                    \
int backward_##SUF(int K, int T, int B, int M, int R, const REAL *G, const REAL *Zt,               \
                   const REAL *Wbig, const REAL *bias, const REAL *W1c, const REAL *alpha,          \
                   const REAL *Q, REAL *dz1, REAL *dWbig, REAL *db, REAL *dW1c, REAL *lam,         \
                   REAL *v, REAL *gv) {                                                             \
    if (M > MAXM) return 1;                                                                         \
    SAVE_FTZ                                                                                        \
    const int D = R + M;                                                                            \
    REAL lt[MAXM];                                                                                  \
    for (int k = 0; k < K; ++k) {                                                                   \
        const REAL *W = Wbig + (size_t)k * M * D, *bk = bias + (size_t)k * D;                       \
        const REAL *w1 = W1c + (size_t)k * M * R, *q = Q + (size_t)k * M * M;                       \
        REAL *dW = dWbig + (size_t)k * M * D, *dbk = db + (size_t)k * D;                            \
        REAL *dw1 = dW1c + (size_t)k * M * R;                                                       \
        const REAL *g_last = G + IDX3(k, T - 1, T) * B * M;                                         \
        for (int i = 0; i < B * M; ++i) lam[i] = g_last[i];                                         \
        for (int t = T - 1; t >= 0; --t) {                                                          \
            const REAL a = alpha[IDX3(k, t, T)];                                                    \
            const REAL *ztt = Zt + IDX3(k, t, T) * B * M;                                           \
            const REAL *g = t > 0 ? G + IDX3(k, t - 1, T) * B * M : NULL;                           \
            REAL *out = t > 0 ? lam : dz1 + (size_t)k * B * M;                                      \
            for (int b = 0; b < B; ++b) {                                                           \
                const REAL *zt = ztt + (size_t)b * M;                                               \
                const REAL *lb = lam + (size_t)b * M;                                               \
                hidden_##SUF(M, D, zt, W, bk, v);                                                   \
                for (int r = 0; r < R; ++r) gv[r] = 0;                                              \
                for (int m = 0; m < M; ++m) {                                                       \
                    const REAL lm = lb[m];                                                          \
                    const REAL *wr = w1 + (size_t)m * R;                                            \
                    REAL *dwr = dw1 + (size_t)m * R;                                                \
                    _Pragma("omp simd")                                                             \
                    for (int r = 0; r < R; ++r) {                                                   \
                        gv[r] += lm * wr[r];                                                        \
                        dwr[r] += lm * (v[r] > 0 ? v[r] : 0);                                       \
                    }                                                                               \
                    gv[R + m] = lm;                                                                 \
                }                                                                                   \
                _Pragma("omp simd")                                                                 \
                for (int r = 0; r < R; ++r) gv[r] = v[r] > 0 ? gv[r] : 0;                           \
                _Pragma("omp simd")                                                                 \
                for (int d = 0; d < D; ++d) dbk[d] += gv[d];                                        \
                for (int m = 0; m < M; ++m) {                                                       \
                    const REAL zm = zt[m];                                                          \
                    const REAL *wr = W + (size_t)m * D;                                             \
                    REAL *dwr = dW + (size_t)m * D;                                                 \
                    REAL acc = 0;                                                                   \
                    _Pragma("omp simd reduction(+:acc)")                                            \
                    for (int d = 0; d < D; ++d) {                                                   \
                        dwr[d] += zm * gv[d];                                                       \
                        acc += gv[d] * wr[d];                                                       \
                    }                                                                               \
                    lt[m] = acc;                                                                    \
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
    return Path(os.environ.get("DSRECON_CACHE", Path.home() / ".cache" / "dsrecon")) / "kernels"


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
        getattr(lib, name).argtypes = [ctypes.c_int] * 5 + [ptr] * 10
        getattr(lib, name).restype = ctypes.c_int
    for name in ("backward_f32", "backward_f64"):
        getattr(lib, name).argtypes = [ctypes.c_int] * 5 + [ptr] * 13
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


# ----------------------------------------------------------------------------- forward
def forward(backend: str, z1, Wbig, bias, W1c, alpha, Q, ac) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward recursion (module docstring). All inputs contiguous, one dtype. Returns ``(Zt, Z)``."""
    K, T, B, M = ac.shape
    R = W1c.shape[-1]
    Zt = torch.empty_like(ac)  # (K, T, B, M) forced states z~_1 .. z~_T
    Z = torch.empty_like(ac)  # (K, T, B, M) unforced states z_2 .. z_{T+1}
    if backend == "c":
        lib = c_library()
        fn = lib.forward_f32 if ac.dtype == torch.float32 else lib.forward_f64
        v = torch.empty(R + M, dtype=ac.dtype)
        if fn(K, T, B, M, R, *map(_ptr, (z1, Wbig, bias, W1c, alpha, Q, ac, Zt, Z, v))):
            raise ValueError(f"the 'c' backend supports latent_dim <= {_MAX_M}, got {M}; use backend='numpy'")
    elif backend == "numpy":
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


# ----------------------------------------------------------------------------- backward
def backward(backend: str, G, Zt, Wbig, bias, W1c, alpha, Q):
    """Adjoint recursion (module docstring). Returns ``(dz1 (K,B,M), dWbig (K,M,D), db (K,D),
    dW1c (K,M,R))``."""
    K, T, B, M = G.shape
    R = W1c.shape[-1]
    D = R + M
    if backend == "c":
        lib = c_library()
        fn = lib.backward_f32 if G.dtype == torch.float32 else lib.backward_f64
        dz1 = torch.empty((K, B, M), dtype=G.dtype)
        dWbig, db, dW1c = torch.zeros_like(Wbig), torch.zeros_like(bias), torch.zeros_like(W1c)
        lam, v, gv = torch.empty(B * M, dtype=G.dtype), torch.empty(D, dtype=G.dtype), torch.empty(D, dtype=G.dtype)
        if fn(K, T, B, M, R, *map(_ptr, (G, Zt, Wbig, bias, W1c, alpha, Q, dz1, dWbig, db, dW1c, lam, v, gv))):
            raise ValueError(f"the 'c' backend supports latent_dim <= {_MAX_M}, got {M}; use backend='numpy'")
        return dz1, dWbig, db, dW1c
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
