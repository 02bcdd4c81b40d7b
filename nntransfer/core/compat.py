"""Shims that let nnfabrik 0.2.1 and neuralpredictors 0.3.0 load on Python 3.11 and DataJoint 2, in one place.

* Both import ``Iterable``/``Mapping`` from ``collections`` (removed in Python 3.10): the aliases are added at
  import of this module (idempotent, names only added). Import it before nnfabrik or neuralpredictors
  (nntransfer's neural modules do so right before their lazy neuralpredictors imports);
  ``neuralpredictors.data.transforms`` also needs scikit-image installed.
* nnfabrik imports ``datajoint.schemas.Schema`` (``_Schema`` in DataJoint 2): patched before it loads.
* :func:`make_hash` is nnfabrik's own ``make_hash``, loaded from ``nnfabrik/utility/dj_helpers.py`` without running
  ``nnfabrik.utility``'s ``__init__``, which imports torch (``nn_helpers``): hashing a config (``status``,
  building keys in a notebook) must not cost seconds of torch import. ``tests/test_compat.py`` fails loudly when
  an nnfabrik upgrade moves that file or changes the function.
"""
from __future__ import annotations

import collections
import collections.abc
import importlib.util
import sys
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
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_DJ_HELPERS]
        raise
    return module


_make_hash = None


def make_hash(obj) -> str:
    """nnfabrik's ``make_hash``: a 32-character hash of a (nested) object, dict keys in any order."""
    global _make_hash
    if _make_hash is None:
        _make_hash = nnfabrik_dj_helpers().make_hash
    return _make_hash(obj)


__all__ = ["make_hash", "nnfabrik_dj_helpers"]
