"""The Grafana dashboard as a picture, from a real Prometheus (docs/metrics.md).

Grafana does not run here (no Docker); this draws the committed dashboard's panels
(`devstack/compose/grafana/dashboards/cqrs.json`: the same PromQL, the same legends)
with matplotlib, from `query_range` answers of a Prometheus that scraped the processes,
e.g. the one `cqrs run` starts:

    python -m bench.dashboard --prometheus http://127.0.0.1:9090 --minutes 10
"""

import argparse
import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from devstack.servers import REPO_ROOT

DASHBOARD = REPO_ROOT / "devstack/compose/grafana/dashboards/cqrs.json"
OUTPUT = REPO_ROOT / "docs/img/metrics-dashboard.png"
MAX_SERIES = 8


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> Any:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{query}", timeout=30) as answer:
        return json.load(answer)["data"]["result"]


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template).strip()


def render(prometheus: str, minutes: float, output: Path, dashboard: Path = DASHBOARD) -> Path:
    panels = [p for p in json.loads(dashboard.read_text())["panels"] if p["type"] != "row"]
    end = time.time()
    start = end - minutes * 60
    step = max(5.0, minutes * 60 / 240)
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(18, 3.2 * rows), squeeze=False)
    for axis, panel in zip(axes.flat, panels, strict=False):
        found = []
        for target in panel["targets"]:
            for series in query_range(prometheus, target["expr"], start, end, step):
                points = [(float(t) - end, float(v)) for t, v in series["values"] if v != "NaN"]
                if points:
                    label = legend(target.get("legendFormat", ""), series["metric"])
                    found.append((sum(abs(y) for _, y in points), label, points))
        found.sort(key=lambda item: item[0], reverse=True)  # the busiest series first
        drawn = 0
        for _, label, points in found[:MAX_SERIES]:
            xs, ys = zip(*points, strict=True)
            axis.plot([x / 60 for x in xs], ys, linewidth=1, label=label)
            drawn += 1
        axis.set_title(panel["title"], fontsize=9)
        axis.tick_params(labelsize=7)
        axis.set_xlabel(f"minutes ({panel['fieldConfig']['defaults']['unit']})", fontsize=7)
        if drawn:
            axis.legend(fontsize=6, loc="upper left")
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(
        "CQRS: every process (devstack/compose/grafana/dashboards/cqrs.json), "
        f"the last {minutes:g} minutes from Prometheus",
        fontsize=11,
    )
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=80)
    plt.close(figure)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    print(f"wrote {render(args.prometheus, args.minutes, args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
