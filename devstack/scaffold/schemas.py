"""The committed JSON Schemas of a service's contract events.

``python -m devstack.scaffold.schemas SERVICE`` writes
``contracts/schemas/<service>/<EventName>.v<major>.json`` for every event of
``contracts.<service>.EVENTS``: the generator runs it in the repository it generates
into, so the contract module it imports is that repository's.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from contracts.base import ContractEvent

SCHEMAS = Path("contracts") / "schemas"


def schema_path(model: type[ContractEvent]) -> Path:
    service, event = model.name.split(".", 1)
    return SCHEMAS / service / f"{event}.v{model.major()}.json"


def write_schemas(service: str, root: Path) -> list[Path]:
    module = importlib.import_module(f"contracts.{service}")
    events: tuple[type[ContractEvent], ...] = module.EVENTS
    written = []
    for model in events:
        path = root / schema_path(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        schema = {"title": model.type(), **model.model_json_schema()}
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas(sys.argv[1], Path.cwd()):
        print(path)
