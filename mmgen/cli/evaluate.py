"""``mmgen evaluate`` (utility and fidelity on real data) and ``mmgen plot`` (a grid of samples)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import add_npz_options, add_schema_option, declared_schema, evaluation_data


def add_evaluate(sub):
    p = sub.add_parser("evaluate", help="utility and fidelity of synthetic data against a real test split", description=(
        "Scores synthetic records against the real test split: classifiers trained (and selected) on the "
        "synthetic data and tested once on the real data, and distances between the two samples."))  # fmt: skip
    p.add_argument("samples", help=".npz with x, y; or a synthetic table (.csv, .parquet) from `mmgen sample`")
    p.add_argument("--data", default=None, help="data spec whose test split is used (tables: the real csv:/parquet: file)")
    p.add_argument("--test-data", default=None, metavar="npz:FILE", help=(
        "test records of your own: every record (x, y) of this file is a test record (instead of --data's test split); "
        "tables: csv:FILE or parquet:FILE"))  # fmt: skip
    add_npz_options(p)
    add_schema_option(p)
    p.add_argument("--metrics", default="lr,mlp", help=(
        "comma-separated: lr (logistic regression), mlp, cnn, fd (FD-EfficientNetLite0), prdc "
        "(precision/recall/density/coverage), mmd (Gaussian MMD^2), sinkhorn, or all; default lr,mlp"))  # fmt: skip
    p.add_argument("--max-samples", type=int, default=2000,
                   help="records per side for fd, prdc, mmd and sinkhorn (default 2000)")  # fmt: skip
    p.add_argument("--checkpoint", default=None,
                   help="the generator checkpoint the samples came from: records its epsilon, delta and features")  # fmt: skip
    p.add_argument("--label", default=None, help="method name in the report (default: the checkpoint's statistics)")
    p.add_argument("--grid", default=None, help="also write a PNG grid of the samples, one row per class")
    p.add_argument("--plot", default=None, metavar="PNG", help=(
        "tables: the per-column marginals, real vs synthetic; images: write the sample grid to PNG and, with --compare, the accuracy/epsilon curve of this report and "
        "the compared ones to PNG's name + '-accuracy.png'"))  # fmt: skip
    p.add_argument("--compare", nargs="+", default=[], metavar="REPORT",
                   help="other JSON reports (mmgen evaluate --checkpoint, or benchmark results) to plot with --plot")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the classifiers and subsamples")
    p.add_argument("--out", default=None, help="JSON report to write")


def add_plot(sub):
    p = sub.add_parser("plot", help="accuracy against epsilon from several reports", description=(
        "Plots downstream accuracy against epsilon from `mmgen evaluate --checkpoint` reports or benchmark "
        "result files; reports with the same method and epsilon are averaged (error bar: std)."))  # fmt: skip
    p.add_argument("reports", nargs="+", help="JSON reports")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--metrics", default="logistic_regression,mlp,cnn", help="accuracy keys, one panel each")
    p.add_argument("--title", default=None)


def cmd_evaluate(args) -> None:
    import torch

    import mmgen

    from ..errors import MMGenError
    from ..evaluate import evaluate, parse_metrics
    from ..evaluate.fidelity import FD_NAME, PRDC_NAME
    from ..files import check_picture, expect, load_samples

    if Path(args.samples).suffix.lower() in (".csv", ".parquet"):
        return _evaluate_table(args)
    metrics = parse_metrics(args.metrics)
    check_picture(args.grid, "--grid")
    check_picture(args.plot, "--plot")
    if args.max_samples < 10:
        raise MMGenError(f"`--max-samples` must be ≥ 10. Got {args.max_samples}.")
    if args.compare and not args.plot:
        raise MMGenError("`--compare` needs `--plot PNG` (the curve is written beside it).")
    if args.plot and args.compare and not args.checkpoint:
        raise MMGenError("`--plot` with `--compare` needs `--checkpoint` (it gives this report's epsilon).")
    compared = []
    if args.compare:
        from ..evaluate.plots import load_reports

        compared = load_reports(args.compare)  # read first: a bad report fails before the evaluation runs
    x, y = load_samples(args.samples, "`mmgen evaluate`")
    x, y = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    if args.checkpoint:
        expect(args.checkpoint, "checkpoint", "`mmgen evaluate --checkpoint`")
    ds = evaluation_data(args)
    report: dict = {"samples": args.samples, "data": args.test_data or args.data}
    report.update(_checkpoint_info(args.checkpoint))
    if args.label:
        report["method"] = args.label
    report.update(evaluate(x, y, ds, metrics=metrics, max_samples=args.max_samples, seed=args.seed))
    parts = [f"{m} {report[m]:.4f}" for m in ("logistic_regression", "mlp", "cnn") if m in report]
    parts += [f"{m} {report[m]:.4g}" for m in (FD_NAME, "MMD2-Gaussian", "Sinkhorn") if m in report]
    if PRDC_NAME in report:
        parts.append(" ".join(f"{k} {report[PRDC_NAME][k]:.3f}" for k in ("precision", "recall", "density", "coverage")))
    print("   ".join(parts) + f"   ({report['n_synthetic']} synthetic, {report['n_test']} real test records)")
    for path in dict.fromkeys(p for p in (args.grid, args.plot) if p):  # --plot writes the grid too
        from ..evaluate.grid import save_sample_grid

        save_sample_grid(x, y, path, n_classes=ds.n_classes, low=ds.low, high=ds.high)
        print(f"wrote {path}")
    if args.grid:
        report["grid"] = args.grid
    if args.plot:
        if compared:
            from ..evaluate.plots import plot_accuracy_curve

            curve = Path(args.plot).with_name(Path(args.plot).stem + "-accuracy.png")
            keys = [m for m in ("logistic_regression", "mlp", "cnn") if m in report]
            plot_accuracy_curve(compared + [report], curve, metrics=keys)
            report["accuracy_plot"] = str(curve)
            print(f"wrote {curve} ({len(compared) + 1} reports)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


def _checkpoint_info(path: str | None) -> dict:
    """The report fields a checkpoint gives: its release's epsilon, delta, relation and statistics (none without one)."""
    if not path:
        return {}
    from ..train import Trained

    info = Trained.load(path).release_info
    return {"epsilon": info["privacy"]["epsilon"], "delta": info["privacy"]["delta"],
            "neighbouring": info["privacy"]["neighbouring"], "checkpoint": path,
            "method": "+".join(s["name"] for s in info["statistics"])}  # fmt: skip


def _evaluate_table(args) -> None:
    """``mmgen evaluate SYNTH.csv --data csv:REAL --schema S``: marginals, correlations, ML efficacy, DCR."""
    from ..data.tables import load_frames, read_table
    from ..errors import MMGenError
    from ..evaluate.tables import evaluate_table
    from ..files import check_picture

    check_picture(args.plot, "--plot")
    if not args.data or args.data.partition(":")[0] not in ("csv", "parquet"):
        raise MMGenError("Evaluating a synthetic table needs the real one: --data csv:FILE (or parquet:FILE) --schema S.json.")
    schema = declared_schema(args, True)
    train, test = load_frames(args.data, schema, holdout=args.holdout)
    if args.test_data:
        if args.holdout is not None:
            raise MMGenError("`--holdout` and `--test-data` exclude each other: the test records come from one place.")
        test, _ = load_frames(args.test_data, schema)
    if not len(test):
        raise MMGenError(f"{args.data} has no test rows: give them as --test-data csv:TEST.csv, or hold some out with "
                         "--holdout FRACTION for both `release` and `evaluate`.")  # fmt: skip
    synth = read_table(args.samples)
    report: dict = {"samples": args.samples, "data": args.data}
    if args.checkpoint:
        from ..files import expect

        expect(args.checkpoint, "checkpoint", "`mmgen evaluate --checkpoint`")
    report.update(_checkpoint_info(args.checkpoint))
    report.update(evaluate_table(synth, train, test, schema, holdout=test, plot=args.plot, seed=args.seed))
    tvd, eff = report["tvd"], report.get("ml_efficacy", {})
    line = [f"TVD 1-way {tvd['one_way_mean']:.4f} (max {tvd['one_way_max']:.4f})",
            f"2-way {tvd['two_way_mean']:.4f} (max {tvd['two_way_max']:.4f})",
            f"3-way {tvd['three_way_mean']:.4f} (max {tvd['three_way_max']:.4f}, {tvd['three_way_triples']} triples)"
            if tvd.get("three_way_triples") else "3-way: fewer than three columns",
            f"correlations {report['correlation']['mean_abs_difference']:.4f}"]  # fmt: skip
    def g(v):
        return "n/a" if v is None else f"{v:.4g}"

    for name, col in report.get("numeric", {}).get("columns", {}).items():
        line.append(f"{name}: median {g(col['synth_median'])} (real {g(col['real_median'])}, error {col['median_rel_err']:.3f}), "
                    f"IQR {g(col['synth_iqr'])} (real {g(col['real_iqr'])}, error {col['iqr_rel_err']:.3f})")
    for who in ("synthetic", "real") if eff else ():
        b = eff[who]["boosting"]
        auc = "n/a" if b["roc_auc"] is None else f"{b['roc_auc']:.4f}"
        line.append(f"boosting trained on {who}: accuracy {b['accuracy']:.4f}, ROC-AUC {auc}")
    if "dcr" in report:
        line.append(f"closer to training than hold-out rows: {report['dcr']['share_closer_to_train']:.3f} (0.5 expected)")
    print("\n".join(line) + f"\n({len(synth)} synthetic, {len(test)} real test rows)")
    if args.plot:
        print(f"wrote {args.plot}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(f"wrote {args.out}")


def cmd_plot(args) -> None:
    from ..evaluate.plots import load_reports, plot_accuracy_curve
    from ..files import check_picture

    check_picture(args.out, "--out")
    reports = load_reports(args.reports)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    path = plot_accuracy_curve(reports, args.out, metrics=metrics, title=args.title)
    print(f"wrote {path} ({len(reports)} reports)")
