"""The `eventflow` command line: the top command and its command groups, one module each."""

from ._backfill_command import backfill_command
from ._db_commands import db
from ._flows_commands import flows
from ._lineage_commands import late_command, lineage_command
from ._main import main
from ._run_command import run_command
from ._runs_commands import runs
from ._server_command import server_command

for _command in (
    runs,
    flows,
    db,
    server_command,
    run_command,
    backfill_command,
    lineage_command,
    late_command,
):
    main.add_command(_command)

__all__ = ["main"]
