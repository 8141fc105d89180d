"""The ImageNet (ReActNet-A FracBNN) accelerator: program, design, model, generator (docs/hw.md, "ImageNet")."""
