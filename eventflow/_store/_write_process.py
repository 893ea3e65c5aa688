"""The writer process: `python -m eventflow._store._write_process FD`.

Reads the database URL from the socket FD (see eventflow/_store/_committer.py)
and answers None once ready (or why it cannot start); then reads batches,
writes each in one transaction and answers None, the set of fencing tokens it
found stale (their records were left out), or `(transient, message)`.
Exits when the socket closes.
"""

from __future__ import annotations

import asyncio
import pickle
import signal
import socket
import sys

from ._batch import Batch
from ._committer import LocalCommitter, error_reply, receive, receive_pickled, send


async def serve(sock: socket.socket) -> None:
    reader = sock.makefile("rb")
    try:
        database_url = receive(reader)
    except EOFError:
        return
    try:
        committer = LocalCommitter(database_url)
    except Exception as error:  # a worker that cannot write must not start
        send(sock, f"{type(error).__name__}: {error}")
        return
    send(sock, None)  # ready
    try:
        while True:
            try:
                payload = receive_pickled(reader)
            except EOFError:
                break
            reply: object = None
            try:
                batch = Batch.of_records(pickle.loads(payload))
            except Exception as error:  # about the data: the worker writes record by record
                reply = (False, f"cannot read the batch: {type(error).__name__}: {error}")
            else:
                try:
                    await committer.commit(batch)
                    reply = batch.fenced or None
                except Exception as error:
                    reply = error_reply(error)
            send(sock, reply)
    finally:
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
