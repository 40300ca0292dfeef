"""Shared fixtures of the independent test suite.

The suite tests fastmlp against tests/reference.py, a slow NumPy transcription of the lecture.
The reference's own tests do not need fastmlp: those tests import it through the `fm` fixture,
so the reference can be checked while the package is missing or broken.
"""

import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# `import fastmlp` from the checkout (also under .venv/bin/pytest, which does not add the cwd)
# and `import reference` from this folder.
for path in (ROOT, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

@pytest.fixture(autouse=True)
def small_run_flops(monkeypatch):
    """The tests train small networks on a few hundred rows: runs under fastmlp's SMALL_RUN_FLOPS,
    which fit() trains on one thread whatever the thread count asked for, so that the several-thread
    paths of fit() would go untested. Every test runs with the rule off; this fixture's value is
    the rule's real threshold, for the tests of the rule itself (tests/test_pacer.py)."""
    try:
        from fastmlp import _pacer
    except Exception:  # the reference's own tests run without a working fastmlp
        yield None
        return
    real = _pacer.SMALL_RUN_FLOPS
    monkeypatch.setattr(_pacer, "SMALL_RUN_FLOPS", 0.0)
    yield real


@pytest.fixture
def rng():
    """A fresh, seeded generator per test (tests are independent of their order)."""
    return np.random.default_rng(20251121)


@pytest.fixture(scope="session")
def fm():
    """The fastmlp package (imported lazily so the reference-only tests run without it)."""
    import fastmlp
    return fastmlp


@pytest.fixture(scope="session")
def kernels():
    from fastmlp import kernels
    return kernels


@pytest.fixture(scope="module")
def one_numba_thread():
    """Run a module's many tiny calls on one Numba thread (restored afterwards).

    Numerical results must not depend on it; it only avoids paying for waking a thread pool
    thousands of times (costly when the machine is busy)."""
    import numba
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)
