"""One base exception for the package, so a notebook can catch the project's errors and nothing else:

    try:
        result = backtest.run("sma", prices, fast_period=50, slow_period=20)
    except AlgotradingError as exc:
        print(exc)  # one line naming the input, the parameter or the rule

Every exception the package defines derives from `AlgotradingError`, and keeps the built-in base
that callers caught before it existed (ValueError, OSError, LookupError, RuntimeError), so
`except ValueError` still works:

- `schema.DataError` (ValueError): bad input data; names the file, symbol, row and rule.
- `ParameterError` (ValueError): a strategy or engine parameter of the wrong type, out of its
  declared range, unknown, or inconsistent with another.
- `LakeError` (OSError): an ingest that could not complete (nothing changed) or that committed but
  was not fully applied.
- `JobError` (ValueError): SageMaker jobs that did not complete (`jobs.wait`).
- `StackError` (LookupError): a CloudFormation stack that cannot be read.
- `live.journal.JournalError`, `live.brokers.AlpacaError` (RuntimeError): the live runner's journal
  and broker.

This module is the bottom of the package: it imports nothing from it.
"""

from __future__ import annotations


class AlgotradingError(Exception):
    """Base of every exception the package raises on purpose."""


class ParameterError(AlgotradingError, ValueError):
    """A parameter value (strategy or engine) that its declaration refuses."""


class LakeError(AlgotradingError, OSError):
    """An ingest into the lake that failed or was only partly applied; the message says which."""


class JobError(AlgotradingError, ValueError):
    """A SageMaker job (training, sweep shard, tuning) that did not complete or was refused."""


class StackError(AlgotradingError, LookupError):
    """A CloudFormation stack whose outputs cannot be read (missing, or no access)."""
