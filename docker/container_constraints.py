"""Print swin-trt's container pins without the packages the NGC container pins itself.

The NGC PyTorch container (25.03 and later) sets /etc/pip/constraint.txt for everything it ships,
and pip refuses two different pins for one package. The container's own pins win: they are what
its torch, TensorRT and CUDA libraries were tested with.

    python docker/container_constraints.py constraints-ngc.txt /etc/pip/constraint.txt > constraints.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def package(line: str) -> str | None:
    """The normalised project name a requirement line pins (PEP 503), or None for comments."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ @]", line, maxsplit=1)[0]).lower()


def main(ours: str, theirs: str) -> None:
    container = Path(theirs)
    pinned = {package(line) for line in container.read_text().splitlines()} if container.is_file() else set()
    for line in Path(ours).read_text().splitlines():
        name = package(line)
        if name is not None and name not in pinned:
            print(line)


if __name__ == "__main__":
    main(*sys.argv[1:3])
