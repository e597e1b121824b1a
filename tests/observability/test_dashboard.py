"""The Grafana dashboard is portable (datasource variable, no hard-coded UIDs), its queries are valid
PromQL, and every metric it or the alert rules name is one the mirror defines."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mirror.metrics import Metrics
from tests.observability.promserver import DASHBOARD, RULES

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# A metric name as written in PromQL; not a recording rule (`mirror:...`), not part of a longer word.
METRIC_NAME = re.compile(r"(?<![\w:])mirror_[a-z0-9_]*[a-z0-9]")
# The series names each family type exposes (prometheus_client names counters without `_total`).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}
# Grafana's variables, replaced by values that keep each query valid PromQL.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$__interval": "1m",
    "$instance": ".*",
    "$node": ".*",
    "$upstream": ".*",
}
# A query variable's `label_values(<series selector>, <label>)`: only the selector is PromQL.
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*\w+\)$")


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows are layout only), nested rows' panels included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def datasource_refs(node: object, path: str = "") -> Iterator[tuple[str, object]]:
    """Every `datasource` value anywhere under `node`, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield f"{path}.{key}", value
            yield from datasource_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from datasource_refs(item, f"{path}[{index}]")


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL text in the dashboard: panel targets and query variables."""
    queries = [target["expr"] for panel in query_panels(dashboard) for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def exported_series(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry can expose, labelled or not yet: derived from each family's type,
    plus the samples it exposes now."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def unknown_metrics(text: str, exported: set[str]) -> set[str]:
    """The metric names in `text` that are not series the mirror exposes."""
    return set(METRIC_NAME.findall(text)) - exported


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Series names of a fresh `Metrics()`."""
    return exported_series(Metrics().registry)


def test_dashboard_has_a_prometheus_datasource_variable() -> None:
    """The first variable is `datasource`, of type datasource, listing Prometheus data sources."""
    variables = load_dashboard()["templating"]["list"]
    datasource = variables[0]
    assert (datasource["name"], datasource["type"], datasource["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )


def test_upstream_variable_lists_the_upstreams_of_client_requests() -> None:
    """The `upstream` variable is a multi-value query of label_values(mirror_requests_total, upstream)."""
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    upstream = variables["upstream"]
    assert upstream["type"] == "query"
    assert upstream["query"]["query"] == "label_values(mirror_requests_total, upstream)"
    assert upstream["datasource"] == DATASOURCE
    assert upstream["multi"]
    assert upstream["includeAll"]


def test_every_query_filtered_by_instance_is_filtered_by_node_too() -> None:
    """Each panel query that follows the `instance` variable follows `node` as well (one mirror per node)."""
    dashboard = load_dashboard()
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names.index("node") < names.index("instance")
    panel_queries = [t["expr"] for p in query_panels(dashboard) for t in p.get("targets", [])]
    assert panel_queries
    for expr in panel_queries:
        assert expr.count('instance=~"$instance"') == expr.count('node=~"$node"'), expr


def test_requires_matches_the_grafana_version_the_readme_names() -> None:
    """`__requires` asks for the Grafana version deploy/grafana/README.md says the file is written for."""
    (grafana,) = [r for r in load_dashboard()["__requires"] if r["id"] == "grafana"]
    readme = (DASHBOARD.parent / "README.md").read_text()
    assert f"Grafana {grafana['version'].removesuffix('.0')}" in readme


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    """Each querying panel and each of its targets names the data source as ${datasource}."""
    panels = query_panels(load_dashboard())
    assert panels
    for panel in panels:
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        assert panel.get("targets"), f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, (panel["title"], target["refId"])


def test_no_datasource_uid_is_hard_coded() -> None:
    """No `datasource` anywhere in the dashboard names a concrete UID (or name) instead of the variable."""
    dashboard = load_dashboard()
    refs = list(datasource_refs(dashboard))
    assert refs
    hard_coded = [
        (where, value)
        for where, value in refs
        if not (isinstance(value, dict) and value.get("uid") == "${datasource}")
    ]
    assert not hard_coded


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    """Panel ids are unique and no two panels share a cell of the 24-column grid."""
    panels = load_dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, passes `promtool check rules` as a rule."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for index, query in enumerate(dashboard_queries(load_dashboard())):
        if match := LABEL_VALUES.match(query):
            query = match["selector"]
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"unknown Grafana variable in {query}"
        lines += [f"      - record: dashboard:query_{index}", f"        expr: {json.dumps(query)}"]
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_dashboard_names_only_metrics_the_mirror_defines(exported: set[str]) -> None:
    """Every mirror_* name in the dashboard's queries is a series of mirror.metrics.Metrics()."""
    queries = dashboard_queries(load_dashboard())
    named = {name for query in queries for name in METRIC_NAME.findall(query)}
    assert "mirror_bytes_served_total" in named  # the scan found the queries
    assert not unknown_metrics("\n".join(queries), exported)


def test_rules_name_only_metrics_the_mirror_defines(exported: set[str]) -> None:
    """Every mirror_* name in the rule file, expressions and runbooks alike, is a series of the mirror."""
    text = RULES.read_text()
    assert "mirror_upstream_breaker_state" in METRIC_NAME.findall(text)
    assert not unknown_metrics(text, exported)


@pytest.mark.parametrize(
    ("text", "unknown"),
    [
        ("sum(rate(mirror_requests_total[5m]))", set()),
        ("histogram_quantile(0.99, rate(mirror_request_duration_seconds_bucket[5m]))", set()),
        ("mirror_cache_size_bytes / mirror_cache_limit_bytes", set()),
        ('count by (version) (mirror_build_info{job="x"})', set()),
        ("mirror:cache_hit_ratio:rate5m < 0.5", set()),
        ("rate(mirror_no_such_thing_total[5m])", {"mirror_no_such_thing_total"}),
        ("rate(mirror_requests[5m])", {"mirror_requests"}),  # the family name is not a series
        ("mirror_request_duration_seconds", {"mirror_request_duration_seconds"}),  # nor a histogram's
        (
            "rate(mirror_cache_size_bytes_total[5m])",
            {"mirror_cache_size_bytes_total"},
        ),  # a gauge has no _total
        ("mirror_build", {"mirror_build"}),  # an info is exposed as mirror_build_info
    ],
)
def test_unknown_metric_names_are_reported(exported: set[str], text: str, unknown: set[str]) -> None:
    """The name check accepts real series of each type and reports names the registry does not expose."""
    assert unknown_metrics(text, exported) == unknown
