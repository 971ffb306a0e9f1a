"""The MLflow Model Registry side of igan: log a run's generator (and, for semi-supervised runs, its
classifier) as MLflow PyTorch models, register them as ``igan-<preset>-generator`` /
``igan-<preset>-classifier``, move aliases (``latest``; ``champion`` from ``igan tune``), and resolve
and load models for ``igan sample`` / ``igan score`` / ``igan models``.

Model URIs understood everywhere: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` and
``runs:/RUN_ID/generator`` (or ``.../classifier``).

The alias ``latest``: MLflow reserves that alias name (``models:/NAME/latest`` is its built-in "newest
version"), so it cannot be stored as a real alias. igan keeps the contract "alias ``latest`` on each
new version" by treating ``latest`` as a virtual alias that always means the newest version:
``models:/NAME@latest`` resolves to it here, ``igan models`` shows it, and MLflow's own tools reach the
same version as ``models:/NAME/latest``. Other aliases (``champion``) are real MLflow aliases.

Each logged model carries the run's full config in its MLmodel ``metadata`` (key ``igan``) and as
``extra_files/config.yaml``, so a loaded generator knows its pixel range, image shape and data set.

Models are stored as ``torch.export`` programs only (MLflow's ``pt2``), never pickled, and loaded
only in that form unless the caller trusts the model (:mod:`pipelines.model_safety`).

Reading never touches MLflow's global state; logging a model does (MLflow's ``log_model`` reads the
process-wide tracking URI), so it runs under a lock with the URI set and restored around it.

Modules, one concern each:

* :mod:`~pipelines.registry.names`: the model kinds, registered-model names, ``latest``, the metadata key;
* :mod:`~pipelines.registry.export`: the modules registered (the classifier wrapper, CPU copies,
  example inputs) and the ``torch.export`` check each must pass;
* :mod:`~pipelines.registry.register`: logging and registering models, aliases, the process-URI lock;
* :mod:`~pipelines.registry.server`: :func:`check_tracking_uri` (store, reachability, credentials);
* :mod:`~pipelines.registry.lookup`: the client, and registered models and versions with one-line errors;
* :mod:`~pipelines.registry.resolve`: model URIs resolved, a model's folder downloaded;
* :mod:`~pipelines.registry.load`: models loaded safely onto a device, samples from a generator;
* :mod:`~pipelines.registry.listing`: :func:`list_models` for ``igan models``.
"""
from __future__ import annotations

from pipelines.registry.export import (ClassifierLogits, NotExportable, _example_input, _modules_of, check_exports,
                                       check_sizes)
from pipelines.registry.listing import SUMMARY_METRICS, list_models
from pipelines.registry.load import TRUST_FLAG, generate_samples, load_classifier, load_generator, module_device
from pipelines.registry.lookup import _client
from pipelines.registry.names import KINDS, LATEST, METADATA_KEY, model_name
from pipelines.registry.register import _create_version, _process_tracking_uri, register_models, set_alias
from pipelines.registry.resolve import URI_FORMS, _download, resolve_model_uri
from pipelines.registry.server import check_tracking_uri

__all__ = ["KINDS", "LATEST", "METADATA_KEY", "SUMMARY_METRICS", "TRUST_FLAG", "URI_FORMS", "ClassifierLogits",
           "NotExportable", "check_exports", "check_sizes", "check_tracking_uri", "generate_samples", "list_models",
           "load_classifier", "load_generator", "model_name", "module_device", "register_models",
           "resolve_model_uri", "set_alias"]
# helpers tests reach as ``pipelines.registry._name`` (e.g. to log a pickled model by hand)
__all__ += ["_client", "_create_version", "_download", "_example_input", "_modules_of", "_process_tracking_uri"]
