"""Precise batch-norm statistics (Wu & Johnson 2021): the running mean and variance a batch norm
uses at test time, replaced by the exact population statistics of its input over a data set."""

from __future__ import annotations

import dataclasses

import numpy as np

from bnlab.nn.normalizations import NORMALIZATIONS


def recompute_bn_statistics(net, X: np.ndarray, batch_size: int | None = None) -> list[int]:
    """Set the running mean and (biased) variance of every normalization layer of `net` that keeps
    them (a row with running statistics: batch norm, ghost and noisy batch norm) to the mean and
    variance of that layer's input over all of X, layer by layer in order: each layer's input comes
    from the net in test mode with the layers before it already recomputed, as the net will see it.
    Sums are taken in float64, `batch_size` samples at a time (all at once by default), the mean
    first and then the squared deviations from it. Returns the indices (into net.bn_params) of the
    layers set; a net without such layers is left unchanged."""
    row = NORMALIZATIONS.get(net.normalization) if net.normalization else None
    if row is None or not row.running_statistics:
        return []
    size = batch_size or len(X)
    layers = list(range(len(net.bn_params)))
    for j in layers:
        target = net.bn_params[j]
        chunks = [X[start : start + size] for start in range(0, len(X), size)]
        # two passes, the mean first: no cancellation between large sums of squares
        count, total = 0, 0.0
        for chunk in chunks:
            seen = _inputs_of(net, row, target, chunk)
            count += len(seen)
            total = total + seen.sum(axis=0)
        mean = total / count
        squares = 0.0
        for chunk in chunks:
            centred = _inputs_of(net, row, target, chunk) - mean
            squares = squares + np.einsum("nd,nd->d", centred, centred)
        target["running_mean"] = mean.astype(net.dtype)
        target["running_var"] = (squares / count).astype(net.dtype)
    return layers


def _inputs_of(net, row, target: dict, X: np.ndarray) -> np.ndarray:
    """The input of the normalization layer whose param dict is `target`, for X in test mode, as
    (values, features): a conv form's (N, C, H, W) input as (N*H*W, C)."""
    seen: list[np.ndarray] = []

    def recording(forward, spatial: bool):
        def record(x, gamma, beta, param):
            if param is target:
                values = x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1]) if spatial else x
                seen.append(values.astype(np.float64))
            return forward(x, gamma, beta, param)

        return record

    net.norm = dataclasses.replace(
        row,
        forward=recording(row.forward, False),
        spatial_forward=row.spatial_forward and recording(row.spatial_forward, True),
        relu_forward=row.relu_forward and recording(row.relu_forward, False),  # the compiled norm + ReLU
    )
    try:
        net.loss(X)
    finally:
        net.norm = row
    return np.concatenate(seen)
