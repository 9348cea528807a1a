"""Resolve swin-trt's dependencies against the container's pins, without installing anything, and
refuse a resolution that would replace a package the container provides (torch, torchvision,
triton, the CUDA and TensorRT wheels).

    python docker/check_install.py CONSTRAINTS [--python INTERPRETER] [extra pip install options ...]

Runs ``pip install --dry-run --report`` on the dependencies of ``pyproject.toml`` with
``-c CONSTRAINTS`` (swin-trt's pins minus the container's, plus the container's own: see
``docker/container_constraints.py``); the packages already installed in the environment (the
container's, or ``--python``'s: pip's own option) satisfy what they can. Exit 0 and one line when the resolution installs nothing the
container provides; exit 1 with the reason otherwise: pip could not resolve (its own message
above), or the packages it would replace. The Dockerfile runs it before ``pip install``;
``tests/test_docker.py`` runs it in a scratch environment holding the recorded container's
packages (``docker/ngc-pins.txt``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
PROVIDED = re.compile(r"^(torch|torchvision|torchaudio|triton|tensorrt.*|nvidia-.*|cuda-.*)$")  # the container's, never replaced


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("constraints")
    parser.add_argument("--python", help="resolve for this interpreter's environment (default: this one)")
    args, pip_options = parser.parse_known_args(argv)
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    with tempfile.TemporaryDirectory() as scratch:
        requirements, report = Path(scratch) / "requirements.txt", Path(scratch) / "report.json"
        requirements.write_text("\n".join(dependencies) + "\n")
        target = ["--python", args.python] if args.python else []
        done = subprocess.run([sys.executable, "-m", "pip", *target, "install", "--dry-run", "--quiet", "--disable-pip-version-check",
                               "--report", str(report), "-c", args.constraints, "-r", str(requirements), *pip_options])
        if done.returncode != 0:
            print(f"check_install: error: pip could not resolve swin-trt's dependencies against {args.constraints} (pip's message above)", file=sys.stderr)
            return 1
        installs = {normalize(item["metadata"]["name"]): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    replaced = sorted(f"{name}=={version}" for name, version in installs.items() if PROVIDED.match(name))
    if replaced:
        print(f"check_install: error: installing swin-trt would replace the container's {', '.join(replaced)}: "
              f"remove their pins from the constraints (docker/container_constraints.py) or pick another NGC_TAG", file=sys.stderr)
        return 1
    print(f"check_install: {len(installs)} packages resolve against {args.constraints}; none of the container's (torch, CUDA, TensorRT) would change")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
