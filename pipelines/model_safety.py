"""Loading a registered model without running code from it.

A model in the registry is data that any user of the tracking server can have written. MLflow's
PyTorch flavor stores it one of two ways, and its MLmodel file does not say which: the folder named
by the flavor's ``model_data`` holds either ``model.pth`` (a pickled module: loading it runs
whatever the pickle says, and MLflow 3 allows that by default) or ``model.pt2`` (a ``torch.export``
program: a graph of operators plus tensors). A flavor ``code`` entry puts shipped Python files on
``sys.path``. igan decides from those files, before anything is loaded:

- ``model.pt2`` and no code: loaded with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``, so MLflow
  first checks that every record of the archive is JSON, text, raw tensor bytes or a pickle that
  torch's weights-only unpickler accepts; and igan first checks the graph itself
  (:func:`check_exported_archive`), because ``torch.export.load`` resolves each operator by
  attribute lookup from ``torch`` (``torch.os.system`` resolves too) and parses every symbolic
  shape with ``sympy.sympify``, which evaluates the string as Python.
- anything else: refused (:class:`UnsafeModel`) unless the caller trusts it (``igan sample/score
  --trust-pickled-model``), and then loaded with pickle deserialization allowed.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import threading
import tokenize
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Iterator

PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
EXPORTED, PICKLED = "model.pt2", "model.pth"
_ENV_LOCK = threading.Lock()

#: Operator namespaces an exported igan model uses; a graph calling anything else is refused.
_OPS = re.compile(r"^torch\.ops\.(aten|prims|higher_order)\.[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$")
_SYM = re.compile(r"^torch\.(sym_(float|int|max|min|not|ite|sum)|_sym_sqrt)$")
_MATH = re.compile(r"^math\.[a-z][a-z0-9_]*$")
#: Python operators a graph may use on sizes (getitem picks a tuple output); no call/attrgetter.
_OPERATORS = frozenset(f"_operator.{name}" for name in (
    "getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "pow", "neg", "pos", "abs",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift"))
#: Tokens of a symbolic-shape expression (``Symbol('s31', positive=True, integer=True)``, ``FloorDiv``...).
_EXPR_OPS = frozenset({"(", ")", ",", "=", "+", "-", "*", "/", "//", "**", "%", "<", ">", "<=", ">=", "==", "!=",
                       "&", "|", "~"})
_EXPR_STRING = re.compile(r"^(['\"])[A-Za-z_]\w*\1$")
_SYMPY_NAMES = frozenset({
    "Symbol", "Dummy", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Mod", "floor",
    "ceiling", "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan",
    "GreaterThan", "Equality", "Unequality", "And", "Or", "Not", "Piecewise", "ITE", "true", "false", "True",
    "False", "None", "oo", "zoo", "nan", "S", "Infinity", "NegativeInfinity", "One", "Zero", "NegativeOne", "Half",
    "integer", "positive", "nonnegative", "negative", "nonpositive", "real", "finite", "precision"})


class UnsafeModel(ValueError):
    """The model would (or could) run code when loaded; one line saying why."""


# -- what the folder holds ------------------------------------------------------------------------

def _pytorch_flavor(local: str) -> dict:
    from mlflow.models import Model  # reads MLmodel with yaml.safe_load

    flavor = Model.load(local).flavors.get("pytorch")
    if not isinstance(flavor, dict):
        raise UnsafeModel("it is not an MLflow PyTorch model (no 'pytorch' flavor in its MLmodel)")
    return flavor


def _model_data(local: str, flavor: dict) -> Path:
    """The flavor's ``model_data`` path, which must stay inside ``local``."""
    root = Path(local).resolve()
    data = (root / str(flavor.get("model_data", ""))).resolve()
    if data != root and root not in data.parents:
        raise UnsafeModel(f"its MLmodel points model_data outside the model folder ({flavor.get('model_data')!r})")
    return data


def unsafe_reason(local: str) -> str | None:
    """Why loading the MLflow PyTorch model in folder ``local`` can run code from it (``it is
    stored pickled (data/model.pth)``, ``it ships Python code ...``), or None when it is an exported
    program (``model.pt2``) and nothing else. Reads only MLmodel and file names."""
    flavor = _pytorch_flavor(local)
    data = _model_data(local, flavor)
    if flavor.get("code"):
        return f"it ships Python code ({flavor['code']}/) that loading puts on sys.path"
    if data.is_dir() and (data / EXPORTED).is_file() and not (data / PICKLED).exists():
        return None
    name = f"{data.name}/{PICKLED}" if data.is_dir() else data.name
    return f"it is stored pickled ({name}), not as a torch.export program"


def exported_archive(local: str) -> Path:
    """The ``model.pt2`` of the (safe, see :func:`unsafe_reason`) model in folder ``local``."""
    return _model_data(local, _pytorch_flavor(local)) / EXPORTED


# -- the exported graph -----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _expression_names() -> frozenset[str]:
    """Names a symbolic-shape expression may use: sympy's core classes and constants above and the
    sympy functions torch defines (``FloorDiv``, ``CeilToInt``, ``PythonMod``, ...), classes only."""
    import sympy
    import torch.utils._sympy.functions as fns

    torch_names = {n for n, v in vars(fns).items() if isinstance(v, type) and issubclass(v, sympy.Basic)}
    return _SYMPY_NAMES | frozenset(n for n in torch_names if not n.startswith("_"))


def _check_expression(text: str) -> None:
    """UnsafeModel unless ``text`` is a plain sympy expression: allowed names, identifier strings,
    numbers and arithmetic only, so evaluating it calls nothing but sympy constructors (no attribute
    access, indexing, lambdas or builtins)."""
    names = _expression_names()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        raise UnsafeModel(f"its graph holds a symbolic shape that is no expression: {text[:80]!r}") from None
    for tok in tokens:
        ok = (tok.type in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)
              or (tok.type == tokenize.NAME and tok.string in names)
              or (tok.type == tokenize.OP and tok.string in _EXPR_OPS)
              or (tok.type == tokenize.STRING and _EXPR_STRING.match(tok.string)))
        if not ok:
            raise UnsafeModel(f"its graph holds a symbolic shape with {tok.string!r}, which could run code when "
                              f"parsed: {text[:80]!r}")


def _check_operator(target: str) -> None:
    """UnsafeModel unless ``target`` names an ATen/prims/higher-order operator, a symbolic-size
    helper, a ``math`` function or a plain Python operator: ``torch.export.load`` resolves any
    dotted name under ``torch`` (``torch.os.system`` too) and the graph calls it."""
    if "__" in target or not (_OPS.match(target) or _SYM.match(target) or _MATH.match(target)
                              or target in _OPERATORS):
        raise UnsafeModel(f"its graph calls {target[:80]!r}, which is not a torch operator")


def _walk(node) -> Iterator[tuple[str, str]]:
    """``(key, value)`` of every string under a dict key anywhere in the JSON value ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                yield key, value
            else:
                yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def check_exported_archive(path: str | Path) -> None:
    """Check every graph (``models/*.json``) of the ``torch.export`` archive at ``path``: each
    called operator (node ``target``, operator arguments) and each symbolic shape (``expr_str``)
    must be harmless (see :func:`_check_operator`, :func:`_check_expression`). UnsafeModel (one
    line) otherwise. The records MLflow checks (weights, constants, example inputs) are its job."""
    try:
        with zipfile.ZipFile(path) as archive:
            graphs = [n for n in archive.namelist() if re.search(r"(^|/)models/[^/]+\.json$", n)]
            if not graphs:
                raise UnsafeModel(f"{Path(path).name} holds no exported graph")
            for name in graphs:
                for key, value in _walk(json.loads(archive.read(name))):
                    if key in ("target", "as_operator"):
                        _check_operator(value)
                    elif key == "expr_str":
                        _check_expression(value)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, UnsafeModel):
            raise
        raise UnsafeModel(f"{Path(path).name} is not a readable torch.export archive ({type(exc).__name__})") from None


# -- loading ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def _pickle_deserialization(allowed: bool) -> Iterator[None]:
    """MLflow's ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` set to ``allowed`` for the block (MLflow
    reads it at load time), restored after."""
    with _ENV_LOCK:
        old = os.environ.get(PICKLE_ENV)
        os.environ[PICKLE_ENV] = "true" if allowed else "false"
        try:
            yield
        finally:
            if old is None:
                os.environ.pop(PICKLE_ENV, None)
            else:
                os.environ[PICKLE_ENV] = old


def load_pytorch_model(local: str, trust_pickled: bool = False):
    """The module of the MLflow PyTorch model in folder ``local``. An exported program is checked
    (:func:`check_exported_archive`) and loaded with pickle deserialization disallowed, so MLflow
    validates its records too; a pickled model or one shipping code raises UnsafeModel before
    anything of it is read, unless ``trust_pickled``. MlflowException when MLflow refuses."""
    import mlflow.pytorch

    reason = unsafe_reason(local)
    if reason is not None and not trust_pickled:
        raise UnsafeModel(reason)
    if reason is None:
        check_exported_archive(exported_archive(local))
    with _pickle_deserialization(allowed=reason is not None):
        return mlflow.pytorch.load_model(local)
