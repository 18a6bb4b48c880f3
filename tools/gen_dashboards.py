"""Writes Tutti's Grafana dashboards (k8s/observability/dashboards/*.json):
``python -m tools.gen_dashboards``. The JSON is checked in (Grafana loads it as it is); a test
checks it matches this file and that every metric its queries use is one the code exports.

* Golden signals: per service (variable ``job``), calls per second, server-side error ratio,
  p99 per method, calls in flight, p99 of calls to other services, connection pools.
* Events: Kafka consumer lag per group and topic, event handling p99, outbox backlog and relay lag.
* Business: orders placed and refused per channel, reservations refused for stock, POS, returns,
  reallocations, gateway admissions and rate-limit refusals by principal kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "k8s" / "observability" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SERVER_ERRORS = 'rpc_grpc_status_code=~"2|4|12|13|14|15"'
UNARY = 'rpc_method!~"Watch.*|Stream.*|ServerReflectionInfo"'


def panel(title: str, targets: list[tuple[str, str]], *, unit: str = "short", kind: str = "timeseries",
          description: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]}
        },
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(uid: str, title: str, rows: list[tuple[str, list[dict[str, Any]]]],
              variables: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row_title, row in rows:
        panels.append({"type": "row", "title": row_title, "id": next_id, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        width = 24 // min(len(row), 3)
        for i, item in enumerate(row):
            item["id"] = next_id
            next_id += 1
            item["gridPos"] = {"h": 8, "w": width, "x": (i % 3) * width, "y": y + (i // 3) * 8}
            panels.append(item)
        y += 8 * ((len(row) + 2) // 3)
    return {
        "uid": uid,
        "title": title,
        "tags": ["tutti"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            *(variables or []),
        ]},
        "panels": panels,
    }


def job_variable() -> dict[str, Any]:
    return {
        "name": "job", "label": "service", "type": "query", "datasource": DATASOURCE,
        "query": {"query": "label_values(rpc_server_duration_seconds_count, job)", "refId": "jobs"},
        "definition": "label_values(rpc_server_duration_seconds_count, job)",
        "includeAll": True, "multi": True, "refresh": 2, "current": {"text": "All", "value": "$__all"},
    }


def golden_signals() -> dict[str, Any]:
    job = 'job=~"$job"'
    rate = "$__rate_interval"
    return dashboard("tutti-golden-signals", "Tutti / golden signals", [
        ("Traffic and errors", [
            panel("Calls per second by service", [
                (f"sum by (job) (rate(rpc_server_duration_seconds_count{{{job}}}[{rate}]))", "{{job}}"),
            ], unit="reqps"),
            panel("Server-side error ratio", [
                (f"sum by (job) (rate(rpc_server_duration_seconds_count{{{job},{SERVER_ERRORS}}}[{rate}]))"
                 f" / sum by (job) (rate(rpc_server_duration_seconds_count{{{job}}}[{rate}]))", "{{job}}"),
            ], unit="percentunit",
                description="UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS"),
            panel("Calls by status code", [
                ("sum by (job, rpc_grpc_status_code) "
                 f"(rate(rpc_server_duration_seconds_count{{{job}}}[{rate}]))",
                 "{{job}} {{rpc_grpc_status_code}}"),
            ], unit="reqps", description="gRPC status codes: 0 OK, 3 INVALID_ARGUMENT, 5 NOT_FOUND, "
                                         "8 RESOURCE_EXHAUSTED, 9 FAILED_PRECONDITION, 14 UNAVAILABLE"),
        ]),
        ("Latency and saturation", [
            panel("p99 duration by method (unary)", [
                ("histogram_quantile(0.99, sum by (job, rpc_method, le) "
                 f"(rate(rpc_server_duration_seconds_bucket{{{job},{UNARY}}}[{rate}])))",
                 "{{job}} {{rpc_method}}"),
            ], unit="s"),
            panel("Calls in flight", [
                (f"sum by (job, rpc_method) (rpc_server_active_requests{{{job}}}) > 0",
                 "{{job}} {{rpc_method}}"),
            ]),
            panel("p99 of calls to other services", [
                ("histogram_quantile(0.99, sum by (job, rpc_service, rpc_method, le) "
                 f"(rate(rpc_client_duration_seconds_bucket{{{job}}}[{rate}])))",
                 "{{job}} → {{rpc_method}}"),
            ], unit="s"),
            panel("PostgreSQL pool in use / max", [
                (f'sum by (job, pool) (tutti_db_pool_connections{{{job},state="open"}}) - sum by (job, pool) '
                 f'(tutti_db_pool_connections{{{job},state="idle"}})', "{{job}} in use"),
                (f'sum by (job, pool) (tutti_db_pool_connections{{{job},state="max"}})', "{{job}} max"),
            ]),
            panel("Redis pool in use / max", [
                (f'sum by (job) (tutti_redis_pool_connections{{{job},state="in_use"}})', "{{job}} in use"),
                (f'sum by (job) (tutti_redis_pool_connections{{{job},state="max"}})', "{{job}} max"),
            ]),
        ]),
    ], [job_variable()])


def events() -> dict[str, Any]:
    rate = "$__rate_interval"
    return dashboard("tutti-events", "Tutti / Kafka and outboxes", [
        ("Consumers", [
            panel("Consumer lag (records) by group and topic", [
                ("sum by (consumer_group, topic) (tutti_kafka_consumer_lag_records)",
                 "{{consumer_group}} {{topic}}"),
            ]),
            panel("Events handled per second", [
                (f"sum by (consumer_group, topic) (rate(tutti_events_handled_total[{rate}]))",
                 "{{consumer_group}} {{topic}}"),
            ], unit="ops"),
            panel("Event handling p99", [
                ("histogram_quantile(0.99, sum by (consumer_group, topic, le) "
                 f"(rate(tutti_event_handling_duration_seconds_bucket[{rate}])))",
                 "{{consumer_group}} {{topic}}"),
            ], unit="s", description="Per record, or per partition batch for batch consumers (tracking)"),
        ]),
        ("Outboxes", [
            panel("Outbox backlog (events waiting)", [
                ("max by (outbox) (tutti_outbox_backlog_events)", "{{outbox}}"),
            ]),
            panel("Relay lag (age of the oldest waiting event)", [
                ("max by (outbox) (tutti_outbox_oldest_age_seconds)", "{{outbox}}"),
            ], unit="s"),
            panel("Lag per partition (top 10)", [
                ("topk(10, tutti_kafka_consumer_lag_records)", "{{consumer_group}} {{topic}}[{{partition}}]"),
            ]),
        ]),
    ])


def business() -> dict[str, Any]:
    window = "$__rate_interval"
    return dashboard("tutti-business", "Tutti / business by channel", [
        ("Orders", [
            panel("Orders placed per minute by channel", [
                (f"sum by (channel) (rate(tutti_orders_placed_total[{window}])) * 60", "{{channel}}"),
            ]),
            panel("Placements refused per minute by reason", [
                (f"sum by (channel, reason) (rate(tutti_orders_refused_total[{window}])) * 60",
                 "{{channel}} {{reason}}"),
            ]),
            panel("Reservations refused for stock per minute by channel", [
                (f"sum by (channel) (rate(tutti_reservations_refused_for_stock_total[{window}])) * 60",
                 "{{channel}}"),
            ]),
            panel("Reallocations per minute", [
                (f"sum by (trigger, outcome) (rate(tutti_reallocations_total[{window}])) * 60",
                 "{{trigger}} {{outcome}}"),
            ]),
        ]),
        ("Stores and returns", [
            panel("POS transactions per minute", [
                (f"sum by (kind) (rate(tutti_pos_transactions_total[{window}])) * 60", "{{kind}}"),
            ]),
            panel("Returns opened per minute by channel", [
                (f"sum by (channel, kind) (rate(tutti_returns_created_total[{window}])) * 60",
                 "{{channel}} {{kind}}"),
            ]),
            panel("Returns received per minute", [
                (f"sum by (location_type) (rate(tutti_returns_received_total[{window}])) * 60",
                 "{{location_type}}"),
            ]),
            panel("Background tasks parked (refused for good; `tutti tasks list`)", [
                (f"sum by (kind) (increase(tutti_returns_tasks_parked_total[{window}]))", "returns {{kind}}"),
                (f"sum by (kind) (increase(tutti_orchestrator_tasks_parked_total[{window}]))",
                 "orchestrator {{kind}}"),
            ]),
        ]),
        ("Callers", [
            panel("Calls admitted by principal kind", [
                (f"sum by (principal_kind) (rate(tutti_gateway_admitted_calls_total[{window}]))",
                 "{{principal_kind}}"),
            ], unit="reqps"),
            panel("Calls refused by rate limits", [
                (f"sum by (principal_kind) (rate(tutti_gateway_rate_limited_calls_total[{window}]))",
                 "{{principal_kind}}"),
            ], unit="reqps"),
            panel("Calls refused as overload (too many in flight)", [
                (f"sum by (bound) (rate(tutti_gateway_overload_refused_calls_total[{window}]))",
                 "{{bound}}"),
            ], unit="reqps"),
        ]),
    ])


DASHBOARDS = {
    "tutti-golden-signals.json": golden_signals,
    "tutti-events.json": events,
    "tutti-business.json": business,
}


def render() -> dict[str, str]:
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
