"""The thread pacer: which thread count runs the next chunk, from the chunks' timings (fake clocks
here), and the property it relies on: training gives bit-identical results for every thread count."""
import hashlib

import numpy as np
import pytest

from fastmlp import _pacer
from fastmlp._pacer import ThreadPacer


@pytest.fixture(autouse=True)
def no_verdicts():
    """Each test starts in a process where no pacer has run (the verdict memory is process-wide) and
    the threads have started (the first timing of a count in a process is dropped: see below)."""
    _pacer._last_verdict.clear()
    started = set(_pacer._started)
    _pacer._started.update(range(2, 257))
    yield
    _pacer._last_verdict.clear()
    _pacer._started.clear()
    _pacer._started.update(started)


def test_the_first_timing_of_a_thread_count_in_a_process_is_dropped():
    # the process's first parallel region starts the thread pool: that chunk is measured again
    _pacer._started.clear()
    p = ThreadPacer(2, 32)
    log = drive(p, lambda t, i: (1000.0 if i == 0 else 1.0 / 1.8) if t == 2 else 1.0, 4)
    first = 4096 // 64
    assert log == [(2, first), (2, first), (1, first), (2, 4096)]
    assert p.current == 2


def drive(pacer, seconds_per_sample, chunks, chunk=4096):
    """Run `chunks` plans against a machine where a thread count costs seconds_per_sample(threads, i)."""
    log = []
    for i in range(chunks):
        threads, samples = pacer.plan(chunk)
        log.append((threads, samples))
        pacer.record(threads, samples, samples * seconds_per_sample(threads, i))
    return log


def test_one_thread_asked_means_one_thread_and_full_chunks():
    p = ThreadPacer(1, 32)
    assert drive(p, lambda t, i: 1.0, 5) == [(1, 4096)] * 5


def test_measures_both_counts_on_small_chunks_first():
    p = ThreadPacer(2, 32)
    log = drive(p, lambda t, i: 1.0 / t, 3)
    first = 4096 // 64
    assert log == [(2, first), (1, first), (2, 4096)]


def test_probe_is_at_least_one_minibatch():
    p = ThreadPacer(2, 1000)
    assert p.plan(1000) == (2, 1000)
    p = ThreadPacer(2, 100)
    assert p.plan(1000) == (2, 100)


def test_quiet_machine_stays_on_all_threads_and_probes_less_and_less():
    p = ThreadPacer(2, 32)
    log = drive(p, lambda t, i: 1.0 / (1.8 if t == 2 else 1.0), 200)
    regular = [t for t, s in log[2:] if s == 4096]
    probes = [i for i, (t, s) in enumerate(log) if i >= 2 and t == 1]
    assert set(regular) == {2}
    assert all(s < 4096 for i, (t, s) in enumerate(log) if i in probes)
    gaps = np.diff(probes)
    assert probes[0] == 10  # the first measurement lost: 8 regular chunks, then a probe
    assert list(gaps[:3]) == [17, 33, 65] and all(g == 65 for g in gaps[3:])  # doubling, then capped


def test_contention_moves_to_one_thread_and_back():
    # two threads are 14x slower than one during chunks 50..149 (busy neighbours), 1.8x faster otherwise
    def cost(t, i):
        busy = 50 <= i < 150
        if t == 2:
            return 14.0 if busy else 1 / 1.8
        return 1.0

    p = ThreadPacer(2, 32)
    log = drive(p, cost, 300)
    regular = [(i, t) for i, (t, s) in enumerate(log) if s == 4096]
    assert all(t == 2 for i, t in regular if i < 50)
    # the first slow chunk triggers a probe of one thread, which wins: one thread from then on
    assert log[51] == (1, 256) and all(t == 1 for i, t in regular if 52 <= i < 150)
    # after the neighbours stop, a probe of two threads wins within MAX_INTERVAL chunks
    assert all(t == 2 for i, t in regular if i >= 150 + _pacer.MAX_INTERVAL + 2)


def test_probes_are_bounded_in_time():
    # two threads are 100x slower per sample than one: a probe of them runs one minibatch, not 1/16 chunk
    p = ThreadPacer(2, 32)
    log = drive(p, lambda t, i: 100.0 if t == 2 else 1.0, 30)
    assert log[0] == (2, 64)  # the first measurement: 1/64 chunk, nothing known yet
    later = [s for t, s in log[1:] if t == 2]
    assert later and all(s == 32 for s in later)


def test_a_new_pacer_starts_from_the_last_verdict():
    now = [0.0]
    p = ThreadPacer(2, 32, clock=lambda: now[0])
    drive(p, lambda t, i: 14.0 if t == 2 else 1.0, 3)
    assert p.current == 1
    now[0] = 10.0
    q = ThreadPacer(2, 32, clock=lambda: now[0])
    log = drive(q, lambda t, i: 14.0 if t == 2 else 1.0, 20)
    assert log[0] == (1, 64) and log[1] == (1, 4096)  # no costly first probe of two threads
    assert [i for i, (t, _) in enumerate(log) if t == 2] == [_pacer.MAX_INTERVAL // 4 + 1]
    now[0] = 10.0 + _pacer.VERDICT_SECONDS + 1  # an old verdict is forgotten
    r = ThreadPacer(2, 32, clock=lambda: now[0])
    assert r.plan(4096) == (2, 64)


def test_contention_costs_little_time():
    """Under constant contention (2 threads 14x slower), the paced run is >= 0.9x as fast as one thread."""
    p = ThreadPacer(2, 32)
    log = drive(p, lambda t, i: 14.0 if t == 2 else 1.0, 400)
    paced = sum(s * (14.0 if t == 2 else 1.0) for t, s in log)
    one = sum(s for _, s in log)
    assert one / paced >= 0.9


def _trained_hash(fm, sizes, batch, threads, dtype, optimizer, activation, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    X = rng.random((600, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], 600)
    net = fm.MLP(sizes, seed=0, dtype=dtype, activation=activation)
    fm.train(net, X, y, epochs=1, batch_size=batch, lr=0.05, optimizer=optimizer, threads=threads, verbose=False)
    return hashlib.sha256(net.params.tobytes()).hexdigest()


@pytest.mark.parametrize("sizes,batch,dtype,optimizer,activation", [
    ([50, 37, 13, 3], 7, "float32", "sgd", "relu"),
    ([50, 37, 13, 3], 33, "float64", "adam", "tanh"),
    ([784, 100, 10], 1, "float32", "sgd", "relu"),
    ([784, 100, 10], 128, "float32", "momentum", "sigmoid"),
    ([20, 129, 65, 5], 19, "float32", "adam", "relu"),
])
def test_training_is_bit_identical_for_every_thread_count(fm, sizes, batch, dtype, optimizer, activation):
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    assert (_trained_hash(fm, sizes, batch, 1, dtype, optimizer, activation)
            == _trained_hash(fm, sizes, batch, 2, dtype, optimizer, activation))


def test_chunking_and_thread_counts_change_no_number(fm, monkeypatch):
    """Whatever chunks and thread counts the pacer picks, parameters and history are bit-identical."""
    import numba
    rng = np.random.default_rng(5)
    X = rng.random((1000, 30)).astype(np.float32)
    y = rng.integers(0, 4, 1000)

    def run(plan):
        monkeypatch.setattr(ThreadPacer, "plan", plan)
        net = fm.MLP([30, 17, 4], seed=1)
        h = fm.train(net, X, y, epochs=2, batch_size=16, lr=0.05, threads=2, verbose=False)
        return net.params.copy(), h["loss"], h["accuracy"]

    threads = min(2, numba.config.NUMBA_NUM_THREADS)
    whole = run(lambda self, chunk: (1, chunk))
    calls = []

    def small_alternating(self, chunk):
        calls.append(1)
        return (threads if len(calls) % 2 else 1), 48

    pieces = run(small_alternating)
    assert len(calls) > 20
    assert np.array_equal(whole[0], pieces[0])
    assert whole[1] == pieces[1] and whole[2] == pieces[2]
