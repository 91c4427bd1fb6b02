"""Isolated environment for the smartnoise-synth anchors (MST, AIM).

Stdlib only at import time, so it is importable from the project's venv
without pulling smartnoise (or its jax / opendp stack) into mmgen's
dependencies.  The anchors run in their own venv, ``<root>/.venv-anchors``,
as a subprocess (``smartnoise_run.py``).

    from benchmarks.anchors.env import ensure_env, run_anchor
    syn, rec = run_anchor("mst", codes_df, {"col": K, ...}, epsilon=1.0,
                          delta=1e-5, seed=0, rows=len(codes_df),
                          workdir=Path("out/anchors"), timeout=1800)

``python3 -m benchmarks.anchors.env`` (from the repo root) just builds the venv
and prints its python.

dpmm (PrivTree discretisation + AIM/MST, PyPI ``dpmm``; it pins opendp 0.12.1, numpy 1.26
and pandas 2.1, so it cannot share ``.venv-anchors``) has a venv of its own,
``<root>/.venv-dpmm`` (``ensure_dpmm_env``), and takes RAW rows and the public domain
rather than codes (``dpmm_run.py``)::

    from benchmarks.anchors.env import dpmm_domain, dpmm_frame, dpmm_rows, run_dpmm
    out, rec = run_dpmm("aim", dpmm_rows(frame, schema), dpmm_domain(schema), epsilon=1.0,
                        delta=1e-5, seed=0, n=len(frame), workdir=Path("out/anchors"), timeout=1800)
    syn = dpmm_frame(out, schema)  # each category back as the schema's label

``python3 -m benchmarks.anchors.env dpmm`` builds that one.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
RUNNER = HERE / "smartnoise_run.py"
VENV_NAME = ".venv-anchors"
STAMP_NAME = ".anchors-stamp"
DPMM_REQUIREMENTS = HERE / "dpmm_requirements.txt"
DPMM_RUNNER = HERE / "dpmm_run.py"
DPMM_VENV_NAME = ".venv-dpmm"
DPMM_STAMP_NAME = ".dpmm-stamp"
DPMM_METHODS = ("aim", "mst")


def _default_root() -> Path:
    return HERE.parent.parent  # repo root


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _stamp_value(requirements: Path = REQUIREMENTS) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def _run(cmd: list[str], what: str, timeout: float | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def ensure_env(root: Path | None = None) -> Path:
    """Create ``root/.venv-anchors`` once and return the path of its python.

    Idempotent: a stamp file holding the hash of ``requirements.txt`` marks a
    completed install; if the requirements change, the pins are re-installed.
    Install recipe (no torch, no opacus, no pac-synth)::

        python3 -m venv .venv-anchors
        .venv-anchors/bin/pip install --no-deps -r benchmarks/anchors/requirements.txt
    """
    return _ensure_venv(root, VENV_NAME, STAMP_NAME, REQUIREMENTS,
                        "import snsynth, mbi, opendp, snsynth.mst.mst, snsynth.aim.aim", "anchors")


def ensure_dpmm_env(root: Path | None = None) -> Path:
    """Create ``root/.venv-dpmm`` once and return the path of its python (as :func:`ensure_env`).

    Install recipe (the full lock of ``pip install dpmm==0.1.9`` on Python 3.11)::

        python3 -m venv .venv-dpmm
        .venv-dpmm/bin/pip install --no-deps -r benchmarks/anchors/dpmm_requirements.txt
    """
    return _ensure_venv(root, DPMM_VENV_NAME, DPMM_STAMP_NAME, DPMM_REQUIREMENTS,
                        "import dpmm.pipelines, dpmm.processing.binners, opendp", "dpmm")


def _ensure_venv(root: Path | None, venv_name: str, stamp_name: str, requirements: Path, check: str,
                 what: str) -> Path:
    root = Path(root) if root is not None else _default_root()
    venv = root / venv_name
    py = _venv_python(venv)
    stamp = venv / stamp_name
    want = _stamp_value(requirements)
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py
    if not py.exists():
        # Use a real python3 (not the project venv's) as the base interpreter.
        base = os.environ.get("MMGEN_ANCHORS_PYTHON") or getattr(sys, "_base_executable", None) or "python3"
        _run([base, "-m", "venv", str(venv)], f"creating the {what} venv", timeout=600)
    _run([str(py), "-m", "pip", "install", "--no-deps", "-r", str(requirements)],
         f"installing the {what} requirements", timeout=3600)
    _run([str(py), "-c", check], f"checking the {what} venv", timeout=600)
    stamp.write_text(want + "\n")
    return py


def run_anchor(method: str, codes, domain: dict, epsilon: float, delta: float,
               seed: int, rows: int, workdir: Path, timeout: float,
               root: Path | None = None, extra_args: list[str] | None = None):
    """Fit smartnoise-synth ``method`` ("mst" or "aim") on integer ``codes``.

    ``codes``: pandas.DataFrame, one integer column per entry of ``domain``
    (``{column: K}``, the public number of codes), values in ``0..K-1``.
    Returns ``(synthetic codes DataFrame, JSON record dict)``.  The record gets
    ``wall_seconds`` (whole subprocess, incl. imports) added.  Raises
    ``RuntimeError`` with the stderr tail on failure or timeout.
    ``extra_args``: passed to smartnoise_run.py (e.g. ``["--max-model-size", "10"]``).
    """
    if method not in ("mst", "aim"):
        raise ValueError(f"method must be 'mst' or 'aim', got {method!r}")
    cols = list(domain)
    missing = [c for c in cols if c not in codes.columns]
    if missing:
        raise ValueError(f"codes lacks declared columns {missing}")
    py = ensure_env(root)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{method}_eps{epsilon:g}_seed{seed}_{os.getpid()}_{time.time_ns()}"
    data_p = workdir / f"{tag}_codes.csv"
    dom_p = workdir / f"{tag}_domain.json"
    out_p = workdir / f"{tag}_synth.csv"
    err_p = workdir / f"{tag}_stderr.log"
    codes[cols].astype("int64").to_csv(data_p, index=False)
    dom_p.write_text(json.dumps({c: int(k) for c, k in domain.items()}))
    cmd = [str(py), str(RUNNER), "--method", method, "--data", str(data_p),
           "--domain", str(dom_p), "--epsilon", repr(float(epsilon)),
           "--delta", repr(float(delta)), "--seed", str(int(seed)),
           "--rows", str(int(rows)), "--out", str(out_p), *(extra_args or [])]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.setdefault("JAX_PLATFORMS", "cpu")
    try:
        return _run_subprocess(method, cmd, env, timeout, cols, err_p, out_p)
    finally:  # the inputs hold the private codes: never leave copies around (the stderr log stays)
        for p in (data_p, dom_p, out_p):
            p.unlink(missing_ok=True)


def _run_subprocess(method, cmd, env, timeout, cols, err_p, out_p, read=None):
    import pandas as pd  # the project venv has pandas; only needed here

    t0 = time.perf_counter()
    with open(err_p, "w") as err_f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_f, text=True,
                                env=env, start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise RuntimeError(f"anchor {method} timed out after {timeout}s; stderr tail:\n"
                               f"{_tail(err_p)}") from None
        except BaseException:  # e.g. KeyboardInterrupt: don't leave the fit running
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            raise
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"anchor {method} failed (exit {proc.returncode}); stderr tail:\n{_tail(err_p)}")
    lines = [ln for ln in stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        raise RuntimeError(f"anchor {method} printed no JSON record; stdout={stdout[-2000:]!r}\n"
                           f"stderr tail:\n{_tail(err_p)}")
    record = json.loads(lines[-1])
    record["wall_seconds"] = round(wall, 3)
    synth = pd.read_csv(out_p)[cols] if read is None else read(out_p)
    return synth, record


# -- dpmm: raw rows and the public domain --------------------------------------------------
def dpmm_domain(schema) -> list[dict]:
    """The public domain of ``schema`` as ``dpmm_run.py`` reads it: declared bounds and categories only.

    ``schema``: an mmgen ``Schema`` (anything with ``.columns`` of objects with ``name``,
    ``type``, ``low``, ``high``, ``categories``, ``missing``). Nothing here looks at rows.
    A category is written as ``str(category)``; the missing value (``None``) is left out of the
    list and sets ``"missing": true``.  Raises ``ValueError`` on a list whose strings collide.
    """
    out = []
    for c in schema.columns:
        if c.type == "categorical":
            cats = [str(v) for v in c.categories if v is not None]
            if len(set(cats)) != len(cats) or "" in cats:
                raise ValueError(f"column {c.name!r}: categories must be distinct, non-empty strings as str(): {cats}")
            out.append({"name": c.name, "type": "categorical", "categories": cats,
                        "missing": bool(c.missing or None in c.categories)})
        else:
            out.append({"name": c.name, "type": c.type, "lower": float(c.low), "upper": float(c.high),
                        "missing": bool(c.missing)})
    return out


def dpmm_rows(frame, schema):
    """The raw rows in ``dpmm_run.py``'s input form: numbers as floats, each category as the string
    :func:`dpmm_domain` declares for it, gaps ``None``; the schema's columns in its order.

    Raises ``ValueError`` naming a column with values outside its declared category list.
    """
    import pandas as pd

    out = {}
    for c in schema.columns:
        s = frame[c.name]
        if c.type == "categorical":
            labels = {v: str(v) for v in c.categories if v is not None}  # 1.0 finds the label 1 (equal hashes)
            gap = s.isna()
            v = s.map(labels)
            bad = sorted({str(x) for x in s[~gap & v.isna()]})
            if bad:
                raise ValueError(f"column {c.name!r}: values outside the declared categories: {bad[:5]}")
            out[c.name] = v.astype(object).where(~gap, None)
        else:
            out[c.name] = pd.to_numeric(s, errors="raise").astype("float64")
    return pd.DataFrame(out)


def dpmm_frame(raw, schema):
    """``dpmm_run.py``'s output rows with each category back as its declared value (``str`` → the schema's label)."""
    import pandas as pd

    out = {}
    for c in schema.columns:
        s = raw[c.name]
        if c.type == "categorical":
            labels = {str(v): v for v in c.categories if v is not None}
            gap = s.isna()
            unknown = sorted(set(s[~gap].astype(str)) - set(labels))
            if unknown:
                raise ValueError(f"column {c.name!r}: dpmm returned undeclared categories {unknown[:5]}")
            out[c.name] = s.astype(str).map(labels).where(~gap, None).astype(object)
        else:
            out[c.name] = pd.to_numeric(s, errors="raise").astype("float64")
    return pd.DataFrame(out)


def _read_dpmm_output(domain: list[dict]):
    import pandas as pd

    names = [c["name"] for c in domain]
    dtypes = {c["name"]: (str if c["type"] == "categorical" else "float64") for c in domain}

    def read(path):
        return pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values={n: [""] for n in names})[names]

    return read


def run_dpmm(method: str, rows, domain: list[dict], epsilon: float, delta: float, seed: int, n: int,
             workdir: Path, timeout: float, root: Path | None = None, extra_args: list[str] | None = None):
    """Fit dpmm's ``method`` pipeline ("aim" or "mst"; PrivTree bins + the model) on RAW ``rows``.

    ``rows``: pandas.DataFrame in :func:`dpmm_rows`' form (a column per entry of ``domain``, from
    :func:`dpmm_domain`). ``epsilon`` is the TOTAL budget: the runner gives ``--domain-share``
    (default 0.1) of it to PrivTree and the rest, with ``delta``, to the model. Returns
    ``(synthetic rows in the same form, JSON record dict)``; the record gets ``wall_seconds``.
    Raises ``RuntimeError`` with the stderr tail on failure or timeout.
    """
    if method not in DPMM_METHODS:
        raise ValueError(f"method must be one of {DPMM_METHODS}, got {method!r}")
    names = [c["name"] for c in domain]
    missing = [c for c in names if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack declared columns {missing}")
    py = ensure_dpmm_env(root)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"dpmm-{method}_eps{epsilon:g}_seed{seed}_{os.getpid()}_{time.time_ns()}"
    data_p = workdir / f"{tag}_rows.csv"
    dom_p = workdir / f"{tag}_domain.json"
    out_p = workdir / f"{tag}_synth.csv"
    err_p = workdir / f"{tag}_stderr.log"
    rows[names].to_csv(data_p, index=False, na_rep="")
    dom_p.write_text(json.dumps({"columns": domain}))
    cmd = [str(py), str(DPMM_RUNNER), "--method", method, "--data", str(data_p), "--domain", str(dom_p),
           "--epsilon", repr(float(epsilon)), "--delta", repr(float(delta)), "--seed", str(int(seed)),
           "--rows", str(int(n)), "--out", str(out_p), *(extra_args or [])]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    try:
        return _run_subprocess(f"dpmm-{method}", cmd, env, timeout, names, err_p, out_p,
                               read=_read_dpmm_output(domain))
    finally:  # the inputs hold the private rows: never leave copies around (the stderr log stays)
        for p in (data_p, dom_p, out_p):
            p.unlink(missing_ok=True)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text()[-n:]
    except OSError:
        return "<no stderr>"


if __name__ == "__main__":  # python3 -m benchmarks.anchors.env [dpmm] [ROOT]
    _args = sys.argv[1:]
    _build = ensure_dpmm_env if _args[:1] == ["dpmm"] else ensure_env
    _args = _args[1:] if _args[:1] == ["dpmm"] else _args
    print(_build(Path(_args[0]) if _args else None))
