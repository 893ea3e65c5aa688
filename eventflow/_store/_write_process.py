"""The writer process: `python -m eventflow._store._write_process FD`.

Reads the database URL, then batches, from the socket FD (see
eventflow/_store/_committer.py); writes each in one transaction and answers
None or `(transient, message)`. Exits when the socket closes.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

from ._batch import Batch
from ._committer import LocalCommitter, error_reply, receive, send


async def serve(sock: socket.socket) -> None:
    reader = sock.makefile("rb")
    try:
        database_url = receive(reader)
    except EOFError:
        return
    try:
        committer: LocalCommitter | None = LocalCommitter(database_url)
        startup_error: BaseException | None = None
    except Exception as error:  # answered to every batch, so the worker logs it and retries
        committer, startup_error = None, error
    while True:
        try:
            records = receive(reader)
        except EOFError:
            break
        reply: object = None
        if committer is None:
            assert startup_error is not None
            reply = (True, f"cannot connect the writer process: {startup_error}")
        else:
            try:
                await committer.commit(Batch.of_records(records))
            except Exception as error:
                reply = error_reply(error)
        send(sock, reply)
    if committer is not None:
        await committer.close()


def main() -> None:
    # The worker decides when writing stops: a Ctrl-C or SIGTERM sent to its
    # process group must not end the child before the last batch is written.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with socket.socket(fileno=int(sys.argv[1])) as sock:
        asyncio.run(serve(sock))


if __name__ == "__main__":
    main()
