"""``cdb report``: the trading books as an HTML report with PNG charts."""

from cdb.report.books import Books, connect, count_rows, read_books
from cdb.report.render import PngExportError, Report, ReportStats, write_report

__all__ = [
    "Books",
    "PngExportError",
    "Report",
    "ReportStats",
    "connect",
    "count_rows",
    "read_books",
    "write_report",
]
