"""The container recipe's install step, without a Docker engine: the constraints the Dockerfile
builds, resolved by pip against the recorded NGC pins (``docker/ngc-pins.txt``) in a scratch
environment that holds the container's packages at those versions (metadata only: the resolver
sees them installed, as it does in the container), through the same check the Dockerfile runs
(``docker/check_install.py``). Needs the package index (skipped without it, except under CI);
the two resolutions take one to two minutes on an idle machine (pip fetches metadata), hence slow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PINS = REPO / "docker" / "ngc-pins.txt"
# the container's Python and platform (NGC PyTorch 26.08: Python 3.12, glibc 2.39)
TARGET = ["--python-version", "3.12", "--only-binary=:all:", *(f"--platform=manylinux_2_{v}_x86_64" for v in range(17, 40)), "--platform=manylinux2014_x86_64"]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name] = version
    return pins


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    """A scratch environment with the recorded container packages installed (their metadata)."""
    root = tmp_path_factory.mktemp("ngc")
    venv.create(root / "env", with_pip=False)
    python = root / "env" / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    for name, version in _pins(PINS).items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("pip\n")
        (info / "RECORD").write_text("")
    return root, python


def _check(constraints: Path, python: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_CONSTRAINT": ""}  # this machine's pip settings stay out of it
    return subprocess.run([sys.executable, REPO / "docker" / "check_install.py", constraints, "--python", python, *TARGET], capture_output=True,
                          text=True, env=env, timeout=900)


def _dockerfile_constraints(ours: Path, out: Path) -> Path:
    """What the Dockerfile writes to /tmp/constraints.txt, with the recorded pins as the container's."""
    dropped = subprocess.run([sys.executable, REPO / "docker" / "container_constraints.py", ours, PINS], capture_output=True, text=True, check=True).stdout
    out.write_text(dropped + PINS.read_text())
    return out


def _unreachable(result: subprocess.CompletedProcess) -> bool:
    return bool(re.search(r"(Failed to establish|Temporary failure in name resolution|Network is unreachable|ConnectTimeout)", result.stderr))


@pytest.mark.slow
def test_dependencies_resolve_against_the_container_pins_without_touching_torch(container):
    root, python = container
    result = _check(_dockerfile_constraints(REPO / "constraints-ngc.txt", root / "constraints.txt"), python)
    if _unreachable(result) and not os.environ.get("CI"):
        pytest.skip("the package index is unreachable")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "none of the container's (torch, CUDA, TensorRT) would change" in result.stdout


@pytest.mark.slow
def test_a_resolution_that_would_replace_torch_says_so(container, tmp_path):
    """The workplace's own constraints pin torch 2.14.1 (not the container's 2.14.0a0 build): the
    check refuses with one line naming it, before anything is installed."""
    root, python = container
    ours = tmp_path / "ours.txt"
    ours.write_text("torch==2.14.1\n")
    result = _check(ours, python)
    if _unreachable(result) and not os.environ.get("CI"):
        pytest.skip("the package index is unreachable")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("check_install: error: installing swin-trt would replace the container's ") and "torch==2.14.1" in line, line


def test_container_pins_win_over_ours(tmp_path):
    """container_constraints.py drops every package the container pins (PEP 503 names), keeps the rest."""
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("# container\nNumPy==1.26.4\nonnx_ir==0.9\n")
    ours = tmp_path / "ours.txt"
    ours.write_text("numpy==2.4.6\nonnx-ir==1.1.0\ntimm==1.0.31\n# comment\n")
    kept = subprocess.run([sys.executable, REPO / "docker" / "container_constraints.py", ours, theirs], capture_output=True, text=True, check=True).stdout
    assert kept.split() == ["timm==1.0.31"]


def test_dockerignore_keeps_the_environment_and_outputs_out():
    patterns = [p for p in (REPO / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    for required in (".venv", ".git", "runs/", "export/*.onnx", "engines/*"):
        assert required in patterns
