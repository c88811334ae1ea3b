"""Checking a torch device name once, where the user gave it, with a message that says how to fix it."""

from __future__ import annotations

import torch


def check_device(device, what: str = "device") -> torch.device:
    """``torch.device(device)`` after checking that this torch build and machine can use it.

    Parameters
    ----------
    device : str or torch.device
        E.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    what : str
        How the user gave it (``"--device"``, ``"TrainConfig.device"``), for the message.

    Raises
    ------
    ValueError
        Unknown device name; CUDA asked for on a torch build without CUDA or with no visible GPU
        (or a GPU index beyond those present); MPS where it is not available.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{what} {device!r} is not a torch device ({err}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(f"{what} {device!r}: this torch build ({torch.__version__}) has no CUDA support; "
                             "use cpu, or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise ValueError(f"{what} {device!r}: no CUDA device is visible on this machine; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{what} {device!r}: only {torch.cuda.device_count()} CUDA device(s) are present "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{what} {device!r}: MPS is not available on this machine; use cpu")
    return dev
