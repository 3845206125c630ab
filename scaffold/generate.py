"""What each generator command adds to a repository, as `Changes`."""

from __future__ import annotations

import ast
import keyword
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from devstack.services import api_ports
from scaffold import names
from scaffold.changes import Changes, Place, ScaffoldError, Transaction
from scaffold.generated import generated_files

Planner = Callable[[Path], Changes]
AFTER_IMPORTS = Place("after-imports")


def end_of(name: str) -> Place:
    """At the end of the class or function ``name``."""
    return Place("end-of", name)


TEMPLATES = Path(__file__).parent / "templates"


def render(template: str, answers: dict[str, Any]) -> dict[str, str]:
    """Render ``templates/<template>`` with copier into a scratch directory: path → text."""
    import copier  # dev tooling only: the service images do not install it

    with tempfile.TemporaryDirectory(prefix="cqrs-scaffold-") as scratch:
        copier.run_copy(
            str(TEMPLATES / template),
            scratch,
            data=answers,
            defaults=True,
            quiet=True,
            overwrite=True,
        )
        return {
            str(path.relative_to(scratch)): path.read_text()
            for path in sorted(Path(scratch).rglob("*"))
            if path.is_file()
        }


def _run(root: Path, *argv: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ScaffoldError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")


def write_contract_schemas(root: Path, transaction: Transaction) -> None:
    """``cqrs contracts generate`` in the repository generated into: the new contract
    versions get their committed schemas and lock entries; nothing else changes."""
    with transaction.watching(root / "contracts" / "schemas"):
        _run(root, "-m", "devstack", "contracts", "generate")


def format_python(root: Path, transaction: Transaction) -> None:
    """The project's import sorting and formatter over every Python file written or edited.

    An entry inserted into an import block is sorted into place; nothing else in an
    edited file moves (it was formatted already).
    """
    touched = [p for p in [*transaction.created, *transaction.originals] if p.suffix == ".py"]
    paths = [str(path) for path in touched if path.is_file()]
    if paths:
        _run(root, "-m", "ruff", "check", "--quiet", "--select", "I", "--fix", *paths)
        _run(root, "-m", "ruff", "format", "--quiet", *paths)


def require_project(root: Path) -> None:
    if not all((root / part).is_dir() for part in ("write_side", "contracts", "projections")):
        raise ScaffoldError(f"{root} is not a project made from this template (run it at its root)")


def next_api_port(root: Path) -> int:
    """One above every API port the project's services and query API use."""
    return max(api_ports(root).values()) + 1


def write_generated_files(root: Path, transaction: Transaction) -> None:
    """`cqrs generate`: the Procfile, docker-compose.yml and the PostgreSQL init script
    list the new service's processes and database (no hand-written file is edited)."""
    for relative, text in generated_files(root).items():
        if (root / relative).read_text() != text:
            transaction.edit(relative, text)


def new_domain(root: Path, domain: str, aggregate: str | None, field_specs: list[str]) -> Changes:
    require_project(root)
    domain = names.domain_name(domain)
    aggregate = names.class_name(
        aggregate or names.camel_case(domain.removesuffix("s")), "aggregate"
    )
    aggregate_var = names.snake_case(aggregate)
    if (root / "write_side" / domain).exists() or (root / "contracts" / f"{domain}.py").exists():
        raise ScaffoldError(f"domain {domain!r} exists already; nothing was changed")
    fields = names.parse_fields(field_specs, taken=frozenset({f"{aggregate_var}_id"}))
    if not fields:
        raise names.InvalidName("give the aggregate at least one field (--field name:type)")
    port = next_api_port(root)
    changes = Changes(
        files=render(
            "domain",
            {
                "domain": domain,
                "service_class": names.camel_case(domain),
                "aggregate": aggregate,
                "aggregate_var": aggregate_var,
                "api_port": port,
                "fields": [field.as_answer() for field in fields],
            },
        )
    )
    changes.after += [write_generated_files, write_contract_schemas, format_python]
    return changes


@dataclass(frozen=True)
class Domain:
    """What the generator needs to know of an existing (generated) domain."""

    name: str
    aggregate: str
    fields: list[names.Field]

    @property
    def aggregate_var(self) -> str:
        return names.snake_case(self.aggregate)

    @property
    def answers(self) -> dict[str, Any]:
        return {
            "domain": self.name,
            "service_class": names.camel_case(self.name),
            "aggregate": self.aggregate,
            "aggregate_var": self.aggregate_var,
        }

    @classmethod
    def read(cls, root: Path, name: str) -> Domain:
        """The domain's aggregate and creation fields, read from its domain.py."""
        require_project(root)
        path = root / "write_side" / name / "domain.py"
        if not path.is_file():
            raise ScaffoldError(f"no domain {name!r} (write_side/{name}/domain.py is missing)")
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ClassDef):
                continue
            if not any(ast.unparse(base) == "Aggregate" for base in node.bases):
                continue
            for inner in node.body:
                if isinstance(inner, ast.ClassDef) and inner.name == "Created":
                    fields = [
                        names.Field(item.target.id, ast.unparse(item.annotation))
                        for item in inner.body
                        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                    ]
                    return cls(name, node.name, fields)
        raise ScaffoldError(
            f"write_side/{name}/domain.py has no Aggregate with a Created event: "
            "only domains made by `cqrs new-domain` can be extended"
        )


def snippet(name: str, answers: dict[str, Any]) -> str:
    """One entry for an existing file, from ``templates/snippets/<name>.jinja``."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES / "snippets"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template(f"{name}.jinja").render(answers)


def new_event(
    root: Path, domain_name: str, event: str, field_specs: list[str], command: str | None
) -> Changes:
    domain = Domain.read(root, domain_name)
    event = names.class_name(event, "event")
    short = event.removeprefix(domain.aggregate) or event
    if not names.CAMEL.fullmatch(short):
        short = event
    short_var = names.snake_case(short)
    command = command or f"record_{short_var}"
    if not names.SNAKE.fullmatch(command) or keyword.iskeyword(command):
        raise names.InvalidName(f"command {command!r} must be a lower snake case identifier")
    contract_source = (root / "contracts" / f"{domain.name}.py").read_text()
    domain_source = (root / "write_side" / domain.name / "domain.py").read_text()
    if re.search(rf"^class {event}\(", contract_source, re.MULTILINE):
        raise ScaffoldError(f"contracts/{domain.name}.py has an event {event} already")
    if re.search(rf"^\s+class {short}\(|^\s+def {command}\(", domain_source, re.MULTILINE):
        raise ScaffoldError(
            f"{domain.aggregate} has a {short} event or a {command} command already"
        )
    fields = names.parse_fields(field_specs, taken=frozenset({f"{domain.aggregate_var}_id"}))
    known = {field.name for field in domain.fields}
    answers = {
        **domain.answers,
        "event": event,
        "short": short,
        "short_var": short_var,
        "command": command,
        "command_class": names.camel_case(command),
        "create_example": "{"
        + ", ".join(f'"{field.name}": {field.example}' for field in domain.fields)
        + "}",
        "fields": [{**field.as_answer(), "new": field.name not in known} for field in fields],
    }
    changes = Changes(files=render("event", answers))
    service, aggregate = f"write_side/{domain.name}", domain.aggregate
    application = f"{names.camel_case(domain.name)}Application"
    changes.insert(f"{service}/domain.py", snippet("domain_event", answers), end_of(aggregate))
    changes.insert(f"{service}/domain.py", snippet("domain_command", answers), end_of(aggregate))
    changes.insert(
        f"{service}/application.py", snippet("application_command", answers), end_of(application)
    )
    changes.insert(f"{service}/api.py", snippet("api_body", answers), Place("before", "create_app"))
    changes.insert(
        f"{service}/api.py", snippet("api_route", answers), Place("before-last", "create_app")
    )
    changes.insert(
        f"{service}/relay.py",
        snippet("relay_mapping", answers),
        Place("item-of", "to_contract:0"),
    )
    contract = f"contracts/{domain.name}.py"
    changes.insert(contract, snippet("contract_event", answers), Place("before", "EVENTS"))
    changes.insert(contract, event, Place("item-of", "EVENTS"))
    changes.insert(
        f"projections/{domain.name}.py",
        snippet("projection_handler", answers),
        Place("end-of-if", "apply"),
    )
    changes.insert(
        f"read_side/{domain.name}.py", snippet("read_model_fields", answers), end_of(aggregate)
    )
    changes.after += [write_contract_schemas, format_python]
    return changes


def _create_example(domain: Domain) -> str:
    return "{" + ", ".join(f'"{field.name}": {field.example}' for field in domain.fields) + "}"


def new_projection(root: Path, domain_name: str, projection: str) -> Changes:
    domain = Domain.read(root, domain_name)
    projection = names.domain_name(projection)
    if (root / "projections" / f"{projection}.py").exists():
        raise ScaffoldError(f"projections/{projection}.py exists already; nothing was changed")
    answers = {
        **domain.answers,
        "projection": projection,
        "create_example": _create_example(domain),
    }
    changes = Changes(files=render("projection", answers))
    changes.after.append(format_python)
    return changes


def contract_fields(root: Path, source: str, event: str) -> dict[str, str]:
    """The fields (name → annotation) of ``contracts/<source>.py``'s ``event``, those of
    its base classes first, as pydantic orders them."""
    path = root / "contracts" / f"{source}.py"
    if not path.is_file():
        raise ScaffoldError(f"no service {source!r} (contracts/{source}.py is missing)")
    fields = _class_fields(root, source, event)
    if fields is None:
        raise ScaffoldError(f"contracts/{source}.py has no event {event!r}")
    return fields


def _class_fields(root: Path, module: str, name: str) -> dict[str, str] | None:
    """The fields of class ``name`` in ``contracts/<module>.py`` (None: no such class),
    following its bases into the ``contracts`` modules they are imported from."""
    path = root / "contracts" / f"{module}.py"
    if not path.is_file():
        return None
    tree = ast.parse(path.read_text())
    imported = {
        alias.asname or alias.name: (node.module.removeprefix("contracts."), alias.name)
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("contracts.")
        for alias in node.names
    }
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            fields: dict[str, str] = {}
            for base in node.bases:
                if isinstance(base, ast.Name):
                    fields |= _class_fields(root, *imported.get(base.id, (module, base.id))) or {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    annotation = ast.unparse(item.annotation)
                    if not annotation.startswith("ClassVar"):
                        fields[item.target.id] = annotation
            return fields
    return None


def new_reaction(root: Path, domain_name: str, on: str) -> Changes:
    domain = Domain.read(root, domain_name)
    source, _, event = on.partition(".")
    if not event:
        raise names.InvalidName(f"--on {on!r} must be service.EventName (e.g. orders.OrderCreated)")
    if source == domain.name:
        raise names.InvalidName("a reaction is to another service's event")
    published = contract_fields(root, source, event)
    missing = [field.name for field in domain.fields if field.name not in published]
    if missing:
        raise ScaffoldError(
            f"the reaction makes a {domain.aggregate} from {on}, which has no "
            f"{', '.join(missing)}: give the domain fields that {event} carries "
            f"({', '.join(published)})"
        )
    event_var = names.snake_case(event)
    saga = root / "write_side" / domain.name / "saga.py"
    saga_source = saga.read_text() if saga.exists() else ""
    if f"def on_{event_var}(" in saga_source:
        raise ScaffoldError(f"write_side/{domain.name}/saga.py reacts to {on} already")
    first = not saga.exists()
    answers = {
        **domain.answers,
        "source": source,
        "event": event,
        "event_var": event_var,
        "first_reaction": first,
        "create_example": _create_example(domain),
        "fields": [field.as_answer() for field in domain.fields],
    }
    changes = Changes(files=render("reaction", answers))
    service = f"write_side/{domain.name}"
    if f"from contracts import {source}\n" not in saga_source:
        changes.insert(f"{service}/saga.py", f"from contracts import {source}", AFTER_IMPORTS)
    changes.insert(
        f"{service}/saga.py", snippet("reaction_handler", answers), Place("before", "REACTIONS")
    )
    changes.insert(
        f"{service}/saga.py",
        f"Reaction({source}.{event}, on_{event_var})",
        Place("item-of", "REACTIONS"),
    )
    if first:
        application = f"{names.camel_case(domain.name)}Application"
        changes.insert(f"{service}/domain.py", "from uuid import UUID", AFTER_IMPORTS)
        changes.insert(
            f"{service}/domain.py",
            snippet("domain_create_with_id", answers),
            end_of(domain.aggregate),
        )
        changes.insert(
            f"{service}/application.py", "from uuid import NAMESPACE_URL, uuid5", AFTER_IMPORTS
        )
        changes.insert(
            f"{service}/application.py",
            snippet("application_create_for", answers),
            end_of(application),
        )
        changes.after.append(write_generated_files)
    changes.after.append(format_python)
    return changes
