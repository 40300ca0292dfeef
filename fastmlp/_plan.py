"""The phase plans that the compiled driver (fastmlp._kernels._drive) walks for every minibatch,
and the order of a minibatch's samples that suits its kernels (label_grouped).

A plan is a small int64 array, one row (kind, layer, flags) per phase, built here in Python once per
network shape and mode; the driver runs the rows in order, each as one parallel region (or on the
calling thread when its work is small). Training, evaluation, forward, predict, the loss and the
gradients are plans of the same compiled code, so none of them compiles a kernel of its own.

    GATHER       layer 0   the minibatch's rows of X, scaled into the network's dtype (flag
                           GATHER_CHUNK: every row of the call at its first step, for training,
                           unless layer 1's backward phase splits its minibatches by samples)
    FORWARD      layer l   z^l = W^l a^{l-1} + b^l, a^l = sigma(z^l) (for l = L: z^L only)
    OUTPUT_STEP  layer L   z^L, a^L, the losses and delta^L in one pass, split by samples (training)
    OUTPUT       layer L   a^L from z^L (flag OUTPUT_COPY: into the caller's outputs)
    LOSS         layer L   the losses and delta^L from z^L and a^L
    BACKWARD     layer k   delta^k (k = L - 1: and dC/dW^L), dC/dW^k, and for k > 1 the partial
                           products for delta^{k-1} (flags BACKWARD_ACCUMULATE: add to the gradient
                           instead of overwriting it; BACKWARD_UPDATE: the optimizer step on the
                           parameters whose gradient is done); for k = 1 on a minibatch with large
                           inputs (_buffers.first_layer_by_samples), each fixed part of the samples'
                           gradients of the first layer (and, with one hidden layer, of W^2)
    SAMPLE_SUM   layer 1   those parts' gradients summed, and the step on their parameters (flags
                           as BACKWARD's); no work unless the minibatch was split by samples

No layer above is imported, and importing this compiles nothing.
"""
import functools

import numpy as np

GATHER, FORWARD, OUTPUT_STEP, OUTPUT, LOSS, BACKWARD, SAMPLE_SUM = 0, 1, 2, 3, 4, 5, 6
PHASE_NAMES = ("gather", "forward", "output step", "output", "loss", "backward", "sum")
GATHER_CHUNK = 1
OUTPUT_COPY = 1
BACKWARD_ACCUMULATE, BACKWARD_UPDATE = 1, 2

# modes of the driver
MODES = ("train", "gradient", "forward", "evaluate", "evaluate+forward", "gradients")


@functools.cache
def _plan(L, mode):
    if mode not in MODES:
        raise ValueError(f"mode: got {mode!r}, expected one of {MODES}")
    rows = []
    training = mode in ("train", "gradient")
    rows.append((GATHER, 0, GATHER_CHUNK if training else 0))
    if training:
        rows += [(FORWARD, l, 0) for l in range(1, L)]
        rows.append((OUTPUT_STEP, L, 0))
    else:
        rows += [(FORWARD, l, 0) for l in range(1, L + 1)]
        rows.append((OUTPUT, L, OUTPUT_COPY if mode in ("forward", "evaluate+forward") else 0))
        if mode != "forward":
            rows.append((LOSS, L, 0))
    if mode in ("train", "gradient", "gradients"):
        flags = {"train": BACKWARD_UPDATE, "gradient": 0, "gradients": BACKWARD_ACCUMULATE}[mode]
        # one region per hidden layer from L - 1 down; a network without hidden layers has one (k = 1)
        rows += [(BACKWARD, k, flags) for k in range(max(L - 1, 1), 0, -1)]
        if L > 1:
            rows.append((SAMPLE_SUM, 1, flags))
    plan = np.array(rows, dtype=np.int64)
    return plan


def phase_plan(sizes, mode):
    """The plan (rows (kind, layer, flags), int64) of a network with layer sizes `sizes`
    (N_0, ..., N_L) for one mode:
      train      training steps: forward, the fused output step, backward with the optimizer update
      gradient   the same without the update (the gradient of each minibatch, overwritten)
      forward    a^L of every row (forward, predict)
      evaluate   the losses and correct predictions (loss, evaluate)
      evaluate+forward   both
      gradients  the gradient of the scaled summed loss over all rows, accumulated (gradients)"""
    return _plan(len(sizes) - 1, mode)


def label_grouped(order, labels, batch_size):
    """order (data set rows, int64) with the rows of each minibatch (batch_size at a time from the
    start, the last possibly fewer) sorted by their labels, stably: the same minibatches, each
    holding the same samples, in an order that the kernels' 4-sample groups profit from: in a
    group of 4 samples of one class more inputs are zero for all 4 (of Fashion-MNIST's pixels
    about a third instead of a fifth), which the forward pass's gather tile leaves out, as the
    delta recursion's tiles leave out the units off for all 4 (_kernels._sample_order). Each
    minibatch's gradient is the same sum, of the same samples, in another order. The trainer
    sorts where a layer takes the gather tile (_kernels.forward_gathers): elsewhere nothing gains."""
    order = np.asarray(order, dtype=np.int64)
    n = order.shape[0]
    if batch_size < 2 or n < 2:
        return order
    lab = np.asarray(labels)[order]
    full = n // batch_size * batch_size
    out = np.empty_like(order)
    if full:
        by = np.argsort(lab[:full].reshape(-1, batch_size), axis=1, kind="stable")
        out[:full] = np.take_along_axis(order[:full].reshape(-1, batch_size), by, axis=1).ravel()
    if full < n:
        out[full:] = order[full:][np.argsort(lab[full:], kind="stable")]
    return out


def describe(plan):
    """The plan as text, one phase per line: 'forward 1', 'backward 1 (update)', ..."""
    out = []
    for kind, layer, flags in plan.tolist():
        words = [PHASE_NAMES[kind], str(layer)]
        if kind == GATHER and flags & GATHER_CHUNK:
            words.append("(chunk)")
        if kind == OUTPUT and flags & OUTPUT_COPY:
            words.append("(copy)")
        if kind == BACKWARD or kind == SAMPLE_SUM:
            words += [w for f, w in ((BACKWARD_ACCUMULATE, "(accumulate)"), (BACKWARD_UPDATE, "(update)"))
                      if flags & f]
        out.append(" ".join(words))
    return "\n".join(out)
