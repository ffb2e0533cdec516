"""glibc allocator settings for the PyTorch side of the benchmarks.

With glibc's defaults, some PyTorch processes hand their per-step buffers
back to the kernel after every step (freed blocks above the dynamic mmap
threshold are unmapped, and the heap's free top is trimmed) and fault them
in again on the next step; others, started the same way, do not. On the
2-core machine that made vgg-small's training step 134-156 ms in 5 of 6
runs (3,000-6,000 minor faults a step) and 84 ms in the sixth, and its
forward pass 12.3 ms instead of 4.2 ms. Fixing the mmap threshold at
32 MB and the trim threshold at 1 GB keeps freed memory in the process, so
every run measures PyTorch's kernels rather than its page faults. matc
plans its activations into one arena and is not affected either way.
"""
import os
import sys

TUNED = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def add_option(ap):
    ap.add_argument("--torch-malloc", choices=("tuned", "default"), default="tuned",
                    help="glibc allocator for PyTorch: tuned (keeps freed memory; default) or glibc's defaults")


def env(mode):
    """The environment a PyTorch process should start with."""
    e = dict(os.environ)
    if mode == "tuned":
        e.update(TUNED)
    return e


def reexec(mode):
    """Restart this script with the allocator settings of `mode` in force
    (glibc reads them once, at the process's first allocation)."""
    if mode == "tuned" and any(os.environ.get(k) != v for k, v in TUNED.items()):
        os.execve(sys.executable, [sys.executable] + sys.argv, env(mode))
