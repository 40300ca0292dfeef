"""How many threads the kernels run on: the one place the thread count is checked and set."""
import numbers


def resolve_threads(threads):
    """The thread count to use: None means all (Numba's current count); otherwise an integer from 1
    to NUMBA_NUM_THREADS (Numba cannot start more threads than it was started with)."""
    import numba
    if threads is None:
        return numba.get_num_threads()
    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or not 1 <= threads <= limit:
        raise ValueError(f"threads: got {threads!r}, expected an integer from 1 to {limit} "
                         "(NUMBA_NUM_THREADS, fixed when numba is imported)")
    return int(threads)


class thread_count:
    """Context manager: Numba runs parallel regions on `n` threads inside the block."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import numba
        self.saved = numba.get_num_threads()
        numba.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        import numba
        numba.set_num_threads(self.saved)
