"""The ``fracbnn`` command line.

Each subcommand lives in ``fracbnn.commands.<module>`` and provides
``add_arguments(parser)`` and ``run(args) -> int``; heavy imports happen
inside ``run`` so ``fracbnn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import FracBNNError

#: subcommand -> (module, one-line help)
COMMANDS = {
    "train": ("fracbnn.commands.train", "train a model with a recipe (the three FracBNN steps in sequence)"),
    "eval": ("fracbnn.commands.eval", "test accuracy of a checkpoint or .fbnn model on every test image"),
    "quickstart": ("fracbnn.commands.quickstart", "train a small FracBNN on the built-in digits in about a minute"),
    "plot": ("fracbnn.commands.plot", "PNG charts of a training run (accuracy, loss, per-layer sparsity)"),
    "summary": ("fracbnn.commands.summary", "per-layer bits and operation counts of a model"),
    "export": ("fracbnn.commands.export", "convert a trained checkpoint into a packed integer model (.fbnn)"),
    "infer": ("fracbnn.commands.infer", "classify PNG/JPEG images with a packed model (.fbnn)"),
    "bench": ("fracbnn.commands.bench", "throughput of the inference engines on a packed model"),
    "import-reference": ("fracbnn.commands.import_reference", "convert a checkpoint of the public FracBNN code"),
    "hw": ("fracbnn.commands.hw", "FPGA accelerator: generate an HLS project, C-simulate it, report cycles/resources"),
    "data": ("fracbnn.commands.data", "check a dataset and prepare it (extract or download once) before training"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fracbnn", description="FracBNN: train, deploy and build binary "
                                     "neural networks with fractional activations.")
    parser.add_argument("--version", action="version", version=f"fracbnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # keep the examples' lines
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def os_error_line(e: OSError) -> str:
    """One line for an OSError: what the OS said, about which path, and what to check."""
    what = e.strerror or type(e).__name__
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    where = f": {' -> '.join(paths)}" if paths else (f" ({e})" if not e.strerror and str(e) else "")
    return f"{what}{where}; check that the path is right and writable"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except FracBNNError as e:
        print(f"fracbnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except OSError as e:  # any file-system refusal (missing, read-only, permissions, full disk, not a folder)
        print(f"fracbnn {args.command}: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fracbnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
