"""mexc_sim: an offline MEXC contract exchange (WebSocket ``/edge`` + REST ``/api/v1/contract``).

Run it with ``python -m cdb.mexc_sim``; use it in-process through :class:`Simulator`
and :func:`cdb.mexc_sim.app.running_simulator`. The protocol decisions are in
``docs/MARKET_DATA.md``.
"""
