"""Import checkpoints written by the public FracBNN reference code (cornell-zhang/FracBNN).

``convert_reference(state_dict, arch)`` maps a reference state dict onto one
of our registered models, strictly; ``import_reference_file`` does it for a
file and writes a fracbnn checkpoint. See docs/import-reference.md.
"""

from .convert import ReferenceImportError, convert_reference, import_reference_file, read_reference_state_dict
from .layout import ARCHS, LAYOUTS, ReferenceLayout

__all__ = ["ARCHS", "LAYOUTS", "ReferenceImportError", "ReferenceLayout", "convert_reference",
           "import_reference_file", "read_reference_state_dict"]
