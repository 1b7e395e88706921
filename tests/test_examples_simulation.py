"""Example 4, the phased simulation (examples/phased_simulation.py), end to end.

On the virtual clock the start-up delays and every region's work time are
exact, so the tests check when the coordinator starts (config AND (cache OR
grace)), that each barrier phase lasts exactly as long as its slowest region,
and what the barrier's merge action produced.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import cohort
from _util import EXAMPLES, run_python

sys.path.insert(0, str(EXAMPLES))

import phased_simulation as sim

virtual_clock = pytest.mark.virtual_clock


def expected_days(report: sim.Report, cache_at: float) -> tuple[list[float], list[str]]:
    """Each day ends when its slowest region is done; regions work faster once the cache is warm.

    Returns when each day ends, and which region is the slowest (the one to run the merge).
    """
    world = report.world
    assert world is not None
    replay = sim.World(world.config, world.seed)
    ends: list[float] = []
    slowest: list[str] = []
    start = report.started_at
    for _ in world.history:
        warm = start >= cache_at  # each worker looks at the flag when it starts its day
        times = {name: sim.work_time(replay, name, warm) for name in replay.regions}
        slowest.append(max(times, key=times.__getitem__))
        start += times[slowest[-1]]
        ends.append(start)
        replay.day += 1
    return ends, slowest


def expected_day_ends(report: sim.Report, cache_at: float) -> list[float]:
    return expected_days(report, cache_at)[0]


@virtual_clock
@pytest.mark.parametrize(
    ("config_delay", "cache_delay", "started_at", "warm"),
    [
        (0.03, 0.08, 0.08, True),  # both before the grace period: start when both are set
        (0.03, 0.50, 0.10, False),  # cache late: start cold when the grace period is over
        (0.30, 0.05, 0.30, True),  # config late: wait for it; the cache is warm by then
        (0.30, 0.50, 0.30, False),  # both late: start with the config, cold
    ],
)
async def test_the_coordinator_starts_on_config_and_cache_or_grace(
    config_delay: float, cache_delay: float, started_at: float, warm: bool
) -> None:
    settings = sim.Settings(
        regions=3, config_delay=config_delay, cache_delay=cache_delay, grace=0.1
    )
    report = await sim.simulate(settings)
    assert report.started_at == pytest.approx(started_at)
    assert report.warm_start is warm
    log = {message: at for at, message in report.log}
    assert log["config loaded"] == pytest.approx(config_delay)
    assert log["cache warm"] == pytest.approx(cache_delay)
    assert log[f"starting {'warm' if warm else 'cold (grace period over)'}"] == report.started_at
    ends = expected_day_ends(report, cache_at=cache_delay)
    assert [day.ended_at for day in report.world.history] == pytest.approx(ends)  # type: ignore[union-attr]


@virtual_clock
async def test_each_phase_lasts_as_long_as_its_slowest_region_and_merges_every_region() -> None:
    report = await sim.simulate(sim.Settings(regions=5, seed=11))
    world = report.world
    assert world is not None
    population = sum(r.susceptible + r.infected + r.recovered for r in world.config.regions)
    assert len(world.history) == world.day == report.generations
    assert [day.number for day in world.history] == list(range(1, world.day + 1))
    for day in world.history:  # the merge saw every region, nobody was lost
        assert day.susceptible + day.infected + day.recovered == population
    assert world.history[-1].infected == 0  # over because the epidemic ended
    # Travellers carried the outbreak from the first region to all the others.
    assert all(region.recovered > 0 for region in world.regions.values())
    ends, slowest = expected_days(report, cache_at=0.08)
    assert [d.ended_at for d in world.history] == pytest.approx(ends)
    assert [d.slowest for d in world.history] == slowest


def history(report: sim.Report) -> tuple[list[tuple[int, int, int, int, str]], list[float]]:
    """The days, and the time each ended (from the start of the run)."""
    assert report.world is not None
    days = report.world.history
    return (
        [(d.number, d.susceptible, d.infected, d.recovered, d.slowest) for d in days],
        [d.ended_at - report.t0 for d in days],
    )


@virtual_clock
async def test_the_same_seed_gives_the_same_history() -> None:
    first_days, first_times = history(await sim.simulate(sim.Settings(seed=5)))
    second_days, second_times = history(await sim.simulate(sim.Settings(seed=5)))
    other_days, _ = history(await sim.simulate(sim.Settings(seed=6)))
    assert first_days == second_days
    assert first_times == pytest.approx(second_times)
    assert first_days != other_days


@virtual_clock
async def test_the_cache_warmer_is_cancelled_if_the_simulation_ends_first() -> None:
    report = await sim.simulate(sim.Settings(regions=2, cache_delay=1000.0))
    assert report.cache_warmer is cohort.ChildStatus.CANCELLED
    assert [message for _, message in report.log][-1].startswith("over after")
    assert "cache warm" not in [message for _, message in report.log]


@virtual_clock
async def test_a_config_that_never_loads_fails_at_the_config_timeout() -> None:
    settings = sim.Settings(config_delay=10.0, config_timeout=1.0)
    with pytest.raises(ExceptionGroup) as caught:
        await sim.simulate(settings)
    assert caught.group_contains(TimeoutError)
    assert cohort.current_time() == pytest.approx(1.0)


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return run_python(str(EXAMPLES / "phased_simulation.py"), *args)


def test_the_script_prints_what_happened() -> None:
    result = run_script("--regions", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("  ", 1)[1] for line in lines[:3]] == [
        "config loaded",
        "cache warm",
        "starting warm",
    ]
    assert "barrier generations" in lines[-1]
    assert result.stderr == ""


def test_the_script_exits_1_when_the_config_never_loads() -> None:
    result = run_script("--config-delay", "5", "--config-timeout", "0.2")
    assert (result.returncode, result.stderr) == (1, "")
    assert "the config was not loaded within 0.2 s" in result.stdout
