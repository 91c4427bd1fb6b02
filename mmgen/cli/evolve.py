"""``mmgen evolve``: Private Evolution on top of a fitted generator."""

from __future__ import annotations

from pathlib import Path

from .common import EVOLVE_DEFAULTS, add_npz_options, budget_record_path, npz_options, refuse_overwrite, warn, warn_if_record_missing


def add_evolve(sub):
    p = sub.add_parser("evolve", help="Private Evolution: private nearest-neighbour votes refine a generator's samples",
                       description=(
        "Private Evolution on top of a fitted generator: every private record votes for its nearest samples of its "
        "class (public embedding), the vote histogram gets Gaussian noise, and the next samples are variations of the "
        "voted ones. --epsilon is the total for the data set: the release the generator came from, this run and every "
        "stage in the budget record compose within it (dp-accounting). Writes samples (.npz) that `mmgen evaluate` "
        "and `mmgen inspect` read."))  # fmt: skip
    p.add_argument("checkpoint", nargs="?", help="generator checkpoint (`mmgen fit`); not needed with --plan")
    p.add_argument("--data", default="digits", help="the private data the release was made of (same specs as `release`)")
    add_npz_options(p)
    p.add_argument("--epsilon", type=float, required=True, help="total epsilon of the data set after this run (> 0)")
    p.add_argument("--delta", type=float, default=1e-5, help="delta in (0, 1); default 1e-5")
    p.add_argument("--neighbouring", default="add-remove", choices=["add-remove", "replace-one"],
                   help="neighbouring relation (the release's)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=EVOLVE_DEFAULTS["rounds"], help="T, private histograms")
    p.add_argument("--population", type=int, default=EVOLVE_DEFAULTS["population"],
                   help="candidates per round, all classes (split by the release's noisy class proportions)")  # fmt: skip
    p.add_argument("--samples", type=int, default=EVOLVE_DEFAULTS["samples"], help="records to write")
    p.add_argument("--k", type=int, default=1, help="neighbours each record votes for (1/sqrt(k) each)")
    p.add_argument("--threshold", type=float, default=EVOLVE_DEFAULTS["threshold"],
                   help="H in noise standard deviations: noisy votes below it count 0")  # fmt: skip
    p.add_argument("--strength-start", type=float, default=EVOLVE_DEFAULTS["strength_start"],
                   help="variation strength after the first round (1: a fresh sample)")  # fmt: skip
    p.add_argument("--strength-end", type=float, default=EVOLVE_DEFAULTS["strength_end"],
                   help="variation strength after the last round")  # fmt: skip
    p.add_argument("--embedding", default=EVOLVE_DEFAULTS["embedding"], choices=["pixels", "efficientnet", "release"],
                   help="public embedding of the votes")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="public seed of the latents and of the draws")
    p.add_argument("--generator-public", action="store_true", help=(
        "the generator was fitted to other, public data (not a release of --data): its release is not counted"))  # fmt: skip
    p.add_argument("--clip", action="store_true", help="clip values into the declared domain instead of refusing them")
    p.add_argument("--out", help="samples to write (.npz: x, y, latents, meta)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out (this run spends epsilon again)")
    p.add_argument("--budget-record", default=None, metavar="PATH", help=(
        "the data set's budget record (as for `release`; default beside npz/csv files, none for the benchmarks)"))  # fmt: skip
    p.add_argument("--plan", action="store_true", help=(
        "print how --epsilon splits between a release and this run for --release-share, and stop (reads no data)"))  # fmt: skip
    p.add_argument("--release-share", type=float, default=0.5, help="with --plan: the release's share of mu^2 (0..1)")


def cmd_evolve(args) -> None:
    import mmgen

    from ..errors import MMGenError
    from ..evolve import EvolveConfig, evolve, plan
    from ..files import expect
    from ..privacy.ledger import BudgetRecord, budget_warnings

    if args.plan:
        p = plan(args.epsilon, args.delta, args.rounds, args.release_share)
        print(f"total epsilon {args.epsilon:g} at delta={args.delta:g}, {args.neighbouring}, release share "
              f"{args.release_share:g} of mu^2:\n  mmgen release ... --epsilon {p['release_epsilon']:.6g}   "
              f"(noise multiplier {p['release_noise_multiplier']:.4g})\n  mmgen evolve CKPT ... --epsilon "
              f"{args.epsilon:g} --rounds {args.rounds}   ({args.rounds} histograms at noise multiplier "
              f"{p['noise_multiplier']:.4g}; epsilon {p['pe_epsilon']:.4g} on their own)")  # fmt: skip
        return
    if args.checkpoint is None or args.out is None:
        raise MMGenError("`mmgen evolve` needs a CHECKPOINT and --out (or --plan).")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise MMGenError(f"--out must be an .npz file (samples). Got {args.out!r}.")
    if not args.force:
        refuse_overwrite(out, "samples")
    expect(args.checkpoint, "checkpoint", "`mmgen evolve`")
    trained = mmgen.Trained.load(args.checkpoint)
    if "table" in trained.release_info["data"]:
        raise MMGenError("`mmgen evolve` runs on images and vectors; this generator was fitted to a table.")
    config = EvolveConfig(rounds=args.rounds, population=args.population, samples=args.samples, k=args.k,
                          threshold=args.threshold, strength_start=args.strength_start,
                          strength_end=args.strength_end, embedding=args.embedding, seed=args.seed)  # fmt: skip
    kind = args.data.partition(":")[0]
    if kind in ("csv", "parquet"):
        raise MMGenError("`mmgen evolve` runs on images and vectors, not on tables.")
    record_path = budget_record_path(args.data, args.budget_record)
    record = None
    if record_path is not None:
        warn_if_record_missing(record_path, [out, None if args.generator_public else args.checkpoint])
        record = BudgetRecord.open(record_path, data=Path(args.data.partition(":")[2]).name or args.data)
    for message in budget_warnings(args.epsilon, args.delta):
        warn(message)
    ds = mmgen.data.load(args.data, **npz_options(args))
    ev = evolve(trained, ds, epsilon=args.epsilon, delta=args.delta, config=config, neighbouring=args.neighbouring,
                generator_public=args.generator_public, record=record, clip=args.clip, progress=True,
                output=out)  # fmt: skip
    ev.save(out)
    pe = ev.privacy["stages"][-1]
    print(f"wrote {out}: {len(ev.y)} samples; epsilon={ev.epsilon:.4g}, delta={ev.delta:g}, {ev.privacy['neighbouring']} "
          f"(release + {pe['rounds']} histograms at noise multiplier {pe['noise_multiplier']:.4g})")  # fmt: skip
    if record is not None:
        print(f"budget record {record_path}: {len(record)} stage(s), total epsilon {record.total_epsilon():.4g} "
              f"at delta={record.delta:g} (keep it private)")  # fmt: skip
