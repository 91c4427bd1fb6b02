"""Every module of the package imports on its own, and no private name crosses a package boundary.

Each module is imported in a process of its own that has imported no mmgen module before, so a
module that works only when something else was imported first (a missing import, an import circle
whose outcome depends on which module is entered first) fails here. ``import mmgen.x`` runs
``mmgen/__init__.py`` first, so this mostly guards the modules that ``import mmgen`` does not load
(the CLI, the VAE, the kernels, the audit) and the package's own start-up.

Run as a script (``python tests/test_imports.py mmgen.train ...``), this file imports each named module
in a fresh child process and prints one JSON line per module; the test below does that for all of them.
To keep the test within seconds, the script imports torch, NumPy, SciPy and dp-accounting once and then
forks one child per module (where ``os.fork`` exists): those packages are not mmgen's, and a forked
child starts with no mmgen module, which is all the test needs. Elsewhere each module gets a new interpreter.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mmgen": ROOT / "mmgen", "mmgen.kernels": ROOT / "kernels"}  # import name -> folder
PRELOAD = ("torch", "numpy", "scipy.stats", "dp_accounting")  # third-party start-up cost, paid once
OWN = ("mmgen", "kernels")


def _modules() -> list[str]:
    """Every module and package under mmgen/ and kernels/ (mmgen.kernels), by its import name."""
    names = set(PACKAGES)
    for package, folder in PACKAGES.items():
        for info in pkgutil.walk_packages([str(folder)], prefix=package + "."):
            names.add(info.name)
    return sorted(names)


def _import_one(name: str) -> dict:
    """Imports ``name`` in this process; says how it went (run in a child with no mmgen module yet)."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing and missing not in OWN:  # an optional third-party package (triton) is not installed
            return {"module": name, "status": "optional", "detail": f"needs {exc.name}"}
        return {"module": name, "status": "failed", "detail": traceback.format_exc()}
    except BaseException:  # noqa: B902 -- report anything, SystemExit included, and go on
        return {"module": name, "status": "failed", "detail": traceback.format_exc()}
    return {"module": name, "status": "ok", "detail": ""}


def _import_each(names: list[str], jobs: int = 2) -> list[dict]:
    """Imports each module in a child process of its own, ``jobs`` at a time; one result per module."""
    if not hasattr(os, "fork"):
        code = "import json, sys; sys.path.insert(0, sys.argv[1]); import test_imports as t; print(json.dumps(t._import_one(sys.argv[2])))"
        return [json.loads(subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), n], capture_output=True,
                                          text=True, cwd=ROOT).stdout.strip().splitlines()[-1]) for n in names]  # fmt: skip
    for module in PRELOAD:
        importlib.import_module(module)
    assert not any(m.split(".")[0] in OWN for m in sys.modules), "no mmgen module may be imported before the fork"
    results, running, queue = {}, {}, list(names)
    with tempfile.TemporaryDirectory() as tmp:
        while queue or running:
            while queue and len(running) < jobs:
                name = queue.pop(0)
                out = Path(tmp) / f"{name}.json"
                pid = os.fork()
                if pid == 0:  # the child: import, write the result, leave without running any cleanup
                    code = 1
                    try:
                        out.write_text(json.dumps(_import_one(name)))
                        code = 0
                    finally:
                        os._exit(code)
                running[pid] = (name, out)
            pid, status = os.wait()
            name, out = running.pop(pid)
            if out.exists():
                results[name] = json.loads(out.read_text())
            else:
                results[name] = {"module": name, "status": "failed", "detail": f"the child died (wait status {status})"}
    return [results[n] for n in names]


def test_every_module_imports_on_its_own():
    names = _modules()
    assert {"mmgen", "mmgen.cli", "mmgen.generators.base", "mmgen.kernels.rff", "mmgen.data.private"} <= set(names)
    run = subprocess.run([sys.executable, __file__, *names], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [r["module"] for r in results] == names
    failed = [f"{r['module']}:\n{r['detail']}" for r in results if r["status"] == "failed"]
    assert not failed, "these modules do not import on their own:\n" + "\n".join(failed)
    # only the Triton launchers may need a package that is not installed
    assert {r["module"] for r in results if r["status"] == "optional"} <= {"mmgen.kernels.rff_triton"}


def _package_of(name: str, is_package: bool) -> str:
    return name if is_package else name.rpartition(".")[0]


def _private_imports() -> list[str]:
    """``from <another package> import _name``: private names imported across packages (dunders pass)."""
    found = []
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join((package, *parts[:-1])) if is_package else ".".join((package, *parts))
            here = _package_of(name, is_package)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if not isinstance(node, ast.ImportFrom):
                    continue
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.split(".")[0] == "mmgen":
                    continue
                target_file = PACKAGES["mmgen.kernels"] if target.startswith("mmgen.kernels") else PACKAGES["mmgen"]
                prefix = "mmgen.kernels" if target.startswith("mmgen.kernels") else "mmgen"
                rest = target[len(prefix) :].lstrip(".").split(".") if target != prefix else []
                target_is_package = (target_file.joinpath(*rest) / "__init__.py").is_file()
                there = _package_of(target, target_is_package)
                for alias in node.names:
                    private = alias.name.startswith("_") and not (alias.name.startswith("__") and alias.name.endswith("__"))
                    private_module = any(p.startswith("_") and not p.startswith("__") for p in rest)
                    if there != here and (private or private_module):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {target} import {alias.name}")
    return found


def test_no_private_name_is_imported_across_packages():
    # `from ..release import _check_batch` in evolve/ once hid a shared check behind a private name
    assert _private_imports() == []


if __name__ == "__main__":
    for result in _import_each(sys.argv[1:]):
        print(json.dumps(result), flush=True)
