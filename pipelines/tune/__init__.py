"""``igan tune``: Ray Tune searches over a space in ``tune_spaces/``, each trial an igan training job.

* :mod:`~pipelines.tune.options`: what ``igan tune`` takes and its checks;
* :mod:`~pipelines.tune.search`: the space, the base config, each trial's config, the scheduler;
* :mod:`~pipelines.tune.capacity`: what a trial reserves, how many run at once;
* :mod:`~pipelines.tune.trials`: the two trial functions (a TorchTrainer per trial, or the loop in
  the trial's process) and their MLflow child runs;
* :mod:`~pipelines.tune.results`: the results table, CSV and plot;
* :mod:`~pipelines.tune.champion`: the best trial's models registered as ``champion``;
* :mod:`~pipelines.tune.run`: the driver, :func:`run_search`.
"""
from pipelines.tune.options import SCHEDULERS, TRIAL_DRIVER_CPUS, TuneOptions
from pipelines.tune.run import SearchInterrupted, run_search

__all__ = ["TuneOptions", "run_search", "SearchInterrupted", "SCHEDULERS", "TRIAL_DRIVER_CPUS"]
