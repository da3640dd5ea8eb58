"""Configuration: bad input is one line naming the file and field, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trader.cli import EXIT_USAGE, main
from trader.config import Config, apply_overrides, load_config, parse_override
from trader.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    return p


BAD_CONFIGS = [
    ("unknown key", "[broker]\ncash_usd = 1000.0\ncolour = 'red'\n", "$.broker", "colour"),
    ("wrong type", "[broker]\ncash_usd = 'lots'\n", "$.broker.cash_usd", "float"),
    ("out of range", "[broker]\ncash_usd = -5.0\n", "$.broker.cash_usd", ">= 1.0"),
    ("bad enum", "[data]\non_bad_row = 'ignore'\n", "$.data.on_bad_row", "error"),
    ("unknown section", "[brokr]\ncash_usd = 1.0\n", "$", "brokr"),
    ("bad strategy parameter", "[strategy]\nparams = { fast = 'ten' }\n",
     "$.strategy.params.fast", "int"),
    ("strategy parameter out of range", "[strategy]\nparams = { fast = 50, slow = 20 }\n",
     "$.strategy.params", "fast"),
    ("unknown strategy", "[strategy]\nname = 'nope'\n", "$.strategy.name", "nope"),
    ("invalid TOML", "[broker\ncash_usd = 1\n", "invalid TOML", "line 1"),
]


@pytest.mark.parametrize(("case", "text", "field", "detail"), BAD_CONFIGS,
                         ids=[c[0] for c in BAD_CONFIGS])
def test_each_kind_of_bad_config_exits_2_with_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, text: str, field: str,
    detail: str,
) -> None:
    """A bad config is refused before anything runs, with the file and field on one line."""
    path = _write(tmp_path, text)
    code = main(["replay", "--config", str(path), "--db", str(tmp_path / "x.db")])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE
    assert len(err.splitlines()) == 1, err
    assert str(path) in err
    assert field in err
    assert detail in err
    assert "Traceback" not in err


def test_a_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Naming a file that does not exist is a config error, not a crash."""
    missing = tmp_path / "nope.toml"
    assert main(["replay", "--config", str(missing)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "not found" in err


def test_set_overrides_are_validated_like_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--set with a wrong type is reported with the dotted field path."""
    path = _write(tmp_path, "")
    code = main(["replay", "--config", str(path), "--set", "broker.slippage_bps=-1"])
    assert code == EXIT_USAGE
    assert "$.broker.slippage_bps" in capsys.readouterr().err


def test_set_overrides_any_field_by_dotted_path(tmp_path: Path) -> None:
    """--set replaces values, typed as TOML, and creates missing tables."""
    path = _write(tmp_path, "[strategy]\nparams = { fast = 5, slow = 20 }\n")
    cfg = load_config(path, ["strategy.params.fast=10", "strategy.instance=fast-10",
                             "data.symbols=['AAPL', 'MSFT']", "risk.allow_short=true"])
    assert cfg.strategy.params == {"fast": 10, "slow": 20}
    assert cfg.strategy_instance == "fast-10"
    assert cfg.data.symbols == ("AAPL", "MSFT")
    assert cfg.risk.allow_short is True


def test_a_malformed_set_is_a_config_error() -> None:
    """--set without '=' says what it expected."""
    with pytest.raises(ConfigError, match=r"dotted\.key=value"):
        parse_override("strategy.params.fast")
    with pytest.raises(ConfigError, match="not a table"):
        apply_overrides({"run": {"db": "x"}}, ["run.db.path=1"])


def test_an_empty_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    """Every section is optional; the defaults are safe."""
    cfg = load_config(_write(tmp_path, ""))
    assert cfg == Config()
    assert cfg.broker.cash_usd == 100_000.0
    assert cfg.strategy_instance == "sma_cross"


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.toml")))
def test_the_shipped_configs_are_valid(name: str) -> None:
    """Every config under config/ loads."""
    load_config(REPO / "config" / name)


def test_the_cli_exit_code_for_a_bad_config_is_2_in_a_real_process(tmp_path: Path) -> None:
    """The process exit status is 2, and stderr is one line with no traceback."""
    path = _write(tmp_path, "[risk]\nsizing = 'yolo'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "trader", "replay", "--config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "$.risk.sizing" in proc.stderr
