"""Feature maps for mixed-type table records (numbers, categories, gaps).

A table row is encoded by its public schema (:mod:`mmgen.data.tables`) as a
vector in ``[0, 1]^D`` made of blocks: ``binned`` (the scaled value t, then the
one-hot of its fine public cell; F cells, B coarse bins, cell k in bin ``⌊k·B/F⌋``),
``binned-missing`` (t, the missingness ``m``, the cell one-hot) and ``categorical``
(a one-hot block). Vectors without a schema use
``numeric`` blocks (one slot, t) and ``numeric-missing`` blocks (t, m). The block
list, the *layout*, is public and part of each map's config; without one, every
slot is a ``numeric`` column.

Both maps keep ``‖φ(x)‖₂ ≤ 1`` for **every** ``x ∈ [0, 1]^D``, not only for
well-formed encodings, so a caller who passes arbitrary vectors in the declared
domain cannot raise the sensitivity.

``table-rff`` — DP-MERF's map for heterogeneous data (Harder et al., AISTATS 2021,
§5: a sum of a Gaussian kernel on the numeric columns and a linear kernel on the
one-hot categorical ones)::

    φ(x) = [ √w · RFF(t),  √(1−w) · (v_1/ν_1 ⊕ … ⊕ v_J/ν_J) / √J ]

where ``t`` holds the numeric values (a missing one as ``t·(1−m)``; bin slots are not
read), ``v_j`` the categorical blocks plus each missingness pair ``(1−m, m)``,
``ν_j = max(1, ‖v_j‖₂)``.
Proof of the bound: ‖RFF(t)‖ = 1 exactly (cos² + sin²), each ``v_j/ν_j`` has norm
≤ 1, so ``‖φ‖² ≤ w + (1−w)·J/J = 1``.

``table-marginals`` — the moment-matching counterpart of what MST and AIM measure
(Liu, Vietri & Wu, "Iterative methods for private synthetic data", NeurIPS 2021):
each column j becomes a non-negative vector ``u_j`` with ``Σ u_j ≤ 1`` (its fine cells),

* a categorical block, a ``binned`` block's cell one-hot b, or a ``binned-missing`` block's
  ``[b, m]``: ``v / max(1, Σ v)`` (clipped at 0; a one-hot row is unchanged), so the class
  means are exactly the marginal tables on the public cells;
* a ``numeric`` slot t (no schema) on B bins: hat weights ``h_b(t) = max(0, 1 − |t(B−1) − b|)``,
  and ``[(1−m)·h(t), m]`` for ``numeric-missing`` (these match hat-smoothed histograms only);

and its coarse vector ``c_j = A_j u_j``, the cells summed into their bins (``A_j`` the public
0/1 matrix of cell → bin; the missing cell stays its own; ``c_j = u_j`` when a column has no
finer cells). Then

    φ(x) = s · (⊕_j v_j u_j  ⊕  ⊕_{j<k} vec(√a_j c_j ⊗ √a_k c_k)),    s = (Σ_j v_j² + Σ_{j<k} a_j a_k)^(−1/2)

over the K columns and their ``P = K(K−1)/2`` pairs: **multi-resolution** marginals. The mean
of φ over a class is exactly its 1-way marginal tables on the fine cells (where a value falls
inside its bin) and its 2-way tables on the coarse bins that the metrics use (hat-smoothed for
plain ``numeric`` slots), each scaled by a public constant. The weights are public, fixed by the
layout alone (``weighting``): ``"cells"`` (the default) gives column j's 1-way table the weight
``v_j = F_j^(1/3)`` and pair (j, k) the weight ``√(a_j a_k) = (B_j B_k)^(1/3)``, so a table of more
cells gets a larger share of the norm and less relative noise. That share minimises the sum
over the tables of their expected L1 noise (a table of n cells with feature weight w has L1
noise ∝ n/w; minimising Σ n_t/w_t subject to Σ w_t² = 1 gives w_t ∝ n_t^(1/3)), and it is
separable over columns, which keeps the pair part a product. ``"equal"`` (``v = a = 1``) is the
map of releases written before the weights existed (a release's spec without the field reads
as equal). Proof of the bound: ``‖u_j‖₂ ≤ ‖u_j‖₁ ≤ 1``, ``‖c_j‖₁ = ‖u_j‖₁ ≤ 1`` (A_j sums disjoint
groups of non-negative entries) and ``‖c_j ⊗ c_k‖₂ = ‖c_j‖₂‖c_k‖₂ ≤ 1``, so
``‖φ‖² ≤ s²(Σ_j v_j² + Σ_{j<k} a_j a_k) = 1``.

A generator outputs *relaxed* blocks (category and bin probabilities, missingness
probabilities): both maps are smooth in them, and for the marginal map the
features of a relaxed row are exactly the expected features of the draws it
stands for (the blocks are drawn independently given the latent code and label).
"""

from __future__ import annotations

import dataclasses
import math
from itertools import combinations

import torch

from ..config import Config
from ..errors import DataError, MMGenError
from .base import FeatureMap, matching_loss_from_sums, register

__all__ = ["TableRFFConfig", "TableRFF", "TableMarginalsConfig", "TableMarginals", "check_layout"]

_KINDS = ("numeric", "numeric-missing", "binned", "binned-missing", "categorical")
DEFAULT_TABLE_BANDWIDTH_SCALE = 0.5


def check_layout(layout, input_dim: int | None = None, bins: int = 16) -> tuple[tuple[str, int, int], ...]:
    """Validates a layout (``[[kind, size, bins], …]``) and returns it as tuples.

    ``None`` stands for ``input_dim`` numeric columns of ``bins`` bins each.
    """
    if layout is None:
        if input_dim is None:
            return None
        return tuple(("numeric", 1, bins) for _ in range(input_dim))
    out = []
    for i, block in enumerate(layout):
        try:
            kind, size, nb = block
            size, nb = int(size), int(nb)
        except (TypeError, ValueError):
            raise MMGenError(f"Layout block {i} must be [kind, size, bins]. Got {block!r}.") from None
        cells = size - {"binned": 1, "binned-missing": 2}.get(kind, size - nb)  # a binned block's fine cells (≥ its bins)
        want = {"numeric": 1, "numeric-missing": 2}.get(kind, nb if kind == "categorical" else size)
        if kind not in _KINDS or size < 1 or size != want or nb < 1 or (kind != "categorical" and nb < 2) or cells < nb:
            raise MMGenError(f"Layout block {i} is malformed: {block!r} (kinds: {', '.join(_KINDS)}).")
        out.append((kind, size, nb))
    if not out:
        raise MMGenError("A layout needs at least one block.")
    if input_dim is not None and sum(s for _, s, _ in out) != input_dim:
        raise DataError(f"The layout covers {sum(s for _, s, _ in out)} slots; the records have {input_dim}.")
    return tuple(out)


class _TableMap(FeatureMap):
    """Shared set-up: the layout, checked against the record length."""

    def _setup(self) -> None:
        self.layout_ = check_layout(self.config.layout, self.input_dim, getattr(self.config, "bins", 16))
        starts, pos = [], 0
        for _, size, _ in self.layout_:
            starts.append(pos)
            pos += size
        self.starts_ = starts

    def _blocks(self, x: torch.Tensor):
        low, high = self.bounds_
        if (low, high) != (0.0, 1.0):  # encoded tables live in [0, 1]; other declared domains are rescaled to it
            x = (x - low) / (high - low)
        for (kind, size, nb), start in zip(self.layout_, self.starts_):
            yield kind, nb, x[:, start : start + size]


@dataclasses.dataclass(frozen=True)
class TableRFFConfig(Config):
    """Hyper-parameters of :class:`TableRFF`.

    Attributes:
        layout: the encoded row's blocks (from :meth:`mmgen.data.tables.Schema.layout`); None: all numeric.
        n_features: random Fourier features of the numeric block (even).
        bandwidth: the Gaussian kernel's length-scale on the scaled numbers; None:
            ``bandwidth_scale · sqrt(number of numeric columns)`` (data-independent).
        bandwidth_scale: see ``bandwidth``.
        numeric_weight: w, the numeric block's share of ‖φ‖²; None: the numeric columns' share of all columns.
        seed: public seed of the frequencies.
    """

    layout: tuple | None = None
    n_features: int = 2000
    bandwidth: float | None = None
    bandwidth_scale: float = DEFAULT_TABLE_BANDWIDTH_SCALE
    numeric_weight: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.layout is not None:
            object.__setattr__(self, "layout", check_layout(self.layout))
        if not isinstance(self.n_features, int) or self.n_features < 2 or self.n_features % 2:
            raise MMGenError(f"`n_features` must be an even integer ≥ 2. Got {self.n_features!r}.")
        if self.bandwidth is not None and not (self.bandwidth > 0 and math.isfinite(self.bandwidth)):
            raise MMGenError(f"`bandwidth` must be > 0. Got {self.bandwidth!r}.")
        if not self.bandwidth_scale > 0:
            raise MMGenError(f"`bandwidth_scale` must be > 0. Got {self.bandwidth_scale!r}.")
        if self.numeric_weight is not None and not 0 <= self.numeric_weight <= 1:
            raise MMGenError(f"`numeric_weight` must be in [0, 1]. Got {self.numeric_weight!r}.")


@register
class TableRFF(_TableMap):
    """DP-MERF's heterogeneous map: RFF of the numbers beside the scaled one-hot categories (see the module)."""

    name = "table-rff"
    Config = TableRFFConfig

    def _setup(self) -> None:
        super()._setup()
        c = self.config
        n_num = sum(k != "categorical" for k, _, _ in self.layout_)
        n_cat = sum(k not in ("numeric", "binned") for k, _, _ in self.layout_)  # categorical blocks, missingness pairs
        n_cols = len(self.layout_)
        w = c.numeric_weight if c.numeric_weight is not None else n_num / n_cols
        self.numeric_weight_ = float(w if n_cat else 1.0) if n_num else 0.0
        self.n_numeric_, self.n_categorical_ = n_num, n_cat
        self.bandwidth_ = c.bandwidth if c.bandwidth is not None else c.bandwidth_scale * math.sqrt(max(n_num, 1))
        gen = torch.Generator().manual_seed(c.seed)
        self.register_buffer(
            "weights_", torch.randn(max(n_num, 1), c.n_features // 2, generator=gen, dtype=torch.float64) / self.bandwidth_,
            persistent=False,
        )
        self.register_buffer("weights32_", self.weights_.float(), persistent=False)

    @property
    def output_dim(self) -> int:
        self._check_setup()
        return (self.config.n_features if self.n_numeric_ else 0) + sum(
            s if k == "categorical" else 2 for k, s, _ in self.layout_ if k not in ("numeric", "binned")
        )

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        nums, cats = [], []
        for kind, _, block in self._blocks(x):
            if kind in ("numeric", "binned"):
                nums.append(block[:, :1])
            elif kind in ("numeric-missing", "binned-missing"):
                m = block[:, 1:2]
                nums.append(block[:, :1] * (1 - m))
                cats.append(torch.cat([1 - m, m], dim=1))
            else:
                cats.append(block)
        parts = []
        if nums:
            w = self.weights_ if x.dtype == torch.float64 else self.weights32_
            proj = torch.cat(nums, dim=1) @ w.to(x.device)
            half = self.config.n_features // 2
            rff = torch.cat([torch.cos(proj), torch.sin(proj)], dim=1) / math.sqrt(half)
            parts.append(math.sqrt(self.numeric_weight_) * rff)
        if cats:
            scale = math.sqrt((1.0 - self.numeric_weight_) / len(cats))
            parts.extend(scale * v / v.norm(dim=1, keepdim=True).clamp(min=1.0) for v in cats)
        return torch.cat(parts, dim=1)


@dataclasses.dataclass(frozen=True)
class TableMarginalsConfig(Config):
    """Hyper-parameters of :class:`TableMarginals`.

    Attributes:
        layout: the encoded row's blocks (from :meth:`mmgen.data.tables.Schema.layout`); None: all numeric.
        bins: bins of each numeric slot when there is no layout (a layout carries its own).
        two_way: add every pair's 2-way table on the coarse bins (else the 1-way marginals alone).
        weighting: ``"cells"``: each table's share of the norm grows as its cells^(1/3) (see the module);
            ``"equal"``: every table the same (releases written before the field existed).
    """

    layout: tuple | None = None
    bins: int = 16
    two_way: bool = True
    weighting: str = "cells"

    def __post_init__(self):
        if self.weighting not in ("cells", "equal"):
            raise MMGenError(f"`weighting` must be 'cells' or 'equal'. Got {self.weighting!r}.")
        if self.layout is not None:
            object.__setattr__(self, "layout", check_layout(self.layout))
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 2:
            raise MMGenError(f"`bins` must be an integer ≥ 2. Got {self.bins!r}.")


@register
class TableMarginals(_TableMap):
    """Features whose class means are the 1-way and 2-way marginal tables (see the module)."""

    name = "table-marginals"
    Config = TableMarginalsConfig

    def _setup(self) -> None:
        super()._setup()
        fine, coarse, groups = [], [], []
        for kind, size, nb in self.layout_:
            cells = {"binned": size - 1, "binned-missing": size - 2}.get(kind, nb)
            missing = kind in ("numeric-missing", "binned-missing")
            fine.append(cells + missing)
            coarse.append(nb + missing)
            if cells == nb:
                groups.append(None)
            else:  # cell k → bin ⌊k·nb/cells⌋; the missing cell → the missing bin
                g = (torch.arange(cells) * nb) // cells
                groups.append(torch.cat([g, torch.tensor([nb])]) if missing else g)
        self.cells_, self.bins_, self.groups_ = fine, coarse, groups
        k = len(fine)
        self.pairs_ = list(combinations(range(k), 2)) if self.config.two_way else []
        cells = self.config.weighting == "cells"
        self.one_way_weights_ = [float(f) ** (1 / 3) if cells else 1.0 for f in fine]  # v_j
        self.pair_weights_ = [float(b) ** (1 / 3) if cells else 1.0 for b in coarse]  # √a_j
        total = sum(v * v for v in self.one_way_weights_) + sum(
            (self.pair_weights_[i] * self.pair_weights_[j]) ** 2 for i, j in self.pairs_)
        self.scale_ = 1.0 / math.sqrt(total)

    @property
    def output_dim(self) -> int:
        self._check_setup()
        return sum(self.cells_) + sum(self.bins_[i] * self.bins_[j] for i, j in self.pairs_)

    def coarse_vectors(self, u: list[torch.Tensor]) -> list[torch.Tensor]:
        """The per-column coarse vectors ``c_j``: each column's fine cells summed into its bins."""
        out = []
        for v, g, nb in zip(u, self.groups_, self.bins_):
            if g is None:
                out.append(v)
            else:
                out.append(torch.zeros(len(v), nb, dtype=v.dtype, device=v.device).index_add_(1, g.to(v.device), v))
        return out

    def column_vectors(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The per-column vectors ``u_j`` on the fine cells (non-negative, each summing to at most 1)."""
        out = []
        for kind, nb, block in self._blocks(x):
            if kind in ("categorical", "binned", "binned-missing"):
                v = block if kind == "categorical" else block[:, 1:] if kind == "binned" else torch.cat([block[:, 2:], block[:, 1:2]], dim=1)
                v = v.clamp(min=0)
                out.append(v / v.sum(dim=1, keepdim=True).clamp(min=1.0))
                continue
            knots = torch.arange(nb, dtype=x.dtype, device=x.device)
            t = block[:, :1].clamp(0, 1)
            hat = (1 - (t * (nb - 1) - knots).abs()).clamp(min=0)  # (N, B) hat weights, summing to 1
            if kind == "numeric":
                out.append(hat)
            else:
                m = block[:, 1:2].clamp(0, 1)
                out.append(torch.cat([(1 - m) * hat, m], dim=1))
        return out

    def weighted_vectors(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``([v_j u_j], [√a_j c_j])``: the column vectors and coarse vectors times their public weights."""
        u = self.column_vectors(x)
        c = self.coarse_vectors(u) if self.pairs_ else []
        return [v * uj for v, uj in zip(self.one_way_weights_, u)], [w * cj for w, cj in zip(self.pair_weights_, c)]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        u, c = self.weighted_vectors(x)
        parts = list(u)
        parts.extend((c[i][:, :, None] * c[j][:, None, :]).flatten(1) for i, j in self.pairs_)
        return torch.cat(parts, dim=1) * self.scale_

    # -- sparse paths (issue 22, item 4): linear in the pairs, never an (N, D) row per record ------------------
    def one_hot_cells(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which records are well-formed, with their fine cells and coarse bins.

        A record is *well-formed* when, at the release precision (float64, as
        :meth:`release_features`), every column vector ``u_j`` (:meth:`column_vectors`) and every
        coarse vector ``c_j`` (:meth:`coarse_vectors`) is exactly one-hot: entries 0 or 1, exactly
        one 1 (every real encoding is). Its features are then ``scale_`` on exactly ``K + P``
        entries (its cells and its pairs' bin pairs) and 0 elsewhere, bit for bit: ``1·scale_``
        and ``(1·1)·scale_`` are exact. Any other record (a relaxed or adversarial vector in the
        domain) is reported as not well-formed.

        Args:
            x ((N, *input_shape) Tensor): records inside the declared domain.

        Returns:
            ``(ok, cells, bins)``: (N,) bool, and (N, K) int64 the index of the 1 in each ``u_j``
            and each ``c_j`` (meaningful where ``ok``).
        """
        self._check_setup()
        if tuple(x.shape[1:]) != self.input_shape_:
            raise DataError(f"Expected x of shape (N, {', '.join(map(str, self.input_shape_))}). Got {tuple(x.shape)}.")
        x = x.reshape(len(x), -1).to(torch.float64)
        u = self.column_vectors(x)
        ok = torch.ones(len(x), dtype=torch.bool, device=x.device)
        found = []
        for vectors in (u, self.coarse_vectors(u)):
            idx = []
            for v in vectors:  # (N, F_j) or (N, B_j)
                ok &= ((v == 0) | (v == 1)).all(dim=1) & (v.sum(dim=1) == 1)
                idx.append(v.argmax(dim=1))
            found.append(torch.stack(idx, dim=1))
        return ok, found[0], found[1]

    def cell_counts(self, cells: torch.Tensor, bins: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
        """Per class, how many well-formed records have a nonzero in each entry of φ.

        For well-formed records (:meth:`one_hot_cells`) ``Σ_{i: y_i = c} φ(x_i) = counts[c]`` times each table's
        value (its public weight times ``scale_``).
        The 1-way part is one bincount of (class, column, cell); each column j's pairs ``(j, k > j)``
        lie side by side in φ, so their part is one bincount of (class, pair, ``bin_j·B_k + bin_k``):
        K + 1 bincounts in all, memory O(N·K), never (N, D).

        Args:
            cells ((N, K) int64): each record's fine cell per column.
            bins ((N, K) int64): each record's coarse bin per column.
            y ((N,) int64): labels in ``[0, n_classes)``.
            n_classes: C.

        Returns:
            (C, D) int64 Tensor.
        """
        self._check_setup()
        dev = cells.device
        k = len(self.cells_)
        out = torch.zeros(n_classes, self.output_dim, dtype=torch.int64, device=dev)
        if not len(y):
            return out
        y = y.to(dev)[:, None]
        width = sum(self.cells_)
        starts = torch.tensor([0, *self.cells_[:-1]], device=dev).cumsum(0)  # (K,) each column's first cell
        idx = y * width + starts + cells  # (N, K) positions in a (C, ΣF) table
        out[:, :width] += torch.bincount(idx.flatten(), minlength=n_classes * width).view(n_classes, width)
        if not self.pairs_:
            return out
        pos = width
        for j in range(k - 1):  # the pairs (j, j+1), …, (j, K-1), in the order of pairs_
            sizes = [self.bins_[j] * self.bins_[m] for m in range(j + 1, k)]
            span = sum(sizes)
            first = torch.tensor([0, *sizes[:-1]], device=dev).cumsum(0)  # (K-j-1,) each pair's start in the span
            nb = torch.tensor(self.bins_[j + 1 :], device=dev)
            idx = y * span + first + bins[:, j : j + 1] * nb + bins[:, j + 1 :]  # (N, K-j-1)
            out[:, pos : pos + span] += torch.bincount(idx.flatten(), minlength=n_classes * span).view(n_classes, span)
            pos += span
        return out

    def entry_scale(self) -> torch.Tensor:
        """(D,) float64: each entry of φ's factor over its marginal share (a table's weight times ``scale_``), so
        that a class mean of φ divided by it is the marginal tables themselves."""
        w = self.one_way_weights_ + [self.pair_weights_[i] * self.pair_weights_[j] for i, j in self.pairs_]
        return torch.repeat_interleave(torch.tensor(w, dtype=torch.float64) * self.scale_, torch.tensor(self.table_sizes()))

    def table_sizes(self) -> list[int]:
        """Entries of φ per table, in order: each column's 1-way table (its cells), then each pair's (bins × bins)."""
        self._check_setup()
        return list(self.cells_) + [self.bins_[i] * self.bins_[j] for i, j in self.pairs_]

    def canonical_row(self) -> torch.Tensor:
        """A well-formed record in the declared domain: every column in its first cell, nothing missing.

        Returns:
            (1, *input_shape) float64 Tensor (each slot the domain's ``low`` or ``high``).
        """
        self._check_setup()
        hot = torch.zeros(self.input_dim, dtype=torch.bool)
        for (kind, _, _), start in zip(self.layout_, self.starts_):
            first = {"categorical": 0, "binned": 1, "binned-missing": 2}.get(kind)
            if first is not None:  # numeric slots: t = 0 is knot 0, m = 0
                hot[start + first] = True
        low, high = (torch.tensor(b, dtype=torch.float64) for b in self.bounds_)
        return torch.where(hot, high, low).reshape(1, *self.input_shape_)

    def _pair_index(self, device) -> torch.Tensor:
        """(D − ΣF,) int64: where each pair entry of φ sits in a flattened (ΣB, ΣB) Gram matrix of the coarse vectors."""
        cached = self.__dict__.get("_pair_index_cache")
        if cached is None or cached.device != torch.device(device):
            nb = self.bins_
            starts = [sum(nb[:i]) for i in range(len(nb))]
            total = sum(nb)
            parts = []
            for i, j in self.pairs_:  # block (i, j) of the Gram matrix, row-major as vec(c_i ⊗ c_j)
                rows = torch.arange(starts[i], starts[i] + nb[i])[:, None] * total
                parts.append((rows + torch.arange(starts[j], starts[j] + nb[j])).flatten())
            cached = torch.cat(parts).to(device)
            self.__dict__["_pair_index_cache"] = cached  # not a buffer: no state_dict change
        return cached

    def matching_loss(
        self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, *, unbiased: bool = False
    ) -> torch.Tensor:
        """The matching loss of :meth:`FeatureMap.matching_loss`, from per-block class sums (no (B, D) tensor).

        The class sum of φ is ``(⊕_j Σ_i u_ij ⊕ ⊕_{j<k} vec(C_j^T C_k)) · scale_`` with ``u_ij`` and ``C_j``
        (n_c, B_j) the weighted column and coarse vectors (:meth:`weighted_vectors`) of the class's records; every block ``C_j^T C_k`` is read off one
        Gram matrix ``G_c = Cᵀ C`` of the concatenated coarse vectors ((ΣB, ΣB) per class). The unbiased
        estimate's ``Σ_i ‖φ_i‖²`` is ``scale_² Σ_i (Σ_j ‖u_ij‖² + Σ_{j<k} ‖c_ij‖²‖c_ik‖²)`` (weighted vectors). Same value
        and gradients as :func:`~mmgen.features.base.class_mean_matching_loss` on ``self(x)``, up to rounding.

        Args:
            x ((B, *input_shape) Tensor): generated (relaxed) records.
            y ((B,) Tensor): their int64 labels.
            targets ((C, D) Tensor): the released class-wise mean embeddings.
            unbiased: the unbiased estimate (see :func:`~mmgen.features.base.class_mean_matching_loss`).

        Returns:
            A scalar tensor.
        """
        self._check_setup()
        if tuple(x.shape[1:]) != self.input_shape_:
            raise DataError(f"Expected x of shape (N, {', '.join(map(str, self.input_shape_))}). Got {tuple(x.shape)}.")
        u, c = self.weighted_vectors(x.reshape(len(x), -1))
        n_classes, dt, dev = targets.shape[0], u[0].dtype, u[0].device
        flat = torch.cat(u, dim=1)  # (B, ΣF)
        sums = [torch.zeros(n_classes, flat.shape[1], dtype=dt, device=dev).index_add(0, y, flat)]
        if self.pairs_:
            coarse = torch.cat(c, dim=1)  # (B, ΣB)
            index = self._pair_index(dev)
            grams = []
            for k in range(n_classes):
                rows = coarse[y == k]  # (n_k, ΣB)
                grams.append((rows.T @ rows).flatten()[index])  # (ΣB, n_k) @ (n_k, ΣB) -> Gram; its pair blocks
            sums.append(torch.stack(grams))
        sums = torch.cat(sums, dim=1) * self.scale_  # (C, D)
        counts = torch.bincount(y, minlength=n_classes).to(dt)
        squares = None
        if unbiased:
            per = sum((v * v).sum(dim=1) for v in u)  # (B,) Σ_j ‖u_j‖²
            if self.pairs_:
                a = torch.stack([(v * v).sum(dim=1) for v in c], dim=1)  # (B, K) ‖c_j‖²
                per = per + (a[:, 1:] * a.cumsum(dim=1)[:, :-1]).sum(dim=1)  # Σ_k a_k Σ_{j<k} a_j
            squares = torch.zeros(n_classes, dtype=dt, device=dev).index_add(0, y, per * self.scale_**2)
        return matching_loss_from_sums(sums, counts, targets, squares=squares)
