"""Tables 1–2 of Im & Li: full fine-tuning test error and train reward margin against K.

Reproduces: [IL] Tables 1 and 2 (full fine-tuning of Mistral-7B and Qwen3-8B-Base on the persona
value sets, K ∈ {1, 2, 4, 8}) and the paper's statement that test error grows linearly in K with
R² ≈ 0.95 (Mistral) and 0.99 (Qwen).

What differs: nothing is trained here. Full fine-tuning of 7–8B models is far outside this
package's scale (CPU, Gemma-3-270M at most), so the table entries are the paper's reported numbers,
typed in from THEORY.md §1.8 (`REPORTED`), and only the regressions are recomputed from them:
least-squares fits of test error on K (`scipy.stats.linregress`), their R², and — for contrast with
the theory's Θ(log K) scaling law (THEORY §1.5) — a fit on log₂ K. With four points per model the
two shapes cannot be told apart (Mistral's log-K fit even has the higher R²); the item says so
rather than reading "linear" into four numbers. Llama-3.1-8B's R² ≈ 0.97 is quoted without its
table, so it is not refitted.

References:
    [IL] S. Im, S. Li, "Can DPO Learn Diverse Human Values? A Theoretical Scaling Law",
        arXiv 2408.03459 (v5), Tables 1–2; THEORY.md §1.8 (the numbers), §1.5 (scaling law).
"""
from __future__ import annotations

import numpy as np
from scipy import stats

NAME = "tables-full-ft"
TITLE = "Im & Li Tables 1-2: reported full-FT test error vs K, linear fits and R^2"

#: The paper's full fine-tuning numbers at the end of training, as stated in THEORY.md §1.8:
#: {model: (K, test error, train reward margin)}. Reported data, not outputs of this package.
REPORTED = {
    "Mistral-7B": ((1, 2, 4, 8), (0.0, 0.008, 0.036, 0.056), (1.991, 1.873, 1.848, 1.731)),
    "Qwen3-8B-Base": ((1, 2, 4, 8), (0.0, 0.027, 0.098, 0.183), (0.65, 0.60, 0.435, 0.232)),
}
#: R² of the linear fits of test error on K as the paper states them (THEORY §1.8).
REPORTED_R2 = {"Mistral-7B": 0.95, "Qwen3-8B-Base": 0.99}
#: Model order; the CSVs code a model by its index here (0 = Mistral-7B, 1 = Qwen3-8B-Base).
MODELS = tuple(REPORTED)


def linear_fit(x, y) -> dict:
    """Least-squares line y ≈ slope·x + intercept, with R² = rvalue² and the slope's stderr.

    Args:
        x, y: 1-D arrays of equal length ≥ 3 (x not all equal).

    Returns:
        dict of floats: slope, intercept, r2, slope_stderr.

    References:
        scipy.stats.linregress (ordinary least squares).
    """
    fit = stats.linregress(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return {"slope": float(fit.slope), "intercept": float(fit.intercept),
            "r2": float(fit.rvalue**2), "slope_stderr": float(fit.stderr)}


def compute(ctx) -> dict[str, np.ndarray]:
    """The reported table (per model) and the fits of test error on K and on log₂ K."""
    data = {"models": np.array(MODELS)}
    for i, model in enumerate(MODELS):
        K, err, margin = (np.asarray(a, dtype=np.float64) for a in REPORTED[model])
        data[f"K_{i}"], data[f"test_error_{i}"], data[f"train_margin_{i}"] = K, err, margin
        for tag, x in (("K", K), ("log2K", np.log2(K))):
            for key, value in linear_fit(x, err).items():
                data[f"fit_{tag}_{key}_{i}"] = np.float64(value)
        data[f"reported_r2_{i}"] = np.float64(REPORTED_R2[model])
    return data


def render(data, ctx) -> list:
    """tables_full_ft.{pdf,png,csv} (points + fit lines, the table) and tables_full_ft_fits.csv."""
    from dpolab.figures.repro_tables import plot_full_ft_tables

    models = [str(m) for m in data["models"]]
    table = {m: {k: data[f"{k}_{i}"] for k in ("K", "test_error", "train_margin")}
             for i, m in enumerate(models)}
    fits = {m: {tag: {key: float(data[f"fit_{tag}_{key}_{i}"])
                      for key in ("slope", "intercept", "r2", "slope_stderr")}
                for tag in ("K", "log2K")} | {"reported_r2": float(data[f"reported_r2_{i}"])}
            for i, m in enumerate(models)}
    return plot_full_ft_tables(table, fits, ctx.dir)
