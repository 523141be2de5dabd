"""Replacing a folder that a reader watches, the one way bundles are placed (`gru export`, `gru import`,
`gru pull`): the folder at the final path is there at every moment, the old one or the new one.

Before (round 11), the old folder was removed (or renamed away) and then the new one renamed in: for that
moment the version was absent, and `gru serve`'s folder watch, polling then, unloaded it (404) until its
next poll. Measured: 300 `gru pull --overwrite` placements of a served version, a client hammering it
(GRU_POLL_INTERVAL_S=0.1): 264 answers of 717 were 404."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

AT_FDCWD, RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>
UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}  # kernel or file system


def _renameat2() -> Callable[..., int] | None:
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc 2.28+, musl 1.2.5+
    except OSError:
        return None


RENAMEAT2 = _renameat2()


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE). False where that cannot be
    done here (not Linux, an old C library or kernel, a file system without it, `second` absent)."""
    if RENAMEAT2 is None:
        return False
    if RENAMEAT2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in UNSUPPORTED or code == errno.ENOENT and first.exists():
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def replace_folder(new: Path, final: Path) -> Path:
    """Move the folder `new` to `final` (same file system), replacing the folder there: exchanged in one
    step, then the old one (now at `new`'s path, which readers ignore when it starts with '.') removed.
    Where no exchange is possible, the old folder is renamed away first: absent for that moment."""
    if exchange(new, final):
        shutil.rmtree(new)
        return final
    if final.exists():
        retired = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".retired-{final.name}-"))
        os.replace(final, retired / "old")
        os.replace(new, final)
        shutil.rmtree(retired)
    else:
        os.replace(new, final)
    return final
