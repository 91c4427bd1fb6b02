"""The budget record: every stage that read one private data set, composed with dp-accounting.

A release is one Gaussian mechanism (several statistics composed); Private
Evolution and DP-SGD add their own events. Run twice on the same data, the
guarantees compose: the record lists each stage's dp-accounting event and
reports the total ε at the record's δ. Stages made only of Gaussian
mechanisms compose exactly into one Gaussian with ``μ² = Σ_k μ_k²`` (Dong,
Roth & Su, "Gaussian differential privacy", JRSS-B 2022, Corollary 3.3),
converted to ε by :func:`~mmgen.privacy.epsilon_for`; any other event goes
through dp-accounting's :class:`~dp_accounting.pld.PLDAccountant` (its RDP accountant
where PLD does not support the event). No
accountant is written here.

The record is kept beside the owner's data and is never published: it names
output files and times. It is **advisory**: a plain file the owner can edit,
truncate or delete, and mmgen cannot stop that. What mmgen does is make such an
edit *detectable*. Each entry carries ``prev``, the hash of the entry before it
(null for the first), and ``hash``, the SHA-256 of its own canonical JSON (sorted
keys, no spaces) with ``prev`` in it, so the entries form a hash chain:
:meth:`BudgetRecord.load` refuses a record whose chain is broken (an entry edited
or removed in the middle). Dropping the last entries, or rewriting the whole chain,
leaves a valid chain; every output a stage writes therefore carries the record's
:meth:`~BudgetRecord.stamp` (its length, head hash and first hash), and
:meth:`~BudgetRecord.stamp_problem` says whether the record still holds that head.
It is a JSON file::

    {"format": "mmgen-budget-record", "version": 2, "data": "cohort.npz",
     "neighbouring": "add-remove", "delta": 1e-05, "total_epsilon": 3.0,
     "entries": [{"time": "2026-11-25T19:00:00+00:00", "stage": "release",
                  "output": "cohort.mmgen", "epsilon": 1.0, "delta": 1e-05,
                  "neighbouring": "add-remove", "noise_multipliers": [3.73],
                  "event": {"class": "GaussianDpEvent", "noise_multiplier": 3.73},
                  "prev": null, "hash": "9f2c..."}]}

A version-1 record (entries without hashes, written before the chain existed) is
read with a warning and chained when it is loaded (``chained_from`` counts the
entries chained that way: nothing proves they were not edited before).

Events are stored as their fields (``class`` names a class of
``dp_accounting.dp_event``; nested events are nested objects), never pickled.

Example:
    >>> from mmgen.privacy import BudgetRecord, dp_event, noise_multiplier_for
    >>> record = BudgetRecord(delta=1e-5)
    >>> sigma = noise_multiplier_for(1.0, 1e-5)
    >>> record.add(stage="release", event=dp_event([sigma]), epsilon=1.0, delta=1e-5, output="a.mmgen")
    >>> record.add(stage="release", event=dp_event([sigma]), epsilon=1.0, delta=1e-5, output="b.mmgen")
    >>> round(record.total_epsilon(), 3)  # two releases at ε = 1 compose to less than 2
    1.465
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import dp_accounting
from dp_accounting import dp_event as _events

from ..errors import FormatError, PrivacyError
from .calibration import check_epsilon_delta, composed_noise_multiplier, dp_event, epsilon_for, noise_multiplier_for

__all__ = [
    "BudgetRecord", "RECORD_SUFFIX", "entry_hash", "budget_warnings", "event_to_dict", "event_from_dict", "rounds_event",
    "noise_multiplier_within", "composed_epsilon",
]  # fmt: skip

RECORD_FORMAT = "mmgen-budget-record"
RECORD_VERSION = 2  # 2: entries hash-chained (``prev``, ``hash``); 1 is read and chained on load
RECORD_SUFFIX = ".mmgen-budget.json"
HIGH_EPSILON = 10.0
DELTA_RULE_ABOVE = 1e-5


def event_to_dict(event: dp_accounting.DpEvent) -> dict:
    """A dp-accounting event as JSON-ready fields: ``{"class": NAME, field: value, ...}``."""
    if not isinstance(event, dp_accounting.DpEvent):
        raise PrivacyError(f"`event` must be a dp_accounting.DpEvent. Got {type(event).__name__}.")

    def value(v):
        if isinstance(v, dp_accounting.DpEvent):
            return event_to_dict(v)
        if isinstance(v, (list, tuple)):
            return [value(x) for x in v]
        return v

    import attr  # dp-accounting's events are attrs classes

    return {"class": type(event).__name__, **{a.name: value(getattr(event, a.name)) for a in attr.fields(type(event))}}


def event_from_dict(d: dict) -> dp_accounting.DpEvent:
    """Inverse of :func:`event_to_dict`; only classes of ``dp_accounting.dp_event`` are built."""
    if not isinstance(d, dict) or not isinstance(d.get("class"), str):
        raise FormatError(f"A stored dp event must be an object with a `class`. Got {d!r}.")
    cls = getattr(_events, d["class"], None)
    if not (isinstance(cls, type) and issubclass(cls, dp_accounting.DpEvent)):
        raise FormatError(f"Unknown dp event class {d['class']!r} (not in dp_accounting.dp_event).")

    def value(v):
        if isinstance(v, dict) and "class" in v:
            return event_from_dict(v)
        if isinstance(v, list):
            return [value(x) for x in v]
        return v

    try:
        return cls(**{k: value(v) for k, v in d.items() if k != "class"})
    except TypeError as exc:
        raise FormatError(f"Cannot rebuild dp event {d!r}: {exc}") from None


def entry_hash(entry: dict) -> str:
    """SHA-256 (hex) of an entry's canonical JSON (sorted keys, no spaces, UTF-8), without its own ``hash``."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def _gaussian_multipliers(event: dp_accounting.DpEvent) -> list[float] | None:
    """The noise multipliers of an event made only of Gaussian mechanisms, else None."""
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return [float(event.noise_multiplier)]
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        inner = _gaussian_multipliers(event.event)
        return None if inner is None else inner * int(event.count)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        out: list[float] = []
        for e in event.events:
            inner = _gaussian_multipliers(e)
            if inner is None:
                return None
            out += inner
        return out
    return None


def _accountant_event(event: dp_accounting.DpEvent, neighbouring: str) -> dp_accounting.DpEvent:
    """``event`` in dp-accounting's convention for its accountants.

    mmgen's plain Gaussian events carry σ relative to the sensitivity *under the relation in use* (a
    replace-one release noises 2·max_norm, and its σ is relative to that). dp-accounting's accountants
    read a ``GaussianDpEvent`` under replace-one as sensitivity 2 in units of σ, so such an event becomes
    ``GaussianDpEvent(2σ)``. Sampled events (DP-SGD, :func:`dp_sgd_event`) already follow dp-accounting's
    convention (σ relative to the clip norm) and are left as they are.
    """
    if neighbouring != "replace-one":
        return event
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return dp_accounting.GaussianDpEvent(2.0 * float(event.noise_multiplier))
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return dp_accounting.SelfComposedDpEvent(_accountant_event(event.event, neighbouring), event.count)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return dp_accounting.ComposedDpEvent([_accountant_event(e, neighbouring) for e in event.events])
    return event


def _compose_epsilon(events: list, delta: float, neighbouring: str) -> float:
    """ε at ``delta`` of the composition of ``events``: exact for Gaussians, else dp-accounting's PLD."""
    if not events:
        return 0.0
    sigmas = _gaussian_multipliers(dp_accounting.ComposedDpEvent(list(events)))
    if sigmas is not None:
        if any(s <= 0 for s in sigmas):
            return math.inf
        return epsilon_for(composed_noise_multiplier(sigmas), delta)
    from dp_accounting.pld import PLDAccountant

    relation = dp_accounting.NeighboringRelation
    rel = relation.REPLACE_ONE if neighbouring == "replace-one" else relation.ADD_OR_REMOVE_ONE
    accountant = PLDAccountant(neighboring_relation=rel)
    event = _accountant_event(dp_accounting.ComposedDpEvent(list(events)), neighbouring)
    if accountant.supports(event):
        return float(accountant.compose(event).get_epsilon(delta))
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant(neighboring_relation=rel)
    if not accountant.supports(event):
        raise PrivacyError(f"dp-accounting's PLD and RDP accountants cannot compose {event!r} under {neighbouring}.")
    return float(accountant.compose(event).get_epsilon(delta))


def composed_epsilon(events: list, delta: float, neighbouring: str = "add-remove") -> float:
    """ε at ``delta`` of the composition of dp-accounting ``events`` (exact for Gaussians, else PLD or RDP)."""
    return _compose_epsilon(list(events), float(delta), neighbouring)


def rounds_event(noise_multiplier: float, rounds: int) -> dp_accounting.DpEvent:
    """``rounds`` Gaussian mechanisms of one noise multiplier each (e.g. Private Evolution's histograms)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise PrivacyError(f"`rounds` must be an integer ≥ 1. Got {rounds!r}.")
    return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(float(noise_multiplier)), rounds)


def dp_sgd_event(noise_multiplier: float, sampling_rate: float, steps: int) -> dp_accounting.DpEvent:
    """``steps`` Poisson-subsampled Gaussian mechanisms: DP-SGD with sampling rate q and noise multiplier σ.

    Each step sums the clipped per-record gradients of a Poisson sample (every record in with
    probability q, independently) and adds N(0, (σC)²) per coordinate, C the clipping norm
    (Abadi et al., CCS 2016, Algorithm 1).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PrivacyError(f"`steps` must be an integer ≥ 1. Got {steps!r}.")
    if not (isinstance(sampling_rate, (int, float)) and 0 < sampling_rate <= 1):
        raise PrivacyError(f"`sampling_rate` must be a number in (0, 1]. Got {sampling_rate!r}.")
    step = dp_accounting.PoissonSampledDpEvent(float(sampling_rate), dp_accounting.GaussianDpEvent(float(noise_multiplier)))
    return dp_accounting.SelfComposedDpEvent(step, steps)


def noise_multiplier_within(total_epsilon: float, delta: float, rounds: int, spent: list = (),
                            neighbouring: str = "add-remove", *,
                            sampling_rate: float | None = None) -> float:  # fmt: skip
    """The smallest noise multiplier σ such that ``rounds`` Gaussians of multiplier σ, composed with ``spent``,
    stay within ``total_epsilon`` at ``delta``.

    Gaussian events compose exactly: with ``μ² = 1/σ_total²`` the total's budget and
    ``Σ_k 1/σ_k²`` the spent events', ``σ = sqrt(rounds / (μ² − Σ_k 1/σ_k²))``. Other
    spent events (DP-SGD) are handled by bisection on dp-accounting's composed ε.
    The result is nudged up until the composed ε is at most the total.

    Args:
        total_epsilon, delta: the budget of the data set.
        rounds: how many mechanisms the new stage runs (PE's T, DP-SGD's steps).
        spent: dp-accounting events already spent on the same data.
        neighbouring: the relation all of them share.
        sampling_rate: None for plain Gaussians; q for Poisson-subsampled ones (DP-SGD,
            :func:`dp_sgd_event`), always found by bisection on dp-accounting's PLD.

    Raises:
        PrivacyError: nothing is left of the budget.

    Example:
        >>> from mmgen.privacy import noise_multiplier_for
        >>> release = dp_accounting.GaussianDpEvent(noise_multiplier_for(1.0, 1e-5) * 2 ** 0.5)  # half of μ²
        >>> round(noise_multiplier_within(1.0, 1e-5, 10, [release]), 3)  # 10 rounds share the other half
        16.684
    """
    check_epsilon_delta(total_epsilon, delta)
    if sampling_rate is None:
        event = lambda s: rounds_event(s, rounds)  # noqa: E731
    else:
        dp_sgd_event(1.0, sampling_rate, rounds)  # checks q and the steps
        event = lambda s: dp_sgd_event(s, sampling_rate, rounds)  # noqa: E731
    spent = list(spent)
    before = _compose_epsilon(spent, delta, neighbouring)
    if before >= total_epsilon * (1 - 1e-9):
        raise PrivacyError(f"Nothing is left of the budget: earlier stages already spent epsilon {before:.4g} of "
                           f"{total_epsilon:g} at delta={delta:g}.")  # fmt: skip
    sigmas = _gaussian_multipliers(dp_accounting.ComposedDpEvent(spent)) if spent else []
    if sigmas is not None and sampling_rate is None:
        left = noise_multiplier_for(total_epsilon, delta) ** -2 - sum(s**-2 for s in sigmas)
        if not left > 0:  # the spent stages sit on the total, up to the rounding of their own calibration
            raise PrivacyError(f"Nothing is left of the budget: earlier stages already spent epsilon {before:.6g} of "
                               f"{total_epsilon:g} at delta={delta:g}.")  # fmt: skip
        sigma = math.sqrt(rounds / left)
    else:  # bisection on log σ: the composed ε falls as σ grows
        over = lambda s: _compose_epsilon(spent + [event(s)], delta, neighbouring) > total_epsilon  # noqa: E731
        lo, hi = 0.5, 2.0  # bracket first: each PLD composition of many steps takes a fraction of a second
        while not over(lo) and lo > 1e-3:
            lo, hi = lo / 4, lo
        while over(hi) and hi < 1e6:
            lo, hi = hi, hi * 4
        if over(hi):
            raise PrivacyError(f"Nothing is left of the budget: earlier (or reserved) stages spend epsilon {before:.6g} "
                               f"of {total_epsilon:g} at delta={delta:g}, too close to the total for this stage.")  # fmt: skip
        while hi / lo > 1 + 1e-4:
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if over(mid) else (lo, mid)
        sigma = hi
    while _compose_epsilon(spent + [event(sigma)], delta, neighbouring) > total_epsilon:
        sigma *= 1 + 1e-9
    return float(sigma)


def release_stage(info: dict) -> dict:
    """The stage a release stands for in a later output's guarantee, from a checkpoint's ``release_info``."""
    p = info["privacy"]
    return {"stage": "release", "epsilon": p["epsilon"], "delta": p["delta"], "neighbouring": p["neighbouring"],
            "noise_multipliers": list(p["noise_multipliers"]), "content_hash": info.get("content_hash"),
            "for_publication": p.get("for_publication", True)}  # fmt: skip


def release_in_record(record: "BudgetRecord | None", info: dict) -> bool:
    """Whether ``record`` already holds the release of ``info`` (a checkpoint's ``release_info``), by content hash."""
    h = info.get("content_hash")
    return record is not None and any((e.get("details") or {}).get("content_hash") == h for e in record.entries)


def add_release(record: "BudgetRecord", info: dict, added_by: str) -> None:
    """Adds the release of ``info`` to ``record`` (a later stage found it missing there)."""
    p = info["privacy"]
    record.add(stage="release", event=dp_event(p["noise_multipliers"]), epsilon=p["epsilon"], delta=p["delta"],
               neighbouring=p["neighbouring"],
               details={"content_hash": info.get("content_hash"), "added_by": f"{added_by} (the release was not in the record)"})  # fmt: skip


def budget_warnings(epsilon: float, delta: float) -> list[str]:
    """One-line warnings about a requested (ε, δ): ε above 10, and the δ rule above 1e-5.

    mmgen never reads the number of records N to check δ against it (N is private).
    """
    out = []
    if epsilon > HIGH_EPSILON:
        out.append(f"epsilon={epsilon:g} is above {HIGH_EPSILON:g}: the guarantee is weak "
                   f"(a record's presence may change an outcome's odds by up to e^{epsilon:g}).")  # fmt: skip
    if delta > DELTA_RULE_ABOVE:
        out.append(f"delta={delta:g}: δ should be much smaller than 1/N "
                   "(N = number of records; mmgen does not read N to check this).")  # fmt: skip
    return out


class BudgetRecord:
    """The privacy spent on one private data set: one entry per stage that read it.

    Args:
        path: the JSON file the record is saved to (None: in memory only).
        data: a label of the data set for the owner (kept private with the record).
        delta: the δ at which the total ε is reported (default: the first entry's δ).
        neighbouring: the relation every entry must share (default: the first entry's).
        total_epsilon: a declared total; :meth:`check` refuses a stage that would exceed it.

    Attributes:
        entries: a list of dicts (time, stage, output, epsilon, delta, neighbouring,
            noise_multipliers, event, prev, hash), oldest first, hash-chained (see the module's notes).
        chained_from: how many of the first entries were written by a version-1 mmgen (no hashes) and
            chained when read; 0 for a record chained from its first entry.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, data: str | None = None,
                 delta: float | None = None, neighbouring: str | None = None,
                 total_epsilon: float | None = None) -> None:  # fmt: skip
        self.path = None if path is None else Path(path)
        self.data = data
        self.delta = delta
        self.neighbouring = neighbouring
        self.total_epsilon_declared = None
        if total_epsilon is not None:
            self.declare_total(total_epsilon)
        self.entries: list[dict] = []
        self.chained_from = 0

    # ---- file ----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "BudgetRecord":
        """Reads a record file and verifies its hash chain.

        A version-1 record (no hashes) is read with a :class:`UserWarning` and chained in memory (written
        chained at the next :meth:`save`).

        Raises:
            FormatError: the file is not a budget record, or its chain is broken: an entry was edited,
                removed, inserted or reordered after it was written.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except ValueError as exc:
            raise FormatError(f"{path} is not a budget record (invalid JSON: {exc}).") from None
        if not isinstance(d, dict) or d.get("format") != RECORD_FORMAT:
            raise FormatError(f"{path} is not a budget record (no \"format\": \"{RECORD_FORMAT}\").")
        if d.get("version") not in (1, RECORD_VERSION):
            raise FormatError(f"{path}: budget record version {d.get('version')!r}; this mmgen reads 1 and {RECORD_VERSION}.")
        rec = cls(path, data=d.get("data"), delta=d.get("delta"), neighbouring=d.get("neighbouring"),
                  total_epsilon=d.get("total_epsilon"))  # fmt: skip
        entries = d.get("entries", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise FormatError(f"{path}: a budget record's `entries` must be a list of objects.")
        rec.entries = [dict(e) for e in entries]
        for e in rec.entries:
            event_from_dict(e.get("event"))  # every stored event must rebuild
        if d["version"] == 1:
            rec.chained_from = len(rec.entries)
            rec._chain_legacy()
            if rec.entries:
                warnings.warn(f"{path} is a version-1 budget record: its {len(rec.entries)} entries carry no hashes, so "
                              "nothing shows whether they were edited. They are hash-chained from now on (at the next save).",
                              UserWarning, stacklevel=2)  # fmt: skip
        else:
            chained_from = d.get("chained_from", 0)
            if isinstance(chained_from, bool) or not isinstance(chained_from, int) or not 0 <= chained_from <= len(rec.entries):
                raise FormatError(f"{path}: `chained_from` must be an integer in 0..{len(rec.entries)}. Got {chained_from!r}.")
            rec.chained_from = chained_from
            rec._verify_chain()
        return rec

    def _chain_legacy(self) -> None:
        """Hash-chains entries read from a version-1 record (which have no ``prev``/``hash``)."""
        prev = None
        for e in self.entries:
            e.pop("hash", None)
            e["prev"] = prev
            e["hash"] = prev = entry_hash(e)

    def _verify_chain(self) -> None:
        """Raises FormatError at the first entry whose ``prev`` or ``hash`` does not hold."""
        prev, n = None, len(self.entries)
        advice = ("The budget record is advisory: it was changed by hand and no longer shows what was spent on this "
                  "data set. Restore it from a backup, or start a new record that declares every stage you know ran.")  # fmt: skip
        for i, e in enumerate(self.entries, 1):
            what = f"entry {i} of {n} ({e.get('stage')!r}, {e.get('time')})"
            if "hash" not in e or "prev" not in e:
                raise FormatError(f"{self.path}: {what} has no `prev`/`hash`: the hash chain is broken. {advice}")
            if e["prev"] != prev:
                raise FormatError(f"{self.path}: {what} does not follow the entry before it (its `prev` is not that "
                                  f"entry's hash): entries were removed, inserted or reordered. {advice}")  # fmt: skip
            if e["hash"] != entry_hash(e):
                raise FormatError(f"{self.path}: {what} does not match its own hash: it was edited after it was "
                                  f"written. {advice}")  # fmt: skip
            prev = e["hash"]

    @classmethod
    def open(cls, path: str | os.PathLike, **kwargs) -> "BudgetRecord":
        """The record at ``path`` if the file exists, else a new empty one that will be saved there."""
        return cls.load(path) if Path(path).is_file() else cls(path, **kwargs)

    def to_dict(self) -> dict:
        return {"format": RECORD_FORMAT, "version": RECORD_VERSION, "data": self.data,
                "neighbouring": self.neighbouring, "delta": self.delta,
                "total_epsilon": self.total_epsilon_declared,
                **({"chained_from": self.chained_from} if self.chained_from else {}), "entries": self.entries}  # fmt: skip

    # ---- the hash chain ------------------------------------------------------------------------------
    def head(self) -> str | None:
        """The hash of the last entry (None for an empty record)."""
        return self.entries[-1]["hash"] if self.entries else None

    def stamp(self) -> dict:
        """What an output writes of the record: ``{"entries": n, "head": hash of entry n, "first": hash of entry 1}``.

        Written after the stage's own entry, so a record later truncated or rewritten no longer holds it
        (:meth:`stamp_problem`). The hashes name no file, time or count of records.
        """
        return {"entries": len(self.entries), "head": self.head(),
                "first": self.entries[0]["hash"] if self.entries else None}  # fmt: skip

    def same_chain(self, stamp: dict) -> bool:
        """Whether ``stamp`` (an output's :meth:`stamp`) was taken of a record that starts as this one does."""
        return bool(self.entries) and isinstance(stamp, dict) and stamp.get("first") == self.entries[0]["hash"]

    def stamp_problem(self, stamp: dict) -> str | None:
        """None when this record still holds ``stamp``'s head at its position, else a sentence saying what changed.

        Args:
            stamp: an output's ``budget_record`` field (:meth:`stamp`).

        Raises:
            FormatError: ``stamp`` is not a stamp.
        """
        n, head = (stamp.get("entries"), stamp.get("head")) if isinstance(stamp, dict) else (None, None)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0 or (n > 0 and not isinstance(head, str)):
            raise FormatError(f"A budget-record stamp must be {{\"entries\": n, \"head\": HASH, ...}}. Got {stamp!r}.")
        if n == 0:
            return None
        if len(self.entries) < n:
            return (f"the record holds {len(self.entries)} entries, but the output was written when it held {n} "
                    f"(head {head[:12]}...): entries were removed (truncated) or the record was replaced")  # fmt: skip
        if self.entries[n - 1]["hash"] != head:
            return (f"its entry {n} is not the head the output was written after ({head[:12]}... there, "
                    f"{self.entries[n - 1]['hash'][:12]}... here): the record was rewritten or replaced")  # fmt: skip
        return None

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Writes the record (atomically: a temporary file, then a rename)."""
        path = Path(path) if path is not None else self.path
        if path is None:
            raise PrivacyError("This budget record has no file: pass `path`.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
        self.path = path
        return path

    # ---- accounting ----------------------------------------------------------------------------------
    def declare_total(self, total_epsilon: float) -> None:
        """Declares the total ε this data set may spend (at the record's δ)."""
        if isinstance(total_epsilon, bool) or not (isinstance(total_epsilon, (int, float)) and total_epsilon > 0
                                                   and math.isfinite(total_epsilon)):  # fmt: skip
            raise PrivacyError(f"`total_epsilon` must be a finite number > 0. Got {total_epsilon!r}.")
        self.total_epsilon_declared = float(total_epsilon)

    def events(self) -> list[dp_accounting.DpEvent]:
        """The dp-accounting event of every entry, oldest first."""
        return [event_from_dict(e["event"]) for e in self.entries]

    def _delta(self, delta: float | None) -> float:
        delta = self.delta if delta is None else delta
        if delta is None:
            raise PrivacyError("The budget record has no δ yet: pass `delta`.")
        check_epsilon_delta(1.0, delta)
        return float(delta)

    def _relation(self, neighbouring: str | None) -> str:
        if neighbouring is not None and self.neighbouring is not None and neighbouring != self.neighbouring:
            raise PrivacyError(
                f"This budget record composes {self.neighbouring} guarantees; a {neighbouring} stage cannot be "
                "added to it (the two relations do not compose into one guarantee). Use another record."
            )
        return neighbouring or self.neighbouring or "add-remove"

    def total_epsilon(self, delta: float | None = None) -> float:
        """The composed ε of every entry at ``delta`` (default: the record's δ); 0 when empty."""
        return _compose_epsilon(self.events(), self._delta(delta), self._relation(None))

    def check(self, new_event: dp_accounting.DpEvent, total_epsilon: float | None = None, *,
              delta: float | None = None, neighbouring: str | None = None) -> float:  # fmt: skip
        """The composed ε with ``new_event`` added; raises if that exceeds the total.

        Args:
            new_event: the event of the stage about to run (before it reads the data).
            total_epsilon: the budget (default: the declared one; None and none declared: no limit).
            delta: δ of the total (default: the record's).
            neighbouring: the stage's relation; must match the record's.

        Returns:
            The total ε after the stage.

        Raises:
            PrivacyError: the stage would exceed ``total_epsilon``, or its relation differs.
        """
        relation = self._relation(neighbouring)
        delta = self._delta(delta)
        after = _compose_epsilon(self.events() + [new_event], delta, relation)
        limit = self.total_epsilon_declared if total_epsilon is None else float(total_epsilon)
        if limit is not None and after > limit * (1 + 1e-9):
            before = _compose_epsilon(self.events(), delta, relation)
            where = f" ({self.path})" if self.path else ""
            raise PrivacyError(
                f"Refused: this stage would bring the total epsilon of the data set to {after:.4g} at delta={delta:g}, "
                f"above the declared total {limit:g}; {len(self.entries)} earlier stage(s) in the budget record{where} "
                f"spent {before:.4g}. Declare a larger total only if the data's owner agrees."
            )
        return after

    def add(self, *, stage: str, event: dp_accounting.DpEvent, epsilon: float, delta: float,
            output: str | os.PathLike | None = None, neighbouring: str | None = None,
            noise_multipliers: list[float] | None = None, time: str | None = None,
            details: dict | None = None) -> None:  # fmt: skip
        """Appends one stage (in memory; call :meth:`save` to write the file).

        Args:
            stage: what ran, e.g. ``"release"``, ``"private-evolution"``, ``"dp-sgd"``.
            event: its dp-accounting event.
            epsilon, delta: the guarantee the stage states on its own.
            output: the file it wrote (its name is kept, for the owner).
            neighbouring: its relation (default add-remove); every entry shares one.
            noise_multipliers: per-statistic multipliers (default: the event's Gaussians, if any).
            time: ISO time (default now, UTC).
            details: JSON-ready facts about the stage, kept in the entry (e.g. a release's
                ``content_hash``, PE's rounds and threshold).
        """
        check_epsilon_delta(epsilon, delta)
        relation = self._relation(neighbouring)
        stored = event_to_dict(event)
        if noise_multipliers is None:
            noise_multipliers = _gaussian_multipliers(event)
        self.entries.append({
            "time": time or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "stage": str(stage), "output": None if output is None else str(output),
            "epsilon": float(epsilon), "delta": float(delta), "neighbouring": relation,
            "noise_multipliers": None if noise_multipliers is None else [float(s) for s in noise_multipliers],
            "event": stored, **({"details": dict(details)} if details else {}),
        })  # fmt: skip
        entry = self.entries[-1]
        entry["prev"] = self.entries[-2]["hash"] if len(self.entries) > 1 else None
        entry["hash"] = entry_hash(entry)
        self.neighbouring = relation
        if self.delta is None:
            self.delta = float(delta)

    def __len__(self) -> int:
        return len(self.entries)

    def __str__(self) -> str:
        lines = [f"budget record {self.path or '(not saved)'}: data {self.data or '(unnamed)'}, "
                 f"{len(self.entries)} stage(s), neighbouring {self.neighbouring or '-'}"]  # fmt: skip
        for e in self.entries:
            sig = ", ".join(f"{s:.4g}" for s in e["noise_multipliers"] or [])
            lines.append(f"  {e['time']}  {e['stage']:<10s} epsilon={e['epsilon']:g} delta={e['delta']:g}  "
                         f"-> {e['output']}" + (f"  (noise multipliers {sig})" if sig else ""))  # fmt: skip
        if self.entries and self.delta is not None:
            lines.append(f"total        epsilon={self.total_epsilon():.4g} at delta={self.delta:g} (composed with dp-accounting)")
        if self.total_epsilon_declared is not None:
            lines.append(f"declared     total epsilon {self.total_epsilon_declared:g}")
        if self.entries:
            legacy = (f"; the first {self.chained_from} written without hashes and chained later"
                      if self.chained_from else "")  # fmt: skip
            lines.append(f"chain        {len(self.entries)} entries hash-chained, head {self.head()[:16]}...{legacy} "
                         "(advisory: detects edits, cannot prevent them)")  # fmt: skip
        return "\n".join(lines)
