"""The schema of an experiment spec: one pydantic model per section (data, model, solver, record,
plots) with every option, its default and its checks, the options read from the registries (data
sets, architectures, normalizations, activations, optimizers, recorded statistics, figure kinds)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator

from bnlab.data.cifar10 import PREPROCESS
from bnlab.data.datasets import DATASETS, DEFAULT_DATASET
from bnlab.lab.formatting import did_you_mean
from bnlab.nn.architectures import ARCHITECTURES
from bnlab.nn.layers import ACTIVATIONS
from bnlab.nn.normalizations import NORMALIZATIONS
from bnlab.nn.optim import DEFAULTS as OPTIM_DEFAULTS
from bnlab.nn.probes import DEFAULT_EVERY, DEFAULT_LANDSCAPE_STEPS, DEFAULT_STATISTICS, STATISTICS
from bnlab.nn.residual import RESIDUAL_ARCHITECTURES
from bnlab.spec.figure_kinds import FIGURE_KINDS


class _Section(BaseModel):
    # strict: "50" is not a batch size and true is not 1; YAML already gives numbers their types.
    model_config = ConfigDict(extra="forbid", strict=True)


PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # what numpy.random.RandomState accepts
MAX_CONV_BLOCKS = 5  # each block halves CIFAR-10's 32x32 images
MAX_RUNS = 10_000  # a guard against typos such as {linspace: [0, 1, 1000000]}, far above any real sweep


def _dataset(value: Any) -> Any:
    """A name of the datasets registry, with a did-you-mean for a typo."""
    if isinstance(value, str) and value in DATASETS:
        return value
    hint = did_you_mean(str(value), DATASETS)
    raise ValueError(f"unknown dataset {value!r}{hint}; choose one of {', '.join(DATASETS)}")


class DataSpec(_Section):
    dataset: Annotated[str, BeforeValidator(_dataset)] = DEFAULT_DATASET
    # None: the data set's own default preprocessing (its row's default_preprocess)
    preprocess: Literal[tuple(PREPROCESS)] | None = None
    num_train: PositiveInt = 1000
    num_val: PositiveInt = 1000
    num_test: Annotated[int, Field(ge=0)] = 1000
    # each split keeps the images of these classes only (labels unchanged: a pre-training subset, say)
    classes: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = None
    # validation and test images (not training) become shift_scale * x + shift_offset, in the
    # preprocessed units the net sees: a shifted test set (bnlab.data.views)
    shift_scale: Annotated[float, Field(allow_inf_nan=False)] = 1.0
    shift_offset: Annotated[float, Field(allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _classes_exist(self) -> DataSpec:
        names = DATASETS[self.dataset].classes
        if self.classes is not None:
            if len(set(self.classes)) != len(self.classes) or max(self.classes) >= len(names):
                raise ValueError(
                    f"classes: {self.classes} must name distinct classes of {self.dataset}, "
                    f"numbered 0 to {len(names) - 1} ({', '.join(names)})"
                )
        return self


def _weight_scale(value: Any) -> Any:
    """One message for the three forms, rather than pydantic's one per union member."""
    if value in ("he", "xavier") and isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    raise ValueError(
        f"give a positive finite number (the standard deviation of every layer's initial weights), "
        f"'he' or 'xavier' (got {value!r})"
    )


class _ModelOptions(_Section):
    """The model section but for the normalizations' options (ModelSpec adds them from the rows)."""

    # hidden_dims: the fully connected hidden widths; required for fc (at least one), optional for
    # conv, where [] or null means the conv blocks feed the output layer directly.
    hidden_dims: list[PositiveInt] | None = None
    # the allowed names are the keys of the nn tables; which architecture takes which: ARCHITECTURES
    normalization: Literal[tuple(NORMALIZATIONS)] | None = None
    activation: Literal[tuple(ACTIVATIONS)] = "relu"
    negative_slope: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.01
    norm_position: Literal["before", "after"] = "before"
    # hidden weights standardized per output unit (Qiao et al. 2019), or scaled by the activation's
    # gain over sqrt(fan_in) for nets without normalization (Brock et al. 2021)
    weight_standardization: Literal["standard", "scaled"] | None = None
    weight_scale: Annotated[float | Literal["he", "xavier"], BeforeValidator(_weight_scale)] = 1e-2
    reg: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    reg_output: bool = True  # false: the L2 term leaves the output layer's weights out
    dropout_keep_ratio: Annotated[float, Field(gt=0, le=1)] = 1.0
    dropout_position: Literal["every", "last"] = "every"  # after every hidden layer, or the last one's only
    dtype: Literal["float32", "float64"] = "float32"
    architecture: Literal[tuple(ARCHITECTURES)] = "fc"
    channels: Annotated[list[PositiveInt], Field(min_length=1, max_length=MAX_CONV_BLOCKS)] | None = None
    kernel_size: PositiveInt = 3
    padding: Literal["same", "valid"] = "same"  # conv only: 'valid' pads nothing (LeNet)
    pool: Literal["max", "avg"] = "max"  # conv only: 2x2 max or average pooling (LeNet's)
    # residual nets (bnlab.nn.residual): each entry of hidden_dims (fc) or channels (conv) is a block
    residual: Literal["pre", "post", "postnorm"] | None = None
    skipinit: bool = False  # a learnable scalar on each block's branch, initialized to 0
    init_from: str | None = None  # a finished run's folder: start from its weights.npz (fine-tuning)
    new_head: bool = False  # init_from's weights but the output layer's: a fresh classifier for new classes
    # before the first update, every running mean and variance set to the training set's (AdaBN on it)
    recompute_statistics: bool = False

    @model_validator(mode="after")
    def _fits_architecture(self) -> _ModelOptions:
        """The rules of bnlab.nn.architectures.ARCHITECTURES (with `residual`, of
        bnlab.nn.residual.RESIDUAL_ARCHITECTURES): the widths option is required, the options of
        other nets stay at their defaults, the normalization is one its layers have."""
        if self.skipinit and self.residual is None:
            raise ValueError(
                "skipinit scales residual branches: set residual: pre, post or postnorm, or remove skipinit"
            )
        arch = (ARCHITECTURES if self.residual is None else RESIDUAL_ARCHITECTURES)[self.architecture]
        widths, what = arch.widths
        if not getattr(self, widths):
            raise ValueError(f"{widths} is required for architecture {self.architecture}{what}")
        every_nets = ("architecture", "init_from", "new_head", "recompute_statistics")  # every net's options
        for name, spec_field in type(self).model_fields.items():
            if name in arch.options or name in every_nets:
                continue
            default, value = spec_field.get_default(call_default_factory=True), getattr(self, name)
            if value == default or (default is None and value == []):  # hidden_dims: [] says "none" too
                continue
            if name in arch.lacks:
                raise ValueError(f"{name}: {arch.lacks[name]}")
            if self.residual is not None and name in ARCHITECTURES[self.architecture].options:
                raise ValueError(f"{name} is not available in residual nets; remove it, or remove residual")
            others = [a for a, other in ARCHITECTURES.items() if name in other.options]
            raise ValueError(
                f"{name} is only for architecture {' or '.join(others)}; remove it or set architecture: {others[0]}"
            )
        if self.normalization not in arch.normalizations and self.residual is not None:
            raise ValueError(
                f"normalization {self.normalization!r} is not available in residual nets; residual "
                f"{self.architecture} nets take {', '.join(map(str, arch.normalizations))}"
            )
        if self.normalization not in arch.normalizations:
            others = [a for a, other in ARCHITECTURES.items() if self.normalization in other.normalizations]
            raise ValueError(
                f"normalization {self.normalization!r} is for architecture {' or '.join(others)} only; "
                f"{self.architecture} nets take {', '.join(map(str, arch.normalizations))}"
            )
        row = NORMALIZATIONS.get(self.normalization)
        if self.recompute_statistics and (row is None or not row.running_statistics):
            keeping = [name for name, r in NORMALIZATIONS.items() if r.running_statistics]
            raise ValueError(
                f"recompute_statistics sets running statistics, which normalization {self.normalization!r} does not "
                f"keep; use one that does ({', '.join(keeping)}) or remove it"
            )
        if self.architecture == "conv" and self.padding == "same" and self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd with padding same ((K-1)/2 keeps the size), got {self.kernel_size}"
            )
        widths = [*(self.channels or []), *(self.hidden_dims or [])]
        if self.normalization is not None:
            kind = "hidden width" if self.architecture == "fc" else "width (channels and hidden_dims)"
            NORMALIZATIONS[self.normalization].check_widths(self.model_dump(), widths, f"every {kind}")
        return self


def _option_field(option) -> tuple:
    """A normalization's option as a pydantic field: its type, constraints, default and what it does."""
    finite = {"allow_inf_nan": False} if option.kind is float else {}
    return Annotated[option.kind, Field(**option.constraints, **finite, description=option.doc)], option.default


# Every normalization's options as model keys, each with its row's default and limits.
ModelSpec = create_model(
    "ModelSpec",
    __base__=_ModelOptions,
    **{name: _option_field(option) for row in NORMALIZATIONS.values() for name, option in row.options.items()},
)


class SolverSpec(_Section):
    update_rule: Literal["sgd", "sgd_momentum", "rmsprop", "adam"] = "sgd"
    optim_config: dict[str, float] = Field(default_factory=dict)
    lr_decay: Annotated[float, Field(gt=0, le=1)] = 1.0
    batch_size: PositiveInt = 100
    num_epochs: PositiveInt = 10
    accumulate: PositiveInt = 1  # micro-batches of batch_size per update (gradient accumulation)
    train_mode_accuracy: bool = False  # also measure the accuracies with batch statistics (train mode)
    save_weights: bool = True  # keep the trained net in the run's weights.npz
    precise_bn: bool = False  # eval-mode checks with batch norm's statistics recomputed over the training set
    adabn: bool = False  # eval-mode validation checks with the statistics recomputed over the validation images
    warmup_iters: NonNegativeInt = 0  # linear learning-rate warm-up over this many updates (0: none)
    # sgd only: the hidden weights' rate times lr_growth^(t-1) at update t (Li & Arora 2020; 1: off)
    lr_growth: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1.0
    num_train_samples: PositiveInt | None = 1000
    num_val_samples: PositiveInt | None = None

    @model_validator(mode="after")
    def _optim_config_fits_rule(self) -> SolverSpec:
        allowed = OPTIM_DEFAULTS[self.update_rule]
        for key, value in self.optim_config.items():
            if key not in allowed:
                raise ValueError(
                    f"optim_config has no {key!r} for update_rule {self.update_rule!r}"
                    f"{did_you_mean(key, allowed)}; valid keys: {', '.join(allowed)}"
                )
            if key in ("learning_rate", "epsilon") and not (math.isfinite(value) and value > 0):
                raise ValueError(f"optim_config.{key} must be a positive number, got {value!r}")
            if key in ("momentum", "decay_rate", "beta1", "beta2") and not 0 <= value < 1:
                raise ValueError(f"optim_config.{key} is a decay factor in [0, 1), got {value!r}")
        if self.lr_growth != 1 and self.update_rule != "sgd":
            raise ValueError(f"lr_growth grows plain SGD's rate; set update_rule: sgd (got {self.update_rule!r})")
        return self


class RecordSpec(_Section):
    """What bnlab.nn.probes.Recorder records: which statistics, at which cadence, and the step
    multiples (of the learning rate) of the landscape probes."""

    statistics: Annotated[list[Literal[STATISTICS]], Field(min_length=1)] = Field(
        default_factory=lambda: list(DEFAULT_STATISTICS)
    )
    every: PositiveInt = DEFAULT_EVERY
    landscape_steps: Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]], Field(min_length=1)] = Field(
        default_factory=lambda: list(DEFAULT_LANDSCAPE_STEPS)
    )

    @model_validator(mode="after")
    def _no_repeats(self) -> RecordSpec:
        if len(set(self.statistics)) != len(self.statistics):
            raise ValueError(f"statistics: {self.statistics} names a statistic twice")
        return self


class PlotSpec(_Section):
    kind: Literal[tuple(FIGURE_KINDS)]
    x: str | None = None
    title: str | None = None
    layers: Annotated[list[PositiveInt], Field(min_length=1)] | None = None  # activations, ics: which layers


MAX_NAME_LENGTH = 150  # an experiment's name is its results folder's: file systems allow 255 bytes


class ExperimentSpec(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME_LENGTH)]
    description: str = ""
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec
    solver: SolverSpec = Field(default_factory=SolverSpec)
    seeds: Annotated[list[Seed], Field(min_length=1)] | Annotated[int, Field(ge=1, le=MAX_RUNS)] = Field(
        default_factory=lambda: [0]
    )
    sweep: dict[str, Any] | list[dict[str, Any]] | None = None
    plots: list[PlotSpec] | None = None
    record: RecordSpec | None = None  # None: nothing is recorded inside the nets

    def seed_list(self) -> list[int]:
        """`seeds: 3` is shorthand for [0, 1, 2]."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


SECTIONS = {"data": DataSpec, "model": ModelSpec, "solver": SolverSpec}
