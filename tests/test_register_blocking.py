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


def test_the_micro_kernel_thresholds_follow_the_isa():
    """AVX2 + FMA: every delta recursion and forward pass through the AVX2 micro-kernel; AVX-512
    (Zen 4, whose FMAs run a zmm as two halves, included): the delta never (the zmm gather tile),
    the forward pass from 2048 inputs with the zmm tile; the ISAs without FMA never."""
    assert P._micro_thresholds("avx512") == (-1, 2048)
    assert P._micro_thresholds("avx2") == (0, 0)
    assert P._micro_thresholds("avx") == (-1, -1)
    assert P._micro_thresholds("sse") == (-1, -1)
    assert (P.MICRO_DELTA_MIN_ROWS, P.MICRO_FORWARD_MIN_INPUTS) == P._micro_thresholds(P.VECTOR_ISA)


def test_the_forward_micro_kernel_takes_zmm_tiles_where_there_is_avx512():
    """8 rows x 3 zmm (LLVM IR, _micro_zmm) on AVX-512 CPUs; elsewhere the AVX2 tile of 6 rows x
    64 bytes (assembly, _micro_tile). The weight gradient's zmm micro-kernel (GATHER_ZMM) runs on
    the same CPUs."""
    assert P._forward_micro_tile("avx512") == (True, 8, 192)
    assert P._forward_micro_tile("avx2") == (False, 6, 64)
    assert P._forward_micro_tile("avx") == (False, 6, 64)
    assert P.GATHER_ZMM == P.FORWARD_MICRO_ZMM == (P.VECTOR_ISA == "avx512")
    assert (P.FORWARD_MICRO_ZMM, P.FORWARD_MICRO_ROWS, P.FORWARD_MICRO_BYTES) == P._forward_micro_tile(P.VECTOR_ISA)


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


def _blocking(features):
    isa, rows, tile_bytes, samples = P._register_blocking(features)
    return (rows, tile_bytes, samples) + P._micro_thresholds(isa) + (P._forward_micro_tile(isa),)


# (TILE_ROWS, TILE_BYTES, FORWARD_SAMPLES, MICRO_DELTA_MIN_ROWS, MICRO_FORWARD_MIN_INPUTS, (FORWARD_MICRO_ZMM,
# FORWARD_MICRO_ROWS, FORWARD_MICRO_BYTES)) of every kind of CPU
BLOCKINGS = sorted({_blocking(f) for f in (AVX512, AVX2, {"avx"}, SSE)})


@pytest.mark.parametrize("blocking", BLOCKINGS,
                         ids=lambda b: "rows{}-bytes{}-samples{}-micro{}-{}-zmm{}".format(*b[:5], b[5][0]))
def test_kernel_edge_cases_under_every_blocking(blocking, tmp_path):
    """The tile-width, column-range and row-range tests of test_kernels.py with the kernels compiled
    for this blocking (the code LLVM emits is for this machine; the loop structure is the blocking's)."""
    rows, tile_bytes, samples, micro, micro_forward, tile = blocking
    if blocking == (P.TILE_ROWS, P.TILE_BYTES, P.FORWARD_SAMPLES, P.MICRO_DELTA_MIN_ROWS, P.MICRO_FORWARD_MIN_INPUTS,
                    (P.FORWARD_MICRO_ZMM, P.FORWARD_MICRO_ROWS, P.FORWARD_MICRO_BYTES)):
        pytest.skip("this machine's blocking: test_kernels.py tests it in this process")
    if (rows == P.MICRO_ROWS or micro >= 0 or micro_forward >= 0) and not {"avx2", "fma"} <= P._target_features():
        pytest.skip("the AVX2 + FMA micro-kernel does not run on this CPU")
    if tile[0] and "avx512f" not in P._target_features():
        pytest.skip("the zmm forward tile does not run on this CPU")
    code = (
        "import sys\n"
        "from fastmlp import _kernels as P\n"
        f"P.TILE_ROWS, P.TILE_BYTES, P.FORWARD_SAMPLES = {rows}, {tile_bytes}, {samples}\n"
        f"P.MICRO_DELTA_MIN_ROWS, P.MICRO_FORWARD_MIN_INPUTS = {micro}, {micro_forward}\n"
        f"P.FORWARD_MICRO_ZMM, P.FORWARD_MICRO_ROWS, P.FORWARD_MICRO_BYTES = {tile}\n"
        f"P.GATHER_ZMM = {tile[0]}\n"  # (the weight gradient's zmm tile goes with the forward's)
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


DELTA_BITS = """
import hashlib, sys
import numpy as np
from fastmlp import _kernels as P
P.TILE_ROWS, P.TILE_BYTES, P.FORWARD_SAMPLES = 4, 256, 4
P.MICRO_DELTA_MIN_ROWS, P.MICRO_FORWARD_MIN_INPUTS = int(sys.argv[1]), -1
P.GATHER_ZMM = sys.argv[2] == "zmm"
h = hashlib.sha256()
rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    for n, N, M in ((1, 3, 5), (7, 40, 83), (13, 300, 70), (33, 17, 130), (70, 45, 200), (64, 300, 97)):
        W = rng.normal(0, 1, (N, M)).astype(dtype)
        delta = rng.normal(0, 1, (n, N)).astype(dtype)
        z = rng.normal(0, 1, (n, M)).astype(dtype)
        for code in (P.RELU, P.TANH):
            for i0, i1 in ((0, M), (0, M // 2), (M // 2, M), (1, M - 1)):
                out = np.full((n, M), 7, dtype)
                P._delta_backward_cols(W, delta, z, code, False, out, i0, i1, np.arange(n))
                h.update(out.tobytes())
print(h.hexdigest())
"""


def test_the_delta_micro_kernel_and_the_tiles_give_the_same_bits(tmp_path):
    """AVX2 CPUs take the delta recursion's micro-kernel, AVX-512 CPUs the zmm tiles and, from 16
    groups of 4 samples, the zmm micro-kernel (GATHER_ZMM): all must give the same bits (every
    element summed over j in ascending order from zero, one FMA each), for partial tiles and column
    ranges too, so that results do not depend on the layer's shape beyond its arithmetic."""
    if not {"avx2", "fma"} <= P._target_features():
        pytest.skip("the AVX2 + FMA micro-kernel does not run on this CPU")
    # every W through the AVX2 micro-kernel, then none (the 4 x 4 tiles), then the zmm micro-kernel
    runs = [(0, "tiles"), (-1, "tiles")] + ([(-1, "zmm")] if "avx512f" in P._target_features() else [])
    digests = []
    for micro, zmm in runs:
        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / f"numba{micro}{zmm}"), PYTHONPATH=ROOT)
        out = subprocess.run([sys.executable, "-c", DELTA_BITS, str(micro), zmm], env=env, cwd=ROOT,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        digests.append(out.stdout.strip())
    assert len(set(digests)) == 1, runs



WIDE_VECTORS = """
import re
import numba
import numpy as np
from fastmlp import _kernels as P
i64 = np.int64(0)
a = np.zeros((4, 4), np.float32)
wgrad = (a, a, a, a[0], i64, i64, i64, i64, True, True, np.arange(4), a, 0.0, 0.0, True)
delta = (a, a, a, i64, True, a, i64, i64, np.arange(4))
print(P.VECTOR_ISA)
for kernel, args in ((P._weight_grad_block, wgrad), (P._delta_backward_cols, delta)):
    sig = tuple(numba.typeof(x) for x in args)
    kernel.compile(sig)
    fmas = re.findall(r"\\bvfn?m(?:add|sub)\\w*ps\\s[^\\n]*%([xyz]mm)", kernel.inspect_asm(sig))
    print(kernel.__name__, " ".join(sorted(set(fmas))))
"""


def test_avx512_tiles_stay_in_zmm_registers_where_llvm_prefers_256_bit_vectors(tmp_path):
    """LLVM tunes Intel's AVX-512 server cores (here Skylake-SP) to prefer 256-bit vectors; its
    vectoriser then split the tile kernels' zmm accumulators into twice as many ymm ones, spilled
    to the stack, and the weight gradient and the delta recursion ran at a third of their speed
    (on an Emerald Rapids Xeon). Their packed FMAs must be zmm ones whatever the tuning (compiled
    only, not run, so any x86-64 host checks it)."""
    features = "+sse2,+sse4.2,+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+avx512f,+avx512vl,+avx512bw,+avx512dq,+avx512cd," \
               "+prefer-256-bit"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=ROOT, NUMBA_CPU_NAME="skylake-avx512",
               NUMBA_CPU_FEATURES=features)
    out = subprocess.run([sys.executable, "-c", WIDE_VECTORS], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[:3] == ["avx512", "_weight_grad_block zmm", "_delta_backward_cols zmm"], out.stdout
