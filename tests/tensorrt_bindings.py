"""The genuine TensorRT Python bindings, importable on a machine without TensorRT or a GPU.

``tensorrt-cu12-bindings`` on the package index is TensorRT's real pybind11 module (``tensorrt.so``,
about 1.2 MB). Its only link-time needs from TensorRT are a few C entry points of
``libnvinfer.so.N``, ``libnvinfer_plugin.so.N`` and ``libnvonnxparser.so.N``. Both lists are read
from the binary, not written down here: the libraries are its ``NEEDED`` entries (``readelf -d``)
that this system cannot load, the symbols are its undefined, unversioned, strong symbols
(``nm -D --undefined-only``) that the running interpreter and libc do not provide. Stand-in
libraries exporting them (each ``void *f(void) { return 0; }``, compiled with the system ``cc``)
let the module import: every enum, class, method, property and pybind11 signature of that TensorRT
version is there to inspect, while anything that would need the real library returns null or raises.

The module is imported in a child process (``LD_LIBRARY_PATH`` must be set before the dynamic
loader starts, and the ``tensorrt`` name must not leak into the test process). Run as a script, this
file is that child: it reads the uses collected by ``tests/tensorrt_uses.py`` as JSON on stdin,
resolves each chain step by step in the bindings (following the return types of pybind11's
signatures), and prints one JSON report.

Wheels are fetched once with ``pip download --no-deps`` into ``$SWIN_TRT_WHEEL_CACHE`` (default
``~/.cache/swin-trt/tensorrt-wheels``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = "tensorrt-cu12-bindings"
CACHE_ENV = "SWIN_TRT_WHEEL_CACHE"


class Unavailable(Exception):
    """The bindings cannot be had here (no wheel, no compiler, no binutils): the reason."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "swin-trt" / "tensorrt-wheels")


def _tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def fetch_wheel(version: str) -> Path:
    """The cached wheel of ``version`` for this interpreter, downloaded once."""
    cache = cache_dir()
    pattern = f"{PACKAGE.replace('-', '_')}-{version}-{_tag()}-*.whl"
    found = sorted(cache.glob(pattern))
    if found:
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--quiet",
               "--dest", str(cache), f"{PACKAGE}=={version}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    found = sorted(cache.glob(pattern))
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no wheel for this interpreter"])[-1]
        raise Unavailable(f"pip download {PACKAGE}=={version} failed: {last}")
    return found[-1]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise Unavailable(f"`{name}` is not installed (binutils / a C compiler are needed to stand in for TensorRT's libraries)")
    return path


def entry_points(module: Path) -> list[str]:
    """The undefined, unversioned, strong dynamic symbols of ``module`` that this process cannot resolve."""
    listing = subprocess.run([_tool("nm"), "-D", "--undefined-only", str(module)], capture_output=True, text=True, check=True).stdout
    process = ctypes.CDLL(None)
    names = [parts[1] for parts in (line.split() for line in listing.splitlines()) if len(parts) == 2 and parts[0] == "U" and "@" not in parts[1]]
    return sorted(name for name in names if not hasattr(process, name))


def missing_libraries(module: Path) -> list[str]:
    """The ``NEEDED`` libraries of ``module`` that this system cannot load."""
    dynamic = subprocess.run([_tool("readelf"), "-d", str(module)], capture_output=True, text=True, check=True).stdout
    missing = []
    for name in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic):
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


def prepare(version: str, workdir: Path) -> dict:
    """Unpack the module of ``version`` into ``workdir`` and compile its stand-in libraries next
    to it: ``{"module", "version", "libraries", "symbols"}``."""
    wheel = fetch_wheel(version)
    compiler = _tool("cc")
    workdir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        member = next(n for n in archive.namelist() if n.endswith("/tensorrt.so"))
        module = workdir / "tensorrt.so"
        module.write_bytes(archive.read(member))
        init = archive.read(member.rsplit("/", 1)[0] + "/__init__.py").decode()
    declared = re.search(r'^__version__ = "(.+)"', init, re.M)
    symbols = entry_points(module)
    libraries = missing_libraries(module)
    source = workdir / "stand_in.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in symbols))
    for library in libraries:
        subprocess.run([compiler, "-shared", "-fPIC", f"-Wl,-soname,{library}", "-o", str(workdir / library), str(source)], check=True, capture_output=True)
    return {"module": str(module), "version": declared.group(1) if declared else version, "libraries": libraries, "symbols": symbols}


def check(prepared: dict, uses: list[dict], repo: Path) -> dict:
    """Run this file as the child on ``uses``: its JSON report."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(prepared["module"]).parent), "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, __file__, prepared["module"], prepared["version"]], input=json.dumps(uses), capture_output=True, text=True,
                          env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"the TensorRT {prepared['version']} child failed:\n{done.stderr}")
    return json.loads(done.stdout)


# ---------------------------------------------------------------------------------------------
# the child: resolve chains in the genuine module

_SIGNATURE = r"^(?:\d+\. )?{name}\((.*)\) -> (.+)$"


def _split(params: str) -> list[str]:
    """Top-level comma split of a pybind11 parameter list (types and defaults nest brackets)."""
    parts, depth, current = [], 0, ""
    for char in params:
        if char in "([{<":
            depth += 1
        elif char in ")]}>":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def signatures(doc: str | None, name: str) -> list[tuple[list[tuple[str, bool]], str]]:
    """``[(parameters as (name, has default), return annotation)]`` per overload of a pybind11 docstring."""
    found = []
    for params, returned in re.findall(_SIGNATURE.format(name=re.escape(name)), doc or "", re.M):
        if params == "*args, **kwargs":
            continue
        parsed = []
        for param in _split(params):
            head = param.split("=", 1)[0]
            parsed.append((head.split(":", 1)[0].strip(), "=" in param))
        found.append((parsed, returned.strip()))
    return found


def admits(params: list[tuple[str, bool]], count: int | None, keywords: list[str]) -> bool:
    """Whether a call with ``count`` positional arguments and ``keywords`` fits ``params``."""
    if count is None or any(name.startswith("*") for name, _ in params):
        return True
    names = [name for name, _ in params]
    if count > len(params) or any(k not in names[count:] for k in keywords):
        return False
    return all(default or i < count or name in keywords for i, (name, default) in enumerate(params))


class _Resolver:
    def __init__(self, module):
        self.module = module

    def type_named(self, annotation: str):
        """The bindings' class for a return annotation like ``tensorrt.ICudaEngine``, else None."""
        if not annotation.startswith("tensorrt."):
            return None
        target = self.module
        for part in annotation.split(".")[1:]:
            target = getattr(target, part, None)
        return target if isinstance(target, type) else None

    def resolve(self, steps: list, store: bool) -> list[dict]:
        """One entry per step: ``{"name", "status", "detail"}``; status ok / missing / arguments /
        read-only / unresolved (a step after a value whose type the signatures do not give)."""
        state, entries, owner = ("module", self.module), [], "tensorrt"
        for index, step in enumerate(steps):
            kind, value = state
            last = index == len(steps) - 1
            if step[0] == "attr":
                name = f"{owner}.{step[1]}"
                if kind == "unknown":
                    entries.append({"name": name, "status": "unresolved", "detail": value})
                    continue
                if kind == "py":
                    ok = hasattr(value, step[1])
                    entries.append({"name": name, "status": "ok" if ok else "missing", "detail": ""})
                    state, owner = ("py", getattr(value, step[1])) if ok else ("unknown", "missing"), name
                    continue
                holder = value  # the module, or the class of a class or an instance (attributes are the class's)
                if step[1] == "__version__" and kind == "module":
                    state, owner = ("py", self.module.__version__), "tensorrt.__version__"
                    entries.append({"name": name, "status": "ok", "detail": "the package's version string"})
                    continue
                if not hasattr(holder, step[1]):
                    entries.append({"name": name, "status": "missing", "detail": ""})
                    state = ("unknown", f"{name} is missing")
                    continue
                found = getattr(holder, step[1])
                status, detail = "ok", ""
                if isinstance(found, property):
                    annotation = (found.fget.__doc__ or "").split("->")[-1].strip() if found.fget else ""
                    if last and store and found.fset is None:
                        status, detail = "read-only", "assigned to, but the property has no setter"
                    target = self.type_named(annotation)
                    state = ("instance", target) if target else ("unknown", f"{name} is {annotation or 'untyped'}")
                    owner = target.__name__ if target else name
                elif isinstance(found, type):
                    state, owner = ("class", found), found.__name__
                elif type(found).__module__ == "tensorrt":  # an enum member or other bound value
                    state, owner = ("instance", type(found)), type(found).__name__
                elif callable(found):
                    state, owner = ("callable", (found, step[1], kind == "instance" or kind == "class")), name
                else:
                    state, owner = ("py", found), name
                entries.append({"name": name, "status": status, "detail": detail})
            else:
                _, count, keywords = step
                shown = f"{owner}({', '.join([*(['_'] * (count or 0)), *(f'{k}=' for k in keywords)]) if count is not None else '...'})"
                if kind == "unknown":
                    entries.append({"name": shown, "status": "unresolved", "detail": value})
                    continue
                if kind == "class":
                    overloads, bound = signatures(value.__init__.__doc__, "__init__"), True
                    result = lambda _: ("instance", value)  # noqa: E731
                elif kind == "callable":
                    function, name, bound = value
                    overloads = signatures(function.__doc__, name)
                    result = lambda annotation: (("instance", self.type_named(annotation)) if self.type_named(annotation)  # noqa: E731
                                                 else ("unknown", f"{shown} returns {annotation}"))
                elif kind == "py":
                    entries.append({"name": shown, "status": "ok", "detail": "a Python callable"})
                    state = ("unknown", "a Python value")
                    continue
                else:
                    entries.append({"name": shown, "status": "missing", "detail": f"{owner} is not callable"})
                    state = ("unknown", "not callable")
                    continue
                if not overloads:
                    entries.append({"name": shown, "status": "unresolved", "detail": "no pybind11 signature"})
                    state = ("unknown", "no signature")
                    continue
                fitting = [(params[1:] if bound and params and params[0][0] in ("self", "arg0") else params, returned) for params, returned in overloads]
                match = [returned for params, returned in fitting if admits(params, count, keywords)]
                if match:
                    entries.append({"name": shown, "status": "ok", "detail": ""})
                    state = result(match[0])
                    owner = state[1].__name__ if state[0] == "instance" else shown
                else:
                    accepted = "; ".join(f"({', '.join(n for n, _ in params)})" for params, _ in fitting)
                    entries.append({"name": shown, "status": "arguments", "detail": f"accepts {accepted}"})
                    state = ("unknown", "arguments do not fit")
        return entries


def _child(module_path: str, version: str) -> None:
    spec = importlib.util.spec_from_file_location("tensorrt", module_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["tensorrt"] = module
    spec.loader.exec_module(module)
    module.__version__ = version  # what the wheel's package __init__ sets
    uses = json.load(sys.stdin)
    resolver = _Resolver(module)
    report = {"version": version, "chains": [{**use, "entries": resolver.resolve(use["steps"], use["store"])} for use in uses]}
    # the project's own version branches, run on the genuine module
    from swin_trt.runtimes import tensorrt as trt_runtime

    report["require_tensorrt"] = trt_runtime.require_tensorrt().Runtime is module.Runtime  # lazy_import's proxy of this module
    report["network_flags"] = trt_runtime.network_flags(module)
    report["data_types"] = sorted(n for n in dir(module.DataType) if n.isupper())
    report["torch_dtypes"] = sorted(trt_runtime.TORCH_DTYPES)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    _child(*sys.argv[1:3])
