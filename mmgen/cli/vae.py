"""``mmgen vae``: the Lipschitz VAE trained with DP-SGD, and the seed's per-record mechanism."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import VAE_DEFAULTS, add_npz_options, budget_record_path, npz_options, refuse_overwrite, warn, warn_if_record_missing


def add_vae(sub):
    d = VAE_DEFAULTS
    p = sub.add_parser("vae", help="the Lipschitz VAE trained with DP-SGD on the private data", description=(
        "Trains a class-conditional VAE with Lipschitz-constrained encoder and decoder on the private data with DP-SGD "
        "(opacus: per-record clipping, Gaussian noise, Poisson sampling). --epsilon is the total for the data set: "
        "a --warm-start generator's release, DP-SGD, the optional per-record stage and every stage in the budget "
        "record compose within it (dp-accounting). Writes a model file that `mmgen sample` and `mmgen inspect` take. "
        f"The defaults ({d['epochs']:g} expected epochs at sampling rate {d['sampling_rate']:g}) train on 60,000 "
        "28x28 records in about a minute on 2 CPU cores."))  # fmt: skip
    p.add_argument("--data", default="digits", help="the private data (same specs as `release`)")
    add_npz_options(p)
    p.add_argument("--epsilon", type=float, required=True, help="total epsilon of the data set after this run (> 0)")
    p.add_argument("--delta", type=float, default=1e-5, help="delta in (0, 1); default 1e-5")
    p.add_argument("--neighbouring", default="add-remove", choices=["add-remove", "replace-one"],
                   help="neighbouring relation (a warm start's release's; replace-one for --per-record-epsilon)")  # fmt: skip
    p.add_argument("--out", required=True, help="model file to write (safetensors)")
    p.add_argument("--warm-start", default=None, metavar="CKPT", help=(
        "a generator checkpoint (`mmgen fit`) of a release of --data: the VAE is first trained on its samples "
        "(post-processing), and the release counts within --epsilon"))  # fmt: skip
    p.add_argument("--generator-public", action="store_true", help=(
        "the --warm-start generator was fitted to other, public data: no release is counted"))  # fmt: skip
    p.add_argument("--no-lipschitz", action="store_true", help="no Lipschitz constraint (the baseline)")
    p.add_argument("--epochs", type=float, default=d["epochs"], help="expected passes over the data (steps = epochs / q)")
    p.add_argument("--sampling-rate", type=float, default=d["sampling_rate"], help="q, Poisson sampling rate per step")
    p.add_argument("--clip-norm", type=float, default=d["clip_norm"], help="C, per-record gradient norm bound")
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument("--latent-dim", type=int, default=d["latent_dim"])
    p.add_argument("--hidden", default=",".join(map(str, d["hidden"])), help="hidden widths, comma-separated")
    p.add_argument("--encoder-lipschitz", type=float, default=d["encoder_lipschitz"],
                   help="declared Lipschitz constant of the encoder mean")  # fmt: skip
    p.add_argument("--decoder-lipschitz", type=float, default=d["decoder_lipschitz"],
                   help="declared Lipschitz constant of the decoder")  # fmt: skip
    p.add_argument("--posterior-std", type=float, default=None, help=(
        f"s, the posterior's standard deviation (default {d['posterior_std']:g}; with --per-record-epsilon, the s "
        "that gives that guarantee)"))  # fmt: skip
    p.add_argument("--pretrain-epochs", type=int, default=d["pretrain_epochs"], help="warm start: passes over the generated records")
    p.add_argument("--seed", type=int, default=0, help="public seed of the initial weights, warm start and samples")
    p.add_argument("--per-record-epsilon", type=float, default=None, help=(
        "also run the seed's per-record mechanism (encode each private record, add the posterior noise, decode) at "
        "this per-record epsilon, under replace-one; needs --per-record-out"))  # fmt: skip
    p.add_argument("--per-record-out", default=None, help="the per-record samples to write (.npz)")
    p.add_argument("--clip", action="store_true", help="clip values into the declared domain instead of refusing them")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out (this run spends epsilon again)")
    p.add_argument("--budget-record", default=None, metavar="PATH", help=(
        "the data set's budget record (as for `release`; default beside npz/csv files, none for the benchmarks)"))  # fmt: skip
    p.add_argument("--resume", action="store_true", help=(
        "continue an interrupted run from the unfinished model at --out (its accounting is kept: no second charge)"))  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def cmd_vae(args) -> None:
    import mmgen

    from ..errors import MMGenError
    from ..files import expect
    from ..privacy.ledger import BudgetRecord, budget_warnings
    from ..vae import TrainedVAE, VAEConfig, per_record_samples, per_record_std, save_per_record, train_vae

    out = Path(args.out)
    if (args.per_record_epsilon is None) != (args.per_record_out is None):
        raise MMGenError("--per-record-epsilon and --per-record-out go together.")
    if args.per_record_out is not None:
        if Path(args.per_record_out).suffix != ".npz":
            raise MMGenError(f"--per-record-out must be an .npz file. Got {args.per_record_out!r}.")
        if args.neighbouring != "replace-one":
            raise MMGenError("The per-record mode is a guarantee under replace-one (the number of records is public): "
                             "pass --neighbouring replace-one.")  # fmt: skip
        if args.no_lipschitz:
            raise MMGenError("The per-record mode needs the Lipschitz constraint (drop --no-lipschitz).")
        if not args.force:
            refuse_overwrite(Path(args.per_record_out), "samples")
    kind = args.data.partition(":")[0]
    if kind in ("csv", "parquet"):
        raise MMGenError("`mmgen vae` runs on images and vectors, not on tables.")
    resume = None
    if args.resume:
        if not out.is_file():
            raise MMGenError(f"--resume: no model at {out} to continue from.")
        expect(out, "vae", "`mmgen vae --resume`")
        resume = TrainedVAE.load(out)
        if resume.finished:
            raise MMGenError(f"--resume: {out} is finished ({resume.steps_done} steps); nothing to resume.")
    elif not args.force:
        refuse_overwrite(out, "a model")
    warm = None
    if args.warm_start is not None and resume is None:
        expect(args.warm_start, "checkpoint", "`mmgen vae --warm-start`")
        warm = mmgen.Trained.load(args.warm_start)
    try:
        hidden = tuple(int(h) for h in args.hidden.split(","))
    except ValueError:
        raise MMGenError(f"--hidden must be comma-separated integers. Got {args.hidden!r}.") from None
    reserve, config = (), None
    if args.per_record_epsilon is not None:  # a later stage: the total must leave room for it (on resume too)
        import dp_accounting

        from ..privacy import noise_multiplier_for

        reserve = (dp_accounting.GaussianDpEvent(noise_multiplier_for(args.per_record_epsilon, args.delta)),)
    if resume is None:
        input_dim = None
        posterior_std = args.posterior_std if args.posterior_std is not None else VAE_DEFAULTS["posterior_std"]
        config_args = dict(epochs=args.epochs, sampling_rate=args.sampling_rate, clip_norm=args.clip_norm, lr=args.lr,
                           latent_dim=args.latent_dim, hidden=hidden, lipschitz=not args.no_lipschitz,
                           encoder_lipschitz=args.encoder_lipschitz, decoder_lipschitz=args.decoder_lipschitz,
                           pretrain_epochs=args.pretrain_epochs, seed=args.seed)  # fmt: skip
        VAEConfig(**config_args, posterior_std=posterior_std)  # every setting checked before data is read
    record_path = budget_record_path(args.data, args.budget_record)
    record = None
    if record_path is not None:
        warn_if_record_missing(record_path, [out, args.per_record_out, None if args.generator_public else args.warm_start])
        record = BudgetRecord.open(record_path, data=Path(args.data.partition(":")[2]).name or args.data)
    for message in budget_warnings(args.epsilon, args.delta):
        warn(message)
    ds = mmgen.data.load(args.data, **npz_options(args))
    if resume is None:
        input_dim = 1
        for n in ds.input_shape:
            input_dim *= n
        if args.per_record_epsilon is not None and args.posterior_std is None:
            posterior_std = per_record_std(args.encoder_lipschitz, input_dim, args.per_record_epsilon, args.delta)
        config = VAEConfig(**config_args, posterior_std=posterior_std)
        print(f"mmgen: DP-SGD: {config.steps} steps at sampling rate {config.sampling_rate:g}, clip norm "
              f"{config.clip_norm:g}; calibrating the noise to total epsilon {args.epsilon:g} ...", file=sys.stderr)  # fmt: skip
    vae = train_vae(ds, epsilon=args.epsilon, delta=args.delta,  # on resume, epsilon is checked as the total
                    config=config, warm_start=warm, generator_public=args.generator_public,
                    neighbouring=args.neighbouring, record=record, clip=args.clip, progress=not args.quiet,
                    checkpoint=out, resume=resume, reserve=reserve)  # fmt: skip
    vae.save(out)
    dp = vae.privacy["stages"][-1]
    print(f"wrote {out}: epsilon={vae.epsilon:.4g}, delta={vae.delta:g}, {vae.privacy['neighbouring']} "
          f"({len(vae.privacy['stages']) - 1} release(s) + {dp['steps']} DP-SGD steps at noise multiplier "
          f"{dp['noise_multiplier']:.4g})")  # fmt: skip
    if args.per_record_epsilon is not None:
        samples = per_record_samples(vae, ds, epsilon=args.per_record_epsilon, delta=args.delta, record=record,
                                     clip=args.clip, output=args.per_record_out)  # fmt: skip
        save_per_record(args.per_record_out, samples, vae.config.to_dict())
        print(f"wrote {args.per_record_out}: {len(samples['y'])} records, one per private record; epsilon="
              f"{samples['privacy']['epsilon']:.4g} (per-record stage {args.per_record_epsilon:g}), replace-one")  # fmt: skip
    if record is not None:
        print(f"budget record {record_path}: {len(record)} stage(s), total epsilon {record.total_epsilon():.4g} "
              f"at delta={record.delta:g} (keep it private)")  # fmt: skip
