"""Training states in the ``nntransfer`` store: the ``<torchstate@nntransfer>`` codec and its files.

A state (a model's ``state_dict`` or a checkpoint's full training state) is written once, straight from
``torch.save`` to its file in the store, and the row holds ``{path, store, size}``. The codec is a
DataJoint ``SchemaCodec``: files live at schema-addressed paths
(``_schema/<schema>/<table>/<key>/<field>_<token>.pt``) that DataJoint's own garbage collector knows,
and :mod:`nntransfer.store.gc` deletes only files no row references.

Reading checks the size and the CRC-32 that ``torch.save`` records for every part of its archive, then
loads with ``weights_only=True`` (stored bytes never execute
code). A file that fails these checks raises :class:`UnreadableState`.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import io
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import datajoint as dj
from datajoint.builtin_codecs.schema import SchemaCodec

from . import internals

logger = logging.getLogger(__name__)


class UnreadableState(dj.errors.DataJointError):
    """A stored state is missing, truncated or corrupt."""


class StoreFull(OSError):
    """The store's file system is full (or the user's quota is used up): a state could not be written."""


#: errors of a write that more free space would have avoided
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _store_full(err: BaseException, path: str, store_name: str | None) -> StoreFull | None:
    """A :class:`StoreFull` saying where, if ``err`` (or what it was raised while handling) is a full disk."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _FULL:
            from . import db

            return StoreFull(err.errno, f"no space left on device: could not write {path} to the store "
                                        f"'{store_name}' at {db.store_location()} ({os.strerror(err.errno)}). Free "
                                        "space there (`nntransfer db gc` deletes files no row references); the job "
                                        "resumes from its last checkpoint when it runs again")
        err = err.__cause__ or err.__context__
    return None


@dataclass(frozen=True)
class StoredState:
    """A state already written to the store (``TableCheckpointStore`` writes before it inserts the row)."""

    metadata: dict


class _CountingWriter:
    """A write-through file wrapper that counts the bytes ``torch.save`` writes (remote stores)."""

    def __init__(self, file):
        self.file, self.size = file, 0

    def write(self, data) -> int:
        self.size += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


#: while set (a list), every state the codec writes on insert is appended as ``(path, store)``: a transaction that
#: rolls back deletes them (see ``trained_model.TrainedModelBase.make_insert``)
written_on_insert: contextvars.ContextVar[list | None] = contextvars.ContextVar("nntransfer_written_on_insert",
                                                                                default=None)


def _private() -> bool:
    """Files of the default store are private to the user (0600); a configured store follows the umask."""
    from . import db

    return db.store_is_default()


@contextlib.contextmanager
def private_writes():
    """Files and folders DataJoint's own codecs (``<blob@nntransfer>``, hash-addressed under ``_hash/``) write
    meanwhile get 0600 / 0700 in the default store, like the states this codec writes. The umask is the only way
    to reach those writes. It is per process: a file another thread writes meanwhile (a background checkpoint)
    is only made more private, and only in the default store, which is private anyway."""
    if not _private():
        yield
        return
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _backend(store_name: str | None, config=None):
    from datajoint.hash_registry import get_store_backend

    return get_store_backend(store_name, config=config)


def write_state(state, path: str, store_name: str, config=None) -> dict:
    """``torch.save`` ``state`` to ``path`` in the store; returns the row's metadata.

    Integrity costs nothing here: ``torch.save`` writes a zip archive with a CRC-32 per record, which
    :func:`read_state` verifies, and the row keeps the file's size.
    """
    import torch

    backend = _backend(store_name, config)
    if backend.protocol == "file":
        full = Path(internals.backend_path(backend, path))
        mode = 0o600 if _private() else 0o666
        try:
            _make_parents(full, Path(internals.backend_path(backend, "")))
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # a new name, with its mode
        except OSError as err:
            raise _store_full(err, path, store_name) or err
        try:
            # through a Python file: a failed write then raises the OSError that says why (torch's own file
            # writer reports a full disk as "unexpected pos")
            with os.fdopen(fd, "wb") as file:
                torch.save(state, file)
        except BaseException as err:
            full.unlink(missing_ok=True)  # no half-written file left behind (a full disk, an interrupt)
            raise _store_full(err, path, store_name) or err
        size = full.stat().st_size
    else:
        try:
            with backend.open(path, "wb") as file:
                writer = _CountingWriter(file)
                torch.save(state, writer)
        except BaseException as err:
            with contextlib.suppress(Exception):
                backend.remove(path)
            raise _store_full(err, path, store_name) or err
        size = writer.size
    return {"path": path, "store": store_name, "size": size, "format": "torch-zip"}


def _make_parents(full: Path, root: Path) -> None:
    mode = 0o700 if _private() else 0o777
    missing = []
    parent = full.parent
    while not parent.exists() and parent != root:
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            pass


def read_state(metadata: dict, config=None):
    """Load a state from its metadata, checking size and checksum first."""
    import torch

    path = metadata.get("path", "?")
    if "hash" in metadata:  # written by nntransfer 0.1 (hash-addressed, before this codec)
        from datajoint.hash_registry import get_hash

        data = get_hash(metadata, config=config)
    else:
        try:
            data = _backend(metadata.get("store"), config).get_buffer(path)
        except (dj.errors.MissingExternalFile, FileNotFoundError, OSError) as err:
            raise UnreadableState(f"stored state {path} cannot be read ({err})") from None
        if "size" in metadata and len(data) != metadata["size"]:
            raise UnreadableState(f"stored state {path} has {len(data)} bytes, {metadata['size']} were written")
        _check_archive(data, path)
    try:
        # weights_only: stored bytes must never execute code
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to parse means the file is unusable
        raise UnreadableState(f"stored state {path} cannot be loaded ({type(err).__name__}: {err})") from None


def _check_archive(data: bytes, path: str) -> None:
    """Verify the CRC-32 of every record of a ``torch.save`` archive (torch.load itself does not)."""
    try:
        bad = zipfile.ZipFile(io.BytesIO(data)).testzip()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise UnreadableState(f"stored state {path} is not a readable archive ({err})") from None
    if bad is not None:
        raise UnreadableState(f"stored state {path} does not match its checksum (record {bad} was changed)")


def delete_files(paths: list[tuple[str, str | None]], config=None) -> int:
    """Delete stored files (``(path, store)`` pairs) and the folders they leave empty; returns the count."""
    return len(remove_files(paths, config))


def remove_files(paths: list[tuple[str, str | None]], config=None) -> list[tuple[str, str | None]]:
    """Delete stored files (``(path, store)`` pairs) and the folders they leave empty; returns those deleted (a
    file that cannot be deleted is logged and left for ``nntransfer db gc``)."""
    deleted = []
    for path, store_name in paths:
        backend = _backend(store_name, config)
        try:
            backend.remove(path)
        except Exception as err:  # noqa: BLE001 - a file that cannot be deleted is left for gc
            logger.warning("could not delete %s from the store (%s); `nntransfer db gc` will retry", path, err)
            continue
        deleted.append((path, store_name))
        if backend.protocol == "file":
            _remove_empty_parents(Path(internals.backend_path(backend, path)).parent, Path(internals.backend_path(backend, "")))
    return deleted


def _remove_empty_parents(folder: Path, root: Path) -> None:
    root = root.resolve()
    folder = folder.resolve()
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone / in use by another writer)
            return
        folder = folder.parent


def referenced_paths(table, attribute: str) -> list[tuple[str, str | None]]:
    """``(path, store)`` of every file that rows of ``table`` (a restricted table is fine) reference."""
    import json

    out = []
    for row in table.proj(attribute).cursor(as_dict=True):
        value = row[attribute]
        if isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, dict) and "path" in value:
            out.append((value["path"], value.get("store")))
    return out


class TorchStateCodec(SchemaCodec):
    """``<torchstate@store>``: tensors and plain containers, one ``torch.save`` file per row.

    Store only. Insert a state dict (written on insert) or a :class:`StoredState` (already written);
    fetch returns the loaded state (CPU tensors).
    """

    name = "torchstate"

    def encode(self, value, *, key=None, context=None, store_name=None) -> dict:
        if isinstance(value, StoredState):
            return value.metadata
        schema, table, field, primary_key, config = internals.codec_target(self, key, context)
        path = internals.schema_path(self, schema, table, field, primary_key, ".pt", store_name, config)
        metadata = write_state(value, path, store_name, config)
        written = written_on_insert.get()
        if written is not None:
            written.append((path, store_name))
        return metadata

    def decode(self, stored, *, key=None, context=None):
        import json

        if isinstance(stored, str):
            stored = json.loads(stored)
        return read_state(stored, internals.codec_target(self, key, context)[4])

    def validate(self, value) -> None:
        if not isinstance(value, (dict, StoredState)):
            raise dj.errors.DataJointError(f"<torchstate> stores a dict of tensors, got {type(value).__name__}")


def state_path(table, field: str, primary_key: dict, store_name: str) -> str:
    """The path a new state of ``table.field`` for ``primary_key`` is written to (unique per call)."""
    codec = dj.codecs.get_codec("torchstate")
    return internals.schema_path(codec, table.database, table.table_name, field, primary_key, ".pt", store_name,
                                 internals.connection_config(table.connection))
