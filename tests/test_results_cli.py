"""`nntransfer clear`, provenance from a git repository, and TensorBoard logs."""
import os
import subprocess
import textwrap

import pytest

from nntransfer.analysis import results_frame
from nntransfer.cli import main
from nntransfer.core.compat import make_hash
from nntransfer.orchestration.fill import fill_tables
from nntransfer.orchestration.recipes import load_recipe
from nntransfer.orchestration.plan import states

CHAINS = textwrap.dedent("""
    from nntransfer import Description, Experiment, TransferExperiment
    from toy_pipeline import ToyData, ToyModel, ToyTrainer

    def chain(seed, lr):
        return TransferExperiment([Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), seed),
                                   Experiment(ToyData(n=32), ToyModel(), ToyTrainer(max_iter=1, lr=lr), seed)])

    transfer_experiments = {}
    for seed in (1, 2):
        transfer_experiments[Description("chain", seed)] = chain(seed, 0.1)
        transfer_experiments[Description("other chain", seed)] = chain(seed, 0.2)  # shares step 0 with "chain"
        transfer_experiments[Description("single", seed)] = TransferExperiment(
            [Experiment(ToyData(n=48), ToyModel(), ToyTrainer(max_iter=1), seed)])
    experiments = {Description("plain", 1): Experiment(ToyData(n=16), ToyModel(), ToyTrainer(max_iter=1), 1)}
""")


def _states(recipe):
    targets = fill_tables(load_recipe(recipe))
    current = states(targets)
    return {(t.description.name, t.description.seed, t.step): current[t]["state"] for t in targets}


def test_clear_deletes_results_and_the_later_steps_trained_from_them(clean_db, tmp_path, train_log):
    recipe = tmp_path / "chains.py"
    recipe.write_text(CHAINS)
    assert main(["run", str(recipe), "--no-report"]) == 0
    assert set(_states(recipe).values()) == {"done"}
    trained_first = len(train_log.read_text().splitlines())

    # without --yes and without a terminal to ask on, nothing is deleted
    assert main(["clear", str(recipe), "--step", "0", "--name", "chain"]) == 2
    assert set(_states(recipe).values()) == {"done"}

    assert main(["clear", str(recipe), "--step", "0", "--name", "chain", "--yes"]) == 0
    after = _states(recipe)
    for seed in (1, 2):
        # step 0 of "chain" is step 0 of "other chain" too; both step 1s were trained from it
        for name in ("chain", "other chain"):
            assert after[(name, seed, 0)] == after[(name, seed, 1)] == "pending"
        assert after[("single", seed, 0)] == "done"
    assert after[("plain", 1, 0)] == "done"
    assert len(clean_db.TransferredTrainedModel.Provenance()) == len(clean_db.TransferredTrainedModel()) == 2
    assert len(clean_db.TransferredTrainedModel.ModelStorage()) == 2

    assert main(["run", str(recipe), "--no-report"]) == 0  # retrains exactly what was cleared
    assert len(train_log.read_text().splitlines()) - trained_first == 2 * 3
    assert set(_states(recipe).values()) == {"done"}

    assert main(["clear", str(recipe), "--name", "pl*", "--yes"]) == 0
    assert len(clean_db.TrainedModel()) == 0 and len(clean_db.TransferredTrainedModel()) == 8
    assert main(["clear", str(recipe), "--yes"]) == 0
    assert len(clean_db.TransferredTrainedModel()) == 0 and len(clean_db.TransferredTrainedModel.Provenance()) == 0


RECIPE = textwrap.dedent("""
    from nntransfer import Description, Experiment
    from toy_pipeline import ToyData, ToyModel, ToyTrainer

    experiments = {{Description("toy", {seed}): Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), {seed})}}
""")


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_provenance_records_the_recipe_repository_commit_and_dirty_flag(clean_db, tmp_path, capsys):
    import git

    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "test@example.org")
    _git(repo, "config", "user.name", "Test")
    for seed in (1, 2):
        (repo / f"recipe_{seed}.py").write_text(RECIPE.format(seed=seed))
    (repo / "notes.txt").write_text("first\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "recipes")
    head = git.Repo(repo).head.commit.hexsha

    assert main(["run", str(repo / "recipe_1.py"), "--no-report"]) == 0  # a recipe run records its file
    clean = results_frame(repo / "recipe_1.py").iloc[0]
    assert clean["git_commit"] == head and clean["git_dirty"] is not None and not clean["git_dirty"]
    assert clean["git_repository"] == str(repo) and clean["recipe"] == str(repo / "recipe_1.py")
    assert clean["nntransfer_version"] and clean["torch_version"] and clean["numpy_version"]
    assert clean["host"] and clean["device"] == "cpu" and clean["wall_time"] > 0

    (repo / "notes.txt").write_text("changed\n")  # a tracked file changed: the commit alone does not reproduce
    assert main(["run", str(repo / "recipe_2.py"), "--no-report"]) == 0  # a recipe run records its file
    dirty = results_frame(repo / "recipe_2.py").iloc[0]
    assert dirty["git_commit"] == head and bool(dirty["git_dirty"]) is True

    _git(repo, "checkout", "--", "notes.txt")
    (repo / "recipe_3.py").write_text(RECIPE.format(seed=3))  # the recipe itself is not committed
    assert main(["run", str(repo / "recipe_3.py"), "--no-report"]) == 0  # a recipe run records its file
    assert bool(results_frame(repo / "recipe_3.py").iloc[0]["git_dirty"]) is True

    outside = tmp_path / "loose"
    outside.mkdir()
    (outside / "recipe_4.py").write_text(RECIPE.format(seed=4))
    assert main(["run", str(outside / "recipe_4.py"), "--no-report"]) == 0  # a recipe run records its file
    loose = results_frame(outside / "recipe_4.py").iloc[0]
    assert loose["git_commit"] == "" and loose["git_dirty"] is None and loose["git_repository"] == ""


def test_tensorboard_event_files_hold_the_epoch_scalars(clean_db, tmp_path, capsys):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                            reason="pip install 'nntransfer[tensorboard]'")
    from nntransfer.configs import TrainerConfig
    from nntransfer.trainer.tensorboard import runs_root

    assert TrainerConfig(tensorboard=True).get_key() == TrainerConfig().get_key()  # a run field: same key
    recipe = tmp_path / "board.py"
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment
        from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

        experiments = {Description("digits", 1): Experiment(
            ImageDatasetConfig(dataset_cls="digits", examples_per_class=20, batch_size=32), ModelConfig(type="lenet"),
            TrainerConfig(max_iter=3, verbose=False, tensorboard=True, track_iterations=True), 1)}
    """))
    assert main(["run", str(recipe), "--no-report"]) == 0
    (target,) = fill_tables(load_recipe(recipe))
    output = (clean_db.TrainedModel & target.key).fetch1("output")
    directory = runs_root() / "keys" / make_hash(dict(target.key))
    assert any(p.name.startswith("events.out.tfevents") for p in directory.iterdir())

    events = event_accumulator.EventAccumulator(str(directory), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for metric in ("loss", "accuracy"):
        for mode in ("Training", "Validation"):
            assert f"{mode}/img_classification/{metric}" in tags
        for mode in ("Validation", "Test"):  # the final passes, under their own tags
            assert f"final/{mode}/img_classification/{metric}" in tags
    log, epochs = output["tracker"]["log"], output["tracker"]["epochs"]
    accuracy = events.Scalars("Training/img_classification/accuracy")
    assert [e.step for e in accuracy] == epochs["Training"] == [1, 2, 3]
    assert [e.value for e in accuracy] == pytest.approx(log["Training"]["img_classification"]["accuracy"])
    validation = events.Scalars("Validation/img_classification/loss")
    assert [e.step for e in validation] == [1, 2, 3]  # the restored-best evaluation is not a 4th point at epoch 3
    assert [e.value for e in validation] == pytest.approx(log["Validation"]["img_classification"]["loss"])
    assert [e.step for e in events.Scalars("final/Validation/img_classification/loss")] == [3]
    test = events.Scalars("final/Test/img_classification/accuracy")
    assert [e.value for e in test] == pytest.approx([output["tracker"]["final"]["Test"]["img_classification"]["accuracy"]])
    batches = events.Scalars("Training/img_classification/batch_loss")
    assert len(batches) == len(output["tracker"]["iterations"]["Training"]["img_classification"]) > 3

    capsys.readouterr()
    assert main(["results", str(recipe), "--tensorboard"]) == 0
    printed = capsys.readouterr().out
    view = runs_root() / "board"
    assert f"tensorboard --logdir {view}" in printed
    link = view / "digits" / "seed1-step0"
    assert link.is_symlink() and link.resolve() == directory.resolve()
    assert os.listdir(link) == os.listdir(directory)


def test_reading_commands_import_neither_torch_nor_torchvision_nor_gitpython(clean_db):
    """status, results, errors and clear (nothing trained: nothing to ask about) read the database and the recipe
    only (issue 15: a fast CLI; GitPython alone costs 50 ms of each command); a fresh interpreter, since this one
    has torch already. ``-X importtime`` in benchmarks/cli_status.py shows the rest of the cost."""
    import sys

    recipe = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "digits_transfer.py")
    fill_tables(load_recipe(recipe))  # rows to read: the commands then show them without building anything
    script = textwrap.dedent(f"""
        import sys
        from nntransfer.cli import main
        for argv in (["status", {recipe!r}], ["results", {recipe!r}], ["errors", {recipe!r}],
                     ["clear", {recipe!r}]):
            code = main(argv)
            assert code in (0, 1), (argv, code)
            loaded = sorted(m for m in ("torch", "torchvision", "git") if m in sys.modules)
            assert not loaded, (argv, loaded)
        print("no torch")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0 and "no torch" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
