"""Helpers for testing programs that use wsbridge.

:mod:`wsbridge.testing.strategies` holds `hypothesis <https://hypothesis.works>`_ strategies
that generate valid events for any registry (the trading one included): model instances,
payloads, and whole event frames. It needs ``hypothesis``, which only that module imports,
so importing :mod:`wsbridge.testing` itself costs nothing.
"""
