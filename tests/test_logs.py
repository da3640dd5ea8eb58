"""Log levels: one default and one per actor (``[logging]``), validated like any field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from trader import logs
from trader.cli import _load, build_parser
from trader.config import decode_config
from trader.errors import ConfigError


def _events(out: io.StringIO) -> list[tuple[str, str]]:
    return [(line["event"], line["level"])
            for line in map(json.loads, out.getvalue().splitlines())]


def _speak() -> None:
    """Each logger at every level, as the actors' modules log."""
    for name in ("trader.risk", "trader.feed", "trader.brokers.alpaca", "trader.graph"):
        log = structlog.get_logger(name)
        log.debug(f"{name} debug")
        log.info(f"{name} info")
        log.warning(f"{name} warning")
        log.error(f"{name} error")


def test_an_actor_can_be_more_verbose_or_quieter_than_the_rest() -> None:
    """risk at debug shows risk's debug lines only; feed at error hides its warnings;
    everything else keeps the default."""
    out = io.StringIO()
    logs.configure("info", stream=out, json=True, actors={"risk": "debug", "feed": "error"})
    _speak()
    events = {e for e, _ in _events(out)}
    assert "trader.risk debug" in events
    assert {"trader.feed debug", "trader.feed info", "trader.feed warning"}.isdisjoint(events)
    assert "trader.feed error" in events
    assert "trader.graph debug" not in events
    assert {"trader.graph info", "trader.graph warning"} <= events


def test_the_broker_adapter_speaks_for_execution() -> None:
    """The Alpaca adapter's lines follow execution's level (it is execution's broker)."""
    out = io.StringIO()
    logs.configure("warning", stream=out, json=True, actors={"execution": "debug"})
    _speak()
    events = {e for e, _ in _events(out)}
    assert {"trader.brokers.alpaca debug", "trader.brokers.alpaca info"} <= events
    assert "trader.risk info" not in events


def test_without_actor_levels_the_default_level_alone_decides() -> None:
    """No [logging.actors]: one level for every logger."""
    out = io.StringIO()
    logs.configure("warning", stream=out, json=True)
    _speak()
    assert {lvl for _, lvl in _events(out)} == {"warning", "error"}


@pytest.mark.parametrize(("raw", "message"), [
    ({"actors": {"risk": "verbose"}},
     "$.logging.actors.risk: unknown log level 'verbose' (expected debug, info, warning, error)"),
    ({"actors": {"riks": "debug"}},
     "$.logging.actors.riks: not an actor (expected one of recorder, execution, risk, scorer,"
     " strategy, feed)"),
    ({"level": "loud"},
     "$.logging.level: unknown log level 'loud' (expected debug, info, warning, error)"),
])
def test_a_bad_level_or_actor_is_a_config_error_naming_the_field(
    raw: dict[str, object], message: str
) -> None:
    """The error says which key under [logging] is wrong, and what would be right."""
    with pytest.raises(ConfigError) as exc:
        decode_config({"logging": raw}, source="run.toml")
    assert str(exc.value) == f"run.toml: {message}"


def test_the_config_file_sets_the_levels_and_the_command_line_wins(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[
                                                                        str]) -> None:
    """[logging] level beats [run] log_level, --log-level beats both, and the actor
    levels apply under whichever default is chosen."""
    cfg = tmp_path / "run.toml"
    cfg.write_text('[run]\nlog_level = "error"\n'
                   '[logging]\nlevel = "warning"\n[logging.actors]\nrisk = "debug"\n')
    parser = build_parser()

    def said(argv: list[str]) -> set[str]:
        capsys.readouterr()
        _load(parser.parse_args(argv))
        _speak()
        err = capsys.readouterr().err
        return {json.loads(line)["event"] for line in err.splitlines()}

    events = said(["replay", "--config", str(cfg)])
    assert "trader.risk debug" in events
    assert "trader.graph warning" in events
    assert "trader.graph info" not in events
    events = said(["--log-level", "info", "replay", "--config", str(cfg)])
    assert "trader.graph info" in events
    assert "trader.risk debug" in events
