"""Monitoring: local Prometheus / Alertmanager, generated scrape configs, rules, dashboards and KPIs.

Modules (one concept each):
    paths              where the shipped files of ``deploy/triton/monitoring/`` are
    process            a local server process started and stopped by PID (no orphans)
    prometheus_config  the generated ``prometheus.yml`` (scrape targets, rule files, alertmanagers)
    rules              the shipped rules file: recording rules, alerts, shortened ``for:`` variants
    prometheus_local   Debian's ``prometheus`` on 127.0.0.1
    alertmanager_local Debian's ``prometheus-alertmanager`` on 127.0.0.1
    promtool           ``promtool check config|rules`` and ``promtool test rules``
    client             a small Prometheus HTTP API client (instant/range queries, alerts, rules)
    dashboard          the Grafana dashboard JSON: its PromQL expressions and which need a GPU
    kpi                the guide's KPI table evaluated on live data (``icd status``)
    stack              ``icd monitor up|down``: the whole local stack with its state file
"""
