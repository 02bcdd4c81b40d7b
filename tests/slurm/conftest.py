"""The throwaway one-node Slurm cluster as a fixture: started once per test module, stopped after it."""
import pytest

from cluster import binaries_or_reason, start_cluster, stop_cluster


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The cluster's environment (``SLURM_CONF``, ``PATH``, ``NNTRANSFER_SLURM_DIR``), also set in ``os.environ``
    for the module's tests: submitit and the command line call ``sbatch``/``squeue`` with it."""
    reason = binaries_or_reason()
    if reason:
        pytest.skip(reason)
    # a short path: munged's socket path must stay under 108 bytes
    folder = tmp_path_factory.mktemp("slurm")
    env = start_cluster(folder)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            yield env
    finally:
        stop_cluster(env)
