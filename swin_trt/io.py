"""Output files appear complete or not at all, and a destination that cannot take them is named
before the work starts.

Everything swin-trt writes (checkpoints, JSON results, sidecars, datasets) goes to a temporary name in the
destination folder and is renamed into place only once complete, so an interrupted or failed run
never leaves a half-written file that a later run would trust. :func:`check_writable` tries the
destination first (the CLI calls it before calibrating or training for minutes), and any write
that still fails becomes an :class:`OutputError`: one line naming the path and the reason.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from swin_trt.errors import SwinTrtError
from swin_trt.onnx.hashing import file_sha256

OutputKind = Literal["file", "folder", "stream"]


class OutputError(SwinTrtError):
    """A destination that cannot be written, with the flag that chose it when known."""

    def __init__(self, path: str | Path, reason: str, flag: str | None = None) -> None:
        self.path, self.reason, self.flag = Path(path), reason, flag
        super().__init__(f"cannot write {path}: {reason}" + (f"; choose another {flag}" if flag else ""))

    def with_flag(self, flag: str) -> OutputError:
        return OutputError(self.path, self.reason, flag)


def check_writable(path: str | Path, flag: str, kind: OutputKind = "file") -> None:
    """Raise :class:`OutputError` now if ``path`` cannot be written later.

    ``file``: a file written atomically (its folder must accept new files). ``folder``: a folder
    that files are written into (created if missing). ``stream``: like ``file``, but an existing
    device or pipe is accepted and written in place (``--json /dev/stdout``). The folder is tried
    by creating and removing a file in it, the only test that is right for root, read-only and
    immutable folders and pseudo file systems (``/proc``) alike.
    """
    path = Path(path)
    reason = _unwritable_reason(path, kind)
    if reason:
        raise OutputError(path, reason, flag)


def _unwritable_reason(path: Path, kind: OutputKind) -> str | None:
    mode = _mode(path)
    if mode is not None:
        if kind == "folder":
            return _probe(path) if stat.S_ISDIR(mode) else f"it is {_describe(mode)}, not a folder"
        if stat.S_ISDIR(mode):
            return "it is a folder, not a file"
        if not stat.S_ISREG(mode):
            if kind == "stream":
                return None if os.access(path, os.W_OK) else "permission denied"
            return f"it is {_describe(mode)}, not a file"
    ancestor = path.parent if kind != "folder" else path
    while _mode(ancestor) is None and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    ancestor_mode = _mode(ancestor)
    if ancestor_mode is None or not stat.S_ISDIR(ancestor_mode):
        return f"{ancestor} is {_describe(ancestor_mode)}, not a folder"
    return _probe(ancestor)


def _mode(path: Path) -> int | None:
    """st_mode following links, or None when nothing (or a dangling link) is there."""
    try:
        return path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:  # e.g. permission denied on a parent: the probe will say why
        return stat.S_IFDIR


def _describe(mode: int | None) -> str:
    if mode is None:
        return "missing"
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _probe(folder: Path) -> str | None:
    try:
        fd, name = tempfile.mkstemp(prefix=".swin-trt-probe.", dir=folder)
    except OSError as error:
        return reason_of(error, folder)
    os.close(fd)
    os.unlink(name)
    return None


def reason_of(error: OSError, folder: Path | None = None) -> str:
    """The reason part of a one-line message for a failed write."""
    text = os.strerror(error.errno).lower() if error.errno else str(error)
    if folder is not None and folder.is_dir():
        if error.errno == errno.ENOENT:
            return f"{folder} does not accept new files"  # procfs and sysfs answer ENOENT
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"the folder {folder} is read-only here ({text})"
    return text


@contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it to ``path`` on success.

    With ``directory=True`` the temporary path is an (empty) folder; an existing folder at
    ``path`` is replaced. On failure the temporary and any parent folders made for it are removed,
    and a failed write raises :class:`OutputError`. An existing device or pipe at ``path`` is
    refused: renaming over it would replace, say, ``/dev/full`` for every process on the machine.
    """
    path = Path(path)
    mode = _mode(path)
    if mode is not None and not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
        raise OutputError(path, f"it is {_describe(mode)}, not a {'folder' if directory else 'file'}")
    created = _make_folders(path)
    try:
        tmp = _temporary(path, directory)
    except OSError as error:
        _remove_folders(created)
        raise OutputError(path, _unwritable_reason(path, "file") or reason_of(error, path.parent)) from None
    try:
        yield tmp
        # mkstemp/mkdtemp create owner-only entries; give the result the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as error:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        _remove_folders(created)
        failure = _write_failure(error, tmp, path)
        if failure is not None:
            raise OutputError(path, reason_of(failure)) from None
        raise


def _temporary(path: Path, directory: bool) -> Path:
    if directory:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    return Path(name)


def _make_folders(path: Path) -> list[Path]:
    """Create the missing parents of ``path``; returns those made, deepest first."""
    missing = []
    for parent in path.parents:
        if _mode(parent) is not None:
            break
        missing.append(parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _remove_folders(missing)
        raise OutputError(path, _unwritable_reason(path, "file") or reason_of(error, path.parent)) from None
    return missing


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _write_failure(error: BaseException, tmp: Path, path: Path) -> OSError | None:
    """The OSError of writing the output itself (disk full, file too large, rename refused) behind
    ``error``, if that is what it is. Writers may wrap it: torch.save, on a Python file, raises
    a RuntimeError whose context is the OSError. An OSError about some other file the caller
    touched meanwhile is not one, and keeps its traceback."""
    seen = []
    while error is not None and error not in seen and len(seen) < 8:
        seen.append(error)
        if isinstance(error, OSError):
            if error.filename is None:
                return error
            name = Path(os.fsdecode(error.filename))
            return error if name in (tmp, path) or tmp in name.parents else None
        error = error.__cause__ or error.__context__
    return None


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write one JSON object (the ``--json PATH`` results): atomically to a file, in place to an
    existing device or pipe such as ``/dev/stdout``."""
    path = Path(path)
    text = json.dumps(dict(payload), indent=2, sort_keys=True) + "\n"
    mode = _mode(path)
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        try:
            with open(path, "w") as stream:
                stream.write(text)
        except OSError as error:
            raise OutputError(path, reason_of(error)) from None
        return path
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def sidecar_path(artifact: str | Path) -> Path:
    """The JSON sidecar of an exported graph or a built engine: the whole file name plus ``.json``
    (``model.onnx.json``, ``model.plan.json``), so no two artifacts in one folder share one."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_sidecar(artifact: str | Path, details: Mapping[str, Any]) -> dict[str, Any]:
    """Write the sidecar of ``artifact`` (which must be complete) with the SHA-256 and size of
    its bytes (``sha256``, ``bytes``): a sidecar describes one file, and whoever trusts it
    (``swin-trt bench``) re-hashes the file, so an artifact replaced under a kept sidecar is
    refused instead of being taken for what the sidecar says. Returns the record as written, so
    a caller hands on exactly what a later reader of the sidecar will see."""
    artifact = Path(artifact)
    record = {**details, "sha256": file_sha256(artifact), "bytes": artifact.stat().st_size}
    write_json(sidecar_path(artifact), record)
    return record


@functools.lru_cache(maxsize=None)
def _tell_once(message: str) -> None:
    print(message, file=sys.stderr)


def read_sidecar(artifact: str | Path) -> dict[str, Any] | None:
    """The sidecar of ``artifact``, or None when there is none. A sidecar under the name used
    before 0.2 (``model.json`` beside ``model.onnx``) is still read, and the user told once to
    rebuild. That name is shared by every artifact with the same stem (``m.onnx`` and its engine
    ``m.ort`` both wrote ``m.json``, the later one winning), so it is taken only when the path it
    records (``engine`` for an engine, ``onnx`` for a graph) names this artifact."""
    sidecar = sidecar_path(artifact)
    if sidecar.is_file():
        return _read_json_sidecar(sidecar)
    legacy = Path(artifact).with_suffix(".json")
    if legacy == Path(artifact) or not legacy.is_file():
        return None
    record = _read_json_sidecar(legacy)
    if Path(record.get("engine") or record.get("onnx") or "").name != Path(artifact).name:
        return None  # the old name's other owner
    _tell_once(f"note: {legacy} is a sidecar under the old name; re-export / rebuild to get {sidecar.name}")
    return record


def _read_json_sidecar(sidecar: Path) -> dict[str, Any]:
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as error:
        raise SwinTrtError(f"{sidecar}: not valid JSON ({error.msg} at line {error.lineno}): rebuild the engine") from None
