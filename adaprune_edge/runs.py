"""Run directories and atomic writes: outputs go to a temp name and are renamed, never half-written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from adaprune_edge.errors import OutputExistsError, OutputWriteError

# write failures a user fixes on the machine (free space, permissions); other OSErrors are bugs to show
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def check_writable(path: Path, force: bool) -> None:
    """Raise OutputExistsError if `path` exists and `force` is false."""
    if path.exists() and not force:
        raise OutputExistsError(f"output {path} exists; pass --force to overwrite it")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        raise OutputWriteError(f"cannot write {path} ({e.strerror or os.strerror(e.errno)}); "
                               f"free space or fix permissions in {path.parent} and run again") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def append_json_line(path: Path, data: Any) -> None:
    """Append `data` as one JSON line and fsync it: a kill loses at most the line being written."""
    with Path(path).open("a") as f:
        f.write(json.dumps(data) + "\n")
        f.flush()
        os.fsync(f.fileno())
