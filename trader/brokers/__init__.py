"""Brokers: the port (base.py) and its adapters (simulated, alpaca)."""
