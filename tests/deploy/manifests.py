"""Offline validation of rendered Kubernetes objects: built-in kinds against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields fail), custom resources against the CRD schemas in
crd-schemas/ made just as strict."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

CRD_DIR = Path(__file__).parent / "crd-schemas"
#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion; native sidecars) and a recent one.
KUBERNETES_VERSIONS = ("1.29.0", "1.32.0")


def objects(rendered: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML stream (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _closed(schema: Any) -> Any:
    """The schema with `additionalProperties: false` on every object that lists its properties."""
    if isinstance(schema, dict):
        found = {key: _closed(value) for key, value in schema.items()}
        if (
            "properties" in found
            and "additionalProperties" not in found
            and not found.get("x-kubernetes-preserve-unknown-fields")
        ):
            found["additionalProperties"] = False
        return found
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@functools.cache
def _crds() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) → a strict validator for each vendored CRD."""
    found = {}
    for path in CRD_DIR.glob("*.json"):
        crd = json.loads(path.read_text())
        schema = _closed(copy.deepcopy(crd["openAPIV3Schema"]))
        found[(f"{crd['group']}/{crd['version']}", crd["kind"])] = jsonschema.Draft7Validator(schema)
    return found


def validate(obj: dict[str, Any], versions: Iterable[str] = KUBERNETES_VERSIONS) -> None:
    """Raise AssertionError naming the object and the problem if `obj` is not valid."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    crd = _crds().get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if crd is not None:
        errors = sorted(crd.iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            raise AssertionError(
                f"{name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
            )
        return
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{name} (Kubernetes {version}): {list(exc.path)}: {exc.message}") from None
        except kubernetes_validate.SchemaNotFoundError:
            raise AssertionError(
                f"{name}: no schema for {obj.get('apiVersion')} in Kubernetes {version}"
            ) from None


def validate_all(found: Iterable[dict[str, Any]], versions: Iterable[str] = KUBERNETES_VERSIONS) -> None:
    for obj in found:
        validate(obj, versions)
