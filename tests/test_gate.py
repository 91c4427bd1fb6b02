"""The one gate to private records (mmgen.data.private.PrivateData): every stage reads through it, the budget
record is checked before the first record is read, a refused stage reads nothing, and the public facts hold
only the declarations.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import mmgen
import mmgen.evolve
import mmgen.vae
from mmgen.data.private import PrivateData
from mmgen.errors import DataError, PrivacyError
from mmgen.privacy import BudgetRecord, dp_event

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")
DELTA = 1e-5


class Read(Exception):
    """Raised by the patched gate: the stage asked the gate for records."""


@pytest.fixture
def small(digits):
    return dataclasses.replace(digits, x_train=digits.x_train[:200].clone(), y_train=digits.y_train[:200].clone())


@pytest.fixture
def closed_gate(monkeypatch):
    """A gate that refuses to hand out records: any stage that reads through it raises ``Read``."""
    calls = []

    def batches(self):
        calls.append(self.facts)
        raise Read

    monkeypatch.setattr(PrivateData, "batches", batches)
    return calls


def _trained(small):
    rel = mmgen.release(small, features=mmgen.features.create("rff", n_features=200), epsilon=5.0, delta=DELTA,
                        noise_seed=0)  # fmt: skip
    return mmgen.fit("conv", rel, mmgen.TrainConfig(epochs=1, steps_per_epoch=2, batch_size=32, seed=0), progress=False)


def test_every_stage_reads_its_records_through_the_gate(small, closed_gate):
    with pytest.raises(Read):
        mmgen.release(small, features="rff", epsilon=1.0, delta=DELTA)
    with pytest.raises(Read):
        mmgen.release(small.x_train, small.y_train, features="rff", epsilon=1.0, delta=DELTA, n_classes=10,
                      bounds=(small.low, small.high))  # fmt: skip
    with pytest.raises(Read):
        mmgen.vae.train_vae(small, noise_multiplier=1.0, epochs=1.0, hidden=(8,), latent_dim=2)
    assert len(closed_gate) == 3
    assert all(f["n_classes"] == 10 and f["input_shape"] == [1, 8, 8] for f in closed_gate)


def test_evolve_and_the_per_record_stage_read_through_the_gate(small, monkeypatch):
    trained = _trained(small)
    vae = mmgen.vae.train_vae(small, noise_multiplier=1.0, epochs=1.0, sampling_rate=0.5, hidden=(8,), latent_dim=2,
                              neighbouring="replace-one", noise_seed=0)  # fmt: skip
    calls = []

    def batches(self):
        calls.append(True)
        raise Read

    monkeypatch.setattr(PrivateData, "batches", batches)
    with pytest.raises(Read):
        mmgen.evolve.evolve(trained, small, noise_multiplier=5.0, rounds=1, population=50, samples=20)
    with pytest.raises(Read):
        mmgen.vae.per_record_samples(vae, small, epsilon=10.0)
    assert len(calls) == 2


def test_a_budget_record_must_be_checked_before_the_first_record_is_read(small, tmp_path):
    record = BudgetRecord.open(tmp_path / "r.json", data="digits")
    gate = PrivateData(small, record=record)
    with pytest.raises(PrivacyError, match="before the first record"):
        next(gate.batches())
    with pytest.raises(PrivacyError, match="before the first record"):
        gate.record_stage(stage="release", event=dp_event([3.0]), epsilon=1.0, delta=DELTA,
                          neighbouring="add-remove", noise_multipliers=[3.0])  # fmt: skip
    assert gate.admit(dp_event([3.0]), delta=DELTA, neighbouring="add-remove") > 0
    x, y = gate.tensors()
    assert torch.equal(x, small.x_train) and torch.equal(y, small.y_train)
    gate.record_stage(stage="release", event=dp_event([3.0]), epsilon=1.0, delta=DELTA, neighbouring="add-remove",
                      noise_multipliers=[3.0])  # fmt: skip
    assert len(BudgetRecord.load(tmp_path / "r.json")) == 1  # saved


def test_a_refused_release_reads_no_record_and_spends_nothing(small, tmp_path, monkeypatch):
    record = BudgetRecord.open(tmp_path / "r.json", data="digits")
    record.declare_total(0.5)
    reads = []
    real = PrivateData.batches

    def counting(self):
        reads.append(True)
        return real(self)

    monkeypatch.setattr(PrivateData, "batches", counting)
    with pytest.raises(PrivacyError, match="declared total"):
        mmgen.release(small, features="rff", epsilon=1.0, delta=DELTA, record=record)
    assert not reads and len(record) == 0
    rel = mmgen.release(small, features="rff", epsilon=0.4, delta=DELTA, record=record, output="r.mmgen")
    assert reads and len(record) == 1 and record.entries[0]["output"] == "r.mmgen"
    assert record.entries[0]["details"]["content_hash"] == rel.content_hash()


def test_facts_are_the_declarations_and_nothing_read_off_the_records(small):
    x = small.x_train * 0.5  # the records use half the declared domain: nothing of that may show
    gate = PrivateData(x, small.y_train, n_classes=12, bounds=(0.0, 1.0), name="mine")
    assert gate.facts == {"name": "mine", "input_shape": [1, 8, 8], "n_classes": 12, "low": 0.0, "high": 1.0,
                          "clip": False}  # fmt: skip
    assert PrivateData(np.asarray(x), np.asarray(small.y_train), n_classes=12).facts["n_classes"] == 12
    with pytest.raises(DataError, match="n_classes"):
        PrivateData(x, small.y_train)  # the classes are declared, never counted
    with pytest.raises(DataError, match="outside the declared domain"):
        list(PrivateData(x + 0.75, small.y_train, n_classes=10).batches())
    with pytest.raises(DataError, match="read already"):
        gate = PrivateData(iter([(x, small.y_train)]), n_classes=10, input_shape=(1, 8, 8))
        list(gate.batches())
        list(gate.batches())
