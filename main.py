"""The seed's launch lines keep working:

    python -m torch.distributed.launch --nproc_per_node 1 --master_port 12345 main.py --eval \\
        --cfg configs/swin_tiny_patch4_window7_224.yaml --resume ckpt.pth --data-path imagenet ...

``--calib`` / ``--eval`` / ``--train`` pick the ``swin-trt`` subcommand (calibrate / eval / qat);
every other flag is passed through unchanged, since the subcommands take the seed's flag names.
"""

from __future__ import annotations

import sys

MODES = {"--calib": "calibrate", "--eval": "eval", "--train": "qat"}


def translate(argv: list[str]) -> list[str]:
    """Turn a seed command line into a ``swin-trt`` one (the mode flag becomes the subcommand)."""
    modes = [flag for flag in argv if flag in MODES]
    if len(modes) != 1:
        raise SystemExit(f"main.py: error: give exactly one of {', '.join(MODES)} (got {len(modes)})")
    rest = [flag for flag in argv if flag not in MODES]
    return [MODES[modes[0]], *rest]


if __name__ == "__main__":
    from swin_trt.cli import SUBCOMMAND_NAMES, main

    arguments = translate(sys.argv[1:])
    if arguments[0] not in SUBCOMMAND_NAMES:
        raise SystemExit(f"main.py: error: {arguments[0]!r} is not available in this version of swin-trt (available: {', '.join(SUBCOMMAND_NAMES)})")
    sys.exit(main(arguments))
