"""Output files appear complete or not at all.

Everything swin-trt writes (checkpoints, JSON results, datasets) goes to a temporary name in the
destination folder and is renamed into place only once complete, so an interrupted or failed run
never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it to ``path`` on success.

    With ``directory=True`` the temporary path is an (empty) folder; an existing folder at
    ``path`` is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create owner-only entries; give the result the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write one JSON object atomically (the ``--json PATH`` results)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dict(payload), indent=2, sort_keys=True) + "\n")
    return path
