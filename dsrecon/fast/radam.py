r"""``FusedRAdam``: :class:`torch.optim.RAdam` whose update runs as one C loop over all parameters.

A training update of a small model (a shPLRNN has a few hundred parameters; an ensemble of K of
them a few thousand) spends its ``torch.optim.RAdam.step`` (``foreach=True``) in a dozen
multi-tensor calls and their Python bookkeeping, for microseconds of arithmetic. The
C loop (``dsrecon/fast/csrc/radam.c``, ``radam_f32/f64``) does the same per-element operations in
the order of torch's multi-tensor implementation (Liu et al. 2020, "On the Variance of the Adaptive
Learning Rate and Beyond"): rounding may differ from torch's in the last bit, the optimizer state
(``step``, ``exp_avg``, ``exp_avg_sq``), its ``state_dict`` and the learning-rate schedulers are
torch's own, so checkpoints move freely between the two. Options or tensors the loop does not
cover (weight decay, ``maximize``, ``capturable``, ``differentiable``, a tensor learning rate,
non-CPU, non-contiguous or sparse tensors, mixed dtypes, no C compiler) run torch's own step.
"""

from __future__ import annotations

import ctypes

import torch
from torch.autograd.graph import increment_version

from dsrecon.fast import _kernels


class FusedRAdam(torch.optim.RAdam):
    """``torch.optim.RAdam`` (same arguments) with a one-call C update where it applies (module docstring)."""

    @torch.no_grad()
    def step(self, closure=None):
        """One RAdam update of every parameter with a gradient; returns ``closure()``'s loss, if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        calls = self._fused_calls()
        if calls is None:  # torch's own step (the closure has run already)
            super().step()
            return loss
        for group, params, states, dtype, step_dtype in calls:
            n = len(params)
            ptrs = ctypes.c_void_p * n
            beta1, beta2 = group["betas"]
            fn = self._lib.radam_f32 if dtype == torch.float32 else self._lib.radam_f64
            fn(n, ptrs(*(p.data_ptr() for p in params)), ptrs(*(p.grad.data_ptr() for p in params)),
               ptrs(*(st["exp_avg"].data_ptr() for st in states)), ptrs(*(st["exp_avg_sq"].data_ptr() for st in states)),
               (ctypes.c_longlong * n)(*(p.numel() for p in params)), ptrs(*(st["step"].data_ptr() for st in states)),
               int(step_dtype == torch.float64), float(group["lr"]), float(beta1), float(beta2), float(group["eps"]))
            # the writes went through raw pointers: bump the version counters as torch's in-place
            # update does, so autograd's saved-tensor check and caches keyed on them see the change
            increment_version([t for p, st in zip(params, states)
                               for t in (p, st["exp_avg"], st["exp_avg_sq"], st["step"])])
        return loss

    def _fused_calls(self):
        """Per parameter group (params with a gradient, their states, dtype, step dtype), or None
        when any group needs torch's step."""
        if not _kernels.available(stacklevel=3):  # warns once: torch's step runs
            return None
        self._lib = _kernels.c_library()
        calls = []
        for group in self.param_groups:
            if (group["weight_decay"] != 0 or group["maximize"] or group["capturable"] or group["differentiable"]
                    or isinstance(group["lr"], torch.Tensor)):
                return None
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            dtype = params[0].dtype
            if dtype not in (torch.float32, torch.float64) or not all(
                    p.dtype == dtype and p.device.type == "cpu" and p.is_contiguous() and not p.grad.is_sparse
                    and p.grad.dtype == dtype and p.grad.is_contiguous() for p in params):
                return None
            states = [self._state_of(p) for p in params]
            step_dtype = states[0]["step"].dtype
            # the C loop reads numel(p) elements through each pointer: every array must match p
            if not all(p.grad.shape == p.shape for p in params) or step_dtype not in (torch.float32, torch.float64) or any(
                    st["step"].dtype != step_dtype or st["step"].device.type != "cpu" or st["step"].numel() != 1
                    or any(not isinstance(st[key], torch.Tensor) or st[key].shape != p.shape or st[key].dtype != dtype
                           or st[key].device.type != "cpu" or not st[key].is_contiguous()
                           for key in ("exp_avg", "exp_avg_sq")) for p, st in zip(params, states)):
                return None
            calls.append((group, params, states, dtype, step_dtype))
        return calls

    def _state_of(self, p: torch.Tensor) -> dict:
        """The parameter's RAdam state, created as torch's RAdam creates it on its first step."""
        state = self.state[p]
        if len(state) == 0:
            scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            state["step"] = torch.tensor(0.0, dtype=scalar)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state
