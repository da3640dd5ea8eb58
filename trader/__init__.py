"""trader: an actor-based asyncio trading daemon. The public API is its contracts:
the CLI and exit codes, the TOML schema, the message schema, metric names and the
Broker protocol (see README.md and DESIGN.md)."""

__version__ = "0.1.0"
