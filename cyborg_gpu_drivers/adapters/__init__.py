"""The only code that touches hardware: NVML, sysfs, libvirt, amdsmi.

Each adapter answers with plain Python values and hides its library's
quirks, so the drivers above them are plain logic over data.
"""
