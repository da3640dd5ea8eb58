"""The money rule, in one place.

* **Prices** are ``float`` as the market quotes them. The broker boundary rounds
  a fill price to the tick: whole cents at or above $1.00, 1/100 of a cent
  below (Alpaca's and Reg NMS's sub-penny rule).
* **Cash, commissions, notional amounts, equity and P&L** are integer cents.
  A dollar amount typed by a person (config, the wire) becomes cents through
  :func:`to_cents`, which rounds half to even on the *decimal* value of its
  shortest repr (``2.675`` dollars is 268 cents, as a person would write it).
  A position or fill value is :func:`value_cents`, one float64 product
  rounded once.

Because cents are ``int``, sums over any number of fills are exact, and the
accounting identity ``cash + sum(qty * last close) == equity`` holds to the cent
with one rounding per position value.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

_CENT = Decimal(1)
_TICK = Decimal("0.01")
_SUBPENNY_TICK = Decimal("0.0001")


def to_cents(dollars: float) -> int:
    """Round a dollar amount to integer cents, half to even on its decimal repr."""
    return int((Decimal(repr(dollars)) * 100).quantize(_CENT, rounding=ROUND_HALF_EVEN))


def value_cents(qty: float, price: float) -> int:
    """The value of ``qty`` shares at ``price``, in cents.

    Defined as ``round(qty * price * 100.0)`` in float64, evaluated left to
    right, rounding half to even: cheap enough for every bar, identical in
    Python and in numpy (``np.rint(qty * prices * 100.0)``), and exact for
    cent prices and share counts below 2**53 / 100.
    """
    return round(qty * price * 100.0)


def to_dollars(cents: int) -> float:
    """Cents as a float dollar amount, for display and for the broker's wire format."""
    return cents / 100


def cents_str(cents: int) -> str:
    """Cents as a decimal string (``"1234.50"``), Alpaca's wire format for money."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


def round_price(price: float) -> float:
    """Round a price to its tick: cents at or above $1, 1/100 cent below.

    Half to even on the decimal repr, like :func:`to_cents`.
    """
    scale = 100.0 if price >= 1.0 else 10_000.0
    ticks = price * scale
    nearest = round(ticks)
    if abs(ticks - nearest) < 1e-6:
        # Already on the tick, as quoted prices are: the decimal rounding
        # below would give the same float (nearest / scale is the double
        # closest to that decimal), at a tenth of the cost on every fill.
        return nearest / scale
    tick = _TICK if price >= 1.0 else _SUBPENNY_TICK
    return float(Decimal(repr(price)).quantize(tick, rounding=ROUND_HALF_EVEN))


def floor_shares(amount_cents: int, price: float, *, fractional: bool = False) -> float:
    """Shares that ``amount_cents`` buys at ``price``: whole shares rounded down,
    or fractional shares to 1e-9 (Alpaca's increment) rounded down when allowed."""
    if price <= 0:
        raise ValueError(f"price must be positive, got {price!r}")
    shares = Decimal(amount_cents) / 100 / Decimal(repr(price))
    quantum = Decimal("0.000000001") if fractional else _CENT
    return float(shares.quantize(quantum, rounding=ROUND_FLOOR))
