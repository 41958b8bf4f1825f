"""Networks with switches for the activation and the normalization: fully connected and convolutional.

FullyConnectedNet for L layers: {affine - [norm] - activation - [dropout]} x (L - 1) - affine -
softmax, or with norm_position='after', {affine - activation - [norm] - [dropout]}.
ConvNet: {conv - [norm] - activation - max pool} per conv block, {affine - [norm] - activation} per
hidden layer, affine - softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from bnlab.nn import conv, layers
from bnlab.nn.conv import SPATIAL_NORMALIZATIONS
from bnlab.nn.layers import ACTIVATIONS
from bnlab.nn.norms import NORMALIZATIONS

WeightScale = float | str  # a standard deviation, or 'he' / 'xavier'


def init_std(weight_scale: WeightScale, fan_in: int, fan_out: int) -> float:
    """The standard deviation of a layer's initial weights.

    A number is used as it is (the notebooks' weight_scale); 'he' is sqrt(2 / fan_in) (He et al.
    2015, for ReLU nets); 'xavier' is Glorot's normal init, sqrt(2 / (fan_in + fan_out)). For a
    convolution, fan_in = C * HH * WW and fan_out = F * HH * WW, as PyTorch computes them.
    """
    if weight_scale == "he":
        return float(np.sqrt(2.0 / fan_in))
    if weight_scale == "xavier":
        return float(np.sqrt(2.0 / (fan_in + fan_out)))
    if isinstance(weight_scale, str) or not weight_scale > 0:
        raise ValueError(f"weight_scale must be a positive number, 'he' or 'xavier', got {weight_scale!r}")
    return float(weight_scale)


class FullyConnectedNet:
    """The notebooks' FullyConnectedNet, float32 by default.

    Args:
        hidden_dims: the width of every hidden layer.
        input_dim, num_classes: input features (3*32*32 for CIFAR-10) and classes.
        dropout_keep_ratio: probability of keeping a hidden unit; 1 disables dropout.
        normalization: None or a name in bnlab.nn.norms.NORMALIZATIONS: 'batchnorm', 'layernorm',
            'groupnorm', 'rmsnorm', 'batchrenorm'.
        num_groups: groups per hidden layer for 'groupnorm'; must divide every hidden width.
        activation: a name in bnlab.nn.layers.ACTIVATIONS: 'relu', 'leaky_relu', 'sigmoid', 'tanh'.
        negative_slope: the slope of 'leaky_relu' for negative inputs.
        norm_position: 'before' the activation (the notebooks and the BN paper) or 'after' it.
        renorm_rmax, renorm_dmax, renorm_warmup: 'batchrenorm' clips r to [1/rmax, rmax] and d to
            [-dmax, dmax], both ramped linearly from batch norm's 1 and 0 over the first
            renorm_warmup training iterations (see bnlab.nn.norms.batchrenorm_forward).
        reg: L2 strength; the loss adds 0.5 * reg * sum(W**2) over every weight matrix.
        weight_scale: standard deviation of the initial weights, or 'he' / 'xavier' (see init_std).
        dtype: np.float32 to train fast, np.float64 for gradient checks.
        seed, rng: where the initial weights and the dropout masks come from: a
            np.random.RandomState, else one seeded with `seed`, else numpy's global RNG (so that
            `np.random.seed(231)` before construction reproduces the notebooks' weights).
    """

    def __init__(
        self,
        hidden_dims: Sequence[int],
        input_dim: int = 3 * 32 * 32,
        num_classes: int = 10,
        dropout_keep_ratio: float = 1.0,
        normalization: str | None = None,
        num_groups: int = 5,
        activation: str = "relu",
        negative_slope: float = 0.01,
        norm_position: str = "before",
        renorm_rmax: float = 3.0,
        renorm_dmax: float = 5.0,
        renorm_warmup: int = 100,
        reg: float = 0.0,
        weight_scale: WeightScale = 1e-2,
        dtype: type = np.float32,
        seed: int | None = None,
        rng: np.random.RandomState | None = None,
    ) -> None:
        if normalization is not None and normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}: expected None or one of {list(NORMALIZATIONS)}")
        if normalization == "groupnorm" and any(h % num_groups for h in hidden_dims):
            raise ValueError(f"num_groups={num_groups} must divide every hidden width {list(hidden_dims)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: expected one of {list(ACTIVATIONS)}")
        if norm_position not in ("before", "after"):
            raise ValueError(f"unknown norm_position {norm_position!r}: expected 'before' or 'after'")
        self.normalization = normalization
        self.activation_name = activation
        self.negative_slope = negative_slope
        self.norm_position = norm_position
        self.num_groups = num_groups
        self.use_dropout = dropout_keep_ratio != 1
        self.reg = reg
        self.num_layers = 1 + len(hidden_dims)
        self.dtype = dtype
        if rng is None:
            rng = np.random.RandomState(seed) if seed is not None else np.random.mtrand._rand
        self.rng = rng

        self.params: dict[str, np.ndarray] = {}
        dims = [input_dim, *hidden_dims, num_classes]
        for i in range(self.num_layers):
            std = init_std(weight_scale, dims[i], dims[i + 1])
            self.params[f"W{i + 1}"] = std * rng.randn(dims[i], dims[i + 1])
            self.params[f"b{i + 1}"] = np.zeros(dims[i + 1])
            if normalization is not None and i < self.num_layers - 1:
                self.params[f"gamma{i + 1}"] = np.ones(dims[i + 1])
                self.params[f"beta{i + 1}"] = np.zeros(dims[i + 1])
        for name, value in self.params.items():
            self.params[name] = value.astype(dtype)

        self.dropout_param = {"mode": "train", "p": dropout_keep_ratio, "rng": rng}
        # One dict per normalization layer (the notebooks' name): mode, running statistics, groups.
        bn_param: dict = {"mode": "train", "num_groups": num_groups}
        if normalization == "batchrenorm":
            bn_param.update(rmax=renorm_rmax, dmax=renorm_dmax, warmup=renorm_warmup)
        self.bn_params = [dict(bn_param) for _ in range(self.num_layers - 1)]
        self.norm = NORMALIZATIONS[normalization] if normalization is not None else None
        # When a dict, the forward pass puts each hidden layer's nonlinearity input in it under the
        # layer's number (1-based): how recording looks inside the net without a second pass.
        self.activation_inputs: dict[int, np.ndarray] | None = None
        self.layer_outputs: dict[int, np.ndarray] | None = None  # likewise each hidden layer's output
        forward, backward = ACTIVATIONS[activation]
        if activation == "leaky_relu":
            forward = partial(forward, negative_slope=negative_slope)
        self.activation = (forward, backward)

    def loss(self, X: np.ndarray, y: np.ndarray | None = None):
        """Class scores (N, C) for X (N, d_1, ..., d_k) when y is None (test mode); otherwise
        (loss, grads) for labels y (N,) in train mode, grads holding one array per parameter.
        """
        mode = "test" if y is None else "train"
        self.dropout_param["mode"] = mode
        for bn_param in self.bn_params:
            bn_param["mode"] = mode

        h = X.reshape(X.shape[0], -1)
        if h.dtype != self.dtype:
            h = h.astype(self.dtype)
        return _scores_or_loss(self, h, y, self._hidden_forward, self._hidden_backward)

    def _hidden_forward(self, x: np.ndarray, i: int):
        """affine - [norm] - activation - [dropout] for hidden layer i (1-based), or with the norm
        after the activation."""
        p = self.params
        h, affine_cache = layers.affine_forward(x, p[f"W{i}"], p[f"b{i}"])
        norm_cache = None
        if self.norm is not None and self.norm_position == "before":
            h, norm_cache = self.norm.forward(h, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
        if self.activation_inputs is not None:
            self.activation_inputs[i] = h
        h, activation_cache = self.activation[0](h)
        if self.norm is not None and self.norm_position == "after":
            h, norm_cache = self.norm.forward(h, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
        dropout_cache = None
        if self.use_dropout:
            h, dropout_cache = layers.dropout_forward(h, self.dropout_param)
        return h, (affine_cache, norm_cache, activation_cache, dropout_cache)

    def _hidden_backward(self, dout: np.ndarray, cache, i: int, grads: dict) -> np.ndarray | None:
        """Backward of _hidden_forward; stores the parameter gradients in grads and returns dx,
        except for the first layer, whose input gradient nobody needs (None)."""
        affine_cache, norm_cache, activation_cache, dropout_cache = cache
        if self.use_dropout:
            dout = layers.dropout_backward(dout, dropout_cache)
        if self.norm is not None and self.norm_position == "after":
            dout, grads[f"gamma{i}"], grads[f"beta{i}"] = self.norm.backward(dout, norm_cache)
        dout = self.activation[1](dout, activation_cache)
        if self.norm is not None and self.norm_position == "before":
            dout, grads[f"gamma{i}"], grads[f"beta{i}"] = self.norm.backward(dout, norm_cache)
        if i == 1:
            # Skip dx = dout @ W1.T: as costly as the first layer's forward and never used.
            x, _ = affine_cache
            grads["W1"] = x.T @ dout
            grads["b1"] = dout.sum(axis=0)
            return None
        dx, grads[f"W{i}"], grads[f"b{i}"] = layers.affine_backward(dout, affine_cache)
        return dx


# Activations that never decrease: max pooling commutes with them.
NON_DECREASING = frozenset({"relu", "leaky_relu", "sigmoid", "tanh"})


class ConvNet:
    """A convolutional net with a normalization switch, float32 by default:

        {conv KxK (stride 1, padding that keeps the size) - [norm] - activation - max pool 2x2} per
        entry of `channels`, then {affine - [norm] - activation} per entry of `hidden_dims`, then
        affine - softmax.

    Args:
        channels: the filters of each conv block.
        kernel_size: K, odd (the padding (K - 1) / 2 keeps the size).
        input_dim: (C, H, W) of the images.
        num_classes: classes of the output layer.
        hidden_dims: widths of the fully connected hidden layers after the conv blocks (may be empty).
        normalization: None, 'batchnorm' (spatial batch norm in the conv blocks), 'groupnorm'
            (spatial group norm with num_groups groups) or 'layernorm' (over (C, H, W) in the conv
            blocks); the fully connected layers use the same name from norms.NORMALIZATIONS.
        num_groups: groups for 'groupnorm'; must divide every entry of channels and hidden_dims.
        activation, negative_slope: as FullyConnectedNet.
        reg, weight_scale, dtype, seed, rng: as FullyConnectedNet; a convolution's fan_in is C*K*K
            and its fan_out F*K*K.

    Parameters: W1.. and b1.. in layer order (conv filters (F, C, K, K) first), gamma_i and beta_i
    for each normalized layer.
    """

    def __init__(
        self,
        channels: Sequence[int],
        kernel_size: int = 3,
        input_dim: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        hidden_dims: Sequence[int] = (),
        normalization: str | None = None,
        num_groups: int = 4,
        activation: str = "relu",
        negative_slope: float = 0.01,
        reg: float = 0.0,
        weight_scale: WeightScale = "he",
        dtype: type = np.float32,
        seed: int | None = None,
        rng: np.random.RandomState | None = None,
    ) -> None:
        if normalization is not None and normalization not in SPATIAL_NORMALIZATIONS:
            raise ValueError(
                f"unknown normalization {normalization!r}: expected None or one of {list(SPATIAL_NORMALIZATIONS)}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: expected one of {list(ACTIVATIONS)}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive (the padding keeps the size), got {kernel_size}")
        if normalization == "groupnorm" and any(k % num_groups for k in [*channels, *hidden_dims]):
            raise ValueError(f"num_groups={num_groups} must divide every width {[*channels, *hidden_dims]}")
        c, h, w = input_dim
        if min(h, w) < 2 ** len(channels):
            raise ValueError(f"{len(channels)} 2x2 poolings need images of at least {2 ** len(channels)} pixels a side")
        self.normalization = normalization
        self.num_groups = num_groups
        self.activation_name = activation
        self.negative_slope = negative_slope
        forward, backward = ACTIVATIONS[activation]
        if activation == "leaky_relu":
            forward = partial(forward, negative_slope=negative_slope)
        self.activation = (forward, backward)
        self.pool_first = activation in NON_DECREASING
        self.reg = reg
        self.dtype = dtype
        self.num_conv = len(channels)
        self.num_layers = len(channels) + len(hidden_dims) + 1
        self.conv_param = {"stride": 1, "pad": (kernel_size - 1) // 2}
        self.pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        if rng is None:
            rng = np.random.RandomState(seed) if seed is not None else np.random.mtrand._rand
        self.rng = rng

        self.params: dict[str, np.ndarray] = {}
        k2 = kernel_size * kernel_size
        for i, f in enumerate(channels, start=1):
            std = init_std(weight_scale, c * k2, f * k2)
            self.params[f"W{i}"] = std * rng.randn(f, c, kernel_size, kernel_size)
            self.params[f"b{i}"] = np.zeros(f)
            c, h, w = f, h // 2, w // 2
        dims = [c * h * w, *hidden_dims, num_classes]
        for j in range(len(dims) - 1):
            i = self.num_conv + j + 1
            self.params[f"W{i}"] = init_std(weight_scale, dims[j], dims[j + 1]) * rng.randn(dims[j], dims[j + 1])
            self.params[f"b{i}"] = np.zeros(dims[j + 1])
        if normalization is not None:
            for i, width in enumerate([*channels, *hidden_dims], start=1):
                self.params[f"gamma{i}"] = np.ones(width)
                self.params[f"beta{i}"] = np.zeros(width)
        for name, value in self.params.items():
            self.params[name] = value.astype(dtype)

        self.bn_params = [{"mode": "train", "num_groups": num_groups} for _ in range(self.num_layers - 1)]
        self.spatial_norm = SPATIAL_NORMALIZATIONS[normalization] if normalization is not None else None
        self.norm = NORMALIZATIONS[normalization] if normalization is not None else None
        self.activation_inputs: dict[int, np.ndarray] | None = None  # as FullyConnectedNet's
        self.layer_outputs: dict[int, np.ndarray] | None = None  # as FullyConnectedNet's

    def loss(self, X: np.ndarray, y: np.ndarray | None = None):
        """Class scores (N, num_classes) for X (N, C, H, W) when y is None (test mode); otherwise
        (loss, grads) for labels y (N,) in train mode, grads holding one array per parameter."""
        mode = "test" if y is None else "train"
        for bn_param in self.bn_params:
            bn_param["mode"] = mode
        h = X if X.dtype == self.dtype else X.astype(self.dtype)
        return _scores_or_loss(self, h, y, self._layer_forward, self._layer_backward)

    def _layer_forward(self, x: np.ndarray, i: int):
        return self._conv_forward(x, i) if i <= self.num_conv else self._hidden_forward(x, i)

    def _layer_backward(self, dout: np.ndarray, cache, i: int, grads: dict) -> np.ndarray | None:
        backward = self._conv_backward if i <= self.num_conv else self._hidden_backward
        return backward(dout, cache, i, grads)

    def _conv_forward(self, x: np.ndarray, i: int):
        """conv - [norm] - activation - max pool for conv block i (1-based).

        A non-decreasing activation commutes with max pooling (max f(x) = f(max x), with the same
        gradients), so it is applied after the pool, to a quarter of the values."""
        p = self.params
        h, conv_cache = conv.conv_forward_fast(x, p[f"W{i}"], p[f"b{i}"], self.conv_param)
        norm_cache = None
        if self.spatial_norm is not None:
            h, norm_cache = self.spatial_norm.forward(h, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
        if self.activation_inputs is not None:
            self.activation_inputs[i] = h
        if self.pool_first:
            h, pool_cache = conv.max_pool_forward_fast(h, self.pool_param)
            h, act_cache = self.activation[0](h)
        else:
            h, act_cache = self.activation[0](h)
            h, pool_cache = conv.max_pool_forward_fast(h, self.pool_param)
        return h, (conv_cache, norm_cache, act_cache, pool_cache)

    def _conv_backward(self, dout: np.ndarray, cache, i: int, grads: dict) -> np.ndarray | None:
        """Backward of _conv_forward; None for the first block, whose input gradient nobody needs."""
        conv_cache, norm_cache, act_cache, pool_cache = cache
        if self.pool_first:
            dout = conv.max_pool_backward_fast(self.activation[1](dout, act_cache), pool_cache)
        else:
            dout = self.activation[1](conv.max_pool_backward_fast(dout, pool_cache), act_cache)
        if self.spatial_norm is not None:
            dout, grads[f"gamma{i}"], grads[f"beta{i}"] = self.spatial_norm.backward(dout, norm_cache)
        if i == 1:
            grads["W1"], grads["b1"] = conv.conv_backward_fast_params(dout, conv_cache)
            return None
        dx, grads[f"W{i}"], grads[f"b{i}"] = conv.conv_backward_fast(dout, conv_cache)
        return dx

    def _hidden_forward(self, x: np.ndarray, i: int):
        """affine - [norm] - activation for fully connected hidden layer i (1-based, after the convs)."""
        p = self.params
        h, affine_cache = layers.affine_forward(x, p[f"W{i}"], p[f"b{i}"])
        norm_cache = None
        if self.norm is not None:
            h, norm_cache = self.norm.forward(h, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
        if self.activation_inputs is not None:
            self.activation_inputs[i] = h
        h, act_cache = self.activation[0](h)
        return h, (affine_cache, norm_cache, act_cache)

    def _hidden_backward(self, dout: np.ndarray, cache, i: int, grads: dict) -> np.ndarray:
        affine_cache, norm_cache, act_cache = cache
        dout = self.activation[1](dout, act_cache)
        if self.norm is not None:
            dout, grads[f"gamma{i}"], grads[f"beta{i}"] = self.norm.backward(dout, norm_cache)
        dx, grads[f"W{i}"], grads[f"b{i}"] = layers.affine_backward(dout, affine_cache)
        return dx


def _scores_or_loss(net, h: np.ndarray, y: np.ndarray | None, layer_forward, layer_backward):
    """What every net shares around its hidden layers 1 .. L-1: the affine output layer L, the
    softmax loss, the backward pass and the L2 term 0.5 * reg * sum(W**2) on every weight.

    layer_forward(h, i) -> (h, cache) and layer_backward(dh, cache, i, grads) -> dh (None below the
    first layer) run hidden layer i; the backward stores that layer's parameter gradients in grads.
    Returns the scores when y is None, else (loss, grads).
    """
    caches = []
    for i in range(1, net.num_layers):
        h, cache = layer_forward(h, i)
        caches.append(cache)
        if net.layer_outputs is not None:
            net.layer_outputs[i] = h
    last = net.num_layers
    scores, last_cache = layers.affine_forward(h, net.params[f"W{last}"], net.params[f"b{last}"])
    if y is None:
        return scores

    loss, dscores = layers.softmax_loss(scores, y)
    grads: dict[str, np.ndarray] = {}
    dh, grads[f"W{last}"], grads[f"b{last}"] = layers.affine_backward(dscores, last_cache)
    for i in range(net.num_layers - 1, 0, -1):
        dh = layer_backward(dh, caches[i - 1], i, grads)

    for i in range(1, net.num_layers + 1):
        w = net.params[f"W{i}"]
        loss += 0.5 * net.reg * float(np.sum(w * w))
        grads[f"W{i}"] += net.reg * w
    return loss, grads
