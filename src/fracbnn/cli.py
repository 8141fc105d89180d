"""The ``fracbnn`` command line.

Each subcommand lives in ``fracbnn.commands.<module>`` and provides
``add_arguments(parser)`` and ``run(args) -> int``; heavy imports happen
inside ``run`` so ``fracbnn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        rc = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handlers below
        return rc
    except FracBNNError as e:
        print(f"fracbnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fracbnn ... | head`: the reader left; stop quietly, as cat does
        _silence_stdout()
        return 141
    except OSError as e:  # unreadable input, read-only or full disk, a file where a folder should be, ...
        print(f"fracbnn {args.command}: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fracbnn {args.command}: interrupted", file=sys.stderr)
        return 130


#: what to do about an operating-system error, by errno
_OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.EROFS: "choose another location",
    errno.EACCES: "choose a location you may write to, or fix the permissions",
    errno.EPERM: "choose a location you may write to, or fix the permissions",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "give a file, not a folder",
    errno.EEXIST: "choose another name",
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space",
}


def os_error_message(e: OSError) -> str:
    """One line naming the file, the system's reason and what to do."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    reason = e.strerror or str(e) or type(e).__name__
    hint = _OS_HINTS.get(e.errno)
    return f"{where + ': ' if where else ''}{reason}" + (f"; {hint}" if hint else "")


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
