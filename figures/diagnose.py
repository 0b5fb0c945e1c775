"""The figure of `dpolab diagnose`: displacement and predicted learning time per group, and the
synthetic twin's held-out risk against Q with both bounds' Q*."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after dpolab.figures.style selected the Agg backend)
import numpy as np

from dpolab.figures.style import figure_context, save, write_csv


def plot_diagnosis(report: dict, out_dir) -> list[Path]:
    """`diagnosis.{pdf,png,csv}` (per group: displaced fraction, predicted time) and, when the twin
    ran, `diagnosis_twin.csv` (its risk per Q).

    Args:
      report: the dict `dpolab.diagnose.run_diagnose` writes to report.json. out_dir: folder.
    """
    groups = report["data"]["groups"]
    labels = [g or "(all)" for g in groups]
    displaced = np.asarray(report["displacement"]["per_group"], dtype=np.float64)
    times = np.asarray([report["learning_order"]["predicted_time"][g] for g in groups], dtype=np.float64)
    tw = report["twin"]
    with figure_context():
        fig, axes = plt.subplots(1, 3, figsize=(9.6, 2.9))
        y = np.arange(len(groups))
        axes[0].barh(y, 100 * displaced, color="C3")
        axes[0].set(yticks=y, yticklabels=[t[:24] for t in labels], xlabel="displaced records (%)",
                    title="chosen log-prob falls, margin grows")
        axes[1].barh(y, times, color="C0")
        level = report["learning_order"]["level"]
        axes[1].set(yticks=y, yticklabels=[], xlabel=f"predicted t to mean margin {level:.3g}",
                    title="learning order (shorter: earlier)")
        ax = axes[2]
        if tw["ran"]:
            q = np.asarray([r["Q"] for r in tw["rows"]], dtype=np.float64)
            risk = np.asarray([r["risk"] for r in tw["rows"]])
            lo, hi = (np.asarray([r[k] for r in tw["rows"]]) for k in ("cp_low", "cp_high"))
            ax.errorbar(q, risk, yerr=[risk - lo, hi - risk], fmt="o-", color="k", label="twin (95% CP)")
            ax.axhline(report["threshold"], color="C1", ls="--", label=f"threshold {report['threshold']:g}")
            for name, style in (("simplified", ":"), ("refined", "-.")):
                qs = report["samples_per_value"][name]
                if qs is not None:
                    ax.axvline(qs, color="C2", ls=style, label=f"Q* {name} bound = {qs}")
            ax.set(xscale="log", xlabel="samples per cluster Q", ylabel="held-out risk", title="synthetic twin")
            ax.legend(fontsize="x-small")
        else:
            ax.text(0.5, 0.5, "twin not run:\nconditions not measurable", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
        fig.tight_layout()
        paths = save(fig, out_dir, "diagnosis", {"group_index": np.arange(len(groups), dtype=np.float64),
                                                  "displaced_fraction": displaced, "predicted_time": times})
    if tw["ran"]:
        paths.append(write_csv(Path(out_dir) / "diagnosis_twin.csv",
                               {k: [r[k] for r in tw["rows"]] for k in ("Q", "errors", "n", "risk", "cp_low",
                                                                       "cp_high")}))
    return paths
