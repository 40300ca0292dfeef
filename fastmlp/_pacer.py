"""How many threads the next chunk of minibatches runs on: all that were asked for, or one.

Every parallel region waits for all of its threads. When other processes keep the cores busy, the
kernel's second thread is often descheduled and each region stalls until it runs again: a step of
microseconds takes milliseconds, and two threads train many times slower than one. The trainer
therefore times its chunks and runs each on the thread count that is currently faster, trying the
other count now and then on a small chunk. The kernels give bit-identical results for every thread
count (each element is summed in the same order whatever the split), so the choice changes only
the speed, never the numbers.

Under contention even one probe of several threads can cost more than a whole short run on one
thread (one minibatch of a few parallel regions, each waiting for a scheduler time slice). So the
pacer also looks at the run queue (other processes' runnable threads, cheap to read on Linux):
when the cores look busy it starts on one thread, and probes of several threads are rationed to a
share of the run's time, priced before their first measurement as if the cores were contended.
While it runs on several threads, a look that finds the cores newly busy probes one thread at once,
before a whole chunk of stalled regions.
"""
import os
import time

# A probe runs at most this fraction of a regular chunk, and at most this share of a regular chunk's
# time at the probed count's last known speed (at least one minibatch either way); the first
# measurement of a count is smaller still.
PROBE_FRACTION = 1 / 16
FIRST_PROBE_FRACTION = 1 / 64
PROBE_TIME_SHARE = 1 / 8
# Regular chunks between two probes of the other thread count: starts here, doubles each time the
# probe loses (so a losing probe costs a shrinking share of the time), back to the start when it wins.
FIRST_INTERVAL = 4
MAX_INTERVAL = 64
# A count must be this much faster per sample to take over (timings of small chunks are noisy).
MARGIN = 1.1
# A regular chunk this much slower per sample than the running figure probes at once (contention
# started or ended).
SURPRISE = 2.0
# Weight of the newest regular chunk in the running seconds-per-sample figure of the current count.
SMOOTHING = 0.5
# A new pacer starts from the verdict of the last one in this process if it is this recent: the load
# of the machine, not the network, decides, and short runs cannot afford to find it out again. (A
# verdict of one thread only while the cores look busy: see ThreadPacer.)
VERDICT_SECONDS = 30.0
# Probes and first measurements of several threads take at most this share of a pacer's time so far
# (themselves included); a probe that does not fit waits for a later chunk.
PROBE_BUDGET = 1 / 10
# The price of a probe of several threads whose speed is not known yet, when the cores look busy
# (a few parallel regions, each waiting for a descheduled thread); free when they look idle.
BUSY_PROBE_SECONDS = 0.02
# A run of fewer floating-point operations than this (a few milliseconds of one thread's arithmetic)
# runs on one thread, without looking at the run queue or timing anything: what several threads
# would save of such a run is less than what measuring them and waking their threads costs, on idle
# cores and busy ones alike (benchmarks/RESULTS.md).
SMALL_RUN_FLOPS = 3e8
# A look at the run queue is reused for this long.
LOOK_SECONDS = 0.05
# On cores that look idle, a probe of several threads runs for at least this long at the current
# count's speed: after a spell on one thread the other threads sleep, and waking them took 1-2 ms
# on a virtual machine (its idle virtual CPUs halt), so a probe of a few minibatches timed mostly
# that, lost every time, and kept runs on one thread although two were faster.
MIN_PROBE_SECONDS = 0.02

_last_verdict = {}  # max thread count -> (faster count, time.monotonic() of the verdict)
# Thread counts that have run a timed chunk in this process. The first parallel region of a process
# starts the threading layer's pool (tens of milliseconds): a chunk that includes it says nothing
# about the speed of that count, so its timing is dropped (charged to the probe budget when the cores
# look busy) and the count measured again.
_started = set()


def runnable_elsewhere():
    """Threads of other processes running or waiting for a CPU now (Linux's /proc: the run queue's
    length from /proc/loadavg less this process's running threads), or None where unreadable."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        own = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:  # the thread ended
                continue
            own += stat[stat.rindex(")") + 2] == "R"
        return max(running - own, 0)
    except (OSError, ValueError, IndexError):
        return None


# A look that finds the cores busy looks again this much later, and they are busy only if both
# looks say so: kernel threads and short-lived processes are runnable for microseconds now and then
# (one look in twenty on an idle 2-core machine saw one), and each false alarm sent a run to one
# thread for a probe interval. The wait spins: on busy cores a sleeping thread gives its core away
# and gets it back only a scheduler slice later, as long as a short fit's whole work.
RELOOK_SECONDS = 0.0002


def _spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def cores_busy(threads, sleep=_spin):
    """Whether other processes' runnable threads leave fewer than `threads` CPUs free, now and
    RELOOK_SECONDS later."""
    cpus = os.cpu_count() or 1
    for look in range(2):
        if look:
            sleep(RELOOK_SECONDS)
        others = runnable_elsewhere()
        if others is None or others + threads <= cpus:
            return False
    return True


class ThreadPacer:
    """plan(chunk) -> (threads, samples) for the next kernel call; record(threads, samples, seconds)
    after it. With threads == 1, or a run's `flops` (when known) under SMALL_RUN_FLOPS, it always
    plans one thread and full chunks. busy() -> bool says whether other processes keep the cores
    busy (default: cores_busy(threads))."""

    def __init__(self, threads, batch_size, clock=time.monotonic, busy=None, flops=None):
        if flops is not None and flops < SMALL_RUN_FLOPS:
            threads = 1
        self.max_threads = threads
        self.batch_size = batch_size
        self.clock = clock
        self.busy = busy if busy is not None else (lambda: cores_busy(threads))
        self.per_sample = {}  # thread count -> seconds per sample (inf: slower, not measured here)
        self.current = threads
        self.interval = FIRST_INTERVAL
        self.since_probe = 0
        self.probe_now = False
        self.regular = None  # running seconds per sample of the current count's regular chunks
        self.elapsed = 0.0  # seconds of all recorded chunks
        self.probe_spent = 0.0  # of which in probes and first measurements of several threads
        self.looked = None  # (clock() of the last look at the run queue, its answer)
        # one thread was chosen because a look found the cores busy (at the start, or while on several
        # threads): several are measured again as soon as a look finds them idle
        self.busy_seen = False
        self.planned = None  # (threads, regular) of the last plan
        self.confirm_now = False  # measure several threads again at once (see record)
        if threads == 1:
            return
        verdict = _last_verdict.get(threads)
        if verdict is not None and clock() - verdict[1] < VERDICT_SECONDS and (verdict[0] > 1 or self._look()):
            # (a verdict of one thread counts only while the cores still look busy: on idle cores it
            # may have come from a run too small for several threads, e.g. a warm-up fit of a few
            # minibatches, and a larger run must not spend its first chunks on one thread for it)
            self.current = verdict[0]
            self.per_sample[self._other()] = float("inf")  # known to be slower: probe it later
            self.interval = MAX_INTERVAL // 4
            self.busy_seen = self.current == 1
        elif self._look():
            self._settle_on_one(True)

    def _other(self):
        return 1 if self.current != 1 else self.max_threads

    def _settle_on_one(self, by_look):
        # run on one thread; several threads are measured when the budget allows, or (by_look: a
        # look at the run queue found the cores busy) as soon as a look finds them idle
        self.current = 1
        self.busy_seen = by_look
        self.per_sample.setdefault(self.max_threads, float("inf"))
        self.regular = None

    def _look(self):
        now = self.clock()
        if self.looked is None or now - self.looked[0] >= LOOK_SECONDS or now < self.looked[0]:
            self.looked = (now, bool(self.busy()))
        return self.looked[1]

    def _affordable(self, threads, samples):
        # a probe of several threads fits in the budget at its expected price
        if threads == 1:
            return True
        rate = self.per_sample.get(threads, float("inf"))
        if rate != float("inf"):
            price = rate * samples
        else:
            price = BUSY_PROBE_SECONDS if self._look() else 0.0
        return self.probe_spent + price <= PROBE_BUDGET * (self.elapsed + price)

    def _probe_samples(self, threads, chunk, fraction):
        # (the current count's speed: its regular chunks', else its one measurement)
        rate = self.per_sample.get(threads)
        regular = self.regular if self.regular is not None else self.per_sample.get(self.current)
        samples = chunk * (FIRST_PROBE_FRACTION if rate == float("inf") else fraction)
        if rate and regular and rate != float("inf"):
            samples = min(samples, PROBE_TIME_SHARE * chunk * regular / rate)
        if threads > 1 and regular and not self._look():
            samples = max(samples, MIN_PROBE_SECONDS / regular)
        samples = int(samples) // self.batch_size * self.batch_size
        return min(chunk, max(self.batch_size, samples))

    def plan(self, chunk):
        threads, samples = self._plan(chunk)
        self.planned = (threads, threads == self.current and samples == chunk and len(self.per_sample) == 2)
        return threads, samples

    def _plan(self, chunk):
        if self.max_threads == 1:
            return 1, chunk
        for count in (self.max_threads, 1):  # measure both counts first, on small chunks
            if count not in self.per_sample:
                if count == self.current == 1:
                    # (settled on one thread before measuring it: a whole chunk, as it would run
                    # anyway, measures it; a probe would be one more kernel call)
                    return 1, chunk
                samples = self._probe_samples(count, chunk, FIRST_PROBE_FRACTION)
                if self._affordable(count, samples):
                    return count, samples
                self._settle_on_one(self._look())  # (the look that priced the probe, reused)
        other = self._other()
        if self.confirm_now:
            self.confirm_now = False
            return other, self._probe_samples(other, chunk, PROBE_FRACTION)
        if self.busy_seen and self.current == 1 and not self._look():
            # on one thread because a look found the cores busy, and now they look idle: measure
            # several threads at once, not after a probe interval (on an idle 2-core VM about one
            # look in a hundred finds a kernel thread runnable twice in a row, and each such false
            # alarm kept a run on one thread, at half speed, for FIRST_INTERVAL whole chunks)
            self.busy_seen = False
            self.probe_now = True
        if self.probe_now or self.since_probe >= self.interval:
            samples = self._probe_samples(other, chunk, PROBE_FRACTION)
            if self._affordable(other, samples):
                return other, samples
        elif self.current > 1:
            if not self._look():
                self.busy_seen = False
            elif not self.busy_seen:
                # newly busy: one thread now, not after a whole chunk of stalled regions; several
                # are measured again when the budget allows (once per busy spell, so a network
                # that is faster on several threads all the same keeps them)
                self.per_sample[self.max_threads] = float("inf")
                self._settle_on_one(True)
                self.since_probe = 0
                self.interval = FIRST_INTERVAL
        return self.current, chunk

    def record(self, threads, samples, seconds):
        if self.max_threads == 1 or samples <= 0:
            return
        planned, self.planned = self.planned, None
        regular = planned[1] if planned is not None and planned[0] == threads else threads == self.current
        self.elapsed += seconds
        if threads > 1 and threads not in _started:
            _started.add(threads)
            # (on busy cores it counts against the probe budget, as a probe; on idle ones it is the
            # process's one start of its threads, and charged, it kept a first fit on one thread)
            if self._look():
                self.probe_spent += seconds
            return
        if threads > 1 and not regular:
            self.probe_spent += seconds
        rate = seconds / samples
        if regular:
            self._record_regular(rate)
            return
        self.per_sample[threads] = rate
        if len(self.per_sample) < 2:
            return
        if threads != self.current:  # a probe of the other count
            self.probe_now = False
            self.since_probe = 0
            if rate * MARGIN < self.per_sample[self.current]:
                if self.current > 1 and not self._look():
                    # Several threads lost to one on cores that look idle: measure them again at
                    # once, for MIN_PROBE_SECONDS, outside the probe budget. Their first
                    # measurement is a minibatch or two that includes waking their threads
                    # (milliseconds on a virtual machine): priced at it, the budget would keep the
                    # run on one thread for many chunks. Later, a regular chunk slowed down by a
                    # moment of the host (a virtual machine's core lent elsewhere) sends a probe
                    # of one thread, which may win while that moment lasts; confirmed at once,
                    # such a moment costs a probe, not FIRST_INTERVAL chunks at one thread's speed.
                    # (Cores that stay busy unseen, another virtual machine's load, lose this
                    # measurement too, and only the regular probes, in the budget, follow.)
                    self.confirm_now = True
                    self.regular = rate
                else:
                    self.regular = None
                self.current = threads
                self.interval = FIRST_INTERVAL
            else:
                self.interval = min(2 * self.interval, MAX_INTERVAL)
            _last_verdict[self.max_threads] = (self.current, self.clock())

    def _record_regular(self, rate):
        self.since_probe += 1
        if self.regular is not None and rate > SURPRISE * self.regular:
            self.probe_now = True
        self.regular = rate if self.regular is None else SMOOTHING * rate + (1 - SMOOTHING) * self.regular
        self.per_sample[self.current] = self.regular
