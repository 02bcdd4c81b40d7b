"""Notebooks: one progress bar per run, HTML views of configs and experiments, the quickstart notebook."""
import json
from pathlib import Path

import pytest
import tqdm.std

from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.core import bars as progress
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebooks" / "quickstart.ipynb"


def _digits_trainer(**options):
    from nntransfer.dataset import image_dataset_loader
    from nntransfer.trainer import Trainer

    data = ImageDatasetConfig(dataset_cls="digits", examples_per_class=10, batch_size=8)
    loaders = image_dataset_loader(seed=1, **{k: v for k, v in data.to_dict().items() if k != "comment"})
    model_cfg = ModelConfig(type="lenet")
    model = model_cfg.resolve_fn()(loaders, seed=1, **{k: v for k, v in model_cfg.to_dict().items() if k != "comment"})
    return Trainer(model, loaders, 1, TrainerConfig(**options))


class _Counting(tqdm.std.tqdm):
    created = 0

    def __init__(self, *args, **kwargs):
        _Counting.created += 1
        super().__init__(*args, **kwargs)


def test_a_training_run_opens_one_progress_bar(monkeypatch, capsys):
    monkeypatch.setattr(progress, "_base", lambda: _Counting)
    _Counting.created = 0
    trainer = _digits_trainer(max_iter=3, verbose=True, early_stopping=False)
    trainer.train()
    # 3 training + 4 validation + 1 test passes ran inside the run's bar, which shows their progress
    assert _Counting.created == 1
    assert progress._runs == []  # closed at the end
    assert "epochs" in capsys.readouterr().err


def test_in_a_notebook_epoch_lines_update_the_bar_instead_of_adding_lines(monkeypatch, capsys):
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(progress, "use_widgets", lambda: False)  # a notebook without ipywidgets: text
    bar = progress.run_bar(total=2, desc="epochs")
    assert bar.leave is True  # a finished run keeps its one bar
    for _ in progress.pass_bar(range(5), total=5, desc="Training 1"):
        pass
    progress.write("epoch 1 | Validation/task: accuracy 0.9")
    assert "accuracy 0.9" in bar.postfix
    bar.update(1)
    bar.close()
    out = capsys.readouterr()
    assert "epoch 1 | Validation" not in out.out  # not printed as a line of its own
    assert progress._runs == []


def test_configs_and_experiments_show_as_html_tables():
    trainer = TrainerConfig(max_iter=3, freeze=["core.*"])
    page = trainer._repr_html_()
    assert page.startswith("<table") and "<b>3</b>" in page and "max_iter" in page
    assert trainer.get_key()["trainer_hash"] in page and ">run<" in page  # run fields are marked
    data, model = ImageDatasetConfig(filter_classes=[5, 6]), ModelConfig(type="lenet")
    chain = TransferExperiment([Experiment(data, model, TrainerConfig(), 1), Experiment(data, model, trainer, 1)])
    page = chain._repr_html_()
    assert "TransferExperiment (2 steps)" in page and page.count("<tr>") == 3
    assert "freeze=[&#x27;core.*&#x27;]" in page and "filter_classes=[5, 6]" in page
    assert "Experiment" in Experiment(data, model, trainer, 2)._repr_html_()
    desc = Description("x", 1)  # descriptions stay plain named tuples: shown as the tuple they are
    assert desc == ("x", 1) and desc._fields == ("name", "seed") and not hasattr(desc, "_repr_html_")


@pytest.mark.slow  # a Jupyter kernel trains the notebook's demo recipe
def test_quickstart_notebook_runs_end_to_end_and_stays_small(clean_db):
    nbformat = pytest.importorskip("nbformat", reason="pip install 'nntransfer[test]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install 'nntransfer[test]'")
    stored = json.loads(NOTEBOOK.read_text())
    assert NOTEBOOK.stat().st_size < 20_000
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in stored["cells"] if cell["cell_type"] == "code")  # saved without outputs

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3", coalesce_streams=True,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # sweep, comparison, learning curves, chain
    run_cell = next(c for c in notebook.cells if c.cell_type == "code" and "run(" in c.source)
    text = "".join(o.get("text", "") for o in run_cell.outputs)
    from nntransfer.orchestration.recipes import load_recipe

    demo = load_recipe(NOTEBOOK.parent.parent.parent / "examples" / "digits_transfer.py")
    steps = sum(len(chain) for chain in demo.values())  # every experiment's steps, shared pretrainings included
    assert f"{steps} of {steps} steps done" in text
    assert len(text) < 30_000  # one bar per run, updated in place, not a line per update
    report = next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith("write_report"))
    (result,) = [o for o in report.outputs if o.output_type == "execute_result"]
    assert "index.html" in result["data"]["text/plain"]
