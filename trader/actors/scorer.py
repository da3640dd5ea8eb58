"""The scorer actor: between strategy and risk.

Until a model is configured it passes every signal through unscored
(``probability=None``), which is the documented degradation rule in
DESIGN.md ("rule-only"). It is stateless, so a restart loses nothing.
"""

from __future__ import annotations

from trader.actors.base import InboxActor
from trader.messages import Message, SignalEmitted, SignalScored


class ScorerActor(InboxActor):
    """Scores signals; without a model, passes them on unscored."""

    name = "scorer"

    def handle(self, msg: Message) -> None:
        if isinstance(msg, SignalEmitted):
            self._out.post(SignalScored(ts_ns=msg.ts_ns, signal=msg))
