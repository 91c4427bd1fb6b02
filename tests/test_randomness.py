"""Private randomness (mmgen.privacy.noise): full-entropy, independent streams for every draw on private data.

The review of issue 20 found DP-SGD's noise replaying its Poisson sample's stream: both generators were seeded with
``manual_seed``, which keeps 32 bits, from seeds 2^62 apart. These tests pin the fix from three sides: the state of
a private generator is really the 19,968 bits handed to it (an independent Mersenne Twister agrees), two test seeds
that share their low 32 bits give different runs, and in the real ``train_vae`` a record's inclusion in a batch and
the noise on every coordinate are uncorrelated over thousands of steps. A source scan keeps every new generator of
a private stage inside the one module.
"""

from __future__ import annotations

import io
import math
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch

import mmgen
from mmgen.errors import PrivacyError
from mmgen.privacy.noise import ENTROPY_SOURCE, PrivateStreams
from mmgen.vae import DPSGD, train_vae

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")
ROOT = Path(mmgen.__file__).resolve().parent


def test_a_private_generator_holds_exactly_the_state_words_it_was_given(monkeypatch):
    words = np.random.SeedSequence(123).generate_state(624, np.uint32)
    monkeypatch.setattr("mmgen.privacy.noise.os.urandom", lambda n: words.tobytes()[:n])
    got = torch.rand(8, generator=PrivateStreams().generator("any"))
    mt = np.random.MT19937()
    mt.state = {"bit_generator": "MT19937", "state": {"key": words, "pos": 624}}
    expected = (mt.random_raw(8) & 0xFFFFFF) * 2.0**-24  # torch's float32 uniform: the low 24 bits of each word
    np.testing.assert_array_equal(got.numpy(), expected.astype(np.float32))


def test_os_streams_differ_between_purposes_steps_and_calls():
    s = PrivateStreams()
    assert s.publishable and s.source == ENTROPY_SOURCE
    draws = [torch.rand(64, generator=s.generator(p, i)) for p in ("poisson-mask", "dp-sgd-noise") for i in (0, 0, 1)]
    for i in range(len(draws)):
        for j in range(i):
            assert not torch.equal(draws[i], draws[j])


def test_test_seeds_that_share_their_low_32_bits_give_different_streams():
    a, b = PrivateStreams(test_seed=5), PrivateStreams(test_seed=5 + 2**32)
    assert not a.publishable and "not for publication" in a.source
    for purpose in ("poisson-mask", "latent", "dp-sgd-noise"):
        x, y = torch.rand(32, generator=a.generator(purpose, 3)), torch.rand(32, generator=b.generator(purpose, 3))
        assert not torch.equal(x, y)
        assert torch.equal(x, torch.rand(32, generator=PrivateStreams(test_seed=5).generator(purpose, 3)))
    # the same seed and step for two purposes: independent states
    assert not torch.equal(torch.rand(32, generator=a.generator("poisson-mask", 3)),
                           torch.rand(32, generator=a.generator("dp-sgd-noise", 3)))  # fmt: skip
    with pytest.raises(PrivacyError, match="test_seed"):
        PrivateStreams(test_seed=-1)


def test_poisson_masks_have_rate_q_and_permutations_are_permutations():
    s = PrivateStreams()
    m = torch.stack([s.poisson_mask(1000, 0.05, t) for t in range(40)])
    rate = float(m.double().mean())
    assert abs(rate - 0.05) < 5 * math.sqrt(0.05 * 0.95 / m.numel())
    p = s.permutation(500)
    assert torch.equal(p.sort().values, torch.arange(500))


def _small_digits(n):
    ds = mmgen.data.load("digits")
    import dataclasses

    return dataclasses.replace(ds, x_train=ds.x_train[:n].clone(), y_train=ds.y_train[:n].clone())


@pytest.fixture
def one_thread(_few_threads):
    torch.set_num_threads(1)
    yield


def _run_and_watch(data, monkeypatch, **options):
    """Trains the VAE through the real ``train_vae`` and records, per step, which records were in the batch and
    the noise added to the first layer's weight (``p.grad − p.summed_grad``, opacus's own two terms)."""
    n = len(data.y_train)
    flat = ((data.x_train.reshape(n, -1).double() - data.low) / (data.high - data.low)).float()
    members, noise = [], []
    real = DPSGD.noisy_gradient

    def watched(self, u, y, xi, gen):
        real(self, u, y, xi, gen)
        inside = torch.zeros(n, dtype=torch.bool)
        for row in u:  # which records: by content, whatever order or indices the implementation uses
            inside |= (flat == row).all(dim=1)
        members.append(inside)
        w = self.model.encoder[0].weight
        noise.append((w.grad - w.summed_grad).detach().reshape(-1).clone())

    monkeypatch.setattr(DPSGD, "noisy_gradient", watched)
    trained = train_vae(data, **options)
    return trained, torch.stack(members), torch.stack(noise).double()


def test_noise_is_independent_of_the_poisson_sample_in_real_dp_sgd(monkeypatch, one_thread):
    """(a) + (c): over 4,000 DP-SGD steps, the noise on every first-layer coordinate has the same mean whether or
    not any given record is in the batch, and the same spread (the replayed stream gave a linked coordinate a mean
    of +0.44 σC given inclusion here, |z| = 27, and a standard deviation 0.81 times that given exclusion)."""
    data = _small_digits(24)
    sigma, clip = 1.0, 1.0
    _, m, z = _run_and_watch(data, monkeypatch, noise_multiplier=sigma, clip_norm=clip, sampling_rate=0.5,
                             epochs=2000.0, hidden=(4,), latent_dim=2, lr=1e-6)  # fmt: skip
    steps = len(m)
    assert steps == 4000 and z.shape[1] == 4 * (64 + 10)
    z = z / (sigma * clip)
    assert abs(float(z.std()) - 1) < 0.02  # the noise really is there, at std σC
    mf = m.double()
    n_in = mf.sum(0)  # (N,)
    assert bool(((n_in > 0.45 * steps) & (n_in < 0.55 * steps)).all())
    mean_in = (mf.T @ z) / n_in[:, None]  # (N, P): each coordinate's mean noise over the steps that hold record j
    mean_out = ((1 - mf).T @ z) / (steps - n_in)[:, None]
    se = torch.sqrt(1 / n_in + 1 / (steps - n_in))[:, None]
    zscore = (mean_in - mean_out) / se
    # 24 × 296 = 7,104 comparisons: under independence max |z| exceeds 6 with probability below 1e-4
    assert float(zscore.abs().max()) < 6.0, float(zscore.abs().max())
    assert float(mean_in.abs().max()) < 0.15  # in σC units; the defect gave 0.44 here, 0.61 at the CLI defaults
    sd_in = torch.sqrt((mf.T @ z**2) / n_in[:, None])
    sd_out = torch.sqrt(((1 - mf).T @ z**2) / (steps - n_in)[:, None])
    z_sd = torch.log(sd_in / sd_out) / torch.sqrt(1 / (2 * n_in) + 1 / (2 * (steps - n_in)))[:, None]
    assert float(z_sd.abs().max()) < 6.0, float(z_sd.abs().max())


def test_two_runs_whose_seeds_share_their_low_32_bits_train_different_models(monkeypatch, one_thread):
    """(b): the run's randomness is not fixed by 32 bits (it was: such runs were bit-identical)."""
    data = _small_digits(40)
    opts = dict(noise_multiplier=1.0, sampling_rate=0.25, epochs=2.0, hidden=(8,), latent_dim=2)
    a = train_vae(data, noise_seed=9, **opts).model.state_dict()
    b = train_vae(data, noise_seed=9 + 2**32, **opts).model.state_dict()
    c = train_vae(data, noise_seed=9, **opts).model.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)  # a test seed still reproduces its run
    assert not all(torch.equal(a[k], b[k]) for k in a)
    d = train_vae(data, **opts)
    assert d.privacy["for_publication"] and "os.urandom" in d.privacy["noise_source"]


# -- the structural rule: every generator of a private stage comes from mmgen.privacy.noise -----------------------
RNG_CALL = re.compile(r"manual_seed\(|Generator\(\)|default_rng\(|os\.urandom|secrets\.|SystemRandom|\.seed\(\)")
# Every other call in the package, with why it never draws on a private record. A new call fails the test below
# until it is either moved into mmgen/privacy/noise.py or added here with its reason.
PUBLIC_RANDOMNESS = {
    "audit.py": {"gen = torch.Generator().manual_seed(int(seed))": "the audit's synthetic corner records (public)"},
    "cli/fit.py": {"torch.manual_seed(cfg.seed)": "a generator's public initialisation, as fit() does"},
    "pipeline.py": {"torch.manual_seed(seed)": "a generator's public initialisation before fitting a release"},
    "train.py": {
        "gen = torch.Generator()": "latents of a fitted generator: post-processing of a release",
        "gen.manual_seed(seed) if seed is not None else gen.seed()": "sampling a fitted generator: post-processing",
        "torch.manual_seed(config.seed)": "a generator's public initialisation",
        "gen = torch.Generator().manual_seed(config.seed)": "fit's latents: post-processing of a release",
    },
    "select.py": {
        "gen = torch.Generator()": "latents of a fitted generator's pool for herding: post-processing of a release",
        "gen.manual_seed(seed) if seed is not None else gen.seed()": "the same, seeded",
    },
    "data/loaders.py": {"perm = np.random.default_rng(seed).permutation(n)":
                        "the fixed public train/test split of a benchmark data set that ships without one (digits)"},
    "data/schema.py": {"rng = np.random.default_rng(seed)": "positions inside bins when decoding synthetic codes"},
    "evolve/api.py": {
        "self.rng = torch.Generator()": "the generator API's latents and variations: public candidates",
        "self.rng.manual_seed(seed) if seed is not None else self.rng.seed()": "the same, seeded",
    },
    "evolve/loop.py": {"draw = torch.Generator().manual_seed(config.seed + 1)":
                       "selection among candidates by the noisy histogram: post-processing"},
    "vae/nets.py": {"gen = torch.Generator().manual_seed(seed)": "the projection's public power-iteration start"},
    "vae/train.py": {
        "gen = torch.Generator().manual_seed(self.config.seed + 7 if seed is None else seed)":
            "sampling a trained VAE: post-processing",
        "gen = torch.Generator().manual_seed(config.seed + 5)": "warm start on a release generator's samples",
        "torch.manual_seed(config.seed)": "the VAE's public initialisation",
    },
    "features/perceptual.py": {"torch.manual_seed(int(seed))": "a feature map's public weights"},
    "features/rff.py": {"gen = torch.Generator().manual_seed(int(cfg.seed))": "public random frequencies",
                        "gen = torch.Generator().manual_seed(20261206)":
                            "public integers probing the float32 product's exactness"},
    "features/tabular.py": {"gen = torch.Generator().manual_seed(c.seed)": "public random frequencies"},
    "features/ntk.py": {"torch.manual_seed(int(self.config.seed))": "the NTK network's public initialisation"},
    "features/hermite.py": {"gen = torch.Generator().manual_seed(int(cfg.seed))": "public coordinate subsets"},
}
SKIP = ("privacy/noise.py", "evaluate/")  # the one module itself; evaluation reads synthetic and public test data


def _rng_calls() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(SKIP):
            continue
        text = path.read_text()
        code_by_line: dict[int, str] = {}  # each line's code without strings and comments (docstrings mention calls)
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type not in (tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE):
                code_by_line[tok.start[0]] = code_by_line.get(tok.start[0], "") + tok.string
        lines = text.splitlines()
        for number, code in sorted(code_by_line.items()):
            if RNG_CALL.search(code):
                found.setdefault(rel, []).append(lines[number - 1].split("  #")[0].strip())
    return found


def test_every_generator_outside_the_private_randomness_module_is_known_to_be_public():
    unknown = [f"mmgen/{rel}: {code}" for rel, codes in _rng_calls().items() for code in codes
               if code not in PUBLIC_RANDOMNESS.get(rel, {})]  # fmt: skip
    assert not unknown, ("random draws outside mmgen/privacy/noise.py that are not known to be public; draw on "
                         "private records only through mmgen.privacy.noise:\n" + "\n".join(unknown))  # fmt: skip


def test_the_scan_sees_the_calls_it_must_see():
    calls = _rng_calls()
    stale = [f"{rel}: {code}" for rel, d in PUBLIC_RANDOMNESS.items() for code in d if code not in calls.get(rel, [])]
    assert not stale, f"listed as public but gone (remove them from the list): {stale}"
    assert "gen = torch.Generator().manual_seed(int(cfg.seed))" in calls["features/rff.py"]
    for rel, codes in calls.items():  # nothing in the private stages bypasses the module any more
        if rel.startswith(("vae/", "evolve/", "release")):
            assert not any("2**62" in c or "secrets." in c or "os.urandom" in c for c in codes), (rel, codes)
