"""Synthetic series for `promtool test rules`: for every alert of tikit/conf/alerts.py, cases
where it must fire (with the exact labels and value) and cases where it must stay quiet.

Inputs are derived from the stack's thresholds where that is simple (a utilisation halfway
between warning and critical), and written out where Prometheus' own arithmetic is the point
(histogram buckets and their interpolated quantiles); ``_band`` asserts that such literals
still sit where the case says, so a changed setting fails with a clear message.

The expected annotations are rendered from the rule's own templates with the two constructs
tikit/conf/alerts.py allows: ``{{ $value | printf "<fmt>" }}`` and ``{{ $labels.<name> }}``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from tikit import settings
from tikit.conf import alerts, metrics

INTERVAL = "1m"
DEFAULT_EVAL_MINUTES = 30
SHORTEST_EVAL_MINUTES = 15

API_POD = "api-5d8f7c9b6-abcde"
WORKER_POD = "workers-6b7c8d9f5-pqrst"
PGBOUNCER_POD = "pgbouncer-rw-7c9d8b6f5-xyz12"
REDIS_POD = "redis-0"


def s(metric: str, **labels: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inner}}}"


def const(value: float, minutes: int) -> str:
    return f"{_fmt(value)}x{minutes}"


def counter(per_minute: float, minutes: int) -> str:
    return f"0+{_fmt(per_minute)}x{minutes}"


def _fmt(x: float) -> str:
    return format(x, ".12g")


def _band(value: float, low: float, high: float, what: str) -> None:
    assert low < value < high, f"{what}: synthetic value {value} is no longer between {low} and {high}; adjust the case"


@dataclass
class Case:
    alert: str
    name: str
    series: list[tuple[str, str]]
    # severity -> (labels the expression yields, value); absent severities must not fire.
    fires: dict[str, tuple[dict[str, str], float]] = field(default_factory=dict)
    eval_minutes: Optional[int] = None
    # Rule labels that pick the rules this case is about (one alert name per workload).
    rule_labels: dict[str, str] = field(default_factory=dict)

    def about(self, rule: dict[str, Any]) -> bool:
        return rule["alert"] == self.alert and self.rule_labels.items() <= rule["labels"].items()


@dataclass(frozen=True)
class Facts:
    """What the cases need to know about one region's rules."""

    cfg: settings.Settings
    scope: alerts.Scope

    @property
    def m(self) -> settings.Monitoring:
        return self.cfg.monitoring

    @property
    def ns(self) -> str:
        return self.scope.namespace


def _percent_band(warn: float, crit: float) -> tuple[float, float, float]:
    """(between, above both, below both) for thresholds where higher is worse."""
    return (warn + crit) / 2, (crit + 100) / 2 if crit < 100 else crit * 1.1, warn / 2


def utilization_cases(f: Facts) -> list[Case]:
    cases = []
    m, ns, minutes = f.m, f.ns, 60
    for workload, pod in (("api", API_POD), ("workers", WORKER_POD)):
        sel = dict(namespace=ns, pod=pod, container=workload)
        between, above, below = _percent_band(m.cpu_warning_percent, m.cpu_critical_percent)
        for label, pct, fires in (
            ("between", between, ("warning",)),
            ("above", above, ("warning", "critical")),
            ("below", below, ()),
        ):
            # One core requested; the counter grows pct/100 core-seconds per second.
            cases.append(
                Case(
                    "TikitCpuHigh",
                    f"{workload} CPU {label} thresholds",
                    [
                        (s("container_cpu_usage_seconds_total", **sel), counter(60 * pct / 100, minutes)),
                        (s("kube_pod_container_resource_requests", **sel, resource="cpu"), const(1, minutes)),
                    ],
                    {sev: ({"namespace": ns}, pct) for sev in fires},
                    rule_labels={"workload": workload},
                )
            )
        between, above, below = _percent_band(m.memory_warning_percent, m.memory_critical_percent)
        limit = 1024 * 1024 * 1024
        for label, pct, fires in (
            ("between", between, ("warning",)),
            ("above", above, ("warning", "critical")),
            ("below", below, ()),
        ):
            cases.append(
                Case(
                    "TikitMemoryHigh",
                    f"{workload} memory {label} thresholds",
                    [
                        (s("container_memory_working_set_bytes", **sel), const(limit * pct / 100, minutes)),
                        (s("kube_pod_container_resource_limits", **sel, resource="memory"), const(limit, minutes)),
                    ],
                    {sev: ({"namespace": ns, "pod": pod}, pct) for sev in fires},
                    rule_labels={"workload": workload},
                )
            )
    return cases


def _requests(f: Facts, ok_per_min: float, errors_per_min: float, minutes: int) -> list[tuple[str, str]]:
    base = dict(namespace=f.ns, job=alerts.MON_API, pod=API_POD)
    code = metrics.API_REQUEST_CODE_LABEL
    return [
        (s(metrics.API_REQUESTS, **base, **{code: "200"}), counter(ok_per_min, minutes)),
        (s(metrics.API_REQUESTS, **base, **{code: "503"}), counter(errors_per_min, minutes)),
        # 4xx are the client's fault and do not count against the API.
        (s(metrics.API_REQUESTS, **base, **{code: "404"}), counter(ok_per_min / 10, minutes)),
    ]


def error_rate_cases(f: Facts) -> list[Case]:
    m, minutes = f.m, 60
    warn, crit = m.error_rate_warning_percent, m.error_rate_critical_percent
    cases = []
    for label, pct, fires in (
        ("between", (warn + crit) / 2, ("warning",)),
        ("above", min(crit * 2, 100), ("warning", "critical")),
        ("below", warn / 2, ()),
    ):
        total = 1000.0
        errors = total * pct / 100
        # The 404s add ok/10 requests that are not errors: solve errors / (ok*1.1 + errors) = pct.
        ok = (errors / (pct / 100) - errors) / 1.1
        cases.append(
            Case(
                "TikitApiErrorRateHigh",
                f"5xx ratio {label} thresholds",
                _requests(f, ok, errors, minutes),
                {sev: ({"namespace": f.ns}, pct) for sev in fires},
            )
        )
    return cases


# Cumulative requests per minute per bucket (le) and the quantiles Prometheus interpolates.
HISTOGRAMS = {
    # p99: 1 + 1.5 * (99 - 98) / 2 = 1.75 s;  p95: 0.5 + 0.5 * (95 - 90) / 8 = 0.8125 s
    "p99 between": ({"0.1": 0, "0.5": 90, "1": 98, "2.5": 100, "5": 100, "+Inf": 100}, 1.75, 0.8125),
    # p99: 2.5 + 2.5 * (99 - 98) / 2 = 3.75 s;  p95 as above
    "p99 above": ({"0.1": 0, "0.5": 90, "1": 98, "2.5": 98, "5": 100, "+Inf": 100}, 3.75, 0.8125),
    # p99: 0.1 + 0.4 * (99 - 96) / 4 = 0.4 s;  p95: 0.1 * 95 / 96 s
    "fast": ({"0.1": 96, "0.5": 100, "1": 100, "2.5": 100, "5": 100, "+Inf": 100}, 0.4, 0.1 * 95 / 96),
}


def latency_cases(f: Facts) -> list[Case]:
    m, minutes = f.m, 60
    warn, crit, slo = m.latency_p99_warning_seconds, m.latency_p99_critical_seconds, m.latency_slo_ms / 1000
    _band(HISTOGRAMS["p99 between"][1], warn, crit, "p99 between")
    _band(HISTOGRAMS["p99 above"][1], crit, math.inf, "p99 above")
    _band(HISTOGRAMS["fast"][1], 0, min(warn, slo), "fast p99")
    _band(HISTOGRAMS["p99 between"][2], slo, math.inf, "slow p95")
    _band(HISTOGRAMS["fast"][2], 0, slo, "fast p95")
    cases = []
    for label, (buckets, p99, p95) in HISTOGRAMS.items():
        series = [
            (s(f"{metrics.API_LATENCY}_bucket", namespace=f.ns, job=alerts.MON_API, pod=API_POD, le=le), counter(n, minutes))
            for le, n in buckets.items()
        ]
        p99_fires = {"warning": ({"namespace": f.ns}, p99)} if p99 > warn else {}
        if p99 > crit:
            p99_fires["critical"] = ({"namespace": f.ns}, p99)
        cases.append(Case("TikitApiLatencyP99High", f"latency {label}", series, p99_fires))
        cases.append(
            Case("TikitApiLatencySloBreached", f"latency {label}", series, {"warning": ({"namespace": f.ns}, p95)} if p95 > slo else {})
        )
    return cases


def burn_rate_cases(f: Facts) -> list[Case]:
    """Constant error ratios: every window sees the same ratio, so which alert fires depends
    only on the burn-rate factors (14.4x and 6x page; 3x and 1x ticket)."""
    budget = 100 - f.m.availability_slo_percent  # percent
    fast_pct = 20 * budget      # above 14.4x: pages
    slow_pct = 5 * budget       # above 3x, below 6x: a ticket, no page
    quiet_pct = 0.5 * budget    # below 1x: nothing
    # Both counters grow linearly, so every window (5m ... 3d) sees the same ratio even with
    # half an hour of history: the long windows need no days of samples.
    minutes = DEFAULT_EVAL_MINUTES

    def case(alert: str, label: str, pct: float, fires: bool) -> Case:
        errors = 10.0 * pct
        ok = (1000.0 - errors) / 1.1
        return Case(
            alert,
            f"{label}: {pct:.3g}% errors",
            _requests(f, ok, errors, minutes),
            {("critical" if alert == "TikitApiErrorBudgetBurn" else "warning"): ({"namespace": f.ns}, pct)} if fires else {},
            eval_minutes=minutes,
        )

    cases = [
        case("TikitApiErrorBudgetBurn", "fast burn pages", fast_pct, True),
        # 10x: under 14.4x, over 6x: only the 6h/30m pair pages.
        case("TikitApiErrorBudgetBurn", "6x pair alone pages", 10 * budget, True),
        case("TikitApiErrorBudgetBurn", "slow burn does not page", slow_pct, False),
        case("TikitApiErrorBudgetBurnSlow", "slow burn opens a ticket", slow_pct, True),
        # 2x: under 3x, over 1x: only the 3d/6h pair opens a ticket.
        case("TikitApiErrorBudgetBurnSlow", "1x pair alone opens a ticket", 2 * budget, True),
        case("TikitApiErrorBudgetBurnSlow", "within budget", quiet_pct, False),
    ]

    # A burst in the last 45 minutes of six clean hours: the 1h/5m pair pages while the 6h
    # window stays under 6x, so only the 14.4x pair can be what fires.
    hours6, burst = 360, 45
    ok, errors = 900.0, 40.0
    base = dict(namespace=f.ns, job=alerts.MON_API, pod=API_POD)
    code = metrics.API_REQUEST_CODE_LABEL
    in_1h = errors * burst / (60 * ok * 1.1 + errors * burst) * 100
    in_6h = errors * burst / (hours6 * ok * 1.1 + errors * burst) * 100
    _band(in_1h, 14.4 * budget, math.inf, "burst over 1h")
    _band(in_6h, 0, 6 * budget, "burst over 6h")
    series = [
        (s(metrics.API_REQUESTS, **base, **{code: "200"}), counter(ok, hours6)),
        (s(metrics.API_REQUESTS, **base, **{code: "404"}), counter(ok / 10, hours6)),
        (s(metrics.API_REQUESTS, **base, **{code: "503"}), f"0+0x{hours6 - burst} {_fmt(errors)}+{_fmt(errors)}x{burst - 1}"),
    ]
    cases.append(
        Case("TikitApiErrorBudgetBurn", "a burst only the 1h/5m pair sees", series,
             {"critical": ({"namespace": f.ns}, in_1h)}, eval_minutes=hours6)
    )
    return cases


def autoscaling_cases(f: Facts) -> list[Case]:
    ns = f.ns
    at_max_for = alerts.duration_seconds(alerts.AT_MAX_REPLICAS_FOR) // 60
    minutes = at_max_for + 10
    cases = []
    watched = [a for a in f.scope.autoscaled if a.max_replicas > a.min_replicas]
    for a in watched:
        sel = dict(namespace=ns, horizontalpodautoscaler=a.hpa)
        top = a.max_replicas
        for label, values, fires in (
            ("pinned at max", const(top, minutes), True),
            ("one below max", const(top - 1, minutes), False),
            # At max only for the last few minutes: shorter than the `for` window.
            ("at max too briefly", f"{const(top - 1, minutes - at_max_for + 3)} {const(top, at_max_for - 3)}", False),
        ):
            cases.append(
                Case(
                    "TikitAutoscalerAtMaxReplicas",
                    f"{a.hpa} {label}",
                    [
                        (s("kube_horizontalpodautoscaler_status_current_replicas", **sel), values),
                        (s("kube_horizontalpodautoscaler_spec_max_replicas", **sel), const(top, minutes)),
                    ],
                    {"warning": ({"namespace": ns, "horizontalpodautoscaler": a.hpa}, top)} if fires else {},
                    eval_minutes=minutes,
                )
            )
    minutes = 60
    sel = dict(namespace=ns, scaledObject="api")
    window = int(alerts.RATE_WINDOW[:-1])
    cases.append(
        Case(
            "TikitAutoscalerScalerErrors",
            "a trigger keeps failing",
            [(s("keda_scaled_object_errors_total", **sel), counter(1, minutes))],
            {"warning": ({"namespace": ns, "scaledObject": "api"}, window)},
        )
    )
    cases.append(
        Case("TikitAutoscalerScalerErrors", "old errors only", [(s("keda_scaled_object_errors_total", **sel), const(3, minutes))])
    )
    return cases


def postgres_cases(f: Facts) -> list[Case]:
    m, ns, minutes = f.m, f.ns, 60
    pod = f"{f.scope.pg_cluster}-1"
    other = "pg-elsewhere-1"  # another cluster in the namespace must not count
    cases = [
        Case("TikitPostgresDown", "instance down", [(s("cnpg_collector_up", namespace=ns, pod=pod), const(0, minutes))],
             {"critical": ({"namespace": ns, "pod": pod}, 0)}),
        Case("TikitPostgresDown", "instance up, another cluster down",
             [(s("cnpg_collector_up", namespace=ns, pod=pod), const(1, minutes)),
              (s("cnpg_collector_up", namespace=ns, pod=other), const(0, minutes))]),
    ]
    between, above, below = _percent_band(m.db_connections_warning_percent, m.db_connections_critical_percent)
    for label, pct, fires in (("between", between, ("warning",)), ("above", above, ("warning", "critical")), ("below", below, ())):
        max_conn = 200
        used = max_conn * pct / 100
        backend = dict(namespace=ns, pod=pod, datname="tikit", usename="tikit", application_name="pgbouncer")
        cases.append(
            Case(
                "TikitPostgresConnectionsHigh",
                f"connections {label} thresholds",
                [
                    (s("cnpg_backends_total", **backend, state="active"), const(used / 2, minutes)),
                    (s("cnpg_backends_total", **backend, state="idle"), const(used / 2, minutes)),
                    (s("cnpg_pg_settings_setting", namespace=ns, pod=pod, name="max_connections"), const(max_conn, minutes)),
                    (s("cnpg_pg_settings_setting", namespace=ns, pod=pod, name="max_wal_senders"), const(10, minutes)),
                ],
                {sev: ({"namespace": ns, "pod": pod}, pct) for sev in fires},
            )
        )
    # Timestamps before the test's epoch (negative) stand for backups days ago, so the
    # evaluation stays short.
    limit_h = (f.scope.backup_period_seconds + m.backup_age_margin_seconds) / 3600
    now = DEFAULT_EVAL_MINUTES * 60
    ts = s("barman_cloud_cloudnative_pg_io_last_available_backup_timestamp", namespace=ns, pod=pod)
    old_ts, young_ts = now - (limit_h + 4) * 3600, now - limit_h / 2 * 3600
    cases += [
        Case("TikitPostgresBackupTooOld", "newest backup older than the limit", [(ts, const(old_ts, minutes))],
             {"warning": ({"namespace": ns}, limit_h + 4)}, eval_minutes=DEFAULT_EVAL_MINUTES),
        Case("TikitPostgresBackupTooOld", "backup within the limit", [(ts, const(young_ts, minutes))],
             eval_minutes=DEFAULT_EVAL_MINUTES),
    ]
    archived, failed = s("cnpg_pg_stat_archiver_last_archived_time", namespace=ns, pod=pod), s(
        "cnpg_pg_stat_archiver_last_failed_time", namespace=ns, pod=pod
    )
    cases += [
        # Last success at minute 10, a failure after it; at minute 30 that is 20 minutes ago.
        Case("TikitPostgresWalArchivingFailing", "failure after the last success",
             [(archived, const(600, minutes)), (failed, const(900, minutes))],
             {"critical": ({"namespace": ns, "pod": pod}, (DEFAULT_EVAL_MINUTES * 60 - 600) / 60)},
             eval_minutes=DEFAULT_EVAL_MINUTES),
        Case("TikitPostgresWalArchivingFailing", "an old failure, archiving since",
             [(archived, const(600, minutes)), (failed, const(300, minutes))]),
        Case("TikitPostgresWalArchivingFailing", "never failed (-1)",
             [(archived, const(600, minutes)), (failed, const(-1, minutes))]),
    ]
    cases += wal_stall_cases(f, pod, archived, failed)
    cluster = f.scope.pg_cluster
    cases += volume_cases(f, "TikitPostgresDataVolumeFull", f"{cluster}-2", others=(f"{cluster}-2-wal", "pg-elsewhere-1"))
    cases += volume_cases(f, "TikitPostgresWalVolumeFull", f"{cluster}-2-wal", others=(f"{cluster}-2", "pg-elsewhere-1-wal"))
    if f.scope.replica_cluster:
        lag = m.replication_lag_alert_seconds
        series = lambda v: [(s("cnpg_pg_replication_lag", namespace=ns, pod=pod), const(v, minutes))]  # noqa: E731
        cases += [
            Case("TikitPostgresReplicationLagHigh", "lag over the threshold", series(2 * lag), {"warning": ({"namespace": ns}, 2 * lag)}),
            Case("TikitPostgresReplicationLagHigh", "lag under the threshold", series(lag / 2)),
        ]
    return cases


def volume_cases(f: Facts, alert: str, claim: str, others: tuple[str, ...]) -> list[Case]:
    """One claim between the thresholds, above both, below both; claims of the other kind
    (data vs WAL) or of another workload at 99 % must not count."""
    ns, minutes = f.ns, 60
    capacity = 20 * 1024**3
    between, above, below = _percent_band(f.m.volume_usage_warning_percent, f.m.volume_usage_critical_percent)

    def series(pvc: str, used_pct: float) -> list[tuple[str, str]]:
        sel = dict(namespace=ns, persistentvolumeclaim=pvc, job="kubelet", node="node-a")
        return [
            (s("kubelet_volume_stats_capacity_bytes", **sel), const(capacity, minutes)),
            (s("kubelet_volume_stats_available_bytes", **sel), const(capacity * (100 - used_pct) / 100, minutes)),
        ]

    noise = [x for other in others for x in series(other, 99)]
    labels = {"namespace": ns, "persistentvolumeclaim": claim}
    return [
        Case(alert, f"{claim} between the thresholds", series(claim, between) + noise, {"warning": (labels, between)}),
        Case(alert, f"{claim} above both", series(claim, above), {"warning": (labels, above), "critical": (labels, above)}),
        Case(alert, f"{claim} below both, other claims full", series(claim, below) + noise),
    ]


def wal_stall_cases(f: Facts, pod: str, archived: str, failed: str) -> list[Case]:
    """TikitPostgresWalArchiveStalled: WAL waits (.ready) and nothing reached the store for
    the threshold, with no failure reported (last_failed_time -1 = never)."""
    m, ns = f.m, f.ns
    stall = m.wal_archive_stall_alert_seconds
    for_s = alerts.duration_seconds(alerts.ALERT_FOR)
    # The last archival one minute in; evaluated late enough that the condition has held
    # for the whole `for` window.
    archived_at = 60
    minutes = max(DEFAULT_EVAL_MINUTES, math.ceil((archived_at + stall + for_s) / 60) + 5)
    now = minutes * 60
    status = "cnpg_collector_pg_wal_archive_status"

    def series(last_archived: str, last_failed: str, ready: float) -> list[tuple[str, str]]:
        return [
            (archived, last_archived),
            (failed, last_failed),
            (s(status, namespace=ns, pod=pod, value="ready"), const(ready, minutes)),
            # Archived segments (done) are history, not a backlog.
            (s(status, namespace=ns, pod=pod, value="done"), const(40, minutes)),
        ]

    long_ago = const(archived_at, minutes)
    here = {"namespace": ns, "pod": pod}
    return [
        Case("TikitPostgresWalArchiveStalled", "segments wait, last archival long ago",
             series(long_ago, const(-1, minutes), 3),
             {"critical": (here, now - archived_at)}, eval_minutes=minutes),
        Case("TikitPostgresWalArchiveStalled", "segments wait, never archived (-1)",
             series(const(-1, minutes), const(-1, minutes), 1),
             {"critical": (here, now + 1)}, eval_minutes=minutes),
        # An idle primary: nothing written, nothing to archive, however long ago the last one.
        Case("TikitPostgresWalArchiveStalled", "idle primary, nothing waits",
             series(long_ago, const(-1, minutes), 0), eval_minutes=minutes),
        # Busy and keeping up: a segment is always in flight, the last archival is fresh
        # (its timestamp moves with the clock).
        Case("TikitPostgresWalArchiveStalled", "busy, archiving keeps up",
             series(counter(60, minutes), const(-1, minutes), 1), eval_minutes=minutes),
        # Failing rather than stuck: TikitPostgresWalArchivingFailing pages for it instead.
        Case("TikitPostgresWalArchiveStalled", "archiver failing, not stuck",
             series(long_ago, const(archived_at + 60, minutes), 3), eval_minutes=minutes),
    ]


def pgbouncer_cases(f: Facts) -> list[Case]:
    m, ns, db, minutes = f.m, f.ns, f.scope.database, 60
    pod = PGBOUNCER_POD
    pools = dict(namespace=ns, pod=pod, database=db, user="tikit")
    admin = dict(namespace=ns, pod=pod, database="pgbouncer", user="pgbouncer")
    crit_wait = m.pool_wait_critical_seconds

    def waiting(n: float, maxwait: float, admin_waiting: float = 0) -> list[tuple[str, str]]:
        return [
            (s("pgbouncer_pools_client_waiting_connections", **pools), const(n, minutes)),
            (s("pgbouncer_pools_client_maxwait_seconds", **pools), const(maxwait, minutes)),
            (s("pgbouncer_pools_client_waiting_connections", **admin), const(admin_waiting, minutes)),
            (s("pgbouncer_pools_client_maxwait_seconds", **admin), const(admin_waiting * 100, minutes)),
        ]

    here = {"namespace": ns, "pod": pod}
    cases = [
        Case("TikitPgBouncerDown", "exporter cannot query", [(s("pgbouncer_up", namespace=ns, pod=pod), const(0, minutes))],
             {"warning": (here, 0)}),
        Case("TikitPgBouncerDown", "up", [(s("pgbouncer_up", namespace=ns, pod=pod), const(1, minutes))]),
        Case("TikitPgBouncerClientsWaiting", "short waits", waiting(7, crit_wait / 5), {"warning": (here, 7)}),
        Case("TikitPgBouncerClientsWaiting", "long waits", waiting(7, crit_wait + 5),
             {"warning": (here, 7), "critical": (here, crit_wait + 5)}),
        Case("TikitPgBouncerClientsWaiting", "only the admin console waits", waiting(0, 0, admin_waiting=3)),
    ]
    # The series the alert reads: pool_size and max_connections (max_db_connections = pool +
    # reserve in our ini), which every exporter version emits; no reserve_pool, which
    # exporters before v0.12.1 never emit, so the alert must not need it.
    pool, reserve = f.cfg.pgbouncer.default_pool_size, f.cfg.pgbouncer.reserve_pool_size
    cap = pool + reserve
    dbs = dict(namespace=ns, pod=pod, name=db, host="pg-rw", port="5432", database=db, force_user="", pool_mode="transaction")

    def pool_series(active: float, max_connections: float) -> list[tuple[str, str]]:
        return [
            (s("pgbouncer_pools_server_active_connections", **pools), const(active, minutes)),
            (s("pgbouncer_databases_pool_size", **dbs), const(pool, minutes)),
            (s("pgbouncer_databases_max_connections", **dbs), const(max_connections, minutes)),
        ]

    between, above, below = _percent_band(m.pool_saturation_warning_percent, m.pool_saturation_critical_percent)
    above = 100.0
    for label, pct, fires in (("between", between, ("warning",)), ("full", above, ("warning", "critical")), ("below", below, ())):
        cases.append(
            Case("TikitPgBouncerPoolSaturated", f"pool {label}", pool_series(cap * pct / 100, cap), {sev: (here, pct) for sev in fires})
        )
    # Over pool_size but within the reserve: measured against pool + reserve, not pool_size.
    in_reserve = pool + reserve / 2
    cases.append(
        Case("TikitPgBouncerPoolSaturated", "into the reserve pool", pool_series(in_reserve, cap),
             {sev: (here, 100 * in_reserve / cap) for sev, t in
              (("warning", m.pool_saturation_warning_percent), ("critical", m.pool_saturation_critical_percent))
              if 100 * in_reserve / cap > t})
    )
    # max_db_connections unset (0 = unlimited) must not divide into +Inf and page.
    cases.append(Case("TikitPgBouncerPoolSaturated", "no max_db_connections", pool_series(cap, 0)))
    return cases


def redis_cases(f: Facts) -> list[Case]:
    m, ns, minutes = f.m, f.ns, 60
    here = dict(namespace=ns, pod=REDIS_POD)
    cases = [
        Case("TikitRedisDown", "down", [(s("redis_up", **here), const(0, minutes))], {"critical": (here, 0)}),
        Case("TikitRedisDown", "up", [(s("redis_up", **here), const(1, minutes))]),
    ]
    lookups = 60 * max(10.0, 10 * alerts.CACHE_MIN_LOOKUPS_PER_SECOND)  # per minute, well above the floor
    warn, crit = m.cache_hit_warning_percent, m.cache_hit_critical_percent
    for label, pct, per_min, fires in (
        ("between", (warn + crit) / 2, lookups, ("warning",)),
        ("below both", crit / 2, lookups, ("warning", "critical")),
        ("healthy", (warn + 100) / 2, lookups, ()),
        # Too few lookups to judge: half the floor.
        ("idle", crit / 2, 30 * alerts.CACHE_MIN_LOOKUPS_PER_SECOND, ()),
    ):
        cases.append(
            Case(
                "TikitRedisCacheHitRateLow",
                f"hit rate {label}",
                [
                    (s("redis_keyspace_hits_total", **here), counter(per_min * pct / 100, minutes)),
                    (s("redis_keyspace_misses_total", **here), counter(per_min * (100 - pct) / 100, minutes)),
                ],
                {sev: ({"namespace": ns}, pct) for sev in fires},
            )
        )
    cases += [
        Case("TikitRedisRdbSaveFailing", "BGSAVE failed",
             [(s("redis_rdb_last_bgsave_status", **here), const(0, minutes)),
              (s("redis_rdb_changes_since_last_save", **here), const(42, minutes))],
             {"critical": (here, 42)}),
        Case("TikitRedisRdbSaveFailing", "BGSAVE ok",
             [(s("redis_rdb_last_bgsave_status", **here), const(1, minutes)),
              (s("redis_rdb_changes_since_last_save", **here), const(42, minutes))]),
        Case("TikitRedisAofWriteFailing", "AOF write failed", [(s("redis_aof_last_write_status", **here), const(0, minutes))],
             {"critical": (here, 0)}),
        Case("TikitRedisAofWriteFailing", "AOF write ok", [(s("redis_aof_last_write_status", **here), const(1, minutes))]),
        Case("TikitRedisAofRewriteFailing", "rewrite failed", [(s("redis_aof_last_bgrewrite_status", **here), const(0, minutes))],
             {"warning": (here, 0)}),
        Case("TikitRedisAofRewriteFailing", "rewrite ok", [(s("redis_aof_last_bgrewrite_status", **here), const(1, minutes))]),
    ]
    cases += volume_cases(f, "TikitRedisVolumeFull", f"{alerts.REDIS_CLAIM_PREFIX}-1", others=("data-redis-sentinel-0", "pg-lagos-1"))
    max_age_h = m.redis_backup_max_age_seconds / 3600
    eval_min = DEFAULT_EVAL_MINUTES
    now = eval_min * 60
    job = "redis-backup-29123400"
    jsel = dict(namespace=ns, job_name=job)
    recent_start = now - 600
    cases += [
        Case("TikitRedisBackupFailed", "a recent Job failed",
             [(s("kube_job_status_failed", **jsel, reason="BackoffLimitExceeded"), const(1, eval_min)),
              (s("kube_job_status_start_time", **jsel), const(recent_start, eval_min))],
             {"warning": ({"namespace": ns, "job_name": job}, 1)}, eval_minutes=eval_min),
        Case("TikitRedisBackupFailed", "the failure is older than the limit",
             [(s("kube_job_status_failed", **jsel, reason="BackoffLimitExceeded"), const(1, eval_min)),
              (s("kube_job_status_start_time", **jsel), const(now - (max_age_h + 1) * 3600, eval_min))],
             eval_minutes=eval_min),
        Case("TikitRedisBackupFailed", "a recent Job succeeded",
             [(s("kube_job_status_failed", **jsel), const(0, eval_min)),
              (s("kube_job_status_start_time", **jsel), const(recent_start, eval_min))], eval_minutes=eval_min),
    ]
    cj = dict(namespace=ns, cronjob="redis-backup")
    stale_h = max_age_h + 1
    stale, recent = now - stale_h * 3600, now - max_age_h / 4 * 3600
    cases += [
        Case("TikitRedisBackupMissing", "last success too long ago",
             [(s("kube_cronjob_status_last_successful_time", **cj), const(stale, eval_min)),
              (s("kube_cronjob_created", **cj), const(stale - 86400, eval_min))],
             {"critical": ({"namespace": ns, "cronjob": "redis-backup"}, stale_h)}, eval_minutes=eval_min),
        Case("TikitRedisBackupMissing", "never succeeded since creation",
             [(s("kube_cronjob_created", **cj), const(stale, eval_min))],
             {"critical": ({"namespace": ns, "cronjob": "redis-backup"}, stale_h)}, eval_minutes=eval_min),
        Case("TikitRedisBackupMissing", "recent success",
             [(s("kube_cronjob_status_last_successful_time", **cj), const(recent, eval_min)),
              (s("kube_cronjob_created", **cj), const(stale - 86400, eval_min))], eval_minutes=eval_min),
        Case("TikitRedisBackupMissing", "created recently, not run yet",
             [(s("kube_cronjob_created", **cj), const(recent, eval_min))], eval_minutes=eval_min),
    ]
    return cases


def traffic_cases(f: Facts) -> list[Case]:
    ns, minutes = f.ns, 60
    proxy_job = alerts.pod_monitor_job(ns, alerts.MON_ENVOY_PROXY)
    proxy = dict(job=proxy_job, namespace="envoy-gateway-system", pod="envoy-tikit-tikit-abc-123")
    cluster = f"httproute/{ns}/api-rest/rule/0"
    cases = []
    if f.scope.gslb:
        g = dict(namespace=ns, name=f.scope.gslb)
        cases += [
            Case("TikitGslbUnhealthy", "no healthy record", [(s("k8gb_gslb_healthy_records", **g), const(0, minutes))],
                 {"critical": (g, 0)}),
            Case("TikitGslbUnhealthy", "healthy records", [(s("k8gb_gslb_healthy_records", **g), const(2, minutes))]),
        ]
    cases += [
        Case("TikitGatewayDown", "proxy not live", [(s("envoy_server_live", **proxy), const(0, minutes))], {"critical": ({}, 0)}),
        Case("TikitGatewayDown", "no proxy scraped at all", [(s("envoy_server_live", job="elsewhere"), const(1, minutes))],
             {"critical": ({}, 0)}),
        Case("TikitGatewayDown", "proxy live", [(s("envoy_server_live", **proxy), const(1, minutes))]),
        Case("TikitGatewayNoHealthyBackends", "no healthy API endpoint",
             [(s("envoy_cluster_membership_healthy", **proxy, envoy_cluster_name=cluster), const(0, minutes))],
             {"critical": ({"envoy_cluster_name": cluster}, 0)}),
        Case("TikitGatewayNoHealthyBackends", "healthy endpoints; another namespace's route empty",
             [(s("envoy_cluster_membership_healthy", **proxy, envoy_cluster_name=cluster), const(2, minutes)),
              (s("envoy_cluster_membership_healthy", **proxy, envoy_cluster_name="httproute/other/x/rule/0"), const(0, minutes))]),
    ]
    ctl = dict(job=alerts.pod_monitor_job(ns, alerts.MON_ENVOY_GATEWAY), namespace="envoy-gateway-system", pod="envoy-gateway-1")
    cases += [
        Case("TikitGatewayControllerDown", "controller down", [(s("up", **ctl), const(0, minutes))], {"warning": ({}, 0)}),
        Case("TikitGatewayControllerDown", "controller up", [(s("up", **ctl), const(1, minutes))]),
    ]
    return cases


def scrape_cases(f: Facts) -> list[Case]:
    ns, minutes = f.ns, 60
    t = dict(job=alerts.pod_monitor_job(ns, alerts.MON_REDIS), namespace=ns, pod=REDIS_POD, container="metrics")
    return [
        Case("TikitScrapeTargetDown", "target down", [(s("up", **t), const(0, minutes))], {"warning": (t, 0)}),
        Case("TikitScrapeTargetDown", "target up", [(s("up", **t), const(1, minutes))]),
    ]


def drill_cases(f: Facts) -> list[Case]:
    """The restore drills (drilled regions only): the last success too old or never, and a
    failed Job with no later passing run of the same drill."""
    if not f.scope.drills:
        return []
    ns, eval_min = f.ns, DEFAULT_EVAL_MINUTES
    now = eval_min * 60
    limit_h = f.scope.drill_max_age_seconds / 3600
    pg, redis_drill = f.scope.drills[0], f.scope.drills[1]
    cj = dict(namespace=ns, cronjob=pg)
    stale_h = limit_h + 1
    stale, recent = now - stale_h * 3600, now - 24 * 3600
    cases = [
        Case("TikitRestoreDrillMissing", "last pass too long ago",
             [(s("kube_cronjob_status_last_successful_time", **cj), const(stale, eval_min)),
              (s("kube_cronjob_created", **cj), const(stale - 86400, eval_min))],
             {"warning": (cj, stale_h)}, eval_minutes=eval_min),
        Case("TikitRestoreDrillMissing", "never passed since creation",
             [(s("kube_cronjob_created", **cj), const(stale, eval_min))],
             {"warning": (cj, stale_h)}, eval_minutes=eval_min),
        Case("TikitRestoreDrillMissing", "passed a day ago",
             [(s("kube_cronjob_status_last_successful_time", **cj), const(recent, eval_min)),
              (s("kube_cronjob_created", **cj), const(stale - 86400, eval_min))], eval_minutes=eval_min),
        Case("TikitRestoreDrillMissing", "created recently, not run yet",
             [(s("kube_cronjob_created", **cj), const(recent, eval_min))], eval_minutes=eval_min),
    ]

    def job(name: str, start: float, *, failed: bool) -> list[tuple[str, str]]:
        j = dict(namespace=ns, job_name=name)
        return [
            (s("kube_job_status_start_time", **j), const(start, eval_min)),
            (s("kube_job_status_failed", **j, reason="BackoffLimitExceeded"), const(1 if failed else 0, eval_min)),
            (s("kube_job_status_succeeded", **j), const(0 if failed else 1, eval_min)),
        ]

    created = [(s("kube_cronjob_created", **cj), const(-30 * 86400, eval_min)),
               (s("kube_cronjob_created", namespace=ns, cronjob=redis_drill), const(-30 * 86400, eval_min))]
    failed_job, passed_job = f"{pg}-29500000", f"{pg}-29490000"
    labels = dict(namespace=ns, job_name=failed_job, cronjob=pg)
    cases += [
        Case("TikitRestoreDrillFailed", "the newest run failed",
             created + job(passed_job, -7 * 86400, failed=False) + job(failed_job, 600, failed=True),
             {"critical": (labels, 600)}, eval_minutes=eval_min),
        Case("TikitRestoreDrillFailed", "failed and never passed",
             created + job(failed_job, 600, failed=True), {"critical": (labels, 600)}, eval_minutes=eval_min),
        Case("TikitRestoreDrillFailed", "a manual run passed after the failure",
             created + job(failed_job, 600, failed=True) + job(f"{pg}-manual-1", 900, failed=False), eval_minutes=eval_min),
        Case("TikitRestoreDrillFailed", "the other drill passing later does not clear it",
             created + job(failed_job, 600, failed=True) + job(f"{redis_drill}-29500001", 900, failed=False),
             {"critical": (labels, 600)}, eval_minutes=eval_min),
        Case("TikitRestoreDrillFailed", "its next scheduled run passed",
             created + job(failed_job, 600, failed=True) + job(f"{pg}-29500002", 1200, failed=False), eval_minutes=eval_min),
        Case("TikitRestoreDrillFailed", "only passing runs",
             created + job(passed_job, 600, failed=False), eval_minutes=eval_min),
    ]
    return cases


def all_cases(f: Facts) -> list[Case]:
    return [
        *utilization_cases(f),
        *error_rate_cases(f),
        *latency_cases(f),
        *burn_rate_cases(f),
        *autoscaling_cases(f),
        *postgres_cases(f),
        *pgbouncer_cases(f),
        *redis_cases(f),
        *traffic_cases(f),
        *scrape_cases(f),
        *drill_cases(f),
    ]


# --- promtool test file -----------------------------------------------------------------------

_TEMPLATE = re.compile(r'\{\{ \$value \| printf "([^"]+)" \}\}|\{\{ \$labels\.([A-Za-z_][A-Za-z0-9_]*) \}\}')


def render(text: str, labels: dict[str, str], value: float) -> str:
    def sub(match: re.Match) -> str:
        if match.group(1):
            return match.group(1) % value
        name = match.group(2)
        assert name in labels, f"template reads $labels.{name}, which the expression does not yield ({labels})"
        return labels[name]

    out = _TEMPLATE.sub(sub, text)
    assert "{{" not in out, f"template construct the tests cannot render: {text!r}"
    return out


def alert_rules(groups: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in groups for r in g["rules"] if "alert" in r]


def _for_minutes(rule: dict[str, Any]) -> int:
    return alerts.duration_seconds(rule["for"]) // 60 if "for" in rule else 0


def coverage(cases: Iterable[Case], rules: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Rules without a case where they fire, and rules without a case where they stay quiet."""

    def ident(rule: dict[str, Any]) -> str:
        extra = {k: v for k, v in rule["labels"].items() if k not in ("tier", "region")}
        return f"{rule['alert']} {extra}"

    fired, quiet = set(), set()
    for case in cases:
        for i, rule in enumerate(rules):
            if case.about(rule):
                (fired if rule["labels"]["severity"] in case.fires else quiet).add(i)
    return (
        [ident(r) for i, r in enumerate(rules) if i not in fired],
        [ident(r) for i, r in enumerate(rules) if i not in quiet],
    )


def test_group(case: Case, rules: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [r for r in rules if case.about(r)]
    assert mine, f"no rule for {case.alert} {case.rule_labels}"
    # Long enough for the rate windows and the longest `for` of the rules in question.
    eval_minutes = case.eval_minutes or max(SHORTEST_EVAL_MINUTES, max(_for_minutes(r) for r in mine) + 10)
    expected = []
    for severity, (labels, value) in case.fires.items():
        [rule] = [r for r in mine if r["labels"]["severity"] == severity]
        expected.append(
            {
                "exp_labels": {**labels, **rule["labels"]},
                "exp_annotations": {k: render(v, labels, value) for k, v in rule["annotations"].items()},
            }
        )
    return {
        "name": f"{case.alert}: {case.name}",
        "interval": INTERVAL,
        "input_series": [{"series": series, "values": values} for series, values in case.series],
        "alert_rule_test": [{"eval_time": f"{eval_minutes}m", "alertname": case.alert, "exp_alerts": expected}],
    }
