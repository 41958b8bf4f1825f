"""Where the norm goes in a residual block (issue 31, part 3): the gradients at initialization of
pre-norm and post-norm residual MLPs with layer norm against depth, beside what Xiong et al. 2020
(Theorems 1 and 2) order: the last block's gradient is O(d sqrt(ln d)) whatever the depth L with
post-norm, O(d sqrt(ln d / L)) with pre-norm, and post-norm's gradients grow toward the output."""

from __future__ import annotations

import numpy as np

from bnlab.nn.residual import ResidualMLP

DEPTHS = (4, 8, 16, 32)


def block_gradient_norms(residual: str, blocks: int, seeds: int = 3) -> np.ndarray:
    """||dL/dW|| of each block's last weight layer (W_{2k+1}), mean over seeds, at initialization
    (Xavier, as Transformers), for 256 random inputs and labels."""
    rng = np.random.RandomState(0)
    X, y = rng.randn(256, 32), rng.randint(10, size=256)
    norms = []
    for seed in range(seeds):
        net = ResidualMLP([64] * blocks, input_dim=32, residual=residual, normalization="layernorm",
                          weight_scale="xavier", dtype=np.float64, seed=seed)  # fmt: skip
        _, grads = net.loss(X, y)
        norms.append([np.linalg.norm(grads[f"W{2 * k + 1}"]) for k in range(1, blocks + 1)])
    return np.mean(norms, axis=0)


def slope(values) -> float:
    """The log-log slope of values against DEPTHS (-0.5: as 1 / sqrt(L); 0: independent of L)."""
    return float(np.polyfit(np.log(DEPTHS), np.log(values), 1)[0])


def slope_along(values: np.ndarray) -> float:
    """The slope of log(values) against the block number: > 0 grows toward the output."""
    return float(np.polyfit(np.arange(len(values)), np.log(values), 1)[0])


def test_pre_norms_last_gradient_shrinks_with_depth_and_post_norms_does_not():
    pre = [block_gradient_norms("pre", depth)[-1] for depth in DEPTHS]
    post = [block_gradient_norms("postnorm", depth)[-1] for depth in DEPTHS]
    assert all(a > b for a, b in zip(pre, pre[1:], strict=False)), pre  # shrinks at every doubling
    assert slope(pre) < -0.2, slope(pre)  # measured -0.24; Xiong et al.: -0.5
    assert slope(post) > -0.05, slope(post)  # not shrinking (measured +0.35: it grows here)
    assert post[-1] > 3 * pre[-1]


def test_post_norms_gradients_grow_toward_the_output():
    post = block_gradient_norms("postnorm", 32)
    assert post[-1] > 2 * post[0]
    assert slope_along(post) > 0
    pre = block_gradient_norms("pre", 32)
    assert pre[-1] < pre[0]  # pre-norm: the other way
