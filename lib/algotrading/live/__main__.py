"""Container entry point: `python -m algotrading.live` runs one scheduled session (see Dockerfile).

Reads ALGO_LIVE_STRATEGY, ALGO_LIVE_SYMBOL, ALGO_LIVE_START (first trading day of the run),
ALGO_LIVE_PARAMS (JSON: sizing, costs and strategy parameters), ALGO_LIVE_LIMITS and
ALGO_LIVE_ALERTS (JSON), ALGO_LIVE_BROKER (paper | alpaca) and ALGO_LIVE_RUN, plus the settings
in algotrading.live.service. It polls the vendor once, trades the new bars and exits; the journal
carries the state to the next run.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from algotrading.live import service


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    env = os.environ
    try:
        summary = service.poll(
            env["ALGO_LIVE_STRATEGY"], env["ALGO_LIVE_SYMBOL"], env["ALGO_LIVE_START"],
            params=json.loads(env.get("ALGO_LIVE_PARAMS", "{}")),
            limits=json.loads(env.get("ALGO_LIVE_LIMITS", "{}")),
            alerts=json.loads(env.get("ALGO_LIVE_ALERTS", "{}")),
            run=env.get("ALGO_LIVE_RUN", "live"), broker_kind=env.get("ALGO_LIVE_BROKER", "alpaca"))
    except KeyError as exc:
        print(f"algotrading.live: set environment variable {exc.args[0]}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line for the task's log; ECS marks the task failed
        print(f"algotrading.live: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
