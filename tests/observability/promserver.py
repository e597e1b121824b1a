"""A real `prometheus` process on 127.0.0.1 for tests, and the paths of the observability assets."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from tests.support.net import free_port, raw_request, wait_http
from tests.support.procs import stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "mirror-alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "mirror-alerts.test.yml"
EXAMPLE_CONFIG = PROMETHEUS_DIR / "prometheus.example.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "mirror-dashboard.json"
T = TypeVar("T")


def missing_binary(name: str) -> NoReturn:
    """Fail the test with the command that installs `name`."""
    pytest.fail(f"{name} is not on PATH: install the Debian package prometheus (scripts/install-system-deps)")


def binary(name: str) -> str:
    """The path of `name` (promtool, prometheus), or fail the test."""
    return shutil.which(name) or missing_binary(name)


class PrometheusServer:
    """One Prometheus scraping `targets` (job "mirror") and evaluating `rule_files`, both every second."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path]) -> None:
        self.workdir = workdir
        self.targets = targets
        self.rule_files = rule_files
        self.config_path = workdir / "prometheus.yml"
        self.data_dir = workdir / "data"
        self.log_path = workdir / "prometheus.log"
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:9090."""
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [{"job_name": "mirror", "static_configs": [{"targets": self.targets}]}],
        }

    def start(self, deadline_s: float = 15.0) -> PrometheusServer:
        """Start and wait until /-/ready answers 200 (rules loaded, TSDB open)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML
        args = [
            binary("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_http(f"{self.url}/-/ready", deadline_s, ok_statuses={200}, proc=self._proc)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"prometheus did not start ({exc}); log:\n{self.log_tail()}") from exc
        return self

    def stop(self) -> None:
        """Terminate the process we started (SIGTERM, then SIGKILL after 10 s) and reap it."""
        proc, self._proc = self._proc, None
        stop_process(proc)

    def log_tail(self, lines: int = 30) -> str:
        """The end of Prometheus' log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def api(self, path: str, **params: str) -> Any:
        """GET an HTTP API endpoint and return its `data`; fail on any error status."""
        url = f"{self.url}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        resp = raw_request("GET", url)
        payload = json.loads(resp.body)
        if resp.status != 200 or payload.get("status") != "success":
            raise AssertionError(f"GET {url} answered {resp.status}: {resp.body[:500]!r}")
        return payload["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: each series of the result vector with its value."""
        data = self.api("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def value(self, expr: str) -> float | None:
        """The value of an instant query that yields at most one series (None for an empty result)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} gave {len(result)} series: {result}"
        return result[0][1] if result else None
