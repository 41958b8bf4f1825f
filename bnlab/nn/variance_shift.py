"""Dropout's variance shift (Li et al. 2019, "Understanding the Disharmony between Dropout and
Batch Normalization by Variance Shift"): a normalization after inverted dropout sees, in training,
a larger variance than at test time, when dropout is off; its running variance, estimated in
training, is then too large for the test inputs."""

from __future__ import annotations

import numpy as np


def dropout_variance_shift(net, X: np.ndarray, rng: np.random.RandomState) -> list[dict]:
    """For every hidden layer i >= 2 whose input passes a dropout (keep p) in training: the mean
    over its features of the variance of h = x W_i + b_i, what its normalization normalizes, over
    X, with x layer i - 1's output before dropout (normalized with X's own statistics, as in
    training; running statistics untouched): `test_var` without dropout, `train_var` with a mask
    drawn from rng, and `predicted_train_var` = test_var + (1/p - 1) sum_k W_ki^2 E[x_k^2]
    (independent masks of mean 1 and variance 1/p - 1). Computed in float64."""
    p = net.dropout_param["p"]
    net.layer_outputs = {}
    try:
        net.batch_statistics_scores(X)
        outputs = net.layer_outputs
    finally:
        net.layer_outputs = None
    rows = []
    for i in sorted(layer + 1 for layer in net.dropout_layers if layer + 1 < net.num_layers):
        x = outputs[i - 1].astype(np.float64).reshape(len(X), -1)
        W, b = net.params[f"W{i}"].astype(np.float64), net.params[f"b{i}"].astype(np.float64)
        mask = (rng.random_sample(x.shape) < p) / p
        test_var = (x @ W + b).var(axis=0)
        train_var = ((x * mask) @ W + b).var(axis=0)
        predicted = test_var + (1 / p - 1) * ((x**2).mean(axis=0) @ W**2)
        rows.append(
            {
                "layer": i,
                "test_var": test_var.mean(),
                "train_var": train_var.mean(),
                "predicted_train_var": predicted.mean(),
            }
        )
    return rows
