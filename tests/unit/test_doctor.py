"""`mirror doctor` on runtime configurations the tests write (configuration only: --no-probe)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mirror import cli
from mirror.commands.doctor import containerd, docker, k3s
from mirror.commands.doctor.checks import host_port
from mirror.commands.doctor.model import Paths
from mirror.commands.hosts_toml import render

MIRROR = "http://10.0.0.5:5000"
CRI_V2 = '[plugins."io.containerd.grpc.v1.cri".registry]\n'


def doctor(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run `mirror doctor --root ROOT --no-probe --json ARGS`: (exit status, report)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = cli.main(["doctor", "--root", str(root), "--no-probe", "--json", *args])
    except SystemExit as exc:
        return int(exc.code or 0), {}
    return code, json.loads(out.getvalue())


def write(root: Path, path: str, text: str) -> Path:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def findings(report: dict[str, Any], runtime: str) -> dict[str, dict[str, Any]]:
    """registry → finding of one runtime."""
    entry = next(r for r in report["runtimes"] if r["runtime"] == runtime)
    return {f["registry"]: f for f in entry["registries"]}


def containerd_node(
    root: Path, config: str = f'version = 2\n{CRI_V2}  config_path = "/etc/containerd/certs.d"\n'
) -> None:
    write(root, "etc/containerd/config.toml", config)


def test_containerd_with_config_path_and_hosts_toml_goes_through_the_mirror(tmp_path: Path) -> None:
    """config_path set and node-config's file present: docker.io goes via the mirror, exit 0."""
    containerd_node(tmp_path)
    write(tmp_path, "etc/containerd/certs.d/docker.io/hosts.toml", render("docker.io", MIRROR))
    code, report = doctor(tmp_path, "--mirror", MIRROR, "docker.io")
    assert code == 0
    found = findings(report, "containerd")["docker.io"]
    assert (found["status"], found["via"]) == ("ok", MIRROR)
    assert found["source"] == str(tmp_path / "etc/containerd/certs.d/docker.io/hosts.toml")


def test_containerd_without_config_path_is_a_problem_with_the_fix(tmp_path: Path) -> None:
    """containerd 1.x without config_path ignores hosts.toml: doctor says so and how to set it."""
    containerd_node(tmp_path, "version = 2\n")
    write(tmp_path, "etc/containerd/certs.d/docker.io/hosts.toml", render("docker.io", MIRROR))
    code, report = doctor(tmp_path, "docker.io")
    assert code == 1
    runtime = report["runtimes"][0]
    assert "config_path is not set" in runtime["problems"][0]
    assert 'config_path = "/etc/containerd/certs.d"' in runtime["fixes"][0]


def test_containerd_2_reads_certs_d_by_default(tmp_path: Path) -> None:
    """A version 3 config (containerd 2.x) without config_path still reads /etc/containerd/certs.d."""
    containerd_node(tmp_path, "version = 3\n")
    write(tmp_path, "etc/containerd/certs.d/docker.io/hosts.toml", render("docker.io", MIRROR))
    code, report = doctor(tmp_path, "docker.io")
    assert code == 0
    assert findings(report, "containerd")["docker.io"]["via"] == MIRROR


def test_containerd_default_dir_covers_registries_without_their_own(tmp_path: Path) -> None:
    """_default/hosts.toml applies to a registry that has no directory of its own."""
    containerd_node(tmp_path)
    write(tmp_path, "etc/containerd/certs.d/_default/hosts.toml", render("_default", MIRROR))
    code, report = doctor(tmp_path, "quay.io")
    assert code == 0
    assert findings(report, "containerd")["quay.io"]["source"].endswith("_default/hosts.toml")


def test_containerd_registry_without_hosts_toml_gets_the_node_config_fix(tmp_path: Path) -> None:
    """A registry with no file goes straight upstream; the fix is the node-config command for it."""
    containerd_node(tmp_path)
    code, report = doctor(tmp_path, "--mirror", MIRROR, "ghcr.io")
    assert code == 1
    found = findings(report, "containerd")["ghcr.io"]
    assert "pulls go straight to ghcr.io" in found["problems"][0]
    assert f"mirror node-config ghcr.io --mirror {MIRROR}" in found["fixes"][0]


def test_containerd_mirror_without_resolve_is_a_problem(tmp_path: Path) -> None:
    """Without the resolve capability tags go upstream: a problem, with the capability to add."""
    containerd_node(tmp_path)
    write(
        tmp_path,
        "etc/containerd/certs.d/docker.io/hosts.toml",
        f'[host."{MIRROR}"]\ncapabilities = ["pull"]\n',
    )
    code, report = doctor(tmp_path, "docker.io")
    assert code == 1
    assert "lacks the resolve capability" in findings(report, "containerd")["docker.io"]["problems"][0]


def test_another_endpoint_before_the_mirror_is_a_problem(tmp_path: Path) -> None:
    """When --mirror-url is second in hosts.toml, doctor says what is tried first."""
    containerd_node(tmp_path)
    text = f'[host."http://other:5000"]\ncapabilities = ["pull", "resolve"]\n[host."{MIRROR}"]\n'
    write(tmp_path, "etc/containerd/certs.d/docker.io/hosts.toml", text)
    code, report = doctor(tmp_path, "--mirror", MIRROR, "docker.io")
    assert code == 1
    assert findings(report, "containerd")["docker.io"]["problems"] == [
        "http://other:5000 is tried before the mirror"
    ]


def test_an_endpoint_that_is_not_the_mirror_is_a_problem(tmp_path: Path) -> None:
    """A hosts.toml pointing elsewhere is reported with where pulls go instead."""
    containerd_node(tmp_path)
    write(tmp_path, "etc/containerd/certs.d/docker.io/hosts.toml", render("docker.io", "http://other:5000"))
    code, report = doctor(tmp_path, "--mirror", MIRROR, "docker.io")
    assert code == 1
    assert "not to the mirror" in findings(report, "containerd")["docker.io"]["problems"][0]


def test_deprecated_registry_mirrors_are_read_with_a_note(tmp_path: Path) -> None:
    """config.toml's registry.mirrors still routes pulls; doctor notes it is deprecated."""
    config = f'version = 2\n{CRI_V2.rstrip()[:-1]}.mirrors."docker.io"]\n  endpoint = ["{MIRROR}"]\n'
    containerd_node(tmp_path, config)
    code, report = doctor(tmp_path, "docker.io")
    assert code == 0
    assert findings(report, "containerd")["docker.io"]["via"] == MIRROR
    assert "deprecated" in report["runtimes"][0]["notes"][0]


def test_a_disabled_cri_plugin_is_noted(tmp_path: Path) -> None:
    """Docker's containerd packages disable CRI: doctor notes that kubelet does not use that containerd."""
    containerd_node(tmp_path, f'version = 2\ndisabled_plugins = ["cri"]\n{CRI_V2}  config_path = "/c"\n')
    _, report = doctor(tmp_path, "docker.io")
    assert "disables the CRI plugin" in report["runtimes"][0]["notes"][0]


def test_unreadable_containerd_config_is_a_problem(tmp_path: Path) -> None:
    """Bad TOML in config.toml is reported, not raised."""
    containerd_node(tmp_path, "version = = 2\n")
    code, report = doctor(tmp_path)
    assert code == 1
    assert "config.toml" in report["runtimes"][0]["problems"][0]


def test_docker_with_registry_mirrors_goes_through_the_mirror(tmp_path: Path) -> None:
    """daemon.json registry-mirrors sends docker.io pulls to the mirror (a trailing slash is the same URL)."""
    write(tmp_path, "etc/docker/daemon.json", json.dumps({"registry-mirrors": [MIRROR + "/"]}))
    code, report = doctor(tmp_path, "--mirror", MIRROR, "docker.io")
    assert code == 0
    assert findings(report, "docker")["docker.io"]["status"] == "ok"


def test_docker_without_registry_mirrors_gets_the_reload_fix(tmp_path: Path) -> None:
    """No registry-mirrors: a problem whose fix names the key and a reload, not a restart."""
    write(tmp_path, "etc/docker/daemon.json", "{}")
    code, report = doctor(tmp_path, "--mirror", MIRROR, "docker.io")
    assert code == 1
    fix = findings(report, "docker")["docker.io"]["fixes"][0]
    assert f'"registry-mirrors": ["{MIRROR}"]' in fix
    assert "kill -HUP" in fix


def test_docker_cannot_mirror_other_registries_and_that_is_not_a_failure(tmp_path: Path) -> None:
    """ghcr.io under Docker is `unsupported`, explained, and does not make the exit status 1."""
    write(tmp_path, "etc/docker/daemon.json", json.dumps({"registry-mirrors": [MIRROR]}))
    code, report = doctor(tmp_path, "docker.io", "ghcr.io")
    assert code == 0
    found = findings(report, "docker")["ghcr.io"]
    assert found["status"] == "unsupported"
    assert "only Docker Hub" in found["problems"][0]


def test_bad_daemon_json_is_a_problem(tmp_path: Path) -> None:
    """daemon.json that is not a JSON object is reported."""
    write(tmp_path, "etc/docker/daemon.json", "[1]")
    assert doctor(tmp_path)[0] == 1


def test_registries_conf_drop_in_replaces_the_main_entry(tmp_path: Path) -> None:
    """A registries.conf.d drop-in with the same prefix wins over registries.conf."""
    write(
        tmp_path,
        "etc/containers/registries.conf",
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n',
    )
    drop_in = (
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
        '[[registry.mirror]]\nlocation = "10.0.0.5:5000"\ninsecure = true\n'
    )
    source = write(tmp_path, "etc/containers/registries.conf.d/50-mirror.conf", drop_in)
    code, report = doctor(tmp_path, "--mirror", MIRROR, "docker.io")
    assert code == 0
    found = findings(report, "podman")["docker.io"]
    assert found["source"] == str(source)


def test_registries_conf_longest_prefix_wins(tmp_path: Path) -> None:
    """A more specific prefix (docker.io/library) decides for the probe image's repository."""
    text = (
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
        '[[registry]]\nprefix = "docker.io/library"\nlocation = "docker.io/library"\n'
        '[[registry.mirror]]\nlocation = "10.0.0.5:5000/library-mirror"\n'
    )
    write(tmp_path, "etc/containers/registries.conf", text)
    code, report = doctor(tmp_path, "--image", "docker.io/library/alpine:3.20")
    assert code == 0
    assert findings(report, "podman")["docker.io"]["via"] == "https://10.0.0.5:5000"


def test_registries_conf_digest_only_mirror_is_a_problem(tmp_path: Path) -> None:
    """A mirror used only for pulls by digest does not serve tag pulls: a problem."""
    text = (
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
        '[[registry.mirror]]\nlocation = "10.0.0.5:5000"\npull-from-mirror = "digest-only"\n'
    )
    write(tmp_path, "etc/containers/registries.conf", text)
    code, report = doctor(tmp_path, "docker.io")
    assert code == 1
    assert "by digest only" in findings(report, "podman")["docker.io"]["problems"][0]


def test_registries_conf_without_the_registry_gets_an_entry_to_add(tmp_path: Path) -> None:
    """No [[registry]] for ghcr.io: the fix is a mirror location with the registry as path."""
    write(tmp_path, "etc/containers/registries.conf", 'unqualified-search-registries = ["docker.io"]\n')
    code, report = doctor(tmp_path, "--mirror", MIRROR, "ghcr.io")
    assert code == 1
    assert 'location = "10.0.0.5:5000/ghcr.io"' in findings(report, "podman")["ghcr.io"]["fixes"][0]


def test_k3s_registries_yaml_wildcard_and_tls(tmp_path: Path) -> None:
    """k3s's "*" mirror covers any registry; its configs' ca_file is read under --root."""
    text = (
        'mirrors:\n  "*":\n    endpoint: ["https://10.0.0.5:5443"]\n'
        'configs:\n  "10.0.0.5:5443":\n    tls:\n      ca_file: /etc/mirror/ca.crt\n'
    )
    write(tmp_path, "etc/rancher/k3s/registries.yaml", text)
    code, report = doctor(tmp_path, "quay.io")
    assert code == 0
    assert findings(report, "k3s")["quay.io"]["via"] == "https://10.0.0.5:5443"
    assert "restart k3s" in report["runtimes"][0]["notes"][0]


def test_rke2_registries_yaml_without_the_registry_is_a_problem(tmp_path: Path) -> None:
    """RKE2's file is read like k3s's; a registry missing from it goes straight upstream."""
    write(tmp_path, "etc/rancher/rke2/registries.yaml", "mirrors: {}\n")
    code, report = doctor(tmp_path, "docker.io")
    assert code == 1
    assert findings(report, "rke2")["docker.io"]["status"] == "problem"


def test_bad_registries_yaml_is_a_problem(tmp_path: Path) -> None:
    """YAML that does not parse is reported, not raised."""
    write(tmp_path, "etc/rancher/k3s/registries.yaml", "mirrors: [unclosed\n")
    code, report = doctor(tmp_path)
    assert code == 1
    assert "registries.yaml" in report["runtimes"][0]["problems"][0]


def test_no_runtime_configuration_at_all_is_a_problem(tmp_path: Path) -> None:
    """An empty root: nothing to check is not success."""
    code, report = doctor(tmp_path)
    assert code == 1
    assert report["runtimes"] == []
    assert {m["runtime"] for m in report["not_found"]} == {"containerd", "docker", "podman", "k3s", "rke2"}


def test_a_runtime_asked_for_but_missing_is_a_problem(tmp_path: Path) -> None:
    """--runtime docker on a node without daemon.json fails even if containerd is fine."""
    containerd_node(tmp_path, "version = 3\n")
    write(tmp_path, "etc/containerd/certs.d/docker.io/hosts.toml", render("docker.io", MIRROR))
    assert doctor(tmp_path, "docker.io")[0] == 0
    assert doctor(tmp_path, "docker.io", "--runtime", "containerd", "--runtime", "docker")[0] == 1


def test_per_file_flags_override_the_root(tmp_path: Path) -> None:
    """--docker-daemon-json names the file directly, wherever it is."""
    daemon = write(tmp_path, "elsewhere/daemon.json", json.dumps({"registry-mirrors": [MIRROR]}))
    code, report = doctor(tmp_path / "empty", "--docker-daemon-json", str(daemon), "docker.io")
    assert code == 0
    assert report["runtimes"][0]["files"] == [str(daemon)]


def test_text_report_names_problems_and_fixes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json: one line per registry, then its problem and fix lines."""
    write(tmp_path, "etc/docker/daemon.json", "{}")
    code = cli.main(["doctor", "--root", str(tmp_path), "--no-probe", "docker.io"])
    out = capsys.readouterr().out
    assert code == 1
    assert "PROBLEM" in out
    assert 'fix: add "registry-mirrors"' in out
    assert out.rstrip().endswith("problems found (exit status 1)")


@pytest.mark.parametrize(
    "args", [["--mirror", "mirror:5000"], ["Not A Host"], ["--image", "UPPER/Case"], ["--runtime", "lxc"]]
)
def test_bad_usage_exits_2(tmp_path: Path, args: list[str]) -> None:
    """A malformed URL, image reference or runtime name is a usage error."""
    assert doctor(tmp_path, *args)[0] == 2


def test_mirror_urls_compare_by_host_and_port() -> None:
    """http://m and http://m:80/ are one endpoint; https defaults to 443; no scheme means https."""
    assert host_port("http://m") == host_port("http://m:80/") == ("m", 80)
    assert host_port("m:443") == host_port("https://m") == ("m", 443)


def test_doctor_does_not_import_the_server() -> None:
    """The doctor command loads no server part."""
    code = "import sys, mirror.commands.doctor; print(' '.join(sorted(sys.modules)))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not set(found.stdout.split()) & {
        "mirror.app",
        "mirror.proxy",
        "mirror.fills",
        "aiocache",
        "diskcache",
    }


def test_docker_skips_verification_for_loopback_and_insecure_registries(tmp_path: Path) -> None:
    """Docker takes 127.0.0.0/8 and insecure-registries (host:port or CIDR) for insecure: no cert check."""
    assert docker.insecure("127.0.0.1", 5000, [])
    assert docker.insecure("mirror.local", 5000, ["mirror.local:5000"])
    assert docker.insecure("10.1.2.3", 5000, ["10.0.0.0/8"])
    assert not docker.insecure("::1", 5000, [])
    assert not docker.insecure("mirror.local", 5000, ["other:5000"])


def test_docker_certs_d_gives_the_probe_its_ca_and_client_certificate(tmp_path: Path) -> None:
    """certs.d/<host:port>/{ca.crt,client.cert,client.key} are what the Docker probe presents."""
    certs = tmp_path / "certs.d"
    for name in ("ca.crt", "client.cert", "client.key"):
        write(certs, f"mirror.local:5443/{name}", "pem")
    daemon = write(tmp_path, "daemon.json", json.dumps({"registry-mirrors": ["https://mirror.local:5443"]}))
    route = docker.read(daemon, certs, ["docker.io"], MIRROR).routes[0]
    assert route.endpoints[0].ca == (str(certs / "mirror.local:5443" / "ca.crt"),)
    assert route.endpoints[0].client == (
        str(certs / "mirror.local:5443" / "client.cert"),
        str(certs / "mirror.local:5443" / "client.key"),
    )


def test_k3s_auth_and_client_certificate_reach_the_probe(tmp_path: Path) -> None:
    """registries.yaml configs: username/password become a Basic header, cert_file/key_file the client."""
    text = (
        'mirrors: {docker.io: {endpoint: ["https://m:5443"]}}\n'
        'configs: {"m:5443": {auth: {username: node, password: secret}, '
        "tls: {cert_file: /etc/c.crt, key_file: /etc/c.key}}}\n"
    )
    file = write(tmp_path, "etc/rancher/k3s/registries.yaml", text)
    endpoint = k3s.read("k3s", file, ["docker.io"], Paths.under(tmp_path), MIRROR).routes[0].endpoints[0]
    assert endpoint.headers == (("Authorization", "Basic bm9kZTpzZWNyZXQ="),)
    assert endpoint.client == (str(tmp_path / "etc/c.crt"), str(tmp_path / "etc/c.key"))


def test_containerd_relative_ca_is_read_beside_hosts_toml(tmp_path: Path) -> None:
    """`ca = "ca.crt"` in hosts.toml means the host directory's ca.crt, as containerd reads it."""
    containerd_node(tmp_path)
    write(tmp_path, "etc/containerd/certs.d/docker.io/hosts.toml", '[host."https://m:5443"]\nca = "ca.crt"\n')
    config = containerd.read(
        tmp_path / "etc/containerd/config.toml", ["docker.io"], Paths.under(tmp_path), MIRROR
    )
    assert config.routes[0].endpoints[0].ca == (str(tmp_path / "etc/containerd/certs.d/docker.io/ca.crt"),)


def test_a_blocked_registry_in_registries_conf_is_a_problem(tmp_path: Path) -> None:
    """`blocked = true` means no pull at all: reported as such."""
    write(tmp_path, "etc/containers/registries.conf", '[[registry]]\nprefix = "docker.io"\nblocked = true\n')
    code, report = doctor(tmp_path, "docker.io")
    assert code == 1
    assert "blocked" in findings(report, "podman")["docker.io"]["problems"][0]


def test_a_hosts_toml_that_does_not_parse_is_a_problem_with_the_fix(tmp_path: Path) -> None:
    """Bad TOML in a registry's hosts.toml is reported (containerd then ignores the mirror)."""
    containerd_node(tmp_path)
    write(tmp_path, "etc/containerd/certs.d/docker.io/hosts.toml", '[host."http://m:5000"\n')
    code, report = doctor(tmp_path, "docker.io")
    assert code == 1
    found = findings(report, "containerd")["docker.io"]
    assert "cannot be read" in found["problems"][0]
    assert "mirror node-config docker.io" in found["fixes"][0]
