"""CIFAR-10 locating, downloading (from local archives only: file:// URLs are served by a stand-in for
pooch's HTTP downloader that reports progress through the same progress-bar protocol) and loading."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import socket
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import platformdirs
import pytest
from conftest import SHARED_DATA, needs_shared_data, write_batch

from bnlab.data import cifar10 as data
from bnlab.data import datasets
from bnlab.errors import DataError

SHARED = SHARED_DATA
SHARED_BATCHES = SHARED / "cifar-10-batches-py"

# Tiny training batches of different sizes; "10" sorts before "2" as text, not as a number.
SYNTHETIC_BATCHES = {"data_batch_1": 7, "data_batch_2": 5, "data_batch_10": 6}
SYNTHETIC_POOL_ORDER = ["data_batch_1", "data_batch_2", "data_batch_10"]
SYNTHETIC_TEST = 5


def raw_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    return np.asarray(batch["data"]), np.asarray(batch["labels"])


def raw_pool(batches: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    parts = [raw_batch(batches / name) for name in names]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def decode(rows: np.ndarray) -> np.ndarray:
    """Independent decode, pixel by pixel: value (c, r, col) sits at c*1024 + r*32 + col of a row."""
    images = np.empty((len(rows), 3, 32, 32), np.float64)
    for c in range(3):
        for r in range(32):
            images[:, c, r, :] = rows[:, c * 1024 + r * 32 : c * 1024 + r * 32 + 32]
    return images


def tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> str:
    """Write a .tar.gz of the given members; returns its md5."""
    with tarfile.open(path, "w:gz") as tar:
        for info, payload in members:
            tar.addfile(info, None if payload is None else io.BytesIO(payload))
    return hashlib.md5(path.read_bytes()).hexdigest()


def file_member(name: str, payload: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


@pytest.fixture(autouse=True)
def file_urls(monkeypatch: pytest.MonkeyPatch):
    """file:// URLs are copied in chunks, driving data._ProgressBar as pooch.HTTPDownloader does
    (total, chunk updates that may overshoot, reset, the total); other URLs go to pooch."""
    fetch = data._fetch

    def local_or_pooch(url: str, path: Path, timeout: float, progress) -> None:
        if not url.startswith("file://"):
            return fetch(url, path, timeout, progress)
        payload = Path(urllib.request.url2pathname(url.removeprefix("file://"))).read_bytes()
        bar = data._ProgressBar(progress)
        bar.total = len(payload)
        for start in range(0, len(payload), 1024):
            path.write_bytes(payload[: start + 1024])
            bar.update(1024)
        bar.reset()
        bar.update(len(payload))
        bar.close()

    monkeypatch.setattr(data, "_fetch", local_or_pooch)


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    """A cifar-10-batches-py folder in the official format, with tiny batches of different sizes."""
    batches = tmp_path / "made" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*SYNTHETIC_BATCHES.items(), ("test_batch", SYNTHETIC_TEST)]:
        write_batch(batches / name, rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n))
    return batches


@pytest.fixture
def archive(synthetic: Path, tmp_path: Path) -> tuple[str, str, int]:
    """The synthetic folder as a .tar.gz: (file:// url, md5, size in bytes)."""
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(synthetic, arcname="cifar-10-batches-py")
    return path.as_uri(), hashlib.md5(path.read_bytes()).hexdigest(), path.stat().st_size


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No BNLAB_DATA_DIR, and a user cache dir inside tmp_path (returned)."""
    cache = tmp_path / "user-cache"
    monkeypatch.delenv("BNLAB_DATA_DIR", raising=False)
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda appname: str(cache / appname))
    return cache / "bnlab"


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


# --- the shared copy of the real data ----------------------------------------------------------


@needs_shared_data
def test_shared_splits_match_an_independent_decode():
    loaded = datasets.load_cifar10(SHARED, num_train=1000, num_val=1000, num_test=1000)
    pool_x, pool_y = raw_pool(SHARED_BATCHES, [f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = raw_batch(SHARED_BATCHES / "test_batch")
    assert len(pool_x) == 5000
    images = decode(pool_x)
    mean_image = images[: 5000 - 1000].mean(axis=0)  # the pool without the validation images

    for split in ("train", "val", "test"):
        assert loaded[f"X_{split}"].shape == (1000, 3, 32, 32)
        assert loaded[f"X_{split}"].dtype == np.float32
        assert loaded[f"y_{split}"].shape == (1000,)
        assert loaded[f"y_{split}"].dtype == np.int64
    np.testing.assert_array_equal(loaded["X_train"], (images[:1000] - mean_image).astype(np.float32))
    np.testing.assert_array_equal(loaded["X_val"], (images[4000:] - mean_image).astype(np.float32))
    np.testing.assert_array_equal(loaded["X_test"], (decode(test_x[:1000]) - mean_image).astype(np.float32))
    np.testing.assert_array_equal(loaded["y_train"], pool_y[:1000])
    np.testing.assert_array_equal(loaded["y_val"], pool_y[4000:])
    np.testing.assert_array_equal(loaded["y_test"], test_y[:1000])


@needs_shared_data
def test_shared_one_pixel_by_hand():
    loaded = datasets.load_cifar10(SHARED, num_train=1000, num_val=1000, num_test=1000, dtype=np.float64)
    pool_x, _ = raw_pool(SHARED_BATCHES, [f"data_batch_{i}" for i in range(1, 6)])
    # Image 3, blue channel, row 5, column 17: the row's byte 2*1024 + 5*32 + 17.
    column = pool_x[:4000, 2 * 1024 + 5 * 32 + 17].astype(np.float64)
    assert loaded["X_train"].dtype == np.float64
    assert loaded["X_train"][3, 2, 5, 17] == pytest.approx(column[3] - column.mean(), abs=1e-12)


@needs_shared_data
def test_shared_arrays_are_read_only_and_memoized():
    first = datasets.load_cifar10(SHARED, num_train=1000, num_val=1000, num_test=1000)
    again = datasets.load_cifar10(SHARED_BATCHES, num_train=1000, num_val=1000, num_test=1000)
    for key, array in first.items():
        assert again[key] is array
        with pytest.raises(ValueError):
            array[0] = 0


@needs_shared_data
@pytest.mark.parametrize(
    ("sizes", "available"),
    [((4500, 1000, 10), "5000"), ((100, 100, 1001), "1000"), ((0, 10, 10), "num_train")],
)
def test_shared_impossible_sizes(sizes, available):
    num_train, num_val, num_test = sizes
    with pytest.raises(DataError, match=available):
        datasets.load_cifar10(SHARED, num_train=num_train, num_val=num_val, num_test=num_test)


@needs_shared_data
def test_describe_shared():
    report = data.describe_cifar10(SHARED)
    assert report["found"] == str(SHARED_BATCHES)
    assert (report["num_train"], report["num_test"], report["problem"]) == (5000, 1000, None)
    assert [b["file"] for b in report["batches"]] == [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    assert all(b["images"] == 1000 for b in report["batches"])
    assert report["batches"][0]["bytes"] == (SHARED_BATCHES / "data_batch_1").stat().st_size


# --- a synthetic archive, downloaded through file:// URLs ---------------------------------------


def test_download_extracts_and_loads(tmp_path, archive, no_env):
    url, md5, size = archive
    calls = []
    dest = tmp_path / "data"
    batches = data.ensure_cifar10(dest, download=True, url=url, md5=md5, progress=lambda *a: calls.append(a))
    assert batches == dest / "cifar-10-batches-py"
    assert sorted(p.name for p in dest.iterdir()) == ["cifar-10-batches-py"]  # no temporary left
    assert calls[-1] == (size, size)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)

    loaded = datasets.load_cifar10(dest, num_train=9, num_val=8, num_test=4)
    pool_x, pool_y = raw_pool(batches, SYNTHETIC_POOL_ORDER)
    test_x, test_y = raw_batch(batches / "test_batch")
    assert len(pool_x) == 18
    images = decode(pool_x)
    mean_image = images[:10].mean(axis=0)
    np.testing.assert_array_equal(loaded["X_train"], (images[:9] - mean_image).astype(np.float32))
    np.testing.assert_array_equal(loaded["X_val"], (images[10:] - mean_image).astype(np.float32))
    np.testing.assert_array_equal(loaded["X_test"], (decode(test_x[:4]) - mean_image).astype(np.float32))
    np.testing.assert_array_equal(loaded["y_train"], pool_y[:9])
    np.testing.assert_array_equal(loaded["y_val"], pool_y[10:])
    np.testing.assert_array_equal(loaded["y_test"], test_y[:4])
    assert data.ensure_cifar10(dest, download=True, url="http://127.0.0.1:1/never-used") == batches


def test_download_into_a_batches_folder_path_lands_there(tmp_path, archive):
    url, md5, _ = archive
    wanted = tmp_path / "somewhere" / "cifar-10-batches-py"
    assert data.ensure_cifar10(wanted, download=True, url=url, md5=md5) == wanted
    assert data.locate_cifar10(wanted) == wanted
    assert data.locate_cifar10(wanted.parent) == wanted


def test_md5_mismatch_leaves_nothing(tmp_path, archive):
    url, _, _ = archive
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="md5"):
        data.download_cifar10(dest, url=url, md5="0" * 32)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    "member",
    [
        file_member("../evil", b"x"),
        file_member("cifar-10-batches-py/../../evil", b"x"),
        file_member("/tmp/evil-bnlab-test", b"x"),
        file_member("evil", b"x"),
        (tarfile.TarInfo("cifar-10-batches-py/link"), None),  # made a symlink below
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "outside-folder", "symlink"],
)
def test_unsafe_archive_is_rejected(tmp_path, member):
    info, payload = member
    if payload is None:
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    path = tmp_path / "evil.tar.gz"
    md5 = tar_gz(path, [file_member("cifar-10-batches-py/test_batch", b"ok"), (info, payload)])
    dest = tmp_path / "deep" / "data"
    with pytest.raises(DataError, match="refusing"):
        data.download_cifar10(dest, url=path.as_uri(), md5=md5)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not Path("/tmp/evil-bnlab-test").exists()


def test_missing_data_without_download(tmp_path, no_env):
    missing = tmp_path / "nothing-here"
    for call in (lambda: data.ensure_cifar10(missing), lambda: datasets.load_cifar10(missing)):
        with pytest.raises(DataError) as error:
            call()
        message = str(error.value)
        assert "BNLAB_DATA_DIR" in message and "--data-dir" in message and "--download" in message
        assert str(missing / "cifar-10-batches-py") in message
    assert not missing.exists()  # nothing was downloaded or created
    report = data.describe_cifar10(missing)
    assert report["found"] is None and "BNLAB_DATA_DIR" in report["problem"]


def test_unreachable_url(tmp_path, no_env):
    dest = tmp_path / "data"
    with pytest.raises(DataError) as error:
        data.ensure_cifar10(dest, download=True, url=closed_port_url(), md5="0" * 32)
    message = str(error.value)
    assert "cannot download" in message and str(dest / "cifar-10-batches-py") in message
    assert "BNLAB_DATA_DIR" in message
    assert list(dest.iterdir()) == []


# --- damaged batch files ------------------------------------------------------------------------


def test_truncated_batch_names_the_file(synthetic):
    damaged = synthetic / "data_batch_2"
    damaged.write_bytes(damaged.read_bytes()[:5000])
    with pytest.raises(DataError, match="data_batch_2") as error:
        datasets.load_cifar10(synthetic, num_train=3, num_val=3, num_test=2)
    assert "download" in str(error.value)
    assert "data_batch_2" in data.describe_cifar10(synthetic)["problem"]


def test_label_count_mismatch_names_the_file(synthetic):
    images, labels = raw_batch(synthetic / "test_batch")
    write_batch(synthetic / "test_batch", images, labels[:-1])
    with pytest.raises(DataError, match="test_batch"):
        datasets.load_cifar10(synthetic, num_train=3, num_val=3, num_test=2)


def test_wrong_keys_name_the_file(synthetic):
    with open(synthetic / "data_batch_10", "wb") as f:
        pickle.dump({"pixels": np.zeros((6, 3072), np.uint8), "labels": [0] * 6}, f)
    with pytest.raises(DataError, match="data_batch_10"):
        datasets.load_cifar10(synthetic, num_train=3, num_val=3, num_test=2)


def test_describe_synthetic_in_numeric_order(synthetic):
    report = data.describe_cifar10(synthetic)
    assert [(b["file"], b["images"]) for b in report["batches"]] == [
        *((name, SYNTHETIC_BATCHES[name]) for name in SYNTHETIC_POOL_ORDER),
        ("test_batch", SYNTHETIC_TEST),
    ]
    assert (report["num_train"], report["num_test"]) == (18, 5)


# --- where the data lives -----------------------------------------------------------------------


def test_data_dir_precedence(tmp_path, monkeypatch, no_env, synthetic):
    assert data.find_data_dir() == no_env
    assert data.locate_cifar10() is None
    monkeypatch.setenv("BNLAB_DATA_DIR", str(synthetic.parent))
    assert data.find_data_dir() == synthetic.parent
    assert data.locate_cifar10() == synthetic
    assert data.describe_cifar10()["source"].endswith("BNLAB_DATA_DIR")
    assert data.find_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert data.locate_cifar10(tmp_path / "explicit") is None  # an explicit folder is never second-guessed
    loaded = datasets.load_cifar10(num_train=2, num_val=2, num_test=1)
    np.testing.assert_array_equal(loaded["y_train"], raw_batch(synthetic / "data_batch_1")[1][:2])


def test_memory_follows_the_splits_not_the_archive(tmp_path):
    # A pool of 5 x 2,000 images: preprocessed whole it would take 10,000 x 3,072 float64 = 246 MB.
    # Streamed one batch at a time, the peak is one batch file's bytes and array (2 x 6 MB) plus
    # the small splits and the float64 running sum.
    import tracemalloc

    rng = np.random.RandomState(0)
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_batch(batches / name, rng.randint(0, 256, size=(2000, 3072)).astype(np.uint8), rng.randint(10, size=2000))
    tracemalloc.start()
    try:
        loaded = datasets.load_cifar10(batches, num_train=100, num_val=100, num_test=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded["X_train"].shape == (100, 3, 32, 32)
    whole_archive = 10_000 * 3072 * 8
    assert peak < 30e6 < whole_archive / 8, f"peak {peak / 1e6:.0f} MB"


def test_a_batch_that_would_run_code_is_refused(synthetic):
    # A pickle may name any callable; a batch file must not be able to run one.
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(synthetic / "pwned"),))

    target = synthetic / "data_batch_1"
    target.write_bytes(pickle.dumps({"data": Payload(), "labels": [0]}))
    with pytest.raises(DataError) as error:
        datasets.load_cifar10(synthetic, num_train=2, num_val=2, num_test=1)
    assert str(target) in str(error.value) and "system" in str(error.value) and "run code" in str(error.value)
    assert not (synthetic / "pwned").exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_batches_pickled_with_any_protocol_load(tmp_path, protocol):
    # Official files are Python 2 pickles; re-pickled copies may use any protocol.
    rng = np.random.RandomState(protocol)
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    images = {}
    for name in [f"data_batch_{i}" for i in range(1, 3)] + ["test_batch"]:
        images[name] = rng.randint(0, 256, size=(4, 3072)).astype(np.uint8)
        batch = {"data": images[name], "labels": [1, 2, 3, 4]}
        (batches / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    loaded = datasets.load_cifar10(batches, num_train=2, num_val=2, num_test=4, dtype=np.float64)
    pool = np.concatenate([images["data_batch_1"], images["data_batch_2"]]).astype(np.float64)
    mean = pool[:6].mean(axis=0)  # the pool minus its last 2 images, the validation split
    np.testing.assert_allclose(loaded["X_train"].reshape(2, -1), pool[:2] - mean)
    np.testing.assert_allclose(loaded["X_val"].reshape(2, -1), pool[6:] - mean)


def test_download_over_http_through_pooch(tmp_path, archive, no_env):
    """The real downloader (pooch over HTTP) against a server on this machine: progress reaches the
    archive's size, never decreasing, and the batches load."""
    import functools
    import http.server
    import threading

    url, md5, size = archive
    served = Path(urllib.request.url2pathname(url.removeprefix("file://")))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served.parent))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        calls = []
        http_url = f"http://127.0.0.1:{server.server_address[1]}/{served.name}"
        try:
            batches = data.download_cifar10(tmp_path / "data", http_url, md5, progress=lambda *a: calls.append(a))
        finally:
            server.shutdown()
    assert calls[-1] == (size, size) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert datasets.load_cifar10(batches.parent, num_train=9, num_val=8, num_test=4)["X_train"].shape == (9, 3, 32, 32)
