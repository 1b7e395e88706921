"""The public surface: `cohort.__all__` is sorted, complete and shows public names."""

from __future__ import annotations

import importlib
import pkgutil

import cohort
import cohort.pipeline


def test_all_is_sorted_and_unique() -> None:
    assert list(cohort.__all__) == sorted(set(cohort.__all__))


def test_every_public_name_is_exported() -> None:
    public = {n for n in dir(cohort) if n[0].isalpha()}  # pytest adds "@py_*" names
    submodules = {m.name for m in pkgutil.iter_modules(cohort.__path__)}
    assert public - submodules - {"annotations"} == set(cohort.__all__)


def test_reexported_names_show_the_public_module() -> None:
    for name in cohort.__all__:
        obj = getattr(cohort, name)
        module = getattr(obj, "__module__", "cohort")
        assert module == "cohort" or not module.startswith("cohort."), name


def test_private_modules_are_prefixed() -> None:
    for info in pkgutil.iter_modules(cohort.__path__):
        public = {"testing", "bridge", "durable", "redis", "pipeline", "cli", "examples"}
        if info.name not in public:
            assert info.name.startswith("_"), info.name
        importlib.import_module(f"cohort.{info.name}")


def test_version_and_the_testing_subpackage_after_a_bare_import() -> None:
    from _util import run_python

    code = (
        "import sys, cohort\n"
        "print(cohort.__version__)\n"
        "print('structlog' in sys.modules)  # imported once events are switched on\n"
        "print(cohort.testing.run(lambda: __import__('asyncio').sleep(0, 'ran')))\n"
        "cohort.enable_events()\n"
        "print('structlog' in sys.modules)\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [cohort.__version__, "False", "ran", "True"]
    assert cohort.__version__.count(".") == 2


def test_import_cohort_leaves_the_heavy_layers_for_first_use() -> None:
    from _util import run_python

    heavy = [
        "multiprocessing",
        "tempfile",
        "structlog",
        "cohort.bridge",
        "cohort.pipeline",
        "cohort._flow",
        "cohort._resilience._breaker",
        "cohort._resilience._bulkhead",
        "cohort._resilience._hedge",
        "cohort._resilience._limiter",
        "cohort.durable",
        "sqlite3",
        "cohort.redis",
        "redis",
    ]
    code = (
        "import sys, cohort\n"
        f"heavy = {heavy!r}\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "print(sorted(set(cohort.__all__) - set(dir(cohort))))\n"
        "from cohort import Stage\n"
        "print(Stage.__module__, cohort.ProcessPool.__module__, cohort.stage is cohort.stage)\n"
        "print(sorted(m for m in heavy[:2] + heavy[3:5] if m not in sys.modules))\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "[]", "cohort cohort True", "[]"]


def test_stage_stats_is_another_name_for_stage_statistics() -> None:
    """Statistics records are named ``*Statistics``; the earlier ``StageStats`` still works."""
    assert cohort.StageStats is cohort.StageStatistics
    assert cohort.pipeline.StageStats is cohort.pipeline.StageStatistics is cohort.StageStatistics
    assert cohort.StageStatistics.__name__ == "StageStatistics"
    assert cohort.StageStatistics.__module__ == "cohort"

    async def main() -> cohort.Report[int]:
        return await cohort.stage(_double).run([1, 2])

    stats = cohort.testing.run(main).stages
    assert [type(s) for s in stats] == [cohort.StageStatistics]


async def _double(x: int) -> int:
    return 2 * x


def test_a_flow_of_async_nodes_leaves_the_bridge_and_the_pipeline_unloaded() -> None:
    """Flow loads the bridge (multiprocessing) and the pipeline when a flow first
    needs them (a cpu node, ``as_stage``), not before."""
    from _util import run_python

    code = (
        "import asyncio, sys, cohort\n"
        "layers = ['multiprocessing', 'cohort.bridge', 'cohort.pipeline']\n"
        "def loaded():\n"
        "    print(sorted(m for m in layers if m in sys.modules))\n"
        "flow = cohort.Flow('f', inputs=['x'])\n"
        "@flow.node\n"
        "async def a(x):\n"
        "    return x + 1\n"
        "print(asyncio.run(flow.run(x=1))[a])\n"
        "loaded()\n"
        "@flow.node(cpu=True)\n"
        "def b(a):\n"
        "    return a\n"
        "loaded()\n"
        "print(flow.as_stage('x', a).name)\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2",
        "[]",
        "['cohort.bridge', 'cohort.pipeline', 'multiprocessing']",
        "f",
    ]
