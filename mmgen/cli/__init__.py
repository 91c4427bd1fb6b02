"""The ``mmgen`` command: release, inspect, fit, sample, evaluate, plot, demo, audit, budget, schema, evolve, vae, features.

One module per command group (``release``, ``inspect``, ``fit``, ``evaluate``, ``schema``, ``evolve``, ``vae``,
``demo``), their shared options and guards in ``common``; :func:`main` here. Every user error (an
:class:`~mmgen.errors.MMGenError`) is printed as one line, ``mmgen: error: ...``, with exit status 2 and no
traceback.

The command functions import mmgen's heavy parts (torch models, timm, OpenDP, opacus, pandas) inside their
bodies, on purpose: ``mmgen --help`` and argument errors stay fast.
"""

from __future__ import annotations

import argparse
import sys

from .common import (EVOLVE_DEFAULTS, FIT_DEFAULTS, TABLE_FIT_DEFAULTS, VAE_DEFAULTS, feature_options, show_defaults,
                     show_library_messages)  # fmt: skip
from .demo import add_audit, add_demo, cmd_audit, cmd_demo, cmd_features
from .evaluate import add_evaluate, add_plot, cmd_evaluate, cmd_plot
from .evolve import add_evolve, cmd_evolve
from .fit import add_fit, add_sample, cmd_fit, cmd_sample
from .inspect import add_inspect, cmd_inspect
from .release import add_budget, add_release, cmd_budget, cmd_release
from .schema import add_schema, cmd_schema
from .vae import add_vae, cmd_vae


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmgen", description="Differentially private synthetic data by moment matching.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"mmgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_release, add_inspect, add_fit, add_sample, add_evaluate, add_plot, add_demo, add_audit,
                add_budget, add_schema, add_evolve, add_vae):
        add(sub)
    sub.add_parser("features", help="list the registered feature maps", description="Lists the feature maps.")
    for p in sub.choices.values():
        show_defaults(p)
    return parser


COMMANDS = {
    "release": cmd_release, "inspect": cmd_inspect, "fit": cmd_fit, "sample": cmd_sample,
    "evaluate": cmd_evaluate, "plot": cmd_plot, "demo": cmd_demo, "features": cmd_features, "audit": cmd_audit, "budget": cmd_budget, "evolve": cmd_evolve,
    "schema": cmd_schema, "vae": cmd_vae,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmgen`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    from ..errors import MMGenError

    undo_logging = show_library_messages()
    try:
        COMMANDS[args.command](args)
    except (MMGenError, TypeError) as exc:
        if isinstance(exc, TypeError) and "option" not in str(exc):
            raise
        print(f"mmgen: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written: one line, no traceback
        print(f"mmgen: error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmgen: interrupted", file=sys.stderr)
        return 130
    finally:
        undo_logging()
    return 0


_feature_options = feature_options  # the name tests and earlier code use

__all__ = ["main", "build_parser", "FIT_DEFAULTS", "TABLE_FIT_DEFAULTS", "VAE_DEFAULTS", "EVOLVE_DEFAULTS", "COMMANDS"]
