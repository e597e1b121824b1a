"""The kustomize files (deploy/k8s): the default, the base and every overlay render with `kubectl
kustomize` into objects valid against the Kubernetes and CRD schemas; the examples validate too."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from mirror.config import load
from tests.deploy.conftest import ROOT, run
from tests.deploy.manifests import objects, validate_all

K8S = ROOT / "deploy" / "k8s"
TARGETS = [K8S, K8S / "base", *sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())]


def kustomize(kubectl: Path, target: Path) -> list[dict[str, Any]]:
    return objects(run(kubectl, "kustomize", target).stdout)


def daemonset(found: list[dict[str, Any]]) -> dict[str, Any]:
    (match,) = [o for o in found if o["kind"] == "DaemonSet"]
    return match


@pytest.mark.parametrize("target", TARGETS, ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_renders_valid_objects(kubectl: Path, target: Path) -> None:
    """`kubectl kustomize` of the default, the base and each overlay gives strictly valid objects."""
    validate_all(kustomize(kubectl, target))


@pytest.mark.parametrize("example", ["sidecar-example.yaml", "secret.example.yaml"])
def test_examples_are_valid_objects(example: str) -> None:
    """The example manifests next to the kustomization validate strictly as well."""
    validate_all(objects((K8S / example).read_text()))


def test_daemonset_is_node_critical_on_linux_nodes_and_rolls_on_config(kubectl: Path) -> None:
    """The DaemonSet runs on linux nodes at system-node-critical and mounts the hash-named ConfigMap."""
    found = kustomize(kubectl, K8S)
    spec = daemonset(found)["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["priorityClassName"] == "system-node-critical"
    (config_map,) = [o for o in found if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["name"].startswith("mirror-config-")
    (volume,) = [v for v in spec["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]


def test_shipped_config_loads_in_the_mirror(tmp_path: Path) -> None:
    """base/config.toml is accepted by the mirror and bounds the cache with cache_max_bytes."""
    path = K8S / "base" / "config.toml"
    settings = load({"cache_dir": str(tmp_path)}, {}, path)
    assert tomllib.loads(path.read_text())["cache_max_bytes"] == "50G"
    assert settings.cache_max_bytes == 50 * 1024**3


def test_node_config_sidecar_runs_on_the_mirror_image_and_cleans_up(kubectl: Path) -> None:
    """The base's node-config sidecar runs `mirror node-config --until-stopped` on the mirror's image."""
    spec = daemonset(kustomize(kubectl, K8S))["spec"]["template"]["spec"]
    init = {c["name"]: c for c in spec["initContainers"]}
    assert init["node-config"]["args"][0] == "node-config"
    assert "--until-stopped" in init["node-config"]["args"]
    assert init["node-config"]["restartPolicy"] == "Always"
    assert init["node-config"]["image"] == spec["containers"][0]["image"]
