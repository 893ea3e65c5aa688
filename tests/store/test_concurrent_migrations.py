from __future__ import annotations

import concurrent.futures
from pathlib import Path

from eventflow._store._migrate import current_revision, head_revision, upgrade


def test_workers_starting_together_migrate_one_at_a_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with concurrent.futures.ProcessPoolExecutor(4) as pool:
        assert list(pool.map(upgrade, [url] * 4)) == [None] * 4
    assert current_revision(url) == head_revision()
