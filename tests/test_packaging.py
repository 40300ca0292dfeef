"""Packaging promises: importing compiles nothing, and Numba's cache works for a read-only install."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastmlp"


def run_python(code, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=600)


def test_import_fastmlp_loads_no_numba_and_compiles_nothing():
    out = run_python("""
        import sys, fastmlp
        assert "numba" not in sys.modules, "import fastmlp imported numba"
        fastmlp.MLP, fastmlp.train, fastmlp.kernels
        import fastmlp._kernels as k
        from numba.core.registry import CPUDispatcher
        dispatchers = [v for v in vars(k).values() if isinstance(v, CPUDispatcher)]
        assert len(dispatchers) > 10
        compiled = [d.__name__ for d in dispatchers if d.signatures]
        assert not compiled, compiled
        print("ok", len(dispatchers))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def _can_mount_read_only(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe} && "
                        f"! touch {probe}/f 2>/dev/null"], capture_output=True)
    return r.returncode == 0


def test_numba_cache_works_when_the_package_is_read_only(tmp_path):
    if not _can_mount_read_only(tmp_path):
        pytest.skip("needs root and mount namespaces to make a read-only install")
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "fastmlp", ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    script = tmp_path / "use.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, fastmlp.kernels as K, fastmlp._kernels as k
        z = K.dense_forward(np.ones((2, 3), np.float32), np.zeros(2, np.float32), np.ones(3, np.float32))
        assert z.tolist() == [3.0, 3.0], z
        print("hits", k._dense_forward.stats.cache_hits.most_common())
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env.update(XDG_CACHE_HOME=str(cache), PYTHONPATH=str(site))
    command = (f"mount --bind {site} {site} && mount -o remount,bind,ro {site} && "
               f"{sys.executable} {script} && {sys.executable} {script}")
    r = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.strip().splitlines()
    assert first == "hits []"          # compiled and written to the cache on the first run
    assert "hits [" in second and second != "hits []"   # loaded from the cache on the second
    assert list((cache / "numba").rglob("*.nbi")), "no index in the user-wide cache"
    assert not list(site.rglob("*.nbi")), "the read-only package directory got cache files"
