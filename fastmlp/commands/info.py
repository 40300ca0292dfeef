"""`fastmlp info`: versions, threads, Numba's threading layer, SIMD level and cache directories."""
import os
import sys

import click

from .common import handle_errors, json_option, print_json

WORKQUEUE_WARNING = ("Numba's threading layer is 'workqueue': each parallel region costs 45-90 us "
                     "(about 1.5 us with 'omp'), which slows predictions of many rows and the parallel "
                     "kernels of fastmlp.kernels (training does not use it); install an OpenMP "
                     "runtime (e.g. apt-get install libgomp1) or TBB (pip install tbb)")


@click.command(name="info")
@json_option("Print the information as JSON.")
@handle_errors
def command(as_json):
    """Show versions, thread settings, Numba's threading layer, the CPU's SIMD level and the
    cache directories.

    \b
    Example:
      fastmlp info
      NUMBA_NUM_THREADS=4 fastmlp info --json
    """
    info(as_json)


_PARALLEL_PROBE = None


def _threading_layer():
    """Run a trivial parallel kernel so that Numba starts its thread pool, then name the layer."""
    global _PARALLEL_PROBE
    import numba
    import numpy as np
    if _PARALLEL_PROBE is None:
        @numba.njit(parallel=True)
        def probe(a):
            total = 0.0
            for i in numba.prange(a.shape[0]):
                total += a[i]
            return total

        _PARALLEL_PROBE = probe
    _PARALLEL_PROBE(np.ones(64))
    return numba.threading_layer()


def _numba_cache_dir():
    """Where Numba caches fastmlp's compiled kernels, and why there."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    in_tree = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "__pycache__")
    try:
        from .. import _kernels
        path = str(_kernels._drive._cache._cache_path)  # Numba's own choice (a private attribute)
    except Exception:
        path = env or in_tree
    if env:
        origin = "NUMBA_CACHE_DIR"
    elif os.path.abspath(path) == in_tree:
        origin = "next to the package"
    else:
        origin = "user-wide: the package directory is not writable"
    return path, origin


def info(as_json):
    import importlib.metadata
    import platform

    import llvmlite
    import llvmlite.binding as llvm
    import numba

    import numpy as np

    from .. import __version__, datasets

    def version(dist, module=None):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return getattr(module, "__version__", None)

    warnings_list = []
    layer = _threading_layer()
    if layer == "workqueue":
        warnings_list.append(WORKQUEUE_WARNING)
    features = llvm.get_host_cpu_features()

    def has(flag):
        try:
            return bool(features[flag])
        except KeyError:
            return False

    avx512, avx2 = has("avx512f"), has("avx2")
    simd = "AVX-512" if avx512 else "AVX2" if avx2 else "below AVX2"
    cache, cache_origin = _numba_cache_dir()
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    result = {
        "fastmlp": __version__, "numpy": np.__version__, "numba": numba.__version__,
        "llvmlite": llvmlite.__version__, "click": version("click", click),
        "python": platform.python_version(), "python_executable": sys.executable,
        "platform": platform.platform(),
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS, "threads": numba.get_num_threads(),
        "cpus": cpus, "threading_layer": layer,
        "cpu_name": llvm.get_host_cpu_name(), "avx512f": avx512, "avx2": avx2, "simd": simd,
        "numba_cache_dir": cache, "numba_cache_origin": cache_origin,
        "data_cache_dir": str(datasets.cache_dir()), "fastmlp_data": os.environ.get("FASTMLP_DATA"),
        "warnings": warnings_list,
    }
    from . import mpi
    result.update(mpi.info())
    if result.get("mpi_rank", 0) != 0:
        return  # under mpiexec: rank 0 speaks for the job
    if as_json:
        print_json(result)
    else:
        rows = [
            ("fastmlp", result["fastmlp"]), ("python", f"{result['python']} ({sys.executable})"),
            ("numpy", result["numpy"]), ("numba", result["numba"]), ("llvmlite", result["llvmlite"]),
            ("click", result["click"]), ("platform", result["platform"]),
            ("threads", f"{result['threads']} (NUMBA_NUM_THREADS {result['numba_num_threads']}, "
                        f"{cpus} CPUs available)"),
            ("threading layer", layer),
            ("cpu", f"{result['cpu_name']}: SIMD {simd} (avx512f {'yes' if avx512 else 'no'}, "
                    f"avx2 {'yes' if avx2 else 'no'})"),
            ("numba cache", f"{cache} ({cache_origin})"),
            ("data cache", str(result["data_cache_dir"])
             + (f" (FASTMLP_DATA={result['fastmlp_data']} is searched first)" if result["fastmlp_data"]
                else "")),
            ("mpi", result["mpi"] + (f" (world size {result['mpi_world_size']})" if "mpi_world_size" in result
                                     else "")),
        ]
        for key, value in rows:
            click.echo(f"{key + ':':<17}{value}")
    for w in warnings_list:
        click.echo(f"warning: {w}", err=True)
