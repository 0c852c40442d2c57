"""The capacity model's HPA against the worked examples of the Kubernetes documentation
(concepts/workloads/autoscaling/horizontal-pod-autoscale.md) and KEP-853, and the rest of
the model (KEDA cron, Prometheus rates, probes, headroom) on small hand-made cases."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tikit_policies import simulation as sim

SYNC = sim.HPA_SYNC_SECONDS


def hpa(min_=1, max_=1000, up=None, down=None) -> sim.Hpa:
    return sim.Hpa(min_, max_, sim.rules(up, sim.DEFAULT_SCALE_UP), sim.rules(down, sim.DEFAULT_SCALE_DOWN))


def replay(h: sim.Hpa, start: int, desired, syncs: int) -> list[int]:
    """Replica counts after each sync, the metric asking for ``desired(current)``."""
    out, current = [start], start
    for k in range(syncs):
        current = h.step(float(k * SYNC), current, desired(current))
        out.append(current)
    return out


# --- the algorithm: desiredReplicas = ceil[currentReplicas x (current / desired)] ------------


@pytest.mark.parametrize("replicas", [1, 2, 3, 7])
def test_200m_against_100m_doubles_the_replicas(replicas):
    """'if the current metric value is 200m, and the desired value is 100m, the number of
    replicas will be doubled'.  As an AverageValue total: replicas x 200m over 100m."""
    assert sim._ceil_ratio(replicas * 0.200, 0.100, replicas) == 2 * replicas


@pytest.mark.parametrize("replicas, halved", [(2, 1), (4, 2), (7, 4)])
def test_50m_against_100m_halves_the_replicas(replicas, halved):
    assert sim._ceil_ratio(replicas * 0.050, 0.100, replicas) == halved
    # ... and the HPA takes it once nothing holds it (no scale-down window, no rate limit).
    h = hpa(down={"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]})
    assert h.step(0.0, replicas, halved) == halved


@pytest.mark.parametrize("ratio, changes", [(1.05, False), (0.95, False), (1.09, False), (0.91, False), (1.11, True), (0.89, True)])
def test_ratios_within_the_tolerance_skip_the_change(ratio, changes):
    """'The control plane skips any scaling action if the ratio is sufficiently close to
    1.0 (within a configurable tolerance, 0.1 by default).'"""
    replicas = 10
    proposal = sim._ceil_ratio(replicas * 100 * ratio, 100, replicas)
    assert (proposal != replicas) is changes


def test_the_scale_down_example_of_80_replicas():
    """The doc's policies (Pods 4 / 60 s and Percent 10 / 60 s, the larger change wins):
    80 -> 72 (8 removed), 72 -> 64 (7.2 rounds up to 8), and 4 at a time below 40, down to
    the target of 10.  One step per 60 s: earlier removals within the period count."""
    h = hpa(
        min_=1,
        down={
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}, {"type": "Percent", "value": 10, "periodSeconds": 60}],
        },
    )
    counts = replay(h, 80, lambda _: 10, syncs=60)
    steps = [c for i, c in enumerate(counts) if i == 0 or c != counts[i - 1]]
    assert steps == [80, 72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10]
    # Each step a minute after the last: 4 syncs of 15 s.
    changes = [i for i in range(1, len(counts)) if counts[i] != counts[i - 1]]
    assert all(b - a == 60 // SYNC for a, b in zip(changes, changes[1:]))


def test_the_default_scale_up_rate():
    """Default behaviour: at most +100 % or +4 pods (the larger) per 15 s."""
    assert replay(hpa(), 1, lambda _: 100, syncs=6) == [1, 5, 10, 20, 40, 80, 100]


def test_kep_853_scale_up_as_fast_as_possible():
    """KEP-853 story 1: Percent 900 per 60 s -> 1 -> 10 -> 100 -> 1000."""
    h = hpa(up={"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 900, "periodSeconds": 60}]})
    counts = replay(h, 1, lambda _: 1000, syncs=12)
    assert [c for i, c in enumerate(counts) if i == 0 or c != counts[i - 1]] == [1, 10, 100, 1000]


def test_kep_853_scale_down_one_pod_every_ten_minutes():
    """KEP-853 story 2: Pods 1 per 600 s -> 1000 -> 999 ten minutes later."""
    h = hpa(down={"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 600}]})
    counts = replay(h, 1000, lambda _: 1, syncs=81)
    assert counts[1] == 999 and counts[40] == 999 and counts[41] == 998


def test_scale_up_stabilisation_takes_the_lowest_recommendation():
    """KEP-853 story 6: a 300 s scale-up window acts on the lowest recommendation in it:
    [2, 3, 19, 10, 3, 4] keeps 2; once the 2 has left, [3, 19, 10, 3, 4, 7] gives 2 -> 3."""
    h = hpa(up={"stabilizationWindowSeconds": 300, "policies": [{"type": "Pods", "value": 20, "periodSeconds": 60}]})
    counts = [2]
    for k, r in enumerate([2, 3, 19, 10, 3, 4]):
        counts.append(h.step(float(k * 50), counts[-1], r))
    assert counts == [2, 2, 2, 2, 2, 2, 2]
    # At 300 s the recommendations of 0 s (the 2 and the seed) are out: strictly older than the window.
    assert h.step(300.0, 2, 7) == 3


def test_scale_down_stabilisation_takes_the_highest_recommendation():
    h = hpa(down={"stabilizationWindowSeconds": 300})
    assert h.step(0.0, 10, 10) == 10
    assert h.step(60.0, 10, 2) == 10  # 10 is still in the 5-minute window
    assert h.step(301.0, 10, 2) == 2  # gone: the highest left is 2 (100 % per 15 s allowed)


def test_min_and_max_clamp():
    h = hpa(min_=2, max_=5)
    assert h.step(0.0, 2, 9) == 5
    assert h.step(15.0, 5, 0) == 5  # scale-down window (default 300 s) holds
    assert hpa(min_=2, max_=5).step(0.0, 7, 9) == 5  # above max: straight to max


# --- the rest of the model -----------------------------------------------------------------------


LAGOS_NOON = datetime(2026, 1, 7, 11, 0, tzinfo=timezone.utc)


def model(**over) -> sim.Model:
    base = dict(
        region="r", workload="api", min_replicas=2, max_replicas=10,
        triggers=(sim.Trigger(name="request-rate", kind="requests", threshold=1000, rate_seconds=60),),
        up=sim.rules(None, sim.DEFAULT_SCALE_UP), down=sim.rules({"stabilizationWindowSeconds": 300}, sim.DEFAULT_SCALE_DOWN),
        polling_seconds=30, per_instance=6000, cpu_request=2.0, boot_seconds=20, startup=(0, 5, 30), readiness=(0, 10),
        scrape_seconds=30, provisioning_seconds=90, buffer_slots=0, pool_max_pods=None,
    )
    base.update(over)
    return sim.Model(**base)


def test_pods_turn_ready_on_the_probes_ticks():
    m = model(boot_seconds=21)
    # startup ticks every 5 s: 25; readiness every 10 s from container start: 30.
    assert sim._ready_after(100.0, m) == 130.0
    # A boot past the startup probe's budget (5 s x 30) never gets ready.
    assert sim._ready_after(0.0, model(boot_seconds=151)) is None


def test_the_cron_floor_arrives_one_sync_plus_a_boot_after_the_window_opens():
    peak = sim.Trigger(name="peak-floor", kind="cron", cron_start="0 18 * * *", cron_end="0 0 * * *", timezone="Africa/Lagos", desired=5)
    m = model(triggers=(peak,), buffer_slots=3)
    profile = sim.peak_profile(m)
    assert profile is not None
    run = sim.simulate(m, profile, sync_phase=14, scrape_phase=0)
    (step,) = run.steps
    assert step.start == sim.PEAK_LEAD_SECONDS and step.goal_replicas == 5
    # The window opens at 120 s; the sync at 134 s raises 2 -> 5 in one step; the pods
    # preempt placeholders (2 s) and are ready at the first probe ticks after a 20 s boot.
    assert step.time_to_capacity == 14 + sim.PREEMPTION_SECONDS + 20
    without = sim.simulate(m, profile, sync_phase=14, scrape_phase=0, headroom=False)
    assert without.steps[0].time_to_capacity == 14 + 90 + 20


def test_the_request_rate_is_read_as_prometheus_reads_it():
    """A flat 12,000 requests/min: rate() over two 30 s scrapes, per minute; ceil(12) pods."""
    m = model(max_replicas=20)
    profile = sim.Profile(name="flat", stages=((1, 200), (600, 200)), requests_per_user=60.0, start=LAGOS_NOON)
    run = sim.simulate(m, profile)
    assert run.replicas[-1] == 12 and run.ready[-1] == 12


def test_the_pool_limit_binds_and_is_reported():
    m = model(max_replicas=10, pool_max_pods=4, pool="p")
    profile = sim.Profile(name="spike", stages=((60, 0), (60, 1000)), requests_per_user=60.0, start=LAGOS_NOON, tail_seconds=600)
    run = sim.simulate(m, profile)
    (step,) = run.steps
    assert step.goal_replicas == 4 and step.binds == "pool limit (p)"
    assert run.ready[-1] == 4 and run.replicas[-1] == 10  # the other six stay pending
    assert run.requests_above > 0


def test_worst_case_covers_the_phases():
    peak = sim.Trigger(name="peak-floor", kind="cron", cron_start="0 18 * * *", cron_end="0 0 * * *", timezone="Africa/Lagos", desired=5)
    m = model(triggers=(peak,), buffer_slots=0)
    _, steps = sim.worst_case(m, sim.peak_profile(m))
    assert steps[0].time_to_capacity == max(sim.SYNC_PHASES) + 90 + 20
