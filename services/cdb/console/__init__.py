"""console: the owner's web console and PWA (port 8007).

Server-rendered pages over the books the services write (read-only PostgreSQL), live by
server-sent events, one owner behind a password, and the owner's two ways to act: an
approval decision on the bus, and a change of the TradingBot (a patch of the resource in
Kubernetes, a control event in the demo).
"""
