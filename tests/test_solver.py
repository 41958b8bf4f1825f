"""Solver: the training schedule and its histories on a stand-in model whose trajectory is known in
closed form, and real training of a FullyConnectedNet on synthetic CIFAR-shaped data."""

import math

import numpy as np
import pytest

from bnlab.nn import optim
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
    # Checks after the first iteration and after every epoch; with one iteration per epoch the
    # first iteration is epoch 1's last, and is checked once.
    checks = 3 if per_epoch == 1 else 4
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == len(solver.lr_history) == checks
    assert solver.epoch_history == ([1, 2, 3] if per_epoch == 1 else [0, 1, 2, 3])
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
    # Epoch e trains at 0.5**(e - 1): w climbs 2 * 1, then 2 * 0.5, then 2 * 0.25; the first check
    # comes after one step.
    assert weights == [1.0, 2.0, 3.0, 3.5]
    # As in CS231n, the rate decays at the end of each epoch, before that epoch's check records it.
    assert solver.lr_history == [1.0, 0.5, 0.25, 0.125]


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
    assert solver.val_acc_history == [0.0, 1.0, 0.0, 0.0, 0.0]  # w = 1, 2, ..., 5
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
    assert [r["iteration"] for r in received] == [1, 3, 6]
    assert all(r["num_epochs"] == 2 and r["num_iterations"] == 6 for r in received)
    assert [r["loss"] for r in received] == [1.0, 3.0, 6.0]
    assert [r["train_acc"] for r in received] == solver.train_acc_history
    assert [r["val_acc"] for r in received] == solver.val_acc_history


def test_a_nan_loss_stops_training_and_keeps_the_history():
    model = StepModel(nan_at=4)
    solver = Solver(model, step_data(10), batch_size=10, num_epochs=10, rng=np.random.RandomState(0))
    solver.train()
    assert solver.diverged
    assert solver.loss_history[:3] == [1.0, 2.0, 3.0] and math.isnan(solver.loss_history[3])
    assert len(solver.loss_history) == 4 and len(model.batch_sizes) == 4  # no step after the nan
    assert len(solver.train_acc_history) == 3  # after the 3 finished epochs (iteration 1 ends epoch 1)


def test_a_nan_at_the_first_iteration_leaves_the_model_its_parameters():
    # No accuracy check happened, so there are no best parameters to load: the model keeps its own
    # (updated once, by the step that produced the nan), rather than being emptied.
    model = StepModel(nan_at=1)
    solver = Solver(model, step_data(10), batch_size=10, num_epochs=3, rng=np.random.RandomState(0))
    solver.train()
    assert solver.diverged and solver.train_acc_history == [] and solver.best_params == {}
    assert list(model.params) == ["w"] and model.params["w"].shape == (1,)


@pytest.mark.parametrize("num_train, batch_size, num_epochs", [(50, 20, 3), (60, 7, 2), (10, 10, 3), (10, 3, 1)])
def test_accuracy_is_checked_after_iteration_1_every_epochs_last_and_the_last(num_train, batch_size, num_epochs):
    received = []
    solver = Solver(
        StepModel(),
        step_data(num_train),
        batch_size=batch_size,
        num_epochs=num_epochs,
        rng=np.random.RandomState(0),
        callback=received.append,
    )
    solver.train()
    per_epoch = num_train // batch_size
    last = num_epochs * per_epoch
    expected = sorted({1, last, *(per_epoch * e for e in range(1, num_epochs + 1))})
    assert [r["iteration"] for r in received] == expected
    assert len(solver.val_acc_history) == len(expected)
    assert solver.epoch_history == [i // per_epoch for i in expected]


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
    assert solver.train_acc_history[0] < 0.6  # after one iteration
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


# --- the CS231n Solver, written out plainly: the schedule and the sampling must match it exactly ---


class ReferenceSolver:
    """cs231n/solver.py (2019) reduced to what defines its histories: minibatches and accuracy
    subsets drawn with replacement from numpy's global RNG, one update-rule config per parameter,
    accuracy checked after the first iteration, at every epoch end (after the lr decay) and at the
    last iteration."""

    def __init__(self, model, data, update_rule, optim_config, lr_decay, batch_size, num_epochs,
                 num_train_samples, num_val_samples):  # fmt: skip
        self.model, self.data = model, data
        self.update_rule = optim.UPDATE_RULES[update_rule]
        self.optim_configs = {p: dict(optim_config) for p in model.params}
        self.lr_decay, self.batch_size, self.num_epochs = lr_decay, batch_size, num_epochs
        self.num_train_samples, self.num_val_samples = num_train_samples, num_val_samples
        self.loss_history, self.train_acc_history, self.val_acc_history = [], [], []

    def _step(self):
        num_train = self.data["X_train"].shape[0]
        batch_mask = np.random.choice(num_train, self.batch_size)
        loss, grads = self.model.loss(self.data["X_train"][batch_mask], self.data["y_train"][batch_mask])
        self.loss_history.append(loss)
        for p, w in self.model.params.items():
            next_w, next_config = self.update_rule(w, grads[p], self.optim_configs[p])
            self.model.params[p] = next_w
            self.optim_configs[p] = next_config

    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        N = X.shape[0]
        if num_samples is not None and N > num_samples:
            mask = np.random.choice(N, num_samples)
            N = num_samples
            X = X[mask]
            y = y[mask]
        num_batches = N // batch_size
        if N % batch_size != 0:
            num_batches += 1
        y_pred = []
        for i in range(num_batches):
            start = i * batch_size
            end = (i + 1) * batch_size
            scores = self.model.loss(X[start:end])
            y_pred.append(np.argmax(scores, axis=1))
        y_pred = np.hstack(y_pred)
        return np.mean(y_pred == y)

    def train(self):
        num_train = self.data["X_train"].shape[0]
        iterations_per_epoch = max(num_train // self.batch_size, 1)
        num_iterations = self.num_epochs * iterations_per_epoch
        epoch = 0
        for t in range(num_iterations):
            self._step()
            epoch_end = (t + 1) % iterations_per_epoch == 0
            if epoch_end:
                epoch += 1
                for k in self.optim_configs:
                    self.optim_configs[k]["learning_rate"] *= self.lr_decay
            first_it = t == 0
            last_it = t == num_iterations - 1
            if first_it or last_it or epoch_end:
                train_acc = self.check_accuracy(self.data["X_train"], self.data["y_train"], self.num_train_samples)
                val_acc = self.check_accuracy(self.data["X_val"], self.data["y_val"], self.num_val_samples)
                self.train_acc_history.append(train_acc)
                self.val_acc_history.append(val_acc)


@pytest.mark.parametrize(
    "update_rule, optim_config, normalization",
    [("sgd_momentum", {"learning_rate": 5e-2}, None), ("adam", {"learning_rate": 1e-3}, "batchnorm")],
)
def test_histories_equal_the_cs231n_solvers(update_rule, optim_config, normalization):
    data = random_cifar(num_train=60, num_val=30, seed=7)
    data = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in data.items()}
    options = dict(update_rule=update_rule, optim_config=optim_config, lr_decay=0.9, batch_size=16,
                   num_epochs=3, num_train_samples=40, num_val_samples=25)  # fmt: skip

    def net():
        return FullyConnectedNet([30, 20], weight_scale=5e-2, normalization=normalization, dtype=np.float64, seed=8)

    np.random.seed(231)
    ours = Solver(net(), data, **options)
    ours.train()
    np.random.seed(231)
    reference = ReferenceSolver(net(), data, **options)
    reference.train()
    assert len(reference.val_acc_history) == 4  # after iteration 1 and the 3 epochs' last
    assert ours.loss_history == reference.loss_history
    assert ours.train_acc_history == reference.train_acc_history
    assert ours.val_acc_history == reference.val_acc_history


def test_linear_warmup_scales_the_first_updates_learning_rate_by_t_over_T():
    """solver.warmup_iters = T: SGD's update t is w - (lr * t / T) g while t < T, then w - lr g."""
    from bnlab import FullyConnectedNet

    rng = np.random.RandomState(0)
    X, y = rng.randn(60, 5), rng.randint(3, size=60)
    net = FullyConnectedNet([6], input_dim=5, num_classes=3, dtype=np.float64, seed=1)
    lr, warmup = 0.1, 4
    solver = Solver(net, {"X_train": X, "y_train": y, "X_val": X, "y_val": y}, update_rule="sgd",
                    optim_config={"learning_rate": lr}, batch_size=10, rng=np.random.RandomState(2),
                    warmup_iters=warmup)  # fmt: skip
    for t in range(1, 7):
        state = solver.rng.get_state()
        batch = solver.rng.choice(len(X), solver.batch_size)
        solver.rng.set_state(state)  # the step draws the same batch
        before = {name: w.copy() for name, w in net.params.items()}
        _, grads = net.loss(X[batch], y[batch])
        solver.loss_history.append(solver._step())  # as train() does: the step counts the updates so far
        rate = lr * (t / warmup) if t < warmup else lr
        for name, w in before.items():
            np.testing.assert_array_equal(net.params[name], w - rate * grads[name])
    assert solver.optim_state["learning_rate"] == lr


@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_the_first_layers_weight_gradient_goes_straight_into_the_flat_buffer(reg):
    """Net.loss with grads_into writes dW1 into the array given, with the bytes of a new one; the
    Solver's step hands its flat gradient buffer's view and trains as a custom model's loss would."""
    rng = np.random.RandomState(0)
    X, y = rng.randn(20, 3, 4, 4).astype(np.float32), rng.randint(10, size=20)
    net = FullyConnectedNet([7, 6], input_dim=(3, 4, 4), normalization="batchnorm", reg=reg, seed=0)
    buffer = np.full(net.params["W1"].shape, np.nan, np.float32)
    loss, grads = net.loss(X, y, grads_into={"W1": buffer})
    loss_new, grads_new = net.loss(X, y)
    assert grads["W1"] is buffer and loss == loss_new
    assert all(grads[name].tobytes() == grads_new[name].tobytes() for name in grads_new)

    class Plain:  # a notebook-style model: loss(X, y) only, the same net inside
        def __init__(self) -> None:
            self.inner = FullyConnectedNet([7, 6], input_dim=(3, 4, 4), normalization="batchnorm", reg=reg, seed=0)
            self.params = self.inner.params

        def loss(self, X, y=None):
            return self.inner.loss(X, y)

    histories = []
    for model in (FullyConnectedNet([7, 6], input_dim=(3, 4, 4), normalization="batchnorm", reg=reg, seed=0), Plain()):
        data = {"X_train": X, "y_train": y, "X_val": X, "y_val": y}
        solver = Solver(model, data, update_rule="adam", batch_size=5, num_epochs=2, rng=np.random.RandomState(1))
        solver.train()
        histories.append((np.array(solver.loss_history).tobytes(), solver._flat.tobytes()))
    assert histories[0] == histories[1]


def test_the_flat_buffers_and_adams_moments_start_on_64_byte_boundaries():
    """numpy starts arrays on 16-byte boundaries; the compiled Adam over buffers that start between
    two 32-byte ones splits half its vector loads and stores across cache lines (2.6x slower)."""
    rng = np.random.RandomState(0)
    data = {"X_train": rng.randn(40, 12), "y_train": rng.randint(3, size=40), "X_val": rng.randn(8, 12)}
    data["y_val"] = rng.randint(3, size=8)
    for seed in range(4):  # different sizes, so different places on the heap
        net = FullyConnectedNet([5 + seed] * 2, input_dim=12, num_classes=3, normalization="batchnorm", seed=seed)
        solver = Solver(net, data, update_rule="adam", batch_size=10, num_epochs=1, rng=np.random.RandomState(seed))
        assert all(np.shares_memory(net.params[name], solver._flat) for name in net.params)
        solver.train()
        buffers = [solver._flat, solver._flat_grads, solver.optim_state["m"], solver.optim_state["v"]]
        assert [b.ctypes.data % 64 for b in buffers] == [0] * 4
