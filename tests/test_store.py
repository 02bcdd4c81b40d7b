"""The store: checkpoint files live and die with their rows, gc deletes only unreferenced files, unreadable
checkpoints are skipped, the table store is safe with a background writer, files are private."""
import logging
import stat
import textwrap
import threading
from pathlib import Path

import datajoint as dj
import pytest
import torch

from nntransfer import Description, Experiment, run
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig


def store_files():
    from nntransfer.store import db

    root = Path(db.store_location())
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def checkpoint_files():
    return [f for f in store_files() if "/checkpoint/" in f]


def state(value: float) -> dict:
    return {"model": {"w": torch.full((50, 50), value)}, "epoch": int(value)}


@pytest.mark.both_backends
def test_pruned_and_cleared_checkpoints_take_their_files_along(clean_db):
    from nntransfer.store.trained_model import Checkpoint, TableCheckpointStore

    store = TableCheckpointStore("TrainedModel", {"some": "key"})
    for epoch in range(1, 5):
        store.save(epoch, score=-epoch, state=state(epoch))
    assert len(checkpoint_files()) == 4
    store.save(4, score=-4, state=state(40))  # the same epoch again replaces row and file
    assert len(checkpoint_files()) == 4
    store.prune(keep_last_n=1, keep_best_n=1)  # the newest (4) and the best (1)
    assert sorted(Checkpoint().to_arrays("epoch")) == [1, 4]
    assert len(checkpoint_files()) == 2
    assert torch.equal(store.latest()["model"]["w"], torch.full((50, 50), 40.0))
    store.clear()
    assert len(Checkpoint()) == 0 and checkpoint_files() == []
    from nntransfer.store import db

    assert not list((Path(db.store_location())).rglob("key_hash=*"))  # no empty folders left behind


def not_private(root: Path, paths) -> list:
    """The paths (and their folders up to ``root``) whose mode is not 0700 (folders) or 0600 (files)."""
    found = set()
    for path in paths:
        for item in [path, *path.parents]:
            if item == root.parent:
                break
            mode = stat.S_IMODE(item.stat().st_mode)
            if mode != (0o700 if item.is_dir() else 0o600):
                found.add((str(item.relative_to(root)), oct(mode)))
    return sorted(found)


def test_store_files_and_folders_are_private(clean_db):
    """Checkpoints and model states, with every folder above them (this test writes them all: the store may hold
    folders of earlier tests)."""
    from nntransfer.store import db
    from nntransfer.store.trained_model import TableCheckpointStore
    from toy_pipeline import ToyData, ToyModel, ToyTrainer

    before = set(Path(db.store_location()).rglob("*"))
    TableCheckpointStore("TrainedModel", {"private": 1}).save(1, 0.0, state(1))
    run({Description("private", 1): Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), 1)}, quiet=True)
    root = Path(db.store_location())
    assert stat.S_IMODE(db.home().stat().st_mode) == 0o700
    written = [path for path in root.rglob("*") if path.is_file() and path not in before]
    assert any("/checkpoint/" in str(path) for path in written)
    assert any("model" in str(path.relative_to(root)) for path in written)  # the model state
    assert not_private(root, written) == []


def test_transfer_data_files_and_folders_are_private(clean_db):
    from nntransfer import TransferExperiment
    from nntransfer.store import db
    from toy_pipeline import ToyData, ToyModel, ToyTrainer

    before = set(Path(db.store_location()).rglob("*"))
    tex = TransferExperiment([Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1, data_transfer=True), 1),
                              Experiment(ToyData(), ToyModel(), ToyTrainer(max_iter=1), 1)])
    run({Description("private transfer", 1): tex}, quiet=True)
    assert len(clean_db.TransferData()) == 1
    root = Path(db.store_location())
    written = [path for path in root.rglob("*") if path.is_file() and path not in before]
    assert any("_hash" in str(path) for path in written)
    assert not_private(root, written) == []


@pytest.mark.both_backends
def test_unreadable_checkpoints_are_skipped_with_a_warning(clean_db, caplog):
    from nntransfer.store import db
    from nntransfer.store.trained_model import TableCheckpointStore

    store = TableCheckpointStore("TrainedModel", {"corrupt": 1})
    store.save(1, 0.0, state(1))
    store.save(2, 0.0, state(2))
    root = Path(db.store_location())
    newest = next(root / f for f in checkpoint_files() if "epoch=2" in f)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit inside a tensor: torch.load alone would not notice
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert store.latest()["epoch"] == 1  # the next older one
    assert "skipping the checkpoint of epoch 2" in caplog.text and "checksum" in caplog.text
    older = next(root / f for f in checkpoint_files() if "epoch=1" in f)
    older.write_bytes(older.read_bytes()[:100])  # truncated
    assert store.latest() is None  # nothing readable: a fresh start


def test_clear_checkpoints_command_drops_a_recipes_checkpoints(clean_db, tmp_path, cli):
    from nntransfer.store.trained_model import Checkpoint, TableCheckpointStore
    from toy_pipeline import ToyData, ToyModel, ToyTrainer

    recipe = tmp_path / "r.py"
    recipe.write_text(textwrap.dedent("""
        from nntransfer import Description, Experiment
        from toy_pipeline import ToyData, ToyModel, ToyTrainer
        experiments = {Description("x", 3): Experiment(ToyData(), ToyModel(), ToyTrainer(), 3)}
    """))
    key = Experiment(ToyData(), ToyModel(), ToyTrainer(), 3).get_key()
    TableCheckpointStore(clean_db.TrainedModel.table_name, key).save(1, 0.0, state(1))  # as make_compute does
    other = TableCheckpointStore("TrainedModel", {"unrelated": 1})
    other.save(1, 0.0, state(1))
    out = cli("clear-checkpoints", recipe)
    assert out.returncode == 0, out.stderr
    assert "dropped 1 checkpoint" in out.stdout
    assert len(Checkpoint()) == 1 and len(checkpoint_files()) == 1  # only the unrelated one is left


@pytest.mark.both_backends
def test_background_checkpoint_writes_beside_the_keep_alive_callback(clean_db):
    """The trainer saves from a background thread while its main thread calls cb; nothing may interleave."""
    from nntransfer import tables
    from nntransfer.store.jobs import keep_alive
    from nntransfer.store.trained_model import Checkpoint, TableCheckpointStore

    store = TableCheckpointStore("TrainedModel", {"threads": 1})
    cb = keep_alive(tables.TrainedModel(), {"model_fn": "x"}, every=0.0)
    errors = []

    def writer():
        try:
            for epoch in range(1, 16):
                store.save(epoch, float(epoch), state(epoch))
                store.prune(keep_last_n=2, keep_best_n=0)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=writer)
    thread.start()
    while thread.is_alive():
        try:
            cb()
            store.latest()
        except Exception as err:  # noqa: BLE001
            errors.append(err)
            break
    thread.join()
    assert errors == []
    assert sorted(Checkpoint().to_arrays("epoch")) == [14, 15] and len(checkpoint_files()) == 2


def digits(seed, **trainer):
    options = dict(max_iter=2, verbose=False)
    options.update(trainer)
    return Experiment(ImageDatasetConfig(dataset_cls="digits", batch_size=128), ModelConfig(type="mlp"),
                      TrainerConfig(**options), seed)


@pytest.mark.both_backends
def test_gc_deletes_only_unreferenced_files_and_datajoints_gc_keeps_models(clean_db):
    from nntransfer.store import db
    from nntransfer.store import gc, schema
    from nntransfer.store.codec import write_state

    run({Description("keep", 1): digits(1), Description("drop", 2): digits(2)}, quiet=True)
    assert checkpoint_files() == []  # finished jobs leave no checkpoint files
    TM = clean_db.TrainedModel
    (TM & {"seed": 2}).delete(prompt=False)  # DataJoint's cascade leaves the model file behind
    write_state(state(9), "_schema/nntransfer_test/checkpoint/crashed/state_x.pt", db.STORE)  # no row ever
    referenced_before = set(_referenced())
    assert len(store_files()) == len(referenced_before) + 2
    recent = gc.collect(dry_run=False)  # default min_age: files this young may be about to get their row
    assert recent["deleted"] == 0 and recent["recent_unreferenced_kept"] == 2
    dry = gc.collect(dry_run=True, min_age=0)
    assert dry["unreferenced"] == 2 and len(store_files()) == len(referenced_before) + 2
    done = gc.collect(dry_run=False, min_age=0)
    assert done["deleted"] == 2
    assert set(store_files()) == referenced_before  # every referenced file exists, nothing else is left
    # DataJoint's own garbage collector knows the codec and keeps the model states
    dj.gc.GarbageCollector(schema.schema, store=db.STORE).collect(dry_run=False)
    assert set(store_files()) == referenced_before
    model = TM().load_model({"seed": 1}, include_dataloader=False)
    assert isinstance(model, torch.nn.Module)


def _referenced():
    from nntransfer import tables
    from nntransfer.store.codec import referenced_paths

    out = []
    for table in (tables.TrainedModel.ModelStorage, tables.TransferredTrainedModel.ModelStorage, tables.Checkpoint):
        attribute = "state" if table is tables.Checkpoint else "model_state"
        out += [p for p, _ in referenced_paths(table(), attribute)]
    out += [p for p, _ in referenced_paths(tables.TransferredTrainedModel.TransferData(), "transfer_data")]
    return out


def test_db_status_shows_the_store_size(clean_db, cli):
    import json

    from nntransfer.store.trained_model import TableCheckpointStore

    TableCheckpointStore("TrainedModel", {"size": 1}).save(1, 0.0, state(1))
    info = json.loads(cli("db", "status").stdout)
    assert info["store_files"] >= 1 and info["store_bytes"] >= 50 * 50 * 4


def test_a_state_that_fails_to_write_leaves_no_file(clean_db):
    from nntransfer.store import db
    from nntransfer.store.codec import write_state

    before = store_files()
    with pytest.raises(Exception):
        write_state({"weights": torch.zeros(3), "not picklable": lambda: None},
                    "_schema/nntransfer_test/checkpoint/failed/state_y.pt", db.STORE)
    assert store_files() == before


BIND_AND_COUNT = textwrap.dedent("""
    import json, sys
    from nntransfer.store import bind, db, schema
    conn = db.connection()
    queries = []
    original = type(conn).query
    def counting(self, sql, *args, **kwargs):
        queries.append(" ".join(sql.split()))
        return original(self, sql, *args, **kwargs)
    type(conn).query = counting
    if sys.argv[1] == "drop":  # what an upgrade that adds a table meets: the schema without it
        conn.query("DROP TABLE " + sys.argv[2])
    elif sys.argv[1] == "forget-lineage":  # what an interrupted declare leaves: a table without lineage rows
        conn.query("DELETE FROM " + sys.argv[2] + " WHERE table_name = 'seed'")
    else:
        bound = bind()
        tables = list(schema.table_classes())
        print(json.dumps({"declared": sorted(bound.list_tables()), "expected": sorted(t.table_name for t in tables),
                          "lineage": sorted(name for name in bound.lineage if ".seed." in name),
                          "queries": len(queries), "tables": len(tables),
                          "creates": [q.split("(")[0] for q in queries  # user tables only, not DataJoint's ~lineage
                                      if q.upper().startswith("CREATE TABLE") and "~" not in q.split("(")[0]]}))
""")


@pytest.mark.both_backends
def test_binding_declares_missing_tables_repairs_lineage_and_reads_no_headings(tmp_path):
    """``bind`` on an existing schema skips the per-table heading loads (most of ``nntransfer status``'s database
    time) and still declares a table the schema lacks (a fresh database, a table added by an upgrade) and restores
    a table's missing lineage rows (an interrupted declare)."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, NNTRANSFER_SCHEMA="nntransfer_bindtest")
    script = tmp_path / "bind.py"
    script.write_text(BIND_AND_COUNT)

    def quoted(table):
        quote = "`" if "DJ_BACKEND" in os.environ else '"'  # MariaDB under tests/test_mysql.py
        return f"{quote}nntransfer_bindtest{quote}.{quote}{table}{quote}"

    def run_script(*args):
        done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1]) if args == ("bind",) else None

    try:
        fresh = run_script("bind")
        assert fresh["declared"] == fresh["expected"] and len(fresh["creates"]) == fresh["tables"]
        again = run_script("bind")
        assert again["declared"] == again["expected"] and again["creates"] == []
        # declaring nothing: about one query per table (is it declared?), not the ~8 of reading each heading
        assert again["queries"] < 2 * again["tables"], again
        assert again["lineage"] == ["nntransfer_bindtest.seed.seed"]
        run_script("drop", quoted("worker"))
        upgraded = run_script("bind")
        assert upgraded["declared"] == upgraded["expected"]
        assert len(upgraded["creates"]) == 1 and "worker" in upgraded["creates"][0]
        run_script("forget-lineage", quoted("~lineage"))
        repaired = run_script("bind")
        assert repaired["lineage"] == again["lineage"] and repaired["creates"] == []
    finally:
        from nntransfer.store import db

        db.connection().query("DROP SCHEMA IF EXISTS nntransfer_bindtest CASCADE" if "DJ_BACKEND" not in os.environ
                              else "DROP DATABASE IF EXISTS nntransfer_bindtest")
