"""Import shims that let nnfabrik 0.2.1 load on Python 3.11 and DataJoint 2.

nnfabrik imports ``Iterable``/``Mapping`` from ``collections`` (removed in 3.10) and
``datajoint.schemas.Schema`` (renamed ``_Schema`` in DataJoint 2). neuralpredictors 0.3.0 needs the
``collections`` aliases too (``Iterable`` in its cores and data transforms, ``Mapping`` in ``data.utils``);
its ``data.transforms`` (imported by ``FileTreeDataset``) also needs scikit-image installed. Both shims
are idempotent and only add names; import this module before importing nnfabrik or neuralpredictors
(nntransfer's neural modules do so right before their neuralpredictors imports, which stay lazy).
"""
import collections
import collections.abc

for _name in ("Iterable", "Mapping", "MutableMapping", "Sequence", "Callable"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))


def _patch_datajoint_schema() -> None:
    import datajoint.schemas as schemas

    if not hasattr(schemas, "Schema"):
        schemas.Schema = schemas._Schema


_patch_datajoint_schema()

from nnfabrik.builder import resolve_fn  # noqa: E402  (needs the shims above)
from nnfabrik.utility.dj_helpers import make_hash  # noqa: E402

__all__ = ["make_hash", "resolve_fn"]
