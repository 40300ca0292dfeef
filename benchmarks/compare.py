"""The issue-4 comparison table: fastmlp vs PyTorch CPU and vs the NumPy reference, 2 threads, one epoch
of 60,000 MNIST-shaped samples (synthetic digits), each trainer in its own subprocess.

    OPENBLAS_NUM_THREADS=2 .venv/bin/python benchmarks/compare.py [results.json]
"""
import json, sys
from fastmlp import bench
cases = [((100,),10),((100,),32),((100,),128),((512,512),128)]
rows = []
for hidden, bs in cases:
    rt = bench.run(hidden=hidden, batch_size=bs, threads=2, vs="torch")
    rn = bench.run(hidden=hidden, batch_size=bs, threads=2, vs="numpy", matmul=False)
    rows.append((rt, rn))
    print(f"{rt['network']:16s} b{bs:<4d} fastmlp {rt['fastmlp_samples_per_second']:9,.0f} (again {rn['fastmlp_samples_per_second']:9,.0f})  "
          f"torch {rt['reference_samples_per_second']:9,.0f} x{rt['ratio']:.2f}  numpy {rn['reference_samples_per_second']:9,.0f} x{rn['ratio']:.2f}  "
          f"fastmlp {rt['fastmlp_gflops']:.0f} GF = {100*rt['fastmlp_share_of_matmul']:.0f}% of matmul {rt['matmul_gflops']:.0f}", flush=True)
if len(sys.argv) > 1:
    json.dump(rows, open(sys.argv[1], "w"), indent=1)
