"""The testing guide's example, run as a user would: its files in a project, then pytest.

Every code block of docs/guides/testing.md with a title becomes that file;
the untitled blocks that define tests become one more test module, and the
README's test of the same app one more. pytest
runs in a subprocess from the project's directory, with only the project's
own configuration (the guide's) and plugins, warnings as errors.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
GUIDE = ROOT / "docs" / "guides" / "testing.md"
BLOCK = re.compile(r'^```(\w+)(?: title="([^"]+)")?\n(.*?)^```$', re.MULTILINE | re.DOTALL)
SNIPPET_IMPORTS = (
    "from eventflow.testing import TestApp\nfrom orders_app import app, orders_source\n"
)


def write_project(directory: Path) -> list[str]:
    """The guide's files in `directory`; the names of the test functions it defines."""
    snippets = []
    for language, title, code in BLOCK.findall(GUIDE.read_text()):
        if title:
            (directory / title).write_text(code)
        elif language == "python" and "def test_" in code:
            snippets.append(code)
    (directory / "test_guide_snippets.py").write_text(
        SNIPPET_IMPORTS + "\n\n" + "\n\n".join(snippets)
    )
    readme = {title: code for _l, title, code in BLOCK.findall((ROOT / "README.md").read_text())}
    (directory / "test_readme.py").write_text(
        readme["test_orders.py"].replace("def test_order_flow", "def test_readme_order_flow")
    )
    files = [p.read_text() for p in directory.glob("test_*.py")]
    return re.findall(r"^(?:async )?def (test_\w+)", "\n".join(files), re.MULTILINE)


def test_the_guide_runs_as_written_in_a_user_project(tmp_path: Path) -> None:
    tests = write_project(tmp_path)
    expected = {"test_order_flow", "test_many_orders", "test_order_flow_sync"}
    assert expected | {"test_readme_order_flow"} <= set(tests)
    # the plugins of a project that installed eventflow, pytest and pytest-asyncio,
    # not the others of this environment
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "pytest_asyncio.plugin"]
    done = subprocess.run(
        [sys.executable, *command, "-W", "error"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(tests)} passed" in done.stdout
    assert not list(tmp_path.glob("*.db")), "the tests wrote a store into the project"
