"""Reading a process's /metrics in the tests (prometheus-client's own text parser)."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """``url``/metrics as ``(sample name, labels) -> value``."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(url: str, name: str, **labels: str) -> float | None:
    """One sample's value (None if the process has no such sample)."""
    return scrape(url).get((name, frozenset(labels.items())))
