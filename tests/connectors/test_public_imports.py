"""The project's connectors are written against the public contract only, as a third
party's would be: no `eventflow._private` import anywhere under connectors/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def private_imports(path: Path) -> list[str]:
    """`file:line module` for each import of a private eventflow module or name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "eventflow" and any(part.startswith("_") for part in parts[1:]):
                found.append(f"{path.name}:{node.lineno} {module}")
                break
    return found


def test_connectors_import_no_private_eventflow_name() -> None:
    files = sorted((ROOT / "connectors").rglob("*.py"))
    assert len(files) >= 6
    assert [found for path in files for found in private_imports(path)] == []


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    """The check itself: each form a private import can take is caught."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import eventflow._extras\n"
        "from eventflow._retries import Backoff\n"
        "from eventflow import _metrics\n"
        "def f():\n"
        "    from eventflow.runtime import Source\n"  # public: not reported
        "    from eventflow._runtime._source import Event\n"
    )
    lines = [found.split(" ")[0] for found in private_imports(sample)]
    assert lines == ["sample.py:1", "sample.py:2", "sample.py:3", "sample.py:6"]
