"""Prepared data sets (bnlab.data.prepared, datasets.prepare_dataset): the same bytes as preprocessing
in memory, keyed by the sources and options, one preparation for several processes at once, and
damaged copies detected and rebuilt."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import bnlab, write_batch

from bnlab.data import cifar10 as data
from bnlab.data import datasets, prepared
from bnlab.lab.train import train_run

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
SHARED_BATCHES = SHARED / "cifar-10-batches-py"
SPLITS = {"num_train": 100, "num_val": 50, "num_test": 30}


def prepare_cifar10(batches: Path, num_train: int, num_val: int, num_test: int, dtype=np.float32, verify=True):
    """CIFAR-10's splits in the folder `batches`, prepared as load_cifar10 prepares them (mean_image)."""
    request = datasets.Request("cifar10", num_train, num_val, num_test, dtype)
    return datasets.prepare_dataset(request, batches, verify)


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """An empty prepared root of this test, and no arrays mapped by earlier tests: a new process."""
    folder = tmp_path / "prepared"
    monkeypatch.setenv(prepared.ENV_VAR, str(folder))
    monkeypatch.setattr(prepared, "_MAPPED", {})
    return folder


@pytest.fixture
def synthetic(tmp_path) -> Path:
    """Three training batches of 60 images and a test batch of 40, random pixels."""
    rng = np.random.RandomState(7)
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for name, n in [("data_batch_1", 60), ("data_batch_2", 60), ("data_batch_3", 60), ("test_batch", 40)]:
        write_batch(batches / name, rng.randint(0, 256, size=(n, 3072)).astype(np.uint8), rng.randint(10, size=n))
    return batches


def in_memory(batches: Path, num_train: int, num_val: int, num_test: int, dtype) -> dict[str, np.ndarray]:
    """The splits as bnlab computed them before prepared files: the whole pool in memory, the mean
    image in float64, one float64 copy of every split cast to dtype."""
    parts = []
    for name in sorted(p.name for p in batches.glob("data_batch_*")):
        with open(batches / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        parts.append((batch["data"], np.asarray(batch["labels"])))
    pool_x = np.concatenate([x for x, _ in parts])
    pool_y = np.concatenate([y for _, y in parts])
    with open(batches / "test_batch", "rb") as f:
        test = pickle.load(f, encoding="latin1")
    mean_image = np.mean(pool_x[: len(pool_x) - num_val], axis=0, dtype=np.float64)

    def preprocess(rows):
        return (rows.astype(np.float64) - mean_image).reshape(-1, 3, 32, 32).astype(dtype)

    return {
        "X_train": preprocess(pool_x[:num_train]),
        "y_train": pool_y[:num_train],
        "X_val": preprocess(pool_x[-num_val:]),
        "y_val": pool_y[-num_val:],
        "X_test": preprocess(test["data"][:num_test]),
        "y_test": np.asarray(test["labels"])[:num_test],
    }


def folders(root: Path) -> list[Path]:
    """Every folder in root, hidden ones (staging, trash) included, but the remembered source hashes."""
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name != prepared.SOURCES)


def assert_same_bytes(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for key in expected:
        assert got[key].shape == expected[key].shape, key
        assert got[key].dtype == expected[key].dtype, key
        assert got[key].tobytes() == expected[key].tobytes(), key


# --- the same bytes ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prepared_arrays_equal_preprocessing_in_memory(root, dtype, monkeypatch):
    # Chunks of 7 images: the 4,000 training images span many chunks and end with a partial one.
    monkeypatch.setattr(data, "PREPROCESS_ROWS", 7)
    loaded = datasets.load_cifar10(SHARED, num_train=4000, num_val=1000, num_test=999, dtype=dtype)
    assert_same_bytes(loaded, in_memory(SHARED_BATCHES, 4000, 1000, 999, dtype))
    for array in loaded.values():
        assert type(array) is np.ndarray and not array.flags.writeable
    assert len(list(root.glob("cifar10-*/X_train.npy"))) == 1


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux's /proc/self/maps lists mapped files")
def test_the_arrays_are_maps_of_the_prepared_files_not_copies(root):
    loaded = datasets.load_cifar10(SHARED, num_train=1000, num_val=1000, num_test=10)
    folder = prepare_cifar10(SHARED, num_train=1000, num_val=1000, num_test=10).path
    mapped = Path("/proc/self/maps").read_text()
    for name in ("X_train", "X_val", "X_test"):
        assert str(folder / f"{name}.npy") in mapped
        assert not loaded[name].flags.owndata  # a view of the map, no memory of its own


def test_a_run_trains_the_same_on_prepared_and_in_memory_data(root):
    config = {
        "seed": 3,
        "model": {"hidden_dims": [20, 20], "weight_scale": 2e-2, "normalization": "batchnorm", "dtype": "float32"},
        "solver": {"update_rule": "adam", "optim_config": {"learning_rate": 1e-3}, "batch_size": 50, "num_epochs": 2},
    }
    from_file = train_run("a", config, datasets.load_cifar10(SHARED, 200, 100, 100))
    from_memory = train_run("a", config, in_memory(SHARED_BATCHES, 200, 100, 100, np.float32))
    assert from_file.status == "done" and from_file.error is None
    assert from_file.losses == from_memory.losses
    assert (from_file.train_acc, from_file.val_acc) == (from_memory.train_acc, from_memory.val_acc)


def test_no_test_images(root, synthetic):
    loaded = datasets.load_cifar10(synthetic, num_train=10, num_val=10, num_test=0)
    assert loaded["X_test"].shape == (0, 3, 32, 32) and loaded["y_test"].shape == (0,)


# --- keyed by sources and options --------------------------------------------------------------


def test_a_changed_source_file_is_prepared_anew(root, synthetic):
    first = prepare_cifar10(synthetic, **SPLITS)
    assert first.built
    # Rewritten with the same content (a new mtime): still the same data, nothing to prepare.
    (synthetic / "data_batch_2").write_bytes((synthetic / "data_batch_2").read_bytes())
    assert prepare_cifar10(synthetic, **SPLITS).path == first.path
    # One pixel changed in the last training batch: a new mean image, new bytes everywhere.
    with open(synthetic / "data_batch_3", "rb") as f:
        batch = pickle.load(f)
    batch["data"][0, 0] ^= 1
    write_batch(synthetic / "data_batch_3", batch["data"], batch["labels"])
    second = prepare_cifar10(synthetic, **SPLITS)
    assert second.built and second.path != first.path
    assert_same_bytes(second.arrays, in_memory(synthetic, *SPLITS.values(), np.float32))
    assert first.arrays["X_train"].tobytes() != second.arrays["X_train"].tobytes()


def test_source_hashes_are_remembered_by_file_identity(root, synthetic):
    prepare_cifar10(synthetic, **SPLITS)
    remembered = sorted(p.read_text() for p in (root / prepared.SOURCES).iterdir())
    assert remembered == sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in synthetic.iterdir())
    # A remembered hash that is not one (a damaged cache) is not believed.
    for memo in (root / prepared.SOURCES).iterdir():
        memo.write_text("garbage")
    assert not prepare_cifar10(synthetic, **SPLITS).built


@pytest.mark.parametrize(
    "change",
    [{"dtype": np.float64}, {"num_val": 49}, {"num_train": 99}, {"num_test": 29}, {"preprocess_version": 2}],
)
def test_a_changed_preprocessing_option_is_prepared_anew(root, synthetic, monkeypatch, change):
    first, version = prepare_cifar10(synthetic, **SPLITS), data.PREPROCESS_VERSION
    if "preprocess_version" in change:
        monkeypatch.setattr(data, "PREPROCESS_VERSION", change.pop("preprocess_version"))
    second = prepare_cifar10(synthetic, **{**SPLITS, **change})
    assert second.built and second.path != first.path
    assert len(folders(root)) == 2
    monkeypatch.setattr(data, "PREPROCESS_VERSION", version)
    assert prepare_cifar10(synthetic, **SPLITS).path == first.path  # the first is still there


def test_the_same_data_elsewhere_is_not_prepared_again(root, synthetic, tmp_path):
    copy = tmp_path / "copy" / "cifar-10-batches-py"
    copy.mkdir(parents=True)
    for path in synthetic.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert prepare_cifar10(synthetic, **SPLITS).built
    assert not prepare_cifar10(copy, **SPLITS).built


# --- several processes at once -------------------------------------------------------------------


def _prepare_in_a_process(batches: str, start, built_flags, index: int) -> None:
    """Wait for the other process, then prepare; the build is slowed down so the two overlap."""
    real_build = data._build

    def slow_build(*args):
        time.sleep(0.5)
        return real_build(*args)

    data._build = slow_build
    start.wait()
    result = prepare_cifar10(batches, **SPLITS)
    built_flags[index] = int(result.built)
    assert result.arrays["X_train"].shape == (SPLITS["num_train"], 3, 32, 32)


def test_two_processes_preparing_at_once_prepare_once(root, synthetic):
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    built = context.Array("i", [-1, -1])
    processes = [
        context.Process(target=_prepare_in_a_process, args=(str(synthetic), start, built, i)) for i in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0]
    assert sorted(built) == [0, 1]  # one built it, the other waited and mapped it
    assert folders(root) == [prepare_cifar10(synthetic, **SPLITS).path]  # and no staging folder left
    assert_same_bytes(datasets.load_cifar10(synthetic, **SPLITS), in_memory(synthetic, *SPLITS.values(), np.float32))


# --- damaged copies --------------------------------------------------------------------------


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        os.truncate(path, path.stat().st_size - 100)
    elif how == "corrupt":
        with open(path, "r+b") as f:
            f.seek(path.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
    else:
        (path.parent / "manifest.json").unlink()


@pytest.mark.parametrize(("how", "verify"), [("truncated", False), ("corrupt", True), ("incomplete", False)])
def test_a_damaged_prepared_file_is_rebuilt_with_a_notice(root, synthetic, monkeypatch, how, verify):
    first = prepare_cifar10(synthetic, **SPLITS)
    del first
    monkeypatch.setattr(prepared, "_MAPPED", {})  # as a new process would
    damage(next(root.glob("cifar10-*/X_train.npy")), how)
    again = prepare_cifar10(synthetic, **SPLITS, verify=verify)
    assert again.built
    assert again.notice is not None and "\n" not in again.notice
    assert how in again.notice and str(again.path) in again.notice and "rebuilt" in again.notice
    assert_same_bytes(again.arrays, in_memory(synthetic, *SPLITS.values(), np.float32))
    assert prepare_cifar10(synthetic, **SPLITS).notice is None


def test_what_a_killed_preparation_left_is_removed(root, synthetic):
    name = prepare_cifar10(synthetic, **SPLITS).path.name
    for folder in folders(root):
        prepared._discard(folder)
    leftover = root / f".{name}.k1ll3d"  # a staging folder of a process killed while writing
    leftover.mkdir()
    (leftover / "X_train.npy").write_bytes(b"half")
    assert prepare_cifar10(synthetic, **SPLITS).built
    assert [folder.name for folder in folders(root)] == [name]


def test_without_verify_a_flipped_byte_goes_unchecked_but_verify_catches_it(root, synthetic, monkeypatch):
    # Workers skip the checksum (the parent verified just before): only sizes, shapes and dtypes.
    prepare_cifar10(synthetic, **SPLITS)
    monkeypatch.setattr(prepared, "_MAPPED", {})
    damage(next(root.glob("cifar10-*/X_val.npy")), "corrupt")
    assert not prepare_cifar10(synthetic, **SPLITS, verify=False).built
    assert prepare_cifar10(synthetic, **SPLITS, verify=True).built


def test_list_and_clear(root, synthetic):
    assert prepared.list_prepared() == [] and prepared.clear_prepared() == (0, 0)
    first = prepare_cifar10(synthetic, **SPLITS)
    prepare_cifar10(synthetic, **{**SPLITS, "dtype": np.float64})
    listed = prepared.list_prepared()
    assert [entry["dataset"] for entry in listed] == ["cifar10", "cifar10"]
    assert {entry["arrays"]["X_train"] for entry in listed} == {(SPLITS["num_train"], 3, 32, 32)}
    sizes = sorted(entry["bytes"] for entry in listed)
    assert sizes[1] > 1.9 * sizes[0]  # float64 is twice float32 (the labels are the same)
    assert sum(sizes) == sum(p.stat().st_size for p in root.rglob("*.npy")) + sum(
        p.stat().st_size for p in root.rglob("manifest.json")
    )
    assert prepared.clear_prepared() == (2, sum(sizes))
    assert prepared.list_prepared() == [] and folders(root) == []
    # Arrays mapped before the clear stay readable: the pages live until the last map goes.
    expected = in_memory(synthetic, *SPLITS.values(), np.float32)
    assert first.arrays["X_train"].tobytes() == expected["X_train"].tobytes()


# --- the command line ----------------------------------------------------------------------


def test_run_prepares_once_and_says_when_it_rebuilt(root, tmp_path):
    smoke = ROOT / "configs" / "smoke.yaml"
    common = ["--data-dir", SHARED, "--workers", 1, "--set", "solver.num_epochs=1", "--out"]
    first = bnlab("run", smoke, *common, tmp_path / "a")
    assert first.exit_code == 0, first.output
    assert "rebuilt" not in first.output
    (folder,) = folders(root)
    assert re.search(r"cifar10\W+200\W+100\W+100\W+float32", bnlab("data", "--data-dir", SHARED).output)
    listed = json.loads(bnlab("data", "--data-dir", SHARED, "--json").output)["prepared"]
    assert listed["root"] == str(root) and [entry["path"] for entry in listed["sets"]] == [str(folder)]
    prepared._MAPPED.clear()
    damage(folder / "X_train.npy", "corrupt")
    again = bnlab("run", smoke, *common, tmp_path / "b")
    assert again.exit_code == 0, again.output
    notes = [line for line in again.output.splitlines() if "rebuilt" in line]
    assert len(notes) == 1 and "corrupt" in notes[0] and "Traceback" not in again.output
    assert (tmp_path / "a" / "smoke" / "runs.csv").read_text().split("wall_s")[0] == (
        tmp_path / "b" / "smoke" / "runs.csv"
    ).read_text().split("wall_s")[0]
    cleared = bnlab("data", "--clear")
    assert cleared.exit_code == 0 and "deleted 1 prepared data set" in cleared.output
    assert folders(root) == [] and "nothing prepared" in bnlab("data", "--data-dir", SHARED).output
