"""examples/redis_phases.py: worker processes in phases on a Redis barrier, one killed."""

from __future__ import annotations

from _util import EXAMPLES, run_python


def test_the_killed_worker_breaks_the_barrier_and_the_others_stop_cleanly(
    redis_url: str,
) -> None:
    result = run_python(str(EXAMPLES / "redis_phases.py"), redis_url, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "worker-2: killed during phase 2" in out
    for me in (0, 1, 3):
        assert f"worker-{me}: phase 1 done" in out
        assert f"worker-{me}: phase 2 done" not in out  # nobody passed without worker-2
        assert f"worker-{me}: stopped cleanly after phase 2" in out
    assert out.count("worker-2's lease lapsed") == 3
    assert "'worker-0': 0, 'worker-1': 0, 'worker-2': -9, 'worker-3': 0" in out
