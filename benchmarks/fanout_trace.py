"""Draw the trace of one fan-out request as a waterfall: ``docs/img/fanout-trace.svg``.

Starts the fan-out example (``cohort.examples.fanout``: simulated backends
on loopback and the service), instruments cohort into an OpenTelemetry SDK
with an in-memory exporter, sends ``GET /product/KEY`` for a few keys and
keeps the trace of the request that cancelled the most (quorum losers, the
hedge's slower attempt, the mirror race's losers). One bar per span, nested
under its parent, labelled with its name and cohort's attributes (join
policy, outcome, cancel reason). The backend calls that ``Linger`` lets
finish in the background start traces of their own (linked, not children),
so they are not in the picture.

Usage: ``python -m benchmarks.fanout_trace [OUT.svg]``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "fanout-trace.svg"
SEED = 1
KEYS = [f"sku-{i}" for i in range(12)]

_COLOURS = {
    "ok": "#4c9a2a",
    "succeeded": "#4c9a2a",
    "partial": "#d98c1f",
    "cancelled": "#9a9a9a",
    "timed_out": "#c45c1a",
    "failed": "#c0392b",
}


@dataclass(frozen=True, slots=True)
class Bar:
    """One span as drawn: its times (ns), depth and label."""

    start: int
    end: int
    depth: int
    name: str
    detail: str
    outcome: str


def bars(spans: Sequence[Any]) -> list[Bar]:
    """The spans of one trace in waterfall order: each after its parent, siblings by
    start time; a span whose parent is not among them is a root."""
    ids = {s.context.span_id for s in spans}
    children: dict[int | None, list[Any]] = {}
    for s in spans:
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        children.setdefault(parent, []).append(s)
    out: list[Bar] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda s: (s.start_time, s.name)):
            a = dict(s.attributes or {})
            outcome = str(a.get("cohort.outcome", ""))
            detail = [outcome]
            if "cohort.join_policy" in a:
                detail.insert(0, str(a["cohort.join_policy"]))
            if "cohort.cancel_reason" in a and not s.name.startswith("group"):
                detail.append(f"reason: {a['cohort.cancel_reason']}")
            out.append(
                Bar(s.start_time, s.end_time, depth, s.name, ", ".join(d for d in detail if d),
                    outcome)
            )  # fmt: skip
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return out


def svg(rows: Sequence[Bar], title: str, width: int = 960) -> str:
    """The waterfall: a time axis in ms, one row per bar, its label beside it."""
    t0 = min(b.start for b in rows)
    t1 = max(b.end for b in rows)
    total = max(t1 - t0, 1)
    left, label_w, row_h, top = 8, 190, 22, 44
    plot_w = width - left - label_w - 16
    height = top + row_h * len(rows) + 30
    ms = total / 1e6
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if ms / s <= 10)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    x0 = left + label_w
    tick = 0
    while tick <= ms:
        x = x0 + plot_w * tick / ms
        parts.append(f'<line x1="{x:.1f}" y1="{top - 10}" x2="{x:.1f}" '
                     f'y2="{height - 24}" stroke="#e4e4e4"/>')  # fmt: skip
        parts.append(f'<text x="{x:.1f}" y="{top - 14}" fill="#777" '
                     f'text-anchor="middle">{tick} ms</text>')  # fmt: skip
        tick += step
    for i, b in enumerate(rows):
        y = top + i * row_h
        colour = _COLOURS.get(b.outcome, "#5b7db1")
        x = x0 + plot_w * (b.start - t0) / total
        w = max(plot_w * (b.end - b.start) / total, 1.5)
        parts.append(f'<text x="{left + 14 * b.depth}" y="{y + 14}">{escape(b.name)}</text>')
        parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
                     f'rx="2" fill="{colour}" fill-opacity="0.45"/>')  # fmt: skip
        # The label over the bar, from its start; where it would run off the right
        # edge, it ends at the bar's end instead.
        text_x, anchor = x + 4, "start"
        if x + 6.2 * len(b.detail) > width - 8:
            text_x, anchor = x + w - 4, "end"
        parts.append(f'<text x="{text_x:.1f}" y="{y + 14}" fill="#222" font-size="11" '
                     f'text-anchor="{anchor}">{escape(b.detail)}</text>')  # fmt: skip
    y = height - 8
    parts.append(f'<text x="{left}" y="{y}" fill="#555" font-size="11">'
                 "bars: wall time on the service, coloured by outcome:</text>")  # fmt: skip
    x = left + 305
    for outcome in ("succeeded", "cancelled", "timed_out", "failed"):
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" '
                     f'fill="{_COLOURS[outcome]}" fill-opacity="0.45"/>')  # fmt: skip
        parts.append(f'<text x="{x + 14}" y="{y}" fill="#555" font-size="11">{outcome}</text>')
        x += 90
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


async def _trace(keys: Sequence[str]) -> tuple[str, list[Any]]:
    """Each key's request once; the key and spans of the trace with most cancellations."""
    import aiohttp
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import cohort
    from cohort.examples.fanout.stack import local_service

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    best: tuple[int, str, list[Any]] = (-1, "", [])
    async with local_service(SEED) as (url, _), aiohttp.ClientSession() as client:
        cohort.instrument(tracer_provider=provider)
        try:
            for key in keys:
                exporter.clear()
                async with client.get(f"{url}/product/{key}") as response:
                    await response.read()
                spans = list(exporter.get_finished_spans())
                (root,) = [s for s in spans if s.name == f"group product {key}"]
                trace = [s for s in spans if s.context.trace_id == root.context.trace_id]
                cancelled = sum(
                    (s.attributes or {}).get("cohort.outcome") == "cancelled" for s in trace
                )
                if cancelled > best[0]:
                    best = (cancelled, key, trace)
        finally:
            cohort.uninstrument()
    return best[1], best[2]


def main(argv: Sequence[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    key, spans = asyncio.run(_trace(KEYS))
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"GET /product/{key}: the fan-out example's trace (cohort.instrument())"
    out.write_text(svg(bars(spans), title))
    print(f"{out}: {len(spans)} spans of the request for {key!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
