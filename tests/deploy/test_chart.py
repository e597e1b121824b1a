"""The Helm chart (deploy/helm/mirror): helm lint, and helm template with the default values and with
the ci/ value files (every toggle on) rendering objects valid against the Kubernetes and CRD schemas."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirror import cli
from mirror.config import load
from tests.deploy.conftest import ROOT, run
from tests.deploy.manifests import objects, validate_all

CHART = ROOT / "deploy" / "helm" / "mirror"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
VALUE_SETS = [None, *CI_VALUES]


def render(helm: Path, *args: str, values: Path | None = None) -> list[dict[str, Any]]:
    """`helm template` of the chart as release `m` in namespace `mirror`, parsed."""
    extra = ["-f", str(values)] if values else []
    return objects(run(helm, "template", "m", CHART, "--namespace", "mirror", *extra, *args).stdout)


def one(found: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (match,) = [o for o in found if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return match


def pod_spec(found: Sequence[dict[str, Any]]) -> dict[str, Any]:
    (workload,) = [o for o in found if o["kind"] in ("DaemonSet", "Deployment")]
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def env_of(found: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod_spec(found)["containers"][0]["env"]}


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda v: v.name if v else "defaults")
def test_chart_lints_clean(helm: Path, values: Path | None) -> None:
    """`helm lint --strict` passes with the default values and with each ci/ value file."""
    extra = ["-f", str(values)] if values else []
    run(helm, "lint", "--strict", CHART, *extra)


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda v: v.name if v else "defaults")
def test_rendered_objects_are_valid(helm: Path, values: Path | None) -> None:
    """Every object `helm template` renders validates strictly (Kubernetes schemas, CRD schemas)."""
    validate_all(render(helm, values=values))


def test_defaults_are_a_node_critical_daemonset_on_linux_nodes(helm: Path) -> None:
    """By default: a DaemonSet on linux nodes, system-node-critical, hostPort 5000, cache on hostPath."""
    found = render(helm)
    spec = pod_spec(found)
    assert one(found, "DaemonSet")
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["containers"][0]["ports"][0]["hostPort"] == 5000
    (cache,) = [v for v in spec["volumes"] if v["name"] == "cache"]
    assert cache["hostPath"]["path"] == "/var/cache/mirror"
    assert [c["name"] for c in spec["initContainers"]] == ["cache-owner", "node-config"]


def test_container_is_non_root_read_only_without_capabilities(helm: Path) -> None:
    """The mirror container runs as uid 10001, read-only root filesystem, every capability dropped."""
    spec = pod_spec(render(helm))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    context = spec["containers"][0]["securityContext"]
    assert context == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_config_change_changes_the_checksum_annotation(helm: Path) -> None:
    """A changed setting changes `checksum/config`, so the pods roll."""

    def checksum(*args: str) -> str:
        found = render(helm, *args)
        (workload,) = [o for o in found if o["kind"] == "DaemonSet"]
        value: str = workload["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum() != checksum("--set", "config.tag_ttl=60")
    assert checksum() != checksum("--set", "cache.maxBytes=10G")


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda v: v.name if v else "defaults")
def test_rendered_config_loads_in_the_mirror(helm: Path, values: Path | None, tmp_path: Path) -> None:
    """The config.toml the chart renders, with the plain environment it sets, is accepted by the mirror."""
    found = render(helm, values=values)
    config = tmp_path / "config.toml"
    config.write_text(one(found, "ConfigMap", "m-mirror")["data"]["config.toml"])
    env = {k: v for k, v in env_of(found).items() if isinstance(v, str) and k.startswith("MIRROR_")}
    env.pop("MIRROR_CONFIG")
    env.pop("MIRROR_UPSTREAM_PASSWORD_FILE", None)  # the Secrets are mounted in a pod only
    if env.pop("MIRROR_PEER_SECRET_FILE", None):
        env["MIRROR_PEER_SECRET"] = "a-peer-secret-of-32-characters!!"
    env = {k: v.replace("$(POD_IP)", "10.1.2.3") for k, v in env.items()}
    env["MIRROR_CACHE_DIR"] = str(tmp_path / "cache")
    table = tomllib.loads(config.read_text())
    for upstream in table.get("upstreams", []):  # likewise: stand-in files for the mounted Secrets
        if "password_file" in upstream:
            secret = tmp_path / f"secret-{upstream['registry']}"
            secret.write_text("token\n")
            config.write_text(config.read_text().replace(upstream["password_file"], str(secret)))
    settings = load({}, env, config)
    assert settings.cache_max_bytes == load({"cache_max_bytes": table["cache_max_bytes"]}, {}).cache_max_bytes


def test_inline_password_is_refused(helm: Path) -> None:
    """A password written into the values fails the render: credentials come from existing Secrets."""
    done = run(
        helm,
        "template",
        "m",
        CHART,
        "--set",
        "upstreams[0].registry=ghcr.io,upstreams[0].password=x",
        check=False,
    )
    assert done.returncode != 0
    assert "never a password in values" in done.stderr


def test_credentials_are_mounted_files_from_existing_secrets(helm: Path) -> None:
    """Docker Hub's and each upstream's password are files from the named Secrets, never env values."""
    found = render(helm, values=CHART / "ci" / "daemonset-all-values.yaml")
    env = env_of(found)
    assert env["MIRROR_UPSTREAM_PASSWORD_FILE"] == "/var/run/secrets/mirror/upstream/password"
    assert "MIRROR_UPSTREAM_PASSWORD" not in env
    volumes = {v["name"]: v for v in pod_spec(found)["volumes"]}
    assert volumes["upstream-credentials"]["secret"]["secretName"] == "mirror-dockerhub"
    assert volumes["upstream-0"]["secret"] == {
        "secretName": "ghcr-token",
        "defaultMode": 0o440,
        "items": [{"key": "token", "path": "password"}],
    }
    config = tomllib.loads(one(found, "ConfigMap", "m-mirror")["data"]["config.toml"])
    assert config["upstreams"][0]["password_file"] == "/var/run/secrets/mirror/upstreams/0/password"


def test_every_toggle_renders_its_objects_and_settings(helm: Path) -> None:
    """With every toggle on: ServiceMonitor, PrometheusRule, Certificate, NetworkPolicy, the dashboard
    ConfigMap, the node-config init container, and the TLS, auth and Redis settings as environment."""
    found = render(helm, values=CHART / "ci" / "daemonset-all-values.yaml")
    kinds = {o["kind"] for o in found}
    assert {"ServiceMonitor", "PrometheusRule", "Certificate", "NetworkPolicy"} <= kinds
    dashboard = one(found, "ConfigMap", "m-mirror-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    env = env_of(found)
    assert env["MIRROR_TLS_CERT"] == "/etc/mirror/tls/tls.crt"
    assert env["MIRROR_TLS_KEY"] == "/etc/mirror/tls/tls.key"
    assert env["MIRROR_TLS_CLIENT_CA"] == "/etc/mirror/client-ca/ca.crt"
    assert env["MIRROR_AUTH_HTPASSWD"] == "/etc/mirror/auth/htpasswd/htpasswd"
    assert env["MIRROR_AUTH_TOKENS"] == "/etc/mirror/auth/tokens/tokens"
    (node_config,) = [c for c in pod_spec(found)["initContainers"] if c["name"] == "node-config"]
    assert node_config["args"][0] == "node-config"
    assert node_config["args"][-3:] == ["docker.io", "ghcr.io", "registry.k8s.io"]
    assert one(found, "Certificate")["spec"]["secretName"] == "m-mirror-tls"
    relabel = one(found, "ServiceMonitor")["spec"]["endpoints"][0]["relabelings"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in relabel


def test_shared_mode_settings_come_from_secrets_and_the_downward_api(helm: Path) -> None:
    """With Redis: the URL from its Secret, the advertise URL from the pod IP, the peer secret as a file."""
    found = render(helm, values=CHART / "ci" / "deployment-values.yaml")
    env = env_of(found)
    assert env["MIRROR_REDIS_URL"] == {"secretKeyRef": {"name": "mirror-redis", "key": "url"}}
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["MIRROR_ADVERTISE_URL"] == "https://$(POD_IP):5000"
    assert env["MIRROR_PEER_SECRET_FILE"] == "/etc/mirror/peer/secret"
    assert "MIRROR_PEER_SECRET" not in env
    volumes = {v["name"]: v for v in pod_spec(found)["volumes"]}
    assert volumes["peer-secret"]["secret"]["secretName"] == "mirror-peer"


def test_shared_mode_with_client_certificates_fails_the_render(helm: Path) -> None:
    """Redis with tls.clientCA is refused at render time, as the mirror refuses it at start-up."""
    values = CHART / "ci" / "daemonset-all-values.yaml"
    done = run(
        helm,
        "template",
        "m",
        CHART,
        "-f",
        values,
        "--set",
        "redis.url=redis://r:6379/0,redis.peerSecret.existingSecret=p",
        check=False,
    )
    assert done.returncode != 0
    assert "peers present no client certificate" in done.stderr


def test_prometheus_rule_holds_the_shipped_alert_rules(helm: Path) -> None:
    """The PrometheusRule's groups are exactly deploy/prometheus/mirror-alerts.yml's."""
    found = render(helm, "--set", "prometheusRule.enabled=true")
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "mirror-alerts.yml").read_text())
    assert one(found, "PrometheusRule")["spec"]["groups"] == shipped["groups"]


def test_emptydir_cache_is_sized_from_cache_max_bytes(helm: Path) -> None:
    """In Deployment mode the emptyDir's sizeLimit and the ephemeral-storage request follow
    cache.maxBytes: 10G → 10240 Mi + 10 % + 2048 Mi."""
    found = render(helm, "--set", "mode=Deployment,cache.maxBytes=10G")
    spec = pod_spec(found)
    (cache,) = [v for v in spec["volumes"] if v["name"] == "cache"]
    assert cache["emptyDir"]["sizeLimit"] == "13312Mi"
    assert spec["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "13312Mi"
    assert "priorityClassName" not in spec
    assert "hostPort" not in spec["containers"][0]["ports"][0]


def test_deployment_gets_a_disruption_budget_and_a_daemonset_none(helm: Path) -> None:
    """Deployment mode renders a PodDisruptionBudget selecting its pods; the DaemonSet renders none."""
    found = render(helm, "--set", "mode=Deployment")
    budget = one(found, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"]
        == one(found, "Deployment")["spec"]["selector"]["matchLabels"]
    )
    assert "PodDisruptionBudget" not in {o["kind"] for o in render(helm)}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("serviceMonitor.enable=true", "Additional property enable is not allowed"),
        ("cache.maxBytes=lots", "cache.maxBytes"),
        ("mode=StatefulSet", "mode"),
        ("config.listen=0.0.0.0:80", "config.listen is set by the chart"),
    ],
)
def test_mistyped_or_managed_values_fail_the_render(helm: Path, setting: str, message: str) -> None:
    """A misspelt key, a bad size or mode (values.schema.json) or a key the chart owns fails helm template."""
    done = run(helm, "template", "m", CHART, "--set", setting, check=False)
    assert done.returncode != 0
    assert message in done.stderr


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda v: v.name if v else "defaults")
def test_no_volume_is_mounted_inside_another(helm: Path, values: Path | None) -> None:
    """No mount point lies inside another mount: ConfigMap and Secret volumes are read-only, so the
    runtime could not create a mount point in one."""
    for container in pod_spec(render(helm, values=values))["containers"]:
        paths = [m["mountPath"].rstrip("/") + "/" for m in container["volumeMounts"]]
        nested = [(a, b) for a in paths for b in paths if a != b and b.startswith(a)]
        assert nested == [], nested


def test_node_config_sidecar_args_parse_as_the_mirror_command(helm: Path) -> None:
    """The node-config sidecar's args are a valid `mirror node-config` command line: the registries of
    docker.io and every upstream, this node's mirror, and removal of its files when the pod stops."""
    found = render(helm, values=CHART / "ci" / "daemonset-all-values.yaml")
    (sidecar,) = [c for c in pod_spec(found)["initContainers"] if c["name"] == "node-config"]
    assert sidecar["restartPolicy"] == "Always"
    args = cli.parser().parse_args(sidecar["args"])
    assert args.command == "node-config"
    assert args.until_stopped is True
    assert str(args.certs_dir) == "/host/etc/containerd/certs.d"
    assert args.registries == ["docker.io", "ghcr.io", "registry.k8s.io"]
    mount = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}["containerd-certs-d"]
    assert mount == "/host/etc/containerd/certs.d"


def test_deployment_mode_has_no_node_config(helm: Path) -> None:
    """A Deployment configures no node: nodeConfig applies to the DaemonSet only."""
    spec = pod_spec(render(helm, "--set", "mode=Deployment"))
    assert "initContainers" not in spec
