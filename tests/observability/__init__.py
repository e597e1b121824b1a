"""Tests of the observability assets under deploy/: alert rules, the Grafana dashboard, and a real Prometheus
scraping a real mirror."""
