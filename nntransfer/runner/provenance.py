"""Provenance of a trained step: the versions, code, machine and time that made it.

Every trained entry gets one provenance row (written by the store in the same transaction as the result):

* versions of nntransfer, Python, torch, torchvision, DataJoint and numpy;
* the recipe file and the git commit of the repository it lives in, with a *dirty* flag that is
  set when tracked files have uncommitted changes or the recipe itself is not committed;
* the host, the device the model was trained on (GPU name included) and the training wall time.

The recipe is the file the experiments came from, as whoever trains the step says (a worker passes its recipe);
without one, the script that runs (``__main__``), and in a notebook the working directory.
"""
from __future__ import annotations

import platform
import socket
import sys
from importlib import metadata
from pathlib import Path

from ..core.version import VERSION

#: the columns of a provenance row besides the key, in table order (shown by ``results_frame``)
COLUMNS = ("nntransfer_version", "python_version", "torch_version", "torchvision_version", "datajoint_version",
           "numpy_version", "recipe", "git_repository", "git_commit", "git_dirty", "host", "device", "wall_time")


def recipe_path(recipe: str | Path | None = None) -> Path | None:
    """The recipe file if given, else the running script; None in an interactive session."""
    if recipe is not None:
        return Path(recipe).resolve()
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(main_file).resolve() if main_file else None


def git_state(path: Path) -> dict:
    """``git_repository``, ``git_commit`` and ``git_dirty`` of the repository holding ``path`` (empty outside one)."""
    try:
        import git
    except ImportError:  # gitpython needs the git executable; without it there is nothing to record
        return {}
    start = path if path.is_dir() else path.parent
    try:
        repo = git.Repo(start, search_parent_directories=True)
        commit = repo.head.commit.hexsha
        dirty = repo.is_dirty(untracked_files=False)
    except (git.exc.GitError, ValueError):  # not a repository, one without commits, or one git refuses to read
        return {}                           # ("dubious ownership" of a clone shared on a cluster)
    if not dirty and path.is_file():
        try:
            repo.git.ls_files("--error-unmatch", str(path))
        except git.exc.GitCommandError:
            dirty = True  # the recipe itself is not committed: the commit does not reproduce the result
    return {"git_repository": str(repo.working_tree_dir), "git_commit": commit, "git_dirty": dirty}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def collect(model, wall_time: float, recipe: str | Path | None = None) -> dict:
    """A provenance row (without the key) for a model trained in this process in ``wall_time`` seconds."""
    import numpy
    import torch

    from ..models.devices import device_label, model_device

    recipe = recipe_path(recipe)
    row = {
        "nntransfer_version": VERSION,
        "python_version": platform.python_version(),
        "torch_version": str(torch.__version__),
        "torchvision_version": _version("torchvision"),
        "datajoint_version": _version("datajoint"),
        "numpy_version": numpy.__version__,
        "recipe": str(recipe)[-255:] if recipe is not None else "",
        "host": socket.gethostname()[:255],
        "device": device_label(model_device(model))[:255],
        "wall_time": float(wall_time),
    }
    row.update(git_state(recipe if recipe is not None else Path.cwd()))
    return row
