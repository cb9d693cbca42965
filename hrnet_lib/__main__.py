"""Command line: `python -m hrnet_lib COMMAND ...`.

Each command lives next to the code it drives and exposes `main(argv) -> int`; this file only
dispatches, importing the command's module on demand.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "data": ("hrnet_lib.data.cli", "check or download a WFLW root, or fetch the ImageNet weights"),
    "synth": ("hrnet_lib.data.synthetic", "write a synthetic dataset in the official WFLW layout"),
    "synth-video": (
        "hrnet_lib.data.synthetic_video",
        "write a synthetic video of a moving face and its landmarks",
    ),
    "train": ("hrnet_lib.train.loop", "train a model with a named preset (also under torchrun)"),
    "evaluate": ("hrnet_lib.evaluate.report", "evaluate a checkpoint on the test set and its six subsets"),
    "predict": ("hrnet_lib.evaluate.predict", "find the 98 landmarks on any photo or video"),
    "export": ("hrnet_lib.evaluate.export", "export a checkpoint to ONNX, checked against PyTorch"),
    "bench": ("hrnet_lib.bench", "measure data, model and training throughput"),
}


def usage() -> str:
    """The command list printed by `python -m hrnet_lib --help`."""
    lines = ["usage: python -m hrnet_lib COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `python -m hrnet_lib COMMAND ARGS` to the command's module; returns its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
