"""The alert and recording rules pass promtool's checks and their unit tests, and those tests catch broken
thresholds; the example Prometheus config is valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.observability.promserver import EXAMPLE_CONFIG, PROMETHEUS_DIR, RULE_TESTS, RULES

# Debian builds Prometheus without Kubernetes service discovery; its promtool rejects the pod job as is.
NO_KUBERNETES_SD = "field kubernetes_sd_configs not found"
KUBERNETES_SD_BLOCK = """    kubernetes_sd_configs:
      - role: pod
        namespaces:
          names: [mirror]
"""
STATIC_STAND_IN = """    static_configs:
      - targets: ["10.0.0.1:5000"]
"""


def run_promtool(promtool: str, *args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    """Run promtool with stdout and stderr together in `.stdout`."""
    return subprocess.run(
        [promtool, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


def rule_tests_naming(alert: str) -> str:
    """mirror-alerts.test.yml with only the test groups that name `alert` (each group costs ~0.1 s)."""
    head, marker, body = RULE_TESTS.read_text().partition("\ntests:\n")
    groups = [group for group in body.split("\n  - name:") if alert in group]
    assert groups, f"no test group of {RULE_TESTS.name} names {alert}"
    return head + marker + "  - name:" + "\n  - name:".join(groups) + "\n"


def test_rules_pass_promtool_check(promtool: str) -> None:
    """`promtool check rules` accepts the rule file (PromQL, templates, names)."""
    result = run_promtool(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    """`promtool test rules` passes every firing and not-firing case of mirror-alerts.test.yml."""
    result = run_promtool(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("alert", "threshold", "broken"),
    [
        ("MirrorUpstreamDown", "mirror_upstream_breaker_state >= 1", "mirror_upstream_breaker_state >= 3"),
        ("MirrorUpstreamDown", "mirror_upstream_breaker_state >= 1", "mirror_upstream_breaker_state >= 0"),
        ("MirrorRedisUnreachable", "mirror_redis_breaker_state >= 1", "mirror_redis_breaker_state >= 3"),
        ("MirrorRedisUnreachable", "mirror_redis_breaker_state >= 1", "mirror_redis_breaker_state >= 0"),
        (
            "MirrorRateLimitBudgetLow",
            "(mirror_upstream_ratelimit_limit > 0) < 0.1",
            "(mirror_upstream_ratelimit_limit > 0) < 0",
        ),
        (
            "MirrorRateLimitBudgetLow",
            "(mirror_upstream_ratelimit_limit > 0) < 0.1",
            "(mirror_upstream_ratelimit_limit > 0) < 1.1",
        ),
        (
            "MirrorHitRatioCollapsed",
            "mirror:cache_hit_ratio:rate5m < 0.5",
            "mirror:cache_hit_ratio:rate5m < 0",
        ),
        (
            "MirrorHitRatioCollapsed",
            "mirror:cache_hit_ratio:rate5m < 0.5",
            "mirror:cache_hit_ratio:rate5m < 1.1",
        ),
        (
            "MirrorBlobCorrupt",
            "increase(mirror_blob_corrupt_total[1h])) > 0",
            "increase(mirror_blob_corrupt_total[1h])) > 1",
        ),
    ],
    ids=[
        "upstream-down-never",
        "upstream-down-always",
        "redis-unreachable-never",
        "redis-unreachable-always",
        "ratelimit-never",
        "ratelimit-always",
        "hit-ratio-never",
        "hit-ratio-always",
        "blob-corrupt-never",
    ],
)
def test_unit_tests_catch_an_alert_that_never_or_always_fires(
    promtool: str, tmp_path: Path, alert: str, threshold: str, broken: str
) -> None:
    """With an alert's threshold made unreachable (or always met), its unit tests fail."""
    rules = RULES.read_text()
    assert rules.count(threshold) == 1, f"{alert}: {threshold!r} is not in the rules exactly once"
    (tmp_path / RULES.name).write_text(rules.replace(threshold, broken))
    (tmp_path / RULE_TESTS.name).write_text(rule_tests_naming(alert))
    result = run_promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0, f"{alert} with {broken!r} still passes:\n{result.stdout}"
    assert alert in result.stdout, result.stdout


def test_example_config_is_valid(promtool: str, tmp_path: Path) -> None:
    """`promtool check config` accepts prometheus.example.yml (pod discovery swapped for a static target
    where promtool is built without Kubernetes SD) and the rule file it loads."""
    result = run_promtool(promtool, "check", "config", str(EXAMPLE_CONFIG))
    if result.returncode != 0 and NO_KUBERNETES_SD in result.stdout:
        example = EXAMPLE_CONFIG.read_text()
        assert example.count(KUBERNETES_SD_BLOCK) == 1, "the pod discovery block changed: update this test"
        (tmp_path / EXAMPLE_CONFIG.name).write_text(example.replace(KUBERNETES_SD_BLOCK, STATIC_STAND_IN))
        shutil.copy(RULES, tmp_path / RULES.name)
        result = run_promtool(promtool, "check", "config", EXAMPLE_CONFIG.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert "SUCCESS" in result.stdout, result.stdout
