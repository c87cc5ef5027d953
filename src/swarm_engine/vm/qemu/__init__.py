"""The QEMU microVM backend: one `-machine microvm` guest per step.

Modules: `config` (options), `accel` (KVM or TCG), `image` (images on disk), `builder`
(build one from Debian packages, with `vmlinux` and `initramfs` helpers), `machine` (QEMU
command line and process), `protocol` (framed host<->guest channel), `vm` (one booted
guest), `snapshot` (template state save and QMP), `warm` (pre-booted guests), `backend`
(the `VMBackend`), `doctor` (what works on this host). The guest side lives in `guest/`.
"""
