"""The thread pacer: which thread count runs the next chunk, from the chunks' timings (fake clocks
here), and the property it relies on: training gives bit-identical results for every thread count."""
import hashlib
import time

import numpy as np
import pytest

from fastmlp import _pacer
from fastmlp._pacer import ThreadPacer


@pytest.fixture(autouse=True)
def no_verdicts(monkeypatch):
    """Each test starts in a process where no pacer has run (the verdict memory is process-wide) and
    the threads have started (the first timing of a count in a process is dropped: see below), on
    cores that look idle (the run queue is the real machine's unless a test says otherwise)."""
    monkeypatch.setattr(_pacer, "cores_busy", lambda threads: False)
    _pacer._last_verdict.clear()
    started = set(_pacer._started)
    _pacer._started.update(range(2, 257))
    yield
    _pacer._last_verdict.clear()
    _pacer._started.clear()
    _pacer._started.update(started)


def test_the_first_timing_of_a_thread_count_in_a_process_is_dropped():
    # the process's first parallel region starts the threads: that chunk is measured again at once.
    # On idle cores the start is no probe's cost (charged to the probe budget, 640 s here, it kept
    # the process's first fit on one thread).
    _pacer._started.clear()
    p = ThreadPacer(2, 32)
    log = drive(p, lambda t, i: (10.0 if i == 0 else 1.0 / 1.8) if t == 2 else 1.0, 5)
    first = 4096 // 64
    assert log == [(2, first), (2, first), (1, first)] + [(2, 4096)] * 2
    assert p.current == 2 and p.probe_spent == first / 1.8
    # on busy cores it counts against the budget, as a probe does: both timings of two threads
    _pacer._started.clear()
    _pacer._last_verdict.clear()
    p = ThreadPacer(2, 32, busy=lambda: True)
    log = drive(p, lambda t, i: 10.0 if t == 2 else 1.0, 12)
    assert log == [(1, 4096)] * 5 + [(2, first)] * 2 + [(1, 4096)] * 5
    assert p.probe_spent == 2 * 10.0 * first


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


def test_a_small_run_trains_on_one_thread_without_looking_or_probing(monkeypatch, small_run_flops):
    monkeypatch.setattr(_pacer, "SMALL_RUN_FLOPS", small_run_flops)
    looks = []
    p = ThreadPacer(2, 32, busy=lambda: looks.append(1) or False, flops=small_run_flops / 2)
    assert drive(p, lambda t, i: 1.0 / t, 5) == [(1, 4096)] * 5 and not looks
    # at the threshold, the pacer measures both counts as it does when the run's size is unknown
    for flops in (small_run_flops, None):
        _pacer._last_verdict.clear()
        p = ThreadPacer(2, 32, flops=flops)
        assert drive(p, lambda t, i: 1.0 / t, 3) == [(2, 64), (1, 64), (2, 4096)]


def test_fit_tells_the_pacer_the_flops_of_the_whole_run(fm, monkeypatch, small_run_flops):
    # (epochs - epochs done) x samples - the current epoch's position, x 6 flops per weight
    monkeypatch.setattr(_pacer, "SMALL_RUN_FLOPS", small_run_flops)
    from fastmlp import _kernels as k
    from fastmlp import training
    seen, threads = [], []
    init = ThreadPacer.__init__
    monkeypatch.setattr(ThreadPacer, "__init__", lambda self, *a, flops=None, **kw: seen.append(flops)
                        or init(self, *a, flops=flops, **kw))
    run = k._workers.run
    monkeypatch.setattr(k._workers, "run",
                        lambda args, nthreads, sync: threads.append(nthreads) or run(args, nthreads, sync))
    rng = np.random.default_rng(0)
    X, y = rng.random((300, 64)).astype(np.float32), rng.integers(0, 10, 300)
    tr = training.Trainer(fm.MLP([64, 100, 10], seed=0), batch_size=32, threads=2)
    tr.fit(X, y, epochs=3, verbose=False)
    per_sample = 6 * (64 * 100 + 100 * 10)
    assert seen == [3 * 300 * per_sample] and seen[0] < small_run_flops
    assert set(threads) == {1}  # a small run: no worker thread is woken
    tr.position = 100  # (as a checkpoint taken mid-epoch would resume)
    tr.fit(X, y, epochs=5, verbose=False)
    assert seen[1] == (2 * 300 - 100) * per_sample


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


def test_probes_of_several_threads_on_idle_cores_last_long_enough():
    # realistic speeds (10 us per sample on one thread, 30 on two): on idle cores a probe of two
    # threads runs at least MIN_PROBE_SECONDS of one thread's work (to a whole minibatch), so that
    # waking the sleeping threads (milliseconds on a virtual machine) does not decide it
    p = ThreadPacer(2, 32)
    log = drive(p, lambda t, i: 1e-5 if t == 1 else 3e-5, 200)
    probes = [s for i, (t, s) in enumerate(log) if i >= 2 and t == 2]
    floor = int(_pacer.MIN_PROBE_SECONDS / 1e-5) // 32 * 32
    assert probes and all(s == floor for s in probes)
    # on busy cores the probes stay small (a probe there waits for descheduled threads)
    q = ThreadPacer(2, 32, busy=lambda: True)
    log = drive(q, lambda t, i: 1e-5 if t == 1 else 3e-5, 200)
    probes = [s for t, s in log if t == 2]
    assert probes and all(s <= 4096 * _pacer.PROBE_FRACTION for s in probes)


def test_a_slow_first_measurement_of_two_threads_on_idle_cores_is_measured_again_at_once():
    # An estimator fit after a warm-up fit (scikit-learn's defaults: batch 200, chunks of 3,000
    # samples), as seen on a 2-core VM: two threads' first minibatch took 1.73 ms (it woke their
    # threads), one thread's 1.46 ms, later two threads took 0.7 ms per minibatch. Before, the run
    # went to one thread for 16 chunks (the probe budget, priced at 1.73 ms, forbade an earlier probe).
    def cost(t, i):
        if t == 1:
            return 1.46e-3 / 200
        return 1.73e-3 / 200 if i == 0 else 0.7e-3 / 200

    p = ThreadPacer(2, 200)
    log = drive(p, cost, 12, chunk=3000)
    floor = int(_pacer.MIN_PROBE_SECONDS / (1.46e-3 / 200)) // 200 * 200
    assert log[:4] == [(2, 200), (1, 200), (2, floor), (2, 3000)]
    assert all(t == 2 for t, s in log[3:] if s == 3000)
    # on busy cores the first verdict stands (a probe of several threads costs a lot there)
    q = ThreadPacer(2, 200, busy=lambda: True)
    log = drive(q, cost, 12, chunk=3000)
    assert log[0][0] == 1 and (2, floor) not in log


def test_a_moment_of_slow_host_costs_a_probe_not_a_spell_on_one_thread():
    # two threads 1.8x faster than one, but for two chunks a moment of the host (a virtual
    # machine's core lent elsewhere) makes them 10x slower: the slow chunk sends a probe of one
    # thread, which wins while the moment lasts, and two threads, measured again at once, win back
    # (they used to wait FIRST_INTERVAL regular chunks on one thread)
    def cost(t, i):
        if t == 2:
            return 10.0 if 20 <= i < 22 else 1 / 1.8
        return 1.0

    p = ThreadPacer(2, 32)
    log = drive(p, cost, 30)
    assert log[21] == (1, 256) and log[22][0] == 2
    assert all(t == 2 for t, s in log[22:] if s == 4096) and p.current == 2
    # while the host stays slow for two threads, one thread keeps the run (the measurement again
    # loses, and later probes keep to the budget)
    q = ThreadPacer(2, 32)
    log = drive(q, lambda t, i: (10.0 if i >= 20 else 1 / 1.8) if t == 2 else 1.0, 60)
    assert log[21] == (1, 256) and {t for t, s in log[23:] if s == 4096} == {1}


def test_a_new_pacer_starts_from_the_last_verdict():
    now = [0.0]
    p = ThreadPacer(2, 32, clock=lambda: now[0])
    drive(p, lambda t, i: 14.0 if t == 2 else 1.0, 3)
    assert p.current == 1
    now[0] = 10.0
    q = ThreadPacer(2, 32, clock=lambda: now[0], busy=lambda: True)
    log = drive(q, lambda t, i: 14.0 if t == 2 else 1.0, 20)
    # no costly first probe of two threads, and one thread measured on whole chunks
    assert log[0] == (1, 4096) and log[1] == (1, 4096)
    assert [i for i, (t, _) in enumerate(log) if t == 2] == [_pacer.MAX_INTERVAL // 4 + 1]
    now[0] = 10.0 + _pacer.VERDICT_SECONDS + 1  # an old verdict is forgotten
    r = ThreadPacer(2, 32, clock=lambda: now[0])
    assert r.plan(4096) == (2, 64)


def test_a_verdict_of_one_thread_is_not_followed_on_idle_cores():
    # a small run (a warm-up fit of a few minibatches) found one thread faster; a larger run on
    # cores that look idle measures both counts again instead of starting on one thread
    now = [0.0]
    p = ThreadPacer(2, 32, clock=lambda: now[0])
    drive(p, lambda t, i: 14.0 if t == 2 else 1.0, 3)
    assert p.current == 1 and _pacer._last_verdict[2][0] == 1
    now[0] = 10.0
    q = ThreadPacer(2, 32, clock=lambda: now[0])
    log = drive(q, lambda t, i: 1.0 / t, 3)
    assert log == [(2, 64), (1, 64), (2, 4096)]
    # a verdict of two threads is followed on idle cores too: one thread is not measured first
    r = ThreadPacer(2, 32, clock=lambda: now[0])
    assert drive(r, lambda t, i: 1.0 / t, 2) == [(2, 64), (2, 4096)]


def test_contention_costs_little_time():
    """Under constant contention (2 threads 14x slower), the paced run is >= 0.9x as fast as one thread."""
    p = ThreadPacer(2, 32)
    log = drive(p, lambda t, i: 14.0 if t == 2 else 1.0, 400)
    paced = sum(s * (14.0 if t == 2 else 1.0) for t, s in log)
    one = sum(s for _, s in log)
    assert one / paced >= 0.9


def test_busy_cores_start_on_one_thread_and_a_short_run_never_probes_two():
    # scikit-learn's digits under contention: one thread 10 us per sample, two threads 1 ms (each
    # parallel region waits for a descheduled thread); 1,824-sample chunks, 50 epochs of one chunk
    looks = []
    p = ThreadPacer(2, 32, busy=lambda: looks.append(1) or True)
    log = drive(p, lambda t, i: 1e-3 if t == 2 else 1e-5, 10, chunk=1824)
    # 0.18 s on one thread: a first probe of two would cost more, and one thread is measured on
    # whole chunks, which it runs anyway (a probe would be one more kernel call)
    assert log == [(1, 1824)] * 10
    assert looks
    log = drive(p, lambda t, i: 1e-3 if t == 2 else 1e-5, 40, chunk=1824)
    twos = [i for i, (t, s) in enumerate(log) if t == 2]
    # measured once the run has taken 0.2 s (10 x the price of an unknown probe), and lost; tried
    # again only when the run has taken 10 x what the probes cost
    assert twos == [0, 23] and all(s == 32 for t, s in log if t == 2)
    assert p.probe_spent <= _pacer.PROBE_BUDGET * p.elapsed


def test_busy_then_idle_cores_move_to_two_threads():
    busy = [True]
    p = ThreadPacer(2, 32, busy=lambda: busy[0], clock=iter(range(0, 10**6, 1)).__next__)
    cost = lambda t, i: 1e-6 / 1.8 if t == 2 else 1e-6  # noqa: E731 (4 ms chunks on one thread)
    log = drive(p, cost, 6)
    assert {t for t, _ in log} == {1}
    busy[0] = False  # the neighbours stopped: two threads are measured (unknown, so free) and win
    log = drive(p, cost, 6)
    # (the measurement runs MIN_PROBE_SECONDS of one thread's work: here more than a chunk)
    assert log[:2] == [(2, 4096), (2, 4096)]


def test_newly_busy_cores_move_to_one_thread_before_a_regular_chunk():
    busy = [False]
    now = [0.0]
    p = ThreadPacer(2, 32, busy=lambda: busy[0], clock=lambda: now[0])

    def cost(t, i):
        now[0] += 1.0  # every chunk takes longer than LOOK_SECONDS: each plan looks again
        return (50.0 if busy[0] else 1 / 1.8) if t == 2 else 1.0

    drive(p, cost, 5)
    assert p.current == 2
    busy[0] = True
    log = drive(p, cost, 3)
    assert log == [(1, 4096)] * 3  # the look found the cores busy: one thread at once
    busy[0] = False
    p2 = ThreadPacer(2, 32, busy=lambda: busy[0], clock=lambda: now[0])
    drive(p2, cost, 5)
    busy[0] = True
    # once per busy spell: a network that is faster on two threads all the same gets them back
    # after a probe interval, and keeps them while the cores stay busy
    log = drive(p2, lambda t, i: now.__setitem__(0, now[0] + 1) or (1 / 1.8 if t == 2 else 1.0), 12)
    assert log[:_pacer.FIRST_INTERVAL + 2] == [(1, 4096)] * _pacer.FIRST_INTERVAL + [(2, 64), (2, 4096)]
    assert {t for t, s in log[_pacer.FIRST_INTERVAL + 1:] if s == 4096} == {2}


def test_cores_that_looked_busy_for_a_moment_get_several_threads_back_at_once():
    # a kernel thread runnable across both looks of one plan (about one look in a hundred on an
    # idle 2-core VM): one chunk on one thread, then two threads measured at once (they win),
    # where the run used to stay on one thread for FIRST_INTERVAL chunks, at half speed
    alarms = [0]  # looks still to find the cores busy

    def busy():
        alarms[0] -= 1
        return alarms[0] >= 0

    now = [0.0]

    def cost(t, i):
        now[0] += 1.0  # every chunk takes longer than LOOK_SECONDS: each plan looks again
        return 1 / 1.8 if t == 2 else 1.0

    p = ThreadPacer(2, 32, busy=busy, clock=lambda: now[0])
    drive(p, cost, 4)
    assert p.current == 2
    alarms[0] = 1
    log = drive(p, cost, 4)
    assert log == [(1, 4096), (2, 64), (2, 4096), (2, 4096)]
    # the same when the look that found them busy was the run's first
    alarms[0] = 1
    q = ThreadPacer(2, 32, busy=busy, clock=lambda: now[0])
    assert drive(q, cost, 3) == [(1, 4096), (2, 64), (2, 4096)]
    # while they stay busy, one thread (test_newly_busy_cores_move_to_one_thread_before_a_regular_chunk)
    alarms[0] = 10
    r = ThreadPacer(2, 32, busy=busy, clock=lambda: now[0])
    assert drive(r, cost, 4) == [(1, 4096)] * 4


def test_looks_at_the_run_queue_are_reused_for_a_while():
    now = [0.0]
    looks = []
    p = ThreadPacer(2, 32, busy=lambda: looks.append(now[0]) or False, clock=lambda: now[0])

    def cost(t, i):
        now[0] += _pacer.LOOK_SECONDS / 4
        return 1 / 1.8 if t == 2 else 1.0

    drive(p, cost, 40)
    assert len(looks) <= 40 / 4 + 1 and all(b - a >= _pacer.LOOK_SECONDS for a, b in zip(looks, looks[1:]))


def test_probes_of_two_threads_keep_to_their_budget_when_contention_goes_unseen():
    # busy neighbours the run queue does not show (another virtual machine on the same cores)
    p = ThreadPacer(2, 32)
    log = drive(p, lambda t, i: 100.0 if t == 2 else 1.0, 400)
    assert p.probe_spent <= _pacer.PROBE_BUDGET * p.elapsed
    assert sum(1 for t, _ in log if t == 2) > 2  # still tried now and then


def test_busy_means_fewer_free_cpus_than_threads(monkeypatch):
    monkeypatch.undo()  # the real cores_busy, a fake run queue
    monkeypatch.setattr(_pacer.os, "cpu_count", lambda: 2)
    for others, threads, busy in [(0, 2, False), (1, 2, True), (1, 1, False), (2, 1, True), (None, 2, False)]:
        monkeypatch.setattr(_pacer, "runnable_elsewhere", lambda n=others: n)
        assert _pacer.cores_busy(threads, sleep=lambda s: None) is busy
    # a thread that is runnable at one look only (a kernel thread's moment) is not contention
    for queue, busy in [((1, 0), False), ((0, 1), False), ((1, 1), True)]:
        looks, slept = list(queue), []
        monkeypatch.setattr(_pacer, "runnable_elsewhere", lambda looks=looks: looks.pop(0))
        assert _pacer.cores_busy(2, sleep=slept.append) is busy
        assert slept == ([_pacer.RELOOK_SECONDS] if queue[0] else [])


def test_the_second_look_spins_instead_of_giving_the_core_away(monkeypatch):
    # on busy cores a sleeping thread comes back a scheduler slice later: the wait between the two
    # looks keeps the CPU, and still lasts at least RELOOK_SECONDS
    monkeypatch.undo()
    assert _pacer.cores_busy.__defaults__ == (_pacer._spin,)

    def no_sleep(seconds):
        raise AssertionError("slept")

    monkeypatch.setattr(_pacer.time, "sleep", no_sleep)
    monkeypatch.setattr(_pacer.os, "cpu_count", lambda: 2)
    stamps = []
    monkeypatch.setattr(_pacer, "runnable_elsewhere", lambda: stamps.append(time.perf_counter()) or 2)
    assert _pacer.cores_busy(2) is True
    assert len(stamps) == 2 and stamps[1] - stamps[0] >= _pacer.RELOOK_SECONDS


def test_runnable_elsewhere_reads_the_run_queue():
    import sys
    n = _pacer.runnable_elsewhere()
    if sys.platform.startswith("linux"):
        assert isinstance(n, int) and n >= 0
    else:
        assert n is None


def test_the_call_that_loads_the_kernels_wakes_no_worker_thread(fm, monkeypatch):
    # fit() first calls the driver on no sample (compile or load). On several threads that call
    # still wakes the workers, and one that wakes after it then takes the GIL from the training
    # thread for as long as busy cores keep it descheduled, at every fit.
    from fastmlp import _kernels as k
    calls = []
    run = k._workers.run
    monkeypatch.setattr(k._workers, "run", lambda args, nthreads, sync: calls.append((args[5].shape[0], nthreads))
                        or run(args, nthreads, sync))
    monkeypatch.setattr(_pacer, "cores_busy", lambda threads: True)
    rng = np.random.default_rng(0)
    for threads in (2, None):
        calls.clear()
        fm.train(fm.MLP([8, 5, 3], seed=0), rng.random((40, 8)), rng.integers(0, 3, 40), epochs=1, batch_size=4,
                 threads=threads, verbose=False)
        assert calls[0] == (0, 1) and all(n > 0 for n, _ in calls[1:])


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
