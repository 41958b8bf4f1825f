"""Minibatch training of a classification model, recording its histories.

The model needs `params` (name -> array) and `loss(X, y=None)`, returning scores without labels
and (loss, grads) with them, as FullyConnectedNet does.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np

from bnlab.nn import fused, optim
from bnlab.nn.nets import Net
from bnlab.nn.statistics import recompute_bn_statistics


class Solver:
    """Trains `model` on `data` with an update rule from bnlab.nn.optim.

    data: a dict with 'X_train', 'y_train', 'X_val', 'y_val'.
    update_rule: 'sgd', 'sgd_momentum', 'rmsprop' or 'adam'; optim_config: its hyperparameters;
        lr_decay multiplies the learning rate after every epoch. All parameters are updated as one
        flat array (see _flatten_params); `optim_state` holds the rule's state.
    batch_size, num_epochs: each iteration trains on batch_size examples drawn with replacement;
        an epoch is max(N // (batch_size * accumulate), 1) iterations.
    accumulate: K; each update averages the losses and gradients of K micro-batches of batch_size,
        drawn as the same K * batch_size examples one batch that large would be (gradient
        accumulation: without layers that use batch statistics, the large batch's update to rounding).
    train_mode_accuracy: at every accuracy check, also measure both accuracies in train mode on the
        same samples (normalizations use each chunk's batch statistics; running statistics and noise
        untouched): train_acc_train_mode_history, val_acc_train_mode_history. The gap between the
        modes is what model.eval() versus model.train() shows in PyTorch.
    precise_bn: every accuracy check in eval mode uses precise statistics (Wu & Johnson 2021): each
        batch norm's running mean and variance recomputed over all of X_train first
        (bnlab.nn.statistics.recompute_bn_statistics); training then goes on with its own running
        averages, so nothing else changes. The best model keeps the precise ones.
    adabn: the validation checks in eval mode use statistics recomputed over all of X_val, its
        images only (AdaBN, Li et al. 2016: adapt batch norm to a shifted test set); the training
        checks keep theirs. The best model keeps the validation set's.
    warmup_iters: T; update t (1-based) uses t / T of the learning rate while t < T (linear
        warm-up, as post-norm Transformers need), the full rate from update T on; 0: none.
    lr_growth: gamma; update t (1-based) scales the gradient of the model's hidden_weights() by
        gamma^(t - 1/2), so with SGD their learning rate grows exponentially. Li & Arora 2020: when
        they are scale-invariant, SGD at rate eta with weight decay lambda on them is, up to their
        scale, SGD without it and their rate eta (1 - eta lambda)^(-2t+1): gamma = (1 - eta lambda)^-2.
        SGD only; 1: off.
    num_train_samples, num_val_samples: at most this many examples (None: all) are used for the
        accuracy checks, which run as in the CS231n Solver: after the first iteration, at the end
        of every epoch (after that epoch's learning-rate decay) and after the last iteration, once
        when these coincide.
    rng: a np.random.RandomState for the minibatches; numpy's global RNG when None, as in the
        notebooks, so a seeded notebook cell follows the same trajectory.
    callback: called with a dict (epoch, num_epochs, iteration, num_iterations, loss, train_acc,
        val_acc) after every accuracy check; the Solver itself never prints.
    recorder: a bnlab.nn.probes.Recorder, or None; when due, it looks at the net on the iteration's
        minibatch before the update (and leaves training exactly as it would be without it).

    After train(): loss_history (one per iteration), train_acc_history, val_acc_history,
    lr_history and epoch_history (the epochs completed at each check: 0 for the check after the
    first iteration, unless that iteration ended epoch 1), best_val_acc, best_params (loaded into
    the model at the end, with
    the batch-norm running statistics of that moment, so the model scores best_val_acc), and
    diverged (True when a loss became nan or inf and training stopped there).
    """

    def __init__(
        self,
        model,
        data: dict[str, np.ndarray],
        update_rule: str = "sgd",
        optim_config: dict | None = None,
        lr_decay: float = 1.0,
        batch_size: int = 100,
        num_epochs: int = 10,
        accumulate: int = 1,
        train_mode_accuracy: bool = False,
        precise_bn: bool = False,
        adabn: bool = False,
        warmup_iters: int = 0,
        lr_growth: float = 1.0,
        num_train_samples: int | None = 1000,
        num_val_samples: int | None = None,
        check_batch_size: int = 1000,
        rng: np.random.RandomState | None = None,
        callback: Callable[[dict], None] | None = None,
        recorder=None,
    ) -> None:
        if update_rule not in optim.UPDATE_RULES:
            raise ValueError(f"unknown update rule {update_rule!r}: expected one of {list(optim.UPDATE_RULES)}")
        self.model = model
        self.X_train, self.y_train = data["X_train"], data["y_train"]
        self.X_val, self.y_val = data["X_val"], data["y_val"]
        self.update_rule = fused.UPDATE_RULES[update_rule]
        self.optim_config = {**optim.DEFAULTS[update_rule], **(optim_config or {})}
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.num_epochs = num_epochs
        self.accumulate = accumulate
        self.train_mode_accuracy = train_mode_accuracy
        self.precise_bn = precise_bn
        self.adabn = adabn
        self.warmup_iters = warmup_iters
        if lr_growth != 1 and update_rule != "sgd":
            raise ValueError(f"lr_growth grows the rate of plain SGD; update_rule is {update_rule!r}: use sgd")
        self.lr_growth = lr_growth
        self.num_train_samples = num_train_samples
        self.num_val_samples = num_val_samples
        self.check_batch_size = check_batch_size
        self.rng = rng if rng is not None else np.random.mtrand._rand
        self.callback = callback
        self.recorder = recorder
        self._reset()

    def _reset(self) -> None:
        self.epoch = 0
        self.best_val_acc = 0.0
        self.best_params: dict[str, np.ndarray] = {}
        self._best_bn_params: list[dict] = []
        self.loss_history: list[float] = []
        self.train_acc_history: list[float] = []
        self.val_acc_history: list[float] = []
        self.train_acc_train_mode_history: list[float] = []
        self.val_acc_train_mode_history: list[float] = []
        self.lr_history: list[float] = []
        self.epoch_history: list[int] = []
        self.diverged = False
        self._flatten_params()
        # The update rule's hyperparameters and state (moments, velocity) for the flat buffer.
        self.optim_state = dict(self.optim_config)

    def _flatten_params(self) -> None:
        """Move every parameter into one contiguous buffer and leave views of it in model.params.

        The update rules are elementwise, so one call on the buffer computes exactly what one call
        per parameter would, with a fraction of the interpreter overhead (a net of 8 layers has 30
        parameters).
        """
        params = self.model.params
        dtypes = {w.dtype for w in params.values()}
        if len(dtypes) != 1:
            raise ValueError(f"all parameters must share one dtype to be trained together, got {dtypes}")
        self._names = list(params)
        size, dtype = sum(w.size for w in params.values()), dtypes.pop()
        # aligned for the compiled update rules (fused.aligned_zeros)
        self._flat = np.concatenate(
            [params[name].ravel() for name in self._names], out=fused.aligned_zeros(size, dtype)
        )
        # the gradients' flat buffer, and each parameter's view of it
        self._flat_grads = fused.aligned_zeros(size, dtype)
        self._grad_views: dict[str, np.ndarray] = {}
        offset = 0
        for name in self._names:
            shape, size = params[name].shape, params[name].size
            params[name] = self._flat[offset : offset + size].reshape(shape)
            self._grad_views[name] = self._flat_grads[offset : offset + size].reshape(shape)
            offset += size
        # A bnlab net writes its first layer's weight gradient (most of the parameters of the
        # notebooks' nets) straight into the buffer; any other model's loss(X, y) is called as it is.
        ours = isinstance(self.model, Net) and "W1" in self._grad_views
        self._into = {"grads_into": {"W1": self._grad_views["W1"]}} if ours else {}
        if self.lr_growth != 1:  # the flat entries whose rate grows
            growing = set(self.model.hidden_weights())
            self._growing = np.concatenate([np.full(params[n].size, n in growing) for n in self._names])

    def _step(self) -> float:
        """One minibatch (in `accumulate` micro-batches): loss, gradients, and one update of all parameters."""
        batch = self.rng.choice(self.X_train.shape[0], self.batch_size * self.accumulate)
        X, y = self.X_train[batch], self.y_train[batch]
        iteration = len(self.loss_history) + 1
        if self.recorder is not None and self.recorder.due(iteration):
            self.recorder.record(self, iteration, X, y)
        if self.accumulate == 1:
            loss, grads = self.model.loss(X, y, **self._into)
            flat_grads = self._gathered(grads)
        else:
            loss, flat_grads = 0.0, 0.0
            for start in range(0, len(batch), self.batch_size):
                part = slice(start, start + self.batch_size)
                part_loss, grads = self.model.loss(X[part], y[part], **self._into)
                loss += part_loss / self.accumulate
                flat_grads = flat_grads + self._gathered(grads)
            flat_grads /= self.accumulate
        flat_grads = self.grown(flat_grads, iteration)
        rate = self.optim_state["learning_rate"]
        self.optim_state["learning_rate"] = self.rate_at(iteration)
        next_flat, self.optim_state = self.update_rule(self._flat, flat_grads, self.optim_state)
        self.optim_state["learning_rate"] = rate
        if next_flat is not self._flat:  # fused.adam updates it in place
            self._flat[...] = next_flat  # in place: model.params are views of this buffer
        return loss

    def _gathered(self, grads: dict[str, np.ndarray]) -> np.ndarray:
        """The flat gradient buffer holding grads (those not written there already copied in)."""
        for name, view in self._grad_views.items():
            if grads[name] is not view:
                view[...] = grads[name]
        return self._flat_grads

    def rate_at(self, iteration: int) -> float:
        """The learning rate update `iteration` (1-based) applies: the current rate, or t / T of it
        during a linear warm-up of T updates."""
        rate = self.optim_state["learning_rate"]
        if self.warmup_iters and iteration < self.warmup_iters:
            return rate * (iteration / self.warmup_iters)
        return rate

    def grown(self, flat_grads: np.ndarray, iteration: int) -> np.ndarray:
        """The flat gradients with the growing entries scaled by lr_growth^(iteration - 1/2) (in place)."""
        if self.lr_growth != 1:
            flat_grads[self._growing] *= self.lr_growth ** (iteration - 0.5)
        return flat_grads

    def rate_of(self, name: str, iteration: int) -> float:
        """The learning rate parameter `name` sees at update `iteration`: rate_at's, grown if it grows."""
        if self.lr_growth != 1 and name in self.model.hidden_weights():
            return self.rate_at(iteration) * self.lr_growth ** (iteration - 0.5)
        return self.rate_at(iteration)

    def check_accuracy(
        self, X: np.ndarray, y: np.ndarray, num_samples: int | None = None, batch_statistics: bool = False
    ) -> float:
        """Fraction of X classified as y in test mode (with batch_statistics: in train mode, each
        chunk of check_batch_size samples normalized with its own statistics), on a random subset
        of num_samples if given."""
        return self._accuracy(*self._subset(X, y, num_samples), batch_statistics)

    def _subset(self, X: np.ndarray, y: np.ndarray, num_samples: int | None) -> tuple[np.ndarray, np.ndarray]:
        if num_samples is not None and X.shape[0] > num_samples:
            subset = self.rng.choice(X.shape[0], num_samples)
            return X[subset], y[subset]
        return X, y

    def _accuracy(self, X: np.ndarray, y: np.ndarray, batch_statistics: bool = False) -> float:
        scores_of = self.model.batch_statistics_scores if batch_statistics else self.model.loss
        correct = 0
        for start in range(0, X.shape[0], self.check_batch_size):
            scores = scores_of(X[start : start + self.check_batch_size])
            correct += int((scores.argmax(axis=1) == y[start : start + self.check_batch_size]).sum())
        return correct / X.shape[0]

    def _record_accuracy(self, iteration: int, num_iterations: int) -> None:
        """One accuracy check (eval mode, with precise or AdaBN statistics when asked, and train
        mode when asked), recorded in the histories; the best model so far kept; the callback told."""
        train_X, train_y = self._subset(self.X_train, self.y_train, self.num_train_samples)
        val_X, val_y = self._subset(self.X_val, self.y_val, self.num_val_samples)
        running = copy.deepcopy(self.model.bn_params) if self.precise_bn or self.adabn else None
        if self.precise_bn:
            recompute_bn_statistics(self.model, self.X_train)
        train_acc = self._accuracy(train_X, train_y)
        if self.adabn:
            recompute_bn_statistics(self.model, self.X_val)
        val_acc = self._accuracy(val_X, val_y)
        if self.train_mode_accuracy:  # the same samples, in train mode
            self.train_acc_train_mode_history.append(self._accuracy(train_X, train_y, batch_statistics=True))
            self.val_acc_train_mode_history.append(self._accuracy(val_X, val_y, batch_statistics=True))
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        self.lr_history.append(self.optim_state["learning_rate"])
        self.epoch_history.append(self.epoch)
        if val_acc > self.best_val_acc or not self.best_params:
            self.best_val_acc = val_acc
            self.best_params = {name: w.copy() for name, w in self.model.params.items()}
            # test mode reads the running statistics: they belong to the best model too
            self._best_bn_params = copy.deepcopy(getattr(self.model, "bn_params", []))
        if running is not None:  # training goes on with its own running averages
            self.model.bn_params = running
        if self.callback is not None:
            self.callback(
                {
                    "epoch": self.epoch,
                    "num_epochs": self.num_epochs,
                    "iteration": iteration,
                    "num_iterations": num_iterations,
                    "loss": self.loss_history[-1] if self.loss_history else None,
                    "train_acc": train_acc,
                    "val_acc": val_acc,
                }
            )

    @property
    def iterations_per_epoch(self) -> int:
        """Updates per epoch: max(N // (batch_size * accumulate), 1)."""
        return max(self.X_train.shape[0] // (self.batch_size * self.accumulate), 1)

    def train(self) -> None:
        """Run the whole schedule (or until the loss diverges), then load the best parameters."""
        iterations_per_epoch = self.iterations_per_epoch
        num_iterations = self.num_epochs * iterations_per_epoch
        for t in range(num_iterations):
            loss = self._step()
            self.loss_history.append(loss)
            if not math.isfinite(loss):
                self.diverged = True
                break
            epoch_end = (t + 1) % iterations_per_epoch == 0
            if epoch_end:
                self.epoch += 1
                self.optim_state["learning_rate"] *= self.lr_decay
            if t == 0 or epoch_end or t == num_iterations - 1:
                self._record_accuracy(t + 1, num_iterations)
        if not self.best_params:  # diverged at the first iteration, before any accuracy check
            return
        self.model.params = self.best_params
        if self._best_bn_params:
            self.model.bn_params = self._best_bn_params
