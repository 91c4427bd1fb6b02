"""The whole path in one call: release → fit → sample → evaluate (what ``mmgen demo`` runs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mmgen
from mmgen.errors import MMGenError
from mmgen.evaluate import downstream_accuracy
from mmgen.evaluate.grid import save_grid

__all__ = ["run_demo", "DEMO_SETTINGS"]

# Settings per data set: digits' were chosen on digits; Fashion-MNIST's generator is sized for a
# 2-core CPU (a width-32 conv generator, 600 steps of 200), not tuned on its test accuracy.
DEMO_SETTINGS = {
    "digits": {"n_features": 4000, "epochs": 10, "n_samples": 5000, "width": 64, "batch_size": 500},
    "fashion-mnist": {"n_features": 10000, "epochs": 6, "n_samples": 10000, "width": 32, "batch_size": 200},
}


def run_demo(
    data: str = "digits",
    epsilon: float = 10.0,
    delta: float = 1e-5,
    out: str = "mmgen-demo",
    epochs: int | None = None,
    neighbouring: str = "add-remove",
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> dict:
    """Runs the whole path on a real data set and writes the release, a grid and a report into ``out``.

    Args:
        force: overwrite a demo release already in ``out`` (without it, that is refused: a second
            release of the same data spends its ε again).

    Returns:
        The report (also written to ``out/report.json``).

    Raises:
        MMGenError: ``out`` already holds ``release.mmgen`` and ``force`` is false.
    """
    settings = DEMO_SETTINGS.get(data.partition(":")[0], DEMO_SETTINGS["fashion-mnist"])
    epochs = epochs or settings["epochs"]
    out_dir = Path(out)
    if (out_dir / "release.mmgen").exists() and not force:
        raise MMGenError(f"{out_dir} already holds a demo release ({out_dir / 'release.mmgen'}); running again "
                         "spends epsilon again. Pass --force (force=True) to overwrite it, or choose another --out.")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ds = mmgen.data.load(data)
    fmap = mmgen.features.create("rff", n_features=settings["n_features"], seed=seed)
    t0 = time.perf_counter()
    rel = mmgen.release(ds, features=fmap, epsilon=epsilon, delta=delta, neighbouring=neighbouring, progress=progress)
    rel.save(out_dir / "release.mmgen")
    t_release = time.perf_counter() - t0
    t0 = time.perf_counter()
    import torch

    torch.manual_seed(seed)
    generator = mmgen.generators.for_release(rel, "conv", width=settings["width"])
    trained = mmgen.fit(generator, rel, epochs=epochs, batch_size=settings["batch_size"], seed=seed, progress=progress)
    trained.save(out_dir / "generator.ckpt")
    t_fit = time.perf_counter() - t0
    x, y = trained.sample(settings["n_samples"], seed=seed)
    import numpy as np

    np.savez_compressed(out_dir / "samples.npz", x=x.numpy(), y=y.numpy())
    save_grid(trained, out_dir / "samples.png")
    t0 = time.perf_counter()
    acc = downstream_accuracy(x, y, ds.x_test, ds.y_test, seed=seed)
    t_eval = time.perf_counter() - t0
    report = {
        "data": data,
        "epsilon": epsilon,
        "delta": delta,
        "neighbouring": neighbouring,
        "features": rel.statistics[0].feature_spec,
        "noise_std": rel.statistics[0].noise_std,
        "logistic_regression": acc["logistic_regression"],
        "mlp": acc["mlp"],
        "n_synthetic": acc["n_synthetic"],
        "n_test": acc["n_test"],
        "seconds": {"release": round(t_release, 2), "fit": round(t_fit, 2), "evaluate": round(t_eval, 2),
                    "total": round(time.perf_counter() - t_start, 2)},  # fmt: skip
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"| data | ε | δ | neighbouring | logistic regression | MLP | wall time |")
    print(f"| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {data} | {epsilon:g} | {delta:g} | {neighbouring} | {report['logistic_regression']:.3f} | "
          f"{report['mlp']:.3f} | {report['seconds']['total']:.0f} s |")  # fmt: skip
    print(f"\nwrote {out_dir}/release.mmgen, generator.ckpt, samples.npz, samples.png, report.json")
    return report
