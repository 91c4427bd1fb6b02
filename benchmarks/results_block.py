"""Writes a benchmark's figures: the JSON file and the results block of its Markdown page.

The page keeps everything outside ``<!-- results:start -->`` … ``<!-- results:end -->``
(hand-written reading of the figures); only the block between the markers is replaced.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"


def write_results(res: dict, table: str, json_path: Path, md_path: Path, intro: str) -> None:
    """Writes ``res`` to ``json_path`` and ``table`` between the markers of ``md_path``.

    Args:
        res: the raw figures (JSON-ready).
        table: the Markdown to put between the markers.
        json_path: where the JSON goes (folders are made).
        md_path: the page; created as ``intro`` + an empty block when missing.
        intro: the page's opening text when it does not exist yet.
    """
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(res, indent=2) + "\n")
    text = md_path.read_text() if md_path.exists() else f"{intro}{START}\n{END}\n"
    if START not in text:
        text += f"\n## Results\n\n{START}\n{END}\n"
    block = f"{START}\n{table}\n{END}"
    md_path.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S))
