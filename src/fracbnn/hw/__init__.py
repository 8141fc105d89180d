"""FPGA accelerator for CIFAR FracBNN ResNets: performance/resource model and HLS project generator."""
