"""What the compiled kernels are called with, besides the data: the flat parameter layout, the
per-batch buffers, the input divisor and the placeholder for targets, and the bundles the compiled
driver takes them in. No layer above is imported."""
import mmap
import threading
from collections import namedtuple

import numpy as np


def layout(sizes):
    """Offsets of W^l and b^l (l = 1..L) in the flat buffer (W^1, b^1, W^2, b^2, ...), and its length."""
    L = len(sizes) - 1
    w_off = np.zeros(L + 1, dtype=np.int64)
    b_off = np.zeros(L + 1, dtype=np.int64)
    pos = 0
    for l in range(1, L + 1):
        w_off[l] = pos
        pos += sizes[l] * sizes[l - 1]
        b_off[l] = pos
        pos += sizes[l]
    return w_off, b_off, pos


# Bytes of a cache line: where the buffers the kernels stream through start.
LINE_BYTES = 64


# Buffers of at least this many bytes are mapped in huge pages where the system allows it
# (_huge_pages).
HUGE_PAGE_BYTES = 2 * 1024 * 1024


def _huge_pages(nbytes):
    """A writable, zeroed uint8 array of nbytes that starts a 2 MiB huge page, from an anonymous
    private mapping that asks Linux for transparent huge pages (madvise); None where that cannot
    be asked (other systems, or an mmap module without MADV_HUGEPAGE).

    Linux maps such memory in 4 KiB pages unless told (transparent_hugepage set to "madvise", as
    here): faulting in a 10 MB workspace took 20 ms on a virtual machine, a tenth of an epoch of
    784-100-10, and 2 MiB pages also spare the kernels' TLB misses on weights larger than the TLB's
    reach (benchmarks/RESULTS.md)."""
    if not hasattr(mmap, "MADV_HUGEPAGE") or not hasattr(mmap, "MAP_ANONYMOUS"):
        return None
    size = -(-nbytes // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
    m = mmap.mmap(-1, size + HUGE_PAGE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
    whole = np.frombuffer(m, dtype=np.uint8)
    start = -whole.ctypes.data % HUGE_PAGE_BYTES
    try:
        m.madvise(mmap.MADV_HUGEPAGE, start, size)
    except OSError:  # (a kernel without transparent huge pages: 4 KiB pages, as np.empty's)
        pass
    return whole[start:start + nbytes]


def aligned_empty(shape, dtype, alloc=np.empty):
    """np.empty(shape, dtype) whose first element starts a cache line (and, from HUGE_PAGE_BYTES,
    a huge page: _huge_pages; such memory is zeroed, whatever alloc is).

    A large allocation comes from its own memory mapping, 16 bytes past a page boundary, so each
    64-byte vector load or store of it would straddle two cache lines. Adam's update (a square root
    and a division per element) suffers most (benchmarks/RESULTS.md)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes >= HUGE_PAGE_BYTES:
        raw = _huge_pages(nbytes)
        if raw is not None:
            return raw.view(dtype).reshape(shape)
    raw = alloc(nbytes + LINE_BYTES, dtype=np.uint8)
    start = -raw.ctypes.data % LINE_BYTES
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype):
    """np.zeros(shape, dtype) whose first element starts a cache line (aligned_empty)."""
    return aligned_empty(shape, dtype, np.zeros)


# Bytes of a memory page (the smallest the kernel maps; a larger one is a multiple of it).
PAGE_BYTES = 4096


def touch_pages(*arrays):
    """Write a zero into every memory page of each freshly allocated array, on this thread.

    A large np.empty or np.zeros gets pages that the operating system maps only on their first
    write. When the threads of a parallel region take those faults at once they wait for each
    other: the first chunk of a fit on a new workspace ran many times slower on two threads than
    on one, and the thread pacer then kept the whole first epoch on one thread. Faulting the pages
    here, on one thread before any timing, costs no more than the same faults taken later. (The
    arrays must be new: the zeros overwrite one element per page.)"""
    for a in arrays:
        flat = a.reshape(-1)
        flat[::max(1, PAGE_BYTES // a.itemsize)] = 0


# The fixed number of parts into which the backward phases split each hidden-to-hidden W^l by rows
# (fastmlp._kernels._backward_pair)
ROW_PARTS = 2


def backward_extra(sizes, parts=ROW_PARTS):
    """Elements per sample that the backward phases keep past delta^l in D (fastmlp._kernels
    _backward_pair): the `parts` partial products of each hidden layer below the last one
    (N_1 .. N_{L-2}), and one block of deltas per part (the widest of N_2 .. N_{L-1})."""
    L = len(sizes) - 1
    if L < 3:
        return 0
    return parts * sum(sizes[1:L - 1]) + parts * max(sizes[2:L])


# From this many bytes of a minibatch's inputs (n x N_0) the forward pass of layer 1 splits the
# threads' work by samples (fastmlp._kernels._dense_forward_block), and so, in SAMPLE_PARTS fixed
# parts, does the backward phase of layer 1 when the minibatch has at least as many samples as
# layer 1 has units (first_layer_by_samples).
SAMPLE_SPLIT_BYTES = 1 << 20
SAMPLE_PARTS = 2


def first_layer_by_samples(sizes, n, itemsize):
    """Whether training on a minibatch of n samples (of itemsize-byte floats) splits the backward
    phase of layer 1 by samples (compiled into the driver as fastmlp._kernels._by_samples; sizes an
    int64 array there):
    a network with a hidden layer, inputs larger than SAMPLE_SPLIT_BYTES, and no fewer samples than
    layer 1 has units (each part's gradient of W^1 is then no larger than its share of X)."""
    return len(sizes) > 2 and n * sizes[0] * itemsize > SAMPLE_SPLIT_BYTES and n >= sizes[1]


def sample_partials_size(sizes):
    """Elements of one sample part's gradient (fastmlp._kernels._backward_samples): dW^1 and db^1,
    and with one hidden layer dW^2 and db^2 too, in the flat layout's order (compiled into the
    driver too)."""
    size = sizes[1] * (sizes[0] + 1)
    return size + (sizes[2] * (sizes[1] + 1) if len(sizes) == 3 else 0)


class Workspace:
    """Per-batch buffers for up to `capacity` samples: the gathered inputs, a^l and delta^l of
    every layer (flat, layer l at a_off[l]) and z^L; and `units`, each layer's units in the order
    the weight-gradient kernel groups them 4 at a time (N_0 + ... + N_L entries, layer after layer,
    in place until a trainer regroups them: fastmlp._kernels.group_units). Past everything else, D
    holds the SAMPLE_PARTS parts' gradients of the first layer when a minibatch of `capacity`
    samples is split by samples there (first_layer_by_samples)."""

    def __init__(self, sizes, dtype, capacity, x_capacity=None):
        self.capacity = capacity
        self.key = _pool_key(sizes, dtype, capacity, x_capacity)  # (take_workspace)
        self.a_off = np.zeros(len(sizes), dtype=np.int64)
        total = 0
        for l in range(1, len(sizes)):
            self.a_off[l] = total
            total += capacity * sizes[l]
        self.X = aligned_empty((max(capacity, x_capacity or 0), sizes[0]), dtype)
        self.A = aligned_empty(total, dtype)
        parts = first_layer_by_samples(sizes, capacity, np.dtype(dtype).itemsize)
        self.D = aligned_empty(total + capacity * backward_extra(sizes)
                               + (SAMPLE_PARTS * sample_partials_size(sizes) if parts else 0), dtype)
        self.Z = aligned_empty((capacity, sizes[-1]), dtype)
        self.units = np.concatenate([np.arange(N, dtype=np.int64) for N in sizes])
        touch_pages(self.X, self.A, self.D, self.Z)

    def buffers(self):
        """The Buffers bundle of these arrays, for the driver."""
        return Buffers(self.X, self.A, self.D, self.Z, self.a_off, self.units)


# Workspaces that fits and evaluations in this process have finished with, newest last, for the
# next that asks for the same shapes (take_workspace); at most POOL_SIZE are kept.
POOL_SIZE = 4
_pool = []
_pool_lock = threading.Lock()


def _pool_key(sizes, dtype, capacity, x_capacity):
    return tuple(int(s) for s in sizes), np.dtype(dtype).str, int(capacity), int(x_capacity or 0)


def take_workspace(sizes, dtype, capacity, x_capacity=None):
    """A Workspace(sizes, dtype, capacity, x_capacity): one that an earlier caller in this process
    gave back (release_workspace), else a new one. A new workspace's memory is mapped and faulted
    in first (aligned_empty, touch_pages), which took 10-25 ms for the 10 MB of a fit of
    784-100-10 here, a tenth of its epoch; every buffer of a workspace is written before it is
    read, so one used before serves as well. (Its units keep their grouping, which changes no
    result.) Each workspace goes to one caller at a time."""
    key = _pool_key(sizes, dtype, capacity, x_capacity)
    with _pool_lock:
        # the same shapes with the least room for gathered inputs that is enough (a fit of more rows
        # before one of fewer: the rows past x_capacity go unused), the newest of equals
        fits = [i for i in range(len(_pool) - 1, -1, -1) if _pool[i][0][:3] == key[:3] and _pool[i][0][3] >= key[3]]
        if fits:
            return _pool.pop(min(fits, key=lambda i: _pool[i][0][3]))[1]
    return Workspace(sizes, dtype, capacity, x_capacity)


def release_workspace(ws):
    """Give back a workspace from take_workspace, for the next caller with the same shapes; the
    oldest beyond POOL_SIZE are dropped."""
    with _pool_lock:
        _pool.append((ws.key, ws))
        del _pool[:-POOL_SIZE]


# The dtype of the data set's values, for the kernels, which read X as raw bytes (input_bytes).
INPUT_UINT8, INPUT_FLOAT32, INPUT_FLOAT64 = 0, 1, 2
INPUT_CODES = {np.dtype(np.uint8): INPUT_UINT8, np.dtype(np.float32): INPUT_FLOAT32,
               np.dtype(np.float64): INPUT_FLOAT64}


def input_bytes(X):
    """(the bytes of X's rows as a (n, M * itemsize) uint8 view, the code of X's dtype) for a
    C-contiguous uint8, float32 or float64 X (n, M): the kernels get every input dtype through one
    compiled signature and read the values by the code, so a new input dtype compiles nothing."""
    return X.view(np.uint8), INPUT_CODES[X.dtype]


def input_divisor(X):
    """The kernels divide X by this: 255 for uint8 pixels (scaled to [0, 1] as they are read), else 1."""
    return 255.0 if X.dtype == np.uint8 else 1.0


def no_targets(n_outputs, dtype):
    """The targets argument when the labels are class indices (has_targets false): never read."""
    return np.zeros((1, n_outputs), dtype=dtype)


# The bundles the compiled driver (fastmlp._kernels._drive) takes its arguments in; Numba types a
# namedtuple by its fields, so the same fields' types compile the driver once. Integers and flags
# inside a bundle are never Literal types (no re-specialisation for each value).
#   Network: the flat parameters with the offsets of W^l, b^l, the layer sizes, the activation codes
Network = namedtuple("Network", "params w_off b_off sizes hidden output")
#   Buffers: per-batch workspaces (see Workspace)
Buffers = namedtuple("Buffers", "X A D Z a_off units")
#   OptimizerState: the gradient, the moment buffers, the optimizer code, its hyperparameters and
#   the step number of the first minibatch
OptimizerState = namedtuple("OptimizerState", "grads m v optimizer hp step")
#   Data: X as bytes (input_bytes) and the code of its dtype, the divisor (255 for pixels), the labels
#   or target rows, per-row weights, the loss code (-1: none)
# (named as its module attribute: Numba's cache pickles the type by that name, and a class that
# pickle cannot find again is never loaded from the cache)
_Data = namedtuple("_Data", "X xcode divisor labels targets has_targets weights has_weights loss")


def Data(X, xcode, divisor, labels, targets, has_targets, weights, has_weights, loss):
    """The Data bundle with read-only views of its arrays (the kernels never write them): Numba
    types a read-only array apart from a writable one, so a user's read-only X or y
    (np.load(mmap_mode="r"), np.frombuffer) would otherwise compile the driver a second time."""
    return _Data(read_only(X), xcode, divisor, read_only(labels), read_only(targets), has_targets,
                 read_only(weights), has_weights, loss)


def read_only(a):
    """A read-only view of a: what the kernels take for arrays they only read (see Data)."""
    view = a.view()
    view.flags.writeable = False
    return view


#   Results: per-sample losses, per-minibatch (loss sum, correct count), output activations
Results = namedtuple("Results", "losses stats outputs")
