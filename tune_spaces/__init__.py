"""Search spaces for ``igan tune``: one module per preset.

A space module names the preset it starts from and which config keys vary and how::

    PRESET = "digits"                 # the preset a trial's config starts from
    METRIC, MODE = "val_ssl_error", "min"
    TIED = {"optim.lr_g": "optim.lr_d"}     # optional: keys that copy another key's value
    PBT_MUTABLE = ("optim.lr_d", ...)  # optional: keys PBT may perturb mid-training (shape-preserving)
    OVERLAYS = {"name": {"section.key": value, ...}}  # optional: named bundles of config values
    def space() -> dict[str, ray.tune search domain]   # keyed by dotted config keys (and "overlay")

A trial's config is ``apply_overrides(get_preset(PRESET), [f"{key}={value}", ...])``: the one
:class:`igan.config.Config` flows into the training code unchanged. "Smoothing off" is
``techniques.real_label=1.0``. Draws are independent (``mbd_kernels`` / ``mbd_dim`` are drawn even
when ``minibatch_discrimination`` is off; the model ignores them then).

With ``OVERLAYS``, the space varies the key ``"overlay"`` over their names (e.g.
``tune.grid_search(list(OVERLAYS))``): a trial's config is the base with its overlay's values set
over it (they win over ``--set``), then the other varied keys. One dimension then changes several
keys together, e.g. one preset's techniques against another's (``benchmarks/paper_tables.py``).

A space need not be a file: any object with these names (e.g. a ``types.SimpleNamespace``) can be
given to the search as ``TuneOptions.space_module``.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path
from types import ModuleType

REQUIRED = ("PRESET", "METRIC", "MODE", "space")
#: The varied key that picks one of a space's ``OVERLAYS``.
OVERLAY = "overlay"


def available() -> list[str]:
    """Names of the space modules in this package, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load_space(name: str) -> ModuleType:
    """The space module ``name`` (a module of this package, or a path to a ``.py`` file defining
    the same names). ValueError naming the available spaces when there is no such space, or
    naming what a file lacks."""
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"tune space file not found: {name}")
        spec = importlib.util.spec_from_file_location(f"tune_spaces._file_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        if name not in available():
            raise ValueError(f"unknown tune space '{name}'; available: {', '.join(available())} "
                             "(or a path to a .py file)")
        module = importlib.import_module(f"tune_spaces.{name}")
    return check_space(module, name)


def check_space(module, name: str):
    """``module`` (a space module or any object with its names) when it has what a space needs;
    ValueError naming what it lacks or gets wrong otherwise."""
    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    if missing:
        raise ValueError(f"tune space '{name}' lacks {', '.join(missing)}")
    if module.MODE not in ("min", "max"):
        raise ValueError(f"tune space '{name}': MODE must be 'min' or 'max', got {module.MODE!r}")
    if overlays(module) and OVERLAY not in module.space():
        raise ValueError(f"tune space '{name}' has OVERLAYS but does not vary '{OVERLAY}'")
    return module


def pbt_mutable(module: ModuleType) -> tuple[str, ...]:
    """The keys of ``module.space()`` that PBT may perturb (default: learning rates and the
    smoothing target, which do not change parameter shapes)."""
    keys = getattr(module, "PBT_MUTABLE", ("optim.lr_d", "techniques.real_label"))
    return tuple(k for k in keys if k in module.space())


def tied(module: ModuleType) -> dict[str, str]:
    """``{key: source_key}``: config keys set to another varied key's value in every trial."""
    return dict(getattr(module, "TIED", {}))


def overlays(module) -> dict[str, dict]:
    """``{name: {"section.key": value}}``: the space's named bundles of config values (none: {})."""
    return {name: dict(values) for name, values in getattr(module, "OVERLAYS", {}).items()}
