"""CIFAR-10: where it lives, downloading it safely, and loading it as the notebooks do.

The data set is the official "python version" (a folder `cifar-10-batches-py/` of pickled batches
`data_batch_1` ... `data_batch_5` and `test_batch`); batch sizes are read, never assumed, so a
reduced copy with fewer images per batch loads the same way.

Where the data lives, in order: the `data_dir` argument (CLI --data-dir), the environment variable
BNLAB_DATA_DIR, the user cache dir. The folder given may contain `cifar-10-batches-py/` or be it.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import platformdirs

from bnlab.data import prepared
from bnlab.errors import DataError

DEFAULT_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
DEFAULT_MD5 = "c58f30108f718f92721af3b95e74349a"

ENV_VAR = "BNLAB_DATA_DIR"
BATCHES_DIR = "cifar-10-batches-py"
IMAGE_SIZE = 3 * 32 * 32  # a row of 'data': 1024 red, 1024 green, 1024 blue, each 32x32 row-major
NUM_CLASSES = 10

Progress = Callable[[int, int | None], None]  # (bytes_done, total_bytes or None when unknown)

# Bump when a preprocessing's arithmetic changes: copies prepared by older code are then made anew.
PREPROCESS_VERSION = 1
PREPROCESS_ROWS = 1000  # images preprocessed at a time: their float64 copy is 24 MB for CIFAR-10


# ---------------------------------------------------------------------------------------------
# Where the data lives
# ---------------------------------------------------------------------------------------------


def data_dir_and_source(data_dir: str | Path | None) -> tuple[Path, str]:
    """The folder to use and a phrase naming where that choice came from (for messages)."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "the data_dir argument (--data-dir)"
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser(), f"the environment variable {ENV_VAR}"
    return Path(platformdirs.user_cache_dir("bnlab")), "the user cache dir (no --data-dir, no BNLAB_DATA_DIR)"


def find_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder bnlab will use: data_dir, else $BNLAB_DATA_DIR, else the user cache dir."""
    return data_dir_and_source(data_dir)[0]


def _candidates(base: Path) -> list[Path]:
    """The two places a batches folder may be: inside `base`, or `base` itself."""
    return [base / BATCHES_DIR, base]


def locate_cifar10(data_dir: str | Path | None = None) -> Path | None:
    """The `cifar-10-batches-py` folder under (or at) find_data_dir(data_dir), or None if absent."""
    inside, base = _candidates(find_data_dir(data_dir))
    if inside.is_dir():
        return inside
    # The folder itself, even if renamed, as long as it holds the batches.
    if base.is_dir() and (base.name == BATCHES_DIR or (base / "test_batch").is_file()):
        return base
    return None


def _download_dest(base: Path) -> Path:
    """Where to download into so that the archive's cifar-10-batches-py/ lands under (or at) base."""
    return base.parent if base.name == BATCHES_DIR else base


def not_found_message(data_dir: str | Path | None) -> str:
    """Where bnlab looked for CIFAR-10 and the ways to provide it."""
    base, source = data_dir_and_source(data_dir)
    looked = "\n".join(f"  {path}" for path in _candidates(base))
    return (
        f"CIFAR-10 ({BATCHES_DIR}/) not found. bnlab looked in (from {source}):\n{looked}\n"
        "Provide it in one of these ways:\n"
        f"  --data-dir DIR          a folder containing {BATCHES_DIR}/ (or that folder itself)\n"
        f"  {ENV_VAR}=DIR      the same, for every command\n"
        f"  bnlab data --download   download the official archive (~163 MB) into {_download_dest(base)}"
    )


# ---------------------------------------------------------------------------------------------
# Downloading and extracting
# ---------------------------------------------------------------------------------------------


class _ProgressBar:
    """progress(bytes_done, total or None) behind the interface pooch's downloaders expect of a
    progress bar (a total attribute, update(n), reset(), close()); bytes_done never decreases."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress, self.total, self.done = progress, None, 0

    def update(self, n: int) -> None:
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        if self.progress is not None:
            self.progress(self.done, self.total or None)

    def reset(self) -> None:  # pooch resets, then reports the total once the download is complete
        self.done = 0

    def close(self) -> None:
        pass


def _fetch(url: str, path: Path, timeout: float, progress: Progress | None) -> None:
    """Stream `url` into the file `path` with pooch's HTTP(S) downloader, reporting progress."""
    import pooch  # here, not at the top: workers never download, and pooch imports requests

    pooch.HTTPDownloader(progressbar=_ProgressBar(progress), timeout=timeout)(url, str(path), None)


def _md5(path: Path) -> str:
    import pooch

    return pooch.file_hash(str(path), alg="md5")


def _check_member(member: tarfile.TarInfo, archive: str) -> None:
    """Only plain files and folders under cifar-10-batches-py/ may come out of the archive."""
    parts = PurePosixPath(member.name).parts
    inside = bool(parts) and parts[0] == BATCHES_DIR and ".." not in parts
    if member.name.startswith(("/", "\\")) or not inside or not (member.isfile() or member.isdir()):
        raise DataError(
            f"refusing to extract {archive}: member {member.name!r} is not a plain file or folder "
            f"inside {BATCHES_DIR}/ (the archive is not the official CIFAR-10 one)"
        )


def _extract(archive: Path, into: Path) -> None:
    """Extract the checked members of the .tar.gz `archive` into the folder `into`."""
    # The "data" filter (Python >= 3.10.12) is a second line of defence after _check_member.
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # one pass over the stream: check each member before writing it
                _check_member(member, str(archive))
                tar.extract(member, into, **safe)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"cannot extract {archive}: {error}; it was deleted, download it again") from error


def download_cifar10(
    dest: Path,
    url: str = DEFAULT_URL,
    md5: str = DEFAULT_MD5,
    progress: Progress | None = None,
    timeout: float = 30,
) -> Path:
    """Download the CIFAR-10 archive from `url` into the folder `dest`; returns dest/cifar-10-batches-py.

    The archive goes to a temporary file in `dest` and is checked against `md5`; its members are
    checked, extracted into a temporary folder and moved into place in one rename, so an
    interrupted download never leaves a half-written batches folder. progress(bytes_done, total)
    is called as bytes arrive (total is None when the server does not say).
    """
    dest = Path(dest)
    target = dest / BATCHES_DIR
    if target.exists():
        raise DataError(f"{target} already exists: delete it first to download CIFAR-10 again")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".cifar-10-", suffix=".tar.gz.part", dir=dest)
    except OSError as error:
        raise DataError(f"cannot write to {dest}: {error}; choose another folder with --data-dir") from error
    archive = Path(name)
    staging = None
    try:
        os.close(fd)
        try:
            _fetch(url, archive, timeout, progress)
        except OSError as error:  # requests' errors (no network, HTTP errors, timeouts) are OSErrors
            raise DataError(f"cannot download {url}: {error}") from error
        got = _md5(archive)
        if got != md5.lower():
            raise DataError(
                f"the file downloaded from {url} has md5 {got}, expected {md5}: it is corrupt or "
                "incomplete and was deleted. Run the download again, or fetch the archive yourself "
                f"and extract it into {dest}"
            )
        staging = Path(tempfile.mkdtemp(prefix=".cifar-10-extract-", dir=dest))
        _extract(archive, staging)
        if not (staging / BATCHES_DIR).is_dir():
            raise DataError(f"the archive from {url} holds no {BATCHES_DIR}/ folder")
        try:
            os.rename(staging / BATCHES_DIR, target)
        except OSError as error:
            if not target.is_dir():  # else another process finished the same download first
                raise DataError(f"cannot move the extracted data to {target}: {error}") from error
        return target
    finally:
        archive.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def ensure_cifar10(
    data_dir: str | Path | None = None,
    download: bool = False,
    progress: Progress | None = None,
    url: str = DEFAULT_URL,
    md5: str = DEFAULT_MD5,
) -> Path:
    """The batches folder, downloading it into find_data_dir(data_dir) first if absent and allowed."""
    found = locate_cifar10(data_dir)
    if found is not None:
        return found
    if not download:
        raise DataError(not_found_message(data_dir))
    dest = _download_dest(find_data_dir(data_dir))
    try:
        return download_cifar10(dest, url=url, md5=md5, progress=progress)
    except DataError as error:
        raise DataError(f"{error}\n\n{not_found_message(data_dir)}") from error


# ---------------------------------------------------------------------------------------------
# Preprocessing: uint8 images and the statistics of the training pool in, float64 images out
# ---------------------------------------------------------------------------------------------


class PoolStats(NamedTuple):
    """Sums over the images the statistics come from: the training pool without the validation
    images (the notebooks' mean image), so nothing of the validation or test images leaks in."""

    count: int  # images summed
    total: np.ndarray  # float64 (C, H, W): the sum of the images
    total_sq: np.ndarray  # float64 (C, H, W): the sum of their squares


Preprocess = Callable[[np.ndarray, PoolStats], np.ndarray]


def mean_image(x: np.ndarray, stats: PoolStats) -> np.ndarray:
    """x - the mean image (pixel by pixel): the CS231n notebooks' preprocessing, unscaled."""
    return x.astype(np.float64) - stats.total / stats.count


def scale(x: np.ndarray, stats: PoolStats) -> np.ndarray:
    """x / 255: pixels in [0, 1], as the BN paper's MNIST; no statistics."""
    return x.astype(np.float64) / 255.0


def standardize(x: np.ndarray, stats: PoolStats) -> np.ndarray:
    """(x - mean_c) / std_c per channel c, over every pixel of the pool's images (torchvision's
    Normalize with the training set's channel statistics)."""
    positions = stats.count * stats.total[0].size
    mean = stats.total.sum(axis=(1, 2)) / positions
    std = np.sqrt(np.maximum(stats.total_sq.sum(axis=(1, 2)) / positions - mean**2, 0.0))
    std[std == 0] = 1.0  # a constant channel is only centred
    return (x.astype(np.float64) - mean[:, None, None]) / std[:, None, None]


# name -> function, the values of a spec's data.preprocess
PREPROCESS: dict[str, Preprocess] = {"mean_image": mean_image, "scale": scale, "standardize": standardize}


def preprocess_function(name: str) -> Preprocess:
    """PREPROCESS[name], or a DataError naming the choices."""
    if name not in PREPROCESS:
        raise DataError(f"unknown preprocess {name!r}: choose one of {', '.join(PREPROCESS)}")
    return PREPROCESS[name]


# ---------------------------------------------------------------------------------------------
# Reading batches
# ---------------------------------------------------------------------------------------------


def _batch_files(batches: Path) -> tuple[list[Path], Path]:
    """The training batch files in numeric order (1, 2, ..., 10, ...) and the test batch file."""
    numbered = []
    for path in batches.iterdir():
        match = re.fullmatch(r"data_batch_(\d+)", path.name)
        if match:
            numbered.append((int(match.group(1)), path))
    test = batches / "test_batch"
    if not numbered or not test.is_file():
        raise DataError(
            f"{batches} is incomplete: it needs data_batch_1, data_batch_2, ... and test_batch. "
            "Delete the folder and download CIFAR-10 again (bnlab data --download)"
        )
    return [path for _, path in sorted(numbered)], test


class _Refused(pickle.UnpicklingError):
    """A pickle names a callable that no CIFAR-10 batch needs."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches: plain containers and numpy arrays, nothing else. A pickle can
    name any function to call, so a batch file from an untrusted folder could otherwise run code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),  # arrays as the official files (numpy 1) hold them
        ("numpy._core.multiarray", "_reconstruct"),  # the same, pickled by numpy 2
        ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes pickled with protocol 2 by Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (data uint8 (n, 3072), labels int64 (n,)); DataError if it is damaged."""
    fix = f"Delete {path.parent} and download CIFAR-10 again (bnlab data --download)"
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="latin1").load()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from error
    except _Refused as refused:
        raise DataError(
            f"{path} is not a CIFAR-10 batch: it would call {refused}, and bnlab loads no pickle that "
            f"calls functions (such a file can run code). {fix}"
        ) from None
    except Exception as error:  # a truncated or corrupt pickle can fail in many ways
        raise DataError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}). {fix}") from error
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (IMAGE_SIZE,)):
        raise DataError(f"{path} is not a CIFAR-10 batch: it needs 'data', uint8 (n, {IMAGE_SIZE}). {fix}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path} has unreadable 'labels' ({error}). {fix}") from error
    if labels.shape != (len(data),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= NUM_CLASSES:
        raise DataError(
            f"{path} is corrupt: {len(data)} images but labels of shape {labels.shape} "
            f"(expected {len(data)} integers in 0..{NUM_CLASSES - 1}). {fix}"
        )
    return data, labels


class _Pool(NamedTuple):
    """What the splits need from the training pool: the rows of train and validation, and a sum."""

    train_x: np.ndarray  # uint8 (num_train, 3072): the first images of the pool
    train_y: np.ndarray  # int64 (num_train,)
    val_x: np.ndarray  # uint8 (num_val, 3072): the last images of the pool
    val_y: np.ndarray  # int64 (num_val,)
    total: np.ndarray  # float64 (3072,): the sum of every pool image
    total_sq: np.ndarray  # float64 (3072,): the sum of their squares (exact: integers below 2**53)
    size: int  # the number of images in the pool


def _read_pool(files: list[Path], num_train: int, num_val: int) -> _Pool:
    """Stream the training batch files one at a time, keeping only the rows the splits need.

    Memory is one batch file plus the kept rows, whatever the size of the pool.
    """
    head_x, head_y, kept = [], [], 0
    tail_x = np.empty((0, IMAGE_SIZE), np.uint8)
    tail_y = np.empty(0, np.int64)
    total = np.zeros(IMAGE_SIZE, np.float64)
    total_sq = np.zeros(IMAGE_SIZE, np.float64)
    size = 0
    for path in files:
        data, labels = _read_batch(path)
        total += data.sum(axis=0, dtype=np.float64)
        total_sq += sum_of_squares(data)
        size += len(data)
        if kept < num_train:
            head_x.append(data[: num_train - kept].copy())  # a copy, so the batch itself can be freed
            head_y.append(labels[: num_train - kept].copy())
            kept += len(head_x[-1])
        tail_x = np.concatenate([tail_x, data])[-num_val:]
        tail_y = np.concatenate([tail_y, labels])[-num_val:]
    return _Pool(np.concatenate(head_x), np.concatenate(head_y), tail_x.copy(), tail_y.copy(), total, total_sq, size)


def sum_of_squares(rows: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The float64 sum over rows of rows**2, a few rows at a time: memory stays that of the uint8 rows."""
    total = np.zeros(rows.shape[1:], np.float64)
    for start in range(0, len(rows), chunk):
        total += np.square(rows[start : start + chunk], dtype=np.float64).sum(axis=0)
    return total


def preprocess_chunks(images: np.ndarray, preprocess: Preprocess, stats: PoolStats, dtype) -> prepared.Streamed:
    """uint8 images (n, C, H, W) -> (n, C, H, W) of `dtype`, preprocessed in float64
    PREPROCESS_ROWS images at a time: the same arithmetic per element as on the whole, without a
    float64 copy of the whole."""
    chunks = (
        preprocess(images[i : i + PREPROCESS_ROWS], stats).astype(dtype) for i in range(0, len(images), PREPROCESS_ROWS)
    )
    return prepared.Streamed(images.shape, np.dtype(dtype), chunks)


def sources_and_build(
    batches: Path, num_train: int, num_val: int, num_test: int, dtype: np.dtype, step: Preprocess
) -> tuple[list[Path], Callable[[], dict]]:
    """The batch files of the folder `batches`, which a prepared copy of CIFAR-10 is keyed on, and
    the function that computes the splits from them (bnlab.data.datasets.prepare_dataset)."""
    train_files, test_file = _batch_files(batches)
    build = functools.partial(_build, batches, train_files, test_file, num_train, num_val, num_test, dtype, step)
    return [*train_files, test_file], build


def check_request(num_train: int, num_val: int, num_test: int, dtype) -> np.dtype:
    """np.dtype(dtype), after checking that it is a floating type (else ValueError) and that the
    split sizes are possible at all (else DataError): the checks of every data set's prepare."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    if num_train < 1 or num_val < 1 or num_test < 0:
        raise DataError(f"num_train ({num_train}) and num_val ({num_val}) must be >= 1 and num_test ({num_test}) >= 0")
    return dtype


def check_splits_fit(num_train: int, num_val: int, num_test: int, pool: int, tests: int, where: Path) -> None:
    """DataError unless num_train + num_val images fit a training pool of `pool` and num_test a
    test set of `tests` (both read from `where`, named in the message)."""
    if num_train + num_val > pool:
        raise DataError(
            f"num_train + num_val = {num_train} + {num_val} = {num_train + num_val} but {where} holds "
            f"only {pool} training images: lower num_train or num_val"
        )
    if num_test > tests:
        raise DataError(f"num_test = {num_test} but {where} holds only {tests} test images")


def _build(
    batches: Path,
    train_files: list[Path],
    test_file: Path,
    num_train: int,
    num_val: int,
    num_test: int,
    dtype: np.dtype,
    step: Preprocess,
) -> dict:
    """The arrays of datasets.load_cifar10, computed from the batches folder `batches`."""
    pool = _read_pool(train_files, num_train, num_val)
    test_x, test_y = _read_batch(test_file)
    check_splits_fit(num_train, num_val, num_test, pool.size, len(test_x), batches)
    # Sums of integers are exact in float64, so these are exactly the sums over pool[:size - num_val].
    stats = PoolStats(
        pool.size - num_val,
        (pool.total - pool.val_x.sum(axis=0, dtype=np.float64)).reshape(3, 32, 32),
        (pool.total_sq - sum_of_squares(pool.val_x)).reshape(3, 32, 32),
    )
    return {
        "X_train": preprocess_chunks(pool.train_x.reshape(-1, 3, 32, 32), step, stats, dtype),
        "y_train": pool.train_y,
        "X_val": preprocess_chunks(pool.val_x.reshape(-1, 3, 32, 32), step, stats, dtype),
        "y_val": pool.val_y,
        "X_test": preprocess_chunks(test_x[:num_test].reshape(-1, 3, 32, 32), step, stats, dtype),
        "y_test": test_y[:num_test],
    }


def describe_cifar10(data_dir: str | Path | None = None) -> dict:
    """What `bnlab data` reports; never raises for missing or damaged data, it describes it.

    Keys: data_dir (the folder used), source (where that choice came from), looked_in (the
    candidate paths), found (the batches folder or None), num_train and num_test (image counts or
    None), batches (a list of {"file", "images", "bytes"}), problem (a message or None).
    """
    base, source = data_dir_and_source(data_dir)
    found = locate_cifar10(data_dir)
    report = {
        "data_dir": str(base),
        "source": source,
        "looked_in": [str(path) for path in _candidates(base)],
        "found": None if found is None else str(found),
        "num_train": None,
        "num_test": None,
        "batches": [],
        "problem": None,
    }
    if found is None:
        report["problem"] = not_found_message(data_dir)
        return report
    try:
        train_files, test_file = _batch_files(found)
        for path in [*train_files, test_file]:
            images = len(_read_batch(path)[1])
            report["batches"].append({"file": path.name, "images": images, "bytes": path.stat().st_size})
    except DataError as error:
        report["problem"] = str(error)
        return report
    report["num_train"] = sum(batch["images"] for batch in report["batches"][:-1])
    report["num_test"] = report["batches"][-1]["images"]
    return report
