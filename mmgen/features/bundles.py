"""Multi-statistic releases by name: ``statistics("hermite")``, ``statistics("rff,perceptual")``.

Some methods release more than one statistic of the same records: DP-HP a sum
kernel and a product kernel, DP-MEPF the first and second moments of the
perceptual features. Each statistic is a separate feature map with its own
norm bound ≤ 1 and its own Gaussian mechanism; :func:`mmgen.release` composes
them (μ² = Σ_k μ_k²) and records the budget split.

A *statistics spec* is a comma-separated list of names. A bundle name expands
to its maps (see :data:`BUNDLES`); any other name is a single registered map.
A name means the same statistics everywhere: ``mmgen.release(x, y, features="hermite")``,
``mmgen.distributed.release_distributed``, ``mmgen release --features hermite`` and
``mmgen audit --features hermite`` all expand it here, with the default split of
:func:`default_budget_split`.
Options are given per registered map name (``options={"hermite": {"order": 30}}``)
or, under the key ``"*"``, to every map whose config has that field.

Example:
    >>> from mmgen.features import statistics, default_budget_split
    >>> [f.name for f in statistics("hermite", input_shape=(1, 8, 8))]
    ['hermite', 'hermite-product']
    >>> default_budget_split("rff,hermite")
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from ..errors import MMGenError
from .base import FeatureMap, create, get_class, list_feature_maps

__all__ = ["BUNDLES", "BUNDLE_HELP", "statistics", "default_budget_split", "expand"]

# bundle name -> [(registered map, fixed options, default budget weight)]
BUNDLES: dict[str, list[tuple[str, dict[str, Any], float]]] = {
    "hermite": [("hermite", {}, 1.0), ("hermite-product", {}, 1.0)],
    "perceptual": [("perceptual", {"moment": 1}, 1.0), ("perceptual", {"moment": 2}, 1.0)],
    "perceptual-first": [("perceptual", {"moment": 1}, 1.0)],
}
BUNDLE_HELP = {
    "hermite": "DP-HP: Hermite sum kernel + product kernel (two statistics)",
    "perceptual": "DP-MEPF (φ1, φ2): first and second moments of perceptual features (two statistics)",
    "perceptual-first": "DP-MEPF (φ1): the first moment of perceptual features alone (one statistic)",
}


def expand(spec: str | Sequence[str]) -> list[tuple[str, dict[str, Any], float]]:
    """The ``(map name, fixed options, default weight)`` triples of a statistics spec.

    Raises:
        MMGenError: on an empty spec or an unknown name (listing the known ones).
    """
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    if not names or any(not n for n in names):
        raise MMGenError(f"A statistics spec is a comma-separated list of names. Got {spec!r}.")
    out = []
    for n in names:
        if n in BUNDLES:
            out.extend((m, dict(o), w) for m, o, w in BUNDLES[n])
        elif n in list_feature_maps():
            out.append((n, {}, 1.0))
        else:
            raise MMGenError(
                f"Unknown statistic {n!r}. Known: bundles {sorted(BUNDLES)}, feature maps {list_feature_maps()}."
            )
    return out


def statistics(
    spec: str | Sequence[str],
    *,
    input_shape: Sequence[int] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[FeatureMap]:
    """The feature maps of a statistics spec, ready to pass to :func:`mmgen.release`.

    Args:
        spec: e.g. ``"perceptual"``, ``"hermite"``, ``"rff,perceptual"``.
        input_shape: shape of one record; with it every map is set up.
        bounds: the declared public domain.
        options: per map name, its options; ``"*"`` applies to every map with that field.
            A bundle's fixed options (e.g. ``moment``) cannot be overridden.

    Returns:
        A list of feature maps, in release order (the first carries the class counts).

    Raises:
        MMGenError: unknown names, or options that no map of the spec accepts.
        TypeError: an option a named map does not have.
    """
    options = dict(options or {})
    entries = expand(spec)
    names = {m for m, _, _ in entries}
    unknown = sorted(set(options) - names - {"*"})
    if unknown:
        raise MMGenError(f"Options given for {unknown}, which are not in the statistics {sorted(names)}.")
    shared = dict(options.get("*", {}))
    used: set[str] = set()
    out = []
    for name, fixed, _ in entries:
        fields = {f.name for f in dataclasses.fields(get_class(name).Config)}
        opts = {k: v for k, v in shared.items() if k in fields}
        used |= set(opts)
        opts.update(options.get(name, {}))
        clash = sorted(set(opts) & set(fixed))
        if clash:
            raise MMGenError(f"Option(s) {clash} of {name!r} are fixed by the statistics spec {spec!r}.")
        opts.update(fixed)
        out.append(create(name, input_shape=input_shape, bounds=bounds, **opts))
    unused = sorted(set(shared) - used)
    if unused:
        raise MMGenError(f"No feature map in {sorted(names)} has option(s) {unused}.")
    return out


def default_budget_split(spec: str | FeatureMap | Sequence[str | FeatureMap]) -> list[float]:
    """The default weights of μ² per statistic (equal unless a bundle says otherwise).

    Args:
        spec: a statistics spec, or anything :func:`mmgen.release` takes as ``features``:
            a name or bundle, a :class:`FeatureMap`, or a list mixing them. A name counts
            as its bundle's statistics (with the bundle's weights); an instance is one
            statistic of weight 1.

    Returns:
        One weight per statistic, in release order (what :func:`statistics` builds).

    Raises:
        MMGenError: an empty spec, an unknown name, or an item that is neither a name nor a feature map.
    """
    items = [spec] if isinstance(spec, (str, FeatureMap)) else list(spec)
    if not items:
        raise MMGenError(f"A statistics spec is a comma-separated list of names. Got {spec!r}.")
    out: list[float] = []
    for item in items:
        if isinstance(item, FeatureMap):
            out.append(1.0)
        elif isinstance(item, str):
            out.extend(w for _, _, w in expand(item))
        else:
            raise MMGenError(f"`features` must hold names or FeatureMap instances. Got {type(item).__name__}.")
    return out
