"""MNIST's file format (IDX), shared by Fashion-MNIST: four gzip'd files, each a big-endian
header then row-major unsigned bytes."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from bnlab.errors import DataError

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, columns)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)
# role -> the official file name, the same for MNIST and Fashion-MNIST
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of a gzip'd IDX file, its shape read from the header.

    The header is big-endian: a magic number (two zero bytes, the type 0x08 for unsigned bytes,
    the number of dimensions), then each dimension as a 32-bit integer; the values follow, row-major.
    """
    fix = f"Delete it and put the official {path.name} there (or run `bnlab data` to see where bnlab looks)"
    try:
        with gzip.open(path, "rb") as f:
            payload = f.read()
    except FileNotFoundError:
        raise DataError(f"{path.name} is missing from {path.parent}: {fix}") from None
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
        raise DataError(f"{path} is truncated or not gzip'd ({type(error).__name__}: {error}). {fix}") from None
    if len(payload) < 4:
        raise DataError(f"{path} is truncated: {len(payload)} bytes, shorter than an IDX header. {fix}")
    found = struct.unpack(">I", payload[:4])[0]
    if found != magic:
        kind = {IDX_IMAGES_MAGIC: "images", IDX_LABELS_MAGIC: "labels"}[magic]
        raise DataError(
            f"{path} has magic number {found}, expected {magic} (IDX {kind}): it is not an IDX {kind} file "
            f"or is corrupt. {fix}"
        )
    ndim = payload[3]
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DataError(f"{path} is truncated inside its header. {fix}")
    shape = struct.unpack(f">{ndim}I", payload[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(payload) != expected:
        what = "truncated" if len(payload) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: its header announces shape {shape} ({expected:,} bytes) but it holds "
            f"{len(payload):,} bytes. {fix}"
        )
    return np.frombuffer(payload, np.uint8, offset=header).reshape(shape)


def _read_idx_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(
            f"{images_path} has shape {images.shape} and {labels_path} {labels.shape}: expected "
            "(count, rows, columns) images and (count,) labels"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path.name} holds {len(images):,} images but {labels_path.name} {len(labels):,} labels "
            f"(in {images_path.parent}): the files come from different sets; put the four files of one set there"
        )
    if labels.size and labels.max() >= num_classes:
        raise DataError(f"{labels_path} has label {labels.max()}, expected 0..{num_classes - 1}: it is corrupt")
    return images[:, None, :, :], labels.astype(np.int64)


def read_idx_folder(folder: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four IDX files of an MNIST-format folder: uint8 training images (n, 1, rows, columns),
    int64 labels, test images and labels."""
    train_x, train_y = _read_idx_pair(
        folder / IDX_FILES["train_images"], folder / IDX_FILES["train_labels"], num_classes
    )
    test_x, test_y = _read_idx_pair(folder / IDX_FILES["test_images"], folder / IDX_FILES["test_labels"], num_classes)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{folder}: training images are {train_x.shape[2:]} but test images {test_x.shape[2:]}")
    return train_x, train_y, test_x, test_y
