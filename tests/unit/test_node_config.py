"""`mirror node-config` and containerd's hosts.toml: rendering, parsing, lookup order, owned files only."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mirror import cli
from mirror.commands import hosts_toml, node_config
from mirror.commands.hosts_toml import OWNER_MARKER, find, host_dirs, parse, render
from tests.support.procs import stop_process

MIRROR = "http://10.0.0.5:5000"


def run(*args: str) -> int:
    """`mirror node-config ARGS`'s exit status (argparse's usage errors included)."""
    try:
        return cli.main(["node-config", *args])
    except SystemExit as exc:
        return int(exc.code or 0)


def test_render_sends_pull_and_resolve_to_the_mirror_and_keeps_the_registry_as_server() -> None:
    """The file names the mirror first with pull+resolve and the registry's API host as fallback."""
    parsed = parse(render("docker.io", MIRROR))
    assert parsed.server == "https://registry-1.docker.io"
    assert [(h.url, h.capabilities) for h in parsed.hosts] == [(MIRROR, ("pull", "resolve"))]
    assert parsed.owned
    assert parse(render("ghcr.io", MIRROR)).server == "https://ghcr.io"


def test_render_default_has_no_server_and_carries_tls_options() -> None:
    """_default leaves the fallback to the image's registry; ca and skip_verify land on the mirror host."""
    parsed = parse(render("_default", "https://mirror:5443", ca="/etc/mirror/ca.crt", skip_verify=True))
    assert parsed.server is None
    assert parsed.hosts[0].ca == ("/etc/mirror/ca.crt",)
    assert parsed.hosts[0].skip_verify


def test_parse_defaults_capabilities_and_scheme_as_containerd_does() -> None:
    """A host without capabilities may do everything; one without a scheme is https; order is kept."""
    parsed = parse('[host."mirror:5000"]\n[host."http://b:1"]\ncapabilities = ["pull"]\n')
    assert [h.full_url for h in parsed.hosts] == ["https://mirror:5000", "http://b:1"]
    assert parsed.hosts[0].resolves
    assert not parsed.hosts[1].resolves
    assert not parsed.owned


def test_host_dirs_try_the_port_form_then_the_name_then_default() -> None:
    """host:port is looked up as host_port_ first, as containerd does."""
    assert host_dirs("reg.local:5000") == ("reg.local_5000_", "reg.local:5000", "_default")
    assert host_dirs("ghcr.io") == ("ghcr.io", "_default")


def test_find_takes_the_first_root_with_the_registry_or_default(tmp_path: Path) -> None:
    """config_path roots are searched in order; a root's _default wins over a later root's registry."""
    first, second = tmp_path / "a", tmp_path / "b"
    (first / "_default").mkdir(parents=True)
    (second / "ghcr.io").mkdir(parents=True)
    assert find([first, second], "ghcr.io") == first / "_default"
    assert find([second, first], "ghcr.io") == second / "ghcr.io"
    assert find([tmp_path / "none"], "ghcr.io") is None


def test_node_config_writes_registries_from_the_config_and_default(tmp_path: Path) -> None:
    """Every registry of the config (and _default when asked) gets a hosts.toml pointing at the mirror."""
    config = tmp_path / "mirror.toml"
    config.write_text('[[upstreams]]\nregistry = "ghcr.io"\nurl = "https://ghcr.io"\n')
    certs = tmp_path / "certs.d"
    assert run("--mirror", MIRROR, "--certs-dir", str(certs), "--config", str(config), "--default") == 0
    assert sorted(p.name for p in certs.iterdir()) == ["_default", "docker.io", "ghcr.io"]
    assert parse((certs / "ghcr.io" / "hosts.toml").read_text()).hosts[0].url == MIRROR


def test_node_config_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second run with the same settings changes nothing and says so."""
    certs = tmp_path / "certs.d"
    assert run("--mirror", MIRROR, "--certs-dir", str(certs), "docker.io") == 0
    first = (certs / "docker.io" / "hosts.toml").stat().st_mtime_ns
    capsys.readouterr()
    assert run("--mirror", MIRROR, "--certs-dir", str(certs), "docker.io") == 0
    assert capsys.readouterr().out.startswith("unchanged")
    assert (certs / "docker.io" / "hosts.toml").stat().st_mtime_ns == first


def test_node_config_rewrites_its_file_when_the_mirror_url_changes(tmp_path: Path) -> None:
    """A new mirror URL replaces the old one in the file it wrote."""
    certs = tmp_path / "certs.d"
    run("--mirror", MIRROR, "--certs-dir", str(certs), "docker.io")
    run("--mirror", "http://10.0.0.6:5000", "--certs-dir", str(certs), "docker.io")
    assert parse((certs / "docker.io" / "hosts.toml").read_text()).hosts[0].url == "http://10.0.0.6:5000"


def test_node_config_never_touches_an_operators_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hosts.toml without the marker is kept on write and on --remove."""
    own = tmp_path / "certs.d" / "docker.io" / "hosts.toml"
    own.parent.mkdir(parents=True)
    own.write_text('server = "https://registry-1.docker.io"\n')
    certs = str(tmp_path / "certs.d")
    assert run("--mirror", MIRROR, "--certs-dir", certs, "docker.io") == 0
    assert "kept" in capsys.readouterr().out
    assert run("--certs-dir", certs, "--remove") == 0
    assert own.read_text() == 'server = "https://registry-1.docker.io"\n'


def test_remove_deletes_only_its_files_and_their_empty_directories(tmp_path: Path) -> None:
    """--remove deletes owned files; a directory that holds an operator's certificate stays."""
    certs = tmp_path / "certs.d"
    run("--mirror", MIRROR, "--certs-dir", str(certs), "docker.io", "quay.io")
    (certs / "quay.io" / "ca.crt").write_text("operator's CA")
    assert run("--certs-dir", str(certs), "--remove") == 0
    assert sorted(str(p.relative_to(certs)) for p in certs.rglob("*")) == ["quay.io", "quay.io/ca.crt"]


def test_a_registry_no_longer_served_loses_its_file(tmp_path: Path) -> None:
    """Running again with fewer registries removes the file it wrote for the dropped one."""
    certs = tmp_path / "certs.d"
    run("--mirror", MIRROR, "--certs-dir", str(certs), "docker.io", "quay.io")
    run("--mirror", MIRROR, "--certs-dir", str(certs), "docker.io")
    assert [p.name for p in certs.iterdir()] == ["docker.io"]


def test_files_are_written_whole_with_the_marker_first(tmp_path: Path) -> None:
    """The file starts with the ownership marker and no temporary file is left beside it."""
    certs = tmp_path / "certs.d"
    run("--mirror", MIRROR, "--certs-dir", str(certs), "docker.io")
    assert (certs / "docker.io" / "hosts.toml").read_text().startswith(OWNER_MARKER + "\n")
    assert [p.name for p in (certs / "docker.io").iterdir()] == ["hosts.toml"]


def test_a_file_that_cannot_be_written_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A certs dir that is a regular file makes the write fail: reported, exit status 1."""
    blocker = tmp_path / "certs.d"
    blocker.write_text("not a directory")
    assert run("--mirror", MIRROR, "--certs-dir", str(blocker), "docker.io") == 1
    assert capsys.readouterr().out.startswith("failed")


@pytest.mark.parametrize(
    "args",
    [
        ["--certs-dir", "x"],  # no --mirror
        ["--mirror", "ftp://mirror", "--certs-dir", "x"],
        ["--mirror", MIRROR, "Not A Host"],
    ],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    """A missing or malformed URL or registry is a usage error."""
    assert run(*args) == 2


def test_a_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config the mirror would refuse makes node-config refuse too, writing nothing."""
    config = tmp_path / "mirror.toml"
    config.write_text("no_such_key = 1\n")
    assert run("--mirror", MIRROR, "--certs-dir", str(tmp_path / "c"), "--config", str(config)) == 2
    assert not (tmp_path / "c").exists()
    assert "no_such_key" in capsys.readouterr().err


def test_served_registries_are_the_registries_not_their_aliases(tmp_path: Path) -> None:
    """Aliases are path prefixes (the mirror refuses them as ?ns=): no hosts.toml for them."""
    config = tmp_path / "mirror.toml"
    config.write_text(
        'upstream_aliases = ["index.docker.io"]\n'
        '[[upstreams]]\nregistry = "registry.k8s.io"\nurl = "https://registry.k8s.io"\n'
        'aliases = ["k8s.gcr.io"]\n'
    )
    assert node_config.served_registries(config, {}) == ("docker.io", "registry.k8s.io")


def test_node_config_and_hosts_toml_do_not_import_the_server() -> None:
    """The init container's command loads no server part."""
    code = "import sys, mirror.commands.node_config; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert not loaded & {"mirror.app", "mirror.proxy", "mirror.fills", "aiocache", "diskcache", "aiohttp"}
    assert hosts_toml.__name__ in loaded


def test_until_stopped_writes_then_removes_its_files_on_sigterm(tmp_path: Path) -> None:
    """--until-stopped keeps the files while it runs and removes them when SIGTERM stops it (exit 0)."""
    certs = tmp_path / "certs.d"
    args = ["node-config", "docker.io", "--mirror", MIRROR, "--certs-dir", str(certs), "--until-stopped"]
    proc = subprocess.Popen([sys.executable, "-m", "mirror", *args], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with proc.stdout:
        try:
            assert proc.stdout.readline().startswith(b"written")  # printed once the file is in place
            assert (certs / "docker.io" / "hosts.toml").is_file()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            assert proc.stdout.read().startswith(b"removed")
        finally:
            stop_process(proc)
    assert list(certs.iterdir()) == []


def test_the_kustomize_sidecar_runs_a_valid_node_config_on_its_hostpath_mount() -> None:
    """deploy/k8s: the node-config sidecar's args parse, it removes on stop, and --certs-dir is its mount."""
    daemonset = yaml.safe_load(
        (Path(__file__).parents[2] / "deploy" / "k8s" / "base" / "daemonset.yaml").read_text()
    )
    spec = daemonset["spec"]["template"]["spec"]
    sidecar = next(c for c in spec["initContainers"] if c["name"] == "node-config")
    assert sidecar["restartPolicy"] == "Always"
    args = cli.parser().parse_args(sidecar["args"])
    assert args.until_stopped
    assert args.registries == ["docker.io"]
    mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == str(args.certs_dir))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"]["path"] == str(node_config.DEFAULT_CERTS_DIR)


def test_client_certificate_and_authorization_go_into_the_mirror_host(tmp_path: Path) -> None:
    """--client-cert/--client-key and --authorization-file land on the mirror's host; the file is 0600."""
    secret = tmp_path / "authorization"
    secret.write_text("Basic bm9kZTpzZWNyZXQ=\n")
    certs = tmp_path / "certs.d"
    flags = ["--client-cert", "/etc/mirror/node.crt", "--client-key", "/etc/mirror/node.key"]
    assert (
        run(
            "docker.io",
            "--mirror",
            MIRROR,
            "--certs-dir",
            str(certs),
            *flags,
            "--authorization-file",
            str(secret),
        )
        == 0
    )
    file = certs / "docker.io" / "hosts.toml"
    host = parse(file.read_text()).hosts[0]
    assert host.client == ("/etc/mirror/node.crt", "/etc/mirror/node.key")
    assert host.headers == (("Authorization", "Basic bm9kZTpzZWNyZXQ="),)
    assert file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("flags", "content"),
    [(["--client-cert", "/c.crt"], None), (["--authorization-file"], "Basic a\nBasic b\n")],
)
def test_half_a_client_pair_or_a_bad_authorization_file_exits_2(
    tmp_path: Path, flags: list[str], content: str | None
) -> None:
    """A client certificate without its key, or a header file with two lines, is a usage error."""
    if content is not None:
        (tmp_path / "auth").write_text(content)
        flags = [*flags, str(tmp_path / "auth")]
    assert run("docker.io", "--mirror", MIRROR, "--certs-dir", str(tmp_path / "c"), *flags) == 2
    assert not (tmp_path / "c").exists()


def test_parse_reads_every_spelling_of_client() -> None:
    """hosts.toml `client` as one file, a pair, or a list of pairs gives the first (cert, key)."""
    for value, expected in [
        ('"/a.pem"', ("/a.pem", "/a.pem")),
        ('["/a.crt", "/a.key"]', ("/a.crt", "/a.key")),
        ('[["/a.crt", "/a.key"], ["/b.crt", "/b.key"]]', ("/a.crt", "/a.key")),
    ]:
        assert parse(f'[host."https://m"]\nclient = {value}\n').hosts[0].client == expected
