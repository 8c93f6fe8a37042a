"""``lookalike`` command line: a thin dispatcher over each stage's ``run(config)``.

Each subcommand lives in its stage's module, which exposes
``add_cli(parser: argparse.ArgumentParser) -> None`` (adds arguments and sets
``func=callable(args) -> int``). Modules are imported only when their subcommand runs, so
``lookalike datagen`` never pays for importing torch or Spark.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

from lookalike.errors import LookalikeError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "datagen": ("lookalike.datagen", "generate the synthetic customer base (raw tables)"),
    "features": ("spark_jobs.runner", "build weekly feature snapshot tables with PySpark"),
    "governance": ("lookalike.governance", "review feature views' legal basis (governance review)"),
    "snapshot": ("lookalike.snapshot", "build a point-in-time training snapshot from Feast"),
    "materialize": ("lookalike.materialize", "load the latest features into the online store"),
    "train": ("training.train", "train the two-tower model and register it in MLflow"),
    "build-index": ("index_builder.build", "embed opt-in anchors and build the FAISS index bundle"),
    "verify-bundle": ("index_builder.bundle", "check an index bundle against its manifest (every byte by default)"),
    "assign": ("index_builder.assign", "assign lookalike segments and write the unified table"),
    "evaluate": ("index_builder.evaluate", "evaluate assignment quality against baselines"),
    "weekly": ("index_builder.weekly", "weekly batch: snapshot, train?, index, assign, report"),
    "demo": ("lookalike.demo", "run the whole system end to end on the synthetic base"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookalike", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_cli(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Library chatter (Feast's registry refreshes, dask/mlflow deprecation notices) drowns
        # the stage logs people need to read; -v brings it back.
        for noisy in ("feast", "mlflow", "alembic", "py4j", "urllib3", "numexpr"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*noload.*")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LookalikeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
