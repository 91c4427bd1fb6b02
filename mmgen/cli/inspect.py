"""``mmgen inspect``: what a release, checkpoint, VAE or samples file holds, and the formatter of each kind."""

from __future__ import annotations

import json
from pathlib import Path


def add_inspect(sub):
    p = sub.add_parser("inspect", help="print a release's, a checkpoint's, a VAE's or samples' metadata", description="Prints the public metadata of a release, a generator checkpoint (`mmgen fit`) or a VAE (`mmgen vae`), or the privacy record of samples (`mmgen sample`, `mmgen evolve`, `mmgen vae --per-record-out`), with its for-publication mark; and whether the budget record still holds the head an output was written after.")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    p.add_argument("--budget-record", default=None, metavar="PATH", help=(
        "check that this budget record (a .json, or the data spec npz:FILE / idx:FOLDER it belongs to) still holds the "
        "head the output was written after. Default: any record in the output's folder that starts the same chain"))  # fmt: skip


def format_release(rel) -> str:
    p, d = rel.metadata["privacy"], rel.metadata["data"]
    lines = [
        f"release      mmgen format {rel.metadata['format_version']}, library {rel.metadata['library_version']}",
        f"privacy      epsilon={p['epsilon']:g}, delta={p['delta']:g}, neighbouring={p['neighbouring']}, "
        f"mechanism={p['mechanism']}",
        f"noise        multipliers {', '.join(f'{s:.4g}' for s in p['noise_multipliers'])} "
        f"(composed {p['composed_noise_multiplier']:.4g}); budget split {', '.join(f'{w:.3g}' for w in p['budget_split'])}",
        f"publishable  {'yes' if p['for_publication'] else 'NO (seeded test noise)'}; noise source {p['noise_source']}",
        f"data         {d.get('name')}: input shape {tuple(d['input_shape'])}, {d['n_classes']} classes, "
        f"domain [{d['low']:g}, {d['high']:g}]{', clipped' if d.get('clip') else ''}",
    ]
    if d.get("table"):
        t = d["table"]
        cols = ", ".join(c["name"] + ("*" if c["name"] == t.get("label") else "") for c in t["columns"])
        lines.append(f"table        {len(t['columns'])} columns ({cols}; * label){', numbers clipped' if t.get('clip') else ''}")
    for s in rel.statistics:
        f = s.feature_spec
        cfg = ", ".join(f"{k}={v}" for k, v in f["config"].items())
        lines.append(
            f"statistic    {s.name}: sums {tuple(s.sums.shape)}{' + counts' if s.counts is not None else ''}, "
            f"noise std {s.noise_std:.4g} (multiplier {s.noise_multiplier:.4g} x sensitivity {s.sensitivity:.4g}); "
            f"features {f['name']}({cfg}), D={f['output_dim']}"
        )
    lines.append(f"content hash {rel.metadata.get('content_hash', '(not saved yet)')}")
    return "\n".join(lines)


def cmd_inspect(args) -> None:
    from ..files import expect
    from ..release import Release

    from ..files import sniff

    kind = sniff(args.file)
    if kind == "samples":
        _inspect_samples(args)
    elif kind == "vae":
        from ..vae import TrainedVAE

        vae = TrainedVAE.load(args.file)
        print(json.dumps(vae.metadata(), indent=2, sort_keys=True) if args.json else format_vae(vae.metadata()))
    elif kind == "checkpoint":
        from ..release import read_safetensors_checked
        from ..train import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

        _, meta = read_safetensors_checked(args.file, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)  # verifies its hash
        print(json.dumps(meta, indent=2, sort_keys=True) if args.json else format_checkpoint(meta))
    else:
        expect(args.file, "release", "`mmgen inspect`")
        rel = Release.load(args.file)
        print(json.dumps(rel.metadata, indent=2, sort_keys=True) if args.json else format_release(rel))
    if not args.json or args.budget_record:
        for line in record_lines(args.file, args.budget_record):
            print(line)


def _publishable(for_publication: bool, noise_source) -> str:
    return f"publishable  {'yes' if for_publication else 'NO (seeded test noise)'}; noise source {noise_source}"


def format_checkpoint(meta: dict) -> str:
    """A generator checkpoint (``mmgen fit``): the release it was fitted to, its mark, and the training run."""
    info, g, t = meta["release"], meta["generator"], meta["train"]
    p, d = info["privacy"], info["data"]
    done = meta.get("epochs_done", len(meta.get("losses", [])))
    return "\n".join([
        f"checkpoint   mmgen generator, format {meta['format_version']}; {g.get('kind')} generator, {done} of "
        f"{t['epochs']} epochs" + ("" if done >= t["epochs"] else " (UNFINISHED)"),
        f"privacy      the release's: epsilon={p['epsilon']:g}, delta={p['delta']:g}, neighbouring={p['neighbouring']} "
        "(fitting is post-processing)",
        _publishable(meta.get("for_publication", p.get("for_publication", True)), meta.get("noise_source", p.get("noise_source"))),
        f"release      content hash {info.get('content_hash')}",
        f"data         {d.get('name')}: input shape {tuple(d['input_shape'])}, {d['n_classes']} classes",
        f"settings     {t['epochs']} x {t['steps_per_epoch']} steps of {t['batch_size']}, lr {t['lr']:g}, seed {t['seed']}",
    ])  # fmt: skip


def record_lines(file: str, chosen: str | None) -> list[str]:
    """Whether the data set's budget record still holds the head an output was written after.

    Args:
        file: the output (release, VAE, evolved or per-record samples).
        chosen: the record to check (a .json, or the data spec it belongs to); None: the records in the
            output's folder whose chain starts as the output's stamp says.
    """
    from ..errors import FormatError, MMGenError
    from ..files import budget_stamp
    from ..privacy.ledger import RECORD_SUFFIX, BudgetRecord
    from .common import budget_record_path

    stamp = budget_stamp(file)
    if stamp is None:
        return [] if chosen is None else [f"budget       {file} carries no budget-record stamp (written without a "
                                          "record, or by an mmgen before the stamp)"]  # fmt: skip
    head = stamp.get("head") or ""
    lines = [f"budget       written after entry {stamp.get('entries')} of its data set's budget record (head {head[:16]}...)"]
    if chosen is not None:
        path = Path(chosen) if chosen.endswith(".json") else budget_record_path(chosen, None)
        if path is None or not path.is_file():
            raise MMGenError(f"No budget record at {path or chosen}.")
        paths = [path]
    else:
        folder = Path(file).parent
        paths = sorted(p for p in [*folder.glob("*" + RECORD_SUFFIX), folder / "mmgen-budget.json"] if p.is_file())
    checked = 0
    for path in paths:
        try:
            record = BudgetRecord.load(path)
        except FormatError as exc:
            lines.append(f"record       {path}: BROKEN: {exc}")
            checked += 1
            continue
        if chosen is None and not record.same_chain(stamp):
            continue  # another data set's record
        checked += 1
        problem = record.stamp_problem(stamp)
        lines.append(f"record       {path} holds it (entry {stamp.get('entries')} of {len(record)})" if problem is None
                     else f"record       {path} does NOT hold it: {problem}")  # fmt: skip
    if not checked:
        lines.append("record       not checked: no budget record of this chain beside it (pass --budget-record PATH)")
    return lines


def format_evolved(meta: dict) -> str:
    p, c = meta["privacy"], meta["evolve"]
    lines = [
        f"samples      mmgen evolved samples, format {meta['format_version']}, library {meta['library_version']}",
        f"privacy      epsilon={p['epsilon']:.4g}, delta={p['delta']:g}, neighbouring={p['neighbouring']} "
        f"({p['composition']})",
        f"publishable  {'yes' if p['for_publication'] else 'NO (seeded test noise)'}; noise source {p['noise_source']}",
    ]
    for s in p["stages"]:
        if s["stage"] == "release":
            lines.append(f"stage        release: epsilon={s['epsilon']:g}, noise multipliers "
                         f"{', '.join(f'{v:.4g}' for v in s['noise_multipliers'])}; content hash {s['content_hash']}")  # fmt: skip
        else:
            lines.append(f"stage        private evolution: T={s['rounds']} histograms, noise multiplier "
                         f"{s['noise_multiplier']:.4g} x sensitivity {s['sensitivity']:.4g}, threshold H={s['threshold']:.4g}, "
                         f"k={s['k']}, embedding {s['embedding']} (epsilon {s['epsilon']:.4g} on its own)")  # fmt: skip
    if p.get("generator_public"):
        lines.append("generator    fitted to other, public data: its release is not counted")
    if "data_set_total_epsilon" in p:
        lines.append(f"data set     total epsilon {p['data_set_total_epsilon']:.4g} in its budget record")
    lines.append(f"settings     population {c['population']}, samples {c['samples']}, strengths "
                 f"{c['strength_start']:g} -> {c['strength_end']:g}, seed {c['seed']}")  # fmt: skip
    return "\n".join(lines)


def _privacy_lines(p: dict) -> list[str]:
    """The guarantee and one line per stage, for a VAE and its per-record samples."""
    lines = [f"privacy      epsilon={p['epsilon']:.4g}, delta={p['delta']:g}, neighbouring={p['neighbouring']} "
             f"({p['composition']})", _publishable(p["for_publication"], p["noise_source"])]  # fmt: skip
    for s in p["stages"]:
        if s["stage"] == "release":
            lines.append(f"stage        release: epsilon={s['epsilon']:.4g}, noise multipliers "
                         f"{', '.join(f'{v:.4g}' for v in s['noise_multipliers'])}; content hash {s['content_hash']}")  # fmt: skip
        elif s["stage"] == "dp-sgd":
            lines.append(f"stage        dp-sgd: {s['steps']} steps, Poisson sampling rate {s['sampling_rate']:g}, clip norm "
                         f"{s['clip_norm']:g}, noise multiplier {s['noise_multiplier']:.4g} (epsilon {s['epsilon']:.4g} on its own)")  # fmt: skip
        else:
            lines.append(f"stage        per-record: noise multiplier {s['noise_multiplier']:.4g} x sensitivity "
                         f"{s['sensitivity']:.4g} (encoder Lipschitz {s['encoder_lipschitz']:g} x domain diameter "
                         f"{s['domain_diameter']:.4g} x sqrt 2); epsilon {s['epsilon']:.4g} on its own, one output per record")  # fmt: skip
    if p.get("generator_public"):
        lines.append("warm start   a generator fitted to other, public data: its release is not counted")
    if "data_set_total_epsilon" in p:
        lines.append(f"data set     total epsilon {p['data_set_total_epsilon']:.4g} in its budget record")
    return lines


def format_vae(meta: dict) -> str:
    c, lip = meta["config"], meta["lipschitz"]
    steps = max(1, round(c["epochs"] / c["sampling_rate"]))
    lines = [f"model        mmgen Lipschitz VAE, format {meta['format_version']}, library {meta['library_version']}; "
             f"{meta['steps_done']} of {steps} DP-SGD steps done" + ("" if meta["steps_done"] >= steps else " (UNFINISHED)"),
             *_privacy_lines(meta["privacy"])]  # fmt: skip
    if lip is None:
        lines.append("lipschitz    " + ("declared encoder {:g}, decoder {:g}; measured when training ends".format(
            c["encoder_lipschitz"], c["decoder_lipschitz"]) if c["lipschitz"] else "none (unconstrained baseline)"))  # fmt: skip
    else:
        lines.append(f"lipschitz    encoder {lip['encoder_measured']:.4g} <= declared {lip['encoder_declared']:g}, decoder "
                     f"{lip['decoder_measured']:.4g} <= declared {lip['decoder_declared']:g} (products of spectral norms)")  # fmt: skip
    d = meta["data"]
    lines.append(f"data         {d['name']}: records of shape {tuple(d['input_shape'])} in [{d['low']:g}, {d['high']:g}], "
                 f"{d['n_classes']} classes")  # fmt: skip
    lines.append(f"settings     latent {c['latent_dim']}, hidden {c['hidden']}, posterior std {c['posterior_std']:.4g}, "
                 f"lr {c['lr']:g}, seed {c['seed']}")  # fmt: skip
    return "\n".join(lines)


def _inspect_samples(args) -> None:
    from ..errors import MMGenError
    from ..evolve import read_meta

    import numpy as np

    with np.load(args.file, allow_pickle=False) as arrays:
        raw = str(arrays["meta"]) if "meta" in arrays.files else None
    if raw is not None and '"mmgen.samples"' in raw:
        from .fit import SAMPLES_FORMAT

        meta = json.loads(raw)
        if meta.get("format") == SAMPLES_FORMAT:
            p, src = meta["privacy"], meta.get("source") or {}
            origin = (f"a generator fitted to release {src.get('release_content_hash')}" if src.get("kind") == "checkpoint"
                      else f"a {src.get('kind')}")  # fmt: skip
            print(json.dumps(meta, indent=2, sort_keys=True) if args.json else "\n".join([
                f"samples      mmgen samples, format {meta['format_version']}, library {meta['library_version']}; "
                f"drawn from {origin} (post-processing)",
                f"privacy      epsilon={p['epsilon']:.4g}, delta={p['delta']:g}, neighbouring={p['neighbouring']} "
                "(the source's guarantee)",
                _publishable(p["for_publication"], p["noise_source"])]))  # fmt: skip
            return
    if raw is not None and '"mmgen.per-record-samples"' in raw:
        meta = json.loads(raw)
        print(json.dumps(meta, indent=2, sort_keys=True) if args.json else "\n".join(
            ["samples      mmgen per-record samples (one per private record; their number is public)",
             *_privacy_lines(meta["privacy"])]))  # fmt: skip
        return
    meta = read_meta(args.file)
    if meta is None:
        raise MMGenError(f"{args.file} holds samples without a privacy record (x and y only, for "
                         "`mmgen evaluate`, as `mmgen sample` wrote them before it added its `meta`): their guarantee is the release's; inspect the release.")  # fmt: skip
    print(json.dumps(meta, indent=2, sort_keys=True) if args.json else format_evolved(meta))
