"""Files and folders that appear complete or not at all.

Each is written under a temporary name beside its target and renamed into place (atomic on POSIX
and Windows), and gets the permissions a plain open() or mkdir() would give: tempfile makes its
files and folders private (0600, 0700), which would hide shared results from a lab's other users.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_UMASK = os.umask(0)  # reading the umask means setting it: put it straight back
os.umask(_UMASK)


def _as_if_created(path: str | Path, mode: int) -> None:
    os.chmod(path, mode & ~_UMASK)


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[BinaryIO]:
    """Write `target` through the yielded binary file; it replaces target only if the block ends
    without an exception."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        _as_if_created(tmp, 0o666)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(target: Path, text: str) -> None:
    """Replace target's content with text (UTF-8), atomically."""
    with atomic_file(target) as f:
        f.write(text.encode("utf-8"))


def staging_dir(parent: Path, prefix: str) -> Path:
    """A new hidden folder in parent to fill and then rename into place with os.rename."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    _as_if_created(path, 0o777)
    return path
