"""The device check behind `scripts/gpu_check.sh`: dpolab on a GPU, timed, in five stages.

  verify     `dpolab verify --quick` in a subprocess (JAX on the GPU; must report backend gpu);
  float32    the registered check `gpu/float32-agreement` (`dpolab.checks.gpu`, suite `gpu`) at its
             full size (small: quick size): the im-li trainer's margin trajectories and an rDPO
             bandit fit in float32 on the GPU against float64 on the CPU, within float32 rounding's
             stated growth; must pass, and (full size) have run on the GPU;
  sweep      a large float32 Im & Li sweep (K up to 1024, d = 4096, 64 seeds) through the sweep
             engine, then its float64 cross-check on the CPU for a subset (the smallest K, the first
             seeds): the seed means of each metric must agree within Monte-Carlo error
             (Z999 · the combined standard error) plus a float32 allowance;
  real       the real-model track on the tiny random model (`dpolab.sims.llm.tiny`): extract on
             `device` in float32 and bfloat16, the same extraction on the CPU as a reference
             (float32 features must agree to 1e-3 relative), then train, diagnose and hh;
  summary    `gpu_check.json` and `gpu_check.md` in `--out`: device names, versions, per-stage wall
             times, verdicts.

`--small` runs every stage at toy sizes on any device (so a CPU test covers this code path); the
full sizes are for one GPU and fit its 8-minute budget (stages past `--budget-s` are skipped and
recorded as such). The float32 sweep and the tiny model mean nothing about the theory or about
language: the stage checks device placement, precision and agreement.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU with JAX

#: Sizes of the sweep stage (grid K; d, Q, n_test, steps fixed; seeds, chunk_size) and the seeds of
#: its float64 cross-check.
SWEEP_SIZES = {
    # one point per chunk, its 64 seeds vmapped: XLA's memory analysis of the compiled batch gives
    # ~0.44 GiB of temporaries per seed at K = 1024, d = 4096 (∝ K·d), so ~28 GiB per chunk
    "full": {"K": [64, 256, 1024], "d": 4096, "Q": 2, "n_test": 2, "seeds": 64, "steps": 50,
             "chunk_size": 64, "check_seeds": 16},
    "small": {"K": [2, 4], "d": 48, "Q": 5, "n_test": 5, "seeds": 8, "steps": 20, "chunk_size": 8,
              "check_seeds": 8},
}
#: Metrics compared between the float32 sweep and the float64 CPU cross-check.
CROSS_METRICS = ("margin_mean", "test_margin_mean", "final_loss", "test_risk")


def sweep_spec(size: str, precision: str, *, K=None, seeds=None) -> dict:
    """The sweep spec (a dict in the TOML layout) of the given size and precision."""
    s = SWEEP_SIZES[size]
    # a subset (seeds given) runs one point per chunk: chunk_size counts points × seeds
    return {"sweep": {"simulation": "im-li", "seeds": seeds or s["seeds"], "chunk_size": seeds or s["chunk_size"],
                      "precision": precision, "root_seed": 0},
            "fixed": {"Q": s["Q"], "n_test": s["n_test"], "d": s["d"], "steps": s["steps"],
                      "vocab": max(64, 2 * max(s["K"]))},  # two reference tokens per value
            "grid": {"K": K or s["K"]}}


def agreement(low: dict, high: dict, metrics=CROSS_METRICS, *, rel32: float = 1e-3) -> dict:
    """Seed means of float32 (`low`, (S1,) per metric) against float64 (`high`, (S2,)) runs.

    Different precisions draw different Gaussian samples from the same keys, so the comparison is
    statistical: |mean_32 − mean_64| ≤ Z999 · √(SE_32² + SE_64²) + rel32 · |mean_64|, the last
    term allowing float32 rounding over a run (~1e-3 relative over tens of steps).
    """
    import numpy as np

    from dpolab.sims.risk import Z999

    rows = {}
    for m in metrics:
        a, b = np.asarray(low[m], dtype=np.float64), np.asarray(high[m], dtype=np.float64)
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        diff, tol = abs(a.mean() - b.mean()), Z999 * se + rel32 * abs(b.mean())
        rows[m] = {"float32": float(a.mean()), "float64": float(b.mean()), "diff": float(diff),
                   "tolerance": float(tol), "agree": bool(diff <= tol)}
    return rows


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - start, 2)


def stage_verify(out: Path, small: bool) -> dict:
    """`dpolab verify --quick` in a subprocess (small: the closed-form ranking suite only)."""
    env = {k: v for k, v in os.environ.items() if k != "DPOLAB_PERSONA_DIR"}  # no Gemma on GPU hosts
    cmd = [sys.executable, "-m", "dpolab.cli", "verify", "--quick", "--out", str(out / "verify"), "--json"]
    if small:
        cmd += ["--suite", "ranking"]
    proc, seconds = _timed(lambda: subprocess.run(cmd, capture_output=True, text=True, env=env))
    result = {"seconds": seconds, "returncode": proc.returncode}
    try:
        report = json.loads((out / "verify" / "report.json").read_text())
        result["verdicts"] = {v: sum(c["verdict"] == v for c in report["checks"]) for v in ("pass", "fail", "finding")}
        result["jax_backend"] = report["meta"]["jax_backend"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        result["stderr_tail"] = proc.stderr[-2000:]
    # on the GPU the checks must have run there (small: any backend)
    result["ok"] = proc.returncode == 0 and (small or result.get("jax_backend") == "gpu")
    return result


def stage_float32(small: bool) -> dict:
    """`gpu/float32-agreement` in this process (small: its quick size), with what it measured."""
    from dpolab.checks.gpu import float32_agreement

    result, seconds = _timed(lambda: float32_agreement(small))
    measured = result.measured
    ran_on = measured["devices"]["backend"]
    return {"seconds": seconds, "verdict": result.verdict, "measured": measured, "tolerance": result.tolerance,
            "ok": result.verdict == "pass" and (small or ran_on == "gpu")}


def stage_sweep(out: Path, small: bool) -> dict:
    """The float32 sweep on the default JAX device, then the float64 CPU cross-check."""
    import jax

    from dpolab.sims.sweep.engine import compute_chunk
    from dpolab.sims.sweep.run import run_spec
    from dpolab.sims.sweep.spec import parse_spec

    size = "small" if small else "full"
    spec = parse_spec(sweep_spec(size, "float32"))
    result, seconds = _timed(lambda: run_spec(spec, out / "sweep", quiet=True, force=True))
    n_points = len(spec.points())
    info = {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "points": n_points,
            "seeds": spec.seeds, "grid": sweep_spec(size, "float32")["grid"], "fixed": dict(spec.fixed),
            "seconds": seconds, "seed_runs_per_second": round(n_points * spec.seeds / seconds, 2)}
    # cross-check: the first grid point (smallest K), its first seeds, in float64 on the CPU
    s = SWEEP_SIZES[size]
    low = compute_chunk(sweep_spec(size, "float32", seeds=s["check_seeds"]), [0])
    check = sweep_spec(size, "float64", K=s["K"][:1], seeds=s["check_seeds"])
    with jax.default_device(jax.devices("cpu")[0]):
        high, cpu_seconds = _timed(lambda: compute_chunk(check, [0]))
    rows = agreement({m: low[m][0] for m in CROSS_METRICS}, {m: high[m][0] for m in CROSS_METRICS})
    info.update(cross_check={"K": s["K"][0], "seeds": s["check_seeds"], "cpu_float64_seconds": cpu_seconds,
                             "metrics": rows},
                ok=all(r["agree"] for r in rows.values()) and result.exists())
    return info


def stage_real(out: Path, small: bool, device: str) -> dict:
    """The tiny model through extract (on `device` in float32 and bfloat16, and on the CPU in
    float32 as the reference), train, diagnose and hh: the library functions the `dpolab llm`
    commands call. A step that raises is recorded with its error and fails the stage."""
    import numpy as np

    from dpolab.diagnose import run_diagnose
    from dpolab.sims.llm import commands, tiny
    from dpolab.sims.llm.extract import extract, load_features

    root = out / "real"
    model = str(tiny.build_tiny_model(root / "model", hidden_size=64 if small else 256, layers=2 if small else 4))
    personas = tiny.write_personas(root / "personas", statements=8 if small else 64)
    hh = tiny.write_hh(root / "hh.jsonl.gz", pairs=12 if small else 200)
    names = commands.paper_union([1, 2], personas)
    feats = root / f"features-{device}-float32"
    steps = {
        f"extract {device} float32": lambda: extract(personas, names, None, feats, model=model, device=device,
                                                     progress=False),
        f"extract {device} bfloat16": lambda: extract(personas, names, None, root / f"features-{device}-bfloat16",
                                                      model=model, device=device, dtype="bfloat16", progress=False),
        "extract cpu float32 (reference)": lambda: extract(personas, names, None, root / "features-cpu",
                                                           model=model, device="cpu", progress=False),
        "train": lambda: commands.run_train(feats, root / "train", seeds=2, force=True,
                                            value_sets=commands.paper_value_sets([1, 2], personas, feats)),
        "diagnose": lambda: run_diagnose(feats, root / "diagnose", quick=True, force=True, progress=False),
        "hh": lambda: commands.run_hh(hh, 12 if small else 200, root / "hh", seeds=1, model=model, device=device),
    }
    times, errors = {}, {}
    for name, step in steps.items():
        try:
            _, times[name] = _timed(step)
        except Exception as err:  # recorded, not raised: the report says which step broke
            errors[name] = f"{err.__class__.__name__}: {err}"
    info = {"device": device, "seconds": times, "errors": errors}
    if not errors:
        a, b = load_features(feats), load_features(root / "features-cpu")
        rel = max(float(np.abs(a[n]["g"] - b[n]["g"]).max() / np.abs(b[n]["g"]).max()) for n in b)
        logp = max(float(np.abs(a[n]["ref_logp_yes"] - b[n]["ref_logp_yes"]).max()) for n in b)
        info.update(g_max_rel_diff_vs_cpu=rel, logp_max_diff_vs_cpu=logp, ok=rel <= 1e-3 and logp <= 1e-3)
    else:
        info["ok"] = False
    return info


def environment(device: str) -> dict:
    """Device names and versions for the results file."""
    import jax
    import torch

    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(),
            "python": platform.python_version(), "jax": jax.__version__, "torch": torch.__version__,
            "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()],
            "torch_device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}


def format_markdown(report: dict) -> str:
    """The results as a short Markdown section (for bench/RESULTS.md)."""
    env = report["environment"]
    lines = [f"GPU check ({'small' if report['small'] else 'full'} sizes), {env['date']}: JAX "
             f"{env['jax']} on {env['jax_backend']} ({', '.join(env['jax_devices'])}), torch "
             f"{env['torch']} on {env['torch_device']}.", "", "| stage | ok | wall s | notes |", "|---|---|---|---|"]
    for name, stage in report["stages"].items():
        if "skipped" in stage:
            lines.append(f"| {name} | — | — | skipped: {stage['skipped']} |")
            continue
        seconds = stage.get("seconds")
        wall = sum(seconds.values()) if isinstance(seconds, dict) else seconds
        if name == "sweep" and "cross_check" in stage:
            note = (f"{stage['points']} points × {stage['seeds']} seeds, {stage['seed_runs_per_second']} "
                    f"seed-runs/s; float64 CPU cross-check at K={stage['cross_check']['K']}: "
                    + ", ".join(f"{m} {r['diff']:.2g} ≤ {r['tolerance']:.2g}" if r["agree"] else f"{m} DISAGREES"
                                for m, r in stage["cross_check"]["metrics"].items()))
        elif name == "real" and "g_max_rel_diff_vs_cpu" in stage:
            note = (f"features vs CPU: g {stage.get('g_max_rel_diff_vs_cpu', float('nan')):.2g} rel, "
                    f"log p {stage.get('logp_max_diff_vs_cpu', float('nan')):.2g}")
        elif name == "verify":
            note = f"verdicts {stage.get('verdicts')}, JAX backend {stage.get('jax_backend')}"
        elif name == "float32" and "measured" in stage:
            m = stage["measured"]
            note = (f"{stage['verdict']} on {m['devices']['float32']} vs {m['devices']['float64']}: trainer margins "
                    f"{m['trainer']['max_abs_diff']:.2g} ≤ {m['trainer']['tolerance']:.2g}, bandit θ "
                    f"{m['bandit']['theta_diff']:.2g} ≤ {m['bandit']['tolerance']:.2g}")
        else:
            note = f"errors {stage.get('errors')}"
        lines.append(f"| {name} | {'yes' if stage.get('ok') else 'NO'} | {wall:.1f} | {note} |")
    return "\n".join(lines) + "\n"


def run(out, *, small: bool = False, device: str = "cuda", budget_s: float = 450.0) -> dict:
    """Runs the stages in order, skipping those that start after `budget_s`; writes
    `gpu_check.json` and `gpu_check.md` to `out` and returns the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = {"small": small, "environment": environment(device), "stages": {}}
    stages = {"verify": lambda: stage_verify(out, small), "float32": lambda: stage_float32(small),
              "sweep": lambda: stage_sweep(out, small), "real": lambda: stage_real(out, small, device)}
    for name, fn in stages.items():
        if time.perf_counter() - start > budget_s:
            report["stages"][name] = {"skipped": f"past the {budget_s:.0f} s budget"}
            continue
        report["stages"][name] = fn()
    sweep = report["stages"]["sweep"]
    if not small and "skipped" not in sweep:  # on the GPU, JAX must actually have run there
        sweep["ok"] = bool(sweep.get("ok")) and sweep.get("backend") == "gpu"
    report["wall_s"] = round(time.perf_counter() - start, 1)
    report["ok"] = all(s.get("ok") for s in report["stages"].values())
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    (out / "gpu_check.md").write_text(format_markdown(report), encoding="utf-8")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dpolab.bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json / gpu_check.md and the runs")
    p.add_argument("--small", action="store_true", help="toy sizes, any device (the CPU test)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="torch device of the real stage")
    p.add_argument("--budget-s", type=float, default=450.0, help="no stage starts after this many seconds")
    args = p.parse_args(argv)
    report = run(args.out, small=args.small, device=args.device, budget_s=args.budget_s)
    print(format_markdown(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
