"""Options several ``igan`` commands take, defined once so that their flags, help texts and defaults
are the same in every command. Import stays light (argparse only): ``igan --help`` builds every
command's parser."""
from __future__ import annotations

import argparse

#: The per-command opt-in to load a model stored pickled (``igan sample`` / ``igan score``).
TRUST_FLAG = "--trust-pickled-model"
JSON_HELP = "end with one JSON line of the results"


def add_model_uri(parser: argparse.ArgumentParser) -> None:
    """Add the positional ``MODEL_URI`` of a command that reads a registered generator
    (``args.model_uri``)."""
    parser.add_argument("model_uri", metavar="MODEL_URI",
                        help="models:/igan-<preset>-generator@latest, models:/NAME/VERSION or runs:/RUN_ID/generator")


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    """Add ``--tracking-uri URI`` (``args.tracking_uri``, None: the default store)."""
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under $IGAN_HOME)")


def add_json(parser: argparse.ArgumentParser, help_text: str = JSON_HELP) -> None:
    """Add ``--json`` (``args.json``, a bool): end the output with one JSON line, described by ``help_text``."""
    parser.add_argument("--json", action="store_true", help=help_text)


def add_model_loading(parser: argparse.ArgumentParser, noise_seed: bool = True, trust_pickled: bool = True) -> None:
    """Add the options of a command that loads a registered generator and runs it, in this order:
    ``--seed S`` (``noise_seed``: the noise seed, default 0), ``--device`` (``auto`` | ``cpu`` |
    ``cuda``), ``--tracking-uri``, ``--trust-pickled-model`` (``trust_pickled``) and ``--json``."""
    if noise_seed:
        parser.add_argument("--seed", type=int, default=0, metavar="S", help="noise seed (default 0)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where the generator runs (default: CUDA when available)")
    add_tracking_uri(parser)
    if trust_pickled:
        parser.add_argument(TRUST_FLAG, action="store_true",
                            help="also load a model stored pickled (or shipping code), which can run any code it "
                                 "carries; only for a model you trust (default: torch.export programs only)")
    add_json(parser)
