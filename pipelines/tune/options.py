"""What ``igan tune`` takes (:class:`TuneOptions`) and the checks on it, before anything starts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines import defaults
from pipelines.errors import UserError
from pipelines.resources import DEFAULT_WAIT_S

SCHEDULERS = ("asha", "pbt", "fifo")
TRIAL_BACKENDS = ("train", "local")
#: CPUs the Tune trial function itself reserves (``--trial-backend train``): it only drives a
#: TorchTrainer, so it takes a sliver; Tune refuses a trial that reserves nothing. It comes out of
#: ``--cpus-per-trial``: the trial's workers share the rest, so what a trial reserves adds up to
#: ``--cpus-per-trial`` and concurrency counts it (counting less admits trials whose worker groups
#: never fit, and Ray Train retries their start without end).
TRIAL_DRIVER_CPUS = 0.01


@dataclass
class TuneOptions:
    """Everything ``igan tune`` takes (its flags, see ``igan tune --help``); None means the default."""
    space: str
    preset: str | None = None
    num_samples: int = 8
    scheduler: str = "asha"
    max_concurrent: int | None = None
    workers_per_trial: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    overrides: list[str] = field(default_factory=list)
    data: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    experiment: str = defaults.DEFAULT_EXPERIMENT
    name: str | None = None
    resume: bool = False
    seed: int = 0
    grace_epochs: int | None = None
    reduction_factor: float = 3.0
    max_failures: int = 1
    address: str | None = None
    register: bool = True
    verbose: int = 1
    trial_backend: str = "train"
    wait_for_resources: float = DEFAULT_WAIT_S
    #: Objects the search calls (``on_trial_complete(count)``) and hands to every trial's training
    #: loop (:func:`igan.loop.train_epochs`): the seam through which tests inject faults. Not a CLI
    #: option, and not stored with the search.
    hooks: list = field(default_factory=list)
    #: The space itself (an object with a space module's names, see :mod:`tune_spaces`) instead of
    #: loading ``space`` by name; ``space`` then only names it. Not a CLI option and not stored with
    #: the search: a search started with one is resumed by passing it again.
    space_module: Any = None


#: Options that describe this invocation rather than the search: not stored in its record.
PER_RUN = ("resume", "name", "storage", "verbose", "address", "wait_for_resources", "hooks", "space_module")


def validate(opts: TuneOptions) -> None:
    """UserError (one line) for an option out of its range or a combination that cannot run."""
    if opts.scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got '{opts.scheduler}'")
    for flag, value, low in (("--num-samples", opts.num_samples, 1), ("--workers-per-trial", opts.workers_per_trial, 1),
                             ("--max-concurrent", opts.max_concurrent, 1), ("--max-failures", opts.max_failures, 0)):
        if value is not None and value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    if opts.trial_backend not in TRIAL_BACKENDS:
        raise UserError(f"--trial-backend must be one of {', '.join(TRIAL_BACKENDS)}, got '{opts.trial_backend}'")
    if opts.trial_backend == "local" and opts.workers_per_trial != 1:
        raise UserError("--trial-backend local runs one process per trial; drop --workers-per-trial "
                        "or use --trial-backend train")
    if opts.cpus_per_trial <= 0 or opts.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if opts.trial_backend == "train" and opts.cpus_per_trial <= TRIAL_DRIVER_CPUS:
        raise UserError(f"--cpus-per-trial covers the trial's driver ({TRIAL_DRIVER_CPUS:g} CPU) and its workers; "
                        f"give more than {TRIAL_DRIVER_CPUS:g}, got {opts.cpus_per_trial:g}")
    if opts.wait_for_resources < 0:
        raise UserError(f"--wait-for-resources must be >= 0 seconds, got {opts.wait_for_resources:g}")
