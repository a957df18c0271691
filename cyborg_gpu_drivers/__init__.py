"""Cyborg accelerator drivers for shared GPUs: NVIDIA MIG, NVIDIA vGPU and
AMD MxGPU SR-IOV virtual functions."""
