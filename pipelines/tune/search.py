"""A search resolved from ``igan tune``'s options: the space module in ``tune_spaces/``, the base
config, each trial's config (typed values, no text round trip) and the scheduler."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

from igan.config import Config, bounds, parse_overrides, with_values
from igan.presets import build_config
from pipelines.errors import UserError
from pipelines.tune.options import TuneOptions


@dataclass
class Search:
    """A resolved search: the space module's facts plus the base config."""
    space_name: str
    preset: str
    metric: str
    mode: str
    keys: list[str]            # the varied config keys (space minus --set keys)
    tied: dict[str, str]
    mutable: list[str]         # PBT-perturbable keys
    base: Config
    overlays: dict[str, dict] = field(default_factory=dict)  # the space's OVERLAYS (see tune_spaces)


def plain(value: Any) -> Any:
    """A Python value for a Tune sample (NumPy scalars become int/float/bool)."""
    return value.item() if hasattr(value, "item") else value


def trial_config(base: Config, sampled: dict[str, Any], keys: list[str], tied: dict[str, str],
                 overlays: dict[str, dict] | None = None) -> Config:
    """The trial's Config: ``base`` with the sampled overlay's values (``overlays[sampled["overlay"]]``,
    when the space has overlays), then the sampled ``keys`` and the ``tied`` copies set."""
    import tune_spaces

    if overlays:
        base = with_values(base, overlays[plain(sampled[tune_spaces.OVERLAY])])
    values = {k: sampled[k] for k in keys if not (overlays and k == tune_spaces.OVERLAY)}
    values.update({k: sampled[src] for k, src in tied.items() if src in sampled})
    return with_values(base, values)


def resolve_search(opts: TuneOptions, base_dict: dict | None = None) -> tuple[Search, dict]:
    """``(Search, param_space)`` for ``opts``: the space module, the preset (``--preset`` or the
    module's), ``--set`` applied (a ``--set`` key the space varies is fixed instead); ``base_dict``
    (a resumed search's stored config) replaces preset and ``--set``. UserError on an unknown space
    or a key that is not a config key; ConfigError on a bad value (an overlay's too)."""
    import tune_spaces

    try:
        if opts.space_module is not None:
            module = tune_spaces.check_space(opts.space_module, opts.space)
        else:
            module = tune_spaces.load_space(opts.space)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    preset = opts.preset or module.PRESET
    fixed = set(parse_overrides(opts.overrides))
    space = {k: v for k, v in module.space().items() if k not in fixed}
    tied = {k: src for k, src in tune_spaces.tied(module).items() if k not in fixed and src in space}
    if base_dict is not None:
        base = Config.from_dict(base_dict)
    else:
        base = build_config(preset, overrides=opts.overrides)
        if "train.checkpoint_every" not in fixed:  # a checkpoint with every reported evaluation
            base = with_values(base, {"train.checkpoint_every": base.eval.every})
    flat, overlays = base.flat(), tune_spaces.overlays(module)
    for key in list(space) + list(tied):
        if (key not in flat or key == "preset") and not (overlays and key == tune_spaces.OVERLAY):
            raise UserError(f"tune space '{opts.space}' varies '{key}', which is not a config key")
    if not space:
        raise UserError(f"tune space '{opts.space}': every key it varies is fixed by --set; nothing to search")
    for values in overlays.values():
        with_values(base, values)  # a bad key or value fails here, before any trial starts
    search = Search(opts.space, preset, module.METRIC, module.MODE, list(space), tied,
                    [k for k in tune_spaces.pbt_mutable(module) if k in space], base, overlays)
    return search, space


def describe_domain(domain) -> str:
    """A Tune domain in words, e.g. ``choice[0.9, 1.0]``, ``grid[0, 1]`` or ``float[1e-4, 1e-3] loguniform``."""
    if isinstance(domain, dict) and "grid_search" in domain:
        return f"grid{[plain(v) for v in domain['grid_search']]}"
    cats = getattr(domain, "categories", None)
    if cats is not None:
        return f"choice{[plain(c) for c in cats]}"
    lower, upper = getattr(domain, "lower", None), getattr(domain, "upper", None)
    sampler = type(getattr(domain, "sampler", None)).__name__.lstrip("_").lower()
    if lower is not None:
        return f"{type(domain).__name__.lower()}[{lower}, {upper}] {sampler}".strip()
    return type(domain).__name__


def pbt_mutations(space: dict, keys: list[str]) -> dict:
    """PBT's ``hyperparam_mutations`` for ``keys``: a ``tune.choice`` becomes its list of values, so
    PBT explores by moving to a neighbouring value (it would multiply a Categorical's value by 0.8 or
    1.2, e.g. a smoothing target of 0.9 into 1.08); other domains are kept."""
    from ray.tune.search.sample import Categorical

    return {k: list(space[k].categories) if isinstance(space[k], Categorical) else space[k] for k in keys}


def clamp_to_bounds(config: dict, keys: tuple[str, ...]) -> dict:
    """``config`` with each numeric value of ``keys`` clipped to its config key's allowed range (PBT's
    x0.8 / x1.2 steps on a continuous key may leave it); returns the same dict."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high = bounds(key)
        if low is not None:
            value = max(value, low)
        if high is not None:
            value = min(value, high)
        config[key] = type(config[key])(value)
    return config


def make_scheduler(opts: TuneOptions, search: Search, space: dict):
    """The Tune scheduler ``--scheduler`` names: ASHA and PBT act on whole evaluation intervals
    (``--grace-epochs``, default a quarter of the epochs); UserError for PBT without a mutable key."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    epochs, every = search.base.train.epochs, search.base.eval.every
    interval = opts.grace_epochs or max(every, epochs // 4)
    interval = max(every, int(math.ceil(interval / every)) * every)
    if opts.scheduler == "asha":
        return ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=min(interval, epochs),
                             reduction_factor=opts.reduction_factor)
    if opts.scheduler == "pbt":
        if not search.mutable:
            raise UserError(f"--scheduler pbt: space '{search.space_name}' has no key PBT may perturb "
                            "(PBT_MUTABLE) left after --set")
        import random

        random.seed(opts.seed)  # PBT draws its explore steps from Python's global generator
        return PopulationBasedTraining(time_attr="epoch", perturbation_interval=interval,
                                       hyperparam_mutations=pbt_mutations(space, search.mutable),
                                       custom_explore_fn=functools.partial(clamp_to_bounds,
                                                                           keys=tuple(search.mutable)),
                                       quantile_fraction=0.25)
    return FIFOScheduler()
