"""Phased simulation with ``cohort.Barrier``; start-up coordination with ``cohort.EventFlags``.

An epidemic spreads over a few regions. One worker task per region advances
its region by one day per phase, reading the whole world as it was at the end
of the previous day. After each day the workers meet at a barrier whose
action, run once by the last to arrive, merges their results into the next
world state (travellers carry the infection between regions) and decides
whether the epidemic is over. A region's work takes an uneven time, so every
day lasts as long as its slowest region.

Before day 1 the coordinator waits for "config loaded" AND ("cache warm" OR
a grace period): an atomic ``wait_all`` on the flags, under a cohort scope
that gives up on the cache after the grace period. Without a warm cache the
simulation starts anyway, and a day's work is slower until the cache is warm.
Warming the cache is an optional child (``critical=False``): if the
simulation ends first, it is cancelled.

    python examples/phased_simulation.py
    python examples/phased_simulation.py --cache-delay 0.5   # starts cold
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
from dataclasses import dataclass, field

import cohort

# -- the model ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    susceptible: int
    infected: int
    recovered: int = 0


@dataclass(frozen=True, slots=True)
class Config:
    """What "loading the config" produces."""

    regions: tuple[Region, ...]
    contact_rate: float = 0.6  # new infections per infected person and day, in a naive population
    recovery_rate: float = 0.25  # share of the infected who recover each day
    travel: float = 0.02  # share of contacts made with people of other regions
    max_days: int = 120


NAMES = ("north", "south", "east", "west", "centre", "coast", "hills", "lakes")


def default_config(n_regions: int) -> Config:
    """``n_regions`` regions of 10,000 people; 10 of them infected, in the first region."""
    names = [*NAMES, *(f"region-{i}" for i in range(len(NAMES), n_regions))][:n_regions]
    regions = [Region(name, 10_000, 0) for name in names]
    regions[0] = Region(names[0], 9_990, 10)
    return Config(regions=tuple(regions))


def advance(region: Region, world: dict[str, Region], config: Config, rng: random.Random) -> Region:
    """The region one day later, given the whole world's state the day before."""
    population = region.susceptible + region.infected + region.recovered
    everyone = sum(r.susceptible + r.infected + r.recovered for r in world.values())
    infected_elsewhere = sum(r.infected for r in world.values()) - region.infected
    pressure = config.contact_rate * (
        (1 - config.travel) * region.infected / population
        + config.travel * infected_elsewhere / (everyone - population or 1)
    )
    new_cases = min(
        region.susceptible,
        round(region.susceptible * (1 - math.exp(-pressure)) * rng.uniform(0.8, 1.2)),
    )
    recoveries = round(region.infected * config.recovery_rate)
    if region.infected and not recoveries and rng.random() < config.recovery_rate:
        recoveries = 1  # small outbreaks still end
    return Region(
        region.name,
        region.susceptible - new_cases,
        region.infected + new_cases - recoveries,
        region.recovered + recoveries,
    )


# -- the world, shared by the workers; merged at the barrier ------------------------


@dataclass(frozen=True, slots=True)
class Day:
    number: int
    susceptible: int
    infected: int
    recovered: int
    ended_at: float
    slowest: str


@dataclass
class World:
    """The state the workers share: read freely during a day, replaced only by ``merge``.

    Because ``merge`` runs once all regions have arrived at the barrier, every
    worker reads the same end-of-yesterday snapshot, whatever the timing.
    """

    config: Config
    seed: int
    regions: dict[str, Region] = field(init=False)
    day: int = 0
    over: bool = False
    history: list[Day] = field(default_factory=list)
    _results: dict[str, Region] = field(default_factory=dict)
    _arrivals: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.regions = {r.name: r for r in self.config.regions}

    def rng(self, region: str, purpose: str) -> random.Random:
        """Randomness for one region, day and purpose: the same for a seed, whatever the timing."""
        return random.Random(f"{self.seed}/{region}/{self.day}/{purpose}")

    def submit(self, result: Region) -> None:
        self._results[result.name] = result
        self._arrivals.append(result.name)

    def merge(self) -> None:
        """The barrier's action: every region has submitted its day; build the next world."""
        assert self._results.keys() == self.regions.keys(), "a region is missing"
        self.regions, self._results = self._results, {}
        self.day += 1
        infected = sum(r.infected for r in self.regions.values())
        self.history.append(
            Day(
                self.day,
                sum(r.susceptible for r in self.regions.values()),
                infected,
                sum(r.recovered for r in self.regions.values()),
                cohort.current_time(),
                slowest=self._arrivals[-1],
            )
        )
        self._arrivals = []
        self.over = infected == 0 or self.day >= self.config.max_days


WARM_WORK = 0.005
"""Seconds a region's day takes on average with a warm cache (three times that cold)."""


def work_time(world: World, region: str, warm: bool) -> float:
    """How long ``region``'s work for the current day takes."""
    return WARM_WORK * (1 if warm else 3) * world.rng(region, "work").uniform(0.5, 1.5)


async def region_worker(
    name: str, world: World, barrier: cohort.Barrier, flags: cohort.EventFlags
) -> None:
    """Advance one region by one day per phase until the world says it is over."""
    while not world.over:
        rng = world.rng(name, "epidemic")
        result = advance(world.regions[name], world.regions, world.config, rng)
        await asyncio.sleep(work_time(world, name, flags.is_set("cache")))  # the day's work
        world.submit(result)
        await barrier.wait()  # the last to arrive runs world.merge(), then all go on


# -- start-up: config and cache, and the coordinator that waits for them --------------


@dataclass(frozen=True, slots=True)
class Settings:
    """A run's knobs; the delays and timeouts are seconds from the start."""

    regions: int = 4
    seed: int = 3
    config_delay: float = 0.03
    cache_delay: float = 0.08
    grace: float = 0.1
    config_timeout: float = 1.0


@dataclass
class Report:
    """What happened, with times on the loop's clock."""

    t0: float = field(default_factory=cohort.current_time)
    log: list[tuple[float, str]] = field(default_factory=list)
    config: Config | None = None
    warm_start: bool = False
    started_at: float = math.nan
    world: World | None = None
    generations: int = 0
    cache_warmer: cohort.ChildStatus | None = None

    def note(self, message: str) -> None:
        self.log.append((cohort.current_time(), message))


async def load_config(settings: Settings, flags: cohort.EventFlags, report: Report) -> None:
    await asyncio.sleep(settings.config_delay)  # reading files, asking a config service...
    report.config = default_config(settings.regions)
    report.note("config loaded")
    flags.set("config")


async def warm_cache(settings: Settings, flags: cohort.EventFlags, report: Report) -> None:
    await asyncio.sleep(settings.cache_delay)  # precomputing the travel tables...
    report.note("cache warm")
    flags.set("cache")


async def wait_until_ready(settings: Settings, flags: cohort.EventFlags) -> bool:
    """Wait for config AND (cache OR the grace period); return whether the cache is warm.

    Raises ``TimeoutError`` if the config is not loaded within ``config_timeout``.
    """
    start = cohort.current_time()
    with cohort.move_on_at(start + settings.grace):
        await flags.wait_all("config", "cache")  # both set at once
        return True
    with cohort.fail_at(start + settings.config_timeout):
        seen = await flags.wait_all("config")  # the cache is optional, the config is not
    return "cache" in seen  # the snapshot of the flags that satisfied the wait


async def simulate(settings: Settings) -> Report:
    """Load the config and warm the cache, start when ready, run the phases; report."""
    report = Report()
    flags = cohort.EventFlags("config", "cache")
    async with cohort.TaskGroup(name="simulation") as g:
        g.spawn(load_config, settings, flags, report, name="load config")
        warmer = g.spawn(warm_cache, settings, flags, report, name="warm cache", critical=False)
        report.warm_start = await wait_until_ready(settings, flags)
        report.started_at = cohort.current_time()
        report.note(f"starting {'warm' if report.warm_start else 'cold (grace period over)'}")
        assert report.config is not None  # the "config" flag says so
        world = report.world = World(report.config, settings.seed)
        barrier = cohort.Barrier(len(world.regions), action=world.merge)
        async with cohort.TaskGroup(name="regions") as workers:
            for name in world.regions:
                workers.spawn(region_worker, name, world, barrier, flags, name=name)
        report.note(f"over after {world.day} days")
        report.generations = barrier.statistics().generation
    report.cache_warmer = warmer.status  # succeeded, or cancelled if the run ended first
    return report


# -- the script -----------------------------------------------------------------------


def print_report(report: Report, every: int = 10) -> None:
    for at, message in report.log:
        print(f"t={at - report.t0:6.3f}s  {message}")
    world = report.world
    assert world is not None
    print(f"\n{'day':>4} {'susceptible':>12} {'infected':>9} {'recovered':>10} {'t':>8}  slowest")
    for day in world.history:
        if day.number % every == 0 or day is world.history[-1]:
            print(
                f"{day.number:>4} {day.susceptible:>12,} {day.infected:>9,} {day.recovered:>10,}"
                f" {day.ended_at - report.t0:>7.3f}s  {day.slowest}"
            )
    last = world.history[-1]
    print(
        f"\n{world.day} days, {report.generations} barrier generations, "
        f"{last.infected + last.recovered:,} people infected in all; "
        f"cache warmer: {report.cache_warmer.value if report.cache_warmer else '?'}"
    )


def parse_args() -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=defaults.regions)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--config-delay", type=float, default=defaults.config_delay, metavar="S")
    parser.add_argument("--cache-delay", type=float, default=defaults.cache_delay, metavar="S")
    parser.add_argument("--grace", type=float, default=defaults.grace, metavar="S")
    parser.add_argument(
        "--config-timeout", type=float, default=defaults.config_timeout, metavar="S"
    )
    args = parser.parse_args()
    if not 1 <= args.regions <= 64:
        parser.error("--regions must be between 1 and 64")
    return Settings(
        regions=args.regions,
        seed=args.seed,
        config_delay=args.config_delay,
        cache_delay=args.cache_delay,
        grace=args.grace,
        config_timeout=args.config_timeout,
    )


async def main(settings: Settings) -> int:
    report: Report | None = None
    try:
        report = await simulate(settings)
    except* TimeoutError:  # raised in the group's body, so it comes in an ExceptionGroup
        print(f"the config was not loaded within {settings.config_timeout} s; giving up")
    if report is None:
        return 1
    print_report(report)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(cohort.run(main, parse_args()))
    except KeyboardInterrupt:  # every task has been cancelled and awaited by now
        raise SystemExit("interrupted") from None
