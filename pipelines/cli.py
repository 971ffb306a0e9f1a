"""The ``igan`` command line. Thin: each subcommand lives in ``pipelines/cmd_<name>.py`` exposing
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their command runs,
so ``igan --help`` stays fast."""
from __future__ import annotations

import argparse
import importlib
import sys

from igan.config import ConfigError
from pipelines.errors import ResourceWaitTimeout, UserError, describe_failure, report_error

COMMANDS = {
    "shard": "write a data set as WebDataset shards with a manifest (Ray Data)",
    "train": "train an improved GAN (Ray Train), tracked in MLflow",
    "tune": "search hyperparameters (Ray Tune) over a space in tune_spaces/",
    "sample": "write a grid of samples from a registered generator",
    "score": "score a registered generator (Inception or domain score)",
    "models": "list registered igan models, versions and aliases",
    "turing": "human visual Turing test of a registered generator as a local web page; --summary reports it",
    "report": "one self-contained HTML page comparing runs: config, curves, samples, final metrics",
}


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        # no prefix matching: a mistyped flag (`igan models --n 3`) must be an error, not another flag
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse's own usage errors: one line, exit 2
        self.exit(2, f"igan: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command in :data:`COMMANDS`."""
    parser = _Parser(prog="igan", description="Improved-GAN training at cluster scale.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _module(name).add_arguments(p)
    return parser


def _module(name: str):
    return importlib.import_module(f"pipelines.cmd_{name}")


def main(argv: list[str] | None = None, hooks: list | None = None) -> int:
    """Entry point of the ``igan`` script; returns the process exit status. ``hooks`` (for callers
    in Python, e.g. tests injecting faults) go to ``igan train``'s and ``igan tune``'s jobs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["train"]  # `igan` alone behaves like `igan train` on the digits preset
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.hooks = list(hooks or [])
    try:
        return int(_module(args.command).run(args) or 0)
    except (UserError, ConfigError) as exc:
        return report_error(args.command, 2, str(exc))
    except ResourceWaitTimeout as exc:  # a valid job the cluster could not start in time
        return report_error(args.command, 1, str(exc))
    except KeyboardInterrupt:
        print(f"igan {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        known = describe_failure(exc)  # the tracking server refused, a file could not be written, ...
        if known is None:
            raise  # a bug: its traceback is the report
        return report_error(args.command, *known)


if __name__ == "__main__":
    sys.exit(main())
