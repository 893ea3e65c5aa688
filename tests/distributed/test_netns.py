"""The namespaces of the partition tests: hosts reach each other, a cut drops packets (a
connection times out, it is not refused), a heal restores them, nothing is left behind and
nothing appears in the machine's own namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.distributed._netns import Host, Network

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
    reason="needs root, ip and nft (scripts/install) for network namespaces",
)

LISTEN = (
    "import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 7000)); s.listen();"
    " time.sleep(60)"
)  # inside its namespace, where 0.0.0.0 is its loopback and its one veth


def connects(source: Host, target: Host) -> str:
    """`ok`, or how connecting from `source` to `target`:7000 within 1 s failed."""
    code = (
        "import socket\n"
        f"try: socket.create_connection(('{target.address}', 7000), 1); print('ok')\n"
        "except Exception as e: print(type(e).__name__)"
    )
    return source.run(sys.executable, "-c", code).strip()


def test_a_cut_drops_packets_both_ways_and_heals() -> None:
    net = Network()
    net.create()
    server = None
    try:
        a, b = net.add("a", 21), net.add("b", 22)
        server = subprocess.Popen([*b.prefix, sys.executable, "-c", LISTEN])
        deadline = time.monotonic() + 20
        while connects(a, b) != "ok":
            assert time.monotonic() < deadline, "the listener never came up"
            time.sleep(0.1)
        a.cut(b)
        assert connects(a, b) == "TimeoutError"  # dropped, not refused: no RST came back
        a.heal()
        assert connects(a, b) == "ok"
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        net.remove()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert net.token not in left
    machine = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    assert "10.231." not in machine
