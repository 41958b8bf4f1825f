"""LeNet as the d2l book teaches it: average pooling by hand, valid convolutions, the layer shapes
of d2l's (batch-norm) LeNet on 28x28 images, and its config."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnlab.lab.train import build_model
from bnlab.nn import conv
from bnlab.nn.conv import conv_sizes
from bnlab.nn.nets import ConvNet
from bnlab.spec.experiment import load_experiment

ROOT = Path(__file__).resolve().parent.parent
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


def test_average_pooling_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    for forward, backward in [(conv.avg_pool_forward_naive, conv.avg_pool_backward_naive),
                              (conv.avg_pool_forward_fast, conv.avg_pool_backward_fast)]:  # fmt: skip
        out, cache = forward(x, POOL)
        np.testing.assert_array_equal(out, [[[[2.5, 4.5], [10.5, 12.5]]]])  # (0+1+4+5)/4, ...
        dx = backward(np.array([[[[4.0, 8.0], [-4.0, 0.0]]]]), cache)
        np.testing.assert_array_equal(dx[0, 0], [[1, 1, 2, 2], [1, 1, 2, 2], [-1, -1, 0, 0], [-1, -1, 0, 0]])


def test_valid_convolutions_shrink_as_d2l_says():
    # 28 -> conv 5 -> 24 -> pool -> 12 -> conv 5 -> 8 -> pool -> 4: 16 * 4 * 4 = 256 features
    assert conv_sizes((28, 28), 2, 5, 0) == [(28, 28), (12, 12), (4, 4)]
    assert conv_sizes((28, 28), 2, 5, 2) == [(28, 28), (14, 14), (7, 7)]


def test_d2l_batchnorm_lenet_shapes():
    net = ConvNet([6, 16], kernel_size=5, padding="valid", pool="avg", input_dim=(1, 28, 28),
                  hidden_dims=[120, 84], normalization="batchnorm", activation="sigmoid",
                  weight_scale="xavier", dtype=np.float64, seed=0)  # fmt: skip
    shapes = {name: value.shape for name, value in net.params.items()}
    assert shapes["W1"] == (6, 1, 5, 5) and shapes["W2"] == (16, 6, 5, 5)
    assert shapes["W3"] == (256, 120) and shapes["W4"] == (120, 84) and shapes["W5"] == (84, 10)
    assert [shapes[f"gamma{i}"] for i in range(1, 5)] == [(6,), (16,), (120,), (84,)]
    assert "gamma5" not in shapes
    X = np.random.RandomState(0).rand(4, 1, 28, 28)
    assert net.loss(X).shape == (4, 10)
    # average pooling does not commute with the sigmoid: the net pools after it
    assert not net.pool_first


def test_lenet_config_builds_d2ls_net_from_the_data_sets_shape():
    experiment = load_experiment(ROOT / "configs" / "lenet_bn.yaml")
    assert {run.config["data"]["dataset"] for run in experiment.runs} == {"mnist"}
    run = next(r for r in experiment.runs if r.config["model"]["normalization"] == "batchnorm")
    net = build_model(run.config["model"], (1, 28, 28), np.random.RandomState(0))
    assert net.params["W3"].shape == (256, 120) and net.conv_param["pad"] == 0


def test_lenet_trains_end_to_end_on_the_mnist_subset(tmp_path):
    """Through the CLI: conv nets take 1x28x28 images, the splits are checked against the files."""
    from typer.testing import CliRunner

    from bnlab.cli import app
    from bnlab.results import load_experiment as load_results

    shared = ROOT.parent / "shared" / "datasets"
    small = ["--set", "seeds=[0]", "--set", "solver.num_epochs=1", "--set", "data.num_train=256",
             "--set", "data.num_val=100", "--set", "data.num_test=10"]  # fmt: skip
    args = ["run", str(ROOT / "configs" / "lenet_bn.yaml"), "--out", str(tmp_path), "--data-dir", str(shared)]
    result = CliRunner().invoke(app, [*args, *small])
    assert result.exit_code == 0, result.output
    runs = load_results(tmp_path / "lenet_bn").runs
    assert len(runs) == 2 and set(runs["status"]) == {"done"}
    args[3] = str(tmp_path / "elsewhere")  # a folder of its own: these runs' configs differ from those above
    too_many = CliRunner().invoke(app, [*args, "--set", "data.num_train=3950", "--set", "data.num_val=100"])
    assert too_many.exit_code == 2 and "4000 training and 1000 test images" in " ".join(too_many.stderr.split())
