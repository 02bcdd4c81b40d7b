"""nnfabrik works on Python 3.11 + DataJoint 2 through the shims; importing nntransfer stays offline."""
import os
import subprocess
import sys


def test_nnfabrik_make_hash_and_resolve_fn_work():
    from nntransfer.core.compat import make_hash, resolve_fn

    assert make_hash({"a": 1, "b": [1, 2]}) == make_hash({"b": [1, 2], "a": 1})
    assert make_hash({"a": 1}) != make_hash({"a": 2})
    assert len(make_hash({"a": 1})) == 32
    fn = resolve_fn("nntransfer.core.config.resolve_import_path", default_base="models")
    from nntransfer.core.config import resolve_import_path

    assert fn is resolve_import_path


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
