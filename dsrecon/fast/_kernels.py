"""The C kernel of the shPLRNN's time recursions, and the growth bound's Jacobian norms.

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
    identity_step(z1, A, W1, W2t, h1, h2, clipped, alpha, Q, c, X (K,B,T+1,N), scale)
        forward, the identity observation's squared error and dL/dZ, and backward of each model
        in one call (one model's three passes on one thread, while its arrays are in cache)

The kernel (``dsrecon/fast/csrc/``) is compiled once with the system C compiler
(``cc -O3 -march=native``) into a per-user cache and called through ``ctypes``; building, caching
and loading are :mod:`dsrecon.fast._build`'s, and every wrapper below checks its arrays' dtype,
shape, device and contiguity before the call (``ValueError`` naming the argument). No per-step
interpreter overhead; ``u`` recomputed in the backward pass so only the states (O(T B M)) are
stored; the clipped difference of ReLUs evaluated from one product ``zt W2t``. Windows are
processed in blocks of 16 with every per-window quantity stored window-innermost, so the inner
loops are fixed-length SIMD loops (no horizontal sums; weight gradients summed per lane over
chunks of 4 stored steps, reduced once per block). For float32 the latent sizes M <= 8, 10, 12, 16
are compile-time constants (fully unrolled M-loops). The K models of an ensemble run on the
threads of a persistent pool that sleeps between calls after a 50-microsecond spin
(:func:`set_kernel_threads`); each thread takes the next model not yet taken, so a thread that
wakes late takes fewer. It flushes denormals (FTZ/DAZ) inside the call and restores the caller's
floating-point state on return.

The kernel takes float32/float64 CPU tensors with M <= 64. Where it cannot run (no C compiler or
a failed build, other devices, larger M: :func:`unsupported`, :func:`available`), the shPLRNN
trains and runs on the generic paths (the affine-forcing rollout, the batched autograd member
stack, the eager ``generate`` loop), which are slower; without a compiler that is said once per
process, in one line.
"""

from __future__ import annotations

import ctypes
import os
import warnings

import numpy as np
import torch

from dsrecon.fast import _build

_MAX_M = 64  # the C kernel keeps one M-vector on the stack

_LIB = None  # the loaded ctypes library, or the reason it could not be built (str)
_THREADS: int | None = None  # kernel threads over the K models (None: every core this process may use)


def set_kernel_threads(n: int | None) -> None:
    """Threads the C kernel uses across the K models of an ensemble (None: all usable cores).

    One model always runs on one thread (its time loop is sequential); with K models the kernel
    hands models to up to ``n`` threads. Set 1 when other processes already occupy the cores.
    """
    global _THREADS
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"kernel threads must be a positive integer or None, got {n!r}")
    _THREADS = n


def kernel_threads() -> int:
    """The thread count the next kernel call uses (see :func:`set_kernel_threads`)."""
    if _THREADS is not None:
        return _THREADS
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def c_library():
    """The compiled kernel library, built (or taken from the verified cache) on first use;
    ``RuntimeError`` with a one-line reason if it cannot be (see :mod:`dsrecon.fast._build`)."""
    global _LIB
    if _LIB is None:
        try:
            _LIB = _build.build_library()
        except (RuntimeError, OSError) as err:
            _LIB = str(err)
    if isinstance(_LIB, str):
        raise RuntimeError(f"the C kernel is unavailable: {_LIB}")
    return _LIB


_WARNED_FALLBACK = False


def available(stacklevel: int = 2) -> bool:
    """Whether the C kernel builds (or is built) here. When it does not, the first call in this
    process warns once, in one line, that the generic paths run instead and how to get the kernel;
    ``stacklevel`` as for :func:`warnings.warn`, counted from the caller of this function."""
    global _WARNED_FALLBACK
    try:
        c_library()
        return True
    except RuntimeError as err:
        if not _WARNED_FALLBACK:
            _WARNED_FALLBACK = True
            warnings.warn(f"{err}; dsrecon runs its generic autograd paths instead (slower); install a C compiler "
                          "or point $CC at one to use the kernel", RuntimeWarning, stacklevel=stacklevel + 1)
        return False


def unsupported(device: torch.device, dtype: torch.dtype, latent_dim: int) -> str | None:
    """Why the C kernel cannot take a shPLRNN's tensors (device, dtype, latent size), or None when
    it can; checks the arguments only, never builds the library (see :func:`available`)."""
    if torch.device(device).type != "cpu":
        return f"the kernel runs on the CPU, the tensors are on {device}"
    if dtype not in (torch.float32, torch.float64):
        return f"the kernel takes float32 or float64, got {dtype}"
    if latent_dim > _MAX_M:
        return f"the kernel supports latent_dim <= {_MAX_M}, got {latent_dim}"
    return None


def usable(device: torch.device, dtype: torch.dtype, latent_dim: int, stacklevel: int = 2) -> bool:
    """Whether the C kernel runs a shPLRNN with these tensors here: :func:`unsupported` finds
    nothing and the library builds (:func:`available`, which warns once when it does not)."""
    return unsupported(device, dtype, latent_dim) is None and available(stacklevel + 1)


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _check_args(kernel: str, dtype: torch.dtype, **args) -> None:
    """Raise ``ValueError`` naming the argument unless every ``name=(tensor, shape)`` is a
    contiguous CPU tensor of ``dtype`` (float32 or float64) and exactly that shape: the C kernel
    reads and writes through the raw pointers, so a wrong array must never reach it."""
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{kernel}: the C kernel takes float32 or float64 tensors, got {dtype}")
    for name, (t, shape) in args.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{kernel}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != dtype or not t.is_cpu or t.shape != shape or not t.is_contiguous():
            raise ValueError(
                f"{kernel}: {name} must be a contiguous CPU {dtype} tensor of shape {tuple(shape)}, got "
                f"{'a non-contiguous ' if not t.is_contiguous() else ''}{t.device} {t.dtype} tensor of shape "
                f"{tuple(t.shape)}")


def _dims(kernel: str, **args) -> None:
    """``ValueError`` unless each ``name=(tensor, ndim)`` is a tensor with ``ndim`` dimensions
    (checked before its sizes are read)."""
    for name, (t, ndim) in args.items():
        if not isinstance(t, torch.Tensor) or t.dim() != ndim:
            got = f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{kernel}: {name} must be a {ndim}-D tensor, got {got}")


def _check_status(status: int, M: int) -> None:
    if status == 1:
        raise ValueError(f"the C kernel supports latent_dim <= {_MAX_M}, got {M}")
    if status:
        raise MemoryError("the C kernel could not allocate its scratch memory")


# ----------------------------------------------------------------------------- the kernel's entry points
def forward(z1, A, W1, W2t, h1, h2, clipped: bool, alpha, Q, c):
    """Forward recursion (module docstring); all inputs contiguous CPU tensors of one dtype.
    ``c (K, B, Tc, M)`` holds the data term of steps 0..Tc-1 (only the first T = ``alpha.shape[1]``
    are read). Returns ``(Zt, Z)``, the forced states z~_1..z~_T and the unforced states
    z_2..z_{T+1}, each ``(K, B, T, M)``."""
    _dims("forward", alpha=(alpha, 2), c=(c, 4), W1=(W1, 3))
    K, T = alpha.shape
    _, B, Tc, M = c.shape
    L = W1.shape[-1]
    if Tc < T:
        raise ValueError(f"c covers {Tc} steps, the recursion needs T = {T}")
    _check_args("forward", c.dtype, z1=(z1, (K, B, M)), A=(A, (K, M)), W1=(W1, (K, M, L)), W2t=(W2t, (K, M, L)),
                h1=(h1, (K, M)), h2=(h2, (K, L)), alpha=(alpha, (K, T)), Q=(Q, (K, M, M)), c=(c, (K, B, Tc, M)))
    Zt = torch.empty((K, B, T, M), dtype=c.dtype)
    Z = torch.empty_like(Zt)
    lib = c_library()
    fn = lib.forward_f32 if c.dtype == torch.float32 else lib.forward_f64
    status = fn(K, T, B, M, L, Tc, int(clipped), kernel_threads(),
                *map(_ptr, (z1, A, W1, W2t, h1, h2, alpha, Q, c, Zt, Z)))
    _check_status(status, M)
    return Zt, Z


def backward(G, Zt, A, W1, W2t, h1, h2, clipped: bool, alpha, Q):
    """Adjoint recursion (module docstring); ``G, Zt (K, B, T, M)``. Returns ``(dz1 (K,B,M), dA, dW1,
    dW2t, dh1, dh2)``."""
    _dims("backward", G=(G, 4), W1=(W1, 3))
    K, B, T, M = G.shape
    L = W1.shape[-1]
    _check_args("backward", G.dtype, G=(G, (K, B, T, M)), Zt=(Zt, (K, B, T, M)), A=(A, (K, M)), W1=(W1, (K, M, L)),
                W2t=(W2t, (K, M, L)), h1=(h1, (K, M)), h2=(h2, (K, L)), alpha=(alpha, (K, T)), Q=(Q, (K, M, M)))
    lib = c_library()
    fn = lib.backward_f32 if G.dtype == torch.float32 else lib.backward_f64
    dz1 = torch.empty((K, B, M), dtype=G.dtype)
    dA, dW1, dW2t, dh1, dh2 = (torch.zeros_like(p) for p in (A, W1, W2t, h1, h2))
    status = fn(K, T, B, M, L, int(clipped), kernel_threads(),
                *map(_ptr, (G, Zt, A, W1, W2t, h2, alpha, Q, dz1, dA, dW1, dW2t, dh1, dh2)))
    _check_status(status, M)
    return dz1, dA, dW1, dW2t, dh1, dh2


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
    _dims("identity_step", alpha=(alpha, 2), c=(c, 4), X=(X, 4), W1=(W1, 3))
    K, T = alpha.shape
    _, B, Tc, M = c.shape
    N, L = X.shape[-1], W1.shape[-1]
    if Tc < T or X.shape != (K, B, T + 1, N):
        raise ValueError(f"need c covering T = {T} steps and X of shape ({K}, {B}, {T + 1}, N), "
                         f"got c {tuple(c.shape)}, X {tuple(X.shape)}")
    _check_args("identity_step", c.dtype, z1=(z1, (K, B, M)), A=(A, (K, M)), W1=(W1, (K, M, L)), W2t=(W2t, (K, M, L)),
                h1=(h1, (K, M)), h2=(h2, (K, L)), alpha=(alpha, (K, T)), Q=(Q, (K, M, M)), c=(c, (K, B, Tc, M)),
                X=(X, (K, B, T + 1, N)))
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
    (callers check :func:`usable` first and take PyTorch's eigensolver otherwise).
    """
    _dims("jacobian_norms", z=(z, 3), W1=(W1, 3))
    K, S, M = z.shape
    L = W1.shape[-1]
    _check_args("jacobian_norms", z.dtype, z=(z, (K, S, M)), A=(A, (K, M)), W1=(W1, (K, M, L)), W2t=(W2t, (K, M, L)),
                h2=(h2, (K, L)))
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
    apply (no C compiler, another device or dtype, a non-contiguous tensor): callers use torch then.
    CPU tensors load (or build) the library on the first call, as the optimizer's first step would,
    so a run's first gradient norm is computed as its later ones are.
    """
    tensors = list(tensors)
    if not tensors:
        return None
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64) or not all(
            t.dtype == dtype and t.is_cpu and t.is_contiguous() and t.dim() > 0 and t.shape[0] == K for t in tensors):
        return None
    if not available(stacklevel=3):  # no compiler: warned once
        return None
    lib = c_library()
    n = len(tensors)
    sumsq, finite = np.empty(K, dtype=np.float64), np.empty(K, dtype=np.bool_)  # bool_ is one byte
    fn = lib.stacked_sumsq_f32 if dtype == torch.float32 else lib.stacked_sumsq_f64
    fn(K, n, (ctypes.c_void_p * n)(*[t.data_ptr() for t in tensors]),
       (ctypes.c_longlong * n)(*[t.numel() for t in tensors]), sumsq.ctypes.data, finite.ctypes.data)
    return sumsq, finite
