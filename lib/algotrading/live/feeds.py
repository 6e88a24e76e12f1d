"""Market data adapters: anything with `bars()` yielding validated daily `Bar`s in date order.

Every bar passes `algotrading.schema.validate`, the validator ingest uses, so a bad bar from a
vendor stops the feed with the same DataError a bad file would.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from algotrading import web
from algotrading.schema import NAMES, DataError, validate

DAY_SECONDS = 86_400.0


@dataclass(frozen=True)
class Bar:
    """One symbol's daily bar (prices as stored in the lake)."""

    sym: str
    dt: str  # YYYY-MM-DD
    open: float
    high: float
    low: float
    close: float
    vol: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Feed(Protocol):
    def bars(self) -> Iterator[Bar]: ...


def to_bars(rows: pd.DataFrame, origin: str) -> list[Bar]:
    """Canonical rows (dt, sym, open, high, low, close, vol) -> validated bars in date order."""
    clean = validate(rows, origin)
    return [Bar(r.sym, r.dt, r.open, r.high, r.low, r.close, r.vol)
            for r in clean.itertuples(index=False)]


def price_rows(prices: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """A price frame (DatetimeIndex; open, high, low, close, vol) -> canonical rows."""
    rows = prices.reset_index()
    rows = rows.rename(columns={rows.columns[0]: "dt"})
    rows["dt"] = pd.to_datetime(rows["dt"]).dt.strftime("%Y-%m-%d")
    rows["sym"] = symbol
    if "vol" not in rows:
        rows["vol"] = 0.0
    return rows.loc[:, list(NAMES)]


class ReplayFeed:
    """Replays one symbol's stored bars from `start` (the bars before it are `history`, which the
    strategy's indicators may use), sleeping 86400 / `speed` seconds between bars when `speed`
    is given (speed 86400: one trading day per second)."""

    def __init__(self, prices: pd.DataFrame, symbol: str, start: str | None = None,
                 end: str | None = None, speed: float | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if speed is not None and not 1 <= speed < math.inf:  # nan, 1e-300: a sleep that fails
            raise ValueError(f"speed={speed}: want a number >= 1 (1: one trading day per day; "
                             "86400: one per second), or none for no pause")
        prices = prices.loc[:end] if end is not None else prices
        first = pd.Timestamp(start) if start is not None else prices.index[0]
        self.symbol, self.speed, self._sleep = symbol, speed, sleep
        self.history = prices.loc[prices.index < first]
        self._rows = price_rows(prices.loc[prices.index >= first], symbol)
        if self._rows.empty:
            raise ValueError(f"no bars of {symbol} from {first.date()} to replay")

    @classmethod
    def from_lake(cls, symbol: str, start: str | None = None, end: str | None = None,
                  speed: float | None = None) -> ReplayFeed:
        from algotrading.query import load_prices

        return cls(load_prices(symbol, end=end), symbol, start, end, speed)

    def bars(self) -> Iterator[Bar]:
        for i, bar in enumerate(to_bars(self._rows, f"replay of {self.symbol}")):
            if i and self.speed:
                self._sleep(DAY_SECONDS / self.speed)
            yield bar


@dataclass(frozen=True)
class VendorConfig:
    """Where and how to poll a vendor's daily bars (a JSON object in a file or ALGO_FEED_CONFIG).

    `url` is a template with {symbol} and {start}; `records` the key of the list of bars in the
    response; `fields` maps our columns to the vendor's; `date_chars` keeps the first N characters
    of the vendor's time stamp (10: YYYY-MM-DD); `headers` maps an HTTP header to the name of the
    environment variable holding its value (API keys never sit in the config).
    """

    url: str
    records: str = "bars"
    fields: Mapping[str, str] = field(default_factory=lambda: {
        "dt": "t", "open": "o", "high": "h", "low": "l", "close": "c", "vol": "v"})
    date_chars: int = 10
    headers: Mapping[str, str] = field(default_factory=dict)
    interval: float = 60.0  # seconds between polls

    @classmethod
    def load(cls, source: str | Mapping[str, Any]) -> VendorConfig:
        """From a dict, a JSON file path or a JSON string."""
        if isinstance(source, str):
            text = Path(source).read_text() if os.path.isfile(source) else source
            try:
                source = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"feed config: not JSON ({exc})") from None
        unknown = sorted(set(source) - set(cls.__dataclass_fields__))
        if unknown or "url" not in source:
            raise ValueError(f"feed config: need 'url'; unknown key(s) {unknown}")
        if "fields" in source:
            missing = sorted(set(NAMES) - {"sym"} - set(source["fields"]))
            if missing:
                raise ValueError(f"feed config: fields lacks {missing}")
        try:
            web.check_url(str(source["url"]), "feed config: url")
        except web.HttpError as exc:
            raise ValueError(str(exc)) from None
        return cls(**source)


class PollingFeed:
    """Polls a vendor's daily-bars endpoint and yields each new bar once, validated.

    `polls` bounds the number of requests (None: forever); between polls it sleeps `interval`.
    `history` (e.g. from the lake) holds the bars before `start` for the strategy's indicators.
    """

    def __init__(self, config: VendorConfig, symbol: str, start: str, polls: int | None = None,
                 history: pd.DataFrame | None = None, sleep: Callable[[float], None] = time.sleep,
                 timeout: float = 30.0):
        self.config, self.symbol, self.polls, self.history = config, symbol, polls, history
        self.last = (pd.Timestamp(start) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
        self._sleep, self._timeout = sleep, timeout

    def _url(self) -> str:
        return self.config.url.format(symbol=urllib.parse.quote(self.symbol),
                                      start=(pd.Timestamp(self.last) + pd.Timedelta(days=1))
                                      .strftime("%Y-%m-%d"))

    def poll(self) -> list[Bar]:
        """One request: the bars after the last one seen."""
        url = self._url()
        headers = {}
        for header, env in self.config.headers.items():
            if not os.environ.get(env):
                raise ValueError(f"feed config: header {header} needs environment variable {env}")
            headers[header] = os.environ[env]
        try:  # keys (headers) go only to the URL's origin: no redirect elsewhere
            body = json.loads(web.request(url, headers=headers, credentials=bool(headers),
                                          timeout=self._timeout))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(url, f"feed request failed: {exc}") from None
        records = body.get(self.config.records) if isinstance(body, dict) else None
        if records is None:
            raise DataError(url, f"response has no list {self.config.records!r}")
        if not records:
            return []
        raw = pd.DataFrame(records)
        names = dict(self.config.fields)
        lacking = sorted(v for v in names.values() if v not in raw)
        if lacking:
            raise DataError(url, f"bars lack field(s) {lacking}")
        rows = pd.DataFrame({col: raw[src] for col, src in names.items()})
        rows["dt"] = rows["dt"].astype(str).str[: self.config.date_chars]
        rows["sym"] = self.symbol
        bars = [b for b in to_bars(rows.loc[:, list(NAMES)], url) if b.dt > self.last]
        if bars:
            self.last = bars[-1].dt
        return bars

    def bars(self) -> Iterator[Bar]:
        done = 0
        while self.polls is None or done < self.polls:
            if done:
                self._sleep(self.config.interval)
            yield from self.poll()
            done += 1
