"""The live terminal view of a running stack (textual)."""

from cdb.view.app import DashboardApp
from cdb.view.source import DashboardSource, Snapshot, SourceConfig

__all__ = ["DashboardApp", "DashboardSource", "Snapshot", "SourceConfig"]
