"""The capacity model: a load profile replayed against the rendered autoscaler, pods and
node pools, second by second (docs/autoscaling.md, "Capacity model").

Pure Python, no Pulumi and no plotting: the policy pack (``scale-out-time``) and
``python -m preview capacity`` run the very same code.  Every number comes from the
rendered objects: the ScaledObject (triggers, their queries and thresholds, min, max and
the HPA behaviour), the API Deployment (requests, startup and readiness probes, and the
annotations that carry what no field does: per-instance capacity and boot time), the
ServiceMonitor's scrape interval, the NodePools (limits, per-node overhead, provisioning
latency) and the placeholder Deployment (the warm headroom); the load profile and the
requests per user come from the Namespace's annotations.

What is modelled, and how faithfully:

* the HPA controller (kube-controller-manager's behaviour path, which KEDA's HPAs take):
  a sync every HPA_SYNC_SECONDS, ``ceil(total / threshold)`` per AverageValue metric with
  the 10 % tolerance, the maximum over metrics, the stabilisation windows (the lowest
  recommendation of the up window, the highest of the down window, strict cut-offs),
  the scaling policies with their look-back periods and selectPolicy, and the min/max
  clamps;
* KEDA: Prometheus and cron metrics evaluated afresh at each HPA sync (KEDA's
  pollingInterval only when a trigger sets useCachedMetrics, and for 0 <-> 1); the cron
  floor as KEDA computes it (within the window: desiredReplicas, else 0);
* Prometheus: counters scraped every scrape interval, ``rate(x[w])`` from the samples
  inside the window, ``min_over_time(...[r:s])`` over aligned subquery steps;
* pods: scheduled at once onto a placeholder's slot (preempting it) while slots are
  free, else onto a new node after the NodePool's provisioning latency, unless the pool's
  limit leaves no room; ready when the startup probe first succeeds after the boot time
  and the readiness probe first succeeds after that (probes tick from container start);
  a preempted placeholder's slot returns once Karpenter has a node for it;
* load: k6 stages (linear ramps between targets) x requests per user per minute; the
  request-rate metric counts every request offered, CPU grows with the requests served
  (an instance at its sustainable throughput uses its whole CPU request).

Not modelled: memory (no load-driven model: it never raises the count here), node
consolidation (room freed by a scale-down is not reused), per-node bin packing (slots
and nodes counted in API pods), metric collection delays beyond the scrape interval.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Optional, Sequence

# --- fixed facts of the controllers ----------------------------------------------------

# kube-controller-manager's defaults (--horizontal-pod-autoscaler-sync-period, -tolerance).
HPA_SYNC_SECONDS = 15
HPA_TOLERANCE = 0.1
# The HPA's behaviour where the object leaves a part out (pkg/apis/autoscaling/v2/defaults.go).
DEFAULT_SCALE_UP = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}],
}
DEFAULT_SCALE_DOWN = {"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}
KEDA_POLLING_SECONDS = 30
KEDA_MAX_REPLICAS = 100
# A pending pod that preempts a placeholder (grace period 0) runs a couple of seconds later.
PREEMPTION_SECONDS = 2
# The scrape interval when no ServiceMonitor says (Prometheus' default is 1m; ours 30s).
DEFAULT_SCRAPE_SECONDS = 30
# Where the default profile starts on the clock: midday in the peak's time zone, outside
# the peak window, so only the load moves the count.
PROFILE_START_HOUR = 12
# The peak scenario: the floor alone, from a little before the window opens.
PEAK_LEAD_SECONDS = 120
PEAK_RUN_SECONDS = 600
# Phases the worst case is taken over: where the HPA's sync and Prometheus' scrapes fall
# relative to the step.
SYNC_PHASES = (0, 5, 10, 14)
SCRAPE_PHASES = (0, 10, 20)

_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h|d)$")


def seconds(duration: str) -> int:
    m = _DURATION.match(duration.strip())
    if not m:
        raise ValueError(f"not a duration: {duration!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": 0, "s": n, "m": n * 60, "h": n * 3600, "d": n * 86400}[unit] if unit != "ms" else n // 1000


# --- the model's inputs ------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """One HPA metric as KEDA serves it (AverageValue): requests | cpu | memory | cron | other."""

    name: str
    kind: str
    threshold: float = 1.0
    rate_seconds: int = 60          # rate() window (requests, cpu)
    sustain_seconds: int = 0        # min_over_time subquery range (cpu, memory)
    step_seconds: int = 15          # subquery resolution
    cached: bool = False            # useCachedMetrics: the value of the last KEDA poll
    cron_start: str = ""
    cron_end: str = ""
    timezone: str = "UTC"
    desired: int = 0


@dataclass(frozen=True)
class Policy:
    type: str
    value: int
    period: int


@dataclass(frozen=True)
class Rules:
    window: int
    select: str
    policies: tuple[Policy, ...]


def rules(raw: Optional[dict], default: dict) -> Rules:
    raw = raw or {}
    window = raw.get("stabilizationWindowSeconds", default["stabilizationWindowSeconds"])
    policies = raw.get("policies") or default["policies"]
    return Rules(
        window=int(window),
        select=str(raw.get("selectPolicy") or default["selectPolicy"]),
        policies=tuple(Policy(str(p["type"]), int(p["value"]), int(p["periodSeconds"])) for p in policies),
    )


@dataclass(frozen=True)
class Model:
    """Everything the replay needs about one region's API tier."""

    region: str
    workload: str
    min_replicas: int
    max_replicas: int
    triggers: tuple[Trigger, ...]
    up: Rules
    down: Rules
    polling_seconds: int
    per_instance: float                 # requests per minute one instance serves
    cpu_request: float                  # cores per pod
    boot_seconds: int
    startup: Optional[tuple[int, int, int]]   # (initialDelay, period, failureThreshold)
    readiness: tuple[int, int]          # (initialDelay, period)
    scrape_seconds: int
    provisioning_seconds: int
    buffer_slots: int                   # API pods the warm headroom takes at once
    pool_max_pods: Optional[int]        # API pods the pool limit leaves room for (None: no limit)
    pool: str = ""
    node_pods: int = 1                  # API pods per new node (for the node count)
    profile: tuple[tuple[int, int], ...] = ()   # (seconds, users)
    requests_per_user: float = 0.0

    def without_headroom(self) -> "Model":
        return _replace(self, buffer_slots=0)


def _replace(m: Model, **changes: Any) -> Model:
    import dataclasses

    return dataclasses.replace(m, **changes)


# --- the load ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Users over time (k6 stages: each ramps linearly from the previous target to its own),
    requests per user per minute, and the clock the run starts at (for cron triggers)."""

    name: str
    stages: tuple[tuple[int, int], ...]
    requests_per_user: float
    start: datetime
    tail_seconds: int = 0

    @property
    def duration(self) -> int:
        return sum(d for d, _ in self.stages) + self.tail_seconds

    def users(self) -> list[float]:
        out: list[float] = []
        prev = 0.0
        for dur, target in self.stages:
            for i in range(dur):
                out.append(prev + (target - prev) * (i + 1) / dur)
            prev = float(target)
        out += [prev] * self.tail_seconds
        return out


# --- the run -----------------------------------------------------------------------------


@dataclass
class Step:
    """A rise in demand or a floor opening, and how long capacity took to meet it."""

    label: str
    start: int
    goal_rpm: float
    goal_replicas: int
    time_to_capacity: Optional[int] = None
    requests_above: float = 0.0
    binds: str = ""


@dataclass
class Run:
    scenario: str
    sync_phase: int
    scrape_phase: int
    headroom: bool
    time: list[int] = field(default_factory=list)
    demand: list[float] = field(default_factory=list)
    capacity: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    requests_above: float = 0.0

    @property
    def worst(self) -> Optional[int]:
        times = [s.time_to_capacity for s in self.steps]
        if any(t is None for t in times):
            return None
        return max((t for t in times if t is not None), default=0)


@dataclass
class _Pod:
    created: int
    placed: Optional[float]
    ready: Optional[float]
    slot: bool


def _ceil_ratio(value: float, threshold: float, current: int) -> int:
    """The HPA's AverageValue proposal: current when within the tolerance, else ceil."""
    if threshold <= 0:
        return current
    if current > 0:
        ratio = value / (threshold * current)
        if abs(ratio - 1.0) <= HPA_TOLERANCE:
            return current
    return int(math.ceil(value / threshold - 1e-9))


class Hpa:
    """The HPA controller's behaviour path for one target (recommendations and scale events)."""

    def __init__(self, min_replicas: int, max_replicas: int, up: Rules, down: Rules) -> None:
        self.min, self.max, self.up, self.down = min_replicas, max_replicas, up, down
        self.recommendations: list[tuple[float, int]] = []
        self.up_events: list[tuple[float, int]] = []
        self.down_events: list[tuple[float, int]] = []
        self.seeded = False

    @staticmethod
    def _changed(period: int, events: list[tuple[float, int]], now: float) -> int:
        cutoff = now - period
        return sum(change for at, change in events if at > cutoff)

    def _up_limit(self, current: int, now: float) -> int:
        if self.up.select == "Disabled":
            return current
        pick, result = (min, math.inf) if self.up.select == "Min" else (max, -math.inf)
        for p in self.up.policies:
            start = current - self._changed(p.period, self.up_events, now) + self._changed(p.period, self.down_events, now)
            proposed = start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100))
            result = pick(result, proposed)
        return int(result)

    def _down_limit(self, current: int, now: float) -> int:
        if self.down.select == "Disabled":
            return current
        pick, result = (max, -math.inf) if self.down.select == "Min" else (min, math.inf)
        for p in self.down.policies:
            start = current - self._changed(p.period, self.up_events, now) + self._changed(p.period, self.down_events, now)
            proposed = start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100))
            result = pick(result, proposed)
        return int(result)

    def step(self, now: float, current: int, desired: Optional[int]) -> int:
        """One reconcile: the new replica count (``desired`` None: metrics invalid, no change)."""
        if not self.seeded:
            self.recommendations.append((now, current))
            self.seeded = True
        if current > self.max:
            new = self.max
        elif current < self.min:
            new = self.min
        elif desired is None:
            return current
        else:
            # Stabilisation: clamp(current, lowest of the up window, highest of the down window).
            up_rec, down_rec = desired, desired
            up_cut, down_cut = now - self.up.window, now - self.down.window
            for at, rec in self.recommendations:
                if at > up_cut:
                    up_rec = min(up_rec, rec)
                if at > down_cut:
                    down_rec = max(down_rec, rec)
            keep = max(self.up.window, self.down.window)
            self.recommendations = [(a, r) for a, r in self.recommendations if a > now - keep] + [(now, desired)]
            stable = current
            if stable < up_rec:
                stable = up_rec
            if stable > down_rec:
                stable = down_rec
            new = stable
            if new > current:
                limit = max(self._up_limit(current, now), current)
                new = min(new, min(self.max, limit))
            elif new < current:
                limit = min(self._down_limit(current, now), current)
                new = max(new, max(self.min, limit))
        if new > current:
            self.up_events.append((now, new - current))
        elif new < current:
            self.down_events.append((now, current - new))
        longest = max([p.period for p in self.up.policies + self.down.policies] + [0])
        self.up_events = [e for e in self.up_events if e[0] > now - longest]
        self.down_events = [e for e in self.down_events if e[0] > now - longest]
        return new


def _cron_windows(trigger: Trigger, start: datetime, duration: int) -> list[tuple[int, int]]:
    """(open, close) seconds from ``start`` of a KEDA cron trigger's windows."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    zone = ZoneInfo(trigger.timezone)
    local = start.astimezone(zone)
    begin = local - timedelta(days=1)
    out: list[tuple[int, int]] = []
    it = croniter(trigger.cron_start, begin)
    while True:
        opens = it.get_next(datetime)
        closes = croniter(trigger.cron_end, opens).get_next(datetime)
        o, c = (opens - local).total_seconds(), (closes - local).total_seconds()
        if o > duration:
            break
        if c > 0:
            out.append((int(o), int(c)))
    return out


def _ready_after(placed: float, m: Model) -> Optional[float]:
    """When a pod placed (container started) at ``placed`` turns Ready, from its probes."""
    boot = m.boot_seconds
    if m.startup:
        delay, period, failures = m.startup
        # The startup probe ticks at delay, delay + period, ...; the first tick at or after
        # the boot succeeds; past delay + period x failures the kubelet restarts the container.
        k = max(0, math.ceil((boot - delay) / period))
        if k >= failures:
            return None
        up = delay + k * period
    else:
        up = boot
    delay, period = m.readiness
    k = max(0, math.ceil((up - delay) / period))
    return placed + delay + k * period


def simulate(m: Model, profile: Profile, *, sync_phase: int = 0, scrape_phase: int = 0, headroom: bool = True) -> Run:
    """Replay ``profile`` against ``m`` at 1 s resolution."""
    duration = profile.duration
    users = profile.users()
    demand = [u * profile.requests_per_user for u in users]
    # Counters: cumulative requests offered and CPU seconds used, at the END of each second.
    req_cum = [0.0] * (duration + 1)
    for t in range(duration):
        req_cum[t + 1] = req_cum[t] + demand[t] / 60
    cpu_cum = [0.0] * (duration + 1)
    scrape = m.scrape_seconds

    def sample_times(end: int, window: int) -> list[int]:
        """Scrape times in (end - window, end]."""
        last = scrape_phase + ((end - scrape_phase) // scrape) * scrape
        out = []
        s = last
        while s > end - window and s >= 0:
            out.append(s)
            s -= scrape
        return sorted(out)

    def rate(cum: list[float], at: int, window: int) -> Optional[float]:
        pts = sample_times(at, window)
        if len(pts) < 2:
            return None
        return (cum[pts[-1]] - cum[pts[0]]) / (pts[-1] - pts[0])

    windows = {t.name: _cron_windows(t, profile.start, duration) for t in m.triggers if t.kind == "cron"}
    hpa = Hpa(m.min_replicas, m.max_replicas, m.up, m.down)
    slots_free = m.buffer_slots if headroom else 0
    slot_returns: list[float] = []
    pods = [_Pod(created=-10_000, placed=-10_000.0, ready=-10_000.0, slot=False) for _ in range(m.min_replicas)]
    replicas = m.min_replicas
    launched_pods = 0
    cache: dict[str, Optional[float]] = {}
    run = Run(scenario=profile.name, sync_phase=sync_phase, scrape_phase=scrape_phase, headroom=headroom)
    steps = _steps(m, profile, demand, windows)
    spans = [(st, st.start, _step_end(st, steps, duration)) for st in steps]
    ready_at: list[float] = sorted(p.ready for p in pods if p.ready is not None)

    def value(tr: Trigger, at: int) -> Optional[float]:
        if tr.kind == "requests":
            r = rate(req_cum, at, tr.rate_seconds)
            return None if r is None else r * 60
        if tr.kind == "cpu":
            vals = []
            first = (at // tr.step_seconds) * tr.step_seconds
            s = first
            while s > at - tr.sustain_seconds:
                r = rate(cpu_cum, s, tr.rate_seconds)
                if r is not None:
                    vals.append(r)
                s -= tr.step_seconds
            return min(vals) if vals else None
        if tr.kind == "cron":
            return float(tr.desired) if any(o <= at < c for o, c in windows[tr.name]) else 0.0
        return None

    next_sync = sync_phase
    for t in range(duration + 1):
        # Placeholder slots whose replacement node has arrived.
        if slot_returns and min(slot_returns) <= t:
            back = [r for r in slot_returns if r <= t]
            slot_returns = [r for r in slot_returns if r > t]
            slots_free += len(back)
        if t == next_sync:
            next_sync += HPA_SYNC_SECONDS
            proposals: list[int] = []
            invalid = 0
            for tr in m.triggers:
                if tr.kind in ("memory", "other"):
                    continue
                if tr.cached and tr.kind != "cron":
                    poll = (t // m.polling_seconds) * m.polling_seconds
                    if cache.get(f"{tr.name}@") != poll:
                        cache[tr.name] = value(tr, poll)
                        cache[f"{tr.name}@"] = poll  # type: ignore[assignment]
                    v = cache[tr.name]
                else:
                    v = value(tr, t)
                if v is None:
                    invalid += 1
                    continue
                proposals.append(_ceil_ratio(v, tr.threshold, replicas))
            desired: Optional[int] = max(proposals) if proposals else None
            if desired is not None and invalid and desired < replicas:
                desired = None
            new = hpa.step(float(t), replicas, desired)
            if new > replicas:
                for _ in range(new - replicas):
                    if slots_free > 0:
                        slots_free -= 1
                        # The preempted placeholder goes pending: Karpenter brings its node.
                        slot_returns.append(t + m.provisioning_seconds)
                        launched_pods += 1
                        placed: Optional[float] = t + PREEMPTION_SECONDS
                        pods.append(_Pod(t, placed, _ready_after(placed, m), True))
                    else:
                        api_now = sum(1 for p in pods if p.placed is not None)
                        if m.pool_max_pods is not None and api_now >= m.pool_max_pods:
                            pods.append(_Pod(t, None, None, False))
                        else:
                            launched_pods += 1
                            placed = float(t + m.provisioning_seconds)
                            pods.append(_Pod(t, placed, _ready_after(placed, m), False))
            elif new < replicas:
                # The ReplicaSet removes unplaced, then not-ready, then the newest pods first.
                for _ in range(replicas - new):
                    victim = min(
                        range(len(pods)),
                        key=lambda i: (pods[i].placed is not None, pods[i].ready is not None and pods[i].ready <= t, -pods[i].created),
                    )
                    pods.pop(victim)
            replicas = new
            ready_at = sorted(p.ready for p in pods if p.ready is not None)
        ready = bisect.bisect_right(ready_at, t)
        capacity = ready * m.per_instance
        if t < duration:
            served = min(demand[t], capacity)
            cores = served / m.per_instance * m.cpu_request if m.per_instance else 0.0
            cpu_cum[t + 1] = cpu_cum[t] + cores
            above = max(0.0, demand[t] - capacity) / 60
            run.requests_above += above
            if above:
                for st, begin, end in spans:
                    if begin <= t < end:
                        st.requests_above += above
        for st in steps:
            if st.time_to_capacity is None and t >= st.start:
                if ready >= st.goal_replicas:
                    st.time_to_capacity = t - st.start
        run.time.append(t)
        run.demand.append(demand[t] if t < duration else demand[-1] if demand else 0.0)
        run.capacity.append(capacity)
        run.replicas.append(replicas)
        run.ready.append(ready)
        run.nodes.append(math.ceil(launched_pods / max(1, m.node_pods)))
    run.steps = steps
    return run


def _step_end(step: Step, steps: list[Step], duration: int) -> int:
    later = [s.start for s in steps if s.start > step.start]
    return min(later) if later else duration


def _steps(m: Model, profile: Profile, demand: list[float], windows: dict[str, list[tuple[int, int]]]) -> list[Step]:
    """Every stage whose target is above the previous one, and every cron window opening:
    the replicas capacity must reach, capped by what the autoscaler can reach."""
    reachable = m.max_replicas if m.pool_max_pods is None else min(m.max_replicas, m.pool_max_pods)
    binds = "maxReplicaCount" if m.pool_max_pods is None or m.max_replicas <= m.pool_max_pods else f"pool limit ({m.pool})"
    out: list[Step] = []
    t0, prev = 0, 0
    for dur, target in profile.stages:
        if target > prev:
            goal_rpm = target * profile.requests_per_user
            need = math.ceil(goal_rpm / m.per_instance - 1e-9) if m.per_instance else reachable
            need = max(need, m.min_replicas)
            out.append(
                Step(
                    label=f"{prev} -> {target} users", start=t0, goal_rpm=goal_rpm, goal_replicas=min(need, reachable),
                    binds=binds if need > reachable else "",
                )
            )
        t0 += dur
        prev = target
    for tr in m.triggers:
        if tr.kind != "cron":
            continue
        for opens, _ in windows.get(tr.name, []):
            if 0 <= opens < profile.duration:
                need = min(tr.desired, reachable)
                out.append(
                    Step(
                        label=f"{tr.name}: {m.min_replicas} -> {tr.desired} replicas", start=opens,
                        goal_rpm=need * m.per_instance, goal_replicas=need, binds=binds if tr.desired > reachable else "",
                    )
                )
    return sorted(out, key=lambda s: s.start)


def worst_case(m: Model, profile: Profile, *, headroom: bool = True) -> tuple[Run, list[Step]]:
    """Every phase of the HPA sync and the scrapes: the run whose slowest step is slowest,
    and per step the slowest time to capacity and the most requests above capacity."""
    runs = [
        simulate(m, profile, sync_phase=s, scrape_phase=p, headroom=headroom) for s in SYNC_PHASES for p in SCRAPE_PHASES
    ]

    def key(r: Run) -> tuple[int, float]:
        return (10**9 if r.worst is None else r.worst, r.requests_above)

    worst = max(runs, key=key)
    steps = []
    for i, st in enumerate(worst.steps):
        same = [r.steps[i] for r in runs]
        times = [s.time_to_capacity for s in same]
        steps.append(
            Step(
                label=st.label, start=st.start, goal_rpm=st.goal_rpm, goal_replicas=st.goal_replicas,
                time_to_capacity=None if any(x is None for x in times) else max(x for x in times if x is not None),
                requests_above=max(s.requests_above for s in same), binds=st.binds,
            )
        )
    return worst, steps


# --- reading the rendered stack -----------------------------------------------------------

_RATE = re.compile(r"\}\[([0-9]+[smh])\]\)")
_SUBQUERY = re.compile(r"\)\[([0-9]+[smh]):([0-9]+[smh])?\]\)\s*$")


def trigger_of(raw: dict) -> Trigger:
    """A ScaledObject trigger as the model understands it (kind from the query's metric)."""
    kind, md = str(raw.get("type") or ""), raw.get("metadata") or {}
    name = str(raw.get("name") or kind)
    cached = bool(raw.get("useCachedMetrics"))
    if kind == "cron":
        return Trigger(
            name=name, kind="cron", cron_start=str(md.get("start")), cron_end=str(md.get("end")),
            timezone=str(md.get("timezone") or "UTC"), desired=int(str(md.get("desiredReplicas") or 0)),
        )
    if kind != "prometheus" or raw.get("metricType", "AverageValue") != "AverageValue":
        return Trigger(name=name, kind="other")
    query, threshold = str(md.get("query") or ""), float(str(md.get("threshold") or "0"))
    rate_m = _RATE.search(query)
    sub = _SUBQUERY.search(query)
    if "container_cpu_usage_seconds_total" in query and rate_m and sub:
        return Trigger(
            name=name, kind="cpu", threshold=threshold, rate_seconds=seconds(rate_m.group(1)),
            sustain_seconds=seconds(sub.group(1)), step_seconds=seconds(sub.group(2) or "1m"), cached=cached,
        )
    if "container_memory" in query:
        return Trigger(name=name, kind="memory", threshold=threshold)
    if rate_m and query.replace(" ", "").endswith("*60") and not sub:
        return Trigger(name=name, kind="requests", threshold=threshold, rate_seconds=seconds(rate_m.group(1)), cached=cached)
    return Trigger(name=name, kind="other")


def profile_of(stages: str, requests_per_user: float, name: str = "profile", start: Optional[datetime] = None) -> Profile:
    parsed = []
    for part in stages.split(","):
        dur, _, users = part.strip().rpartition(":")
        parsed.append((seconds(dur), int(users)))
    return Profile(name=name, stages=tuple(parsed), requests_per_user=requests_per_user, start=start or default_start())


def default_start(tz: str = "Africa/Lagos") -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(2026, 1, 7, PROFILE_START_HOUR, 0, 0, tzinfo=ZoneInfo(tz))


def peak_profile(m: Model) -> Optional[Profile]:
    """The floor step alone: no load, from PEAK_LEAD_SECONDS before the first cron window."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    crons = [t for t in m.triggers if t.kind == "cron" and t.desired > m.min_replicas]
    if not crons:
        return None
    tr = crons[0]
    zone = ZoneInfo(tr.timezone)
    opens = croniter(tr.cron_start, default_start(tr.timezone).astimezone(zone)).get_next(datetime)
    start = opens - timedelta(seconds=PEAK_LEAD_SECONDS)
    return Profile(name="peak", stages=((PEAK_RUN_SECONDS, 0),), requests_per_user=0.0, start=start)


def summary_lines(steps: Sequence[Step]) -> list[str]:
    out = []
    for s in steps:
        ttc = "not reached" if s.time_to_capacity is None else f"{s.time_to_capacity} s"
        bind = f"; bound by {s.binds}" if s.binds else ""
        out.append(f"{s.label}: {ttc} to {s.goal_replicas} ready replicas, {s.requests_above:,.0f} requests above capacity{bind}")
    return out
