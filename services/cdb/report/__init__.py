"""``cdb report``: the trading books as an HTML report with PNG charts.

Reading the books needs only the runtime set; rendering (``cdb.report.render``: plotly,
kaleido) needs the ``tools`` extra, so it is imported from its module when used, never
here: the service image imports this package (``cdb`` → demo summary) without plotly.
"""

from cdb.report.books import Books, connect, count_rows, read_books

__all__ = ["Books", "connect", "count_rows", "read_books"]
