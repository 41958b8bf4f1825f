"""Noisy batch norm: batch norm, then a per-unit shift and scale drawn afresh at every step from a
generator of its own, with a spread that grows; a run draws its minibatches as plain batch norm's."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.lab.train import train_run
from bnlab.nn.norms import batchnorm_forward, noisy_batchnorm_backward, noisy_batchnorm_forward


def test_each_unit_gets_the_drawn_mean_and_scale():
    rng = np.random.RandomState(3)
    x = 4 * rng.randn(50, 6) + 2
    gamma, beta = np.ones(6), np.zeros(6)
    param = {"mode": "train", "noise_rng": np.random.RandomState(11), "noise_mean": 0.5, "noise_scale": 0.25,
             "noise_growth": 10}  # fmt: skip
    expected = np.random.RandomState(11)
    for t in range(3):
        out, _ = noisy_batchnorm_forward(x, gamma, beta, param)
        spread = 1 + t / 10
        scale = 1 + expected.uniform(0, 0.25 * spread, 6)
        shift = expected.uniform(-0.5 * spread, 0.5 * spread, 6)
        # batch norm's output has batch mean 0 and variance 1 (up to eps): the noise sets them
        np.testing.assert_allclose(out.mean(axis=0), shift, atol=1e-12)
        np.testing.assert_allclose(out.std(axis=0), scale * np.sqrt(x.var(axis=0) / (x.var(axis=0) + 1e-5)))
        assert param["noise_step"] == t + 1


def test_test_mode_is_batch_norm_times_the_expected_scale_and_has_no_backward():
    rng = np.random.RandomState(0)
    x, gamma, beta = rng.randn(20, 4), rng.randn(4), rng.randn(4)
    stats = {"mode": "train"}
    batchnorm_forward(x, gamma, beta, stats)
    noisy = {**stats, "mode": "test", "noise_rng": np.random.RandomState(0), "noise_step": 50,
             "noise_scale": 0.4, "noise_growth": 100}  # fmt: skip
    out, cache = noisy_batchnorm_forward(x, gamma, beta, noisy)
    plain = batchnorm_forward(x, gamma, beta, {**stats, "mode": "test"})[0]
    # scale ~ U(1, 1 + b) with b = 0.4 * (1 + 50 / 100) = 0.6 at step 50: its mean is 1.3
    np.testing.assert_allclose(out, 1.3 * plain, rtol=1e-12)
    assert noisy["noise_step"] == 50  # test mode draws nothing and counts nothing
    assert noisy["noise_rng"].randint(1000) == np.random.RandomState(0).randint(1000)
    with pytest.raises(ValueError, match="test mode"):
        noisy_batchnorm_backward(np.ones_like(x), cache)


def test_a_noisy_run_draws_the_same_minibatches_as_batch_norm(monkeypatch):
    data = {
        "X_train": np.random.RandomState(1).randn(60, 3, 2, 2),
        "y_train": np.random.RandomState(2).randint(10, size=60),
        "X_val": np.zeros((5, 3, 2, 2)),
        "y_val": np.zeros(5, dtype=int),
    }
    drawn: dict[str, list] = {}
    norm = None

    class Spy(np.random.RandomState):
        """Records what the run's generator (the one seeded with an int) draws with choice."""

        def __init__(self, seed=None):
            super().__init__(seed)
            self.is_run = isinstance(seed, int)

        def choice(self, *args, **kwargs):
            value = super().choice(*args, **kwargs)
            if self.is_run:
                drawn.setdefault(norm, []).append(value.copy())
            return value

    monkeypatch.setattr(np.random, "RandomState", Spy)
    outcomes = {}
    for norm in ("batchnorm", "noisy_batchnorm"):
        config = {
            "seed": 4,
            "model": {"hidden_dims": [8, 8], "normalization": norm, "dtype": "float64", "noise_mean": 2.0},
            "solver": {"batch_size": 10, "num_epochs": 2, "num_train_samples": None},
        }
        outcomes[norm] = train_run(norm, config, data)
    assert outcomes["noisy_batchnorm"].status == "done", outcomes["noisy_batchnorm"].error
    assert len(drawn["batchnorm"]) == len(drawn["noisy_batchnorm"]) == 12  # 2 epochs of 6
    for a, b in zip(drawn["batchnorm"], drawn["noisy_batchnorm"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert outcomes["batchnorm"].losses[0] != outcomes["noisy_batchnorm"].losses[0]  # the noise is there
