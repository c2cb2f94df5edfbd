"""Atomic artifact folders: a model is written beside its final place and renamed into it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `final`; rename it to `final` on success.

    The temporary folder is in the same parent (so the rename is atomic on one file
    system) and is removed if the block raises, so `final` either does not exist or
    is complete. Refuse a `final` that already exists.
    """
    final = Path(final)
    if final.exists():
        raise FileExistsError(
            f"{final} already exists; remove it or choose another folder"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
