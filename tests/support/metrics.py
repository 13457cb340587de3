"""Prometheus samples read from a service's /metrics with prometheus_client's own parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def sample_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` in Prometheus text whose labels include
    ``labels`` (0 when there is none), read with prometheus_client's own parser."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def scrape(url: str, name: str, **labels: str) -> float:
    """``sample_sum`` of ``url``/metrics."""
    return sample_sum(httpx.get(f"{url}/metrics", timeout=5).text, name, **labels)
