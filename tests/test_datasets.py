"""The datasets registry: MNIST-format loaders on the shared subset and on files written here in the
official format (official sizes included), preprocessing, every bad-data case, downloads through a
patched pooch (never the network), and specs naming a data set."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pooch
import pytest
import reference_hashes
import yaml
from typer.testing import CliRunner

from bnlab.cli import app
from bnlab.data import cifar10 as data
from bnlab.data import datasets
from bnlab.errors import DataError, SpecError
from bnlab.spec.experiment import load_experiment

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
SMOKE = ROOT / "configs" / "smoke.yaml"
FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


def decode_idx(path: Path) -> np.ndarray:
    """Independent decode: the official layout has a 16-byte image header, an 8-byte label header."""
    raw = gzip.open(path).read()
    if raw[2:4] == b"\x08\x03":
        n, rows, cols = struct.unpack(">3i", raw[4:16])
        return np.array(list(raw[16:]), dtype=np.uint8).reshape(n, rows, cols)
    (n,) = struct.unpack(">i", raw[4:8])
    return np.array(list(raw[8:]), dtype=np.uint8)


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, level: int = 1) -> None:
    """array (uint8) as a gzip'd IDX file: magic (2051 images, 2049 labels), dims, values."""
    magic = magic if magic is not None else (2051 if array.ndim == 3 else 2049)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb", compresslevel=level) as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_set(folder: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("BNLAB_DATA_DIR", raising=False)
    monkeypatch.setattr(data.platformdirs, "user_cache_dir", lambda appname: str(tmp_path / "cache" / appname))
    return tmp_path / "cache" / "bnlab"


# --- the shared MNIST subset -------------------------------------------------------------------


def test_shared_mnist_splits_and_scale_match_an_independent_decode():
    loaded = datasets.load_dataset(datasets.Request("mnist", num_train=3000, num_val=1000, num_test=1000), SHARED)
    images, labels = decode_idx(SHARED / "mnist" / FILES[0]), decode_idx(SHARED / "mnist" / FILES[1])
    test_images, test_labels = decode_idx(SHARED / "mnist" / FILES[2]), decode_idx(SHARED / "mnist" / FILES[3])
    assert len(images) == 4000 and len(test_images) == 1000  # the subset's README
    assert np.bincount(labels).tolist() == [400] * 10
    assert loaded["X_train"].shape == (3000, 1, 28, 28) and loaded["X_train"].dtype == np.float32
    np.testing.assert_array_equal(loaded["X_train"][:, 0], (images[:3000] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(loaded["X_val"][:, 0], (images[3000:] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(loaded["X_test"][:, 0], (test_images / 255.0).astype(np.float32))
    assert loaded["y_train"].tolist() == labels[:3000].tolist() and loaded["y_val"].tolist() == labels[3000:].tolist()
    assert loaded["y_test"].tolist() == test_labels.tolist()
    assert 0 <= loaded["X_train"].min() and loaded["X_train"].max() <= 1
    assert not loaded["X_train"].flags.writeable


def test_mean_image_and_standardize_use_the_pool_without_validation():
    images = decode_idx(SHARED / "mnist" / FILES[0]).astype(np.float64)
    fit = images[:3500]  # num_val = 500: the last 500 are validation, left out of the statistics
    mean_img = datasets.load_dataset(datasets.Request("mnist", 100, 500, 10, np.float64, "mean_image"), SHARED)
    np.testing.assert_allclose(mean_img["X_train"][:, 0], images[:100] - fit.mean(axis=0), atol=1e-12)
    std = datasets.load_dataset(datasets.Request("mnist", 100, 500, 10, np.float64, "standardize"), SHARED)
    np.testing.assert_allclose(std["X_val"][:, 0], (images[3500:] - fit.mean()) / fit.std(), rtol=1e-10)


def test_cifar10_standardize_is_per_channel_over_the_pool():
    loaded = datasets.load_dataset(datasets.Request("cifar10", 200, 100, 10, np.float64, "standardize"), SHARED)
    pool = np.concatenate(
        [data._read_batch(SHARED / "cifar-10-batches-py" / f"data_batch_{i}")[0] for i in range(1, 6)]
    )
    fit = pool[: len(pool) - 100].reshape(-1, 3, 32, 32).astype(np.float64)
    mean, std = fit.mean(axis=(0, 2, 3)), fit.std(axis=(0, 2, 3))
    expected = (fit[:200] - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(loaded["X_train"], expected, rtol=1e-9, atol=1e-12)
    assert np.all(np.abs(loaded["X_train"].mean(axis=(0, 2, 3))) < 0.2)


def test_cifar10_default_is_the_notebooks_mean_image_bit_for_bit():
    assert datasets.load_dataset(datasets.Request("cifar10", 200, 100, 50), SHARED)["X_train"].tobytes() == (
        datasets.load_cifar10(SHARED, 200, 100, 50)["X_train"].tobytes()
    )
    loaded = datasets.load_dataset(datasets.Request("cifar10", 200, 100, 50, np.float64), SHARED)
    pool = np.concatenate(
        [data._read_batch(SHARED / "cifar-10-batches-py" / f"data_batch_{i}")[0] for i in range(1, 6)]
    )
    mean = pool[: len(pool) - 100].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(loaded["X_train"].reshape(200, -1), pool[:200] - mean, atol=1e-9)


# --- Fashion-MNIST and MNIST on files written here ---------------------------------------------


def test_fashion_mnist_loads_written_files(tmp_path):
    arrays = write_set(tmp_path / "fashion-mnist", 30, 7)
    loaded = datasets.load_dataset(datasets.Request("fashion_mnist", num_train=20, num_val=10, num_test=7), tmp_path)
    np.testing.assert_array_equal(loaded["X_train"][:, 0], (arrays[FILES[0]][:20] / 255.0).astype(np.float32))
    assert loaded["y_val"].tolist() == arrays[FILES[1]][20:].tolist()
    assert loaded["X_test"].shape == (7, 1, 28, 28)
    assert datasets.counts("fashion_mnist", tmp_path) == (30, 7)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_official_sizes_are_read_from_the_headers(tmp_path, name):
    folder = tmp_path / datasets.DATASETS[name].folder
    folder.mkdir()
    write_idx(folder / FILES[0], np.zeros((60_000, 28, 28), np.uint8))
    write_idx(folder / FILES[1], (np.arange(60_000) % 10).astype(np.uint8))
    write_idx(folder / FILES[2], np.full((10_000, 28, 28), 255, np.uint8))
    write_idx(folder / FILES[3], (np.arange(10_000) % 10).astype(np.uint8))
    assert datasets.counts(name, tmp_path) == (60_000, 10_000)
    loaded = datasets.load_dataset(datasets.Request(name, num_train=59_000, num_val=1_000, num_test=10_000), tmp_path)
    assert loaded["X_train"].shape == (59_000, 1, 28, 28) and loaded["X_test"].shape == (10_000, 1, 28, 28)
    assert loaded["X_test"].min() == 1.0 and loaded["X_train"].max() == 0.0
    assert loaded["y_val"].tolist() == [i % 10 for i in range(59_000, 60_000)]


def test_the_folder_itself_may_be_named(tmp_path):
    write_set(tmp_path / "anything", 12, 3)
    assert datasets.locate("mnist", tmp_path / "anything") == tmp_path / "anything"
    loaded = datasets.load_dataset(datasets.Request("mnist", 10, 2, 3), tmp_path / "anything")
    assert loaded["X_train"].shape == (10, 1, 28, 28)


# --- bad data: one clear message each -----------------------------------------------------------


def corrupt(folder: Path, how: str) -> str:
    """Damage the written set one way; returns a phrase the message must contain."""
    images = folder / FILES[0]
    if how == "truncated gzip":
        images.write_bytes(images.read_bytes()[:-200])
        return "truncated or not gzip'd"
    if how == "not gzip":
        images.write_bytes(b"these bytes are not a gzip stream at all")
        return "truncated or not gzip'd"
    if how == "truncated idx payload":
        raw = gzip.open(images).read()
        with gzip.open(images, "wb") as f:
            f.write(raw[:-5])
        return "is truncated: its header announces shape (30, 28, 28)"
    if how == "truncated idx header":
        with gzip.open(images, "wb") as f:
            f.write(struct.pack(">I", 2051) + b"\x00\x00")
        return "truncated inside its header"
    if how == "wrong magic":
        write_idx(images, np.zeros((30, 28, 28), np.uint8), magic=2049 + 3 * 256)
        return "magic number 2817, expected 2051"
    if how == "labels for images":
        write_idx(folder / FILES[1], np.zeros((30, 28, 28), np.uint8))
        return "magic number 2051, expected 2049"
    if how == "counts disagree":
        write_idx(folder / FILES[1], np.zeros(29, np.uint8))
        return "holds 30 images but train-labels-idx1-ubyte.gz 29 labels"
    if how == "label out of range":
        write_idx(folder / FILES[3], np.full(7, 10, np.uint8))
        return "has label 10, expected 0..9"
    raise AssertionError(how)


BAD = ["truncated gzip", "not gzip", "truncated idx payload", "truncated idx header", "wrong magic",
       "labels for images", "counts disagree", "label out of range"]  # fmt: skip


@pytest.mark.parametrize("how", BAD)
def test_bad_files_give_one_data_error(tmp_path, how):
    write_set(tmp_path / "mnist", 30, 7)
    phrase = corrupt(tmp_path / "mnist", how)
    with pytest.raises(DataError) as error:
        datasets.load_dataset(datasets.Request("mnist", 20, 10, 7), tmp_path)
    assert phrase in str(error.value)


@pytest.mark.parametrize("how", BAD)
def test_bad_files_through_the_cli(tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    write_set(tmp_path / "data" / "fashion-mnist", 30, 7)
    phrase = corrupt(tmp_path / "data" / "fashion-mnist", how)
    args = ["run", str(SMOKE), "--set", "data.dataset=fashion_mnist", "--set", "data.num_train=20",
            "--set", "data.num_val=10", "--set", "data.num_test=7", "--data-dir", str(tmp_path / "data")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and result.stderr.count("error:") == 1
    assert phrase in " ".join(result.stderr.split())
    assert not (tmp_path / "results").exists()


def test_a_missing_file_names_the_folder_and_the_file(tmp_path, monkeypatch):
    write_set(tmp_path / "mnist", 30, 7)
    (tmp_path / "mnist" / FILES[3]).unlink()
    with pytest.raises(DataError) as error:
        datasets.load_dataset(datasets.Request("mnist", 20, 10, 7), tmp_path)
    message = str(error.value)
    assert str(tmp_path / "mnist") in message and FILES[3] in message and FILES[0] not in message.split("lacks")[1]
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(SMOKE), "--set", "data.dataset=mnist", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert FILES[3] in result.stderr and "--data-dir" in result.stderr


def test_splits_larger_than_the_files(tmp_path):
    write_set(tmp_path / "mnist", 30, 7)
    with pytest.raises(DataError, match="holds only 30 training images"):
        datasets.load_dataset(datasets.Request("mnist", 25, 10, 7), tmp_path)
    with pytest.raises(DataError, match="holds only 7 test images"):
        datasets.load_dataset(datasets.Request("mnist", 20, 10, 8), tmp_path)


def test_an_unknown_dataset_name():
    with pytest.raises(DataError, match="did you mean 'fashion_mnist'"):
        datasets.get("fashion-mnist")
    with pytest.raises(SpecError) as error:
        load_experiment(SMOKE, ["data.dataset=mnst"])
    assert "data.dataset" in str(error.value) and "did you mean 'mnist'" in str(error.value)
    result = CliRunner().invoke(app, ["plan", str(SMOKE), "--set", "data.dataset=cifar100"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cifar100" in result.stderr and "cifar10, mnist, fashion_mnist" in result.stderr


# --- downloads, through a pooch that never touches the network ----------------------------------


def test_download_fetches_each_file_with_its_checksum(tmp_path, monkeypatch, no_env):
    source = tmp_path / "source"
    arrays = write_set(source, 12, 3)
    calls = []

    def fake_retrieve(url, known_hash, fname, path, downloader):
        calls.append((url, known_hash, fname, Path(path)))
        Path(path).mkdir(parents=True, exist_ok=True)
        payload = (source / fname).read_bytes()
        (Path(path) / fname).write_bytes(payload)
        return str(Path(path) / fname)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    folder = datasets.ensure("fashion_mnist", allow_download=True)
    assert folder == no_env / "fashion-mnist"
    dataset = datasets.DATASETS["fashion_mnist"]
    assert [c[2] for c in calls] == FILES
    assert all(url == dataset.base_url + name and known == dataset.checksums[name] for url, known, name, _ in calls)
    loaded = datasets.load_dataset(datasets.Request("fashion_mnist", 10, 2, 3), None)
    assert loaded["y_train"].tolist() == arrays[FILES[1]][:10].tolist()
    datasets.ensure("fashion_mnist", allow_download=True)
    assert len(calls) == 4  # present files are not fetched again


def test_published_checksums_are_md5s_of_distinct_files():
    for name in ("mnist", "fashion_mnist"):
        sums = datasets.DATASETS[name].checksums
        assert sorted(sums) == sorted(FILES)
        assert all(s.startswith("md5:") and len(s) == 36 for s in sums.values()) and len(set(sums.values())) == 4


def test_a_checksum_mismatch_or_no_network_is_one_message(monkeypatch, no_env):
    def mismatch(url, known_hash, fname, path, downloader):
        raise ValueError(f"{known_hash.split(':')[0].upper()} hash of downloaded file does not match the known hash")

    monkeypatch.setattr(pooch, "retrieve", mismatch)
    with pytest.raises(DataError) as error:
        datasets.ensure("mnist", allow_download=True)
    assert "does not match" in str(error.value) and str(no_env / "mnist") in str(error.value)

    def offline(url, known_hash, fname, path, downloader):
        raise ConnectionError("no network in tests")

    monkeypatch.setattr(pooch, "retrieve", offline)
    result = CliRunner().invoke(app, ["run", str(SMOKE), "--set", "data.dataset=mnist", "--out", str(no_env.parent)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert "cannot download" in message and "Put the four official files in" in message
    assert str(no_env / "mnist") in message


def test_a_named_folder_without_the_files_is_not_downloaded_into(tmp_path, monkeypatch):
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: pytest.fail("must not download"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(SMOKE), "--set", "data.dataset=mnist", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "mnist not found" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- specs ---------------------------------------------------------------------------------------


def test_existing_configs_keep_their_run_configs():
    """The new keys stay out of runs that use their defaults: results made before them still match
    (a config that sets a preprocessing itself, as ws_depth.yaml does, keeps it)."""
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        chosen = "preprocess" in (yaml.safe_load(path.read_text()).get("data") or {})
        for run in load_experiment(path).runs:
            if run.config["data"]["dataset"] == "cifar10":
                assert ("preprocess" in run.config["data"]) == chosen, path
            if run.config["model"]["architecture"] == "fc" or path.stem != "lenet_bn":
                assert "pool" not in run.config["model"] and "padding" not in run.config["model"], path


def test_smoke_results_are_byte_identical_to_before_the_registry_but_for_the_kernels(tmp_path):
    """sha256 of each run's history.csv and epochs.csv of configs/smoke.yaml, made with the code before
    data.dataset and data.preprocess existed (commit 4eb2948, OPENBLAS_CORETYPE=Haswell). One file
    moved since, on purpose: batchnorm seed 0's epochs.csv, once batch norm's compiled kernels
    (bnlab.nn.kernels, KERNELS_VERSION 1) summed the variance in float64, which rounds the running
    variance, and so an eval-mode accuracy, differently (was e4949d075cf0c4ea)."""
    before = {
        "normalization=none__seed=0": ("3ae22b632b52a4fc", "aa51156687acf118"),
        "normalization=none__seed=1": ("618a6df93f4c736c", "b9e1ca44c9d81a96"),
        "normalization=batchnorm__seed=0": ("14f1980d1f9adc98", "70f67d541451b8e5"),
        "normalization=batchnorm__seed=1": ("8cdb8ab708d8d120", "53c075a7328d9420"),
    }
    # in a fresh process with portable numerics, whatever kernels this test session runs on
    smoke = reference_hashes.run_smoke(tmp_path, BNLAB_BLAS=None, OPENBLAS_CORETYPE=None, BNLAB_DATA_DIR=str(SHARED))
    for run_id, (history, epochs) in before.items():
        folder = smoke / run_id
        assert hashlib.sha256((folder / "history.csv").read_bytes()).hexdigest()[:16] == history
        assert hashlib.sha256((folder / "epochs.csv").read_bytes()).hexdigest()[:16] == epochs


def test_dataset_and_preprocess_are_sweepable():
    experiment = load_experiment(SMOKE, ["seeds=1"])
    text = SMOKE.read_text().replace(
        "sweep:\n", "sweep:\n  data.dataset: [cifar10, mnist]\n  data.preprocess: [null, standardize]\n"
    )
    from bnlab.spec.experiment import experiment_from_text

    experiment = experiment_from_text(text, "swept.yaml", ["seeds=1"])
    datas = {(r.config["data"]["dataset"], r.config["data"].get("preprocess")) for r in experiment.runs}
    assert datas == {("cifar10", None), ("cifar10", "standardize"), ("mnist", None), ("mnist", "standardize")}
    with pytest.raises(SpecError, match="data.preprocess"):
        load_experiment(SMOKE, ["data.preprocess=normalize"])


def test_conv_blocks_must_fit_the_data_sets_images():
    lenet = ROOT / "configs" / "lenet_bn.yaml"
    assert load_experiment(lenet).runs[0].config["model"]["pool"] == "avg"
    with pytest.raises(SpecError, match="leave nothing of mnist's 28x28 images"):
        load_experiment(lenet, ["model.channels=[6, 16, 32]"])
    load_experiment(lenet, ["model.channels=[6, 16, 32]", "model.padding=same"])  # 28 -> 14 -> 7 -> 3
