"""Tolerances for comparing fastmlp (computed in its dtype) with the float64 reference.

A module of its own, not conftest.py: tests/ and benchmarks/ both have a conftest.py, and when
pytest collects both, `from conftest import ...` gets whichever was imported last."""
import numpy as np

DTYPES = (np.float32, np.float64)

TOL = {
    np.dtype(np.float32): dict(rtol=2e-5, atol=2e-6),
    np.dtype(np.float64): dict(rtol=1e-11, atol=1e-13),
}


def tol(dtype):
    return TOL[np.dtype(dtype)]
