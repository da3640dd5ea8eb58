"""The money rule (trader.money): how prices meet the tick."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import given
from hypothesis import strategies as st

from trader.money import round_price


def _decimal_rule(price: float) -> float:
    tick = Decimal("0.01") if price >= 1.0 else Decimal("0.0001")
    return float(Decimal(repr(price)).quantize(tick, rounding=ROUND_HALF_EVEN))


def test_prices_at_or_above_a_dollar_round_to_cents_half_to_even_as_written() -> None:
    assert round_price(2.675) == 2.68  # the float is just below 2.675; the written value is not
    assert round_price(2.665) == 2.66
    assert round_price(101.234) == 101.23
    assert round_price(1.0) == 1.0


def test_prices_below_a_dollar_round_to_a_hundredth_of_a_cent() -> None:
    assert round_price(0.12345) == 0.1234
    assert round_price(0.12355) == 0.1236
    assert round_price(0.999951) == 1.0


def test_a_price_already_on_the_tick_is_unchanged() -> None:
    for price in (0.0001, 0.5, 0.9999, 1.01, 19.99, 187.35, 4321.07):
        assert round_price(price) == price


@given(st.one_of(
    st.floats(min_value=1e-4, max_value=1e6, allow_nan=False, allow_infinity=False),
    # Prices on and next to the tick, where a shortcut would go wrong first.
    st.integers(min_value=1, max_value=10**8).map(lambda n: n / 100),
    st.integers(min_value=1, max_value=10**4).map(lambda n: n / 10_000),
    st.integers(min_value=1, max_value=10**8).map(lambda n: n / 100 + 0.005),
))
def test_every_price_rounds_exactly_as_the_decimal_rule_says(price: float) -> None:
    assert round_price(price) == _decimal_rule(price)
