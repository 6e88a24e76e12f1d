"""A runner process for the kill-and-restart tests: `python live_child.py JOURNAL PRICES BROKER
[KILL]` runs SMA over PRICES from START with the paper broker or Alpaca (APCA_* from the
environment). KILL = append:N (SIGKILL right after the N-th new journal event of this process)
or submit:N (right after the N-th order reached the broker); SPEED slows the replay."""

from __future__ import annotations

import json
import os
import signal
import sys

import pandas as pd

from algotrading.live import AlpacaBroker, Limits, PaperBroker, ReplayFeed, Runner, SqliteJournal

START = "2023-03-01"


def _die_after(obj: object, name: str, n: int, counts_new: bool) -> None:
    original = getattr(obj, name)
    seen = [0]

    def wrapped(*args: object, **kw: object) -> object:
        out = original(*args, **kw)
        if out or not counts_new:
            seen[0] += 1
            if seen[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(obj, name, wrapped)


def main(journal_path: str, prices_path: str, broker_kind: str, kill: str = "",
         speed: str = "") -> None:
    prices = pd.read_csv(prices_path, index_col="dt", parse_dates=True)
    feed = ReplayFeed(prices, "SYN", start=START, speed=float(speed) if speed else None)
    journal = SqliteJournal(journal_path)
    broker = PaperBroker("SYN", commission_bps=5, slippage_bps=2) if broker_kind == "paper" \
        else AlpacaBroker()
    if kill:
        what, n = kill.split(":")
        if what == "append":
            _die_after(journal, "append", int(n), counts_new=True)
        else:
            _die_after(broker, "submit", int(n), counts_new=False)
    params = {"fast_period": 5, "slow_period": 15, "long_only": True}
    runner = Runner("sma", "SYN", broker, journal, params=params, history=feed.history,
                    size=100, limits=Limits(max_order_shares=150))
    print(json.dumps(runner.run(feed)))


if __name__ == "__main__":
    main(*sys.argv[1:])
