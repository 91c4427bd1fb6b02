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


def _default_root() -> Path:
    return HERE.parent.parent  # repo root


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _stamp_value() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


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
    root = Path(root) if root is not None else _default_root()
    venv = root / VENV_NAME
    py = _venv_python(venv)
    stamp = venv / STAMP_NAME
    want = _stamp_value()
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py
    if not py.exists():
        # Use a real python3 (not the project venv's) as the base interpreter.
        base = os.environ.get("MMGEN_ANCHORS_PYTHON") or getattr(sys, "_base_executable", None) or "python3"
        _run([base, "-m", "venv", str(venv)], "creating the anchors venv", timeout=600)
    _run([str(py), "-m", "pip", "install", "--no-deps", "-r", str(REQUIREMENTS)],
         "installing the anchors requirements", timeout=3600)
    _run([str(py), "-c", "import snsynth, mbi, opendp, snsynth.mst.mst, snsynth.aim.aim"],
         "checking the anchors venv", timeout=600)
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


def _run_subprocess(method, cmd, env, timeout, cols, err_p, out_p):
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
    synth = pd.read_csv(out_p)[cols]
    return synth, record


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text()[-n:]
    except OSError:
        return "<no stderr>"


if __name__ == "__main__":
    print(ensure_env(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
