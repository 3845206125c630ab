"""`cqrs generate --check` (in `make lint`) fails while a generated file is not current."""

from pathlib import Path

from devstack.cli import main
from tests.unit.test_scaffold import root  # noqa: F401 - the scratch project fixture


def test_the_repository_s_generated_files_are_current(capsys) -> None:
    assert main(["generate", "--check"]) == 0, capsys.readouterr().out


def test_a_stale_file_fails_the_check_until_generated_again(root: Path, capsys) -> None:  # noqa: F811
    assert main(["generate", "--check", "--root", str(root)]) == 0
    procfile = root / "Procfile"
    procfile.write_text(procfile.read_text() + "by-hand: exec true\n")

    assert main(["generate", "--check", "--root", str(root)]) == 1
    assert "Procfile is not current: run `cqrs generate`" in capsys.readouterr().out

    assert main(["generate", "--root", str(root)]) == 0
    assert "by-hand" not in procfile.read_text()
    assert main(["generate", "--check", "--root", str(root)]) == 0


def test_a_new_service_makes_every_generated_file_stale(root: Path, capsys) -> None:  # noqa: F811
    service = root / "write_side" / "invoices"
    service.mkdir()
    for name, text in {"__init__.py": "", "api.py": "", "settings.py": "API_PORT = 8009\n"}.items():
        (service / name).write_text(text)

    assert main(["generate", "--check", "--root", str(root)]) == 1

    out = capsys.readouterr().out
    for path in ("Procfile", "docker-compose.yml", "create-service-databases.sql"):
        assert path in out
    main(["generate", "--root", str(root)])
    assert (
        "invoices-api: exec uvicorn write_side.invoices.api:create_app"
        in (root / "Procfile").read_text()
    )
    assert '"${INVOICES_API_PORT:-8009}:8009"' in (root / "docker-compose.yml").read_text()
