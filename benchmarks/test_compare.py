"""compare.py's table of the epochs on cores sharing an L3, and core_latency.py's round trip."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the scripts beside this file

import compare  # noqa: E402
import core_latency  # noqa: E402


def _row(runs, trips, case="784-100-10, 32"):
    return {"case": case, "runs": runs, "round_trip_ns": trips,
            "samples_per_second": {t: sorted(v)[len(v) // 2] for t, v in runs.items()},
            "test_accuracy": {t: 0.8 for t in runs}, "flops_per_sample": 1e6, "done_flops_per_sample": 9e5}


def test_shares_l3_is_the_middle_range():
    assert [core_latency.shares_l3(x) for x in (None, 41.0, 69.9, 70.0, 150.0, 299.9, 300.0, 1300.0)] == [
        False, False, False, True, True, True, False, False]


def test_near_medians_count_only_epochs_with_both_round_trips_in_range():
    row = _row({"fastmlp": [100.0, 200.0, 300.0, 400.0], "jax": [10.0, 20.0, 30.0]},
               {"fastmlp": [[100, 100], [500, 100], [90, 80], [100, 650]],
                "jax": [[None, 100], [120, 110], [41, 95]]})
    near = compare.near_medians(row)
    # fastmlp: the 1st and 3rd epochs (the 2nd started far apart, the 4th ended so); jax: the 2nd
    # only (the 1st was not measured before, the 3rd started on one core's two SMT threads)
    assert near == {"fastmlp": (200.0, 2), "jax": (20.0, 1)}


def test_near_medians_of_a_run_saved_before_round_trips_were_recorded():
    assert compare.near_medians({"runs": {"fastmlp": [1.0]}}) == {}


def test_report_prints_both_tables(capsys, tmp_path):
    row = _row({"fastmlp": [300.0, 900.0, 320.0], "jax": [200.0, 100.0, 220.0]},
               {"fastmlp": [[100, 100], [100, 100], [600, 600]], "jax": [[100, 100], [600, 600], [100, 100]]})
    out = {"threads": 2, "peers": ["jax"], "rows": [row],
           "ceiling": {"pinned": [200.0, "Haswell"], "unpinned": [400.0, "SkylakeX"], "unpinned_runs": [400.0]}}
    compare.report(out)
    text = capsys.readouterr().out
    # the plain medians: fastmlp 320 / jax 200; on cores sharing an L3: fastmlp 600 (300 and 900) /
    # jax 210 (200 and 220)
    assert "| 784-100-10, 32 | 0.3k | 0.2k | 1.60x |" in text
    assert "| 784-100-10, 32 | 0.6k (2) | 0.2k (2) | 2.86x |" in text
    assert "fastmlp 300 [100/100], 900 [100/100], 320 [600/600]" in text
    # --report prints the same tables from the saved file, the peers read from its rows
    del out["peers"]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(out))
    argv = sys.argv
    sys.argv = ["compare.py", "--report", str(path)]
    try:
        compare.main()
    finally:
        sys.argv = argv
    assert capsys.readouterr().out == text


def test_round_trip_is_measured_between_two_threads():
    rt = core_latency.round_trip_ns(count=200, warm=20)
    assert rt is not None and 0 < rt < 1e8
