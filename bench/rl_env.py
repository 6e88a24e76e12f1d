"""RL environment speed (issue #21 target: >= 100,000 steps per second on one core; #11 asked
for 20,000).

Random actions on the offline GSPC sample, 252-bar episodes with resets, the default features
(window 30) and costs on, so every step goes through the Broker as in training. Reports the best
of 3 runs of `--steps` steps (time.perf_counter) and the load average, since the machine is shared.
Run: `.venv/bin/python bench/rl_env.py`.
"""

from __future__ import annotations

import argparse
import os
import time

import inputs
import numpy as np

from algotrading.rl.env import TradingEnv

TARGET = 100_000


def steps_per_second(env: TradingEnv, actions: np.ndarray) -> float:
    env.reset(seed=0)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return len(actions) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--window", type=int, default=30)
    args = p.parse_args()
    env = TradingEnv(inputs.gspc(bars=100_000), window=args.window, commission_bps=1.0,
                     slippage_bps=2.0)
    actions = np.random.default_rng(0).integers(0, 3, args.steps).tolist()
    best = max(steps_per_second(env, actions) for _ in range(3))
    verdict = "PASS" if best >= TARGET else "FAIL"
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"TradingEnv: {best:,.0f} steps/s (window {args.window}, best of 3 x {args.steps:,} steps); "
          f"target >= {TARGET:,}: {verdict}")


if __name__ == "__main__":
    main()
