"""Shims that let nnfabrik 0.2.1 and neuralpredictors 0.3.0 load on Python 3.11 and DataJoint 2, in one place.

* Both import ``Iterable``/``Mapping`` from ``collections`` (removed in Python 3.10): the aliases are added at
  import of this module (idempotent, names only added). Import it before nnfabrik or neuralpredictors
  (nntransfer's neural modules do so right before their lazy neuralpredictors imports);
  ``neuralpredictors.data.transforms`` also needs scikit-image installed.
* nnfabrik imports ``datajoint.schemas.Schema`` (``_Schema`` in DataJoint 2): patched before it loads.
* :func:`make_hash` is nnfabrik's own ``make_hash``, loaded from ``nnfabrik/utility/dj_helpers.py`` without running
  ``nnfabrik.utility``'s ``__init__``, which imports torch (``nn_helpers``): hashing a config (``status``,
  building keys in a notebook) must not cost seconds of torch import. ``tests/test_compat.py`` fails loudly when
  an nnfabrik upgrade moves that file or changes the function. That private copy is for ``make_hash`` only: its
  ``from git import Repo, cmd`` (for nnfabrik's commit checks, which nntransfer never calls through it) gets
  stand-ins unless GitPython is already imported, because importing GitPython costs ~50 ms of every CLI command.
  ``nnfabrik.utility.dj_helpers`` itself, imported the usual way, is untouched and uses the real GitPython.
"""
from __future__ import annotations

import collections
import collections.abc
import contextlib
import importlib.util
import sys
import types
from pathlib import Path

for _name in ("Iterable", "Mapping", "MutableMapping", "Sequence", "Callable"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

# a private module name: registering the real one would make a later ``import nnfabrik.utility`` skip its package
_DJ_HELPERS = "nntransfer.core._nnfabrik_dj_helpers"


def _patch_datajoint_schema() -> None:
    import datajoint.schemas as schemas

    if not hasattr(schemas, "Schema"):
        schemas.Schema = schemas._Schema


def nnfabrik_dj_helpers():
    """nnfabrik's ``utility.dj_helpers`` module, loaded on its own (see the module docstring)."""
    if _DJ_HELPERS in sys.modules:
        return sys.modules[_DJ_HELPERS]
    _patch_datajoint_schema()
    package = importlib.util.find_spec("nnfabrik")
    if package is None or not package.submodule_search_locations:
        raise ImportError("nnfabrik is not installed: pip install nnfabrik==0.2.1")
    path = Path(package.submodule_search_locations[0]) / "utility" / "dj_helpers.py"
    spec = importlib.util.spec_from_file_location(_DJ_HELPERS, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_DJ_HELPERS] = module
    try:
        with _git_stand_in():
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_DJ_HELPERS]
        raise
    return module


class _NotGit:
    """What the private copy of dj_helpers gets for GitPython's ``Repo`` and ``cmd`` (see the module docstring)."""

    def __init__(self, name: str):
        self._name = name

    def _message(self) -> str:
        return (f"git.{self._name} is not loaded in nntransfer's copy of nnfabrik's dj_helpers (it is for make_hash "
                "only): import nnfabrik.utility.dj_helpers for nnfabrik's git functions")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(self._message())

    def __getattr__(self, attribute):
        raise AttributeError(self._message())


@contextlib.contextmanager
def _git_stand_in():
    if "git" in sys.modules:  # already paid for: use the real one
        yield
        return
    stand_in = types.ModuleType("git")
    stand_in.Repo, stand_in.cmd = _NotGit("Repo"), _NotGit("cmd")
    sys.modules["git"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("git") is stand_in:
            del sys.modules["git"]


_make_hash = None


def make_hash(obj) -> str:
    """nnfabrik's ``make_hash``: a 32-character hash of a (nested) object, dict keys in any order."""
    global _make_hash
    if _make_hash is None:
        _make_hash = nnfabrik_dj_helpers().make_hash
    return _make_hash(obj)


__all__ = ["make_hash", "nnfabrik_dj_helpers"]
