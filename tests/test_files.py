"""Release and checkpoint files: tampering, truncation, foreign files, future versions, pickles, torn writes."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

import mmgen
from mmgen.errors import FormatError
from mmgen.release import FORMAT_VERSION, content_hash
from mmgen.train import CHECKPOINT_VERSION


def _make_release(seed=0):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 4, 4, generator=g), torch.arange(40) % 3
    fmap = mmgen.features.create("rff", n_features=16, seed=0)
    return mmgen.release(x, y, fmap, epsilon=1.0, delta=1e-5, n_classes=3, noise_seed=seed)


@pytest.fixture(scope="module")
def release_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "release.safetensors"
    _make_release().save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "checkpoint.safetensors"
    trained = mmgen.fit("mlp", _make_release(), epochs=1, steps_per_epoch=1, batch_size=8, progress=False)
    trained.save(path)
    return path


LOADERS = {"release": mmgen.Release.load, "checkpoint": mmgen.Trained.load}


def _file(kind, release_file, checkpoint_file) -> Path:
    return release_file if kind == "release" else checkpoint_file


def _split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _rewrite_meta(data: bytes, change, rehash: bool) -> bytes:
    """Changes the mmgen metadata of a file (optionally recomputing its content hash, as a forger would)."""
    from safetensors.torch import load

    header, body = _split(data)
    meta = json.loads(header["__metadata__"]["mmgen"])
    change(meta)
    if rehash:
        meta["content_hash"] = content_hash(meta, load(data))
    header["__metadata__"]["mmgen"] = json.dumps(meta, sort_keys=True)
    return _join(header, body)


@pytest.mark.parametrize("kind", ["release", "checkpoint"])
def test_round_trip_is_intact(kind, release_file, checkpoint_file, tmp_path):
    path = _file(kind, release_file, checkpoint_file)
    loaded = LOADERS[kind](path)  # the baseline: the untouched file loads
    if kind == "release":
        original = _make_release()
        torch.testing.assert_close(loaded.statistics[0].sums, original.statistics[0].sums.float(), rtol=0, atol=0)
        assert loaded.metadata["privacy"] == original.metadata["privacy"]


@pytest.mark.parametrize("kind", ["release", "checkpoint"])
@pytest.mark.parametrize("where", [0, 1, 7, 8, 9, "header", "body", -1])
def test_truncated_file_is_refused(kind, where, release_file, checkpoint_file, tmp_path):
    data = _file(kind, release_file, checkpoint_file).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    cut = {"header": 8 + n // 2, "body": 8 + n + (len(data) - 8 - n) // 2, -1: len(data) - 1}.get(where, where)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:cut])
    with pytest.raises(FormatError, match="truncated"):
        LOADERS[kind](path)


@pytest.mark.parametrize("kind", ["release", "checkpoint"])
def test_flipped_tensor_byte_is_refused(kind, release_file, checkpoint_file, tmp_path):
    data = bytearray(_file(kind, release_file, checkpoint_file).read_bytes())
    data[-5] ^= 0x01
    path = tmp_path / "flip.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="content hash does not match"):
        LOADERS[kind](path)


@pytest.mark.parametrize("kind", ["release", "checkpoint"])
def test_appended_bytes_are_refused(kind, release_file, checkpoint_file, tmp_path):
    path = tmp_path / "long.safetensors"
    path.write_bytes(_file(kind, release_file, checkpoint_file).read_bytes() + b"\0" * 16)
    with pytest.raises(FormatError):
        LOADERS[kind](path)


def test_altered_metadata_is_refused(release_file, tmp_path):
    def raise_epsilon(meta):
        meta["privacy"]["epsilon"] = 0.01  # claim a stronger guarantee than the noise gives

    path = tmp_path / "alt.safetensors"
    path.write_bytes(_rewrite_meta(release_file.read_bytes(), raise_epsilon, rehash=False))
    with pytest.raises(FormatError, match="content hash does not match"):
        mmgen.Release.load(path)


@pytest.mark.parametrize("kind", ["release", "checkpoint"])
def test_future_format_version_is_refused(kind, release_file, checkpoint_file, tmp_path):
    current = FORMAT_VERSION if kind == "release" else CHECKPOINT_VERSION

    def bump(meta):
        meta["format_version"] = current + 1

    path = tmp_path / "future.safetensors"
    path.write_bytes(_rewrite_meta(_file(kind, release_file, checkpoint_file).read_bytes(), bump, rehash=True))
    with pytest.raises(FormatError, match=f"format version {current + 1}.*Upgrade mmgen"):
        LOADERS[kind](path)


def test_well_hashed_but_malformed_release_is_refused(release_file, tmp_path):
    # The hash is no signature: a forger can recompute it. Missing fields still fail cleanly.
    for key in ("statistics", "privacy"):
        path = tmp_path / f"no-{key}.safetensors"
        path.write_bytes(_rewrite_meta(release_file.read_bytes(), lambda m: m.pop(key), rehash=True))
        with pytest.raises(FormatError, match="not a well-formed mmgen release"):
            mmgen.Release.load(path)


def test_well_hashed_release_with_wrong_tensor_shape_is_refused(release_file, tmp_path):
    def lie(meta):
        meta["statistics"][0]["shape"] = [3, 99]

    path = tmp_path / "shape.safetensors"
    path.write_bytes(_rewrite_meta(release_file.read_bytes(), lie, rehash=True))
    with pytest.raises(FormatError, match="wrong shape"):
        mmgen.Release.load(path)


def test_foreign_files_are_refused(release_file, checkpoint_file, tmp_path):
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(st_save({"w": torch.zeros(3)}))  # a valid safetensors file, not mmgen's
    other = tmp_path / "other.safetensors"
    other.write_bytes(st_save({"w": torch.zeros(3)}, metadata={"mmgen": json.dumps({"format": "x"})}))
    png = tmp_path / "image.safetensors"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    for path in (plain, other, png):
        for load in LOADERS.values():
            with pytest.raises(FormatError, match="not an mmgen"):
                load(path)
    with pytest.raises(FormatError, match="expected 'mmgen.release'"):
        mmgen.Release.load(checkpoint_file)
    with pytest.raises(FormatError, match="expected 'mmgen.checkpoint'"):
        mmgen.Trained.load(release_file)
    with pytest.raises(FormatError, match="does not exist"):
        mmgen.Release.load(tmp_path / "missing.safetensors")


class _Bomb:
    """Unpickling this creates a marker folder: proof that the loader executed the pickle."""

    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("container", ["raw pickle", "torch.save zip"])
@pytest.mark.parametrize("kind", ["release", "checkpoint"])
def test_pickle_bomb_is_refused_without_executing(container, kind, tmp_path):
    marker = tmp_path / "PWNED"
    bomb = _Bomb()
    bomb.marker = str(marker)
    path = tmp_path / "evil.safetensors"
    if container == "raw pickle":
        path.write_bytes(pickle.dumps(bomb))
    else:
        torch.save({"sums": bomb}, path)
    # the payload is live: a plain unpickle would fire it
    assert not marker.exists()
    with pytest.raises(FormatError):
        LOADERS[kind](path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(bomb))  # sanity: the bomb works when unpickled
    assert marker.exists()


# -- torn writes ----------------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import sys, torch, mmgen
    target, ref_a, ref_b = sys.argv[1:4]
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(50, 1, 4, 4, generator=g), torch.arange(50) % 10
    fmap = mmgen.features.create("rff", n_features=20000, seed=0)
    a = mmgen.release(x, y, fmap, epsilon=1.0, delta=1e-5, n_classes=10, noise_seed=1)
    b = mmgen.release(x, y, fmap, epsilon=2.0, delta=1e-5, n_classes=10, noise_seed=2)
    a.save(ref_a); b.save(ref_b); a.save(target)
    print("ready", flush=True)
    while True:
        b.save(target)
        a.save(target)
    """
)


def test_killed_writer_never_leaves_a_torn_release(tmp_path):
    """SIGKILL a process that rewrites a ~1.6 MB release in a loop; the file is always whole."""
    target, ref_a, ref_b = tmp_path / "r.safetensors", tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    rng = random.Random(12345)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(ref_a), str(ref_b)],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL  # it was killed mid-loop, not finished
        loaded = mmgen.Release.load(target)
        refs = {"a": mmgen.Release.load(ref_a), "b": mmgen.Release.load(ref_b)}
        match = [k for k, r in refs.items() if r.metadata["content_hash"] == loaded.metadata["content_hash"]]
        assert len(match) == 1
        assert torch.equal(loaded.statistics[0].sums, refs[match[0]].statistics[0].sums)
    # temporary files a kill leaves behind are never mistaken for the release
    for tmp in tmp_path.glob(".r.safetensors.*.tmp"):
        assert tmp.name != target.name
