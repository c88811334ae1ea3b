"""``DataTransform``: the map between a user's data units and a model's coordinates.

A fitted model never sees the data as recorded: ``dsrecon.fit`` z-scores each channel with the
training part's mean and std, then (for a scalar or two-channel series) delay-embeds it
(``dsrecon.preparation``). A ``DataTransform`` holds exactly what that took, so that what the model
generates can be read in the data's own units and new data can be fed to the model:

* ``to_model(x)``: raw ``(..., T, N)`` -> ``(..., T - max(delays), k N)``, ``x_emb[t] =
  ((x[t + d_0] - mean) / std, ..., (x[t + d_{k-1}] - mean) / std)`` (columns delay-major, as
  :func:`dsrecon.embedding.delay_embed`);
* ``to_data(x_model)``: model coordinates ``(..., k N)`` -> data units ``(..., N)``, read from the
  block of the smallest delay (``x[t + d_min]`` at model step ``t``) and unstandardized;
* ``latest_to_data(x_model)``: the same from the block of the largest delay, the newest sample a
  model vector holds (what a forecast needs).

Without an embedding (``delays = (0,)``) the two readings coincide and ``to_model`` is the
z-score alone. Arithmetic is float64 throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DataTransform"]


@dataclass(frozen=True)
class DataTransform:
    """Standardization, delay embedding, sampling interval and channel names of a fitted series.

    Attributes
    ----------
    mean, std : np.ndarray, shape ``(N,)``, float64
        Per raw channel, in the data's units (the training part's statistics); ``std > 0``.
    delays : tuple of int
        Embedding lags in samples, in the model's column order (``(0,)``: no embedding).
    dt : float
        Sampling interval in the data's time unit (1 when unknown, see ``dt_known``).
    dt_known : bool
        False when time is counted in samples: rates (Lyapunov exponents) are then per step.
    channels : tuple of str
        Names of the N raw channels (``x0``, ``x1``, ... when the data had none).
    """

    mean: np.ndarray
    std: np.ndarray
    delays: tuple = (0,)
    dt: float = 1.0
    dt_known: bool = True
    channels: tuple = ()

    def __post_init__(self):
        mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if mean.shape != std.shape or mean.size == 0:
            raise ValueError(f"mean and std must be two vectors of one value per channel, got shapes "
                             f"{mean.shape} and {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError("mean must be finite and std finite and positive in every channel")
        delays = tuple(int(d) for d in self.delays)
        if not delays or min(delays) < 0 or len(set(delays)) != len(delays):
            raise ValueError(f"delays must be distinct non-negative integers, got {self.delays}")
        channels = tuple(str(c) for c in self.channels) or tuple(f"x{i}" for i in range(mean.size))
        if len(channels) != mean.size:
            raise ValueError(f"{len(channels)} channel names for {mean.size} channels")
        if not float(self.dt) > 0:
            raise ValueError(f"dt must be positive, got {self.dt}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "delays", delays)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "dt", float(self.dt))
        object.__setattr__(self, "dt_known", bool(self.dt_known))

    @classmethod
    def identity(cls, n_channels: int, **kwargs) -> "DataTransform":
        """No standardization (mean 0, std 1) and no embedding: data units are model coordinates."""
        return cls(np.zeros(n_channels), np.ones(n_channels), **kwargs)

    # ----------------------------------------------------------------- sizes
    @property
    def n_channels(self) -> int:
        """N, the raw channels the data has."""
        return self.mean.size

    @property
    def model_dim(self) -> int:
        """``k N``, the columns the model observes."""
        return self.mean.size * len(self.delays)

    @property
    def span(self) -> int:
        """Raw samples one model vector covers, ``max(delays) + 1``."""
        return max(self.delays) + 1

    def describe_channels(self) -> str:
        return f"{self.n_channels} channel(s) ({', '.join(self.channels)})"

    # ----------------------------------------------------------------- maps
    def check_raw(self, x, what: str) -> np.ndarray:
        """``x`` as a float64 array ``(..., T, N)`` with ``T >= span``, finite, of this width; or a clear error."""
        arr = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else getattr(x, "x", x),
                         dtype=np.float64)
        if arr.ndim == 1 and self.n_channels == 1 and arr.size >= self.span:
            arr = arr[:, None]
        if arr.ndim < 2 or arr.shape[-1] != self.n_channels:
            raise ValueError(f"{what} has shape {arr.shape}, but the reconstruction was fitted on "
                             f"{self.describe_channels()}: give an array (T, {self.n_channels}) in the data's "
                             f"units, the channels in that order")
        if arr.shape[-2] < self.span:
            need = (f"the embedding's delays {list(self.delays)} need T >= {self.span} samples"
                    if self.span > 1 else "need T >= 1 sample")
            raise ValueError(f"{what} has T = {arr.shape[-2]} time steps; {need}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} holds {int(np.sum(~np.isfinite(arr)))} non-finite values; remove or "
                             "interpolate them first")
        return arr

    def to_model(self, x) -> np.ndarray:
        """Raw data ``(..., T, N)`` in data units -> model coordinates ``(..., T - max(delays), k N)``, float64."""
        arr = self.check_raw(x, "the data")
        z = (arr - self.mean) / self.std  # (..., T, N)
        n_out = z.shape[-2] - self.span + 1
        return np.concatenate([z[..., d:d + n_out, :] for d in self.delays], axis=-1)  # (..., T', k N)

    def _block(self, x_model: torch.Tensor, delay: int) -> torch.Tensor:
        if x_model.shape[-1] != self.model_dim:
            raise ValueError(f"model output has {x_model.shape[-1]} columns, this transform maps {self.model_dim}")
        i = self.delays.index(delay)
        n = self.n_channels
        x = x_model[..., i * n:(i + 1) * n].to(torch.float64)  # (..., N)
        mean = torch.as_tensor(self.mean, device=x.device)
        std = torch.as_tensor(self.std, device=x.device)
        return x * std + mean

    def to_data(self, x_model: torch.Tensor) -> torch.Tensor:
        """Model coordinates ``(..., k N)`` -> data units ``(..., N)`` (float64), from the smallest delay's block."""
        return self._block(x_model, min(self.delays))

    def latest_to_data(self, x_model: torch.Tensor) -> torch.Tensor:
        """As :meth:`to_data` from the largest delay's block: the newest raw sample a model vector holds."""
        return self._block(x_model, max(self.delays))

    # ----------------------------------------------------------------- storage
    def to_dict(self) -> dict:
        """JSON-ready (mean and std as lists of floats, exact through JSON)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "delays": list(self.delays), "dt": self.dt,
                "dt_known": self.dt_known, "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, d: dict) -> "DataTransform":
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64),
                   tuple(d.get("delays", (0,))), d.get("dt", 1.0), d.get("dt_known", True),
                   tuple(d.get("channels", ())))
