"""benchmarks/image_dpsgd.py: the DP-SGD step of the diffusion recipe is the mechanism its accounting assumes.

Checked on tiny tensors: the vmapped per-record gradient of the K-averaged denoising loss is the
record's own gradient; a canary at the front moves a step's clipped sum by at most C (each old record
keeping its draws); the noise has std σC and follows the test seed; the budget split composes to at
most the total and no smaller σ would; the test seed replays the training and the default streams are
publishable; a toy end-to-end run writes accuracies and the composed ε. No time bound is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from mmgen.privacy import dp_event, noise_multiplier_for
from mmgen.privacy.ledger import composed_epsilon, dp_sgd_event
from mmgen.privacy.noise import PrivateStreams

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "image_dpsgd.py"
SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def dd():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is faster, and much faster on a busy machine
    spec = importlib.util.spec_from_file_location("image_dpsgd_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)
    torch.set_num_threads(threads)


def _model(dd, width=4, seed=0):
    torch.manual_seed(seed)
    model = dd.UNet(width, 10)
    with torch.no_grad():  # the output layer starts at zero; a random one makes every gradient non-trivial
        model.out.weight.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(seed + 1))
    return model


def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *SHAPE), generator=g) * 2 - 1, torch.arange(n) % 10


def _flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def test_vmapped_gradient_is_each_records_own_gradient(dd):
    model, abar = _model(dd), dd.alpha_bars("linear")
    x, y = _data(5)
    t, eps = dd.diffusion_draws(5, 3, SHAPE, torch.Generator().manual_seed(2))
    g = dd.per_record_grads(model, x, y, t, eps, abar)
    names = [k for k, _ in model.named_parameters()]
    rows = []
    for i in (0, 3):
        # autograd on record i alone: its K = 3 draws as one batch of 3, the loss averaged over them
        loss = dd.denoising_loss(model, x[i : i + 1].expand(3, -1, -1, -1), y[i : i + 1].expand(3), t[i], eps[i], abar)
        direct = _flat(torch.autograd.grad(loss, list(model.parameters())))
        mapped = _flat([g[k][i] for k in names])
        assert (mapped - direct).norm() <= 1e-5 * direct.norm()
        rows.append(mapped)
    assert (rows[0] - rows[1]).norm() > 0.1 * rows[0].norm()  # two records' gradients differ: vmap maps over records


def test_canary_at_the_front_moves_the_clipped_sum_by_at_most_the_clip(dd):
    model, abar, clip, k = _model(dd), dd.alpha_bars("linear"), 0.1, 2
    x, y = _data(12)
    # the step itself (q = 1: every record is in; σ = 0: no noise); its draws come from the stream "diffusion", step 0
    base = dd.noisy_gradient(model, x, y, step=0, q=1.0, sigma=0.0, clip=clip, multiplicity=k,
                             streams=PrivateStreams(test_seed=1), abar=abar, chunk=5)  # fmt: skip
    t, eps = dd.diffusion_draws(12, k, SHAPE, PrivateStreams(test_seed=1).generator("diffusion", 0))
    again = dd.clipped_sum(model, x, y, t, eps, abar, clip=clip, chunk=5)
    assert (_flat(base) - _flat(again)).norm() <= 1e-5 * _flat(base).norm()  # the step is the clipped sum of its batch
    # the canary: an extreme image with its own draws, at the front (every chunk boundary shifts); each old record keeps its draws
    cx, cy = torch.ones((1, *SHAPE)), torch.tensor([3])
    ct, ceps = torch.full((1, k), 999), 5.0 * torch.ones((1, k, *SHAPE))
    canary_norm = _flat(dd.per_record_grads(model, cx, cy, ct, ceps, abar).values()).norm()
    assert canary_norm > 10 * clip  # its raw gradient is far over the bound: clipping has work to do
    plus = dd.clipped_sum(model, torch.cat([cx, x]), torch.cat([cy, y]), torch.cat([ct, t]), torch.cat([ceps, eps]), abar,
                          clip=clip, chunk=5)  # fmt: skip
    moved = (_flat(plus) - _flat(base)).norm()
    assert moved <= clip * (1 + 1e-4)
    assert moved > 0.01  # the canary did contribute (the test can fail both ways)


def test_noise_has_std_sigma_times_clip_and_follows_the_test_seed(dd):
    model, abar = _model(dd, width=8), dd.alpha_bars("linear")
    x, y = _data(0)  # no records: the step's release is its noise alone

    def step(test_seed, sigma=3.0):
        return _flat(dd.noisy_gradient(model, x, y, step=4, q=0.5, sigma=sigma, clip=0.5, multiplicity=2,
                                       streams=PrivateStreams(test_seed=test_seed), abar=abar, chunk=8))  # fmt: skip

    noise = step(1)
    assert noise.numel() > 30_000
    assert noise.std().item() == pytest.approx(3.0 * 0.5, rel=0.05)
    assert abs(noise.mean().item()) < 0.05
    assert torch.equal(noise, step(1)) and not torch.equal(noise, step(2))
    assert torch.equal(step(1, sigma=0.0), torch.zeros_like(noise))


def test_the_budget_split_composes_within_the_total(dd):
    release = dp_event([noise_multiplier_for(0.2, 1e-5)])
    q, steps, total = 0.1, 5, 1.0
    sigma, composed = dd.budget(total, release, q, steps)
    assert composed == pytest.approx(composed_epsilon([release, dp_sgd_event(sigma, q, steps)], 1e-5, "add-remove"))
    assert total * 0.99 < composed <= total
    assert composed_epsilon([release, dp_sgd_event(sigma * 0.95, q, steps)], 1e-5, "add-remove") > total


def test_test_seed_replays_the_training_and_default_streams_are_publishable(dd):
    abar = dd.alpha_bars("cosine")
    x, y = _data(6)

    def train(test_seed):
        model = _model(dd)
        dd.train_dp_sgd(model, x, y, sigma=1.0, q=0.5, steps=2, clip=1.0, lr=1e-2, divisor=3.0, multiplicity=2,
                        streams=PrivateStreams(test_seed=test_seed), abar=abar, chunk=8, ema=0.9)  # fmt: skip
        return _flat(model.parameters())

    first = train(7)
    assert torch.equal(first, train(7))
    assert not torch.equal(first, train(8))
    assert not torch.equal(first, _flat(_model(dd).parameters()))  # it trained
    assert not dd.make_streams(dd.parse_args(["--preset", "cpu"])).publishable
    assert dd.make_streams(dd.parse_args(["--preset", "cpu", "--publishable"])).publishable


def test_options_override_the_preset_and_bad_ones_are_refused(dd):
    args = dd.parse_args(["--preset", "cpu", "--width", "12"])
    assert (args.width, args.steps, args.device) == (12, dd.PRESETS["cpu"]["steps"], "cpu")
    gpu = dd.parse_args(["--preset", "gpu", "--device", "cpu"])
    assert (gpu.width, gpu.n_syn, gpu.device) == (64, 10_000, "cpu")
    with pytest.raises(SystemExit):
        dd.parse_args(["--sampling-rate", "1.5"])
    with pytest.raises(SystemExit):
        dd.parse_args(["--epsilons", "0.1"])  # below the release's share
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            dd.parse_args(["--device", "cuda"])


def test_a_toy_run_scores_every_stage_and_writes_the_composed_epsilon(dd, tmp_path):
    path = tmp_path / "dpsgd.json"
    out = dd.main(["--preset", "cpu", "--epsilons", "1", "--max-train", "300", "--max-val", "100", "--n-syn", "100",
                   "--warmup-samples", "100", "--warmup-steps", "3", "--steps", "2", "--sampling-rate", "0.05",
                   "--sample-steps", "3", "--json", str(path)])  # fmt: skip
    saved = json.loads(path.read_text())
    assert [r["stage"] for r in saved["results"]] == ["release", "warm-up", "dp-sgd"]
    for r in saved["results"]:
        assert 0.0 <= r["lr"] <= 1.0 and 0.0 <= r["cnn"] <= 1.0
    dp = saved["results"][-1]
    assert dp["total_epsilon"] == "1" and 0.99 < dp["composed_epsilon"] <= 1.0 and dp["sigma"] > 0
    assert "not for publication" in saved["noise"]
    assert out["n_fit"] == saved["n_fit"] > 0
    page = path.with_suffix(".md").read_text()
    assert "| diffusion, warm-up + DP-SGD | 1 (" in page
