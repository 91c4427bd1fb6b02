"""Run smartnoise-synth MST or AIM on pre-coded data with a DECLARED domain.

Runs INSIDE the anchors venv (``.venv-anchors``, see ``env.py``); it imports
nothing from mmgen and no torch.

Input: CODES.csv with one integer column per table column, every value a code
in ``0..K_c-1``; DOMAIN.json ``{"column": K_c, ...}``, the PUBLIC number of codes
per column.  Output: OUT.csv with ``--rows`` synthetic rows of codes (same
columns, same order) and one JSON line on stdout.

How the declared domain reaches smartnoise-synth 1.0.x
------------------------------------------------------
Left to itself, ``Synthesizer.fit(df, categorical_columns=...)`` builds a
``TableTransformer`` of ``LabelTransformer``s, whose *fit* reads the set of
distinct values off the private data (a category absent from the data vanishes
from the domain, and the domain size itself leaks).  Instead we pass
``transformer=TableTransformer([DeclaredCodes(K_c), ...])``: a column
transformer that is *already fitted* on construction (cardinality ``[K_c]``,
identity on codes, range-checked).  Because ``TableTransformer.fit_complete`` is
then True, ``Synthesizer._get_train_data`` never calls ``fit`` on the data,
``needs_epsilon`` is False and the preprocessing odometer spends nothing
(we also pass ``preprocessor_eps=0.0``; the script asserts epsilon was not
reduced).  MST/AIM then build ``mbi.Domain(colnames, cards)`` from these
declared cardinalities.

Seeding: ``numpy.random`` (global) and ``random`` are seeded with ``--seed``;
that covers MST's/AIM's exponential mechanism, MST's domain de-compression,
AIM's workload sub-sampling and mbi's ``synthetic_data``.  The Gaussian noise
itself is drawn by OpenDP's ``make_gaussian`` (``snsynth.utils.gaussian_noise``),
which uses OpenDP's internal CSPRNG seeded from the OS: it cannot be seeded, so
runs are NOT bit-reproducible even with a fixed ``--seed``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time

import numpy as np
import pandas as pd


def _declared_transformer(cards: list[int]):
    from snsynth.transform.base import ColumnTransformer
    from snsynth.transform.definitions import ColumnType
    from snsynth.transform.table import TableTransformer

    class DeclaredCodes(ColumnTransformer):
        """Identity on integer codes 0..k-1 with a declared (public) cardinality k.

        Fitted at construction: never looks at the data to learn its domain.
        """

        def __init__(self, k: int):
            self.k = int(k)
            super().__init__()

        @property
        def output_type(self):
            return ColumnType.CATEGORICAL

        @property
        def cardinality(self):
            return [self.k]

        def _clear_fit(self):
            # Called by ColumnTransformer.__init__ (and by TableTransformer.fit,
            # which is never reached because fit_complete is True).
            self._fit_complete = True
            self.output_width = 1

        def _fit(self, val):
            pass

        def _fit_finish(self):
            self._fit_complete = True

        def _transform(self, val):
            v = int(val)
            if not 0 <= v < self.k:
                raise ValueError(f"code {val!r} outside the declared domain 0..{self.k - 1}")
            return v

        def _inverse_transform(self, val):
            return int(val)

    return TableTransformer([DeclaredCodes(k) for k in cards])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=["mst", "aim"], required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--domain", required=True)
    ap.add_argument("--epsilon", type=float, required=True)
    ap.add_argument("--delta", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", required=True)
    # AIM-only knobs (smartnoise defaults: max_model_size=80 MB, rounds=16*d, max_cells=10000)
    ap.add_argument("--max-model-size", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--max-cells", type=int, default=None)
    ap.add_argument("--verbose", action="store_true", help="smartnoise progress to stderr")
    args = ap.parse_args(argv)

    random.seed(args.seed)
    np.random.seed(args.seed)

    with open(args.domain) as f:
        domain = json.load(f)
    cols = list(domain)
    cards = [int(domain[c]) for c in cols]
    if any(k < 1 for k in cards):
        raise SystemExit(f"every declared cardinality must be >= 1: {domain}")

    df = pd.read_csv(args.data)
    missing = [c for c in cols if c not in df.columns]
    extra = [c for c in df.columns if c not in domain]
    if missing or extra:
        raise SystemExit(f"CODES/DOMAIN column mismatch: missing={missing} extra={extra}")
    df = df[cols]
    if df.isna().any().any():
        raise SystemExit("CODES.csv contains missing values")
    codes = df.to_numpy()
    if not np.issubdtype(codes.dtype, np.integer):
        raise SystemExit(f"CODES.csv must be integer codes, got dtype {codes.dtype}")
    hi = np.asarray(cards)
    bad = (codes < 0) | (codes >= hi[None, :])
    if bad.any():
        j = int(np.argwhere(bad)[0][1])
        raise SystemExit(f"column {cols[j]!r} has codes outside 0..{cards[j] - 1}")
    df = df.astype("int64")

    # Heavy imports after arg validation; smartnoise/mbi print to stdout, so
    # route all library output to stderr to keep stdout a single JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        from snsynth import Synthesizer

        kwargs = {}
        if args.method == "aim":
            if args.max_model_size is not None:
                kwargs["max_model_size"] = args.max_model_size
            if args.rounds is not None:
                kwargs["rounds"] = args.rounds
            if args.max_cells is not None:
                kwargs["max_cells"] = args.max_cells
        synth = Synthesizer.create(args.method, epsilon=float(args.epsilon), delta=float(args.delta),
                                   verbose=args.verbose, **kwargs)
        transformer = _declared_transformer(cards)
        assert transformer.fit_complete and not transformer.needs_epsilon

        t0 = time.perf_counter()
        synth.fit(df, transformer=transformer, preprocessor_eps=0.0)
        fit_seconds = time.perf_counter() - t0
        spent, _ = transformer.odometer.spent
        if spent != 0.0 or synth.epsilon != float(args.epsilon):
            raise RuntimeError(f"preprocessing spent budget: odometer={spent}, epsilon left={synth.epsilon}")
        if list(transformer.cardinality) != cards:
            raise RuntimeError("transformer cardinalities changed during fit")

        t0 = time.perf_counter()
        out = synth.sample(int(args.rows))
        sample_seconds = time.perf_counter() - t0

    out = pd.DataFrame(out)
    out.columns = cols
    out = out.astype("int64")
    if len(out) != args.rows:
        raise RuntimeError(f"sampler returned {len(out)} rows, asked for {args.rows}")
    if ((out.to_numpy() < 0) | (out.to_numpy() >= hi[None, :])).any():
        raise RuntimeError("sampled codes outside the declared domain")
    out.to_csv(args.out, index=False)

    print(json.dumps({
        "method": args.method,
        "epsilon": float(args.epsilon),
        "delta": float(args.delta),
        "seed": int(args.seed),
        "fit_seconds": round(fit_seconds, 3),
        "sample_seconds": round(sample_seconds, 3),
        "rows": int(len(out)),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
