"""The Release: noisy class-conditional embedding sums and their public metadata.

``release(x, y, features, epsilon=, delta=)`` streams the private records once
and computes, for every statistic k (a feature map φ_k),

    R_k = Σ_i [a_k·φ_k(x_i), b_k] ⊗ e_{y_i} + N(0, (σ_k Δ_k)² I)        ((C, D_k + 1))

where only the first statistic carries the class counts (``b_0 > 0``,
``b_k = 0`` after it), so counts are never released without noise and never
treated as public. The statistics compose as Gaussian mechanisms
(μ² = Σ μ_k², see :mod:`mmgen.privacy.calibration`).

The file holds the noisy tensors (safetensors, no pickle) and a JSON header
with everything public: format and library version, feature specs with
their seeds, the data schema and bounds, ε, δ, noise multipliers, sensitivities,
the neighbouring relation, the budget split and a SHA-256 content hash. No
quantity computed from the data without noise is recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .version import __version__
from .data.base import Dataset
from mmgen.kernels.rff import clear_workspace

from .data.private import PrivateData, check_batch
from .data.schema import Schema
from .data.tables import load_table
from .errors import DataError, FormatError, MMGenError, PrivacyError
from .features import FeatureMap, default_budget_split, from_spec, statistics
from .features.base import get_class
from .features.bundles import expand
from .files import content_hash, read_safetensors_checked, write_safetensors_atomic  # also mmgen.release's names
from .features.ntk import NTKFeatures
from .features.rff import RandomFourierFeatures
from .features.tabular import TableMarginals, TableRFF
from .privacy.bounds import (
    FRACTION_BITS, NonFiniteFeatures, check_rounding_budget, fixed_point_class_sums, from_fixed_point, rounding_bound,
)  # fmt: skip
from .privacy.mechanism import NORM_SLACK
from .privacy import (
    NOISE_SOURCE,
    SEEDED_NOISE_SOURCE,
    check_epsilon_delta,
    check_neighbouring,
    composed_noise_multiplier,
    dp_event,
    epsilon_for,
    gaussian_mechanism,
    sensitivity,
    split_noise_multipliers,
)

__all__ = ["Release", "Statistic", "release", "accumulate", "accumulate_fixed_point", "finalize", "FORMAT",
           "FORMAT_VERSION", "DEFAULT_COUNT_WEIGHT"]  # fmt: skip

_PRODUCT_SLICES = 4  # lattice rff: float64 slices per exact float32 product (768 records at D = 10,000 on the CPU)
_CHUNK_ELEMENTS = 1 << 21  # float64 feature values per dense chunk on the release path (16 MiB: kept near the caches)
_DEVICE_CHUNK_ELEMENTS = 1 << 23  # the same on a GPU (64 MiB)
_DEVICE_MAX_ROWS = 1 << 16  # records per chunk on a GPU at most (4,096 on the CPU); kernels_gpu.py's sweep varies the budget
_WIDE_MIN_ROWS = 16  # fewer CPU records per chunk than this: the map is wide, see _chunk_rows
_WIDE_CHUNK_ELEMENTS = 1 << 27  # float64 values per chunk for such a map (1 GiB)
_SPARSE_ELEMENTS = 1 << 23  # table-marginals' sparse path: records per chunk from 2 · input_dim values each
FORMAT = "mmgen.release"
FORMAT_VERSION = 1
DEFAULT_COUNT_WEIGHT = 0.3


@dataclasses.dataclass(frozen=True)
class Statistic:
    """One Gaussian-released statistic of a release.

    Attributes:
        name: a label, e.g. ``"rff"``.
        feature_spec: the public spec that rebuilds the feature map.
        sums ((C, D) Tensor): noisy ``a·Σ_{y_i=c} φ(x_i)``.
        counts ((C,) Tensor or None): noisy ``b·n_c`` (first statistic only).
        feature_weight: a.
        count_weight: b (0 without counts).
        noise_multiplier: σ.
        sensitivity: Δ; each coordinate's noise std is ``σ·Δ``.
        budget_share: this statistic's share w_k of μ² (the split).
    """

    name: str
    feature_spec: dict
    sums: torch.Tensor
    counts: torch.Tensor | None
    feature_weight: float
    count_weight: float
    noise_multiplier: float
    sensitivity: float
    budget_share: float

    @property
    def noise_std(self) -> float:
        """The per-coordinate standard deviation of the noise, ``σ·Δ``."""
        return self.noise_multiplier * self.sensitivity

    def header(self) -> dict:
        return {
            "name": self.name,
            "features": self.feature_spec,
            "feature_weight": self.feature_weight,
            "count_weight": self.count_weight,
            "noise_multiplier": self.noise_multiplier,
            "sensitivity": self.sensitivity,
            "noise_std": self.noise_std,
            "budget_share": self.budget_share,
            "shape": list(self.sums.shape),
        }


@dataclasses.dataclass(frozen=True)
class Release:
    """A differentially private release: noisy statistics + public metadata.

    Build one with :func:`release`; read one with :meth:`load`.
    """

    statistics: tuple[Statistic, ...]
    metadata: dict

    def __repr__(self) -> str:
        """A summary (privacy, schema, statistics with shapes), never the tensors themselves."""
        stats = ", ".join(f"{s.name} {tuple(s.sums.shape)}" for s in self.statistics)
        return (f"Release(epsilon={self.epsilon:g}, delta={self.delta:g}, neighbouring={self.neighbouring!r}, "
                f"classes={self.n_classes}, input_shape={self.input_shape}, statistics=[{stats}])")  # fmt: skip

    # -- public views -----------------------------------------------------
    @property
    def epsilon(self) -> float:
        return self.metadata["privacy"]["epsilon"]

    @property
    def delta(self) -> float:
        return self.metadata["privacy"]["delta"]

    @property
    def neighbouring(self) -> str:
        return self.metadata["privacy"]["neighbouring"]

    @property
    def schema(self) -> dict:
        return self.metadata["data"]

    @property
    def n_classes(self) -> int:
        return int(self.schema["n_classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.schema["input_shape"])

    @property
    def bounds(self) -> tuple[float, float]:
        return (float(self.schema["low"]), float(self.schema["high"]))

    @property
    def for_publication(self) -> bool:
        return bool(self.metadata["privacy"]["for_publication"])

    def statistic(self, name: str) -> Statistic:
        for s in self.statistics:
            if s.name == name:
                return s
        raise MMGenError(f"No statistic {name!r} in this release. Has: {[s.name for s in self.statistics]}.")

    def class_counts(self) -> torch.Tensor:
        """Noisy class counts ``counts / b`` ((C,) float64; may be negative for tiny classes)."""
        first = self.statistics[0]
        return first.counts.to(torch.float64) / first.count_weight

    def class_proportions(self) -> torch.Tensor:
        """Class proportions from the noisy counts, clipped at 0 and normalised ((C,) float64)."""
        counts = self.class_counts().clamp(min=0)
        if counts.sum() <= 0:
            return torch.full((self.n_classes,), 1.0 / self.n_classes, dtype=torch.float64)
        return counts / counts.sum()

    def mean_embeddings(self, name: str | None = None) -> torch.Tensor:
        """Noisy class-wise mean embeddings ``(sums/a) / max(counts/b, 1)`` ((C, D) float64)."""
        stat = self.statistics[0] if name is None else self.statistic(name)
        n = self.class_counts().clamp(min=1.0)
        return stat.sums.to(torch.float64) / stat.feature_weight / n[:, None]

    def feature_map(self, name: str | None = None) -> FeatureMap:
        """Rebuilds the (public) feature map of a statistic from its spec."""
        stat = self.statistics[0] if name is None else self.statistic(name)
        return from_spec(stat.feature_spec)

    def content_hash(self) -> str:
        """The SHA-256 content hash the file of this release carries (computed, not read)."""
        return content_hash(self.metadata, self._tensors())

    def summary(self) -> dict:
        """The metadata with each statistic's header (what ``mmgen inspect --json`` prints)."""
        return self.metadata

    # -- files ---------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for s in self.statistics:
            out[f"{s.name}.sums"] = s.sums.to(torch.float32).contiguous()
            if s.counts is not None:
                out[f"{s.name}.counts"] = s.counts.to(torch.float32).contiguous()
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the release atomically (temporary file in the same folder, fsync, rename).

        Returns:
            The path written.
        """
        tensors = self._tensors()
        meta = dict(self.metadata)
        meta.pop("content_hash", None)
        meta["content_hash"] = content_hash(meta, tensors)
        return write_safetensors_atomic(path, tensors, {"mmgen": json.dumps(meta, sort_keys=True)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Release":
        """Reads and verifies a release file (never unpickles).

        Raises:
            FormatError: if the file is missing, truncated, altered, not an mmgen
                release, or of an unknown format version.
        """
        tensors, header = read_safetensors_checked(path, FORMAT, FORMAT_VERSION)
        stats = []
        try:  # a file can carry a matching hash and still be malformed (the hash is no signature)
            for key in ("privacy", "data"):
                if not isinstance(header[key], dict):
                    raise TypeError(key)
            for s in header["statistics"]:
                sums = tensors[f"{s['name']}.sums"]
                counts = tensors.get(f"{s['name']}.counts")
                if sums.ndim != 2 or list(sums.shape) != list(s["shape"]) or (counts is not None and counts.shape != sums.shape[:1]):
                    raise FormatError(f"{path}: statistic {s['name']!r} has tensors of the wrong shape.")
                stats.append(
                    Statistic(
                        name=s["name"], feature_spec=s["features"], sums=sums, counts=counts,
                        feature_weight=s["feature_weight"], count_weight=s["count_weight"],
                        noise_multiplier=s["noise_multiplier"], sensitivity=s["sensitivity"],
                        budget_share=s["budget_share"],
                    )  # fmt: skip
                )
        except (KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"{path} is not a well-formed mmgen release (missing or malformed {exc}).") from None
        if not stats:
            raise FormatError(f"{path} is not a well-formed mmgen release (no statistics).")
        return cls(statistics=tuple(stats), metadata=header)


# -- making a release -------------------------------------------------------
def release(
    x: torch.Tensor | Dataset | Iterable[tuple[torch.Tensor, torch.Tensor]],
    y: torch.Tensor | None = None,
    features: str | FeatureMap | Sequence[str | FeatureMap] = "rff",
    *,
    epsilon: float,
    delta: float,
    n_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    bounds: tuple[float, float] | None = None,
    neighbouring: str = "add-remove",
    budget_split: Sequence[float] | None = None,
    count_weight: float = DEFAULT_COUNT_WEIGHT,
    clip: bool = False,
    batch_size: int = 4096,
    noise_seed: int | None = None,
    data_name: str | None = None,
    progress: bool = False,
    schema=None,
    record=None,
    output: str | None = None,
) -> Release:
    """Makes an (ε, δ)-DP release of class-conditional mean embeddings.

    The data is read once, in batches; only the class-conditional sums (one
    (C, D) buffer per statistic) are held. One Gaussian mechanism per statistic,
    calibrated together with dp-accounting, adds the noise.

    Args:
        x: records ``(N, *input_shape)`` in ``[low, high]``; or a :class:`Dataset`
            (its training split and schema are used); or an iterable of
            ``(x, y)`` batches (then ``y`` is None and ``n_classes`` and
            ``input_shape`` are required).
        y ((N,) Tensor): integer labels in ``[0, n_classes)``.
        features: a feature-map or bundle name (bundles expand exactly as in the CLI:
            ``"hermite"`` is hermite + hermite-product, ``"perceptual"`` both moments;
            comma lists allowed), an instance (set up or not), or a list of them for a
            multi-statistic release.
        epsilon, delta: the privacy budget of the whole release.
        n_classes: the declared (public) number of classes.
        input_shape: the declared shape of one record (defaults to ``x.shape[1:]``).
        bounds: the declared public domain ``(low, high)``; default ``(0, 1)``.
        neighbouring: ``"add-remove"`` (default) or ``"replace-one"``.
        budget_split: shares of μ² per statistic (default: each bundle's split, 1 per other statistic).
        count_weight: b, the weight of the count coordinate (``a = sqrt(1 − b²)``).
        clip: clip values into the domain instead of refusing them (recorded).
        batch_size: records per batch when ``x`` is a tensor.
        noise_seed: reproducible noise for tests; the release is then marked
            ``for_publication = false``.
        data_name: a public name of the data recorded in the schema.
        progress: show a progress bar.
        schema: for a table: its public :class:`~mmgen.data.tables.Schema` (or JSON form, or file);
            ``x`` is then a pandas data frame. A :class:`Dataset` from :func:`mmgen.data.load_table`
            or a :class:`~mmgen.data.tables.TableStream` (a file read in chunks) carries its schema.
            Each row is encoded by the schema, the label column gives the classes, and tabular
            feature maps (``"table-marginals"``, ``"table-rff"``) get the schema's layout.
        record: the data set's :class:`~mmgen.privacy.BudgetRecord`: checked before the first record is read
            (it refuses a release that would exceed its declared total); the release is added to it and saved,
            and the record's stamp (:meth:`~mmgen.privacy.BudgetRecord.stamp`) goes into ``metadata["budget_record"]``.
        output: the release's file name, for the budget record's entry.

    Returns:
        The :class:`Release`.

    Raises:
        DataError: bad data (shape, dtype, NaN/inf, out of domain, bad labels, empty).
        PrivacyError: bad ε, δ, relation or budget split.
    """
    check_epsilon_delta(epsilon, delta)
    check_neighbouring(neighbouring)
    if not (0 < count_weight < 1):
        raise PrivacyError(f"`count_weight` must be in (0, 1). Got {count_weight!r}.")
    if type(x).__name__ == "DataFrame" or schema is not None:
        if type(x).__name__ != "DataFrame" or y is not None:
            raise DataError("A table release takes a pandas data frame `x` and its `schema` (the label is a column).")
        if clip:
            raise DataError("For a table, clip numbers into their declared bounds when loading: mmgen.data.load_table(..., clip=True).")
        x = load_table("table", schema, frame=x)
    data = PrivateData(x, y, n_classes=n_classes, input_shape=input_shape, bounds=bounds, clip=clip,
                       batch_size=batch_size, name=data_name, record=record)  # the one gate to the records
    table = data.table
    layout = None
    if table is not None:
        layout = Schema.from_dict(table).layout()
    fmaps = _feature_maps(features, data.input_shape, (data.low, data.high), layout)
    shares = default_budget_split(features) if budget_split is None else [float(w) for w in budget_split]
    if len(shares) != len(fmaps):
        raise PrivacyError(f"`budget_split` needs one weight per statistic ({len(fmaps)}). Got {len(shares)}.")
    event = dp_event(split_noise_multipliers(epsilon, delta, shares))  # validates the split before the data is read
    data.admit(event, delta=delta, neighbouring=neighbouring)
    sums, counts = accumulate(data, fmaps, data.n_classes, data.input_shape, (data.low, data.high),
                              clip=data.clip, progress=progress)  # fmt: skip
    if float(counts.sum()) == 0:
        raise DataError("The data is empty: a release needs at least one record.")
    facts = data.facts
    if table is None:
        facts.pop("table", None)
    rel = finalize(
        sums, counts, fmaps, epsilon=epsilon, delta=delta, neighbouring=neighbouring, budget_split=shares,
        count_weight=count_weight, noise_seed=noise_seed, schema=facts,
    )  # fmt: skip
    multipliers = rel.metadata["privacy"]["noise_multipliers"]
    data.record_stage(stage="release", event=dp_event(multipliers), epsilon=rel.epsilon, delta=rel.delta, output=output,
                      neighbouring=rel.neighbouring, noise_multipliers=multipliers,
                      details={"content_hash": rel.content_hash()})  # fmt: skip
    if record is not None:  # the record's head after this entry; outside the content hash, which the entry holds
        rel.metadata["budget_record"] = record.stamp()
    return rel


def accumulate(
    batches: "Iterable[tuple[torch.Tensor, torch.Tensor]] | PrivateData",
    fmaps: Sequence[FeatureMap],
    n_classes: int,
    input_shape: Sequence[int],
    bounds: tuple[float, float],
    *,
    clip: bool = False,
    progress: bool = False,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The exact (un-noised) class-conditional sums and counts of a stream of batches, as float64.

    :func:`accumulate_fixed_point` (read its notes), converted once: each sum by
    :func:`~mmgen.privacy.bounds.from_fixed_point`, the counts to float64.

    Returns:
        ``(sums, counts)``: one (C, D_k) float64 tensor per feature map and a (C,) float64 tensor.
    """
    sums, counts = accumulate_fixed_point(batches, fmaps, n_classes, input_shape, bounds, clip=clip, progress=progress)
    return [from_fixed_point(acc) for acc in sums], counts.to(torch.float64)


def accumulate_fixed_point(
    batches: "Iterable[tuple[torch.Tensor, torch.Tensor]] | PrivateData",
    fmaps: Sequence[FeatureMap],
    n_classes: int,
    input_shape: Sequence[int],
    bounds: tuple[float, float],
    *,
    clip: bool = False,
    progress: bool = False,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The exact (un-noised) class-conditional sums and counts of a stream of batches, as int64.

    ``batches`` is an iterable of ``(x, y)`` batches, each checked here against the declarations,
    or the gate itself (:class:`~mmgen.data.private.PrivateData`), whose batches are checked already.

    This is the only place the private records are read. Its outputs are
    private: they must go through :func:`finalize` (which adds the noise; convert
    them first, as :func:`accumulate` does) before anything leaves the process.

    Every record's features are computed at the map's release precision
    (:meth:`~mmgen.features.FeatureMap.release_features`, float64 where the map
    can), capped to the map's ``max_norm`` in float64, rounded per record to a
    fixed-point grid and summed as integers (:mod:`mmgen.privacy.bounds`): the
    sums are exact and do not depend on the order or the batching of the
    records, so one record added or removed moves them by that record's row alone.
    The records are regrouped, across batch boundaries, into chunks of one size per release
    (at most ``_CHUNK_ELEMENTS`` float64 features, so a chunk's passes stay near the caches);
    the maps whose features come from matrix products (rff, ntk, table-rff) get every chunk at
    that size, the last one padded with the domain's lower bound and the padding's features
    zeroed, so each record's float64 row comes from a product of the same shape wherever the
    stream puts it (a BLAS picks its kernel, hence its rounding, by the shape).
    For ``table-marginals`` the well-formed rows (every column one-hot, as real encodings are) skip
    the dense features: their rounded rows are exactly q_t on their cell of each table t, q taken
    from the dense path itself (:func:`_one_hot_plan`), so their class sums are q_t times integer counts
    (:meth:`~mmgen.features.TableMarginals.cell_counts`), equal to the dense sums bit for bit; any
    other row goes through the dense path.

    Sums of several disjoint parts of the data (shards) add up exactly in int64, and
    give the sums of the whole (:mod:`mmgen.distributed`).

    Returns:
        ``(sums, counts)``: one (C, D_k) int64 tensor per feature map, in units of the grid
        ``2^-FRACTION_BITS``, and the (C,) int64 counts.

    Raises:
        DataError: a batch is malformed, or a feature map produced NaN or inf (named by statistic).
    """
    gated = isinstance(batches, PrivateData)
    stream = batches.batches() if gated else batches
    for f in fmaps:
        check_rounding_budget(f.output_dim)
    devices = [_device_of(f) for f in fmaps]
    # int64 sums on each map's device, brought to the CPU once at the end (a GPU is not synchronised per chunk)
    sums = [torch.zeros(n_classes, f.output_dim, dtype=torch.int64, device=d) for f, d in zip(fmaps, devices)]
    counts = torch.zeros(n_classes, dtype=torch.int64)
    names = _unique_names(list(fmaps))
    plans = [_one_hot_plan(f) for f in fmaps]  # q per entry: table-marginals' well-formed rows summed sparsely; else None
    plans = [None if q is None else q.to(d) for q, d in zip(plans, devices)]
    dense_rows = [_chunk_rows(f.output_dim, d) for f, d in zip(fmaps, devices)]  # float64 rows per chunk
    # rff with lattice frequencies: its exact products do not depend on the rows' grouping, so one product
    # covers _PRODUCT_SLICES of its float64 slices (a larger, faster GEMM; the elementwise passes stay cache-sized)
    lattice = [q is None and _lattice(f) for f, q in zip(fmaps, plans)]
    rows = max(1, min(*(_max_rows(d) for d in devices),
                      *(_SPARSE_ELEMENTS // (2 * f.input_dim) if q is not None else _PRODUCT_SLICES * r if lat else r
                        for f, q, r, lat in zip(fmaps, plans, dense_rows, lattice))))  # fmt: skip
    padded = [q is None and not lat and _pads(f) for f, q, lat in zip(fmaps, plans, lattice)]  # exact products need none
    chunks = _Chunks(rows, bounds[0])
    seen = 0
    bar = _progress(progress)


    def add(xc: torch.Tensor, yc: torch.Tensor, n: int) -> None:
        """Adds the first n records of one chunk (xc, yc hold ``rows`` records, or n when the stream ended early)."""
        for acc, f, name, q, step, device, pad, lat in zip(sums, fmaps, names, plans, dense_rows, devices, padded, lattice):
            try:
                if pad:  # every call has the same shape: the rows after the n-th are padding, their features zeroed
                    phi = f.release_features(xc.to(device))
                    phi[n:] = 0
                    acc += fixed_point_class_sums(phi, yc.to(device), n_classes, f.max_norm)
                    continue
                xd, yd = xc[:n].to(device), yc[:n].to(device)
                if q is not None:  # well-formed rows: q times their cells' counts; the others go dense
                    ok, cells, bins = f.one_hot_cells(xd)
                    acc.add_(f.cell_counts(cells[ok], bins[ok], yd[ok], n_classes).to(acc.device) * q)
                    xd, yd = xd[~ok], yd[~ok]
                # lattice rff: the exact products of the whole chunk at once, then the features slice by slice
                rows_in, features = (f.release_products(xd), f.release_features_from_products) if lat else (xd, f.release_features)
                for at in range(0, len(yd), step):
                    phi = features(rows_in[at : at + step])
                    acc += fixed_point_class_sums(phi, yd[at : at + step], n_classes, f.max_norm)
            except NonFiniteFeatures:
                raise DataError(
                    f"Statistic {name!r}: the feature map produced NaN or inf for some records, so no "
                    "release was made (a non-finite value would survive the noise and show its class). "
                    "Check the map's options and weights."
                ) from None

    try:
        with torch.no_grad(), _closing(bar):
            for xb, yb in stream:
                if not gated:  # the gate's batches are checked already (one pass over the data, not two)
                    xb, yb = check_batch(xb, yb, input_shape, n_classes, *bounds, clip, seen)
                if not len(yb):
                    continue
                for xc, yc, n in chunks.add(xb, yb):
                    add(xc, yc, n)
                counts += torch.bincount(yb.cpu(), minlength=n_classes)
                seen += len(yb)
                if bar is not None:
                    bar.update(1)
            for xc, yc, n in chunks.flush():
                add(xc, yc, n)
    finally:
        chunks.clear()  # its buffer holds private records
        clear_workspace()  # the kernels' reused buffer holds features of the last private chunk
    return [acc.cpu() for acc in sums], counts


def _max_rows(device: torch.device | None) -> int:
    """Records per chunk at most: 4,096 on the CPU, ``_DEVICE_MAX_ROWS`` on a device."""
    return 4096 if device is None or device.type == "cpu" else _DEVICE_MAX_ROWS


def _chunk_rows(dim: int, device: torch.device | None = None) -> int:
    """Records per dense chunk for a map of ``dim`` features on ``device``.

    On the CPU at most ``_CHUNK_ELEMENTS`` float64 values (a chunk's elementwise passes stay near the
    caches), a multiple of 64 rows from 64 on (MKL's float64 product ran ~10 % slower on 209 rows than
    on 192 or 256), at most 4,096 rows; elsewhere at most ``_DEVICE_CHUNK_ELEMENTS`` values (fewer,
    larger launches) and ``_DEVICE_MAX_ROWS`` rows.
    """
    budget = _CHUNK_ELEMENTS if device is None or device.type == "cpu" else _DEVICE_CHUNK_ELEMENTS
    rows = max(1, min(_max_rows(device), budget // max(dim, 1)))
    if rows < _WIDE_MIN_ROWS:  # a very wide map (ntk at the DP-NTK paper's width, 628,801 features): a few records
        # per chunk would spend most of the time writing (C, D) class sums, so take up to 128 records, within
        # _WIDE_CHUNK_ELEMENTS (1 GiB of float64); 814 s -> 282 s for that release (docs/release_e2e.md)
        rows = max(rows, min(128, _WIDE_CHUNK_ELEMENTS // max(dim, 1)))
    return rows - rows % 64 if rows >= 64 else rows


def _lattice(f: FeatureMap) -> bool:
    """Whether f is rff with lattice frequencies, whose release products are exact integers (``docs/privacy.md``)."""
    return isinstance(f, RandomFourierFeatures) and f.lattice_ is not None


def _pads(f: FeatureMap) -> bool:
    """Whether the release path computes f on chunks of one shape only, the last one padded.

    The maps whose float64 features come from matrix products: a BLAS may round a row differently
    for another number of rows (MKL picks its kernel by the shape), and padding the last chunk
    gives every record the same product wherever the stream puts it. Not for the others: the
    elementwise maps need no padding, and a perceptual chunk of padding costs a backbone pass.
    """
    return isinstance(f, (RandomFourierFeatures, NTKFeatures, TableRFF))


class _Chunks:
    """Regroups a stream of checked batches into chunks of exactly ``rows`` records, across batch boundaries.

    :meth:`add` yields ``(x, y, n)`` with ``n = rows``: views of the batch where a whole chunk lies in it,
    else a buffer filled from consecutive batches; :meth:`flush` yields the last, partial chunk, its rows
    after the n-th set to the public value ``fill`` (the domain's lower bound) with label 0.
    """

    def __init__(self, rows: int, fill: float):
        self.rows, self.fill = rows, float(fill)
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.n = 0

    def add(self, xb: torch.Tensor, yb: torch.Tensor):
        at, total = 0, len(yb)
        if self.n:  # top up the chunk begun by earlier batches
            take = min(self.rows - self.n, total)
            self._put(xb[:take], yb[:take])
            at = take
            if self.n == self.rows:
                self.n = 0
                yield self.x, self.y, self.rows
        while total - at >= self.rows:
            yield xb[at : at + self.rows], yb[at : at + self.rows], self.rows
            at += self.rows
        if at < total:
            self._put(xb[at:], yb[at:])

    def flush(self):
        if self.n:
            n, self.n = self.n, 0
            self.x[n:] = self.fill
            self.y[n:] = 0
            yield self.x, self.y, n

    def clear(self) -> None:
        self.x = self.y = None
        self.n = 0

    def _put(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.x is None:
            self.x = torch.empty(self.rows, *x.shape[1:], dtype=x.dtype, device=x.device)
            self.y = torch.empty(self.rows, dtype=torch.int64, device=x.device)
        dtype = torch.promote_types(self.x.dtype, x.dtype)
        if dtype != self.x.dtype or x.device != self.x.device:  # a wider dtype or another device: move what is staged
            self.x, self.y = self.x.to(device=x.device, dtype=dtype), self.y.to(x.device)
        self.x[self.n : self.n + len(x)] = x
        self.y[self.n : self.n + len(y)] = y
        self.n += len(x)


def _one_hot_plan(f: FeatureMap) -> torch.Tensor | None:
    """For ``table-marginals``: per entry of φ, the fixed-point value the dense path gives a well-formed row there.

    A well-formed record (:meth:`~mmgen.features.TableMarginals.one_hot_cells`) has exactly one nonzero
    in each of the map's n = K + P tables, and its value there, ``v_t`` (the table's public weight times
    ``scale_``, a product of the same float64 numbers wherever the nonzero sits), is the same bit for
    bit for every such record. The dense path (cap in float64, round to the grid,
    :func:`~mmgen.privacy.bounds.fixed_point_class_sums`) turns it into ``round(v_t·2^FRACTION_BITS / s)``,
    where ``s = max(1, ‖φ‖/m)`` and the float64 norm, a sum of the same n non-negative squares in
    whatever order, lies within a relative ``η = (n + 4)·2^-52`` of their exact root. The values q_t are
    read off the dense path itself on :meth:`~mmgen.features.TableMarginals.canonical_row`; they are
    used only if every ``round(v_t·2^FRACTION_BITS / s)`` is the same integer for every such s, so every
    well-formed row's rounded row is exactly ``q_t`` on its cell of table t and the class sums are
    ``q_t`` times integer counts, equal to the dense path's bit for bit (the sensitivity argument is
    unchanged). Otherwise (a near-tie at the rounding) None: every row goes dense.

    Returns:
        (D,) int64 Tensor, ``q_t`` repeated over the entries of table t; or None.

    Raises:
        PrivacyError: the dense path's canonical row is not one value per table on the record's cells,
            or its rounded norm ``2^-FRACTION_BITS·√(Σ q_t²)`` exceeds the bound the sensitivity assumes.
    """
    if type(f) is not TableMarginals:  # exactly this map: a subclass may change φ
        return None
    device = _device_of(f)
    x0, y0 = f.canonical_row().to(device), torch.zeros(1, dtype=torch.int64, device=device)
    ok, cells, bins = f.one_hot_cells(x0)
    phi = f.release_features(x0)
    row = fixed_point_class_sums(phi.clone(), y0, 1, f.max_norm)[0].cpu()  # the dense path's rounded row (it works in place)
    phi, hot = phi[0].cpu(), f.cell_counts(cells, bins, y0, 1)[0].cpu()
    sizes = f.table_sizes()
    on = hot == 1
    if (not bool(ok.all()) or int(hot.max()) != 1 or int(on.sum()) != len(sizes) or not torch.equal(row != 0, on)
            or not torch.equal(phi != 0, on)):  # fmt: skip
        raise PrivacyError("table-marginals: the dense path's rounded well-formed row is not one value per table on its cells.")
    values, q = phi[on].tolist(), row[on]
    norm = 2.0**-FRACTION_BITS * math.sqrt(math.fsum(float(v) ** 2 for v in q.tolist()))
    if norm > f.max_norm * (1 + NORM_SLACK) or norm > f.max_norm + rounding_bound(f.output_dim):
        raise PrivacyError(f"table-marginals: a well-formed row's rounded norm {norm!r} exceeds the sensitivity's bound.")
    exact, eta = math.sqrt(math.fsum(v * v for v in values)), (len(values) + 4) * 2.0**-52
    lo, hi = (max(1.0, exact * (1 + e) / f.max_norm) for e in (-eta, eta))  # the cap factors the float norm allows
    for v, qt in zip(values, q.tolist()):
        t = v * 2.0**FRACTION_BITS
        if not round(t / hi) == round(t / lo) == qt:
            return None
    return torch.repeat_interleave(q, torch.tensor(sizes))


def finalize(
    sums: Sequence[torch.Tensor],
    counts: torch.Tensor,
    fmaps: Sequence[FeatureMap],
    *,
    epsilon: float,
    delta: float,
    neighbouring: str,
    budget_split: Sequence[float],
    count_weight: float,
    noise_seed: int | None,
    schema: dict,
) -> Release:
    """Adds calibrated Gaussian noise to exact sums and counts and builds the :class:`Release`.

    The first statistic's vector is ``[a·S_0, b·n]`` (a² + b² = 1); later ones
    are ``S_k`` alone. Each gets ``N(0, (σ_k Δ_k)² I)`` with σ_k from the budget
    split (μ_k² = w_k μ²) and Δ_k from :func:`~mmgen.privacy.sensitivity`.
    """
    if not (len(sums) == len(fmaps) == len(budget_split)):
        raise PrivacyError(
            f"finalize needs one sum, one feature map and one budget weight per statistic. "
            f"Got {len(sums)} sums, {len(fmaps)} feature maps, {len(budget_split)} weights."
        )
    names = _unique_names(list(fmaps))
    for name, acc in zip(names, sums):
        if not bool(torch.isfinite(acc).all()):
            raise DataError(f"Statistic {name!r}: its exact sums hold NaN or inf; no release was made.")
    if not bool(torch.isfinite(counts).all()):
        raise DataError("The class counts hold NaN or inf; no release was made.")
    multipliers = split_noise_multipliers(epsilon, delta, budget_split)
    total = sum(budget_split)
    shares = [w / total for w in budget_split]
    b = float(count_weight)
    a = math.sqrt(1.0 - b * b)
    stats = []
    for k, (name, f, acc, sigma, share) in enumerate(zip(names, fmaps, sums, multipliers, shares)):
        bk = b if k == 0 else 0.0
        ak = a if k == 0 else 1.0
        delta_k = sensitivity(neighbouring, max_norm=f.max_norm, feature_weight=ak, count_weight=bk)
        seed = None if noise_seed is None else noise_seed + k
        vec = torch.cat([ak * acc, (bk * counts)[:, None]], dim=1) if bk else ak * acc
        noisy = gaussian_mechanism(vec, noise_multiplier=sigma, sensitivity=delta_k, noise_seed=seed)
        stats.append(
            Statistic(
                name=name, feature_spec=f.spec(), sums=_dense(noisy[:, : f.output_dim]),
                counts=_dense(noisy[:, -1]) if bk else None, feature_weight=ak, count_weight=bk,
                noise_multiplier=sigma, sensitivity=delta_k, budget_share=share,
            )  # fmt: skip
        )
    composed = composed_noise_multiplier(multipliers)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "privacy": {
            "epsilon": float(epsilon),
            "delta": float(delta),
            "neighbouring": neighbouring,
            "mechanism": "gaussian",
            "noise_multipliers": multipliers,
            "composed_noise_multiplier": composed,
            "epsilon_check": epsilon_for(composed, delta),
            "budget_split": shares,
            "for_publication": noise_seed is None,
            "noise_source": NOISE_SOURCE if noise_seed is None else SEEDED_NOISE_SOURCE,
        },
        "data": dict(schema),
        "statistics": [s.header() for s in stats],
    }
    return Release(statistics=tuple(stats), metadata=metadata)


def _feature_maps(features, input_shape, bounds, layout=None) -> list[FeatureMap]:
    """The feature maps of ``features``, set up and checked; a name expands as the CLI expands it.

    A name (or comma-separated spec) goes through :func:`mmgen.features.statistics`, so a bundle
    such as ``"hermite"`` or ``"perceptual"`` gives its several statistics, in the same order and
    with the same specs as ``mmgen release --features NAME``; :func:`mmgen.features.default_budget_split`
    gives the matching default split. With a table's ``layout``, every map that reads one
    (``table-marginals``, ``table-rff``) gets it, and an instance must carry the same one.
    """
    items = [features] if isinstance(features, (str, FeatureMap)) else list(features)
    if not items:
        raise MMGenError("`features` is empty: name at least one feature map.")
    maps = []
    for item in items:
        if isinstance(item, str):
            wants = layout is not None and any("layout" in get_class(m).Config.__dataclass_fields__ for m, _, _ in expand(item))
            opts = {"*": {"layout": layout}} if wants else None
            maps.extend(statistics(item, input_shape=input_shape, bounds=bounds, options=opts))
        elif isinstance(item, FeatureMap):
            maps.append(item)
        else:
            raise MMGenError(f"`features` must hold names or FeatureMap instances. Got {type(item).__name__}.")
    out = []
    for f in maps:
        if not f.is_setup:
            if layout is not None and "layout" in type(f.config).__dataclass_fields__ and f.config.layout is None:
                f = type(f)(dataclasses.replace(f.config, layout=layout))  # a table map takes the schema's layout
            f.setup(input_shape, bounds)
        elif tuple(f.input_shape_) != tuple(input_shape) or tuple(f.bounds_) != tuple(bounds):
            raise DataError(
                f"Feature map {f.name!r} was set up for shape {f.input_shape_} and bounds {f.bounds_}; "
                f"the data has shape {tuple(input_shape)} and bounds {tuple(bounds)}."
            )
        has_layout = hasattr(f, "layout_")
        if has_layout and layout is not None and [list(b) for b in f.layout_] != [list(b) for b in layout]:
            raise DataError(f"Feature map {f.name!r} was set up for another table layout than the schema's.")
        if has_layout and layout is None and f.config.layout is not None:
            raise DataError(f"Feature map {f.name!r} reads a table layout, but the data has no schema.")
        if not (0 < f.max_norm <= 1):
            raise PrivacyError(f"Feature map {f.name!r} declares max_norm={f.max_norm}; it must be in (0, 1].")
        out.append(f)
    return out


def _dense(t: torch.Tensor) -> torch.Tensor:
    """A copy with standard strides (a clone keeps odd strides on size-1 dimensions, which views then refuse)."""
    return t.new_empty(t.shape).copy_(t)


def _unique_names(fmaps: list[FeatureMap]) -> list[str]:
    names, seen = [], {}
    for f in fmaps:
        seen[f.name] = seen.get(f.name, 0) + 1
        names.append(f.name if seen[f.name] == 1 else f"{f.name}{seen[f.name]}")
    return names


def _device_of(f: FeatureMap) -> torch.device:
    for t in list(f.parameters()) + list(f.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _closing(bar):
    """Closes a progress bar on the way out, also on an error (so an error message starts a fresh line)."""
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def _progress(enabled: bool):
    """A progress bar that counts batches, with no total: the console never shows the number of records."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    import sys

    quiet_log = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())  # a log file: update rarely
    return tqdm(desc="release", unit=" batches", mininterval=30.0 if quiet_log else 0.1)
