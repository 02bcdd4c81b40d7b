"""nnfabrik works on Python 3.11 + DataJoint 2 through the shims; importing nntransfer stays offline."""
import os
import subprocess
import sys


def test_make_hash_is_nnfabriks_own_loaded_without_torch_or_gitpython():
    # the adapter loads nnfabrik/utility/dj_helpers.py by path (nnfabrik.utility's __init__ imports torch): an
    # nnfabrik upgrade that moves the file or changes the function fails here. Its `from git import ...` gets
    # stand-ins that refuse clearly (GitPython's import is ~50 ms of every CLI command)
    code = (
        "import sys\n"
        "from nntransfer.core.compat import make_hash, nnfabrik_dj_helpers\n"
        "values = [{'a': 1, 'b': [1, 2]}, {'b': [1, 2], 'a': 1}, 'x', [1.5, None, True], {'n': {'m': (1, 2)}}]\n"
        "ours = [make_hash(v) for v in values]\n"
        "assert 'torch' not in sys.modules, 'hashing imported torch'\n"
        "assert 'git' not in sys.modules, 'hashing imported GitPython'\n"
        "try:\n"
        "    nnfabrik_dj_helpers().Repo('.')\n"
        "    raise AssertionError('the stand-in for git.Repo ran')\n"
        "except RuntimeError as e:\n"
        "    assert 'nnfabrik.utility.dj_helpers' in str(e)\n"
        "from nntransfer.core import compat  # noqa: the collections shims nnfabrik needs\n"
        "import nnfabrik.utility.dj_helpers as nnfabrik_helpers\n"
        "assert ours == [nnfabrik_helpers.make_hash(v) for v in values]\n"
        "import git\n"
        "assert nnfabrik_helpers.Repo is git.Repo  # nnfabrik's own module: the real GitPython\n"
        "print(ours[0] == ours[1], len(ours[0]), ours[0] != make_hash({'a': 2}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "32", "True"]


def test_import_and_hashing_never_connect(tmp_path):
    # An unreachable server is configured: importing, building configs and hashing must not notice.
    env = dict(os.environ, DJ_HOST="127.0.0.1", DJ_PORT="1", DJ_USER="nobody", DJ_PASS="x",
               NNTRANSFER_HOME=str(tmp_path))
    code = (
        "import nntransfer, nntransfer.configs, nntransfer.tables\n"
        "from nntransfer import Experiment\n"
        "from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig\n"
        "e = Experiment(ImageDatasetConfig(), ModelConfig(), TrainerConfig(), 1)\n"
        "print(len(e.get_key()))\n"
        "import datajoint.instance\n"
        "assert datajoint.instance._singleton_connection is None\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "7"
    assert not (tmp_path / "pgdata").exists()  # no embedded server was started either
