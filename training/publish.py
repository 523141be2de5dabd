"""Atomic writes, the one way files are published: a reader (the service's folder watch, a resumed run,
an export) sees the old file or folder or the new one, never a half-written one, whatever crashes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from service.folders import replace_folder


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a non-root server must be able to read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_folder(final: Path, files: dict[str, bytes]) -> Path:
    """Write `files` into a staging folder beside `final`, then rename it into place (exchanged with what
    was there, service/folders.py): a crash or a full disk never leaves a half-written folder visible, and
    a folder replaced is never absent. Staging folders start with '.', which the model repository ignores."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".staging-{final.name}-"))
    try:
        staging.chmod(0o755)  # mkdtemp makes it 0700; a non-root server must be able to read it
        for name, content in files.items():
            write_atomic(staging / name, content)
        replace_folder(staging, final)  # the old folder, if any, is there until the new one is
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
