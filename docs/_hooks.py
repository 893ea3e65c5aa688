"""MkDocs hook: the configuration and CLI references are generated, so they cannot drift.

A page holding `<!-- settings-reference -->` or `<!-- cli-reference -->` gets
the table of `eventflow.Settings` fields or the help of every `eventflow`
command in its place (see eventflow/_docs.py).
"""

from __future__ import annotations

from typing import Any

from eventflow._docs import cli_reference, settings_reference_table


def on_page_markdown(markdown: str, **_kwargs: Any) -> str:
    if "<!-- settings-reference -->" in markdown:
        markdown = markdown.replace("<!-- settings-reference -->", settings_reference_table())
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    return markdown
