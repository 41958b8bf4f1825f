"""Prepared data sets: preprocessed once, stored in the user's cache, memory-mapped by every process.

A sweep's workers (and the next `bnlab run`, and Dask workers on the same host) all train on the
same preprocessed arrays. Instead of each process computing its own copy, the first one writes
them as .npy files into a folder of the cache and every process maps those files read-only: the
operating system keeps one copy in memory, shared by all of them.

    <root>/<dataset>-<key>/    one folder per prepared data set
        <array>.npy            e.g. X_train.npy, y_train.npy ... (numpy's .npy format)
        manifest.json          what was prepared from what: written last, so its presence says the
                               folder is complete; it holds every array's shape, dtype, byte size
                               and CRC-32, to detect a truncated or damaged file
    <root>/<dataset>-<key>.lock
    <root>/.sources/           the source files' SHA-256, remembered by file identity

The key is a hash of the data set's name, its sources' contents (SHA-256), and the options that
change the preprocessed bytes (splits, dtype, the preprocessing's version): a changed source file
or preprocessing is never served stale, it is prepared anew under another key. A folder is filled
under a temporary name and renamed into place, under a file lock, so several processes preparing
the same data at once prepare it once and never see half a folder.

The root is $BNLAB_PREPARED_DIR, else `prepared/` in the user cache folder (on Linux
~/.cache/bnlab/prepared). Nothing here prints: callers get a notice to show.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
from filelock import FileLock

from bnlab.errors import DataError
from bnlab.lab import atomic
from bnlab.lab.process_setup import release_free_memory

ENV_VAR = "BNLAB_PREPARED_DIR"
MANIFEST = "manifest.json"
SOURCES = ".sources"  # the sources' remembered hashes
READ_BYTES = 1 << 22  # hashing reads files in pieces of 4 MiB


@dataclass(frozen=True)
class Streamed:
    """An array written piece by piece: its shape, dtype, and the pieces (consecutive slices along
    the first axis, in order). Its whole never has to be in memory at once."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: Iterable[np.ndarray]


Build = Callable[[], Mapping[str, "np.ndarray | Streamed"]]


@dataclass(frozen=True)
class Prepared:
    """A prepared data set: its folder, its arrays (read-only memory maps), whether this call built
    it, and a notice for the user when it had to be rebuilt (None otherwise)."""

    path: Path
    arrays: dict[str, np.ndarray]
    built: bool = False
    notice: str | None = None


def prepared_root() -> Path:
    """Where prepared data sets are kept: $BNLAB_PREPARED_DIR, else the user cache's prepared/."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path(platformdirs.user_cache_dir("bnlab")) / "prepared"


def file_sha256(path: Path, root: Path) -> str:
    """SHA-256 of the file's content. Remembered in root/.sources/ under the file's identity (path,
    size, inode, modification and change times, in ns; any write changes them), as git's index
    does, so a process finds its data without reading every source byte again."""
    stat = path.stat()
    identity = f"{path.resolve()}|{stat.st_size}|{stat.st_ino}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
    memo = root / SOURCES / hashlib.sha256(identity.encode()).hexdigest()
    try:
        remembered = memo.read_text()
        if len(remembered) == 64:
            return remembered
    except OSError:
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(READ_BYTES):
            digest.update(block)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(memo, digest.hexdigest())
    except OSError:
        pass  # only a cache: the file is hashed again next time
    return digest.hexdigest()


def key_of(dataset: str, sources: Sequence[Path], options: Mapping, root: Path) -> str:
    """The hash naming a prepared data set: dataset name, sources' names and contents, options."""
    described = {
        "dataset": dataset,
        "sources": [[Path(p).name, file_sha256(Path(p), root)] for p in sources],
        "options": dict(options),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


_MAPPED: dict[Path, dict[str, np.ndarray]] = {}  # folder -> its arrays, mapped once per process


def prepare(
    dataset: str,
    sources: Sequence[Path],
    options: Mapping,
    build: Build,
    verify: bool = True,
    root: Path | None = None,
) -> Prepared:
    """The prepared arrays of `dataset` made from the files `sources` with `options`; builds them
    first (build() returns the arrays, each an ndarray or a Streamed) if they are not prepared yet.

    verify: check each file's CRC-32 too (reads every byte); without it only sizes, shapes and
    dtypes are checked, in milliseconds, and a folder this process has mapped already is reused
    unchecked. A folder that fails the check is rebuilt, and Prepared.notice says so. options must
    be JSON-serializable.
    """
    root = prepared_root() if root is None else Path(root)
    folder = root / f"{dataset}-{key_of(dataset, sources, options, root)}"
    if not verify and folder in _MAPPED:
        return Prepared(folder, dict(_MAPPED[folder]))
    problem = _problem(folder, verify)
    if problem is None:
        return Prepared(folder, _open(folder))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create {root} for prepared data: {error}; set {ENV_VAR} to a writable folder"
        ) from error
    with FileLock(root / f"{folder.name}.lock"):
        # Another process may have prepared it while this one waited for the lock.
        problem = _problem(folder, verify)
        if problem is None:
            return Prepared(folder, _open(folder))
        notice = None
        if folder.exists():
            notice = f"the prepared {dataset} data in {folder} was {problem}: rebuilt it"
            _discard(folder)
        for leftover in root.glob(f".{folder.name}.*"):  # of a process killed while preparing it
            shutil.rmtree(leftover, ignore_errors=True)
        staging = atomic.staging_dir(root, f".{folder.name}.")
        try:
            manifest = {"dataset": dataset, "options": dict(options), "sources": _describe_sources(sources, root)}
            manifest["arrays"] = {name: _write_npy(staging / f"{name}.npy", a) for name, a in build().items()}
            atomic.write_text(staging / MANIFEST, json.dumps(manifest, indent=1))
            os.rename(staging, folder)
        except OSError as error:
            raise DataError(
                f"cannot write prepared data into {root}: {error}; set {ENV_VAR} to a writable folder"
            ) from error
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            release_free_memory()  # what building took (the raw pool, a batch file) is not kept
    return Prepared(folder, _open(folder), built=True, notice=notice)


def _describe_sources(sources: Sequence[Path], root: Path) -> list[dict]:
    return [
        {"file": str(Path(p).resolve()), "bytes": Path(p).stat().st_size, "sha256": file_sha256(Path(p), root)}
        for p in sources
    ]


def _write_npy(path: Path, array: np.ndarray | Streamed) -> dict:
    """Write one array as .npy, a piece at a time; returns its manifest entry."""
    if isinstance(array, np.ndarray):
        array = Streamed(array.shape, array.dtype, [array])
    dtype = np.dtype(array.dtype)
    crc, rows = 0, 0
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": array.shape}
        )
        for chunk in array.chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            if chunk.shape[1:] != array.shape[1:]:
                raise ValueError(f"{path.name}: a piece of shape {chunk.shape} in an array of shape {array.shape}")
            crc = zlib.crc32(memoryview(chunk).cast("B"), crc)
            f.write(memoryview(chunk).cast("B"))
            rows += len(chunk)
    if rows != array.shape[0]:
        raise ValueError(f"{path.name}: {rows} rows written, {array.shape[0]} announced")
    return {
        "file": path.name,
        "shape": list(array.shape),
        "dtype": dtype.str,
        "bytes": path.stat().st_size,
        "crc32": crc,
    }


def _problem(folder: Path, verify: bool) -> str | None:
    """What is wrong with a prepared folder ('missing', 'incomplete', 'truncated', 'corrupt'), or None."""
    if not folder.is_dir():
        return "missing"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        entries = manifest["arrays"].values()
    except (OSError, ValueError, KeyError, AttributeError):
        return "incomplete (no readable manifest.json)"
    for entry in entries:
        path = folder / entry["file"]
        try:
            size = path.stat().st_size
        except OSError:
            return f"incomplete ({entry['file']} is missing)"
        if size != entry["bytes"]:
            return f"truncated ({entry['file']} has {size:,} bytes, {entry['bytes']:,} expected)"
        try:
            mapped = _load(path, entry["shape"])
        except (OSError, ValueError) as error:
            return f"corrupt ({entry['file']}: {error})"
        if list(mapped.shape) != entry["shape"] or mapped.dtype.str != entry["dtype"]:
            expected = f"{np.dtype(entry['dtype'])} {tuple(entry['shape'])}"
            return f"corrupt ({entry['file']} holds {mapped.dtype} {mapped.shape}, not {expected})"
        if verify and _crc32(mapped) != entry["crc32"]:
            return f"corrupt ({entry['file']} fails its CRC-32 check)"
    return None


def _crc32(array: np.ndarray) -> int:
    """CRC-32 of an array's bytes (C order), read a piece at a time."""
    flat = array.reshape(-1).view(np.uint8) if array.size else np.empty(0, np.uint8)
    crc = 0
    for start in range(0, len(flat), READ_BYTES):
        crc = zlib.crc32(memoryview(np.ascontiguousarray(flat[start : start + READ_BYTES])), crc)
    return crc


def _open(folder: Path) -> dict[str, np.ndarray]:
    """The folder's arrays, memory-mapped read-only (pages are read on first touch, and shared)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    arrays = manifest["arrays"].items()
    _MAPPED[folder] = {name: _load(folder / entry["file"], entry["shape"]) for name, entry in arrays}
    return dict(_MAPPED[folder])


def _load(path: Path, shape: Sequence[int]) -> np.ndarray:
    """A .npy file mapped read-only, as a plain ndarray (the map lives as long as the array)."""
    if 0 in shape:  # numpy cannot map an empty array (e.g. no test images): read it, it is empty
        array = np.load(path)
        array.flags.writeable = False
        return array
    return np.load(path, mmap_mode="r").view(np.ndarray)


def _discard(folder: Path) -> None:
    """Remove a prepared folder. Renamed away first, so no process finds it half-deleted; processes
    that have it mapped keep their mapping (a file's pages live until its last mapping goes)."""
    trash = folder.with_name(f".{folder.name}.trash{os.getpid()}")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def list_prepared(root: Path | None = None) -> list[dict]:
    """What is prepared under root: one dict per folder with dataset, options, arrays (name ->
    shape), bytes (total size of its files), path; folders without a readable manifest are listed
    with dataset None."""
    root = prepared_root() if root is None else Path(root)
    found = []
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            arrays = {name: tuple(entry["shape"]) for name, entry in manifest["arrays"].items()}
            dataset, options = manifest["dataset"], manifest["options"]
        except (OSError, ValueError, KeyError, AttributeError):
            dataset, options, arrays = None, {}, {}
        found.append({"dataset": dataset, "options": options, "arrays": arrays, "bytes": size, "path": str(folder)})
    return found


def clear_prepared(root: Path | None = None) -> tuple[int, int]:
    """Remove every prepared data set under root; returns (folders removed, bytes freed)."""
    root = prepared_root() if root is None else Path(root)
    folders, freed = 0, 0
    for entry in sorted(root.glob("*")) if root.is_dir() else []:
        if not entry.is_dir():
            continue  # lock files stay: deleting one another process holds would break its lock
        if entry.name == SOURCES:
            shutil.rmtree(entry, ignore_errors=True)
            continue
        # A staging folder ".<name>.<random>" belongs to <name>: taking <name>'s lock waits for a
        # process preparing it, and what is left after that was left by a killed process.
        name = entry.name[1:].split(".")[0] if entry.name.startswith(".") else entry.name
        with FileLock(root / f"{name}.lock"):
            freed += sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
            if entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)
            else:
                _discard(entry)
                folders += 1
    return folders, freed
