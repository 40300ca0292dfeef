"""The register blocking of the GEMM-class kernels, chosen per vector ISA when fastmlp._kernels is
imported: the choice itself, and the kernels' edge cases under every blocking that exists (not only
this machine's), each compiled in a subprocess with its own Numba cache."""
import os
import subprocess
import sys

import pytest

from fastmlp import _kernels as P

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

AVX512 = {"avx", "avx2", "fma", "avx512f", "avx512vl"}
AVX2 = {"avx", "avx2", "fma"}
SSE = {"sse2", "sse4.2"}


def test_avx512_keeps_its_blocking():
    """4 x 4 zmm accumulators in the tile kernels, 4 rows x 4 samples in the forward pass."""
    assert P._register_blocking(AVX512) == ("avx512", 4, 256, 4)


def test_avx2_with_fma_gets_the_6_row_micro_kernel():
    """6 rows x 64 bytes: BLIS's Haswell tile, written in assembly (fastmlp._kernels._micro_tile)."""
    assert P._register_blocking(AVX2) == ("avx2", 6, 64, 2)
    assert P._register_blocking({"avx"}) == ("avx", 2, 192, 2)  # no FMA: no micro-kernel


@pytest.mark.parametrize("features", [AVX2, {"avx"}, SSE], ids=["avx2", "avx", "sse"])
def test_16_register_isas_get_tiles_that_fit(features):
    isa, rows, tile_bytes, samples = P._register_blocking(features)
    vector = 32 if "avx" in features else 16
    vectors = tile_bytes // vector
    if rows == P.MICRO_ROWS:
        # the assembly micro-kernel: accumulators + the loads of a step + 2 registers the
        # broadcasts alternate between
        assert rows * vectors + vectors + 2 == 16
    else:
        # accumulators + one broadcast per tile row + one load register <= 16 (LLVM holds every
        # broadcast of a step at once)
        assert rows * vectors + rows + 1 <= 16
    # and the forward pass: 4 rows x samples accumulators + 4 weight rows + 1 input register
    assert 4 * samples + 4 + 1 <= 16


def test_the_choice_follows_the_cpu_llvm_targets():
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
    assert (P.VECTOR_ISA, P.TILE_ROWS, P.TILE_BYTES, P.FORWARD_SAMPLES) == P._register_blocking(enabled)


@pytest.mark.parametrize("features, want", [("+sse2,+avx,+avx2,+fma,-avx512f", "avx2 6 64 2"),
                                            ("+sse2,+avx,-avx2,-fma,-avx512f", "avx 2 192 2")])
def test_numba_cpu_features_decide_the_blocking(features, want):
    """NUMBA_CPU_FEATURES (what LLVM then emits for) decides, not the host's own features."""
    code = "from fastmlp import _kernels as P; print(P.VECTOR_ISA, P.TILE_ROWS, P.TILE_BYTES, P.FORWARD_SAMPLES)"
    env = dict(os.environ, NUMBA_CPU_NAME="generic", NUMBA_CPU_FEATURES=features, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == want.split()


BLOCKINGS = sorted({P._register_blocking(f)[1:] for f in (AVX512, AVX2, {"avx"}, SSE)})


@pytest.mark.parametrize("blocking", BLOCKINGS, ids=lambda b: "rows{}-bytes{}-samples{}".format(*b))
def test_kernel_edge_cases_under_every_blocking(blocking, tmp_path):
    """The tile-width, column-range and row-range tests of test_kernels.py with the kernels compiled
    for this blocking (the code LLVM emits is for this machine; the loop structure is the blocking's)."""
    rows, tile_bytes, samples = blocking
    if blocking == (P.TILE_ROWS, P.TILE_BYTES, P.FORWARD_SAMPLES):
        pytest.skip("this machine's blocking: test_kernels.py tests it in this process")
    if rows == P.MICRO_ROWS and not {"avx2", "fma"} <= P._target_features():
        pytest.skip("the AVX2 + FMA micro-kernel does not run on this CPU")
    code = (
        "import sys\n"
        "from fastmlp import _kernels as P\n"
        f"P.TILE_ROWS, P.TILE_BYTES, P.FORWARD_SAMPLES = {rows}, {tile_bytes}, {samples}\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-x', sys.argv[1], '-k',\n"
        "                      'around_the_tile or forward_rows or test_dense_forward or split'\n"
        "                      ' or test_delta_backward or test_accumulate_gradients']))\n")
    # a cache of its own: the module constants are frozen into what Numba compiles
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code, os.path.join(HERE, "test_kernels.py")], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout
