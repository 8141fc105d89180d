"""Convert a checkpoint saved by the public FracBNN code (cornell-zhang/FracBNN) into a fracbnn checkpoint.

CKPT is the state dict written by the reference cifar10.py (--arch resnet20)
or imagenet.py (--arch reactnet), with or without the 'module.' prefix of
nn.DataParallel. Loading is strict: a missing, unexpected or wrongly shaped
key is an error naming it. The result loads with every fracbnn command
(e.g. `fracbnn summary OUT`). See docs/import-reference.md.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="state dict file saved by the reference code")
    p.add_argument("--arch", required=True, choices=("resnet20", "reactnet"),
                   help="reference model: resnet20 (cifar10.py) or reactnet (imagenet.py)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="fracbnn checkpoint to write")
    p.add_argument("--teacher-out", metavar="FILE", default=None,
                   help="reactnet only: also save the embedded ResNet-50 teacher as a torchvision state dict")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--json", action="store_true", help="print the import report as one JSON object")


def run(args) -> int:
    from ..errors import FracBNNError
    from ..reference import import_reference_file

    if args.teacher_out is not None and args.arch != "reactnet":
        raise FracBNNError("--teacher-out only applies to --arch reactnet (the CIFAR model has no teacher)")
    report = import_reference_file(args.checkpoint, args.arch, args.output, force=args.force,
                                   teacher_out=args.teacher_out)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"imported {report['mapped_tensors']} tensors into {report['model']} "
          f"({report['num_classes']} classes) -> {report['out']}")
    if report["ignored_keys"]:
        print(f"ignored {report['ignored_keys']} keys without model state: {', '.join(report['ignored_groups'])}")
    if "teacher_out" in report:
        print(f"teacher: {report['teacher_tensors']} tensors -> {report['teacher_out']}")
    if report["zero_binary_weights"]:
        print(f"warning: {report['zero_binary_weights']} binary weights are exactly 0; the reference code "
              "binarised them to 0, fracbnn binarises them to +1, so outputs may differ slightly")
    return 0
