"""Turn routes into verdicts: does the registry's first endpoint name the mirror, and does it serve?"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

from mirror import oci
from mirror.commands.doctor.model import Route, RuntimeConfig
from mirror.commands.probes import Endpoint, ProbeResult, PullStyle, probe

OK, PROBLEM, UNSUPPORTED = "ok", "problem", "unsupported"


@dataclass
class Finding:
    """The verdict for one registry under one runtime."""

    registry: str
    status: str  # ok | problem | unsupported (the runtime cannot mirror it; not counted as a problem)
    via: str | None = None
    source: str | None = None
    problems: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    probe: ProbeResult | None = None
    note: str | None = None


@dataclass
class RuntimeResult:
    """A runtime's configuration and its findings."""

    config: RuntimeConfig
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not self.config.problems and all(f.status != PROBLEM for f in self.findings)


def host_port(url: str) -> tuple[str, int]:
    """(host, port) of a URL, the default port filled in: how two spellings of one endpoint compare."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
    return (parts.hostname or "", parts.port or (80 if parts.scheme == "http" else 443))


def _chosen(route: Route, mirror_url: str | None, finding: Finding) -> Endpoint | None:
    """The endpoint to prove; records a problem when the mirror is not the first endpoint tried."""
    if not route.endpoints:
        return None
    first = route.endpoints[0]
    if mirror_url is None:
        return first
    wanted = host_port(mirror_url)
    for position, endpoint in enumerate(route.endpoints):
        if host_port(endpoint.url) == wanted:
            if position:
                finding.problems.append(f"{first.url} is tried before the mirror")
                finding.fixes.append(f"put {mirror_url} first in {route.source}")
            return endpoint
    finding.problems.append(f"pulls go to {first.url}, not to the mirror {mirror_url}")
    finding.fixes.append(f"point {route.source} at {mirror_url}")
    return None


class _Prober:
    """Runs each distinct (style, endpoint, image) probe once."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.done: dict[tuple[PullStyle, Endpoint, str], ProbeResult] = {}

    def __call__(self, style: PullStyle, endpoint: Endpoint, image: oci.ImageRef) -> ProbeResult:
        key = (style, endpoint, str(image))
        if key not in self.done:
            self.done[key] = probe(endpoint, style, image, self.timeout)
        return self.done[key]


def _finding(
    config: RuntimeConfig,
    route: Route,
    mirror_url: str | None,
    images: dict[str, oci.ImageRef],
    prober: _Prober | None,
) -> Finding:
    finding = Finding(
        route.registry, OK, source=route.source, problems=list(route.problems), fixes=list(route.fixes)
    )
    if not route.supported:
        finding.status = UNSUPPORTED
        return finding
    endpoint = _chosen(route, mirror_url, finding)
    finding.via = endpoint.url if endpoint else None
    if endpoint is not None and prober is not None:
        image = images.get(route.registry)
        if image is None:
            finding.note = f"not proven: pass --image {route.registry}/NAME:TAG to pull a manifest through it"
        else:
            finding.probe = prober(config.style, endpoint, image)
            if not finding.probe.ok:
                finding.problems.append(
                    f"the mirror did not serve {image} as {config.runtime} asks: {finding.probe.error}"
                )
                finding.fixes.append(
                    f"check the mirror answers ({endpoint.url}/readyz) and reaches {route.registry}"
                )
    if not finding.via and not finding.problems:
        finding.problems.append(f"pulls of {route.registry} go straight to it")
    finding.status = PROBLEM if finding.problems else OK
    return finding


def evaluate(
    configs: Sequence[RuntimeConfig],
    mirror_url: str | None,
    images: dict[str, oci.ImageRef],
    *,
    run_probes: bool = True,
    timeout: float = 10.0,
) -> list[RuntimeResult]:
    """A verdict for every route of every runtime; probes run when asked (each distinct one once)."""
    prober = _Prober(timeout) if run_probes else None
    return [
        RuntimeResult(c, [_finding(c, route, mirror_url, images, prober) for route in c.routes])
        for c in configs
    ]
