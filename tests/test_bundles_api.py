"""A statistics name means the same release from Python as from the command line.

``mmgen.release(..., features="hermite")`` must expand the bundle exactly as
``mmgen release --features hermite`` does (same statistics, specs, order and
default budget split), and so must the audit.
"""

from __future__ import annotations

import pytest

import mmgen
from mmgen import cli
from mmgen.features import BUNDLES, default_budget_split, statistics
from mmgen.release import _feature_maps

EPS, DELTA = 5.0, 1e-5


def _public(rel: mmgen.Release) -> dict:
    """Everything a release records except the noisy tensors and how the noise was drawn."""
    privacy = {k: v for k, v in rel.metadata["privacy"].items() if k not in ("for_publication", "noise_source")}
    stats = [s.header() for s in rel.statistics]
    return {"privacy": privacy, "data": rel.metadata["data"], "statistics": stats}


def test_release_expands_a_bundle_as_the_cli_does(tmp_path, digits):
    out = tmp_path / "cli.mmgen"
    argv = ["release", "--data", "digits", "--features", "hermite", "--epsilon", str(EPS), "--delta", str(DELTA)]
    assert cli.main([*argv, "--out", str(out)]) == 0
    from_cli = mmgen.Release.load(out)

    from_api = mmgen.release(digits, features="hermite", epsilon=EPS, delta=DELTA, noise_seed=0)

    assert [s.name for s in from_api.statistics] == [s.name for s in from_cli.statistics] == ["hermite", "hermite-product"]
    assert [s.feature_spec for s in from_api.statistics] == [s.feature_spec for s in from_cli.statistics]
    assert from_api.metadata["privacy"]["budget_split"] == from_cli.metadata["privacy"]["budget_split"] == [0.5, 0.5]
    assert _public(from_api) == _public(from_cli)  # noise multipliers, sensitivities, shapes, schema too


def _cli_maps(spec: str, input_shape, bounds):
    """The feature maps ``mmgen release --features SPEC`` builds (its own option handling, then set up)."""
    args = cli.build_parser().parse_args(["release", "--data", "digits", "--features", spec, "--epsilon", "1", "--out", "unused"])
    options = cli._feature_options(args)
    expanded = mmgen.features.bundles.expand(spec)
    if not any("seed" in mmgen.features.get_class(m).Config.__dataclass_fields__ for m, _, _ in expanded):
        options["*"].pop("seed")
    maps = statistics(spec, options=options)
    for f in maps:
        f.setup(input_shape, bounds)
    return maps


@pytest.mark.parametrize("spec", [*sorted(BUNDLES), "rff,hermite", "hermite-product"])
def test_every_bundle_name_gives_the_cli_statistics(spec):
    shape, bounds = (1, 8, 8), (0.0, 1.0)
    api = _feature_maps(spec, shape, bounds)
    want = _cli_maps(spec, shape, bounds)
    assert [f.spec() for f in api] == [f.spec() for f in want]
    assert len(default_budget_split(spec)) == len(api)  # the default split release() uses has one weight per map


def test_default_split_of_mixed_features():
    rff = mmgen.features.create("rff", input_shape=(1, 8, 8), n_features=16)
    assert default_budget_split([rff, "hermite"]) == [1.0, 1.0, 1.0]
    assert [f.name for f in _feature_maps([rff, "hermite"], (1, 8, 8), (0.0, 1.0))] == ["rff", "hermite", "hermite-product"]
    with pytest.raises(mmgen.errors.MMGenError, match="names or FeatureMap"):
        default_budget_split([rff, 3])


def test_audit_takes_the_same_route():
    from mmgen.audit import audit

    result = audit("hermite", epsilon=EPS, delta=DELTA, n_records=50, trials=200, noise_seed=0)
    assert result.features == ["hermite", "hermite-product"]
    by_list = audit(["hermite"], epsilon=EPS, delta=DELTA, n_records=50, trials=200, noise_seed=0)
    assert by_list.features == result.features and by_list.sensitivities == result.sensitivities
