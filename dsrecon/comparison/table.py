"""The results of a grid: per-run records, the table aggregated over seeds, and a figure.

Statistics per (model, forcing, dataset) over the seeds whose run finished: mean, standard error
of the mean (``std(ddof=1) / sqrt(n)``, empty for one run) and median, each over the finite
values (a run whose generated orbit left the data's range has D_stsp = NaN; such runs are counted
in ``n_nonfinite`` rather than silently averaged in or dropped).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsrecon.comparison.runner import ERROR, RESULT, SAMPLE, load_part
from dsrecon.trials import continuous_series

# column name -> (table heading, what it is)
METRICS = {
    "d_stsp": ("D_stsp", "state-space divergence (KL), test data vs generated"),
    "d_h": ("D_H", "mean Hellinger distance of the smoothed power spectra"),
    "pe": ("PE(20)", "mean squared 20-step prediction error"),
    "lambda_max_error": ("lambda_max err", "abs(lambda_max(model) - lambda_max(data)), per time unit"),
    "train_time_s": ("train time [s]", "wall-clock training time of one run"),
}


def run_record(spec, run_dir: Path, lambda_ref: float = float("nan")) -> dict:
    """One row per run: identity, status and (if finished) its numbers.

    ``lambda_max_error = |lambda_max_model - lambda_max_data|`` with the run's own data estimate
    if its evaluation made one, else ``lambda_ref``, the dataset's reference value.
    """
    rec = {"model": spec.model["label"], "forcing": spec.forcing["label"], "dataset": spec.dataset["label"],
           "seed": spec.seed, "key": spec.key, "run_dir": str(run_dir), "status": "pending"}
    if (run_dir / RESULT).is_file():
        res = json.loads((run_dir / RESULT).read_text())
        metrics = {k: _num(v) for k, v in res["metrics"].items()}
        if not math.isfinite(metrics["lambda_max_data"]):
            metrics["lambda_max_data"] = float(lambda_ref)
        metrics["lambda_max_error"] = abs(metrics["lambda_max_model"] - metrics["lambda_max_data"])
        rec.update(status="done", n_params=res["n_params"], train_time_s=_num(res["train_time_s"]),
                   collapsed=bool(res.get("collapsed", False)), **metrics)
    elif (run_dir / ERROR).is_file():
        err = json.loads((run_dir / ERROR).read_text())
        rec.update(status="failed", error=f"{err['stage']}: {err['error_type']}: {err['error']}")
    return rec


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _stats(values) -> dict:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"mean": float("nan"), "sem": float("nan"), "median": float("nan")}
    sem = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return {"mean": float(v.mean()), "sem": sem, "median": float(np.median(v))}


def aggregate(runs: list[dict]) -> list[dict]:
    """Rows per (model, forcing, dataset) in first-appearance order."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["forcing"], r["dataset"]), []).append(r)
    rows = []
    for (model, forcing, dataset), members in groups.items():
        done = [r for r in members if r["status"] == "done"]
        row = {"model": model, "forcing": forcing, "dataset": dataset, "n_runs": len(members),
               "n_done": len(done), "n_failed": sum(r["status"] == "failed" for r in members),
               "n_nonfinite": sum(any(not math.isfinite(r[m]) for m in ("d_stsp", "d_h", "pe")) for r in done),
               "n_collapsed": sum(bool(r.get("collapsed")) for r in done),
               "n_params": done[0]["n_params"] if done else None}
        for m in METRICS:
            for stat, value in _stats([r[m] for r in done]).items():
                row[f"{m}_{stat}"] = value
        rows.append(row)
    return rows


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}"


@dataclass
class CompareResult:
    """What ``dsrecon.compare`` returns: aggregated rows, per-run records and bookkeeping.

    Attributes
    ----------
    rows : list of dict
        One per (model, forcing, dataset): ``n_runs, n_done, n_failed, n_nonfinite, n_collapsed, n_params`` and
        ``<metric>_mean``, ``<metric>_sem``, ``<metric>_median`` for each metric in ``METRICS``.
    runs : list of dict
        One per run: labels, seed, status (done/failed/pending), metrics or error, folder.
    out_dir : Path or None
        Where results.csv, results.md, runs.csv and figures were written.
    n_executed, n_skipped : int
        Runs executed by this call, and runs skipped because their result.json already existed.
    """

    rows: list = field(default_factory=list)
    runs: list = field(default_factory=list)
    out_dir: Path | None = None
    n_executed: int = 0
    n_skipped: int = 0
    title: str = "grid"

    @property
    def n_failed(self) -> int:
        return sum(r["status"] == "failed" for r in self.runs)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.runs if r["status"] == "failed"]

    def to_csv(self, path=None) -> str:
        """The aggregated table as CSV (written to ``path`` if given); NaN as an empty cell."""
        return _csv(self.rows, path)

    def runs_to_csv(self, path=None) -> str:
        """The per-run records as CSV."""
        return _csv(self.runs, path)

    def to_markdown(self) -> str:
        """The aggregated table as Markdown: mean ± standard error (median) over seeds."""
        head = ["model", "forcing", "dataset", "runs ok/failed", *(METRICS[m][0] for m in METRICS), "params"]
        lines = [f"## {self.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r["model"], r["forcing"], r["dataset"], f"{r['n_done']}/{r['n_failed']}"]
            for m in METRICS:
                mean, sem, med = r[f"{m}_mean"], r[f"{m}_sem"], r[f"{m}_median"]
                cells.append(f"{_fmt(mean)} ± {_fmt(sem, 2)} ({_fmt(med)})" if math.isfinite(mean) else "-")
            cells.append(str(r["n_params"]) if r["n_params"] is not None else "-")
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines += ["", "Cells: mean ± standard error (median) over the seeds whose run finished; "
                  "'-': no finite value.", "", *(f"- {METRICS[m][0]}: {METRICS[m][1]}" for m in METRICS)]
        nonfinite = sum(r["n_nonfinite"] for r in self.rows)
        if nonfinite:
            lines.append(f"- {nonfinite} finished run(s) had an undefined (NaN) D_stsp, D_H or PE: a diverged "
                         "orbit, or a fixed point (constant output), whose power spectrum is undefined; "
                         "statistics use the finite values only.")
        collapsed = [f"{r['model']} / {r['forcing']}: {r['n_collapsed']} of {r['n_done']}" for r in self.rows
                     if r.get("n_collapsed")]
        if collapsed:
            lines.append("- collapsed orbits (the generated series' std below 25 % of the data's in most "
                         "dimensions: a fixed point or a small orbit): " + "; ".join(collapsed) + ".")
        if self.failed:
            lines += ["", "Failed runs:"]
            lines += [f"- {r['model']} / {r['forcing']} / {r['dataset']} / seed {r['seed']}: {r['error']}"
                      for r in self.failed]
        return "\n".join(lines) + "\n"

    def save(self, out_dir) -> None:
        out_dir = Path(out_dir)
        self.to_csv(out_dir / "results.csv")
        self.runs_to_csv(out_dir / "runs.csv")
        (out_dir / "results.md").write_text(self.to_markdown())


def _csv(records: list[dict], path=None) -> str:
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    text = buf.getvalue()
    if path is not None:
        Path(path).write_text(text)
    return text


def plot_comparison(result: CompareResult, data_dirs: dict, path) -> list[Path]:
    """Attractors (top row) and power spectra of the first coordinate (bottom row) per dataset.

    One column for the test data and one per (model, forcing) with the first finished seed's
    free-running sample. With several datasets each gets ``<stem>_<dataset><suffix>``. Returns the
    paths written (empty if matplotlib is not installed).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    from dsrecon.metrics import power_spectrum

    path = Path(path)
    datasets = [d for d in dict.fromkeys(r["dataset"] for r in result.runs) if d in data_dirs]  # prepared ones
    written = []
    for dataset in datasets:
        x_true = continuous_series(load_part(data_dirs[dataset], "test")).x[:5000]  # (T, N)
        samples = {}
        for r in result.runs:
            if r["dataset"] == dataset and r["status"] == "done":
                samples.setdefault(f"{r['model']}\n{r['forcing']}", np.load(Path(r["run_dir"]) / SAMPLE))
        cols = [("data", x_true), *samples.items()]
        fig, axes = plt.subplots(2, len(cols), figsize=(2.6 * len(cols), 5.2), squeeze=False)
        spec_true = power_spectrum(x_true)[:, 0].numpy()
        for j, (name, x) in enumerate(cols):
            ax = axes[0, j]
            a, b = (x[:, 0], x[:, -1]) if x.shape[1] > 1 else (x[:-1, 0], x[1:, 0])
            ax.plot(a, b, lw=0.3, color="k" if j == 0 else "C0")
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax = axes[1, j]
            ax.semilogy(spec_true, color="k", lw=0.8, label="data")
            if j > 0:
                if np.all(np.isfinite(x)) and np.all(np.ptp(x, axis=0) > 0):
                    ax.semilogy(power_spectrum(x)[:, 0].numpy(), color="C0", lw=0.8, label="model")
                else:  # a diverged orbit, or a fixed point (constant in some coordinate): no spectrum
                    ax.text(0.5, 0.5, "no spectrum:\nconstant or\nnon-finite output", fontsize=7,
                            ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel("frequency bin", fontsize=7)
            ax.tick_params(labelsize=6)
        axes[1, 0].legend(fontsize=6)
        fig.suptitle(f"{result.title}: {dataset}", fontsize=9)
        fig.tight_layout()
        target = path.with_name(f"{path.stem}_{dataset}{path.suffix}") if len(datasets) > 1 else path
        fig.savefig(target, dpi=120)
        plt.close(fig)
        written.append(target)
    return written


__all__ = ["CompareResult", "aggregate", "run_record", "plot_comparison", "METRICS"]
