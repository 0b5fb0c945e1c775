"""Audit Q1 (issue #7): is the Θ(log K) samples-per-value law of Theorem 4.3 observable?

Q_emp(K) is the number of samples per value needed for test risk below a threshold. It is measured
in three regimes and compared with Q*(K) of both bounds (`dpolab.theory.im_li.q_star`):

- theorem regime: distinct tokens, v = 1/(32√Q), GD to τ_1 (every hypothesis of Theorem 4.2 but
  Q ≥ 40 on the smallest Q); plus the same model at a fixed v (v does not shrink with Q);
- shared Yes/No tokens at a fixed v (the paper's experiments: every value shares one pair, Z = K);
- real embeddings: Gemma-3-270M features of the paper's persona sets, Q statements per label
  subsampled per persona, the paper's last-layer protocol (Adam, lr 1e-3, β = 0.01, 100 steps).

Q_emp rule: the mean risk curve over Q (a geometric grid) is interpolated linearly in log Q at the
last crossing of the threshold (the smallest Q beyond which it stays below); its 95% interval is the
percentile bootstrap over seeds (resampled per grid cell). "≤ Q_min": below already at the smallest
Q (censored); "> Q_max": never below on the grid. A conservative check is the smallest grid Q from
which the pooled Clopper–Pearson upper end stays below the threshold. Fits of Q_emp on log K and
on K (least squares; slope 95% CI from the t distribution) use the K with an uncensored Q_emp.

Theory: with distinct tokens each value's rows see only its own samples and ηβ²/N =
log 3/(10 Q steps) does not depend on K, so a value's risk is K-independent: Q_emp(K) is flat. The
K in the bound comes from a union bound. With one shared pair the trained direction is Σ_k c_k and
a test sample carries noise along all K concepts: risk ≈ Φ(−1/(v√K)) for large Q, a K-dependent
floor that no Q removes.

References:
    [IL] S. Im, S. Li, arXiv 2408.03459: Theorem 4.3, the scaling law Q*(K) = Θ(log K), Figure 4;
    §5 / App. E (persona sets, last-layer protocol). THEORY.md §1.5, §1.8.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from dpolab.audit.common import im_li_spec
from dpolab.checks.result import CheckResult
from dpolab.errors import InputError
from dpolab.sims.risk import clopper_pearson
from dpolab.theory import im_li

NAME = "q1-log-k"
TITLE = "Q1. Is Θ(log K) observable? Samples per value needed vs the number of values K"
THRESHOLD = 0.05
#: Fixed dimension d = 5·Q_min: Theorem 4.2's d ≤ 5Q holds on the whole Q grid.
D, STEPS = 40, 50
#: Fixed noise levels (stated): distinct tokens reach the threshold near the middle of the Q grid
#: at 0.55; with one shared pair 0.15 puts the K-wall 1/(1.645 v)² ≈ 16 at the end of the K grid.
V_DISTINCT, V_SHARED = 0.55, 0.15
SIM = {False: dict(Ks=[1, 2, 4, 8, 16], Qs=[8, 16, 32, 64], seeds=16, n_test=100),
       True: dict(Ks=[1, 2], Qs=[8, 32], seeds=4, n_test=50)}
#: Real track: the paper's persona sets, the first `limit` statements of each persona (balanced
#: ±; the repro items' limits, so other questions can share `OUT/_features`; 28 personas × 200
#: statements ≈ 2.5 min of extraction on 2 idle cores), statements per label held out and
#: subsampled (Q) per persona, replicates.
REAL = {False: dict(Ks=[1, 2, 4, 8, 16], Qs=[1, 2, 5, 10, 20, 40, 80], hold=20, reps=16, limit=200),
        True: dict(Ks=[1, 2], Qs=[1, 2, 6], hold=2, reps=4, limit=16)}
#: Real threshold: the achievable error (with the whole pool, Q_max) plus this slack.
REAL_SLACK = 0.05
REGIMES = ("theorem", "distinct", "shared", "distinct_low_v", "distinct_worst")
#: the regimes whose risk is the worst of the K values (all values at once), not the mean
WORST = ("distinct_worst",)
N_BOOT = 2000


# ---- pure analysis -----------------------------------------------------------------------------

def crossing(qs, risk, threshold):
    """Q at which a risk curve falls below `threshold` for good, interpolated linearly in log Q.

    Args:
        qs: (n,) increasing grid. risk: (..., n) risk curves. threshold: scalar or (...,) array.

    Returns:
        (...,) float: qs[0] where the whole curve is below (censored: "≤ qs[0]"), inf where the
        last point is not below, else the log-linear interpolation between the last grid point at
        or above the threshold and the next one.
    """
    risk = np.asarray(risk, float)
    t = np.asarray(threshold, float)[..., None]
    logq = np.log(np.asarray(qs, float))
    above = risk >= t
    last = np.where(above.any(-1), above.shape[-1] - 1 - np.argmax(above[..., ::-1], -1), -1)
    nxt = np.clip(last + 1, 0, risk.shape[-1] - 1)
    a = np.take_along_axis(risk, np.clip(last, 0, None)[..., None], -1)[..., 0]
    b = np.take_along_axis(risk, nxt[..., None], -1)[..., 0]
    frac = np.where(a > b, (a - t[..., 0]) / np.where(a > b, a - b, 1.0), 0.0)
    inner = np.exp(logq[np.clip(last, 0, None)] + frac * (logq[nxt] - logq[np.clip(last, 0, None)]))
    return np.where(last < 0, qs[0], np.where(last == risk.shape[-1] - 1, np.inf, inner))


def bootstrap_crossing(qs, risk_seeds, threshold, *, n_boot=N_BOOT, seed=0, slack=None):
    """Q_emp of the seed-mean curve and its 95% percentile-bootstrap interval.

    Args:
        qs: (n,) grid. risk_seeds: (n, S) per-seed risks (seeds resampled per grid cell).
        threshold: absolute threshold, or None with `slack`: threshold = curve[-1] + slack (relative
            to the achievable error, recomputed in every bootstrap replicate).

    Returns:
        (estimate, low, high); low/high use the order statistics (no interpolation with inf).
    """
    x = np.asarray(risk_seeds, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[1], size=(n_boot,) + x.shape)
    boot = np.take_along_axis(x[None], idx, -1).mean(-1)
    mean = x.mean(-1)
    thr = (lambda c: c[..., -1] + slack) if threshold is None else (lambda c: threshold)
    reps = crossing(qs, boot, thr(boot))
    return (float(crossing(qs, mean, thr(mean))), float(np.quantile(reps, 0.025, method="lower")),
            float(np.quantile(reps, 0.975, method="higher")))


def grid_rule(qs, errors, n, threshold, level=0.95):
    """Smallest grid Q from which the Clopper–Pearson upper end of errors/n stays below threshold
    (inf if none). errors, n: (len(qs),) pooled counts."""
    ok = np.array([clopper_pearson(int(e), int(m), level)[1] < threshold for e, m in zip(errors, n)])
    good = np.flatnonzero(~ok)
    first = 0 if good.size == 0 else good[-1] + 1
    return float(qs[first]) if first < len(qs) else math.inf


def linear_fit(x, y):
    """Least squares y = a + b x: (slope, slope_lo, slope_hi, r2, n); NaN when n < 3 or x constant.

    The slope interval is slope ± t_{0.975, n−2}·SE (scipy.stats.linregress)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        return (np.nan,) * 4 + (float(n),)
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, n - 2) * fit.stderr
    return float(fit.slope), fit.slope - half, fit.slope + half, float(fit.rvalue**2), float(n)


def fits(Ks, q_emp, censored):
    """(2, 5) fits of the uncensored, finite Q_emp on log K (row 0) and on K (row 1)."""
    use = np.isfinite(q_emp) & ~np.asarray(censored, bool)
    Ks = np.asarray(Ks, float)
    return np.array([linear_fit(np.log(Ks[use]), q_emp[use]), linear_fit(Ks[use], q_emp[use])])


def summarize(qs, risk, n_per_seed, threshold=THRESHOLD, slack=None, seed=0):
    """Per-K risk curves, intervals and Q_emp of one regime.

    Args:
        qs: (nQ,). risk: (nK, nQ, S) per-seed error fractions. n_per_seed: (nK,) test samples per
        seed. threshold / slack: see `bootstrap_crossing`. seed: bootstrap seed.

    Returns:
        dict of mean, lo, hi (nK, nQ) pooled CP95; q_emp, q_lo, q_hi, censored, grid (nK,).
    """
    nK, nQ, S = risk.shape
    errors = np.rint(risk * np.asarray(n_per_seed, float)[:, None, None]).sum(-1)
    n = S * np.asarray(n_per_seed, float)[:, None] * np.ones(nQ)
    cp = np.array([[clopper_pearson(int(e), int(m)) for e, m in zip(er, nn)]
                   for er, nn in zip(errors, n)])
    q = np.array([bootstrap_crossing(qs, risk[k], threshold, slack=slack, seed=seed + k)
                  for k in range(nK)])
    thr = risk.mean(-1)[:, -1] + slack if threshold is None else np.full(nK, threshold)
    return {"mean": risk.mean(-1), "lo": cp[..., 0], "hi": cp[..., 1], "q_emp": q[:, 0],
            "q_lo": q[:, 1], "q_hi": q[:, 2], "threshold": thr,
            "censored": (risk.mean(-1)[:, 0] < thr).astype(float),
            "grid": np.array([grid_rule(qs, e, m, t) for e, m, t in zip(errors, n, thr)])}


# ---- experiments -------------------------------------------------------------------------------

def _spec(fixed, grid, seeds, chunk):
    return im_li_spec(fixed, grid, seeds=seeds, chunk_size=chunk)


def _cube(cols, Ks, Qs, seeds, metric="test_risk", **match):
    """(nK, nQ, S) `metric` of the rows matching `match`, ordered by K, Q, seed."""
    out = np.full((len(Ks), len(Qs), seeds), np.nan)
    rows = np.ones(len(cols["seed"]), bool)
    for key, value in match.items():
        rows &= cols[key] == value
    for r in np.flatnonzero(rows):
        out[Ks.index(int(cols["K"][r])), Qs.index(int(cols["Q"][r])), int(cols["seed"][r])] = \
            cols[metric][r]
    assert np.isfinite(out).all(), "sweep rows missing"
    return out


def simulated(ctx) -> dict:
    """The three simulated regimes (+ distinct tokens at the shared regime's v) via the sweep
    engine. The theorem sweep pads its chunks to the fixed-v sweep's shape so both compile once.
    K = 1 is one pair whatever the token mode, so the shared regime's K = 1 is the distinct
    sweep's K = 1 at the same v."""
    cfg = SIM[ctx.quick]
    Ks, Qs, S = cfg["Ks"], cfg["Qs"], cfg["seeds"]
    base = dict(d=D, steps=STEPS, n_test=cfg["n_test"])
    thm = ctx.sweep("distinct_theorem_v", _spec(base | {"tokens": "distinct"}, {"K": Ks, "Q": Qs},
                                                S, 2 * S))
    fix = ctx.sweep("distinct_fixed_v", _spec(base | {"tokens": "distinct"},
                                              {"K": Ks, "Q": Qs, "v": [V_SHARED, V_DISTINCT]}, S, 2 * S))
    sh = ctx.sweep("shared_fixed_v", _spec(base | {"tokens": "yes_no"},
                                           {"K": Ks[1:], "Q": Qs, "v": [V_SHARED]}, S, S))
    low = _cube(fix, Ks, Qs, S, v=V_SHARED)
    shared = np.concatenate([low[:1], _cube(sh, Ks[1:], Qs, S)])
    risk = np.stack([_cube(thm, Ks, Qs, S), _cube(fix, Ks, Qs, S, v=V_DISTINCT), shared, low,
                     _cube(fix, Ks, Qs, S, "test_risk_worst", v=V_DISTINCT)])
    v_thm = np.array([float(thm["v"][(thm["Q"] == q)][0]) for q in Qs])
    return {"Ks": np.asarray(Ks, float), "Qs": np.asarray(Qs, float), "seeds": np.asarray(S),
            "n_test": np.asarray(cfg["n_test"]), "risk": risk, "v_theorem": v_thm,
            "tau_1": np.array([float(thm["tau_1"][thm["K"] == k][0]) for k in Ks])}


def label_split(labels, *, hold, q, rng):
    """Per label ±1: `hold` random statements for test, the next `q` for training (row indices)."""
    train, test = [], []
    for lab in (1, -1):
        idx = rng.permutation(np.flatnonzero(labels == lab))
        if len(idx) < hold + q:
            raise InputError(f"q={q!r} is not allowed: only {len(idx) - hold} statements of label "
                             f"{lab} remain after holding out {hold}")
        test.append(idx[:hold])
        train.append(idx[hold:hold + q])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def real_errors(feats, Qs, *, hold, reps, seed=0):
    """(nQ, reps) held-out error (r ≤ 0) of last-layer DPO on Q statements per label per persona.

    Replicate b draws each persona's split from rng([seed, b, k]). Every training set is tiled to
    Q_max per label (Q_max a multiple of every Q): the full-batch mean loss and its gradient are
    unchanged, so Adam's trajectory is the same and one compilation serves the whole Q grid.
    """
    import jax
    import jax.numpy as jnp

    from dpolab.sims.config import TrainSpec, make_params
    from dpolab.sims.llm.train import PAPER_PROTOCOL, to_dataset
    from dpolab.sims.train import make_trainer

    qmax = max(Qs)
    if any(qmax % q for q in Qs):
        raise InputError(f"Qs={Qs!r} is not allowed: the largest must be a multiple of every Q")
    p = PAPER_PROTOCOL
    run = make_trainer(TrainSpec(loss="dpo", optimizer=p["optimizer"], steps=p["steps"],
                                 stride=p["steps"]), 1)
    params = make_params(beta=p["beta"], eta=p["eta"], v=0.0)
    batched = jax.jit(jax.vmap(run, in_axes=(0, 0, None)))
    stack = lambda ds: jax.tree.map(lambda *x: jnp.stack(x), *ds)  # noqa: E731
    out = np.zeros((len(Qs), reps))
    for i, q in enumerate(Qs):
        train, test = [], []
        for b in range(reps):
            rows = [label_split(f.label, hold=hold, q=q, rng=np.random.default_rng([seed, b, k]))
                    for k, f in enumerate(feats)]
            train.append(to_dataset(feats, [np.tile(tr, qmax // q) for tr, _ in rows]))
            test.append(to_dataset(feats, [te for _, te in rows]))
        traj = batched(stack(train), stack(test), params)
        out[i] = 1.0 - np.asarray(traj.test_accuracy)[:, -1]
    return out


def real(ctx) -> dict:
    """The real-embedding regime, or {real_available: 0, real_reason} when it cannot run here."""
    reason = ctx.real_unavailable()
    if reason:
        return {"real_available": np.asarray(0), "real_reason": np.asarray(reason)}
    from dpolab.sims.llm.persona import paper_persona_set

    cfg = REAL[ctx.quick]
    sets = {k: paper_persona_set(k, ctx.persona_dir) for k in cfg["Ks"]}
    stored = ctx.features(list(dict.fromkeys(n for s in sets.values() for n in s)), cfg["limit"])
    err = np.stack([real_errors([stored[n] for n in sets[k]], cfg["Qs"], hold=cfg["hold"],
                                reps=cfg["reps"]) for k in cfg["Ks"]])
    return {"real_available": np.asarray(1), "real_reason": np.asarray(""),
            "real_Ks": np.asarray(cfg["Ks"], float), "real_Qs": np.asarray(cfg["Qs"], float),
            "real_err": err, "real_hold": np.asarray(cfg["hold"]),
            "real_limit": np.asarray(cfg["limit"]),
            "real_n_test": 2.0 * cfg["hold"] * np.asarray(cfg["Ks"], float)}


def compute(ctx) -> dict:
    """Simulated regimes, real regime, Q*(K) of both bounds, Q_emp and the fits."""
    data = simulated(ctx)
    Ks, Qs = data["Ks"], data["Qs"]
    n_seed = 2.0 * data["n_test"] * Ks
    for j, name in enumerate(REGIMES):
        # the worst value's risk is measured on that value's own 2·n_test test samples
        n = 2.0 * data["n_test"] * np.ones_like(Ks) if name in WORST else n_seed
        s = summarize(Qs, data["risk"][j], n, seed=100 * j)
        data |= {f"{name}_{k}": v for k, v in s.items()}
        data[f"{name}_fit"] = fits(Ks, s["q_emp"], s["censored"])
    data |= real(ctx)
    if int(data["real_available"]):
        s = summarize(data["real_Qs"], data["real_err"], data["real_n_test"], threshold=None,
                      slack=REAL_SLACK, seed=1000)
        data |= {f"real_{k}": v for k, v in s.items()}
        data["real_fit"] = fits(data["real_Ks"], s["q_emp"], s["censored"])
        data["real_slack"] = np.asarray(REAL_SLACK)
    for bound in im_li.BOUNDS:
        q = im_li.q_star_table(Ks, threshold=THRESHOLD, bound=bound)
        data[f"qstar_{bound}"] = q
        data[f"qstar_{bound}_fit"] = fits(Ks, q, np.zeros(len(Ks)))
    data["threshold"] = np.asarray(THRESHOLD)
    data["v_fixed"] = np.array([V_DISTINCT, V_SHARED])
    data["d"], data["steps"] = np.asarray(D), np.asarray(STEPS)
    return data


# ---- outputs -----------------------------------------------------------------------------------

def render(data, ctx) -> list:
    """`q1_log_k.*`: risk vs Q per K for each regime, Q_emp(K) with Q*(K) of both bounds."""
    from dpolab.figures.audit_scaling import plot_log_k

    return plot_log_k(data, ctx.dir)


def _series(data) -> list[tuple[str, str]]:
    """(key, plain-text label) of every measured Q_emp series in the data."""
    v_dist, v_sh = data["v_fixed"]
    out = [("theorem", "theorem regime: distinct tokens, v = 1/(32√Q)"),
           ("distinct", f"distinct tokens, v = {v_dist:g}"),
           ("shared", f"shared Yes/No pair, v = {v_sh:g}"),
           ("distinct_low_v", f"distinct tokens, v = {v_sh:g}"),
           ("distinct_worst", f"distinct tokens, v = {v_dist:g}, worst of the K values")]
    if int(data["real_available"]):
        out.append(("real", "Gemma-3-270M personas (threshold: achievable error + "
                            f"{float(data['real_slack']):g})"))
    return out


def fmt_q(q, lo, hi, censored, qs) -> str:
    """'38 [27, 52]', '≤ 8' (censored), '> 128' (never below); CI ends shown the same way."""
    def end(x):
        return f"≤{qs[0]:g}" if x <= qs[0] else (f">{qs[-1]:g}" if not np.isfinite(x) else f"{x:.0f}")

    if censored:
        return f"≤ {qs[0]:g}"
    if not np.isfinite(q):
        return f"> {qs[-1]:g}"
    return f"{q:.0f} [{end(lo)}, {end(hi)}]"


def fmt_fit(fit) -> str:
    """'12.3 [4.5, 20.1], R² 0.91' or '–' when not fittable (< 3 uncensored points)."""
    slope, lo, hi, r2, n = fit
    if not np.isfinite(slope):
        return f"– ({int(n)} pts)"
    return f"{slope:.3g} [{lo:.3g}, {hi:.3g}], R² {r2:.2f}"


def log_growth(fit_pair) -> bool:
    """Logarithmic growth: the log-K slope's CI lies above 0 and log K fits at least as well as K."""
    (s, lo, _, r2_log, _), (_, _, _, r2_k, _) = fit_pair
    return bool(np.isfinite(s) and lo > 0 and r2_log >= r2_k)


def _table(data) -> list[str]:
    Ks = data["Ks"]
    head = ("| regime | " + " | ".join(f"K = {k:g}" for k in Ks)
            + " | slope per log K [95% CI], R² | slope per K [95% CI], R² |")
    lines = [head, "|---" * (len(Ks) + 3) + "|"]
    for key, label in _series(data):
        qs = data["real_Qs"] if key == "real" else data["Qs"]
        cells = [fmt_q(*(data[f"{key}_{f}"][i] for f in ("q_emp", "q_lo", "q_hi", "censored")), qs)
                 for i in range(len(Ks))]
        fit = data[f"{key}_fit"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {fmt_fit(fit[0])} | {fmt_fit(fit[1])} |")
    for bound in im_li.BOUNDS:
        cells = [f"{q:.0f}" for q in data[f"qstar_{bound}"]]
        fit = data[f"qstar_{bound}_fit"]
        lines.append(f"| Q*(K), {bound} bound | " + " | ".join(cells)
                     + f" | {fmt_fit(fit[0])} | {fmt_fit(fit[1])} |")
    return lines


def _which_fits(fit_pair) -> str:
    (s, lo, hi, r2l, n), (sk, lok, hik, r2k, _) = fit_pair
    if not np.isfinite(s):
        return f"no fit (only {int(n)} K with an uncensored Q_emp)"
    flat = lo <= 0 <= hi and lok <= 0 <= hik
    slope = s if r2l >= r2k else sk
    better = f"{'log K' if r2l >= r2k else 'K'} fits better, {'de' if slope < 0 else 'in'}creasing"
    return f"{'flat: both slope CIs include 0' if flat else better} (R² {r2l:.2f} on log K vs {r2k:.2f} on K)"


def _join(values) -> str:
    return ", ".join(f"{x:g}" for x in values)


def _ci_cell(data, key, k, q) -> str:
    return (f"{data[f'{key}_mean'][k, q]:.3f} [{data[f'{key}_lo'][k, q]:.3f}, "
            f"{data[f'{key}_hi'][k, q]:.3f}]")


def growing(data) -> list[str]:
    """Labels of the measured regimes that show logarithmic growth (see `log_growth`)."""
    return [label for key, label in _series(data) if log_growth(data[f"{key}_fit"])]


def report(data) -> str:
    """The audit.md section: setting, per-regime risks, the Q_emp table with fits, the verdict."""
    Ks, Qs, S = data["Ks"], data["Qs"], int(data["seeds"])
    thr, nK = float(data["threshold"]), len(Ks)
    n_cell = S * 2 * float(data["n_test"]) * Ks[:, None] * np.ones(len(Qs))
    thm_err = int(np.rint(data["theorem_mean"] * n_cell).sum())
    overlap = int(np.sum(data["distinct_lo"].max(0) <= data["distinct_hi"].min(0)))
    wall = 1.0 / (stats.norm.ppf(1.0 - thr) * float(data["v_fixed"][1])) ** 2
    def ks(key):
        return "; ".join(f"K = {Ks[k]:g}: {_ci_cell(data, key, k, -1)}" for k in range(nK))

    lines = [
        f"## {TITLE}", "",
        f"**Setting.** Sweep `im-li` (float64), GD to τ_1 in {int(data['steps'])} steps (β = 1, "
        f"l_b = 1/2), d = {int(data['d'])} for every Q (= 5·Q_min, so d ≤ 5Q holds on the grid), "
        f"{int(data['n_test'])} test samples per cluster, seeds 0–{S - 1} per grid point (root seed 0); "
        f"K ∈ {{{_join(Ks)}}}, Q per cluster ∈ {{{_join(Qs)}}}. "
        f"Threshold {thr:g} on the test risk P(r ≤ 0). Q_emp(K): the seed-mean risk curve "
        "interpolated linearly in log Q where it falls below the threshold for good; 95% CI: "
        f"percentile bootstrap over seeds ({N_BOOT} resamples). Fits: least squares of the "
        "uncensored Q_emp on log K and on K, slope 95% CI from the t distribution.", "",
        f"**Theorem regime** (distinct tokens, v = 1/(32√Q) = {data['v_theorem'][0]:.4f}…"
        f"{data['v_theorem'][-1]:.4f}; Theorem 4.3's Q ≥ 40 holds at Q ∈ {{{_join(Qs[Qs >= 40])}}}, "
        f"the others are inside Theorem 4.2's conditions): {thm_err} errors in {int(n_cell.sum())} test samples over "
        f"all (K, Q); the largest CP95 upper end is {data['theorem_hi'].max():.2g}; Q_emp ≤ {Qs[0]:g} "
        f"(censored) for {int(data['theorem_censored'].sum())} of {nK} K.", "",
        f"**Fixed v, distinct tokens** (v = {data['v_fixed'][0]:g}, outside v ≤ 1/(32√Q)): risk at "
        f"Q = {Qs[-1]:g}: {ks('distinct')}. Theory: a value's risk does not depend on K (ηβ²/N = "
        "log 3/(10·Q·steps) is K-free and no rows are shared); measured: the K curves' pooled CP95 "
        f"intervals overlap at {overlap} of {len(Qs)} Q. The observable the theorem's union bound "
        "controls is all K values at once: the worst value's risk at the same v, Q = "
        f"{Qs[-1]:g}: {ks('distinct_worst')} (the largest of K per-value risks: it grows with K while "
        "each value's does not).", "",
        f"**Shared Yes/No pair** (v = {data['v_fixed'][1]:g}): risk at Q = {Qs[-1]:g}: {ks('shared')}; "
        f"the same v with distinct tokens: {ks('distinct_low_v')}. Theory: sharing the pair sets a "
        "K-dependent floor (≈ Φ(−1/(v√K)) in the large-Q limit) that more samples per value barely "
        "lower; that "
        f"floor reaches the threshold at K = 1/(z v)² = {wall:.1f} (z = Φ⁻¹(1 − {thr:g})), beyond "
        "which no Q suffices.", ""]
    if int(data["real_available"]):
        RK, RQ = data["real_Ks"], data["real_Qs"]
        lines += [
            f"**Real embeddings** (Gemma-3-270M, the paper's persona sets, first "
            f"{int(data['real_limit'])} statements per persona; per replicate and persona "
            f"{int(data['real_hold'])} statements per label held out and Q per label ∈ "
            f"{{{', '.join(f'{q:g}' for q in RQ)}}} drawn from the rest; Adam, lr 1e-3, β = 0.01, "
            f"100 full-batch steps; {data['real_err'].shape[-1]} replicates, seeds 0–"
            f"{data['real_err'].shape[-1] - 1}). Held-out error at Q = {RQ[-1]:g}: "
            + "; ".join(f"K = {RK[k]:g}: {_ci_cell(data, 'real', k, -1)}" for k in range(len(RK)))
            + f". The absolute threshold {thr:g} is "
            + ("reached by no K" if np.all(data["real_mean"].min(-1) >= thr) else
               f"reached only by K ∈ {{{_join(RK[data['real_mean'].min(-1) < thr])}}}")
            + f", so the real threshold is the achievable error (the error at Q = {RQ[-1]:g}, the whole "
            f"pool) + {float(data['real_slack']):g}, recomputed in every bootstrap replicate.", ""]
    else:
        lines += [f"**Real embeddings:** not run here ({data['real_reason']}); the answer below covers "
                  "the simulated regimes only.", ""]
    grow = growing(data)
    real_fit = data.get("real_fit", np.full((2, 5), np.nan))
    real_word = "grows" if np.nanmax(np.r_[real_fit[:, 1], -np.inf]) > 0 else "does not grow"
    lines += [
        "Q_emp(K) per regime (95% bootstrap CI; ≤: already below at the smallest Q; >: never below "
        "on the grid) and Q*(K) of Theorem 4.3 at the same threshold:", "", *_table(data), "",
        "Which fits: " + "; ".join(f"{label}: {_which_fits(data[f'{key}_fit'])}"
                                  for key, label in _series(data)) + ".", "",
        f"![Q1: test risk vs Q per K]({NAME}/q1_risk_vs_q.png)", "",
        f"![Q1: Q_emp(K) and Q*(K)]({NAME}/q1_q_emp.png)", "",
        "**Verdict:** " + (
            "no measured regime shows logarithmic growth of Q_emp(K)" if not grow else
            "logarithmic growth (log-K slope CI above 0, log K fitting at least as well as K) in: "
            + "; ".join(grow))
        + f". The bound's Q*(K) grows (simplified: {data['qstar_simplified'][0]:.0f} → "
        f"{data['qstar_simplified'][-1]:.0f}, {fmt_fit(data['qstar_simplified_fit'][0])} on log K), "
        "through its union bound over samples. Distinct tokens at fixed v: "
        f"{_which_fits(data['distinct_fit'])}; shared pair: Q_emp = "
        + ", ".join(fmt_q(*(data[f"shared_{f}"][i] for f in ("q_emp", "q_lo", "q_hi", "censored")), Qs)
                    .split(" [")[0] + f" (K = {Ks[i]:g})" for i in range(nK))
        + (": below the threshold at the smallest Q for every K on this grid." if
           np.all(data["shared_censored"] > 0) else
           f": at the smallest Q while the floor is far below the threshold, rising only as K nears "
           f"the wall K = {wall:.1f} — set by the error floor, not by a log K sample cost.")
        + (f" Real embeddings: the achievable error rises with K ({data['real_mean'][0, -1]:.3f} → "
           f"{data['real_mean'][-1, -1]:.3f}) while the Q needed to come within "
           f"{float(data['real_slack']):g} of it {real_word} ({_which_fits(data['real_fit'])})"
           + (": the cost of K shows in the error floor, not in samples per value." if
              real_word == "does not grow" else ".") if int(data["real_available"]) else
           " The real-embedding regime was not run here.")]
    return "\n".join(lines)


def finding(data) -> CheckResult:
    """An empirical answer: verdict "finding"."""
    measured = {key: [f"<={q:g}" if c else round(float(q), 1)
                      for q, c in zip(data[f"{key}_q_emp"], data[f"{key}_censored"])]
                for key, _ in _series(data)}
    return CheckResult(
        id=f"audit/{NAME}", reference="Im & Li Theorem 4.3, scaling law Q*(K) = Θ(log K); issue #7 Q1",
        claim="the samples per value needed for test risk below a threshold grow like log K",
        predicted={b: [float(q) for q in data[f"qstar_{b}"]] for b in im_li.BOUNDS},
        measured=measured | {"log_growth_in": growing(data)},
        tolerance="95% bootstrap CI over seeds; fit slope 95% CI",
        why="Q_emp is a Monte-Carlo estimate; growth must show in the slope CI, not in a point",
        verdict="finding")
