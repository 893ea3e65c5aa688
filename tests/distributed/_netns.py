"""Hosts in network namespaces on one bridge, made and removed by a test, and cut apart.

Every namespace, link and address here is the test's own: a bridge namespace
holds the bridge, each host (the broker, PostgreSQL, each worker, the test's
client side) is a namespace with one veth end `eth0` on 10.231.0.0/24, the other
end on the bridge. Nothing is created in the machine's own namespace, and the
machine's interfaces are never touched: the veth pairs are made inside the
bridge namespace and one end moved into the host's.

A cut drops packets inside the host's namespace (nftables, both directions), so
its sockets stay open and no FIN or RST gets out: to its peers the host went
dark, as when a link or a whole machine dies. (No netem: this machine's kernel
has no sch_netem; nftables drops are enough.)

The test process reaches the hosts from a client namespace of its own: `entered`
moves the calling thread there (setns(2)) and back; threads it starts meanwhile
(the event loop's executor) are born there too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests._services import ROOT

SUBNET = "10.231.0"
CLONE_NEWNET = 0x40000000


def _run(*args: str, stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@dataclass
class Host:
    """A namespace with one address on the bridge."""

    name: str
    address: str

    @property
    def short(self) -> str:
        """Its name within the network (`w1`, `kafka`)."""
        return self.name.rsplit("-", 1)[1]

    @property
    def prefix(self) -> list[str]:
        """What runs a command in this host's namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, *command: str, stdin: str | None = None, check: bool = True) -> str:
        return _run(*self.prefix, *command, stdin=stdin, check=check)

    def cut(self, *peers: Host) -> None:
        """Drop every packet between this host and `peers` (replacing an earlier cut)."""
        self.heal()
        addresses = ", ".join(peer.address for peer in peers)
        self.run(
            "nft",
            "-f",
            "-",
            stdin=(
                "table inet eventflow_cut {\n"
                "  chain input { type filter hook input priority -10; policy accept;"
                f" ip saddr {{ {addresses} }} drop; }}\n"
                "  chain output { type filter hook output priority -10; policy accept;"
                f" ip daddr {{ {addresses} }} drop; }}\n"
                "}\n"
            ),
        )

    def heal(self) -> None:
        """Let every packet through again."""
        self.run("nft", "delete", "table", "inet", "eventflow_cut", check=False)

    def kill_all(self) -> None:
        """SIGKILL every process left in this namespace."""
        for pid in _run("ip", "netns", "pids", self.name, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)


_OURS = re.compile(r"^ef(\d+)x[0-9a-f]{4}-\w+$")
"""Names of the namespaces made here: `ef<pid of the test process>x<random>-<host>`."""


def remove_stale_namespaces() -> None:
    """Delete namespaces made here by a test process that no longer exists (one killed
    before it could clean up), with what still runs in them."""
    for line in _run("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        match = _OURS.match(name)
        if match is None or Path(f"/proc/{match.group(1)}").exists():
            continue
        stale = Host(name, "")
        stale.kill_all()
        _run("ip", "netns", "del", name, check=False)


@dataclass
class Network:
    """A bridge namespace and the hosts on it; `remove` deletes them all."""

    token: str = field(default_factory=lambda: f"{os.getpid()}x{uuid.uuid4().hex[:4]}")
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"ef{self.token}-br"

    def create(self) -> None:
        remove_stale_namespaces()
        _run("ip", "netns", "add", self.bridge)
        _run("ip", "-n", self.bridge, "link", "set", "lo", "up")
        _run("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.bridge, "link", "set", "br0", "up")

    def add(self, name: str, last_octet: int) -> Host:
        host = Host(f"ef{self.token}-{name}", f"{SUBNET}.{last_octet}")
        port = f"v{last_octet}"
        _run("ip", "netns", "add", host.name)
        self.hosts[name] = host
        _run("ip", "-n", host.name, "link", "set", "lo", "up")
        _run(
            "ip", "-n", self.bridge, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", host.name,
        )  # fmt: skip
        _run("ip", "-n", self.bridge, "link", "set", port, "master", "br0", "up")
        _run("ip", "-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _run("ip", "-n", host.name, "link", "set", "eth0", "up")
        return host

    def remove(self) -> None:
        for host in self.hosts.values():
            host.kill_all()
            _run("ip", "netns", "del", host.name, check=False)
        self.hosts.clear()
        _run("ip", "netns", "del", self.bridge, check=False)


@contextlib.contextmanager
def entered(host: Host) -> Iterator[None]:
    """Run the calling thread in `host`'s namespace until the block ends."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{host.name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(target)
        os.close(original)


def _script(host: Host, env: dict[str, str], *args: str) -> None:
    _run(*host.prefix, "env", *(f"{k}={v}" for k, v in env.items()), *args)


@dataclass
class NetKafka:
    """A broker (scripts/kafka.sh) listening on its host's address."""

    host: Host
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ef-kafka-")))
    port: int = 9092

    @property
    def bootstrap(self) -> str:
        return f"{self.host.address}:{self.port}"

    def start(self) -> None:
        script = str(ROOT / "scripts" / "kafka.sh")
        _script(self.host, {"KAFKA_HOST": self.host.address}, script, "start",
                str(self.data_dir), str(self.port))  # fmt: skip

    def stop(self) -> None:
        _run(str(ROOT / "scripts" / "kafka.sh"), "stop", str(self.data_dir), check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class NetPostgres:
    """A PostgreSQL server (scripts/postgres.sh) listening on its host's address too."""

    host: Host
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ef-pg-")))
    port: int = 5432

    def __post_init__(self) -> None:
        self.data_dir.chmod(0o755)  # the server runs as user postgres

    def start(self) -> None:
        script = str(ROOT / "scripts" / "postgres.sh")
        env = {"PG_HOST": self.host.address, "PG_CLIENTS": f"{SUBNET}.0/24"}
        _script(self.host, env, script, "start", str(self.data_dir), str(self.port))

    def stop(self) -> None:
        _run(str(ROOT / "scripts" / "postgres.sh"), "stop", str(self.data_dir), check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def url(self, database: str = "eventflow") -> str:
        return f"postgresql+asyncpg://postgres@{self.host.address}:{self.port}/{database}"

    def sql(self, statement: str) -> str:
        return self.host.run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "eventflow",
            "-v", "ON_ERROR_STOP=1", "-qAtc", statement,
        )  # fmt: skip

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)


@dataclass
class Cluster:
    """A broker, PostgreSQL, workers' hosts and the test's client host, on one bridge."""

    net: Network
    kafka: NetKafka
    postgres: NetPostgres
    client: Host
    workers: list[Host]

    @classmethod
    def start(cls, worker_hosts: int) -> Cluster:
        net = Network()
        net.create()
        try:
            kafka = NetKafka(net.add("kafka", 2))
            postgres = NetPostgres(net.add("pg", 3))
            client = net.add("client", 100)
            workers = [net.add(f"w{i + 1}", 11 + i) for i in range(worker_hosts)]
            postgres.start()
            kafka.start()
        except BaseException:
            net.remove()
            raise
        return cls(net, kafka, postgres, client, workers)

    def stop(self) -> None:
        for host in self.workers:
            host.kill_all()
        self.kafka.remove()
        self.postgres.remove()
        self.net.remove()

    def everyone_but(self, host: Host) -> Sequence[Host]:
        return [h for h in self.net.hosts.values() if h is not host]
