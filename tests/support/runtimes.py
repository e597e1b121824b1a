"""A private containerd and a private Docker engine (Debian 12's containerd 1.6 and docker.io 20.10).

Both daemons write to hard-coded paths whatever roots they are given (/run/containerd, /run/docker,
/var/lib/containers, /opt/containerd, ...), so each runs in its own mount namespace
(`unshare --mount --propagation private`) in which /var/lib, /run and /opt are bind mounts of directories
under the test's workdir: nothing outside the workdir is written, and the host's own daemons (if any) are
never seen. The shell that sets the mounts up `exec`s the daemon, so the PID recorded is the daemon's and
`stop()` signals that PID only. Sockets live in a short directory under /tmp (a unix socket path is
limited to 108 bytes; pytest's tmp paths can be longer). Needs root (a mount namespace).

    with Containerd(tmp / "ctd") as ctd:
        hosts = write_hosts_dir(tmp / "certs.d", mirror.url)
        ctd.pull("docker.io/library/v2img:latest", hosts)
    with Dockerd(tmp / "dockerd", {"registry-mirrors": [mirror.url]}) as engine:
        engine.pull("library/v2img:latest"); engine.inspect("library/v2img:latest")["RepoDigests"]
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from tests.support.polling import poll
from tests.support.procs import stop_process

START_DEADLINE_S = 20.0  # both start in well under a second here; a loaded 2-core machine needs slack
STOP_GRACE_S = 10.0  # SIGTERM → SIGKILL: dockerd stops its own containerd child within this
CLIENT_TIMEOUT_S = 120.0  # one ctr/docker command (a pull of a few MiB from loopback)
DOCKER_CLI = "/usr/bin/docker"  # docker.io's CLI (20.10), as old as dockerd; /usr/local may hold another
# $1..$3: directories bind-mounted over /var/lib, /run and /opt; then the daemon's argv, exec'd (same PID).
_NAMESPACE_SCRIPT = (
    'set -e; mount --bind "$1" /var/lib; mount --bind "$2" /run; mount --bind "$3" /opt; shift 3; exec "$@"'
)
_live: set[_Daemon] = set()


class DaemonError(AssertionError):
    """A daemon did not start, or one of its client commands failed; carries the output and log tail."""


def available() -> str | None:
    """None if the private daemons can run here, else why not (for `pytest.skip`)."""
    if os.geteuid() != 0:
        return "a private containerd/dockerd needs root (a mount namespace)"
    missing = [b for b in ("unshare", "containerd", "ctr", "dockerd") if shutil.which(b) is None]
    if not Path(DOCKER_CLI).exists():
        missing.append(DOCKER_CLI)
    return f"not installed: {', '.join(missing)} (scripts/install-system-deps)" if missing else None


def write_hosts_dir(
    hosts_dir: Path,
    mirror_url: str,
    *,
    registry: str = "docker.io",
    server: str | None = "https://registry-1.docker.io",
    capabilities: Sequence[str] = ("pull", "resolve"),
    ca: Path | None = None,
    skip_verify: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Path:
    """Write HOSTS_DIR/REGISTRY/hosts.toml sending pulls of REGISTRY to `mirror_url` (fallback `server`),
    the way an operator configures containerd's `config_path`; returns `hosts_dir`."""
    lines = [f'server = "{server}"', ""] if server else []
    lines.append(f'[host."{mirror_url}"]')
    lines.append("  capabilities = [" + ", ".join(f'"{c}"' for c in capabilities) + "]")
    if ca is not None:
        lines.append(f'  ca = "{ca}"')
    if skip_verify:
        lines.append("  skip_verify = true")
    if headers:
        lines.append(f'  [host."{mirror_url}".header]')
        lines += [f'    {name} = ["{value}"]' for name, value in headers.items()]
    target = hosts_dir / registry / "hosts.toml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")
    return hosts_dir


def _pb_field(number: int, value: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2): tag, varint length, bytes."""
    out, length = bytearray([number << 3 | 2]), len(value)
    while length >= 0x80:
        out.append(length & 0x7F | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out) + value


def _pb_string(message: bytes) -> str:
    """Field 1 of a protobuf message holding one string field."""
    if not message or message[0] != (1 << 3 | 2):
        raise DaemonError(f"unexpected CRI answer {message[:40]!r}")
    length, shift, pos = 0, 0, 1
    while message[pos] & 0x80:
        length |= (message[pos] & 0x7F) << shift
        shift, pos = shift + 7, pos + 1
    length |= message[pos] << shift
    return message[pos + 1 : pos + 1 + length].decode()


class _Daemon:
    """One daemon process in a private mount namespace; subclasses give argv and a readiness probe."""

    name = "daemon"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self.sock_dir = Path(tempfile.mkdtemp(prefix=f"{self.name[:3]}-", dir="/tmp"))
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("ns-var-lib", "ns-run", "ns-opt"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int | None:
        """The daemon's PID (the one `stop()` signals), or None when not started."""
        return self.proc.pid if self.proc is not None else None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        mounts = [str(self.workdir / sub) for sub in ("ns-var-lib", "ns-run", "ns-opt")]
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _NAMESPACE_SCRIPT]
        argv += ["sh", *mounts, *self._argv()]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        _live.add(self)
        proc = self.proc

        def state() -> str:
            return "exited" if proc.poll() is not None else "ready" if self._ready() else "starting"

        try:
            if poll(state, lambda s: s != "starting", START_DEADLINE_S, f"{self.name} ready") == "exited":
                self._fail(f"{self.name} exited with {proc.returncode} before it was ready")
        except TimeoutError as exc:
            self.stop()
            self._fail(str(exc))

    def _fail(self, message: str) -> NoReturn:
        tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
        raise DaemonError(f"{message}; log {self.log_path}:\n{tail}")

    def _run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
        result = subprocess.run(
            list(argv), capture_output=True, timeout=CLIENT_TIMEOUT_S, check=False, env=env
        )
        if result.returncode != 0:
            self._fail(
                f"{' '.join(argv)} failed ({result.returncode}):\n"
                f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
            )
        return result.stdout.decode()

    def stop(self) -> None:
        """SIGTERM the daemon's PID, SIGKILL it after STOP_GRACE_S; reap it; remove the socket dir."""
        proc, self.proc = self.proc, None
        _live.discard(self)
        stop_process(proc, grace_s=STOP_GRACE_S)
        shutil.rmtree(self.sock_dir, ignore_errors=True)


class Containerd(_Daemon):
    """containerd with root, state, sockets and opt under `workdir`.

    The CRI plugin (kubelet's way in) is disabled unless `cri`; with it, `cri_pull` pulls as kubelet does,
    reading the hosts.toml files under `config_path` at every pull. Content sharing between namespaces is
    `isolated`, so a `ctr` pull in a fresh `namespace` fetches every blob again (through the mirror, now
    warm) without restarting the daemon.
    """

    name = "containerd"

    def __init__(self, workdir: Path, *, config_path: Path | None = None, cri: bool = False) -> None:
        super().__init__(workdir)
        self.address = str(self.sock_dir / "c.sock")
        self.config_file = workdir / "config.toml"
        self.config_path = config_path  # the CRI registry `config_path` a node's config.toml would carry
        self.cri = cri

    def _config(self) -> str:
        root, state = self.workdir / "root", self.workdir / "state"
        lines = [
            "version = 2",
            f'root = "{root}"',
            f'state = "{state}"',
            "disabled_plugins = []" if self.cri else 'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "[grpc]",
            f'  address = "{self.address}"',
            "[ttrpc]",
            f'  address = "{self.address}.ttrpc"',
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{self.workdir / "opt"}"',
            '[plugins."io.containerd.metadata.v1.bolt"]',
            '  content_sharing_policy = "isolated"',
        ]
        if self.cri:
            # No CRI TCP port, and its streaming server (exec/attach) on loopback at a free port.
            lines.append('[plugins."io.containerd.grpc.v1.cri"]')
            lines += ["  disable_tcp_service = true", '  stream_server_address = "127.0.0.1"']
            lines.append('  stream_server_port = "0"')
            # Its CNI directories in the workdir: the host's /etc/cni is neither read nor created.
            lines.append('[plugins."io.containerd.grpc.v1.cri".cni]')
            lines.append(f'  bin_dir = "{self.workdir / "cni" / "bin"}"')
            lines.append(f'  conf_dir = "{self.workdir / "cni" / "net.d"}"')
        if self.config_path is not None:
            # Read by the CRI plugin at every pull (ctr takes --hosts-dir instead) and by `mirror doctor`.
            lines.append('[plugins."io.containerd.grpc.v1.cri".registry]')
            lines.append(f'  config_path = "{self.config_path}"')
        return "\n".join(lines) + "\n"

    def _argv(self) -> list[str]:
        self.config_file.write_text(self._config())
        return ["containerd", "--config", str(self.config_file)]

    def _ready(self) -> bool:
        if not Path(self.address).exists():
            return False
        probe = subprocess.run(
            ["ctr", "--address", self.address, "version"], capture_output=True, timeout=10, check=False
        )
        return probe.returncode == 0

    def start(self) -> str:
        """Start containerd and wait until it answers; returns its gRPC socket address."""
        self._start()
        return self.address

    def cri_pull(self, image: str) -> str:
        """Pull `image` over the CRI API (`runtime.v1.ImageService/PullImage`), as kubelet does; returns the
        image id (the config digest). The two messages are encoded by hand: one string field each."""
        import grpc  # only the CRI tests need it

        assert self.cri, "start containerd with cri=True"
        request = _pb_field(1, _pb_field(1, image.encode()))  # PullImageRequest{image: ImageSpec{image}}
        with grpc.insecure_channel(f"unix://{self.address}") as channel:
            call = channel.unary_unary("/runtime.v1.ImageService/PullImage")
            try:
                answer: bytes = call(request, timeout=CLIENT_TIMEOUT_S)
            except grpc.RpcError as exc:
                self._fail(f"CRI PullImage {image} failed: {exc}")
        return _pb_string(answer)  # PullImageResponse{image_ref}

    def ctr(self, *args: str, namespace: str = "default") -> str:
        """Run `ctr --address ... --namespace NS ARGS`; its stdout (fails the test on error)."""
        return self._run(["ctr", "--address", self.address, "--namespace", namespace, *args])

    def pull(self, ref: str, hosts_dir: Path | None, *, namespace: str = "default") -> str:
        """`ctr images pull [--hosts-dir DIR] REF` (fully qualified, e.g. docker.io/library/x:tag); returns
        the digest containerd recorded for REF."""
        args = ["images", "pull"]
        if hosts_dir is not None:
            args += ["--hosts-dir", str(hosts_dir)]
        self.ctr(*args, ref, namespace=namespace)
        return self.digest(ref, namespace=namespace)

    def digest(self, ref: str, *, namespace: str = "default") -> str:
        """The target digest of image REF in `namespace` (from `ctr images ls`)."""
        for line in self.ctr("images", "ls", namespace=namespace).splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return fields[2]
        raise DaemonError(f"{ref} not among containerd's images in namespace {namespace}")

    def __enter__(self) -> Containerd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Dockerd(_Daemon):
    """dockerd (with the containerd it starts itself) using `daemon_json`, vfs storage, no networking
    setup (no iptables, no bridge); data and exec roots under `workdir`, the API on a unix socket."""

    name = "dockerd"

    def __init__(self, workdir: Path, daemon_json: Mapping[str, Any] | None = None) -> None:
        super().__init__(workdir)
        self.data_root = workdir / "data"
        self.daemon_json_path = workdir / "daemon.json"
        self.daemon_json = {"deprecated-key-path": str(self.data_root / "key.json"), **(daemon_json or {})}
        self.socket = str(self.sock_dir / "d.sock")
        self.host = f"unix://{self.socket}"
        self.client_config = workdir / "client-config"  # DOCKER_CONFIG: no operator's ~/.docker is read

    def _argv(self) -> list[str]:
        self.daemon_json_path.write_text(json.dumps(self.daemon_json, indent=2))
        return [
            "dockerd",
            "--config-file",
            str(self.daemon_json_path),
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.sock_dir / "x"),
            "-H",
            self.host,
            "--pidfile",
            str(self.workdir / "dockerd.pid"),
        ]

    def _env(self) -> dict[str, str]:
        self.client_config.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.client_config)
        return env

    def _ready(self) -> bool:
        if not Path(self.socket).exists():
            return False
        probe = subprocess.run(
            [DOCKER_CLI, "-H", self.host, "version"],
            capture_output=True,
            timeout=10,
            check=False,
            env=self._env(),
        )
        return probe.returncode == 0

    def start(self) -> str:
        """Start dockerd and wait until its API answers; returns the DOCKER_HOST value."""
        self._start()
        return self.host

    def docker(self, *args: str) -> str:
        """Run `docker -H ... ARGS` (the 20.10 CLI); its stdout (fails the test on error)."""
        return self._run([DOCKER_CLI, "-H", self.host, *args], env=self._env())

    def pull(self, ref: str) -> dict[str, Any]:
        """`docker pull REF`; returns `inspect(REF)`."""
        self.docker("pull", ref)
        return self.inspect(ref)

    def inspect(self, ref: str) -> dict[str, Any]:
        """`docker image inspect REF` (Id = config digest, RepoDigests = name@manifest digest)."""
        found = json.loads(self.docker("image", "inspect", ref))
        assert isinstance(found, list)
        image: dict[str, Any] = found[0]
        return image

    def remove(self, ref: str) -> None:
        """`docker rmi REF`: the next pull fetches every layer again."""
        self.docker("rmi", ref)

    def __enter__(self) -> Dockerd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_leftovers() -> None:
    for daemon in list(_live):
        daemon.stop()
