"""Networks with switches for the activation and the normalization: fully connected and convolutional.

FullyConnectedNet for L layers: {affine - [norm] - activation - [dropout]} x (L - 1) - affine -
softmax, or with norm_position='after', {affine - activation - [norm] - [dropout]}.
ConvNet: {conv - [norm] - activation - max pool} per conv block, {affine - [norm] - activation} per
hidden layer, affine - softmax.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import partial

import numpy as np

from bnlab.nn import conv, fused, layers, norms
from bnlab.nn.layers import ACTIVATIONS
from bnlab.nn.normalizations import named, option_names
from bnlab.nn.norms import activation_gain

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


class Net:
    """What every net shares (these and nn.residual's): the random stream, the activation, the
    parameters and their dtype, the output layer, the loss and its L2 term. A subclass sets
    bn_params and num_layers and runs the layers below the output layer in _body / _body_backward."""

    reg_output = True  # whether the L2 term covers the output layer's weights too

    def _setup(
        self,
        normalization: str | None,
        norm_options: dict,
        activation: str,
        negative_slope: float,
        reg: float,
        dtype: type,
        seed: int | None,
        rng: np.random.RandomState | None,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: expected one of {list(ACTIVATIONS)}")
        self.normalization = normalization
        self.norm_options = norm_options
        self.activation_name = activation
        self.negative_slope = negative_slope
        forward, backward = ACTIVATIONS[activation]
        if activation == "leaky_relu":
            forward = partial(forward, negative_slope=negative_slope)
        self.activation = (forward, backward)
        self.reg = reg
        self.dtype = dtype
        if rng is None:
            rng = np.random.RandomState(seed) if seed is not None else np.random.mtrand._rand
        self.rng = rng
        self.params: dict[str, np.ndarray] = {}
        # When a dict, the forward pass puts each hidden layer's nonlinearity input in it under the
        # layer's number (1-based): how recording looks inside the net without a second pass.
        self.activation_inputs: dict[int, np.ndarray] | None = None
        self.layer_outputs: dict[int, np.ndarray] | None = None  # likewise each hidden layer's output

    flat_input = True  # whether the net reads each sample as one vector (else as (C, H, W))

    @staticmethod
    def _normalization(
        normalization: str | None, options: dict, widths: Sequence[int], which: str, conv_form: bool = False
    ):
        """The row of bnlab.nn.normalizations for `normalization` (None for none), after checking
        that it exists (with a conv form when conv_form), that `options` are options of some
        normalization (TypeError otherwise, as for any unknown keyword) and that they suit the
        widths (`which` names them in the message)."""
        unknown = sorted(set(options) - set(option_names()))
        if unknown:
            raise TypeError(f"unexpected keyword argument {unknown[0]!r} (not an option of any normalization)")
        row = named(normalization, conv_form)
        if row is not None:
            row.check_widths(options, widths, which)
        return row

    def _layer_params(self, layers: int, seed: int | None = None) -> list[dict]:
        """One param dict per normalization layer (the notebooks' bn_param): mode, the options,
        running statistics once trained; just the mode without a normalization."""
        if self.norm is None:
            return [{"mode": "train"} for _ in range(layers)]
        return self.norm.layer_params(self.norm_options, layers, seed)

    def _add_weights(self, i: int, shape: tuple[int, ...], std: float, width: int) -> None:
        """W_i of `shape` drawn from the net's stream with standard deviation std, b_i zeros (width,)."""
        self.params[f"W{i}"] = std * self.rng.randn(*shape)
        self.params[f"b{i}"] = np.zeros(width)

    def _add_norm(self, i: int, width: int) -> None:
        """gamma_i ones and beta_i zeros (width,): the normalization starts as the identity."""
        self.params[f"gamma{i}"] = np.ones(width)
        self.params[f"beta{i}"] = np.zeros(width)

    def _cast_params(self) -> None:
        for name, value in self.params.items():
            self.params[name] = value.astype(self.dtype)

    def _act(self, x: np.ndarray, i: int):
        """The activation of layer i, its input recorded in activation_inputs when that is a dict."""
        if self.activation_inputs is not None:
            self.activation_inputs[i] = x
        return self.activation[0](x)

    norm_position = "before"  # or "after" the activation (FullyConnectedNet's option)

    def _norm_act(self, h: np.ndarray, i: int):
        """Hidden layer i's [norm] and activation in the net's order: (h, norm_cache,
        activation_cache). A norm with a compiled form fused with a ReLU (batch norm) before a ReLU
        runs both as one call, and the activation cache is then None."""
        norm, bn_param, p = self.norm, self.bn_params[i - 1], self.params
        before = norm is not None and self.norm_position == "before"
        if before and norm.relu_forward and self.activation_name == "relu":
            h, norm_cache = norm.relu_forward(h, p[f"gamma{i}"], p[f"beta{i}"], bn_param)
            if self.activation_inputs is not None:
                self.activation_inputs[i] = norm_cache[-1]  # the ReLU's input
            return h, norm_cache, None
        norm_cache = None
        if before:
            h, norm_cache = norm.forward(h, p[f"gamma{i}"], p[f"beta{i}"], bn_param)
        h, activation_cache = self._act(h, i)
        if norm is not None and not before:
            h, norm_cache = norm.forward(h, p[f"gamma{i}"], p[f"beta{i}"], bn_param)
        return h, norm_cache, activation_cache

    def _norm_act_backward(self, dout: np.ndarray, norm_cache, activation_cache, i: int, grads: dict):
        """Backward of _norm_act; gamma_i's and beta_i's gradients go in grads. Returns dx."""
        before = self.norm is not None and self.norm_position == "before"
        if self.norm is not None and not before:
            dout, grads[f"gamma{i}"], grads[f"beta{i}"] = self.norm.backward(dout, norm_cache)
        if activation_cache is not None:
            dout = self.activation[1](dout, activation_cache)
        if before:
            backward = self.norm.backward if activation_cache is not None else self.norm.relu_backward
            dout, grads[f"gamma{i}"], grads[f"beta{i}"] = backward(dout, norm_cache)
        return dout

    def _input(self, X: np.ndarray) -> np.ndarray:
        h = X.reshape(X.shape[0], -1) if self.flat_input else X
        return h if h.dtype == self.dtype else h.astype(self.dtype)

    def hidden_weights(self) -> list[str]:
        """The weights below the output layer (W_i, P_i): with a normalization after each, the
        scale-invariant ones, whose learning rate Solver's lr_growth grows."""
        return [name for name in self.params if name[0] in "WP" and name != f"W{self.num_layers}"]

    def loss(self, X: np.ndarray, y: np.ndarray | None = None, grads_into: dict | None = None):
        """Class scores (N, num_classes) for X (N, d_1, ..., d_k) when y is None (test mode);
        otherwise (loss, grads) for labels y (N,) in train mode, grads holding one array per
        parameter. L2 (0.5 * reg * sum of squares) on every weight W_i (and projection P_i), the
        output layer's only if reg_output, not on gamma, beta, b or alpha. grads_into: arrays by
        name the gradients go into where a layer can write them in place (the first fully
        connected layer's W1, most of a small net's parameters: the Solver's flat buffer)."""
        mode = "test" if y is None else "train"
        for bn_param in self.bn_params:
            bn_param["mode"] = mode
        scores, cache, last_cache, standardized = self._scores(X)
        if y is None:
            return scores

        loss, dscores = layers.softmax_loss(scores, y)
        grads: dict[str, np.ndarray] = dict(grads_into or {})
        last = self.num_layers
        dh, grads[f"W{last}"], grads[f"b{last}"] = layers.affine_backward(dscores, last_cache)
        self._body_backward(dh, cache, grads)
        for name, ws_cache in standardized.items():
            grads[name] = norms.weight_standardization_backward(grads[name], ws_cache)
        if self.reg:  # reg 0 adds nothing: skip a pass over every weight
            for name, w in self.params.items():
                if name[0] in "WP" and (self.reg_output or name != f"W{last}"):
                    loss += 0.5 * self.reg * float(np.sum(w * w))
                    grads[name] += self.reg * w
        return loss, grads

    weight_standardization: str | None = None  # None, 'standard' or 'scaled'

    def _standardize_weights(self, weight_standardization: str | None) -> None:
        """Hidden layers' weights standardized per output unit in every pass (Qiao et al. 2019),
        or 'scaled' by the gain of the activation before them over sqrt(fan_in) (Brock et al. 2021;
        gain 1 for the first layer, which reads the input); the output layer's as they are.
        norms.weight_standardization_forward has the formulas."""
        if weight_standardization not in (None, "standard", "scaled"):
            raise ValueError(
                f"unknown weight_standardization {weight_standardization!r}: expected None, 'standard' or 'scaled'"
            )
        self.weight_standardization = weight_standardization
        self._ws_gain = activation_gain(self.activation_name, self.negative_slope)

    def _scores(self, X: np.ndarray):
        """Class scores of X in the layers' current modes, with the body's, the output layer's and
        the weight standardizations' caches (the hidden layers see standardized weights)."""
        kept, standardized = self.params, {}
        if self.weight_standardization is not None:
            # scaled: the gain of the activation before the layer; the first layer reads the input
            self.params = dict(kept)
            for i in range(1, self.num_layers):
                scaled = (1.0 if i == 1 else self._ws_gain) if self.weight_standardization == "scaled" else None
                w_hat, standardized[f"W{i}"] = norms.weight_standardization_forward(kept[f"W{i}"], scaled)
                self.params[f"W{i}"] = w_hat
        try:
            h, cache = self._body(self._input(X))
            last = self.num_layers
            scores, last_cache = layers.affine_forward(h, self.params[f"W{last}"], self.params[f"b{last}"])
        finally:
            self.params = kept
        return scores, cache, last_cache, standardized

    def batch_statistics_scores(self, X: np.ndarray) -> np.ndarray:
        """Class scores (N, num_classes) for X with every normalization in train mode, normalizing
        with X's own statistics (as during training; dropout off), its running statistics and noise
        streams left exactly as they were: what model.train() gives in PyTorch, beside test mode's
        running statistics."""
        kept = self.bn_params
        self.bn_params = copy.deepcopy(kept)
        dropout = getattr(self, "dropout_param", None)
        try:
            for bn_param in self.bn_params:
                bn_param["mode"] = "train"
            if dropout is not None:
                dropout["mode"] = "test"
            return self._scores(X)[0]
        finally:
            self.bn_params = kept

    def state(self) -> dict[str, np.ndarray]:
        """What makes the net what it is after training: 'param/NAME' for every parameter and
        'norm/LAYER/KEY' for every array a normalization layer keeps (running_mean, running_var)."""
        state = {f"param/{name}": value for name, value in self.params.items()}
        for layer, bn_param in enumerate(self.bn_params):
            state.update({f"norm/{layer}/{k}": v for k, v in bn_param.items() if isinstance(v, np.ndarray)})
        return state

    def load_state(self, state: dict[str, np.ndarray], new_head: bool = False) -> None:
        """Copy a state() into this net. ValueError naming every array whose shape differs, or a
        parameter one side lacks, before anything is copied. new_head: the output layer keeps its
        own weights (a new classifier on transferred features), whatever the state holds for it."""
        head = {f"param/W{self.num_layers}", f"param/b{self.num_layers}"} if new_head else set()
        state = {name: value for name, value in state.items() if name not in head}
        own = {name: value for name, value in self.state().items() if name not in head}
        problems = [
            f"{name.removeprefix('param/')} is {tuple(value.shape)} there but {tuple(own[name].shape)} here"
            for name, value in state.items()
            if name in own and value.shape != own[name].shape
        ]
        for side, names in (("here", own.keys() - state.keys()), ("there", state.keys() - own.keys())):
            params = sorted(name.removeprefix("param/") for name in names if name.startswith("param/"))
            problems += [f"{', '.join(params)} exist only {side}"] if params else []
        layers = sorted({int(name.split("/")[1]) for name in state if name.startswith("norm/")})
        if layers and layers[-1] >= len(self.bn_params):
            problems.append(f"normalization layer {layers[-1] + 1} exists only there")
        if problems:
            raise ValueError("the weights do not fit this net: " + "; ".join(problems))
        for name, value in state.items():
            kind, *key = name.split("/")
            if kind == "param":
                self.params[key[0]][...] = value
            else:
                self.bn_params[int(key[0])][key[1]] = value.astype(self.dtype, copy=True)

    def _body(self, h: np.ndarray):
        """Everything below the output layer: hidden layers 1 .. L-1 (_layer_forward(h, i) ->
        (h, cache)), each output recorded in layer_outputs when that is a dict. Returns (h, caches)."""
        caches = []
        for i in range(1, self.num_layers):
            h, cache = self._layer_forward(h, i)
            caches.append(cache)
            if self.layer_outputs is not None:
                self.layer_outputs[i] = h
        return h, caches

    def _body_backward(self, dh: np.ndarray, caches, grads: dict) -> None:
        """Backward of _body, storing the parameter gradients in grads."""
        for i in range(self.num_layers - 1, 0, -1):
            dh = self._layer_backward(dh, caches[i - 1], i, grads)


def affine_backward_into(dout: np.ndarray, cache, i: int, grads: dict) -> np.ndarray | None:
    """layers.affine_backward of weight layer i, dW_i and db_i stored in grads (dW_1 into the array
    grads holds for it already, if any); returns dx, except for the first layer (None): its input
    gradient is as costly as its forward and never used."""
    if i == 1:
        x, _ = cache
        grads["W1"], grads["b1"] = np.matmul(x.T, dout, out=grads.get("W1")), dout.sum(axis=0)
        return None
    dx, grads[f"W{i}"], grads[f"b{i}"] = layers.affine_backward(dout, cache)
    return dx


def conv_backward_into(dout: np.ndarray, cache, i: int, grads: dict) -> np.ndarray | None:
    """fused.conv_backward of weight layer i, as affine_backward_into (None for the first)."""
    if i == 1:
        grads["W1"], grads["b1"] = conv.conv_backward_fast_params(dout, cache)
        return None
    dx, grads[f"W{i}"], grads[f"b{i}"] = fused.conv_backward(dout, cache)
    return dx


class FullyConnectedNet(Net):
    """The notebooks' FullyConnectedNet, float32 by default.

    Args:
        hidden_dims: the width of every hidden layer.
        input_dim, num_classes: input features (3*32*32 for CIFAR-10, or the shape (3, 32, 32) of a
            sample) and classes.
        dropout_keep_ratio: probability of keeping a hidden unit; 1 disables dropout.
        dropout_position: 'every' hidden layer's output, or the 'last' one's only: after every
            normalization, so that none sees dropout's variance shift (Li et al. 2019).
        normalization: None or a name in bnlab.nn.normalizations.NORMALIZATIONS.
        activation: a name in bnlab.nn.layers.ACTIVATIONS: 'relu', 'leaky_relu', 'sigmoid', 'tanh'.
        negative_slope: the slope of 'leaky_relu' for negative inputs.
        norm_position: 'before' the activation (the notebooks and the BN paper) or 'after' it.
        weight_standardization: None, 'standard' or 'scaled' (see Net._standardize_weights).
        noise_seed: seeds the generator of each layer of a normalization that draws noise (with
            the layer), so the weights and minibatches are drawn exactly as without the noise
            (without noise_seed, every layer's is RandomState(0)).
        reg: L2 strength; the loss adds 0.5 * reg * sum(W**2) over every weight matrix.
        reg_output: False leaves the output layer's weights out of the L2 term: with a
            normalization before every activation, it then decays exactly the weights the
            normalization makes scale-invariant (those Solver's lr_growth grows).
        weight_scale: standard deviation of the initial weights, or 'he' / 'xavier' (see init_std).
        dtype: np.float32 to train fast, np.float64 for gradient checks.
        seed, rng: where the initial weights and the dropout masks come from: a
            np.random.RandomState, else one seeded with `seed`, else numpy's global RNG (so that
            `np.random.seed(231)` before construction reproduces the notebooks' weights).
        norm_options: the normalization's options by name, each defaulting to its row's
            (bnlab.nn.normalizations lists each row's options).
    """

    def __init__(
        self,
        hidden_dims: Sequence[int],
        input_dim: int | tuple[int, ...] = 3 * 32 * 32,
        num_classes: int = 10,
        dropout_keep_ratio: float = 1.0,
        dropout_position: str = "every",
        normalization: str | None = None,
        activation: str = "relu",
        negative_slope: float = 0.01,
        norm_position: str = "before",
        weight_standardization: str | None = None,
        noise_seed: int | None = None,
        reg: float = 0.0,
        reg_output: bool = True,
        weight_scale: WeightScale = 1e-2,
        dtype: type = np.float32,
        seed: int | None = None,
        rng: np.random.RandomState | None = None,
        **norm_options,
    ) -> None:
        self.norm = self._normalization(normalization, norm_options, hidden_dims, "every hidden width")
        if norm_position not in ("before", "after"):
            raise ValueError(f"unknown norm_position {norm_position!r}: expected 'before' or 'after'")
        self._setup(normalization, norm_options, activation, negative_slope, reg, dtype, seed, rng)
        self.reg_output = reg_output
        self._standardize_weights(weight_standardization)
        if dropout_position not in ("every", "last"):
            raise ValueError(f"unknown dropout_position {dropout_position!r}: expected 'every' or 'last'")
        self.norm_position = norm_position
        self.num_layers = 1 + len(hidden_dims)
        every = range(1, self.num_layers) if dropout_position == "every" else [self.num_layers - 1]
        self.dropout_layers = frozenset(every if dropout_keep_ratio != 1 else ())

        dims = [int(np.prod(input_dim)), *hidden_dims, num_classes]
        for i in range(1, self.num_layers + 1):
            self._add_weights(i, (dims[i - 1], dims[i]), init_std(weight_scale, dims[i - 1], dims[i]), dims[i])
            if normalization is not None and i < self.num_layers:
                self._add_norm(i, dims[i])
        self._cast_params()

        self.dropout_param = {"mode": "train", "p": dropout_keep_ratio, "rng": self.rng}
        # One dict per normalization layer (the notebooks' name): mode, options, running statistics.
        self.bn_params = self._layer_params(self.num_layers - 1, noise_seed)

    def loss(self, X: np.ndarray, y: np.ndarray | None = None, grads_into: dict | None = None):
        """Class scores (N, C) for X (N, d_1, ..., d_k) when y is None (test mode); otherwise
        (loss, grads) for labels y (N,) in train mode, grads holding one array per parameter
        (grads_into: as Net.loss).
        """
        self.dropout_param["mode"] = "test" if y is None else "train"
        return super().loss(X, y, grads_into)

    def _layer_forward(self, x: np.ndarray, i: int):
        """affine - [norm] - activation - [dropout] for hidden layer i (1-based), or with the norm
        after the activation."""
        p = self.params
        h, affine_cache = layers.affine_forward(x, p[f"W{i}"], p[f"b{i}"])
        h, norm_cache, activation_cache = self._norm_act(h, i)
        dropout_cache = None
        if i in self.dropout_layers:
            h, dropout_cache = layers.dropout_forward(h, self.dropout_param)
        return h, (affine_cache, norm_cache, activation_cache, dropout_cache)

    def _layer_backward(self, dout: np.ndarray, cache, i: int, grads: dict) -> np.ndarray | None:
        """Backward of _layer_forward; stores the parameter gradients in grads and returns dx,
        except for the first layer, whose input gradient nobody needs (None)."""
        affine_cache, norm_cache, activation_cache, dropout_cache = cache
        if dropout_cache is not None:
            dout = layers.dropout_backward(dout, dropout_cache)
        dout = self._norm_act_backward(dout, norm_cache, activation_cache, i, grads)
        return affine_backward_into(dout, affine_cache, i, grads)


# Activations that never decrease: max pooling commutes with them.
NON_DECREASING = frozenset({"relu", "leaky_relu", "sigmoid", "tanh"})


class ConvNet(Net):
    """A convolutional net with a normalization switch, float32 by default:

        {conv KxK (stride 1) - [norm] - activation - pool 2x2} per entry of `channels`, then
        {affine - [norm] - activation} per entry of `hidden_dims`, then affine - softmax.

    With pool='avg', padding='valid', activation='sigmoid', channels [6, 16], kernel_size 5 and
    hidden_dims [120, 84] this is LeNet as the d2l book teaches it (and, with normalization
    'batchnorm', its batch-norm LeNet: the norm after each conv and affine, before the sigmoid).

    Args:
        channels: the filters of each conv block.
        kernel_size: K; odd with padding 'same'.
        padding: 'same' (zero padding (K - 1) / 2 keeps the size) or 'valid' (none: K - 1 fewer
            rows and columns).
        pool: 'max' or 'avg' (2x2, stride 2).
        input_dim: (C, H, W) of the images.
        num_classes: classes of the output layer.
        hidden_dims: widths of the fully connected hidden layers after the conv blocks (may be empty
            or None).
        normalization: None or a name in bnlab.nn.normalizations.NORMALIZATIONS whose row has a
            conv form: that form in the conv blocks (batch norm per channel over (N, H, W), ...),
            its flat form in the fully connected layers.
        activation, negative_slope, weight_standardization: as FullyConnectedNet (conv filters
            standardized over (C, K, K)).
        reg, reg_output, weight_scale, dtype, seed, rng: as FullyConnectedNet; a convolution's
            fan_in is C*K*K and its fan_out F*K*K.
        norm_options: as FullyConnectedNet's; they must suit channels and hidden_dims alike.

    Parameters: W1.. and b1.. in layer order (conv filters (F, C, K, K) first), gamma_i and beta_i
    for each normalized layer.
    """

    flat_input = False

    def __init__(
        self,
        channels: Sequence[int],
        kernel_size: int = 3,
        padding: str = "same",
        pool: str = "max",
        input_dim: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        hidden_dims: Sequence[int] | None = (),
        normalization: str | None = None,
        activation: str = "relu",
        negative_slope: float = 0.01,
        weight_standardization: str | None = None,
        reg: float = 0.0,
        reg_output: bool = True,
        weight_scale: WeightScale = "he",
        dtype: type = np.float32,
        seed: int | None = None,
        rng: np.random.RandomState | None = None,
        **norm_options,
    ) -> None:
        hidden_dims = list(hidden_dims or [])
        self.norm = self._normalization(normalization, norm_options, [*channels, *hidden_dims], "every width", True)
        if padding not in ("same", "valid"):
            raise ValueError(f"unknown padding {padding!r}: expected 'same' or 'valid'")
        if pool not in ("max", "avg"):
            raise ValueError(f"unknown pool {pool!r}: expected 'max' or 'avg'")
        if kernel_size < 1 or (padding == "same" and kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be odd and positive (the padding keeps the size), got {kernel_size}")
        c, h, w = input_dim
        pad = (kernel_size - 1) // 2 if padding == "same" else 0
        sizes = conv.conv_sizes((h, w), len(channels), kernel_size, pad)
        if min(sizes[-1]) < 1:
            raise ValueError(
                f"{len(channels)} conv blocks (kernel {kernel_size}, padding {padding}, 2x2 pools) leave no pixels of "
                f"{h}x{w} images: sizes {sizes}"
            )
        self._setup(normalization, norm_options, activation, negative_slope, reg, dtype, seed, rng)
        self.reg_output = reg_output
        self._standardize_weights(weight_standardization)
        # max pooling commutes with a non-decreasing activation; averaging does not
        self.pool_first = pool == "max" and activation in NON_DECREASING
        self.pool_forward, self.pool_backward = (
            (fused.max_pool_forward, fused.max_pool_backward)
            if pool == "max"
            else (conv.avg_pool_forward_fast, conv.avg_pool_backward_fast)
        )
        self.num_conv = len(channels)
        self.num_layers = len(channels) + len(hidden_dims) + 1
        self.conv_param = {"stride": 1, "pad": pad}
        self.pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        k2 = kernel_size * kernel_size
        for i, f in enumerate(channels, start=1):
            self._add_weights(i, (f, c, kernel_size, kernel_size), init_std(weight_scale, c * k2, f * k2), f)
            c, (h, w) = f, sizes[i]
        dims = [c * h * w, *hidden_dims, num_classes]
        for j in range(len(dims) - 1):
            std = init_std(weight_scale, dims[j], dims[j + 1])
            self._add_weights(self.num_conv + j + 1, (dims[j], dims[j + 1]), std, dims[j + 1])
        if normalization is not None:
            for i, width in enumerate([*channels, *hidden_dims], start=1):
                self._add_norm(i, width)
        self._cast_params()

        self.bn_params = self._layer_params(self.num_layers - 1)

    def _layer_forward(self, x: np.ndarray, i: int):
        return self._conv_forward(x, i) if i <= self.num_conv else self._hidden_forward(x, i)

    def _layer_backward(self, dout: np.ndarray, cache, i: int, grads: dict) -> np.ndarray | None:
        backward = self._conv_backward if i <= self.num_conv else self._hidden_backward
        return backward(dout, cache, i, grads)

    def _conv_forward(self, x: np.ndarray, i: int):
        """conv - [norm] - activation - pool for conv block i (1-based).

        A non-decreasing activation commutes with max pooling (max f(x) = f(max x), with the same
        gradients), so it is applied after the pool, to a quarter of the values. A norm with a
        compiled form fused with the 2x2 max pool (batch norm, in train mode) runs as one pass."""
        p = self.params
        h, conv_cache = fused.conv_forward(x, p[f"W{i}"], p[f"b{i}"], self.conv_param)
        if self._pool_fused(h, i):
            h, norm_cache = self.norm.maxpool_forward(h, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
            if self.activation_inputs is not None:  # recorded beside the step, which stays as it is
                self.activation_inputs[i] = fused.normalized(norm_cache)
            h, act_cache = self.activation[0](h)
            return h, (conv_cache, norm_cache, act_cache, None)
        norm_cache = None
        if self.norm is not None:
            h, norm_cache = self.norm.spatial_forward(h, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
        if self.activation_inputs is not None:
            self.activation_inputs[i] = h
        if self.pool_first:
            h, pool_cache = self.pool_forward(h, self.pool_param)
            h, act_cache = self.activation[0](h)
        else:
            h, act_cache = self.activation[0](h)
            h, pool_cache = self.pool_forward(h, self.pool_param)
        return h, (conv_cache, norm_cache, act_cache, pool_cache)

    def _pool_fused(self, h: np.ndarray, i: int) -> bool:
        """Whether block i's norm and max pool run as one pass: the row has that form, the pool
        comes before the activation and tiles h, and the layer trains."""
        return (
            self.norm is not None
            and self.norm.maxpool_forward is not None
            and self.pool_first
            and h.shape[2] % 2 == 0
            and h.shape[3] % 2 == 0
            and self.bn_params[i - 1]["mode"] == "train"
        )

    def _conv_backward(self, dout: np.ndarray, cache, i: int, grads: dict) -> np.ndarray | None:
        """Backward of _conv_forward; None for the first block, whose input gradient nobody needs."""
        conv_cache, norm_cache, act_cache, pool_cache = cache
        if pool_cache is None:  # the norm and the pool fused
            dout = self.activation[1](dout, act_cache)
            dout, grads[f"gamma{i}"], grads[f"beta{i}"] = self.norm.maxpool_backward(dout, norm_cache)
            return conv_backward_into(dout, conv_cache, i, grads)
        if self.pool_first:
            dout = self.pool_backward(self.activation[1](dout, act_cache), pool_cache)
        else:
            dout = self.activation[1](self.pool_backward(dout, pool_cache), act_cache)
        if self.norm is not None:
            dout, grads[f"gamma{i}"], grads[f"beta{i}"] = self.norm.spatial_backward(dout, norm_cache)
        return conv_backward_into(dout, conv_cache, i, grads)

    def _hidden_forward(self, x: np.ndarray, i: int):
        """affine - [norm] - activation for fully connected hidden layer i (1-based, after the convs)."""
        p = self.params
        h, affine_cache = layers.affine_forward(x, p[f"W{i}"], p[f"b{i}"])
        h, norm_cache, act_cache = self._norm_act(h, i)
        return h, (affine_cache, norm_cache, act_cache)

    def _hidden_backward(self, dout: np.ndarray, cache, i: int, grads: dict) -> np.ndarray:
        affine_cache, norm_cache, act_cache = cache
        dout = self._norm_act_backward(dout, norm_cache, act_cache, i, grads)
        return affine_backward_into(dout, affine_cache, i, grads)
