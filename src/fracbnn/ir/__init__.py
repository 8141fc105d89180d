"""The integer IR: packed models (.fbnn), their ops and the golden interpreter. Needs numpy, not torch.

    from fracbnn.ir import PackedModel, registered_ops, run_program
    packed = PackedModel.load("model.fbnn")      # read + validate (every node checked by its op)
    buffers = run_program(packed, uint8_images)  # golden semantics; buffers["logits"]

Each op is one class in :mod:`fracbnn.ir.ops` (see :mod:`fracbnn.ir.op`);
docs/deploy-format.md section 3 is generated from them (``python -m fracbnn.ir.docgen``).
"""

from .arith import pack_weight_bits, round_shift, saturate, unpack_weight_bits
from .container import FORMAT_VERSION, PackedFormatError, read_container, write_container
from .graph import Graph, Node
from .interpreter import run_program
from .model import KIND, PackedModel, accumulator_bits, infer_shapes, value_bounds
from .op import BITS, INT, ExecContext, IntegerOp, get_op, register_op, registered_ops

__all__ = ["BITS", "FORMAT_VERSION", "INT", "KIND", "ExecContext", "Graph", "IntegerOp", "Node", "PackedFormatError",
           "PackedModel", "accumulator_bits", "get_op", "infer_shapes", "pack_weight_bits", "read_container",
           "register_op", "registered_ops", "round_shift", "run_program", "saturate", "unpack_weight_bits",
           "value_bounds", "write_container"]
