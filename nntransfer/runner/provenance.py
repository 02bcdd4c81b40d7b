"""Provenance of a trained entry: the versions, code, machine and time that made it.

Every trained entry (``TrainedModel`` and ``TransferredTrainedModel``) gets one row in its
``Provenance`` part table, written in the same transaction as the result:

* versions of nntransfer, Python, torch, torchvision, DataJoint and numpy;
* the recipe file and the git commit of the repository it lives in, with a *dirty* flag that is
  set when tracked files have uncommitted changes or the recipe itself is not committed;
* the host, the device the model was trained on (GPU name included) and the training wall time.

The recipe is the file that :func:`nntransfer.orchestration.recipes.load_recipe` read last in this process
(every worker loads it before training); without one, the script that runs (``__main__``), and in
a notebook the working directory.
"""
from __future__ import annotations

import os
import platform
import socket
import sys
from pathlib import Path

DEFINITION = """
# versions, code, machine and time that made this result
-> master
---
nntransfer_version:         varchar(32)
python_version:             varchar(32)
torch_version:              varchar(32)
torchvision_version="":     varchar(32)
datajoint_version:          varchar(32)
numpy_version:              varchar(32)
recipe="":                  varchar(255)   # recipe file (or script) the experiment came from
git_repository="":          varchar(255)   # top folder of the git repository holding the recipe
git_commit="":              varchar(40)    # HEAD commit of that repository ("" outside one)
git_dirty=null:             bool           # uncommitted changes to tracked files, or the recipe not committed
host:                       varchar(255)
device:                     varchar(255)   # e.g. "cpu" or "cuda:1 (NVIDIA H100 80GB HBM3)"
wall_time:                  float64        # seconds of training (make_compute)
"""

#: the columns of a provenance row besides the key, in table order (shown by ``results_frame``)
COLUMNS = ("nntransfer_version", "python_version", "torch_version", "torchvision_version", "datajoint_version",
           "numpy_version", "recipe", "git_repository", "git_commit", "git_dirty", "host", "device", "wall_time")

_recipe: Path | None = None


def note_recipe(path: str | os.PathLike) -> None:
    """Remember the recipe file this process works on (called by ``load_recipe``)."""
    global _recipe
    _recipe = Path(path).resolve()


def recipe_path() -> Path | None:
    """The recipe file, else the running script; None in an interactive session."""
    if _recipe is not None:
        return _recipe
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


def device_name(model) -> str:
    """The device of the model's parameters, with the GPU's name."""
    import torch

    parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def collect(model, wall_time: float) -> dict:
    """A provenance row (without the key) for a model trained in this process in ``wall_time`` seconds."""
    import datajoint
    import numpy
    import torch

    from .. import __version__

    try:
        import torchvision

        torchvision_version = torchvision.__version__
    except ImportError:
        torchvision_version = ""
    recipe = recipe_path()
    start = recipe if recipe is not None else Path.cwd()
    row = {
        "nntransfer_version": __version__,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision_version,
        "datajoint_version": datajoint.__version__,
        "numpy_version": numpy.__version__,
        "recipe": str(recipe)[-255:] if recipe is not None else "",
        "host": socket.gethostname()[:255],
        "device": device_name(model)[:255],
        "wall_time": float(wall_time),
    }
    row.update(git_state(start))
    return row
