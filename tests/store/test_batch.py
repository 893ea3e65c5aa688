"""How batches become statements: few statement shapes, whatever the batch sizes."""

from __future__ import annotations

from eventflow._store._batch import _FLOW_RUNS, _LOGS, _TASK_RUNS


def test_any_batch_size_is_written_with_at_most_ten_statement_shapes() -> None:
    """sqlite3 caches a prepared statement per SQL text (128 per connection, up to 1.6 MB
    each for a 500-row upsert): one shape per batch size grew a worker by 150 MB."""
    for upsert in (_FLOW_RUNS, _TASK_RUNS, _LOGS):
        shapes: set[int] = set()
        for rows in range(0, 5000):
            chunks = list(upsert.chunks(rows))
            assert sum(chunks) == rows
            assert len(chunks) <= rows // upsert.rows_per_statement + 9
            shapes.update(chunks)
        assert len(shapes) <= 10, shapes
        assert upsert.rows_per_statement * len(upsert.columns) <= 30_000
