"""The documentation cannot rot: it builds strictly, and every Python block in it runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventflow._settings import settings_reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_SNIPPET = re.compile(r'^--8<-- "(.+)"$', re.MULTILINE)


def python_blocks(page: Path) -> list[str]:
    """The page's Python blocks, with `--8<--` includes replaced by the files they name."""
    blocks = _BLOCK.findall(page.read_text())
    return [_SNIPPET.sub(lambda m: (ROOT / m.group(1)).read_text(), block) for block in blocks]


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """Broken links, pages missing from the nav and docstring errors fail the build."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    configuration = (tmp_path / "reference" / "configuration" / "index.html").read_text()
    for _name, env, _default, _doc in settings_reference():
        assert env in configuration
    cli = (tmp_path / "reference" / "cli" / "index.html").read_text()
    assert "eventflow db prune" in cli and "--dry-run" in cli
    api = (tmp_path / "reference" / "api" / "index.html").read_text()
    assert 'id="eventflow.App.subscribe"' in api


@pytest.mark.parametrize(
    "page", [p for p in PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_python_block_runs(
    page: Path, tmp_path: Path, default_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's blocks run in order in one namespace, as a reader would paste them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVENTFLOW_METRICS_PORT", "0")
    namespace: dict[str, Any] = {"__name__": f"docs.{page.stem}"}
    for number, block in enumerate(python_blocks(page), 1):
        code = compile(block, f"{page.relative_to(ROOT)} (block {number})", "exec")
        exec(code, namespace)


def test_every_environment_variable_is_documented() -> None:
    used = set()
    for path in [
        *ROOT.joinpath("eventflow").rglob("*.py"),
        *ROOT.joinpath("connectors").rglob("*.py"),
    ]:
        used |= set(re.findall(r"EVENTFLOW_[A-Z_]+", path.read_text()))
    documented = (DOCS / "reference" / "configuration.md").read_text()
    documented += " ".join(env for _n, env, _d, _doc in settings_reference())
    assert sorted(v for v in used if v not in documented) == []


def test_the_readme_stays_short_and_keeps_its_two_commands() -> None:
    """A newcomer's screen, then the harness, guarantees and figures in short; the rest: docs."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 100
    commands = re.findall(r"^(scripts/\w+)", readme, re.MULTILINE)
    assert commands == ["scripts/demo", "scripts/test"]
    assert "pip install" in readme and "docs/getting-started.md" in readme
