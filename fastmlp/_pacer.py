"""How many threads the next chunk of minibatches runs on: all that were asked for, or one.

Every parallel region waits for all of its threads. When other processes keep the cores busy, the
kernel's second thread is often descheduled and each region stalls until it runs again: a step of
microseconds takes milliseconds, and two threads train many times slower than one. The trainer
therefore times its chunks and runs each on the thread count that is currently faster, trying the
other count now and then on a small chunk. The kernels give bit-identical results for every thread
count (each element is summed in the same order whatever the split), so the choice changes only
the speed, never the numbers.
"""
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
# of the machine, not the network, decides, and short runs cannot afford to find it out again.
VERDICT_SECONDS = 30.0

_last_verdict = {}  # max thread count -> (faster count, time.monotonic() of the verdict)
# Thread counts that have run a timed chunk in this process. The first parallel region of a process
# starts the threading layer's pool (tens of milliseconds): a chunk that includes it says nothing
# about the speed of that count, so its timing is dropped and the count measured again.
_started = set()


class ThreadPacer:
    """plan(chunk) -> (threads, samples) for the next kernel call; record(threads, samples, seconds)
    after it. With threads == 1 it always plans one thread and full chunks."""

    def __init__(self, threads, batch_size, clock=time.monotonic):
        self.max_threads = threads
        self.batch_size = batch_size
        self.clock = clock
        self.per_sample = {}  # thread count -> seconds per sample
        self.current = threads
        self.interval = FIRST_INTERVAL
        self.since_probe = 0
        self.probe_now = False
        self.regular = None  # running seconds per sample of the current count's regular chunks
        verdict = _last_verdict.get(threads)
        if threads > 1 and verdict is not None and clock() - verdict[1] < VERDICT_SECONDS:
            self.current = verdict[0]
            self.per_sample[self._other()] = float("inf")  # known to be slower: probe it later
            self.interval = MAX_INTERVAL // 4

    def _other(self):
        return 1 if self.current != 1 else self.max_threads

    def _probe_samples(self, threads, chunk, fraction):
        rate, regular = self.per_sample.get(threads), self.regular
        samples = chunk * (FIRST_PROBE_FRACTION if rate == float("inf") else fraction)
        if rate and regular and rate != float("inf"):
            samples = min(samples, PROBE_TIME_SHARE * chunk * regular / rate)
        samples = int(samples) // self.batch_size * self.batch_size
        return min(chunk, max(self.batch_size, samples))

    def plan(self, chunk):
        if self.max_threads == 1:
            return 1, chunk
        for count in (self.max_threads, 1):  # measure both counts first, on small chunks
            if count not in self.per_sample:
                return count, self._probe_samples(count, chunk, FIRST_PROBE_FRACTION)
        if self.probe_now or self.since_probe >= self.interval:
            return self._other(), self._probe_samples(self._other(), chunk, PROBE_FRACTION)
        return self.current, chunk

    def record(self, threads, samples, seconds):
        if self.max_threads == 1 or samples <= 0:
            return
        if threads > 1 and threads not in _started:
            _started.add(threads)
            return
        rate = seconds / samples
        if threads == self.current and len(self.per_sample) == 2 and not self.probe_now \
                and self.since_probe < self.interval:
            self._record_regular(rate)
            return
        self.per_sample[threads] = rate
        if len(self.per_sample) < 2:
            return
        if threads != self.current:  # a probe of the other count
            self.probe_now = False
            self.since_probe = 0
            if rate * MARGIN < self.per_sample[self.current]:
                self.current = threads
                self.regular = None
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
