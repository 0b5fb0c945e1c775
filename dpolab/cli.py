"""The `dpolab` command line: a thin shell over library functions.

Every command's synopsis is `usage()`, read from the parser (the README's command-line block is
its output; a test keeps the two equal).

Bad input (`InputError`, or a flag argparse refuses) prints one line naming the field and exits
with code 2; `verify` exits 1 iff a check fails (findings never fail a run); Ctrl-C prints how to
resume and exits 130; any other exception is a bug and exits 70 with its traceback.
"""
from __future__ import annotations

import argparse
import csv
import importlib.metadata
import io
import json
import re
import sys
import traceback

from dpolab.errors import InputError


class _Parser(argparse.ArgumentParser):
    """argparse with the package's one-line errors (exit 2) instead of a usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list, got {text!r}") from err


_NEGATIVE = re.compile(r"-[\d.]")  # a negative number or a list that starts with one: -1,0,1


def _attach_negative_values(argv: list[str]) -> list[str]:
    """`--flag -1,0,1` as `--flag=-1,0,1`: argparse takes a token starting with '-' (other than a
    lone number) for a flag, and no flag of dpolab starts with a digit."""
    out = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE.match(arg):
            out[-1] += "=" + arg
        else:
            out.append(arg)
    return out


#: {family: {flag: (parameter, help)}}; defaults are shown from `dpolab.theory.calculator.FAMILIES`.
BOUND_ARGS = {
    "im-li": {"--K": ("K", "number of values (concepts), an integer >= 1"),
              "--Q": ("Q", "samples per cluster, an integer >= 1"),
              "--d": ("d", "embedding dimension, an integer >= 1 (default 5Q)"),
              "--v": ("v", "cluster noise standard deviation, >= 0 (default 1/(32 sqrt(Q)))"),
              "--lb": ("lb", "l_b, the shared direction's length, > 0 (Theorem 4.2 needs 1/4 to 1/2)"),
              "--Z": ("Z", "most value pairs one token appears in, an integer >= 1"),
              "--beta": ("beta", "DPO temperature, > 0"),
              "--tau": ("tau", "inverse learning rate (gradient flow time scale), > 0"),
              "--threshold": ("threshold", "risk level that defines Q*, in (0, 1]")},
    "rdpo": {"--n": ("n", "number of preference pairs, an integer >= 1"),
             "--d": ("d", "feature dimension, an integer >= 1"),
             "--eps": ("eps", "label-flip rate, in [0, 1/2)"),
             "--beta": ("beta", "DPO temperature, > 0"),
             "--L": ("L", "feature-norm bound, > 0"),
             "--B": ("B", "parameter-ball radius, > 0"),
             "--delta": ("delta", "failure probability, in (0, 1)"),
             "--lambda": ("lam", "ridge lambda, >= 0"),
             "--C": ("C", "the bound's unknown constant C, > 0 (not verified against the paper)"),
             "--C-prime": ("C_prime", "the bound's unknown constant C', >= 0"),
             "--c-margin": ("c_margin", "margin bound m = c_margin * beta * L * B, > 0")},
    "ranking": {"--log-ref-ratio": ("log_ref_ratio", "reference log-ratio log pi_ref(y_w)/pi_ref(y_l)"),
                "--alpha": ("alpha", "share of raters who prefer y_w, in [0, 1]"),
                "--beta": ("beta", "DPO temperature, > 0")},
}


def _output_flags(parser):
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON (a list for several rows)")
    fmt.add_argument("--csv", action="store_true", help="print CSV, one row per combination")


def _figure_flags(parser):
    """--style and --width (`dpolab.figures.style`: STYLES and WIDTHS; a test keeps the two in step),
    and --quiet, of the commands that draw figures."""
    parser.add_argument("--style", choices=("screen", "paper"), default="screen",
                        help="figure preset: 'paper' sets 8 pt labels and thin lines for print (default screen)")
    parser.add_argument("--width", metavar="column|text|INCHES",
                        help="figure width: 'column' (3.25 in), 'text' (6.75 in) or inches in [1, 20] "
                        "(default: each figure's natural width)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _figure_preset(args):
    """The context the command's figures are drawn in; --width is checked before any work."""
    from dpolab.figures.style import parse_width, preset

    return preset(args.style, parse_width(args.width))


PERSONA_DIR_HELP = "persona/ folder of a clone of github.com/anthropics/evals (default $DPOLAB_PERSONA_DIR)"
CACHE_DIR_HELP = "model cache (default $DPOLAB_CACHE or ~/.cache/dpolab)"
HH_PATH_HELP = "HH-RLHF harmless-base-test.jsonl.gz (default $DPOLAB_HH_PATH)"
MODEL_GUARD_HELP = "refuse unless --features were extracted by this model (same --model forms as extract)"


def _backbone_flags(parser) -> None:
    """--model, --device, --dtype, --batch-size and --cache-dir of every command that extracts real
    features (llm extract/hh, verify, repro, audit): one definition, read back by `_backbone`."""
    from dpolab.sims.llm.backbone import DEVICES, DTYPES, HH_BATCH_SIZE, PERSONA_BATCH_SIZE  # no torch

    parser.add_argument("--model", help="a Hugging Face model folder, a hub id in the local Hugging Face "
                        "cache (e.g. meta-llama/Llama-3.1-8B; never downloaded), or gemma-3-270m-q4 "
                        "(default: the packaged Gemma-3-270M)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: cuda when torch sees a GPU, else cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="the model's precision (features are stored in float32)")
    parser.add_argument("--batch-size", type=int, help=f"prompts per forward pass (default {PERSONA_BATCH_SIZE} "
                        f"persona statements, {HH_BATCH_SIZE} HH-RLHF dialogues)")
    parser.add_argument("--cache-dir", metavar="DIR", help=CACHE_DIR_HELP)


def _backbone(args):
    """The `Backbone` the flags of `_backbone_flags` name."""
    from dpolab.sims.llm.backbone import Backbone

    return Backbone(model=args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                    cache_dir=args.cache_dir)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dpolab", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version",
                   version=f"dpolab {importlib.metadata.version('dpolab')}")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verify", help="check the theory claim by claim")
    v.add_argument("--suite", help="run one suite only (e.g. im-li)")
    v.add_argument("--only", metavar="TEXT,..",
                   help="run only checks whose id contains one of these comma-separated texts")
    v.add_argument("--quick", action="store_true", help="small configurations (about a minute)")
    v.add_argument("--out", metavar="DIR", help="output directory (default results/verify/<timestamp>)")
    again = v.add_mutually_exclusive_group()
    again.add_argument("--force", action="store_true", help="replace an earlier verify run in --out")
    again.add_argument("--resume", action="store_true",
                   help="finish an interrupted run in --out, rerunning only unfinished checks")
    v.add_argument("--json", action="store_true", help="print report.json instead of the table")
    v.add_argument("--jobs", type=int, help="checks run at once, each in a worker process (default: one "
                   "per CPU core up to 4; 1 where a GPU or TPU plugin is installed)")
    _figure_flags(v)
    _backbone_flags(v)

    b = sub.add_parser("bounds", help="evaluate closed-form bounds (lists give one row per combination)")
    fams = b.add_subparsers(dest="family", required=True)
    from dpolab.theory.calculator import FAMILIES

    for family, names in BOUND_ARGS.items():
        f = fams.add_parser(family, help=f"the {family} bounds (a comma list gives one row per value)")
        for flag, (dest, text) in names.items():
            default = FAMILIES[family].defaults[dest]
            shown = "" if default is None else f" (default {default})"
            f.add_argument(flag, dest=dest, type=_number_list, metavar="X[,X..]", help=text + shown)
        _output_flags(f)
    mix = fams.add_parser("mixture", help="irreducible error of one Bradley-Terry model for a mixture")
    mix.add_argument("--rewards", required=True, help='per-group item rewards "r11,r12,...;r21,..."')
    mix.add_argument("--weights", required=True, help="group weights w1,w2,... (sum 1)")
    _output_flags(mix)

    w = sub.add_parser("sweep", help="run a parameter sweep described by a TOML spec (or: sweep plan SPEC, "
                       "sweep status DIR)")
    w.add_argument("spec", metavar="SPEC.toml|plan|status",
                   help="the sweep spec (TOML); or `plan` (then SPEC) or `status` (then DIR)")
    w.add_argument("target", nargs="?", metavar="SPEC|DIR",
                   help="after `plan`: the spec; after `status`: the sweep's folder")
    w.add_argument("--out", metavar="DIR", help="output directory (required to run a sweep)")
    w.add_argument("--json", action="store_true", help="plan/status: print JSON")
    w.add_argument("--no-calibrate", action="store_true",
                   help="plan: count only, do not time the first chunk of each signature")
    w.add_argument("--backend", default="local", choices=("local", "ray"),
                   help="local (this process, all local devices; the default) or ray")
    w.add_argument("--address", help="address of an existing Ray cluster (default: start a local one)")
    again = w.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="recompute only missing or corrupt chunks")
    again.add_argument("--force", action="store_true", help="replace an earlier sweep in --out")
    w.add_argument("--quiet", action="store_true", help="no progress output")
    w.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE", dest="overrides",
                   help="override a spec entry, e.g. --set grid.K=[1,2,4] --set sweep.seeds=8 (repeatable; "
                   "the manifest records the effective spec)")

    llm = sub.add_parser("llm", help="the real-embedding track (needs the llm extra)")
    llm_sub = llm.add_subparsers(dest="llm_command", required=True)
    ex = llm_sub.add_parser("extract", help="hidden states of persona statements, cached")
    ex.add_argument("--persona-dir", metavar="DIR", help=PERSONA_DIR_HELP)
    pick = ex.add_mutually_exclusive_group(required=True)
    pick.add_argument("--personas", help="comma-separated persona names")
    pick.add_argument("--k-set", help="the paper's persona sets of these sizes (comma list of 1, 2, 4, 8, 16)")
    pick.add_argument("--all", action="store_true", help="all 135 personas")
    ex.add_argument("--limit", type=int, help="statements per persona (default all)")
    _backbone_flags(ex)
    ex.add_argument("--quiet", action="store_true", help="no progress output")
    ex.add_argument("--out", metavar="DIR", required=True, help="output directory (npz per persona + manifest.json)")
    tr = llm_sub.add_parser("train", help="last-layer DPO on extracted features (JAX)")
    tr.add_argument("--features", required=True, help="a folder written by `dpolab llm extract`")
    tr.add_argument("--persona-dir", metavar="DIR", help=PERSONA_DIR_HELP)
    tr.add_argument("--k-sets", default="1,2,4,8,16", help="paper set sizes to train (comma list)")
    tr.add_argument("--protocol", default="paper", choices=("paper", "gd"),
                    help="paper (Adam, lr 1e-3, β=0.01, 100 steps; the default) or gd")
    tr.add_argument("--seeds", type=int, default=3, help="split seeds")
    tr.add_argument("--model", help=MODEL_GUARD_HELP)
    tr.add_argument("--out", metavar="DIR", required=True)
    tr.add_argument("--force", action="store_true", help="replace an earlier llm train run in --out")
    hh = llm_sub.add_parser("hh", help="DPO, cDPO and rDPO on HH-RLHF features under injected flips")
    hh.add_argument("--hh-path", metavar="FILE", help=HH_PATH_HELP)
    hh.add_argument("--limit", type=int, default=500, help="pairs (the first N of the file)")
    hh.add_argument("--seeds", type=int, default=5, help="split and flip seeds")
    _backbone_flags(hh)
    hh.add_argument("--out", metavar="DIR", required=True, help="features cache and results (hh_results.csv)")

    for name, text in (("repro", "regenerate the papers' figures and tables from stored results"),
                       ("audit", "answer the papers' open questions with experiments (audit.md)")):
        r = sub.add_parser(name, help=text)
        r.add_argument("--only", metavar="TEXT,..", help="comma-separated item names (default: all)")
        r.add_argument("--quick", action="store_true", help="small sizes (for the test suite)")
        r.add_argument("--out", metavar="DIR", required=True, help="output directory")
        again = r.add_mutually_exclusive_group()
        again.add_argument("--resume", action="store_true", help="finish an interrupted run in --out")
        again.add_argument("--force", action="store_true", help=f"replace an earlier {name} run in --out")
        r.add_argument("--persona-dir", metavar="DIR", help=PERSONA_DIR_HELP)
        r.add_argument("--hh-path", metavar="FILE", help=HH_PATH_HELP)
        _figure_flags(r)
        _backbone_flags(r)

    dg = sub.add_parser("diagnose", help="the theory as a diagnostic on your own preference data (report.md)")
    dg.add_argument("data", help="a JSON-lines file (prompt, chosen, rejected[, group]; .gz too), an HH-RLHF "
                    "file, a persona folder, an `llm extract` folder, or a features .npz")
    dg.add_argument("--format", default="auto", choices=("auto", "jsonl", "hh", "persona", "extracted", "npz"),
                    help="auto: a folder with an `llm extract` manifest is extracted, another folder persona, "
                    ".npz is npz, a file without 'prompt' fields hh")
    dg.add_argument("--group-field", default="group", help="the jsonl field naming a record's group (value)")
    pick = dg.add_mutually_exclusive_group()
    pick.add_argument("--personas", help="persona folder: comma-separated persona names")
    pick.add_argument("--k-set", type=int, help="persona folder: the paper's set of this size (1, 2, 4, 8, 16)")
    dg.add_argument("--limit", type=int, help="records to read (per persona for a folder; default all)")
    dg.add_argument("--beta", type=float, default=0.01, help="DPO's β of the predictions (default 0.01)")
    dg.add_argument("--threshold", type=float, default=0.05, help="target risk of the samples-per-value need")
    dg.add_argument("--quick", action="store_true", help="a small synthetic twin (for the test suite)")
    dg.add_argument("--out", metavar="DIR", required=True, help="output directory (report.md, report.json, figure)")
    again = dg.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="finish an interrupted diagnose run in --out")
    again.add_argument("--force", action="store_true", help="replace an earlier diagnose run in --out")
    _backbone_flags(dg)

    c = sub.add_parser("bench", help="speed of the fast path against baselines and the memory floor")
    from dpolab.bench import SUITES as BENCH_SUITES

    c.add_argument("--suite", default="im-li", choices=tuple(BENCH_SUITES),
                   help="the benchmark suite (default im-li)")
    c.add_argument("--quick", action="store_true", help="a tiny configuration (timings mean little)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.add_argument("--out", metavar="DIR", help="also write bench.json and bench.md (the table) there")
    c.add_argument("--force", action="store_true", help="replace an earlier bench run in --out")

    st = sub.add_parser("selftest", help="the mutation harness: does every check go red when the "
                        "formula or simulator it guards is broken? (needs a source checkout)")
    st.add_argument("--only", metavar="TEXT,..",
                    help="run only mutants whose name contains one of these comma-separated texts")
    st.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    st.add_argument("--no-tests", action="store_true", help="run the registered checks only, not the tests")
    st.add_argument("--json", action="store_true", help="print the outcomes and scores as JSON")
    return p


def _verify(args) -> int:
    from dpolab.progress import Progress
    from dpolab.verify import default_out, run_verify, table

    args.out = args.out or str(default_out())  # named now: Ctrl-C says where to --resume
    with _figure_preset(args), Progress(desc="verify", unit="check", quiet=args.quiet or args.json) as progress:
        results, out = run_verify(suite=args.suite, quick=args.quick, out=args.out, force=args.force,
                                  resume=args.resume, progress=progress, only=args.only,
                                  backbone=_backbone(args), jobs=args.jobs)
    if args.json:
        print((out / "report.json").read_text(encoding="utf-8"))
    else:
        from dpolab.verify import unavailable_suites

        print(table(results))
        for name, why in unavailable_suites().items():
            print(f"not run: suite {name} ({why})")
        print(f"report: {out / 'report.md'}")
    return 1 if any(r.verdict == "fail" for r in results) else 0


def _flatten(row: dict) -> dict:
    flat = {k: v for k, v in row.items() if not isinstance(v, dict)}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update({f"{key}: {k}": v for k, v in value.items()})
    return flat


def _bounds(args) -> int:
    if args.family == "mixture":
        from dpolab.theory.mixture import parse_rewards, parse_weights, summary

        rows = [summary(parse_rewards(args.rewards), parse_weights(args.weights))]
    else:
        from dpolab.theory.calculator import grid

        given = {dest: getattr(args, dest) for dest, _ in BOUND_ARGS[args.family].values()
                 if getattr(args, dest) is not None}
        rows = grid(args.family, **given)
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=1))
        return 0
    flat = [_flatten(r) for r in rows]
    if args.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(flat[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
        print(buf.getvalue(), end="")
        return 0
    for row in flat:
        print("\n".join(f"{k:>32}: {v}" for k, v in row.items()) + "\n")
    return 0


def _sweep(args) -> int:
    from dpolab.sims.sweep.run import run_sweep

    if args.spec in ("plan", "status"):
        return _sweep_overview(args)
    if args.target is not None:
        raise InputError(f"{args.target!r} is not allowed: `dpolab sweep SPEC` takes one spec (or: sweep plan SPEC, "
                         "sweep status DIR)")
    if args.out is None:
        raise InputError("--out is required to run a sweep (the folder its chunks and summary.csv go to)")
    summary = run_sweep(args.spec, args.out, backend=args.backend, address=args.address,
                        resume=args.resume, force=args.force, quiet=args.quiet, overrides=args.overrides)
    print(f"summary: {summary}")
    return 0


def _sweep_overview(args) -> int:
    from dpolab.sims.sweep import overview
    from dpolab.sims.sweep.spec import load_spec

    if args.target is None:
        what = "SPEC (the sweep spec)" if args.spec == "plan" else "DIR (the sweep's folder)"
        raise InputError(f"`dpolab sweep {args.spec}` needs {what}")
    if args.spec == "plan":
        info = overview.describe_plan(load_spec(args.target, args.overrides), calibrate=not args.no_calibrate)
        text = overview.format_plan(info)
    else:
        info = overview.sweep_status(args.target)
        text = overview.format_status(info)
    print(json.dumps(info, indent=1, default=float) if args.json else text)
    return 0


def _llm(args) -> int:
    try:
        return _llm_command(args)
    except ImportError as err:  # the llm extra is missing: one line, exit 2
        raise InputError(f"the llm extra is needed ({err}); install dpolab[llm]") from err


def _llm_command(args) -> int:
    from dpolab.sims.llm import commands

    if args.llm_command == "extract":
        from dpolab.sims.llm.extract import extract, format_summary
        from dpolab.sims.llm.persona import select_personas

        if args.k_set is not None:
            names = commands.paper_union(commands.parse_k_sets(args.k_set, "--k-set"), args.persona_dir)
        else:
            names = select_personas(args.persona_dir, names=args.personas, all_personas=args.all)
        summary = extract(args.persona_dir, names, args.limit, args.out, **_backbone(args).options(),
                          progress=not args.quiet)
        print(format_summary(summary))
    elif args.llm_command == "train":
        commands.check_features_model(args.features, args.model)
        sets = commands.paper_value_sets(commands.parse_k_sets(args.k_sets), args.persona_dir, args.features)
        rows = commands.run_train(args.features, args.out, value_sets=sets, protocol=args.protocol,
                                  seeds=args.seeds, force=args.force)
        for r in rows:
            print(f"K={r['K']:>2} seed={r['seed']} train margin {r['train_margin']:.4f} "
                  f"test error {r['test_error']:.4f}")
    else:
        print(commands.run_hh(args.hh_path, args.limit, args.out, seeds=args.seeds, **_backbone(args).options()))
    return 0


def _diagnose(args) -> int:
    from dpolab.diagnose import run_diagnose

    report = run_diagnose(args.data, args.out, fmt=args.format, group_field=args.group_field, personas=args.personas,
                          k_set=args.k_set, limit=args.limit, beta=args.beta, threshold=args.threshold,
                          quick=args.quick, backbone=_backbone(args), force=args.force, resume=args.resume)
    print(report)
    return 0


def _bench(args) -> int:
    from dpolab.bench import run_suite
    from dpolab.bench.harness import format_table

    out = None
    if args.out is not None:  # checked before the benchmark runs
        from pathlib import Path

        from dpolab.store import environment, prepare_out

        out = Path(args.out)
        manifest = prepare_out(out, "bench", force=args.force, resume=False, resumable=False,
                               key={"suite": args.suite, "quick": args.quick})
    elif args.force:
        raise InputError("force=True is not allowed: --force needs --out")
    result = run_suite(args.suite, quick=args.quick)
    text, table = json.dumps(result, indent=1, default=float), format_table(result)
    print(text if args.json else table)
    if out is not None:
        from dpolab.store import write_atomic, write_manifest

        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "bench.json", text + "\n")
        write_atomic(out / "bench.md", table + "\n")
        write_manifest(out, manifest | environment())
        print(f"bench: {out}", file=sys.stderr)
    return 0


def _selftest(args) -> int:
    from dpolab.selftest import format_outcomes, run_all, score, select

    if args.jobs < 1:
        raise InputError(f"jobs={args.jobs!r} is not allowed: jobs must be >= 1")
    mutants = select(args.only)
    progress = None if args.json else (
        lambda o: print(f"  {o.name}: registry {o.registry}",
                        file=sys.stderr, flush=True))
    outcomes = run_all(mutants, jobs=args.jobs, tests=not args.no_tests, progress=progress)
    summary = score(outcomes)
    if args.json:
        print(json.dumps({"outcomes": [o.as_json() for o in outcomes], "score": summary}, indent=1))
    else:
        print(format_outcomes(outcomes, summary))
    return 1 if summary["survivors_registry"] or summary["survivors_tests"] else 0


def _experiments(args) -> int:
    from dpolab.items import summary_lines

    if args.command == "repro":
        from dpolab.paper_repro import run_repro as run
    else:
        from dpolab.audit import run_audit as run
    from dpolab.progress import Progress

    with _figure_preset(args), Progress(desc=args.command, unit="item", quiet=args.quiet) as progress:
        manifest, out = run(out=args.out, quick=args.quick, only=args.only, force=args.force,
                            resume=args.resume, persona_dir=args.persona_dir, hh_path=args.hh_path,
                            backbone=_backbone(args), progress=progress)
    print("\n".join(summary_lines(manifest)))
    print(f"{args.command}: {out} ({manifest['wall_s']:.0f} s)")
    return 0


#: commands that run JAX programs: the persistent compilation cache is on for them, and they end with a
#: line on stderr saying how much of their time was compilation (`dpolab.xla`).
COMPILING = ("verify", "sweep", "llm", "repro", "audit", "diagnose")


def _with_compile_summary(command, args) -> int:
    import time

    from dpolab import xla

    xla.enable_cache()
    before, start = xla.stats(), time.perf_counter()
    code = command(args)
    if not getattr(args, "quiet", False):
        print(f"dpolab {args.command}: " + xla.summary(xla.since(before), time.perf_counter() - start),
              file=sys.stderr)
    return code


def _interrupted(args) -> str:
    """The one line printed on Ctrl-C: how to finish the run."""
    if getattr(args, "resume", None) is not None and getattr(args, "out", None):
        return (f"dpolab {args.command}: interrupted; finished work is kept in {args.out}: run the same "
                "command with --resume to finish it")
    return f"dpolab {args.command}: interrupted"


def usage(width: int = 110) -> str:
    """Every command's synopsis, read from the parser itself: the README's command-line block (a test
    keeps the two equal; `python -c "from dpolab.cli import usage; print(usage())"` prints it)."""
    import os

    lines = []

    def walk(parser):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            text = parser.format_usage().strip().removeprefix("usage: ").replace(" [-h]", "")
            first, *rest = text.splitlines()  # continuation lines were indented past "usage: "
            lines.append("\n".join([first.rstrip()] + [ln[len("usage: "):].rstrip() for ln in rest]))
            return
        for sub in subs[0].choices.values():
            walk(sub)

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # argparse wraps at the terminal's width: fix it
    try:
        walk(_parser())
    finally:
        if saved is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = saved
    return "\n".join(lines + ["dpolab --version"])


def _out_of_memory(err: BaseException) -> bool:
    """A MemoryError, or XLA's RESOURCE_EXHAUSTED (a JAX runtime error; torch's is a MemoryError)."""
    return isinstance(err, MemoryError) or (type(err).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
                                            and "RESOURCE_EXHAUSTED" in str(err))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0][:200] if text else type(err).__name__)


def main(argv=None) -> int:
    argv = _attach_negative_values(sys.argv[1:] if argv is None else list(argv))
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a refused flag (one line, exit 2)
        return stop.code
    try:
        commands = {"verify": _verify, "bounds": _bounds, "sweep": _sweep, "llm": _llm, "bench": _bench,
                    "repro": _experiments, "audit": _experiments, "selftest": _selftest, "diagnose": _diagnose}
        if args.command in COMPILING:
            return _with_compile_summary(commands[args.command], args)
        return commands[args.command](args)
    except InputError as err:
        print(f"dpolab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return 130
    except Exception as err:  # out of memory is a size asked for; anything else is a bug in dpolab
        if _out_of_memory(err):
            print(f"dpolab {args.command}: error: out of memory ({_first_line(err)}): ask for less at once "
                  "(a smaller grid or chunk_size, fewer seeds, --limit, --batch-size)", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"dpolab {args.command}: internal error (a bug, not bad input): please report it with the "
              "traceback above at the project's issue tracker", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
