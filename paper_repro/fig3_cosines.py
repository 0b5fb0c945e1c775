"""Im & Li (arXiv 2408.03459) Figures 3 and 6: cosine similarity of persona embeddings.

The paper embeds each persona's positive statements (" Yes" matches the behaviour) with
Llama-3.1-8B, averages them per persona and shows the cosine matrix of these means for its K = 16
set before (Fig. 3: all cosines high, a large shared component) and after removing the shared
mean (Fig. 6: cosines near 0 off the diagonal, i.e. values close to the theorem's orthogonal
c_k). Here the same statistics come from `dpolab.sims.llm.diagnose.embedding_structure` (rescaled to unit
norm on average, as in the paper's App. E), with the mean Frobenius norm of the per-persona
covariance and the mean squared distance to the persona mean beside the paper's 0.058 and 0.227.

What differs and why: the model is Gemma-3-270M (base, Q4_K_M dequantized, d = 640), not
Llama-3.1-8B (CPU, minutes, packaged); each persona contributes its first
`dpolab.paper_repro.real_sets.LIMIT` statements (200 in full mode, half of them positive) so that the
features are those extracted for `fig5_training_curves`; quick mode uses the first 4 personas of
the K = 16 set and 16 statements each. Needs the real track; without it the item is skipped.
"""
from __future__ import annotations

import numpy as np

from dpolab.figures.repro_curves import cosine_long_table, plot_cosine_matrices
from dpolab.figures.style import write_csv
from dpolab.items import Unavailable
from dpolab.paper_repro import real_sets
from dpolab.sims.llm.diagnose import embedding_structure

NAME = "fig3-cosines"
TITLE = ("Im & Li Fig. 3, 6: cosine matrices of the K = 16 personas' mean positive-statement "
         "embeddings before/after removing the shared mean (Gemma-3-270M)")

#: Summary statistics stored and written (keys of `embedding_structure`).
SUMMARY = ("mean_cosine_before", "mean_cosine_after", "covariance_frobenius", "mean_squared_distance")


def centred_floor(p: int) -> float:
    """Mean off-diagonal cosine of P ≥ 2 equal-norm vectors with zero sum: −1/(P−1).

    After the shared mean is removed the P persona means sum to zero, so Σ_{i≠j} u_i·u_j =
    −Σ_i ‖u_i‖²; with equal norms the mean off-diagonal cosine is exactly −1/(P−1) (the level
    "≈ 0" in the paper's Fig. 6 should be read against; −1/15 ≈ −0.067 for K = 16).
    """
    return -1.0 / (p - 1)


def compute(ctx) -> dict[str, np.ndarray]:
    reason = ctx.real_unavailable()
    if reason:
        raise Unavailable(reason)
    names = real_sets.cosine_personas(ctx)
    feats = real_sets.features(ctx, names)
    struct = embedding_structure([f.g.astype(np.float64) for f in feats], [f.label for f in feats])
    paper = struct["paper_llama_3_1_8b"]
    return {"personas": np.asarray(names), "cosine_before": struct["cosine_before"],
            "cosine_after": struct["cosine_after"],
            "n_positive": np.asarray([int((f.label > 0).sum()) for f in feats]),
            **{k: np.asarray(struct[k]) for k in SUMMARY},
            "paper_covariance_frobenius": np.asarray(paper["covariance_frobenius"]),
            "paper_mean_squared_distance": np.asarray(paper["mean_squared_distance"])}


def render(data, ctx):
    names = [str(n) for n in data["personas"]]
    minus = lambda x: f"{x:.2f}".replace("-", "−")
    titles = (f"before: persona means\nmean off-diagonal {minus(float(data['mean_cosine_before']))}",
              f"after: shared mean removed\nmean off-diagonal {minus(float(data['mean_cosine_after']))}\n"
              f"(equal norms: −1/(P−1) = {minus(centred_floor(len(names)))})")
    paths = plot_cosine_matrices(data["cosine_before"], data["cosine_after"],
                                 [real_sets.short_label(n) for n in names], titles, ctx.dir,
                                 "fig3_cosines",
                                 table=cosine_long_table(data["cosine_before"], data["cosine_after"]))
    summary = {"n_personas": [len(names)], **{k: [float(data[k])] for k in SUMMARY},
               "centred_equal_norm_mean_cosine": [centred_floor(len(names))],
               "paper_covariance_frobenius": [float(data["paper_covariance_frobenius"])],
               "paper_mean_squared_distance": [float(data["paper_mean_squared_distance"])]}
    paths.append(write_csv(ctx.dir / "fig3_cosines_summary.csv", summary))
    key = ctx.dir / "fig3_cosines_personas.csv"
    key.write_text("i,persona,n_positive\n" + "".join(
        f"{i},{n},{int(p)}\n" for i, (n, p) in enumerate(zip(names, data["n_positive"]))))
    return paths + [key]
