"""The QEMU microVM backend: one `-machine microvm` guest per step.

Modules: `config` (options), `accel` (KVM or TCG), `image` (build the kernel, initramfs
and Python root image), `machine` (QEMU command line and process), `protocol` (framed
host<->guest channel), `vm` (one booted guest), `warm` (pre-booted guests), `backend`
(the `VMBackend`), `doctor` (what works on this host). The guest side lives in `guest/`.
"""
