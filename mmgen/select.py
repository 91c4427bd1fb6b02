"""Herding: rows of a generated pool chosen greedily to match a release (post-processing, no privacy cost).

Given the features ``φ_i`` ((M, D)) of a pool of generated rows and a target mean
embedding ``m`` ((D,)), kernel herding (Welling, ICML 2009; Chen, Welling & Smola,
UAI 2010, eq. 4) picks at step ``t`` (0-based, ``s_t`` the sum of the ``t`` rows
chosen so far) the pool row minimising the error of the running mean,

    i_t = argmin_i ‖(s_t + φ_i)/(t+1) − m‖²
        = argmin_i  ‖φ_i‖² + 2⟨φ_i, s_t − (t+1)·m⟩          (terms without i dropped)

Only the (M,) score vector is kept: with ``g_i = ⟨φ_i, s_t⟩`` and ``h_i = ⟨φ_i, m⟩``
(one pass over the pool), adding row j updates ``g ← g + K[:, j]`` where
``K[:, j] = Φ φ_j`` is one column of the pool's Gram matrix. Memory is linear in M:
the features are read in chunks, and for the ``table-marginals`` map the Gram column
comes from the rows' cell codes (for one-hot rows, ``⟨φ_i, φ_j⟩ = scale²·(Σ_k v_k² e_k +
Σ_{k<l} a_k a_l t_k t_l)`` with ``e_k``/``t_k`` whether the two rows share column k's cell/bin and
``v_k``, ``a_k`` the map's public weights), never from a dense (M, D) matrix.

A row is picked **at most once** by default (``replace=False``): the pool is
``pool × n`` rows, so there is room, and repeats would make the sample collapse onto
the few generated rows that best fit the *noisy* target (fewer distinct rows, worse
downstream models, more duplicates). ``replace=True`` gives textbook herding.

:func:`select_herding` is the class-conditional wrapper: it takes a fitted generator
and its release (never a data set), draws ``pool × n_c`` rows for each class c
(``n_c`` the release's noisy class proportions times n, rounded to sum to n; a class of more
than 1,000 rows in equal blocks, each with its own pool, so the cost stays linear in n; the blocks
run in up to 16 rounds, and each round herds toward the class target corrected for what the
rounds before it picked, so that the union, not each block alone, matches it), embeds
them with the release's own public feature maps — every statistic, each scaled by
``√w_k`` with the fit's loss weights ``w_k`` so that the herding objective is the
fit's loss ``Σ_k w_k ‖m̃_{k,c} − mean φ_k‖²`` — and herds ``n_c`` rows toward the
class's noisy mean embeddings ``m̃_{k,c}`` (:meth:`Release.mean_embeddings`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import torch

from .errors import MMGenError
from .release import Release

__all__ = ["herd", "select_herding", "embedding_error", "release_noise", "auto_pool", "auto_block"]

log = logging.getLogger("mmgen.select")

Features = torch.Tensor | Callable[[int, int], torch.Tensor]
BATCH_BLOCKS = True  # herd equal-sized table-marginals blocks together (same picks; False: one by one, for tests)
ROUNDS = 16  # a class's blocks are herded in up to this many rounds, each toward the target corrected for the rounds before
AUTO_POOL = (2, 8)  # pool="auto" (auto_pool): 2 rows drawn per row kept for a noisy release, 8 for a quiet one
# (no "loud" branch: on carData/SLID i.i.d. rows beat pool 2 at eps 0.1-0.3 (nu 0.08-0.2: 2-way 0.198 vs 0.215 at eps 0.1),
# but on ggplot2/diamonds at eps 0.3 (nu 0.12) i.i.d. rows scored 0.058 against 0.032 herded, so it was withdrawn)
QUIET_RELEASE = 0.007  # ν (release_noise) below which a table-marginals release counts as quiet. Chosen on carData/SLID
# (2-way TVD, pools 2 / 4 / 8, seeds 0-1): eps 3 (ν 0.0094) 0.0165 / 0.0168 / 0.0172, eps 5 (ν 0.0057) 0.0137 / 0.0123
# / 0.0120, eps 10 (ν 0.0034) 0.0108 / 0.0087 / 0.0080, eps 30 (ν 0.0015) 0.0088 / 0.0059 / 0.0043; at eps 1 pool 2 was
# best (pools 2, 5, 10). A larger pool lets herding match a precise target; against a noisy one it only fits the noise.
HERDING_WORK = 400_000_000  # block="auto": n·pool·block candidate rows scanned at most (herding 200,000 rows at pool 2 in
# blocks of 1,000, about 20 s on one core); the block shrinks to keep a large pool at that cost, never below MIN_BLOCK
MIN_BLOCK = 250  # on SLID at eps 10, pool 8 in blocks of 250 scored as in blocks of 1,000 (0.0076 both)
DISTINCT = 0.8  # herd a round's pools as their distinct rows (with their numbers of copies: the same picks) when
# these are at most this share of the pool (AER/Fertility: about 920 distinct rows in 2,000); 0: never
DEFAULT_BLOCK = 1_000  # rows herded at once (cost O(pool·block) per row). On carData/SLID at eps = 10, blocks of 1,000
# in rounds with the corrected target scored 2-way TVD 0.0103 against 0.0095 for one block of its 5,946 rows and 0.0139
# for independent blocks of 1,000 (docs/tabular.md); equal blocks of a round are herded together (_herd_codes_batched)


def _chunks(features: Features, size: int | None, chunk: int):
    if isinstance(features, torch.Tensor):
        for a in range(0, len(features), chunk):
            yield a, features[a : a + chunk]
    else:
        for a in range(0, size, chunk):
            yield a, features(a, min(a + chunk, size))


def herd(
    features: Features,
    target: torch.Tensor,
    n: int,
    *,
    size: int | None = None,
    gram_column: Callable[[int], torch.Tensor] | None = None,
    replace: bool = False,
    chunk: int = 4096,
    progress: bool = False,
    projections: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Greedy kernel herding of ``n`` pool rows toward a target mean embedding.

    Args:
        features ((M, D) Tensor, or a callable ``(start, stop) -> (stop − start, D) Tensor``):
            the pool's features φ_i; a callable is read in chunks and needs ``size``.
        target ((D,) Tensor): the mean embedding m to match.
        n: rows to pick (≥ 1; at most M without replacement).
        size: M, when ``features`` is a callable.
        gram_column: ``j -> (M,) Tensor`` of ``⟨φ_i, φ_j⟩``; default computed from ``features``
            (a matrix-vector product, or a chunked pass over a callable).
        replace: allow a row to be picked more than once (see the module docstring).
        chunk: rows per chunk of features.
        progress: log progress (INFO, ``mmgen.select``) every ~10 s.
        projections: ``(‖φ_i‖², ⟨φ_i, target⟩)`` ((M,) float64 each) when the caller has them cheaper than a
            pass over ``features`` (code-based table rows); default computed from ``features``.

    Returns:
        (n,) int64 Tensor: the picked pool indices, in the order picked.

    Raises:
        MMGenError: bad ``n``, shapes or sizes.
    """
    if isinstance(features, torch.Tensor):
        if features.ndim != 2:
            raise MMGenError(f"Expected features of shape (M, D). Got {tuple(features.shape)}.")
        size = len(features)
    elif not callable(features) or size is None:
        raise MMGenError("`features` must be an (M, D) Tensor, or a callable (start, stop) -> Tensor with `size` given.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MMGenError(f"`n` must be a positive integer. Got {n!r}.")
    if not replace and n > size:
        raise MMGenError(f"Cannot pick {n} distinct rows from a pool of {size}; use a larger pool or replace=True.")
    target = target.to(torch.float64).reshape(-1)
    norms, h = _norms_and_projections(features, target, size, chunk) if projections is None else projections
    if gram_column is None:
        if isinstance(features, torch.Tensor):
            def gram_column(j):
                return features.to(torch.float64) @ features[j].to(torch.float64)  # (M, D) @ (D,)
        else:
            def gram_column(j):
                fj = features(j, j + 1).to(torch.float64)[0]
                return torch.cat([f.to(torch.float64) @ fj for _, f in _chunks(features, size, chunk)])
    # score_t = ‖φ‖² + 2(g_t − (t+1)h) with g_t = ⟨φ, s_t⟩, kept up to date in place:
    # after picking j, g gains K[:, j] and (t+1)h gains h, so score += 2(K[:, j] − h)
    score = norms - 2.0 * h
    h2 = 2.0 * h
    out = torch.empty(n, dtype=torch.long)
    last = time.monotonic()
    for t in range(n):
        j = int(torch.argmin(score))
        out[t] = j
        score += 2.0 * gram_column(j).to(torch.float64)
        score -= h2
        if not replace:
            score[j] = math.inf  # stays inf under the updates
        if progress and time.monotonic() - last > 10.0:
            last = time.monotonic()
            log.info("herding: %d of %d rows picked", t + 1, n)
    return out


def _norms_and_projections(features: Features, target: torch.Tensor, size: int, chunk: int):
    """``(‖φ_i‖², ⟨φ_i, m⟩)`` of every pool row, float64, read in chunks."""
    norms = torch.empty(size, dtype=torch.float64)
    h = torch.empty(size, dtype=torch.float64)
    for a, f in _chunks(features, size, chunk):
        f = f.to(torch.float64)
        if f.ndim != 2 or f.shape[1] != len(target):
            raise MMGenError(f"Expected feature chunks of shape (rows, {len(target)}). Got {tuple(f.shape)}.")
        norms[a : a + len(f)] = (f * f).sum(dim=1)
        h[a : a + len(f)] = f @ target  # (rows, D) @ (D,)
    return norms, h


def _codes_projections(fmap, fine: torch.Tensor, coarse: torch.Tensor, target: torch.Tensor):
    """``(‖φ_i‖², ⟨φ_i, m⟩)`` of well-formed ``table-marginals`` rows from their codes ((K, M) each), float64.

    A well-formed row's φ is ``scale_`` times ``v_k`` at its cell of each column k and ``√a_k √a_l`` at its
    bin pair of each pair (k, l) (:meth:`~mmgen.features.TableMarginals.one_hot_cells`), so ``⟨φ_i, m⟩`` is a
    gather of K + P entries of m (never a dense (M, D) pass) and ``‖φ_i‖² = scale_²·(Σ v_k² + Σ a_k a_l) = 1``.
    """
    if len(target) != fmap.output_dim:
        raise MMGenError(f"Expected a target of {fmap.output_dim} entries for this table-marginals map. Got {len(target)}.")
    h = torch.zeros(fine.shape[1], dtype=torch.float64)
    pos = 0
    for k, (v, cells) in enumerate(zip(fmap.one_way_weights_, fmap.cells_)):
        h += v * target[pos + fine[k].long()]
        pos += cells
    for i, j in fmap.pairs_:
        h += (fmap.pair_weights_[i] * fmap.pair_weights_[j]) * target[pos + coarse[i].long() * fmap.bins_[j]
                                                                     + coarse[j].long()]  # fmt: skip
        pos += fmap.bins_[i] * fmap.bins_[j]
    norm = fmap.scale_**2 * (sum(v * v for v in fmap.one_way_weights_)
                             + sum((fmap.pair_weights_[i] * fmap.pair_weights_[j]) ** 2 for i, j in fmap.pairs_))  # fmt: skip
    return torch.full_like(h, norm), fmap.scale_ * h


def _block_projections(parts: list, fmaps: list, goal: torch.Tensor):
    """``(‖φ_i‖², ⟨φ_i, goal⟩)`` of a block whose statistics are all code-based: each statistic's share, weighted
    as the herding features (``√w`` times φ, so ``w``·norm and ``√w``·projection on its slice of ``goal``)."""
    norms, h, pos = 0.0, 0.0, 0
    for (_, w, (codes, *_)), f in zip(parts, fmaps):
        d = f.output_dim
        nk, hk = _codes_projections(f, codes[0], codes[1], goal[pos : pos + d])
        norms, h, pos = norms + w * nk, h + math.sqrt(w) * hk, pos + d
    return norms, h


def _herd_codes_batched(score: torch.Tensor, h2: torch.Tensor, parts: list, n: int, progress: bool = False,
                        copies: tuple | None = None) -> torch.Tensor:
    """Herding of ``n`` rows in B pools at once, every statistic a ``table-marginals`` map (Gram columns from codes).

    The same arithmetic, pool by pool, as :func:`herd` with :func:`_gram_from_parts` (each pool's picks are
    identical to herding it alone); the B pools share every step's tensor operations, so the per-step overhead
    is paid once for all of them.

    Args:
        score ((B, M) float64): ``‖φ_i‖² − 2h_i`` per pool (updated in place).
        h2 ((B, M) float64): ``2h_i``.
        parts: per statistic ``(w, groups, two_way, scale²)``, ``groups`` from :func:`_code_groups` on the (B, K, M)
            codes of the B pools.
        n: rows to pick per pool (≤ M).
        copies: ``(left, start, order)`` when the M entries are each pool's *distinct* rows (:func:`_distinct`):
            (B, M) copies of each, where its copies' pool indices start in ``order`` ((B, M_pool), the pool's
            indices grouped by distinct row, ascending). A distinct row stays a candidate until its copies run
            out, and ties go to the lowest pool index, so the picks equal herding the pool itself.

    Returns:
        (B, n) int64: each pool's picks (pool indices), in order.
    """
    b, m = score.shape
    rows = torch.arange(b)
    out = torch.empty(b, n, dtype=torch.long)
    if copies is not None:
        left, start, order = (t.clone() for t in copies)
        never = order.shape[1]  # above every pool index
        nxt = torch.where(left > 0, torch.gather(order, 1, start.clamp(max=never - 1)), never)
    last = time.monotonic()
    for t in range(n):
        if copies is None:
            j = torch.argmin(score, dim=1)
            out[:, t] = j
        else:  # the lowest pool index among the rows of the lowest score, as argmin over the pool picks
            low = score.min(dim=1, keepdim=True).values
            j = torch.where(score == low, nxt, never).argmin(dim=1)
            out[:, t] = nxt[rows, j]
        column = torch.zeros(b, m, dtype=torch.float64)
        for w, groups, two_way, scale2 in parts:
            column += (w * scale2) * _codes_column(groups, two_way, rows, j)
        score += 2.0 * column
        score -= h2
        if copies is None:
            score[rows, j] = math.inf
        else:
            left[rows, j] -= 1
            start[rows, j] += 1
            gone = left[rows, j] == 0
            nxt[rows, j] = torch.where(gone, never, order[rows, start[rows, j].clamp(max=never - 1)])
            score[rows[gone], j[gone]] = math.inf
        if progress and time.monotonic() - last > 10.0:
            last = time.monotonic()
            log.info("herding: %d of %d rows picked in each of %d blocks", t + 1, n, b)
    return out


def _distinct(keys: torch.Tensor):
    """Each pool's distinct rows: ``keys`` (B, K, M) codes → ``(first, left, start, order)``, (B, U) the pool
    index of each distinct row's first copy (padded with 0), its number of copies (0 for padding) and where its
    copies start in ``order`` ((B, M): pool indices grouped by distinct row, ascending)."""
    b, _, m = keys.shape
    found = [torch.unique(keys[i], dim=1, return_inverse=True, return_counts=True)[1:] for i in range(b)]
    u = max(len(c) for _, c in found)
    first = torch.zeros(b, u, dtype=torch.long)
    left = torch.zeros(b, u, dtype=torch.long)
    start = torch.zeros(b, u, dtype=torch.long)
    order = torch.empty(b, m, dtype=torch.long)
    index = torch.arange(m)
    for i, (inverse, counts) in enumerate(found):
        first[i, : len(counts)] = torch.full((len(counts),), m).scatter_reduce(0, inverse, index, "amin")
        left[i, : len(counts)] = counts
        start[i, : len(counts)] = counts.cumsum(0) - counts
        order[i] = torch.argsort(inverse * m + index)
    return first, left, start, order


def _shared_batched(codes: torch.Tensor, rows: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """(B, M) float64: per pool b, how many of the K columns of each row share their code with row ``j[b]``."""
    if codes.shape[1] == 0:
        return torch.zeros(codes.shape[0], codes.shape[2], dtype=torch.float64)
    ref = codes[rows, :, j]  # (B, K)
    a = (codes[:, 0] == ref[:, :1]).to(torch.uint8)
    for k in range(1, codes.shape[1]):  # column by column: 3x faster than one (B, K, M) comparison summed over K
        a += codes[:, k] == ref[:, k : k + 1]
    return a.to(torch.float64)


def _table_codes(fmap, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Fine cell and coarse bin codes ((K, M) int16 each) of a table-marginals map's rows if every row is
    well-formed (:meth:`~mmgen.features.TableMarginals.one_hot_cells`), else None."""
    fine, coarse = [], []
    for a in range(0, len(x), 8192):
        ok, cells, bins = fmap.one_hot_cells(x[a : a + 8192])
        if not bool(ok.all()):
            return None
        fine.append(cells.to(torch.int16))
        coarse.append(bins.to(torch.int16))
    fine_t = torch.cat(fine).t().contiguous()  # (K, M)
    if all(g is None for g in fmap.groups_):
        return fine_t, fine_t
    return fine_t, torch.cat(coarse).t().contiguous()


def _codes_part(fmap, codes) -> tuple:
    """A ``table-marginals`` statistic's Gram data: its codes, whether it has pairs, ``scale_²``, and per column
    the squared 1-way weight ``v_j²`` and the pair weight ``a_j`` (:class:`~mmgen.features.TableMarginals`)."""
    return (codes, bool(fmap.pairs_), fmap.scale_**2, [v * v for v in fmap.one_way_weights_],
            [w * w for w in fmap.pair_weights_])  # fmt: skip


def _code_groups(fine: torch.Tensor, coarse: torch.Tensor, v2: list, a: list) -> list:
    """Columns grouped by their weights: ``[(v², a, fine (B, K_g, M), coarse (B, K_g, M) or None)]``, coarse None
    where a column's cells are its bins (then a shared cell is a shared bin)."""
    differ = (fine != coarse).any(dim=2).any(dim=0).tolist()
    groups: dict = {}
    for k in range(fine.shape[1]):
        groups.setdefault((v2[k], a[k], differ[k]), []).append(k)
    out = []
    for (vv, aa, d), cols in groups.items():
        idx = torch.tensor(cols)
        out.append((vv, aa, fine[:, idx].contiguous(), coarse[:, idx].contiguous() if d else None))
    return out


def _codes_column(groups: list, two_way: bool, rows: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """(B, M) float64: ``⟨φ_i, φ_j⟩ / scale_²`` of one-hot rows from their codes, pool b against its row ``j[b]``.

    With ``e_k`` (row i shares row j's cell in column k) and ``t_k`` (shares its bin): the 1-way part is
    ``Σ_k v_k² e_k`` and the pair part ``Σ_{k<l} a_k a_l t_k t_l = ((Σ a_k t_k)² − Σ a_k² t_k) / 2``.
    """
    one, lin, sq = 0.0, 0.0, 0.0
    for vv, aa, fine, coarse in groups:
        e = _shared_batched(fine, rows, j)
        one = one + vv * e
        if two_way:
            t = e if coarse is None else _shared_batched(coarse, rows, j)
            lin, sq = lin + aa * t, sq + (aa * aa) * t
    return one + (lin * lin - sq) / 2 if two_way else one


def _gram_from_parts(parts, size: int):
    """A Gram-column function summing each statistic's (weighted) column."""
    grouped = []
    for kind, w, obj in parts:
        if kind == "codes":
            (fine, coarse), two_way, scale2, v2, a = obj  # (K, M) codes each
            grouped.append((kind, w, (_code_groups(fine[None], coarse[None], v2, a), two_way, scale2)))
        else:
            grouped.append((kind, w, obj))
    zero = torch.zeros(1, dtype=torch.long)

    def column(j: int) -> torch.Tensor:
        out = torch.zeros(size, dtype=torch.float64)
        for kind, w, obj in grouped:
            if kind == "codes":
                groups, two_way, scale2 = obj
                out += (w * scale2) * _codes_column(groups, two_way, zero, torch.tensor([j]))[0]
            else:
                out += w * (obj @ obj[j])  # (M, D) @ (D,)
        return out

    return column


def release_noise(release) -> float:
    """ν: the expected norm of the noise in a class's released mean embedding, relative to the map's bound (public).

    For a statistic with per-coordinate noise std ``σΔ`` on the sums, feature weight ``a``, ``D``
    coordinates and noisy class counts ``Ñ_c``, the noise on class c's mean embedding has norm about
    ``σΔ·√D / (a·max(Ñ_c, 1))`` while ``‖φ‖ ≤ 1``; ν averages it over the classes by their noisy
    proportions and takes the largest over the statistics. It is computed from the release alone
    (post-processing): small ν means a precise target.

    Example:
        >>> import mmgen, pandas as pd
        >>> frame = pd.DataFrame({"a": ["x", "y"] * 500})
        >>> schema = {"columns": [{"name": "a", "type": "categorical", "categories": ["x", "y"]}]}
        >>> rel = mmgen.release(frame, schema=schema, features="table-marginals", epsilon=1.0, delta=1e-5, noise_seed=0)
        >>> 0 < release_noise(rel) < 0.1
        True
    """
    props = release.class_proportions()
    counts = release.class_counts().clamp(min=1.0)
    worst = 0.0
    for stat in release.statistics:
        per_class = stat.noise_std * math.sqrt(stat.sums.shape[-1]) / (stat.feature_weight * counts)
        worst = max(worst, float((props * per_class).sum()))
    return worst


def auto_pool(release) -> int:
    """The pool factor ``pool="auto"`` picks for a ``table-marginals`` release from its noise ν (:func:`release_noise`).

    8 when ν < QUIET_RELEASE, else 2. Releases with any other statistic (images, ``table-rff``) get 2,
    the factor herding was first tuned with.
    """
    tables = all(s.feature_spec.get("name") == "table-marginals" for s in release.statistics)
    return AUTO_POOL[1] if tables and release_noise(release) < QUIET_RELEASE else AUTO_POOL[0]


def auto_block(n: int, pool: int) -> int:
    """The block ``block="auto"`` picks: ``HERDING_WORK / (n·pool)`` rows, clamped to [MIN_BLOCK, DEFAULT_BLOCK].

    Example:
        >>> auto_block(22_000, 8), auto_block(200_000, 8), auto_block(200_000, 2)
        (1000, 250, 1000)
    """
    return int(min(DEFAULT_BLOCK, max(MIN_BLOCK, HERDING_WORK // max(1, int(n) * int(pool)))))


def select_herding(trained, release, n: int, *, pool: int | str = "auto", seed: int | None = None,
                   progress: bool = False, chunk: int = 4096,
                   block: int | str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Class-conditional herding: ``n`` labelled rows chosen from a generated pool to match the release.

    Args:
        trained: a :class:`mmgen.train.Trained` fitted to ``release``.
        release: the :class:`mmgen.release.Release` it was fitted to (its content hash must match).
        n: rows to return (≥ 1).
        pool: pool rows drawn per row returned (≥ 1; 1: the i.i.d. draws themselves), or ``"auto"``:
            :func:`auto_pool` of the release (2, or 8 for a quiet table release).
        seed: seed of the pool's draws (``None``: fresh randomness).
        progress: log progress (INFO, ``mmgen.select``).
        chunk: rows per chunk of features.
        block: the most rows herded at once. A class with more rows is split into equal blocks,
            each herded from its own pool: herding n rows from a pool of ``pool·n`` costs O(pool·n²)
            Gram entries, so blocks keep the cost linear in n. The blocks run in up to ``ROUNDS``
            rounds (equal-sized code-based blocks of a round together); round r herds toward
            ``m + (t·m − S)/n_r``, t rows with feature sum S picked before it and n_r in it, so the
            class's rows so far match the target m whatever error the earlier rounds left.
            ``"auto"``: :func:`auto_block` of ``n`` and the pool (1,000 rows unless n·pool is large).

    Returns:
        ``(x, y)``: (n, *input_shape) float32 rows and (n,) int64 labels, class by class.

    Raises:
        MMGenError: mismatched release, bad ``n``, ``pool`` or ``block``.
    """
    if not isinstance(release, Release):
        raise MMGenError(f"select_herding() takes a Release. Got {type(release).__name__}.")
    want = trained.release_info.get("content_hash")
    if want is not None and want != release.content_hash():
        raise MMGenError("This generator was fitted to another release (content hash differs): pass its own release.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MMGenError(f"`n` must be a positive integer. Got {n!r}.")
    if pool == "auto":
        pool = auto_pool(release)
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise MMGenError(f"`pool` must be an integer ≥ 1 or 'auto'. Got {pool!r}.")
    if block == "auto":
        block = auto_block(n, pool)
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise MMGenError(f"`block` must be an integer ≥ 1 or 'auto'. Got {block!r}.")
    if progress and pool > 1:
        log.info("herding %d rows from a pool of %d × n in blocks of at most %d rows", n, pool, block)
    weights = trained.train_config.statistic_weights or (1.0,) * len(release.statistics)
    props = release.class_proportions()
    exact = props * n
    sizes = exact.floor().long()
    rest = n - int(sizes.sum())
    if rest > 0:  # largest remainders
        sizes[torch.argsort(exact - sizes, descending=True)[:rest]] += 1
    gen = torch.Generator()
    gen.manual_seed(seed) if seed is not None else gen.seed()
    xs, ys = [], []
    trained.generator.eval()
    if pool == 1:  # the pool is the sample: i.i.d. draws, nothing to choose
        if progress:
            log.info("pool 1: %d i.i.d. rows, no herding", n)
        labels = torch.cat([torch.full((nc,), c, dtype=torch.long) for c, nc in enumerate(sizes.tolist())])
        return trained.generator.sample(labels, generator=gen).float(), labels
    fmaps = [release.feature_map(s.name) for s in release.statistics]
    targets = [release.mean_embeddings(s.name) for s in release.statistics]
    jobs = []  # (class, rows, round) per block: a class's rows are herded in blocks of at most `block` rows
    for c, nc in enumerate(sizes.tolist()):
        count = -(-nc // block)
        rounds = min(count, ROUNDS)
        jobs += [(c, nc // count + (i < nc % count), i * rounds // count) for i in range(count)]
    scaled = _stat_scales(fmaps, weights)
    prepared = []  # per block: (class, rows, round, pool x, labels, parts, features, target)
    for c, nc, r in jobs:
        m = pool * nc
        labels = torch.full((m,), c, dtype=torch.long)
        x = trained.generator.sample(labels, generator=gen)
        parts, tgt = [], []
        for w, f, mt in zip(weights, fmaps, targets):
            codes = _table_codes(f, x) if getattr(f, "name", "") == "table-marginals" else None
            if codes is not None:
                parts.append(("codes", w, _codes_part(f, codes)))
            else:
                phi = torch.cat([f(x[a : a + chunk].to(torch.float64)).to(torch.float64) for a in range(0, m, chunk)])
                parts.append(("dense", w, phi))
            tgt.append(math.sqrt(w) * mt[c])

        def features(a, b, x=x):
            return torch.cat([s * f(x[a:b].to(torch.float64)).to(torch.float64) for f, s in scaled], dim=1)

        prepared.append((c, nc, r, x, labels, parts, features, torch.cat(tgt)))
    picks: dict[int, torch.Tensor] = {}
    done = {}  # class -> (rows picked so far, the sum of their weighted features)
    t0 = time.monotonic()
    for r in range(max((j[2] for j in jobs), default=-1) + 1):
        blocks = [i for i, p in enumerate(prepared) if p[2] == r]
        rows = {}
        for i in blocks:
            rows[prepared[i][0]] = rows.get(prepared[i][0], 0) + prepared[i][1]
        goal = {}  # the round's target: the class target, corrected so the rows so far plus this round's match it
        for i in blocks:
            c, target = prepared[i][0], prepared[i][7]
            t, total = done.get(c, (0, None))
            goal[c] = target if total is None else target + (t * target - total) / rows[c]
        batchable: dict[int, list[int]] = {}  # equal-sized code-based blocks of this round, herded together
        for i in blocks:
            c, nc, _, x, _, parts, features, _ = prepared[i]
            coded = all(kind == "codes" for kind, _, _ in parts)
            if BATCH_BLOCKS and coded:
                batchable.setdefault(nc, []).append(i)
            else:
                picks[i] = herd(features, goal[c], nc, size=len(x), gram_column=_gram_from_parts(parts, len(x)),
                                chunk=chunk, progress=progress,
                                projections=_block_projections(parts, fmaps, goal[c]) if coded else None)  # fmt: skip
        for nc, group in batchable.items():
            scores, h2s = [], []
            for i in group:
                c, _, _, _, _, parts, _, _ = prepared[i]
                norms, h = _block_projections(parts, fmaps, goal[c])
                scores.append(norms - 2.0 * h)
                h2s.append(2.0 * h)
            codes = [(torch.stack([prepared[i][5][k][2][0][0] for i in group]),  # (B, K, M) fine, coarse
                      torch.stack([prepared[i][5][k][2][0][1] for i in group])) for k in range(len(fmaps))]
            score, h2, copies = torch.stack(scores), torch.stack(h2s), None
            if DISTINCT:  # herd the distinct rows with their numbers of copies when there are few enough
                first, left, start, order = _distinct(torch.cat([torch.cat(fc, dim=1) for fc in codes], dim=1))
                if first.shape[1] <= DISTINCT * score.shape[1]:
                    copies = (left, start, order)
                    score = torch.where(left > 0, score.gather(1, first), math.inf)
                    h2 = h2.gather(1, first)
                    pick = first[:, None, :].expand(-1, codes[0][0].shape[1], -1)
                    codes = [(f.gather(2, pick), c.gather(2, pick)) for f, c in codes]
            parts_b = []
            for k, (_, w, (_, two_way, scale2, v2, a)) in enumerate(prepared[group[0]][5]):
                parts_b.append((w, _code_groups(codes[k][0], codes[k][1], v2, a), two_way, scale2))
            out = _herd_codes_batched(score, h2, parts_b, nc, progress=progress, copies=copies)
            for i, idx in zip(group, out):
                picks[i] = idx
        for i in blocks:  # what this round picked, for the next round's correction
            c, _, _, x, _, _, features, _ = prepared[i]
            sub = x[picks[i]]
            s_sum = sum(torch.cat([sc * f(sub[a : a + chunk].to(torch.float64)).to(torch.float64) for f, sc in scaled],
                                  dim=1).sum(dim=0) for a in range(0, len(sub), chunk))  # fmt: skip
            t, total = done.get(c, (0, None))
            done[c] = (t + len(sub), s_sum if total is None else total + s_sum)
    if progress:
        log.info("herding: %d rows in %d blocks in %.1f s", n, len(prepared), time.monotonic() - t0)
    for i, (c, nc, r, x, labels, parts, features, target) in enumerate(prepared):
        xs.append(x[picks[i]])
        ys.append(labels[picks[i]])
    return torch.cat(xs).float(), torch.cat(ys)


def _stat_scales(fmaps, weights):
    """Each statistic's map with the square root of its loss weight (the herding objective's scaling)."""
    return [(f, math.sqrt(w)) for f, w in zip(fmaps, weights)]


def embedding_error(fmap, x: torch.Tensor, target: torch.Tensor, chunk: int = 4096) -> float:
    """‖mean φ(x) − target‖₂ for rows x ((N, *input_shape)) and a (D,) target."""
    total = None
    for a in range(0, len(x), chunk):
        s = fmap(x[a : a + chunk].to(torch.float64)).sum(dim=0)
        total = s if total is None else total + s
    return float((total / len(x) - target.to(total.dtype)).norm())
