"""The update rules against steps worked out by hand, and against the expected values of the
CS231n assignment-2 optimizer checks (FullyConnectedNets notebook, printed to 8 decimals)."""

import math

import numpy as np
import pytest

from bnlab.nn import optim

W = np.array([1.0, -2.0])
DW1 = np.array([0.5, 0.25])
DW2 = np.array([1.0, -1.0])


def test_sgd():
    next_w, config = optim.sgd(W, DW1, {"learning_rate": 0.1})
    np.testing.assert_allclose(next_w, [0.95, -2.025], rtol=1e-15)
    next_w, config = optim.sgd(W, DW1)
    assert config["learning_rate"] == 1e-2
    np.testing.assert_allclose(next_w, [0.995, -2.0025], rtol=1e-15)


def test_sgd_momentum_two_steps():
    config = {"learning_rate": 0.1, "momentum": 0.9}
    w1, config = optim.sgd_momentum(W, DW1, config)
    # v = 0.9 * 0 - 0.1 * [0.5, 0.25]
    np.testing.assert_allclose(config["velocity"], [-0.05, -0.025], rtol=1e-15)
    np.testing.assert_allclose(w1, [0.95, -2.025], rtol=1e-15)
    w2, config = optim.sgd_momentum(w1, DW2, config)
    # v = 0.9 * [-0.05, -0.025] - 0.1 * [1, -1] = [-0.145, 0.0775]
    np.testing.assert_allclose(config["velocity"], [-0.145, 0.0775], rtol=1e-14)
    np.testing.assert_allclose(w2, [0.805, -1.9475], rtol=1e-14)


def test_rmsprop_two_steps():
    config = {"learning_rate": 0.01}  # decay_rate 0.99, epsilon 1e-8 by default
    w1, config = optim.rmsprop(W, DW1, config)
    # cache = 0.01 * dw**2 = [0.0025, 0.000625], whose square roots are [0.05, 0.025]
    np.testing.assert_allclose(config["cache"], [0.0025, 0.000625], rtol=1e-14)
    np.testing.assert_allclose(w1, [1 - 0.01 * 0.5 / (0.05 + 1e-8), -2 - 0.01 * 0.25 / (0.025 + 1e-8)], rtol=1e-15)
    w2, config = optim.rmsprop(w1, DW2, config)
    # cache = 0.99 * [0.0025, 0.000625] + 0.01 * [1, 1]
    cache = [0.012475, 0.01061875]
    np.testing.assert_allclose(config["cache"], cache, rtol=1e-14)
    expected = [w1[0] - 0.01 * 1.0 / (math.sqrt(cache[0]) + 1e-8), w1[1] + 0.01 * 1.0 / (math.sqrt(cache[1]) + 1e-8)]
    np.testing.assert_allclose(w2, expected, rtol=1e-14)


def test_adam_two_steps_with_bias_correction():
    config = {"learning_rate": 0.1}  # beta1 0.9, beta2 0.999, epsilon 1e-8 by default
    w1, config = optim.adam(W, DW1, config)
    assert config["t"] == 1
    # m = 0.1 * dw, v = 0.001 * dw**2; corrected: m / 0.1 = dw, v / 0.001 = dw**2, so the first
    # step is learning_rate * dw / (|dw| + eps): 0.1 against the sign of each gradient.
    np.testing.assert_allclose(config["m"], [0.05, 0.025], rtol=1e-15)
    np.testing.assert_allclose(config["v"], [0.00025, 0.0000625], rtol=1e-14)
    np.testing.assert_allclose(w1, [1 - 0.1 * 0.5 / (0.5 + 1e-8), -2 - 0.1 * 0.25 / (0.25 + 1e-8)], rtol=1e-15)

    w2, config = optim.adam(w1, DW2, config)
    assert config["t"] == 2
    # m = 0.9 * [0.05, 0.025] + 0.1 * [1, -1];  v = 0.999 * [0.00025, 0.0000625] + 0.001 * [1, 1]
    m, v = [0.145, -0.0775], [0.00124975, 0.0010624375]
    np.testing.assert_allclose(config["m"], m, rtol=1e-14)
    np.testing.assert_allclose(config["v"], v, rtol=1e-14)
    c1, c2 = 1 - 0.9**2, 1 - 0.999**2  # 0.19 and 0.001999
    expected = [w1[i] - 0.1 * (m[i] / c1) / (math.sqrt(v[i] / c2) + 1e-8) for i in range(2)]
    np.testing.assert_allclose(w2, expected, rtol=1e-14)


@pytest.mark.parametrize("rule", list(optim.UPDATE_RULES))
def test_rules_leave_w_alone_fill_defaults_and_keep_float32(rule):
    w = np.array([[0.5, -1.5]], dtype=np.float32)
    w_before = w.copy()
    config = {}
    for _ in range(2):
        next_w, config = optim.UPDATE_RULES[rule](w, np.ones_like(w), config)
        assert next_w.dtype == np.float32
        np.testing.assert_array_equal(w, w_before)
    assert {k: config[k] for k in optim.DEFAULTS[rule]} == optim.DEFAULTS[rule]
    for state in ("velocity", "cache", "m", "v"):
        if state in config:
            assert config[state].dtype == np.float32


# --- CS231n's optimizer checks ---------------------------------------------------------------------

N, D = 4, 5
CS_W = np.linspace(-0.4, 0.6, num=N * D).reshape(N, D)
CS_DW = np.linspace(-0.6, 0.4, num=N * D).reshape(N, D)
PRINTED = 6e-9  # the expected values are printed to 8 decimals: +-5e-9


def test_cs231n_sgd_momentum_check():
    v = np.linspace(0.6, 0.9, num=N * D).reshape(N, D)
    next_w, config = optim.sgd_momentum(CS_W, CS_DW, {"learning_rate": 1e-3, "velocity": v})
    expected_next_w = np.asarray(
        [
            [0.1406, 0.20738947, 0.27417895, 0.34096842, 0.40775789],
            [0.47454737, 0.54133684, 0.60812632, 0.67491579, 0.74170526],
            [0.80849474, 0.87528421, 0.94207368, 1.00886316, 1.07565263],
            [1.14244211, 1.20923158, 1.27602105, 1.34281053, 1.4096],
        ]
    )
    expected_velocity = np.asarray(
        [
            [0.5406, 0.55475789, 0.56891579, 0.58307368, 0.59723158],
            [0.61138947, 0.62554737, 0.63970526, 0.65386316, 0.66802105],
            [0.68217895, 0.69633684, 0.71049474, 0.72465263, 0.73881053],
            [0.75296842, 0.76712632, 0.78128421, 0.79544211, 0.8096],
        ]
    )
    np.testing.assert_allclose(next_w, expected_next_w, rtol=0, atol=PRINTED)
    np.testing.assert_allclose(config["velocity"], expected_velocity, rtol=0, atol=PRINTED)


def test_cs231n_rmsprop_check():
    cache = np.linspace(0.6, 0.9, num=N * D).reshape(N, D)
    next_w, config = optim.rmsprop(CS_W, CS_DW, {"learning_rate": 1e-2, "cache": cache})
    expected_next_w = np.asarray(
        [
            [-0.39223849, -0.34037513, -0.28849239, -0.23659121, -0.18467247],
            [-0.132737, -0.08078555, -0.02881884, 0.02316247, 0.07515774],
            [0.12716641, 0.17918792, 0.23122175, 0.28326742, 0.33532447],
            [0.38739248, 0.43947102, 0.49155973, 0.54365823, 0.59576619],
        ]
    )
    expected_cache = np.asarray(
        [
            [0.5976, 0.6126277, 0.6277108, 0.64284931, 0.65804321],
            [0.67329252, 0.68859723, 0.70395734, 0.71937285, 0.73484377],
            [0.75037008, 0.7659518, 0.78158892, 0.79728144, 0.81302936],
            [0.82883269, 0.84469141, 0.86060554, 0.87657507, 0.8926],
        ]
    )
    np.testing.assert_allclose(next_w, expected_next_w, rtol=0, atol=PRINTED)
    np.testing.assert_allclose(config["cache"], expected_cache, rtol=0, atol=PRINTED)


def test_cs231n_adam_check():
    m = np.linspace(0.6, 0.9, num=N * D).reshape(N, D)
    v = np.linspace(0.7, 0.5, num=N * D).reshape(N, D)
    next_w, config = optim.adam(CS_W, CS_DW, {"learning_rate": 1e-2, "m": m, "v": v, "t": 5})
    expected_next_w = np.asarray(
        [
            [-0.40094747, -0.34836187, -0.29577703, -0.24319299, -0.19060977],
            [-0.1380274, -0.08544591, -0.03286534, 0.01971428, 0.0722929],
            [0.1248705, 0.17744702, 0.23002243, 0.28259667, 0.33516969],
            [0.38774145, 0.44031188, 0.49288093, 0.54544852, 0.59801459],
        ]
    )
    expected_v = np.asarray(
        [
            [0.69966, 0.68908382, 0.67851319, 0.66794809, 0.65738853],
            [0.64683452, 0.63628604, 0.6257431, 0.61520571, 0.60467385],
            [0.59414753, 0.58362676, 0.57311152, 0.56260183, 0.55209767],
            [0.54159906, 0.53110598, 0.52061845, 0.51013645, 0.49966],
        ]
    )
    expected_m = np.asarray(
        [
            [0.48, 0.49947368, 0.51894737, 0.53842105, 0.55789474],
            [0.57736842, 0.59684211, 0.61631579, 0.63578947, 0.65526316],
            [0.67473684, 0.69421053, 0.71368421, 0.73315789, 0.75263158],
            [0.77210526, 0.79157895, 0.81105263, 0.83052632, 0.85],
        ]
    )
    np.testing.assert_allclose(next_w, expected_next_w, rtol=0, atol=PRINTED)
    np.testing.assert_allclose(config["v"], expected_v, rtol=0, atol=PRINTED)
    np.testing.assert_allclose(config["m"], expected_m, rtol=0, atol=PRINTED)
    assert config["t"] == 6
