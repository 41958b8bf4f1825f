"""Solver: the training schedule and its histories on a stand-in model whose trajectory is known in
closed form, and real training of a FullyConnectedNet on synthetic CIFAR-shaped data."""

import math

import numpy as np
import pytest

from bnlab.nn.nets import FullyConnectedNet
from bnlab.nn.solver import Solver


class StepModel:
    """One parameter w with gradient -1, so plain SGD moves it up by the learning rate each
    iteration. It predicts class round(w) for every input; its loss is the number of training
    calls so far, or nan on call `nan_at`."""

    def __init__(self, num_classes: int = 6, nan_at: int | None = None) -> None:
        self.params = {"w": np.zeros(1)}
        self.num_classes = num_classes
        self.nan_at = nan_at
        self.batch_sizes: list[int] = []

    def loss(self, X, y=None):
        scores = -((np.arange(self.num_classes) - self.params["w"][0]) ** 2) * np.ones((len(X), 1))
        if y is None:
            return scores
        self.batch_sizes.append(len(X))
        calls = len(self.batch_sizes)
        return (math.nan if calls == self.nan_at else float(calls)), {"w": -np.ones(1)}


def step_data(num_train: int, val_label: int = 2) -> dict:
    return {
        "X_train": np.zeros((num_train, 3)),
        "y_train": np.zeros(num_train, dtype=int),
        "X_val": np.zeros((4, 3)),
        "y_val": np.full(4, val_label),
    }


@pytest.mark.parametrize("num_train, batch_size, per_epoch", [(50, 20, 2), (50, 7, 7), (50, 50, 1), (50, 100, 1)])
def test_schedule_lengths(num_train, batch_size, per_epoch):
    model = StepModel()
    solver = Solver(model, step_data(num_train), batch_size=batch_size, num_epochs=3, rng=np.random.RandomState(0))
    solver.train()
    assert len(solver.loss_history) == 3 * per_epoch
    assert model.batch_sizes == [batch_size] * (3 * per_epoch)  # drawn with replacement, even > N
    # One accuracy check before training and one after every epoch.
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == len(solver.lr_history) == 4
    assert solver.epoch == 3 and not solver.diverged


def test_learning_rate_decays_after_every_epoch():
    weights = []
    solver = Solver(
        StepModel(),
        step_data(20),
        update_rule="sgd",
        optim_config={"learning_rate": 1.0},
        lr_decay=0.5,
        batch_size=10,  # 2 iterations per epoch
        num_epochs=3,
        rng=np.random.RandomState(0),
        callback=lambda _: weights.append(float(solver.model.params["w"][0])),
    )
    solver.train()
    # Epoch e trains at 0.5**(e - 1): w climbs 2 * 1, then 2 * 0.5, then 2 * 0.25.
    assert weights == [0.0, 2.0, 3.0, 3.5]
    # Each check records the rate the epoch before it trained with (the first: the initial rate).
    assert solver.lr_history == [1.0, 1.0, 0.5, 0.25]


def test_best_params_by_validation_accuracy_are_loaded():
    solver = Solver(
        StepModel(),
        step_data(10, val_label=2),
        optim_config={"learning_rate": 1.0},
        batch_size=10,  # 1 iteration per epoch: w = epoch
        num_epochs=5,
        rng=np.random.RandomState(0),
    )
    solver.train()
    assert solver.val_acc_history == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert solver.best_val_acc == 1.0
    assert solver.model.params["w"][0] == 2.0  # trained on to w = 5, then rolled back to epoch 2


def test_callback_receives_a_dict_after_every_check():
    received = []
    solver = Solver(
        StepModel(),
        step_data(30),
        batch_size=10,
        num_epochs=2,
        rng=np.random.RandomState(0),
        callback=received.append,
    )
    solver.train()
    assert [r["epoch"] for r in received] == [0, 1, 2]
    assert [r["iteration"] for r in received] == [0, 3, 6]
    assert all(r["num_epochs"] == 2 and r["num_iterations"] == 6 for r in received)
    assert [r["loss"] for r in received] == [None, 3.0, 6.0]
    assert [r["train_acc"] for r in received] == solver.train_acc_history
    assert [r["val_acc"] for r in received] == solver.val_acc_history


def test_a_nan_loss_stops_training_and_keeps_the_history():
    model = StepModel(nan_at=4)
    solver = Solver(model, step_data(10), batch_size=10, num_epochs=10, rng=np.random.RandomState(0))
    solver.train()
    assert solver.diverged
    assert solver.loss_history[:3] == [1.0, 2.0, 3.0] and math.isnan(solver.loss_history[3])
    assert len(solver.loss_history) == 4 and len(model.batch_sizes) == 4  # no step after the nan
    assert len(solver.train_acc_history) == 4  # before training and after the 3 finished epochs


def test_unknown_update_rule_is_rejected():
    with pytest.raises(ValueError, match="update rule"):
        Solver(StepModel(), step_data(10), update_rule="lbfgs")


# --- a real net on synthetic CIFAR-shaped data ---------------------------------------------------


def random_cifar(num_train=50, num_val=20, seed=0):
    """Random images and random labels: nothing to learn but memorization."""
    rng = np.random.RandomState(seed)
    return {
        "X_train": rng.randn(num_train, 3, 32, 32).astype(np.float32),
        "y_train": rng.randint(10, size=num_train),
        "X_val": rng.randn(num_val, 3, 32, 32).astype(np.float32),
        "y_val": rng.randint(10, size=num_val),
    }


def train_net(seed=1, learning_rate=1e-3, update_rule="adam", num_epochs=10):
    solver = Solver(
        FullyConnectedNet([100], weight_scale=1e-2, seed=seed),
        random_cifar(),
        update_rule=update_rule,
        optim_config={"learning_rate": learning_rate},
        batch_size=25,
        num_epochs=num_epochs,
        rng=np.random.RandomState(seed),
    )
    solver.train()
    return solver


def test_two_layer_net_memorizes_50_random_examples():
    solver = train_net(seed=2, num_epochs=10)  # 100% from epoch 7 on
    assert solver.train_acc_history[0] < 0.3
    assert solver.train_acc_history[-1] == 1.0
    assert not solver.diverged
    # The loaded parameters are the best on validation, and score as recorded.
    assert solver.best_val_acc == max(solver.val_acc_history)
    assert solver.check_accuracy(solver.X_val, solver.y_val) == solver.best_val_acc


def test_same_seed_same_histories():
    a, b, c = train_net(seed=3, num_epochs=3), train_net(seed=3, num_epochs=3), train_net(seed=4, num_epochs=3)
    assert a.loss_history == b.loss_history
    assert a.train_acc_history == b.train_acc_history and a.val_acc_history == b.val_acc_history
    assert all(np.array_equal(a.model.params[k], b.model.params[k]) for k in a.model.params)
    assert a.loss_history != c.loss_history


def test_global_rng_drives_minibatches_when_no_rng_is_given():
    def run():
        np.random.seed(231)
        model = FullyConnectedNet([20], weight_scale=1e-2)
        solver = Solver(model, random_cifar(), batch_size=10, num_epochs=1)
        solver.train()
        return solver.loss_history

    assert run() == run()


def test_a_diverging_learning_rate_sets_diverged_and_stops_early():
    with np.errstate(all="ignore"):  # the overflow on the way to nan is the point
        solver = train_net(update_rule="sgd", learning_rate=1e4, num_epochs=10)
    planned = 10 * (50 // 25)
    assert solver.diverged
    assert 1 < len(solver.loss_history) < planned
    assert not math.isfinite(solver.loss_history[-1])
    assert all(math.isfinite(loss) for loss in solver.loss_history[:-1])
    assert all(np.all(np.isfinite(p)) for p in solver.model.params.values())  # best params loaded


def test_a_batchnorm_net_reloaded_at_its_best_epoch_scores_best_val_acc():
    # Test mode reads the running statistics, so they must be rolled back with the parameters.
    data = random_cifar(num_train=100, num_val=50, seed=5)
    solver = Solver(
        FullyConnectedNet([50, 50], weight_scale=5e-2, normalization="batchnorm", seed=6),
        data,
        update_rule="adam",
        optim_config={"learning_rate": 1e-2},
        batch_size=20,
        num_epochs=8,
        rng=np.random.RandomState(6),
    )
    solver.train()
    best_epoch = solver.val_acc_history.index(solver.best_val_acc)
    assert best_epoch < len(solver.val_acc_history) - 1  # the roll-back is exercised
    assert solver.check_accuracy(data["X_val"], data["y_val"]) == solver.best_val_acc
