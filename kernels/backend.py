"""The ``backend="auto" | "torch" | "triton"`` switch shared by every op.

``"torch"`` is the reference and runs everywhere. ``"triton"`` needs a CUDA
device and the ``triton`` package (or ``TRITON_INTERPRET=1``, which runs the
kernels on the CPU for testing); asking for it when neither is there raises.
``"auto"`` picks Triton for CUDA tensors when it is importable, else torch,
and logs its choice once per op and process, at INFO on the ``mmgen.kernels``
logger: the ``mmgen`` command shows it on stderr; as a library it stays quiet
unless the caller configures logging (e.g. ``logging.basicConfig(level="INFO")``).
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from mmgen.errors import BackendError

__all__ = ["resolve_backend", "triton_available", "interpret_mode"]

log = logging.getLogger("mmgen.kernels")
BACKENDS = ("auto", "torch", "triton")


def interpret_mode() -> bool:
    """True when Triton runs its kernels on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def triton_available(device: torch.device | None = None) -> bool:
    """Whether Triton kernels can run for tensors on ``device``."""
    if not _triton_importable():
        return False
    if interpret_mode():
        return True
    return torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")


_announced: set[tuple[str, str]] = set()


def resolve_backend(backend: str, device: torch.device, op: str) -> str:
    """Turns ``backend`` into ``"torch"`` or ``"triton"`` for tensors on ``device``.

    Raises:
        BackendError: for an unknown backend, or ``"triton"`` where it cannot run.
    """
    if backend not in BACKENDS:
        raise BackendError(f"`backend` must be one of {BACKENDS}. Got {backend!r}.")
    device = torch.device(device)
    if backend == "triton":
        if not triton_available(device):
            raise BackendError(
                f"backend='triton' needs a CUDA device and the triton package (tensors are on "
                f"{device}; CUDA available: {torch.cuda.is_available()}). Use backend='torch' or 'auto'."
            )
        return "triton"
    if backend == "torch":
        return "torch"
    chosen = "triton" if device.type == "cuda" and triton_available(device) else "torch"
    if (op, chosen) not in _announced:
        _announced.add((op, chosen))
        log.info("%s: backend='auto' chose %r for tensors on %s", op, chosen, device)
    return chosen
