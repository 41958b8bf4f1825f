"""Residual networks, fully connected and convolutional, built from the layers of nn/.

Each entry of `hidden_dims` (ResidualMLP) or `channels` (ResidualConvNet) is one residual block of
two weight layers. With `residual='pre'` (He et al. 2016, "Identity Mappings in Deep Residual
Networks"; "pre-LN" in transformers) the stream is never normalized:

    stem:    x_0 = [norm](W_1 X)
    block k: x_k = s(x_{k-1}) + alpha_k * W_{2k+1} act([norm](W_{2k} act([norm](x_{k-1}))))
    head:    scores = W_L act([norm](x_B))                           (L = 2B + 2)

With `residual='post'` it is the original ResNet as He et al. 2015 define it: the normalization at
the end of the branch, before the addition, and the activation after the addition (not a "post-LN"
transformer, whose norm comes after the addition):

    stem:    x_0 = act([norm](W_1 X))
    block k: x_k = act(s(x_{k-1}) + alpha_k * [norm](W_{2k+1} act([norm](W_{2k} x_{k-1}))))
    head:    scores = W_L x_B

With `residual='postnorm'` the normalization comes after the addition, as in the original
Transformer ("post-LN"; Xiong et al. 2020 contrast it with pre-LN), the branch unnormalized:

    stem:    x_0 = [norm](W_1 X)
    block k: x_k = [norm](s(x_{k-1}) + alpha_k * W_{2k+1} act(W_{2k} x_{k-1}))
    head:    scores = W_L x_B

[norm] is the net's normalization (absent with None); alpha_k is SkipInit's learnable scalar (De &
Smith 2020), initialized to 0, only with `skipinit=True` (otherwise the branch is added as it is).
The stem normalizes in both forms, so that with a normalization the stream starts at unit
variance, as in De & Smith's analysis, whatever the scale of the input.

Changes of width and resolution: the shortcut s is the identity when the block keeps the width,
else a learned projection without bias, P_{2k} (He et al. 2015's option B; a 1x1 convolution in
the conv net). In the conv net every block first halves the resolution of the stream by 2x2
average pooling (linear, so the shortcut stays linear), the stem's KxK convolution runs at full
resolution, and the head takes the global average over positions before W_L.

Parameters, numbered by weight layer: W_i, b_i (i = 1 .. L); gamma_i, beta_i of the norm next to
W_i (pre: the norm feeding W_i, and the stem's after W_1; post: the norm after W_i; postnorm: the
stem's after W_1 and block k's after its addition, numbered 2k + 1); P_{2k} and
alpha_{2k+1} of block k. `activation_inputs` (a dict, when set) receives each activation's input
under the number of its weight layer, `layer_outputs` the stream x_k under the block number k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bnlab.nn import conv, layers
from bnlab.nn.architectures import Architecture
from bnlab.nn.nets import Net, WeightScale, affine_backward_into, conv_backward_into, init_std
from bnlab.nn.normalizations import Normalization

RESIDUAL_FORMS = ("pre", "post", "postnorm")
Array = np.ndarray


# --- pooling layers of the conv net ---------------------------------------------------------


def avg_pool2x2_forward(x: Array) -> tuple[Array, tuple]:
    """2x2 average pooling, stride 2. Shapes: x (N, C, H, W), H and W even -> out (N, C, H/2, W/2)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5)), (x.shape,)


def avg_pool2x2_backward(dout: Array, cache: tuple) -> Array:
    """Each input receives a quarter of its window's gradient. dout (N, C, H/2, W/2) -> dx (N, C, H, W)."""
    return np.repeat(np.repeat(dout, 2, axis=2), 2, axis=3) / dout.dtype.type(4)


def global_avg_pool_forward(x: Array) -> tuple[Array, tuple]:
    """The mean over positions. Shapes: x (N, C, H, W) -> out (N, C)."""
    return x.mean(axis=(2, 3)), (x.shape,)


def global_avg_pool_backward(dout: Array, cache: tuple) -> Array:
    """dout (N, C) -> dx (N, C, H, W), every position getting dout / (H W)."""
    (shape,) = cache
    return np.broadcast_to((dout / (shape[2] * shape[3]))[:, :, None, None], shape).copy()


def projection_forward(x: Array, p: Array) -> tuple[Array, tuple]:
    """A shortcut's projection without bias: x (N, D) @ p (D, M), or the 1x1 convolution of
    x (N, C, H, W) with p (F, C, 1, 1) -> (N, F, H, W)."""
    if x.ndim == 2:
        return x @ p, (x, p)
    return np.einsum("nchw,fc->nfhw", x, p[:, :, 0, 0], optimize=True), (x, p)


def projection_backward(dout: Array, cache: tuple) -> tuple[Array, Array]:
    """Shapes: dout as the output -> dx as x, dp as p."""
    x, p = cache
    if x.ndim == 2:
        return dout @ p.T, x.T @ dout
    dx = np.einsum("nfhw,fc->nchw", dout, p[:, :, 0, 0], optimize=True)
    dp = np.einsum("nfhw,nchw->fc", dout, x, optimize=True)[:, :, None, None]
    return dx, dp


# --- the nets --------------------------------------------------------------------------------


class _ResidualNet(Net):
    """What both residual nets share: the blocks and the passes around them (see the module
    docstring). Subclasses set up the parameters and the weight layer of their kind (_linear)."""

    residual: str
    skipinit: bool
    norm: Normalization | None
    conv_form = False  # whether its norms take (N, C, H, W)

    @classmethod
    def _residual_norm(cls, normalization, options: dict, widths, which: str, conv_form: bool = False):
        """The normalization's row, as Net._normalization finds it, if residual nets take it."""
        row = cls._normalization(normalization, options, widths, which, conv_form)
        if row is not None and not row.residual:
            raise ValueError(f"normalization {normalization!r} is not available in residual nets")
        return row

    widths: list[int]
    num_layers: int

    def _setup_blocks(
        self, residual, skipinit, normalization, norm_options, activation, negative_slope, reg, dtype, seed, rng
    ) -> None:
        if residual not in RESIDUAL_FORMS:
            raise ValueError(f"unknown residual form {residual!r}: expected one of {list(RESIDUAL_FORMS)}")
        self._setup(normalization, norm_options, activation, negative_slope, reg, dtype, seed, rng)
        self.residual = residual
        self.skipinit = skipinit
        self.num_blocks = len(self.widths)
        self.num_layers = 2 * self.num_blocks + 2
        # the layers with a norm, in order; one param dict each (mode, running statistics, groups)
        if normalization is None:
            self.norm_layers: list[int] = []
        elif residual == "pre":
            self.norm_layers = list(range(1, self.num_layers + 1))
        elif residual == "postnorm":
            self.norm_layers = [1, *(2 * k + 1 for k in range(1, self.num_blocks + 1))]
        else:
            self.norm_layers = list(range(1, self.num_layers))
        self.bn_params = self._layer_params(len(self.norm_layers))
        self._bn_index = {layer: j for j, layer in enumerate(self.norm_layers)}

    def _init_params(
        self,
        weight_shapes: dict[int, tuple[int, ...]],
        fans: dict[int, tuple[int, int]],
        projections: dict[int, tuple[tuple[int, ...], int, int]],
        weight_scale: WeightScale,
    ) -> None:
        """Draw W_i (and P_2k where a block changes the width) in layer order from self.rng."""
        for i in range(1, self.num_layers + 1):
            shape = weight_shapes[i]
            self._add_weights(i, shape, init_std(weight_scale, *fans[i]), shape[0 if len(shape) == 4 else 1])
            if i in projections:
                shape, p_in, p_out = projections[i]
                self.params[f"P{i}"] = init_std(weight_scale, p_in, p_out) * self.rng.randn(*shape)
        for i in self.norm_layers:
            self._add_norm(i, self._norm_width(i))
        if self.skipinit:
            for k in range(1, self.num_blocks + 1):
                self.params[f"alpha{2 * k + 1}"] = np.zeros(1)
        self._cast_params()

    @property
    def unnormalized_biases(self) -> set[str]:
        """Hidden biases that reach an activation before any normalization (postnorm's first
        branch layer's): batch norm does not cancel them, unlike every other hidden bias."""
        return {f"b{2 * k}" for k in range(1, self.num_blocks + 1)} if self.residual == "postnorm" else set()

    def _io(self, i: int) -> tuple[int, int]:
        """The features (channels) weight layer i reads and writes."""
        if i == 1:
            return self.input_width, self.widths[0]
        if i == self.num_layers:
            return self.widths[-1], self.num_classes
        k = i // 2  # the block of layer i
        entering = self.widths[k - 2] if k > 1 else self.widths[0]
        return (entering if i % 2 == 0 else self.widths[k - 1]), self.widths[k - 1]

    def _norm_width(self, i: int) -> int:
        """The features the norm next to weight layer i sees: pre, the input of W_i (the stem's
        norm: its output); post, the output of W_i."""
        fan_in, fan_out = self._io(i)
        return fan_in if self.residual == "pre" and i > 1 else fan_out

    # the pieces: each returns (out, cache) forward and takes (dout, cache) backward

    def _norm(self, x: Array, i: int):
        if self.norm is None:
            return x, None
        bn_param = self.bn_params[self._bn_index[i]]
        forward = self.norm.spatial_forward if self.conv_form else self.norm.forward
        return forward(x, self.params[f"gamma{i}"], self.params[f"beta{i}"], bn_param)

    def _norm_backward(self, dout: Array, cache, i: int, grads: dict) -> Array:
        if self.norm is None:
            return dout
        backward = self.norm.spatial_backward if self.conv_form else self.norm.backward
        dx, grads[f"gamma{i}"], grads[f"beta{i}"] = backward(dout, cache)
        return dx

    def _linear(self, x: Array, i: int):
        raise NotImplementedError

    def _linear_backward(self, dout: Array, cache, i: int, grads: dict) -> Array | None:
        raise NotImplementedError

    def _downsample(self, x: Array, k: int):
        return x, None

    def _downsample_backward(self, dout: Array, cache) -> Array:
        return dout

    def _head(self, x: Array):
        return x, None

    def _head_backward(self, dout: Array, cache) -> Array:
        return dout

    # --- forward and backward of the whole net

    def _stem(self, X: Array):
        h, c_lin = self._linear(X, 1)
        h, c_norm = self._norm(h, 1)
        c_act = None
        if self.residual == "post":
            h, c_act = self._act(h, 1)
        return h, (c_lin, c_norm, c_act)

    def _stem_backward(self, dh: Array, cache, grads: dict) -> None:
        c_lin, c_norm, c_act = cache
        if self.residual == "post":
            dh = self.activation[1](dh, c_act)
        dh = self._norm_backward(dh, c_norm, 1, grads)
        self._linear_backward(dh, c_lin, 1, grads)

    def _block(self, x: Array, k: int):
        """Block k (1-based): its weight layers are 2k and 2k + 1."""
        i, j = 2 * k, 2 * k + 1
        x, c_down = self._downsample(x, k)
        c_proj = None
        shortcut = x
        if f"P{i}" in self.params:
            shortcut, c_proj = projection_forward(x, self.params[f"P{i}"])
        caches = []  # (kind, cache, layer) in forward order, undone in reverse
        h = x
        if self.residual == "pre":
            steps = (("norm", i), ("act", i), ("linear", i), ("norm", j), ("act", j), ("linear", j))
        elif self.residual == "postnorm":
            steps = (("linear", i), ("act", i), ("linear", j))
        else:
            steps = (("linear", i), ("norm", i), ("act", i), ("linear", j), ("norm", j))
        for kind, layer in steps:
            h, cache = getattr(self, f"_{kind}")(h, layer)
            caches.append((kind, cache, layer))
        branch = h
        if self.skipinit:
            h = self.params[f"alpha{j}"] * branch
        out = shortcut + h
        c_out = None
        if self.residual == "post":
            out, c_out = self._act(out, j)
        elif self.residual == "postnorm":
            out, c_out = self._norm(out, j)
        if self.layer_outputs is not None:
            self.layer_outputs[k] = out
        return out, (c_down, c_proj, caches, branch, c_out)

    def _block_backward(self, dout: Array, cache, k: int, grads: dict) -> Array:
        c_down, c_proj, caches, branch, c_out = cache
        i, j = 2 * k, 2 * k + 1
        if self.residual == "post":
            dout = self.activation[1](dout, c_out)
        elif self.residual == "postnorm":
            dout = self._norm_backward(dout, c_out, j, grads)
        dh = dout
        if self.skipinit:
            alpha = self.params[f"alpha{j}"]
            grads[f"alpha{j}"] = np.array([np.sum(dout * branch)], dtype=alpha.dtype)
            dh = dout * alpha
        for kind, c, layer in reversed(caches):
            if kind == "linear":
                dh = self._linear_backward(dh, c, layer, grads)
            elif kind == "norm":
                dh = self._norm_backward(dh, c, layer, grads)
            else:
                dh = self.activation[1](dh, c)
        if c_proj is not None:
            dshort, grads[f"P{i}"] = projection_backward(dout, c_proj)
        else:
            dshort = dout
        return self._downsample_backward(dh + dshort, c_down)

    def _body(self, h: Array):
        """The stem, the blocks, the last norm and activation (pre) and the head: all below W_L."""
        h, stem_cache = self._stem(h)
        caches = []
        for k in range(1, self.num_blocks + 1):
            h, cache = self._block(h, k)
            caches.append(cache)
        c_norm = c_act = None
        if self.residual == "pre":
            h, c_norm = self._norm(h, self.num_layers)
            h, c_act = self._act(h, self.num_layers)
        h, c_head = self._head(h)
        return h, (stem_cache, caches, c_norm, c_act, c_head)

    def _body_backward(self, dh: Array, cache, grads: dict) -> None:
        stem_cache, caches, c_norm, c_act, c_head = cache
        dh = self._head_backward(dh, c_head)
        if self.residual == "pre":
            dh = self._norm_backward(self.activation[1](dh, c_act), c_norm, self.num_layers, grads)
        for k in range(self.num_blocks, 0, -1):
            dh = self._block_backward(dh, caches[k - 1], k, grads)
        self._stem_backward(dh, stem_cache, grads)


class ResidualMLP(_ResidualNet):
    """A fully connected residual net (see the module docstring), float32 by default.

    Args:
        hidden_dims: the stream's width in each block (a change of width gets a projection).
        input_dim, num_classes: input features (or the shape of one sample) and classes.
        residual: 'pre', 'post' or 'postnorm' (the module docstring).
        skipinit: a learnable scalar alpha on each block's branch, initialized to 0.
        normalization: None or a name in bnlab.nn.normalizations.NORMALIZATIONS whose row takes
            residual nets.
        activation, negative_slope, reg, reg_output, weight_scale, dtype, seed, rng, norm_options: as
            FullyConnectedNet's (group norm's groups must divide every width).
    """

    def __init__(
        self,
        hidden_dims: Sequence[int],
        input_dim: int | tuple[int, ...] = 3 * 32 * 32,
        num_classes: int = 10,
        residual: str = "pre",
        skipinit: bool = False,
        normalization: str | None = None,
        activation: str = "relu",
        negative_slope: float = 0.01,
        reg: float = 0.0,
        reg_output: bool = True,
        weight_scale: WeightScale = "he",
        dtype: type = np.float32,
        seed: int | None = None,
        rng: np.random.RandomState | None = None,
        **norm_options,
    ) -> None:
        if not hidden_dims:
            raise ValueError("a residual net needs at least one block: hidden_dims must not be empty")
        self.norm = self._residual_norm(normalization, norm_options, hidden_dims, "every width")
        self.widths = list(hidden_dims)
        self.input_width, self.num_classes = int(np.prod(input_dim)), num_classes
        self._setup_blocks(
            residual, skipinit, normalization, norm_options, activation, negative_slope, reg, dtype, seed, rng
        )
        self.reg_output = reg_output
        shapes = {i: self._io(i) for i in range(1, self.num_layers + 1)}
        projections = {
            2 * k: (self._io(2 * k), *self._io(2 * k))
            for k in range(1, self.num_blocks + 1)
            if self._io(2 * k)[0] != self._io(2 * k)[1]
        }
        self._init_params(shapes, shapes, projections, weight_scale)

    def _linear(self, x: Array, i: int):
        return layers.affine_forward(x, self.params[f"W{i}"], self.params[f"b{i}"])

    _linear_backward = staticmethod(affine_backward_into)


class ResidualConvNet(_ResidualNet):
    """A convolutional residual net (see the module docstring), float32 by default: a KxK conv stem
    at full resolution, then per entry of `channels` a block of two KxK convolutions that first
    halves the resolution (2x2 average pooling; a 1x1 projection on the shortcut when the channels
    change), then global average pooling and the affine output layer.

    Args:
        channels: the stream's channels in each block.
        kernel_size: K, odd (the padding (K - 1) / 2 keeps the size).
        input_dim: (C, H, W); H and W must be divisible by 2 ** len(channels).
        normalization: None or a name in bnlab.nn.normalizations.NORMALIZATIONS whose row takes
            residual nets and has a conv form (per channel, per group of channels, ...).
        residual, skipinit, norm_options: as ResidualMLP's.
        activation, negative_slope, reg, reg_output, weight_scale, dtype, seed, rng: as ResidualMLP's;
            a convolution's fans are C*K*K and F*K*K, a projection's C and F.
    """

    conv_form = True

    def __init__(
        self,
        channels: Sequence[int],
        kernel_size: int = 3,
        input_dim: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        residual: str = "pre",
        skipinit: bool = False,
        normalization: str | None = None,
        activation: str = "relu",
        negative_slope: float = 0.01,
        reg: float = 0.0,
        reg_output: bool = True,
        weight_scale: WeightScale = "he",
        dtype: type = np.float32,
        seed: int | None = None,
        rng: np.random.RandomState | None = None,
        **norm_options,
    ) -> None:
        if not channels:
            raise ValueError("a residual net needs at least one block: channels must not be empty")
        row = self._residual_norm(normalization, norm_options, channels, "every entry of channels", True)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive (the padding keeps the size), got {kernel_size}")
        c, h, w = input_dim
        if h % 2 ** len(channels) or w % 2 ** len(channels):
            raise ValueError(
                f"{len(channels)} blocks halve the resolution {len(channels)} times: the image's height and width "
                f"({h}, {w}) must be divisible by {2 ** len(channels)}"
            )
        self.widths = list(channels)
        self.input_width, self.num_classes = c, num_classes
        self.norm = row
        self._setup_blocks(
            residual, skipinit, normalization, norm_options, activation, negative_slope, reg, dtype, seed, rng
        )
        self.reg_output = reg_output
        self.conv_param = {"stride": 1, "pad": (kernel_size - 1) // 2}
        k2 = kernel_size * kernel_size
        shapes, fans = {}, {}
        for i in range(1, self.num_layers):
            f_in, f_out = self._io(i)
            shapes[i], fans[i] = (f_out, f_in, kernel_size, kernel_size), (f_in * k2, f_out * k2)
        shapes[self.num_layers] = fans[self.num_layers] = self._io(self.num_layers)
        projections = {}
        for k in range(1, self.num_blocks + 1):
            f_in, f_out = self._io(2 * k)
            if f_in != f_out:
                projections[2 * k] = ((f_out, f_in, 1, 1), f_in, f_out)
        self._init_params(shapes, fans, projections, weight_scale)

    flat_input = False

    def _linear(self, x: Array, i: int):
        return conv.conv_forward_fast(x, self.params[f"W{i}"], self.params[f"b{i}"], self.conv_param)

    _linear_backward = staticmethod(conv_backward_into)

    def _downsample(self, x: Array, k: int):
        return avg_pool2x2_forward(x)

    def _downsample_backward(self, dout: Array, cache) -> Array:
        return avg_pool2x2_backward(dout, cache)

    def _head(self, x: Array):
        return global_avg_pool_forward(x)

    def _head_backward(self, dout: Array, cache) -> Array:
        return global_avg_pool_backward(dout, cache)


# --- the residual architectures a spec can name (model.residual: pre | post | postnorm)-----------------

_NOT_IN_RESIDUAL_NETS = {
    "dropout_keep_ratio": "residual nets have no dropout; leave it at 1",
    "norm_position": "residual sets where a residual net normalizes; leave it at before",
}
RESIDUAL_ARCHITECTURES: dict[str, Architecture] = {
    "fc": Architecture(
        ResidualMLP,
        ("hidden_dims", ": the stream's width in each block, e.g. [128, 128]"),
        takes=lambda row: row.residual,
        lacks=_NOT_IN_RESIDUAL_NETS,
    ),
    "conv": Architecture(
        ResidualConvNet,
        ("channels", " (the stream's channels in each block)"),
        takes=lambda row: row.residual and row.spatial_forward is not None,
        lacks={**_NOT_IN_RESIDUAL_NETS, "hidden_dims": "a residual conv net has no fully connected hidden layers"},
    ),
}
