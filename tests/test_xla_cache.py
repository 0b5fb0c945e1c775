"""The persistent XLA compilation cache (`dpolab.xla`): where it lives, that a second process loads
what the first compiled (and says nothing about it on stderr), that an unusable folder only turns it
off, and the compile-time meter, and the guard against the kernel's cap on memory mappings."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from dpolab import xla

# a fresh interpreter: compiles one program with the cache on (turned on before jax is loaded, as the
# command line does), prints the meter's delta and exits
_CHILD = r"""
import json
from dpolab import xla
folder = xla.enable_cache()
import jax, jax.numpy as jnp
before = xla.stats()
f = jax.jit(lambda x: jnp.sin(x @ x.T).sum(0) * 3.0 + jnp.cumsum(x, 0)[-1])
f(jnp.arange(64.0).reshape(8, 8)).block_until_ready()
print(json.dumps(dict(xla.since(before), folder=str(folder))))
"""


def _child(env):
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_a_second_process_loads_the_programs_the_first_compiled(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env[xla.ENV] = str(tmp_path / "cache")
    first, _ = _child(env)
    second, stderr = _child(env)
    assert first["folder"] == second["folder"] and first["folder"].startswith(str(tmp_path / "cache"))
    assert first["programs"] >= 1 and first["cache_hits"] == 0
    assert second["programs"] == first["programs"] and second["cache_hits"] == second["programs"]
    # the loader's C++ line about LLVM tuning attributes is not shown (the folder is keyed by CPU)
    assert "cpu_aot_loader" not in stderr, stderr
    env[xla.ENV] = "off"
    third, _ = _child(env)
    assert third["folder"] == "None" and third["cache_hits"] == 0 and third["programs"] >= 1


def test_workers_are_given_the_quiet_loader_level_this_process_set(tmp_path):
    """Ray's runtime_env asks `quiet_loader_env()` after `enable_cache()` has set the level here: it
    must still hand the workers the level (it once read "3" back as a user's choice and gave {});
    a level the user chose is kept and not passed on."""
    probe = "from dpolab import xla; xla.enable_cache(); import json; print(json.dumps(xla.quiet_loader_env()))"
    # -P: dpolab from the installed path (a mutant's tree), not the checkout folder in the working directory
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env[xla.ENV] = str(tmp_path / "cache")
    for level, expected in ((None, {"TF_CPP_MIN_LOG_LEVEL": "3"}), ("0", {})):
        run_env = env if level is None else dict(env, TF_CPP_MIN_LOG_LEVEL=level)
        proc = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, env=run_env,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        if not xla.accelerator_plugin():  # with a GPU/TPU plugin the log is never quietened
            assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected, level


def test_the_folder_is_keyed_by_the_cpu_features(monkeypatch, tmp_path):
    monkeypatch.setenv(xla.ENV, str(tmp_path))
    here = xla.cache_dir()
    assert here.parent == tmp_path and jax.lib.__name__  # a subfolder of the one given
    monkeypatch.setattr(xla, "cpu_features", lambda: "sse2 avx")
    other = xla.cache_dir()
    assert other.parent == tmp_path and other != here
    monkeypatch.setattr(xla, "cpu_features", lambda: "avx sse2 avx512f")
    assert xla.cache_dir() != other
    monkeypatch.setenv(xla.ENV, "off")
    assert xla.cache_dir() is None
    monkeypatch.delenv(xla.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert xla.cache_dir().parent == tmp_path / "xdg" / "dpolab" / "xla"


def test_an_unwritable_folder_turns_the_cache_off_with_one_line(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(xla.ENV, str(blocker / "cache"))
    monkeypatch.setattr(xla, "_state", {"enabled": None, "listening": True})
    monkeypatch.setattr(jax.config, "update", lambda *a: (_ for _ in ()).throw(AssertionError(a)))
    assert xla.enable_cache() is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cache is off" in err[0] and str(blocker) in err[0] and xla.ENV in err[0]
    assert xla.stats()["cache"] is None


def test_the_meter_counts_what_this_process_compiles():
    x = jnp.asarray([0.5] * 13)
    before = xla.stats()
    f = jax.jit(lambda x: jnp.tanh(x) * 7.25 + 1.5)  # a program no other test compiles
    f(x).block_until_ready()
    f(x).block_until_ready()  # the in-memory cache: no second compilation
    delta = xla.since(before)
    assert delta["programs"] == 1 and delta["compile_s"] > 0
    line = xla.summary(delta, wall_s=2 * delta["compile_s"])
    assert "1 programs" in line and "(50%)" in line


def test_relieve_drops_the_programs_jax_holds_once_past_the_share_of_the_mapping_cap():
    if xla.mappings() is None:
        pytest.skip("this kernel does not report memory mappings")
    xla.relieve(share=0.0)
    base = xla.mappings()[0]
    for n in range(401, 441):  # 40 shapes no other test uses: eager programs JAX keeps in memory
        jnp.cos(jnp.full(n, 0.25)).block_until_ready()
    held = xla.mappings()[0]
    assert held > base + 80  # the programs hold mappings (a few to a dozen each)
    assert not xla.relieve(share=1.0)  # never past the whole cap: nothing dropped
    assert xla.mappings()[0] >= held - 10
    assert xla.relieve(share=0.0)
    assert xla.mappings()[0] - base < (held - base) / 2  # most of what they held is released
