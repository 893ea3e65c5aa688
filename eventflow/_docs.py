"""The generated parts of the documentation: the settings table and the CLI help."""

from __future__ import annotations

import click

from ._settings import settings_reference


def settings_reference_table() -> str:
    """A Markdown table of every `Settings` field: its variable, default and meaning."""
    lines = [
        "| Setting | Environment variable | Default | What it does |",
        "| --- | --- | --- | --- |",
    ]
    for name, env, default, doc in settings_reference():
        lines.append(f"| `{name}` | `{env}` | `{default}` | {doc} |")
    return "\n".join(lines)


def cli_reference() -> str:
    """Every `eventflow` command's `--help`, as Markdown sections."""
    from ._cli import main

    sections: list[str] = []

    def walk(command: click.Command, parent: click.Context | None, path: str) -> None:
        ctx = click.Context(command, info_name=path.split(" ")[-1], parent=parent)
        if not command.hidden:
            sections.append(f"## `{path}`\n\n```text\n{command.get_help(ctx)}\n```\n")
        if isinstance(command, click.Group):
            for name in sorted(command.list_commands(ctx)):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    walk(sub, ctx, f"{path} {name}")

    walk(main, None, "eventflow")
    return "\n".join(sections)
