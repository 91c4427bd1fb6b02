"""Which of mmgen's own file kinds a file is, from its header alone (never unpickles).

mmgen writes four kinds of files:

* a *release* (``mmgen release``): safetensors whose ``mmgen`` metadata says
  ``"format": "mmgen.release"`` (:data:`mmgen.release.FORMAT`);
* a *checkpoint* (``mmgen fit``): safetensors with ``"format": "mmgen.checkpoint"``
  (:data:`mmgen.train.CHECKPOINT_FORMAT`);
* a *VAE* (``mmgen vae``): safetensors with ``"format": "mmgen.vae"``
  (:data:`mmgen.vae.VAE_FORMAT`);
* *samples* (``mmgen sample``): a NumPy ``.npz`` (a zip archive) with arrays ``x`` and ``y``.

:func:`sniff` tells them apart by reading at most the safetensors header or the zip
directory, so that a command given the wrong kind can say what it got and which
command takes it (:func:`expect`), instead of a parser's message about header lengths
or pickles.

The safetensors kinds are written and read through :func:`write_safetensors_atomic` (temporary
file, fsync, rename) and :func:`read_safetensors_checked` (kind, format version and
:func:`content_hash` checked before anything is used).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zipfile
from pathlib import Path

import torch

from .version import __version__
from .errors import DataError, FormatError, MMGenError

__all__ = ["sniff", "expect", "describe", "load_samples", "check_picture", "metadata", "budget_stamp", "KINDS",
           "PICTURE_SUFFIXES", "content_hash", "write_safetensors_atomic", "read_safetensors_checked"]

KINDS = ("release", "checkpoint", "vae", "samples", "unknown")

_MAX_HEADER = 100_000_000  # safetensors' own limit on a header's length

_DESCRIPTION = {
    "release": "an mmgen release (made by `mmgen release`; `mmgen inspect` and `mmgen fit` take it)",
    "checkpoint": "an mmgen generator checkpoint (made by `mmgen fit`; `mmgen sample` takes it, "
    "and `mmgen evaluate --checkpoint`)",
    "vae": "an mmgen VAE trained with DP-SGD (made by `mmgen vae`; `mmgen sample` and `mmgen inspect` take it)",
    "samples": "an .npz with arrays x and y (samples, as `mmgen sample` writes them, for `mmgen evaluate`; "
    "or data, for `--data npz:FILE`)",
    "unknown": "not a file mmgen writes",
}


def sniff(path: str | os.PathLike) -> str:
    """The kind of an mmgen file, read from its header only.

    Args:
        path: the file.

    Returns:
        ``"release"``, ``"checkpoint"``, ``"vae"``, ``"samples"`` (an ``.npz`` with arrays ``x`` and ``y``)
        or ``"unknown"`` (anything else, including a missing or unreadable file). A file of a
        known kind may still be damaged further on; the loaders check that.

    >>> sniff("no-such-file")
    'unknown'
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:4] == b"PK\x03\x04":  # a zip archive: what np.savez writes
                f.seek(0)
                with zipfile.ZipFile(f) as z:
                    names = set(z.namelist())
                return "samples" if {"x.npy", "y.npy"} <= names else "unknown"
            if len(head) < 8:
                return "unknown"
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, os.fstat(f.fileno()).st_size - 8):
                return "unknown"
            header = json.loads(f.read(n))
            meta = json.loads(header["__metadata__"]["mmgen"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return "unknown"
    kind = meta.get("format") if isinstance(meta, dict) else None
    return {"mmgen.release": "release", "mmgen.checkpoint": "checkpoint", "mmgen.vae": "vae"}.get(kind, "unknown")


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".tif", ".tiff")


def check_picture(path: str | os.PathLike | None, what: str) -> None:
    """Refuses a picture file name matplotlib cannot write, so that the check comes before any work.

    Args:
        path: the picture to write (``None``: none asked for; passes).
        what: the option or argument, for the message, e.g. ``"--grid"``.

    Raises:
        MMGenError: the suffix is not one of :data:`PICTURE_SUFFIXES`.
    """
    if path is not None and Path(path).suffix.lower() not in PICTURE_SUFFIXES:
        raise MMGenError(f"`{what}` must name a picture file ({', '.join(PICTURE_SUFFIXES)}). Got {str(path)!r}.")


def describe(kind: str) -> str:
    """A phrase saying what a file of ``kind`` is and which commands take it."""
    return _DESCRIPTION[kind]


def expect(path: str | os.PathLike, kind: str, command: str) -> None:
    """Refuses a file of another *known* mmgen kind than ``kind``, naming what it is.

    Unknown and missing files pass: the loader's own checks give the precise reason.

    Args:
        path: the file given.
        kind: the kind the command needs (``"release"``, ``"checkpoint"`` or ``"samples"``).
        command: what is reading it, e.g. ``"mmgen sample"``.

    Raises:
        FormatError: ``path`` is a release, checkpoint or samples file other than ``kind``.
    """
    if not Path(path).is_file():
        return
    got = sniff(path)
    wanted = {"release": "a release", "checkpoint": "a checkpoint", "vae": "a VAE file (`mmgen vae`)",
              "samples": "samples (.npz with x, y)"}[kind]
    if got not in ("unknown", kind):
        raise FormatError(f"{command} takes {wanted}; {path} is {describe(got)}.")
    if got == "unknown" and kind != "samples" and zipfile.is_zipfile(path):
        raise FormatError(f"{command} takes {wanted}; {path} is a zip archive (an .npz?), not an mmgen {kind}.")


def load_samples(path: str | os.PathLike, command: str = "`mmgen evaluate`"):
    """Reads samples written by ``mmgen sample`` (or any ``.npz`` with arrays ``x`` and ``y``), never unpickling.

    Args:
        path: the ``.npz`` file.
        command: who reads it, for the messages.

    Returns:
        ``(x, y)``: NumPy arrays, ``x`` (N, ...) numeric and ``y`` (N,) integer labels.

    Raises:
        FormatError: the file is another mmgen kind, not an ``.npz``, or lacks ``x``/``y``.
        DataError: ``x``/``y`` have the wrong shape or dtype.
    """
    import numpy as np

    if not Path(path).is_file():
        raise FormatError(f"Samples file {path} does not exist.")
    expect(path, "samples", command)
    if not zipfile.is_zipfile(path):
        raise FormatError(f"{command} takes samples (.npz with arrays x and y, as `mmgen sample` writes); "
                          f"{path} is not an .npz file.")  # fmt: skip
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in ("x", "y") if k not in arrays.files]
            if missing:
                raise FormatError(f"Samples {path} need arrays x and y; it has {', '.join(arrays.files) or 'none'}.")
            x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"Cannot read samples {path}: {exc}") from None
    if x.dtype.kind not in "fiub" or x.ndim < 2:
        raise DataError(f"Samples {path}: x must be numeric of shape (N, ...). Got {x.dtype} of shape {x.shape}.")
    if y.dtype.kind not in "iub" or y.shape != x.shape[:1]:
        raise DataError(f"Samples {path}: y must be {len(x)} integer labels. Got {y.dtype} of shape {y.shape}.")
    return x, y


def metadata(path: str | os.PathLike) -> dict | None:
    """The JSON metadata of an mmgen file, from its header only: a safetensors file's ``mmgen`` entry, or a
    samples ``.npz``'s ``meta`` array (None for samples without one, and for files of no known kind).

    Nothing is verified here (the loaders check content hashes); never unpickles.
    """
    import numpy as np

    kind = sniff(path)
    try:
        if kind == "samples":
            with np.load(path, allow_pickle=False) as arrays:
                meta = json.loads(str(arrays["meta"])) if "meta" in arrays.files else None
        elif kind != "unknown":
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                meta = json.loads(json.loads(f.read(n))["__metadata__"]["mmgen"])
        else:
            return None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise FormatError(f"Cannot read the metadata of {path}: {exc}") from None
    return meta if isinstance(meta, dict) else None


def budget_stamp(path: str | os.PathLike) -> dict | None:
    """The budget record's stamp an output carries (:meth:`mmgen.privacy.BudgetRecord.stamp`), or None.

    A release keeps it in ``budget_record``; a VAE, evolved samples and per-record samples in
    ``privacy.budget_record``; a checkpoint carries its release's in ``release.budget_record``. Outputs written without a record (the public benchmarks), or by an mmgen
    before the stamp existed, carry none.
    """
    meta = metadata(path)
    if meta is None:
        return None
    stamp = meta.get("budget_record")
    for part in ("privacy", "release"):  # a VAE's and samples' privacy; a checkpoint's release (its release's stamp)
        if stamp is None and isinstance(meta.get(part), dict):
            stamp = meta[part].get("budget_record")
    return stamp if isinstance(stamp, dict) else None


# -- safetensors files: content hash, atomic write, checked read -------------
def content_hash(meta: dict, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the canonical JSON metadata and every tensor's name, shape, dtype and bytes.

    The metadata's ``content_hash`` and a release's ``budget_record`` stamp are left out: the budget record's
    entry for a release holds its content hash, and the stamp is the record's head after that entry.
    """
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k not in ("content_hash", "budget_record")},
                                  sort_keys=True).encode())  # fmt: skip
    for name in sorted(tensors):
        t = tensors[name].cpu()
        t = t.new_empty(t.shape).copy_(t)  # standard strides, also on size-1 dimensions
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_safetensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Writes a safetensors file atomically: temporary file, fsync, ``os.replace``."""
    from safetensors.torch import save  # safetensors is imported when a file is written, not with mmgen

    path = Path(path)
    if path.is_dir():
        raise MMGenError(f"{path} is a folder; give the name of a file to write.")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = save(tensors, metadata=metadata)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_safetensors_checked(path: str | os.PathLike, kind: str, version: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Reads a safetensors file written by mmgen and checks its kind, version and content hash."""
    from safetensors import SafetensorError  # as in write_safetensors_atomic
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path} does not exist.")
    data = path.read_bytes()
    what = {"mmgen.release": "release", "mmgen.vae": "VAE file"}.get(kind, "checkpoint")
    if len(data) < 8:
        raise FormatError(f"{path} is not an mmgen {what} (file too short; truncated?).")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise FormatError(
            f"{path} is not an mmgen {what} or is truncated: its header length says {n} bytes, "
            f"the file has {len(data) - 8} after the length."
        )
    try:
        header = json.loads(data[8 : 8 + n])
        meta = json.loads(header["__metadata__"]["mmgen"])
    except (ValueError, KeyError, TypeError):
        raise FormatError(f"{path} is not an mmgen {what} (no mmgen metadata in a safetensors header).") from None
    if not isinstance(meta, dict) or meta.get("format") != kind:
        raise FormatError(f"{path} is not an mmgen {what} (format is {meta.get('format') if isinstance(meta, dict) else None!r}, expected {kind!r}).")
    if meta.get("format_version") != version:
        raise FormatError(
            f"{path} has {what} format version {meta.get('format_version')!r}; this mmgen ({__version__}) reads "
            f"version {version}. Upgrade mmgen to read newer files."
        )
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise FormatError(f"{path} is damaged (truncated or altered): {exc}") from None
    expected = meta.get("content_hash")
    if expected != content_hash(meta, tensors):
        raise FormatError(f"{path} was altered or damaged: its content hash does not match.")
    return tensors, meta
