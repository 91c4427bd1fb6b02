"""Accuracy against ε from several evaluation reports (``mmgen plot``).

A report is a dict with ``"epsilon"``, a method label (``"method"``) and one
or more accuracies (``"logistic_regression"``, ``"mlp"``, ``"cnn"``); a
benchmark file with a ``"runs"`` list of such dicts counts as all of its runs
(``benchmarks/quality.py``'s ``"results"``, each with its ``"runs"``, too).
Reports with the same method and ε (e.g. several seeds) are averaged; the
error bar is their standard deviation.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import DataError
from ..files import check_picture, describe, sniff

__all__ = ["ACCURACY_KEYS", "load_reports", "accuracy_table", "plot_accuracy_curve"]

ACCURACY_KEYS = ("logistic_regression", "mlp", "cnn")


def load_reports(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Reads JSON reports; a file with a ``"runs"`` list contributes each run (its top-level keys as defaults).

    Raises:
        DataError: on a file that is not a JSON object.
    """
    out = []
    for p in paths:
        try:
            doc = json.loads(Path(p).read_text())
        except (OSError, ValueError) as exc:
            kind = sniff(p)
            if kind != "unknown":
                raise DataError(f"{p} is {describe(kind)}, not a JSON report (`mmgen evaluate --out` writes one).") from None
            raise DataError(f"Cannot read report {p}: {exc}") from None
        if not isinstance(doc, dict):
            raise DataError(f"Report {p} is not a JSON object.")
        if isinstance(doc.get("results"), list):  # benchmarks/quality.py: results per (data, map, ε), runs per seed
            base = {k: v for k, v in doc.items() if k != "results"}
            for res in doc["results"]:
                head = {k: v for k, v in res.items() if k not in ("runs", "summary")}
                head.setdefault("method", res.get("map"))
                out.extend({**base, **head, **r} for r in res.get("runs", []) if isinstance(r, dict))
        elif isinstance(doc.get("runs"), list):
            base = {k: v for k, v in doc.items() if k != "runs"}
            out.extend({**base, **r} for r in doc["runs"] if isinstance(r, dict))
        else:
            out.append(doc)
    return out


def _label(r: dict) -> str:
    data = r.get("data")
    method = r.get("method") or "synthetic"
    return f"{method} ({data})" if data else str(method)


def accuracy_table(reports: Sequence[dict], metric: str) -> dict[str, list[tuple[float, float, float, int]]]:
    """``{label: [(ε, mean, std, n), ...]}`` sorted by ε, over the reports that have ``epsilon`` and ``metric``."""
    groups: dict[tuple[str, float], list[float]] = {}
    for r in reports:
        if r.get("epsilon") is None or not isinstance(r.get(metric), (int, float)):
            continue
        groups.setdefault((_label(r), float(r["epsilon"])), []).append(float(r[metric]))
    table: dict[str, list] = {}
    for (label, eps), vals in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        table.setdefault(label, []).append((eps, mean, std, len(vals)))
    return table


def plot_accuracy_curve(
    reports: Sequence[dict], path: str | os.PathLike, *, metrics: Sequence[str] = ACCURACY_KEYS, title: str | None = None
) -> Path:
    """Writes a PNG of accuracy against ε (log scale): one panel per metric, one line per method.

    Args:
        reports: dicts as described in the module docstring.
        path: the PNG to write.
        metrics: accuracy keys to plot (panels without data are left out).
        title: figure title.

    Returns:
        The path written.

    Raises:
        DataError: if no report has both an ``epsilon`` and one of ``metrics``.
        MMGenError: if ``path`` is not a picture file name (.png, .pdf, ...).
    """
    check_picture(path, "path")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = {m: accuracy_table(reports, m) for m in metrics}
    tables = {m: t for m, t in tables.items() if t}
    if not tables:
        raise DataError(
            f"No report has an `epsilon` and one of {list(metrics)}; "
            "evaluate with `mmgen evaluate ... --checkpoint CKPT` (records ε) or pass benchmark results."
        )
    fig, axes = plt.subplots(1, len(tables), figsize=(4.5 * len(tables), 3.6), squeeze=False)
    for ax, (metric, table) in zip(axes[0], tables.items()):
        for label, rows in table.items():
            eps, mean, std = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
            ax.errorbar(eps, mean, yerr=std, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("ε")
        ax.set_ylabel(f"{metric} accuracy (real test split)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
