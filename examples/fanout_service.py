"""Web request fan-out with cohort: quorum reads, hedging, mirror races, deadlines.

Starts 10 simulated backends (real HTTP servers on 127.0.0.1, with a slow
tail and injected failures, deterministic for a seed) and a Starlette
fan-out service on uvicorn whose ``GET /product/{key}`` asks them all at
once with cohort (see ``cohort/examples/fanout/service.py``, shipped in the
package so that ``cohort demo`` runs it too). Then it sends the same
requests three times, from the plain approach (one replica of everything) to
all of cohort's tactics, and prints latency percentiles and error rates: the
quorum masks failing replicas, hedging and the mirror race cut the tail.

    python examples/fanout_service.py --requests 100 --concurrency 4

Everything binds to 127.0.0.1 only, and the program exits by itself.
"""

from __future__ import annotations

import argparse
import json

import aiohttp

import cohort
from cohort.examples.fanout.load import format_table, summarize
from cohort.examples.fanout.stack import compare, local_stack


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="requests per strategy")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--seed", type=int, default=1, help="seed of the backends' behaviour")
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, help="stop a strategy's run after this long"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    return args


async def main(args: argparse.Namespace) -> None:
    keys = [f"sku-{i}" for i in range(args.requests)]
    async with local_stack(args.seed) as url:
        print(f"fan-out service on {url}, backends on 127.0.0.1 (seed {args.seed})\n")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/product/{keys[0]}") as sample,
        ):
            body = await sample.json()
        print(f"GET /product/{keys[0]} -> {sample.status} {json.dumps(body)}\n")
        runs = await compare(url, keys, concurrency=args.concurrency, max_seconds=args.max_seconds)
    print(f"{args.requests} requests per strategy, {args.concurrency} at a time:\n")
    print(format_table(summarize(label, records) for label, records in runs.items()))


if __name__ == "__main__":
    cohort.run(main, parse_args())  # Ctrl-C: servers shut down, one line, exit status 130
