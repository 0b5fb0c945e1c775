"""The layers of the package, read from the source (no import is executed): the import graph has no
cycle, and each layer imports only what is below it.

Layers, bottom up (README, Layout): `errors`, `xla` (the compilation cache), `progress` and `theory`
(closed forms) → `sims` core (simulation) → `sims.sweep`, `sims.llm`, `store` → `checks` (the theorem
checks) → `items`, `figures` (no JAX: plots are drawn from stored numbers) → `paper_repro`, `audit`,
`bench` → `checks.audit`, `verify`, `cli`.
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: installed name -> folder (the package-dir map of pyproject.toml)
FOLDERS = {"dpolab": "dpolab", "dpolab.theory": "theory", "dpolab.sims": "sims", "dpolab.checks": "checks",
           "dpolab.figures": "figures", "dpolab.audit": "audit", "dpolab.bench": "bench",
           "dpolab.paper_repro": "paper_repro"}
SIMS_CORE = ("config", "data", "blocks", "train", "reference", "multi_token", "bandit", "preference_mixture", "risk",
             "ranking_flips")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path, *, top_level_only: bool) -> set[str]:
    """Modules `name` imports (dpolab modules resolved to the module, others to their top name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m if m.startswith("dpolab") else m.split(".")[0] for m in out}


def _graph(top_level_only=False) -> dict[str, set[str]]:
    return {n: _imports(n, p, top_level_only=top_level_only) for n, p in MODULES.items()}


def _closure(start: str, graph) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in graph.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_the_source_tree_is_mapped():
    assert len(MODULES) > 60 and "dpolab.theory.im_li" in MODULES and "dpolab.sims.sweep.engine" in MODULES


def test_no_import_cycle():
    """Every import counts, function-local ones included (a lazy import is still a dependency)."""
    graph = {n: {m for m in deps if m in MODULES and m != n} for n, deps in _graph().items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _allowed(prefixes):
    return lambda dep: any(dep == p or dep.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer, allowed", [
    ("dpolab.theory", ("dpolab.theory", "dpolab.errors")),
    ("dpolab.sims", ("dpolab.theory", "dpolab.errors", "dpolab.sims", "dpolab.store", "dpolab.xla",
                     "dpolab.progress")),
    ("dpolab.checks", ("dpolab.theory", "dpolab.errors", "dpolab.sims", "dpolab.checks", "dpolab.store",
                       "dpolab.xla", "dpolab.progress")),
    ("dpolab.figures", ("dpolab.theory", "dpolab.errors", "dpolab.figures", "dpolab.sims.risk")),
])
def test_each_layer_imports_only_what_is_below_it(layer, allowed):
    ok = _allowed(allowed)
    above = {"dpolab.checks.audit"}  # the audit questions as a verify suite: sits above the audit
    bad = {n: sorted(d for d in deps if d.startswith("dpolab") and not ok(d))
           for n, deps in _graph().items() if (n == layer or n.startswith(layer + ".")) and n not in above}
    assert not {n: d for n, d in bad.items() if d}, bad


def test_sims_core_imports_no_checks_sweep_or_llm():
    ok = _allowed(("dpolab.theory", "dpolab.errors") + tuple(f"dpolab.sims.{m}" for m in SIMS_CORE))
    bad = {m: sorted(d for d in _graph()[f"dpolab.sims.{m}"] if d.startswith("dpolab") and not ok(d))
           for m in SIMS_CORE}
    assert not {m: d for m, d in bad.items() if d}, bad


def test_figures_and_the_im_li_closed_forms_load_without_jax():
    """What `import` runs (module-level imports, followed through dpolab) reaches no JAX."""
    graph = _graph(top_level_only=True)
    for start in [m for m in MODULES if m.startswith("dpolab.figures")] + ["dpolab.theory.im_li"]:
        reach = _closure(start, graph)
        assert "jax" not in reach, f"{start} imports jax through {sorted(r for r in reach if r in MODULES)}"


def test_the_checker_sees_a_cycle_and_a_jax_import(tmp_path, monkeypatch):
    """The graph reader itself: a planted cycle and a planted jax import are found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import jax\nfrom dpolab.figures import b\n")
    b.write_text("def f():\n    from dpolab.figures import a\n")
    planted = dict(MODULES, **{"dpolab.figures.a": a, "dpolab.figures.b": b})
    monkeypatch.setattr(sys.modules[__name__], "MODULES", planted)
    graph = _graph()
    assert "dpolab.figures.b" in graph["dpolab.figures.a"] and "dpolab.figures.a" in graph["dpolab.figures.b"]
    assert "jax" in _closure("dpolab.figures.a", _graph(top_level_only=True))


def test_audit_questions_are_not_each_others_libraries():
    """A question imports shared code from `audit.common`, closed forms from `theory.extensions`."""
    questions = [m for m in MODULES if m.startswith("dpolab.audit.q")]
    assert len(questions) >= 9
    graph = _graph()
    bad = {q: sorted(d for d in graph[q] if d.startswith("dpolab.audit.q")) for q in questions}
    assert not {q: d for q, d in bad.items() if d}, bad
