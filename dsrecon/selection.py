r"""Model selection by validation: keep the parameters of the epoch whose free run scored best.

Late in a run the free-running orbit of a reconstruction can flip between attractors from one
epoch to the next while the one-step loss hardly moves (the GTF paper's ECG: between the heartbeat
cycle, D_stsp ~3, and a fixed point, ~15, at learning rates below 1e-5). Which side the last epoch
lands on is then chance. Keeping the parameters whose free run matched a validation series best,
instead of the last ones, removes that chance as far as the validation series can tell the two
apart. Both loops of :func:`dsrecon.train` (one model, and each member of an ensemble) use
:class:`BestByValidation` on their validation records (``TrainConfig.select``).

The score is the validation D_stsp (lower is better), with D_H as the tie-breaker of equal D_stsp;
a record whose D_stsp or D_H is not finite (a diverged run, or a constant output, which has no
power spectrum) never wins.
"""

from __future__ import annotations

import math

import torch

SELECTIONS = ("last", "best_val")


def validation_score(record: dict) -> tuple[float, float]:
    """``(D_stsp, D_H)`` of a validation record, ``(inf, inf)`` where either is missing or not finite."""
    d_stsp, d_h = record.get("d_stsp"), record.get("d_h")
    if d_stsp is None or d_h is None or not (math.isfinite(d_stsp) and math.isfinite(d_h)):
        return math.inf, math.inf
    return float(d_stsp), float(d_h)


class BestByValidation:
    """The best validation score seen so far in a run, its epoch and a copy of the parameters then.

    Attributes
    ----------
    score : tuple of float
        ``validation_score`` of the best record, ``(inf, inf)`` before any finite one.
    epoch : int or None
        Epoch of that record.
    state : dict or None
        ``state_dict`` of the model at that epoch (detached copies).
    """

    def __init__(self):
        self.score, self.epoch, self.state = (math.inf, math.inf), None, None

    def offer(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        """Keep ``model``'s parameters if ``record`` scores better than the best so far; True if kept."""
        score = validation_score(record)
        if not score < self.score:
            return False
        self.score, self.epoch = score, int(epoch)
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def state_dict(self) -> dict:
        return {"score": list(self.score), "epoch": self.epoch, "state": self.state}

    def load_state_dict(self, state: dict) -> None:
        self.score, self.epoch, self.state = tuple(state["score"]), state["epoch"], state["state"]
