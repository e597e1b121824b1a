"""One real `redis-server` process (Debian's) on a free 127.0.0.1 port, with the faults the shared mode
must survive: `kill()` (-9), `pause()`/`resume()` (SIGSTOP/SIGCONT) and `restart_empty()`."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
from pathlib import Path

import redis

from tests.support.net import free_port
from tests.support.polling import poll
from tests.support.procs import stop_process
from tests.support.tls import TlsFiles

_live: set[RedisServer] = set()


class RedisServer:
    """redis-server without persistence (`--save "" --appendonly no`): a restart is an empty Redis."""

    def __init__(self, workdir: Path, replica_of: int | None = None, tls: TlsFiles | None = None) -> None:
        self.workdir = workdir
        self.replica_of = replica_of  # the port of a master to replicate
        self.tls = tls  # serve TLS only (rediss://), with this certificate
        self.port = free_port()
        self.log_path = workdir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A synchronous client for the test's own checks (short timeouts)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=2,
            socket_connect_timeout=2,
            ssl=self.tls is not None,
            ssl_ca_certs=str(self.tls.ca) if self.tls else None,
        )

    def start(self, deadline_s: float = 10.0) -> RedisServer:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        if self.tls is not None:
            args = ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1"]
            args += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            args += ["--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _live.add(self)
        poll(self._answers, bool, deadline_s, f"redis-server on port {self.port} answering PING")
        return self

    def _answers(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self._proc.returncode}: see {self.log_path}")
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """kill -9, as a crash."""
        stop_process(self._proc, signal.SIGKILL)
        self._proc = None
        _live.discard(self)

    def pause(self) -> None:
        """SIGSTOP: Redis keeps its connections but answers nothing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart_empty(self) -> None:
        """kill -9 and start again on the same port, with no data."""
        self.kill()
        self.start()

    def stop(self) -> None:
        self.resume()  # a stopped process would not act on SIGTERM
        stop_process(self._proc)
        self._proc = None
        _live.discard(self)

    def _signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, sig)

    def command_calls(self) -> dict[str, int]:
        """Calls per command since the last `reset_stats()` (INFO commandstats), e.g. {"get": 3}."""
        with self.client() as client:
            stats = client.info("commandstats")
        return {name.removeprefix("cmdstat_").lower(): int(value["calls"]) for name, value in stats.items()}

    def reset_stats(self) -> None:
        with self.client() as client:
            client.config_resetstat()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Sentinel:
    """One Redis Sentinel (`redis-server --sentinel`) watching `master_port` as MASTER; quick to
    declare it down (1 s) and to fail over, for tests."""

    MASTER = "mymaster"

    def __init__(self, workdir: Path, master_port: int) -> None:
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {self.MASTER} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
            f"sentinel failover-timeout {self.MASTER} 10000\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.MASTER}/{db}"

    def master_port(self) -> int:
        """The port of the master the Sentinel names now."""
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2) as client:
            _, port = client.sentinel_get_master_addr_by_name(self.MASTER)
        return int(port)

    def watches_replica(self, port: int) -> bool:
        """Whether the Sentinel knows the replica on `port` as connected and in sync: a failover can
        promote only a replica it knows, and it learns them from the master's INFO every 10 s."""
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2) as client:
            replicas = client.sentinel_slaves(self.MASTER)
        return any(
            r["port"] == port
            and r["is_slave"]
            and not r["is_disconnected"]
            and r["master-link-status"] == "ok"
            for r in replicas
        )

    def start(self, deadline_s: float = 10.0) -> Sentinel:
        with (self.workdir / "sentinel.log").open("ab") as log:
            self._proc = subprocess.Popen(
                ["redis-server", str(self.config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
            )
        poll(self._answers, bool, deadline_s, f"redis sentinel on port {self.port} naming its master")
        return self

    def _answers(self) -> bool:
        try:
            self.master_port()
        except (redis.RedisError, TypeError):
            return False
        return True

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def __enter__(self) -> Sentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    """No redis-server outlives the test run, whatever failed."""
    for server in list(_live):
        server.stop()
