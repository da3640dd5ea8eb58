"""Tests of trader.sandbox (a package like tests/, so helpers import as tests.sandbox.*)."""
