"""KalamDB-compatible stand-in server (aiohttp + SQLite) with fault injection.

Run with `python -m standin --port 0`; from Python use `standin.testing.StandinProcess`.
"""
