"""The data sets a spec may name (data.dataset), where their files live, how to fetch and read them.

Each entry of DATASETS says: the folder under the data directory, the files it holds, where to
download them and their checksums, the image shape (C, H, W), the class names, the preprocessing a
spec gets by default, and the reader. Reading and preprocessing are separate steps: a reader gives
the raw uint8 images and int64 labels (read_raw), bnlab.data.cifar10.PREPROCESS turns uint8 into floats
(load_dataset does both), so a cache of raw arrays can sit between them.

    cifar10        cifar-10-batches-py/   the official "python version" (bnlab.data.cifar10)
    mnist          mnist/                 the four gzip'd IDX files of the official distribution
    fashion_mnist  fashion-mnist/         the same format and file names

Splits follow the CIFAR-10 notebooks: the training file(s) are the pool; X_train is its first
num_train images, X_val its last num_val; X_test the first num_test of the test file. The
preprocessing statistics come from the pool without the validation images. Sizes are read from
the files, never assumed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from bnlab.data import cifar10 as cifar
from bnlab.data import idx, prepared
from bnlab.errors import DataError


class Raw(NamedTuple):
    """A data set as its files hold it: uint8 images (n, C, H, W) and int64 labels (n,)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True)
class Dataset:
    """One entry of the registry (see the module docstring)."""

    name: str
    folder: str  # under the data directory
    files: tuple[str, ...]  # what the folder must hold
    base_url: str  # a file's address is base_url + its name
    checksums: dict[str, str]  # file -> "md5:..." as the official distribution publishes them
    image_shape: tuple[int, int, int]  # (C, H, W)
    classes: tuple[str, ...]
    default_preprocess: str  # a key of bnlab.data.cifar10.PREPROCESS
    read: Callable[[Path], Raw] | None  # folder -> raw arrays; None: read by bnlab.data.cifar10 (CIFAR-10)

    @property
    def input_dim(self) -> int:
        """The length of a flattened image: what a fully connected net takes."""
        return int(np.prod(self.image_shape))


# --- the registry ------------------------------------------------------------------------------

DIGITS = tuple(str(d) for d in range(10))


def _read_idx(folder: Path) -> Raw:
    return Raw(*idx.read_idx_folder(folder))


def _idx_dataset(name: str, folder: str, base_url: str, md5s: tuple[str, ...], classes: tuple[str, ...]) -> Dataset:
    """An MNIST-format data set: 28x28 grey images in the four files of bnlab.data.idx.IDX_FILES (md5s in that
    order, as the distribution publishes them), read by bnlab.data.idx, scaled by default."""
    files = tuple(idx.IDX_FILES.values())
    return Dataset(
        name=name,
        folder=folder,
        files=files,
        base_url=base_url,
        checksums={file: f"md5:{md5}" for file, md5 in zip(files, md5s, strict=True)},
        image_shape=(1, 28, 28),
        classes=classes,
        default_preprocess="scale",
        read=_read_idx,
    )


DATASETS: dict[str, Dataset] = {
    "cifar10": Dataset(
        name="cifar10",
        folder=cifar.BATCHES_DIR,
        files=("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"),
        base_url=cifar.DEFAULT_URL.rsplit("/", 1)[0] + "/",
        checksums={cifar.DEFAULT_URL.rsplit("/", 1)[1]: f"md5:{cifar.DEFAULT_MD5}"},
        image_shape=(3, 32, 32),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        default_preprocess="mean_image",
        read=None,
    ),
    "mnist": _idx_dataset(
        "mnist",
        "mnist",
        # Yann LeCun's site no longer serves the files; this is the mirror TensorFlow's loader uses.
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
        DIGITS,
    ),
    "fashion_mnist": _idx_dataset(
        "fashion_mnist",
        "fashion-mnist",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}
DEFAULT_DATASET = "cifar10"  # what a spec or a run recorded before there were others trains on


def get(name: str) -> Dataset:
    """DATASETS[name], or a DataError with a did-you-mean."""
    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"unknown dataset {name!r}{hint}: choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


# --- where the files are -----------------------------------------------------------------------


def locate(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The data set's folder under (or at) the data directory, or None if it is not there."""
    dataset = get(name)
    if dataset.read is None:
        return cifar.locate_cifar10(data_dir)
    base = cifar.find_data_dir(data_dir)
    for folder in (base / dataset.folder, base):
        if all((folder / file).is_file() for file in dataset.files):
            return folder
    return None


def not_found_message(name: str, data_dir: str | Path | None = None) -> str:
    """Where bnlab looked for the data set, which files are missing, and how to provide them."""
    dataset = get(name)
    if dataset.read is None:
        return cifar.not_found_message(data_dir)
    base, source = cifar.data_dir_and_source(data_dir)
    folder = base / dataset.folder
    missing = [file for file in dataset.files if not (folder / file).is_file()]
    return (
        f"{name} not found: {folder} (from {source}) lacks {', '.join(missing)}.\n"
        f"Put the four official files in {folder}/ (they are at {dataset.base_url}), or give another data "
        f"folder with --data-dir DIR or {cifar.ENV_VAR}=DIR; without either, bnlab downloads them into "
        f"its cache folder when a network exists"
    )


def download(name: str, data_dir: str | Path | None = None, progress: cifar.Progress | None = None) -> Path:
    """Fetch the data set's missing files into find_data_dir(data_dir)/<folder>/ with pooch,
    checking each against its published checksum; returns the folder. progress(bytes_done, total)
    is called as each file's bytes arrive.
    """
    dataset = get(name)
    if dataset.read is None:
        return cifar.ensure_cifar10(data_dir, download=True, progress=progress)
    import pooch

    folder = cifar.find_data_dir(data_dir) / dataset.folder
    for file in dataset.files:
        if (folder / file).is_file():
            continue
        try:
            pooch.retrieve(
                dataset.base_url + file,
                known_hash=dataset.checksums[file],
                fname=file,
                path=folder,
                downloader=pooch.HTTPDownloader(progressbar=cifar._ProgressBar(progress), timeout=30),
            )
        except ValueError as error:  # pooch's checksum mismatch; the file is not kept
            raise DataError(f"{dataset.base_url + file}: {error}\n\n{not_found_message(name, data_dir)}") from None
        except Exception as error:  # noqa: BLE001 - requests' and the OS's errors alike mean "no file"
            raise DataError(
                f"cannot download {dataset.base_url + file}: {error}\n\n{not_found_message(name, data_dir)}"
            ) from None
    return folder


def ensure(
    name: str, data_dir: str | Path | None = None, allow_download: bool = False, progress: cifar.Progress | None = None
) -> Path:
    """The data set's folder, downloading it first if absent and allowed."""
    found = locate(name, data_dir)
    if found is not None:
        return found
    if not allow_download:
        raise DataError(not_found_message(name, data_dir))
    return download(name, data_dir, progress)


def describe(name: str, data_dir: str | Path | None = None) -> dict:
    """What `bnlab data --dataset NAME` reports; never raises for missing or damaged data, it
    describes it. For cifar10, data.describe_cifar10's report; for the others the same keys
    (data_dir, source, looked_in, found, num_train, num_test, problem) with `files` ({"file",
    "images", "bytes"}, images counting the samples a file holds) in place of CIFAR-10's batches.
    Both name the data set in `dataset`."""
    dataset = get(name)
    if dataset.read is None:
        return {"dataset": name, **cifar.describe_cifar10(data_dir)}
    base, source = cifar.data_dir_and_source(data_dir)
    found = locate(name, data_dir)
    report = {
        "dataset": name,
        "data_dir": str(base),
        "source": source,
        "looked_in": [str(base / dataset.folder), str(base)],
        "found": None if found is None else str(found),
        "num_train": None,
        "num_test": None,
        "files": [],
        "problem": None,
    }
    if found is None:
        report["problem"] = not_found_message(name, data_dir)
        return report
    try:
        report["num_train"], report["num_test"] = counts(name, data_dir)
    except DataError as error:
        report["problem"] = str(error)
        return report
    train_files = {idx.IDX_FILES["train_images"], idx.IDX_FILES["train_labels"]}
    for file in dataset.files:
        images = report["num_train"] if file in train_files else report["num_test"]
        report["files"].append({"file": file, "images": images, "bytes": (found / file).stat().st_size})
    return report


def counts(name: str, data_dir: str | Path | None = None) -> tuple[int, int]:
    """(training pool size, test set size) as the files say, every file checked."""
    dataset = get(name)
    if dataset.read is None:
        info = cifar.describe_cifar10(data_dir)
        if info["problem"]:
            raise DataError(info["problem"])
        return info["num_train"], info["num_test"]
    raw = read_raw(name, data_dir)  # every file read and checked: bad data fails here, not in a worker
    return len(raw.train_x), len(raw.test_x)


# --- reading and preprocessing -----------------------------------------------------------------


def read_raw(name: str, data_dir: str | Path | None = None) -> Raw:
    """The raw arrays of an MNIST-format data set (cifar10 is read by bnlab.data.cifar10)."""
    dataset = get(name)
    if dataset.read is None:
        raise ValueError("cifar10's raw batches are read by bnlab.data.cifar10")
    folder = locate(name, data_dir)
    if folder is None:
        raise DataError(not_found_message(name, data_dir))
    return dataset.read(folder)


class Request(NamedTuple):
    """The data a run trains on: a data set, its splits (the module docstring), the images' dtype
    and their preprocessing (None: the data set's default). With the files' contents, what a
    prepared copy is keyed on."""

    dataset: str
    num_train: int
    num_val: int
    num_test: int
    dtype: DTypeLike = np.float32
    preprocess: str | None = None

    @classmethod
    def of_run(cls, config: dict) -> Request:
        """The data of the run with this config: its data section (no dataset: cifar10, as runs
        recorded before there were others; no preprocess: the data set's default) and its model's dtype."""
        d = config["data"]
        splits = d["num_train"], d["num_val"], d["num_test"]
        return cls(d.get("dataset", DEFAULT_DATASET), *splits, config["model"]["dtype"], d.get("preprocess"))


def load_dataset(request: Request, data_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """X_train, y_train, X_val, y_val, X_test, y_test of request.dataset, split as the module
    docstring says and preprocessed as the request says; images (n, C, H, W) of its dtype, labels
    int64, every array a read-only map of the prepared copy in the cache (prepare_dataset), shared
    by every process. Never downloads."""
    return prepare_dataset(request, data_dir, verify=False).arrays


def load_cifar10(
    data_dir: str | Path | None = None,
    num_train: int = 49000,
    num_val: int = 1000,
    num_test: int = 1000,
    dtype=np.float32,
    preprocess: str = "mean_image",
) -> dict[str, np.ndarray]:
    """CIFAR-10 split and preprocessed as the notebooks' get_CIFAR10_data; never downloads.

    The training pool is every data_batch_* in order: X_train is its first num_train images,
    X_val its last num_val, and the mean image (float64) is taken over the pool without the
    validation images; X_test is the first num_test images of test_batch. Returns X_train
    (num_train, 3, 32, 32), X_val, X_test likewise, mean-subtracted and cast to `dtype`, and
    y_train, y_val, y_test int64 labels. `preprocess` names another option of PREPROCESS (its
    statistics are taken over the same images as the mean image). The arrays are read-only maps
    of the prepared copy in the cache (see prepare_dataset), which the first call
    prepares: every process maps the same pages.
    """
    return load_dataset(Request("cifar10", num_train, num_val, num_test, dtype, preprocess), data_dir)


def prepare_dataset(request: Request, data_dir: str | Path | None = None, verify: bool = True) -> prepared.Prepared:
    """The splits of load_dataset, prepared in the cache (bnlab.data.prepared) unless they are
    already, keyed by the files' contents, every option of the request and PREPROCESS_VERSION;
    verify: check the prepared files' checksums too (what a sweep's parent does once)."""
    name, num_train, num_val, num_test, dtype, preprocess = request
    dataset = get(name)
    preprocess = preprocess or dataset.default_preprocess
    step = cifar.preprocess_function(preprocess)
    dtype = cifar.check_request(num_train, num_val, num_test, dtype)
    folder = locate(name, data_dir)
    if folder is None:
        raise DataError(not_found_message(name, data_dir))
    if dataset.read is None:
        files, build = cifar.sources_and_build(folder, num_train, num_val, num_test, dtype, step)
    else:
        files = [folder / file for file in dataset.files]
        build = functools.partial(_split, dataset.read, folder, num_train, num_val, num_test, dtype, step)
    # The key of the prepared copy: a change here, even of a key's spelling, makes every copy anew.
    options = {
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "dtype": dtype.str,
        "preprocess": preprocess,
        "version": cifar.PREPROCESS_VERSION,
    }
    return prepared.prepare(name, files, options, build, verify=verify)


def _split(read: Callable[[Path], Raw], folder: Path, num_train: int, num_val: int, num_test: int, dtype, step) -> dict:
    """The arrays of prepare_dataset, read from `folder` and preprocessed a chunk at a time."""
    raw = read(folder)
    pool = len(raw.train_x)
    cifar.check_splits_fit(num_train, num_val, num_test, pool, len(raw.test_x), folder)
    fit = raw.train_x[: pool - num_val]
    # Sums of integers are exact in float64: summed a few images at a time, they are the same numbers.
    stats = cifar.PoolStats(len(fit), fit.sum(axis=0, dtype=np.float64), cifar.sum_of_squares(fit))
    return {
        "X_train": cifar.preprocess_chunks(raw.train_x[:num_train], step, stats, dtype),
        "y_train": raw.train_y[:num_train],
        "X_val": cifar.preprocess_chunks(raw.train_x[pool - num_val :], step, stats, dtype),
        "y_val": raw.train_y[pool - num_val :],
        "X_test": cifar.preprocess_chunks(raw.test_x[:num_test], step, stats, dtype),
        "y_test": raw.test_y[:num_test],
    }
