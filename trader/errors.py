"""The exception tree.

Expected outcomes (a risk denial, a broker rejection) are *messages*, not
exceptions. Exceptions are for transient faults, handled at the adapter edge,
and for invariant violations, which crash the actor and let the supervisor
decide::

    TraderError
    ├── ConfigError              bad TOML or --set; exit code 2
    ├── DataError                a data file or frame cannot be trusted
    │   └── BadRowError          one CSV row, with file:line (trader.data.bars)
    ├── BrokerError
    │   ├── BrokerUnavailable    transient: timeouts, 429, 5xx, disconnects
    │   └── BrokerRejected       definite: the broker said no (becomes OrderRejected)
    ├── InvariantViolation       a fill for an unknown order, a ledger that does not add up
    │   └── ReconciliationMismatch
    ├── RestartBudgetExhausted   the supervisor gave up; exit code 3
    ├── ControlUnavailable       no daemon answered on the control socket; exit code 6
    └── ModelIntegrityError      a scorer model whose artifact or features do not match
                                 its manifest; the scorer degrades (DESIGN.md)
"""

from __future__ import annotations


class TraderError(Exception):
    """Base of every error raised by trader itself."""


class ConfigError(TraderError):
    """The configuration cannot be used. The message names the file and field."""


class DataError(TraderError):
    """Input data cannot be trusted."""


class BrokerError(TraderError):
    """Base of broker adapter errors."""


class BrokerUnavailable(BrokerError):
    """A transient broker fault; retry with backoff."""


class BrokerRejected(BrokerError):
    """The broker definitely refused a request."""

    def __init__(self, reason: str, *, code: str = "", status: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.status = status


class InvariantViolation(TraderError):
    """Something that must never happen did; the actor crashes."""


class ReconciliationMismatch(InvariantViolation):
    """Our journal and the broker disagree in a way we cannot adopt."""


class ControlUnavailable(TraderError):
    """No daemon answered on the control socket (not running, or another path)."""


class RestartBudgetExhausted(TraderError):
    """A child crashed more often than the restart intensity allows."""

    def __init__(self, child: str, restarts: int, period: float) -> None:
        super().__init__(f"{child} crashed {restarts} times within {period:g}s; giving up")
        self.child = child


class ModelIntegrityError(TraderError):
    """A scorer model cannot be trusted; the message names the file and the mismatch.

    Raised for a missing or unreadable manifest or artifact, an artifact whose
    sha256 differs from its manifest, or a feature list other than
    :data:`trader.ml.features.FEATURE_NAMES`.

    Not an :class:`InvariantViolation`: the scorer survives it by applying its
    degradation rule (``[scorer] on_model_error``) rather than crashing.
    """
