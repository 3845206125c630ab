"""`cqrs new-domain`, `new-event`, `new-projection`, `new-reaction`: code generation.

Whole new files are copier (Jinja) templates under `templates/`. A new domain is new
files only: registries discover it, and `cqrs generate` (`generated.py`) writes the
Procfile, compose file and SQL init script again. A piece added to an existing domain
goes into that domain's own files at a place found with `ast` (`changes.Place`).
Everything is applied as one transaction (`changes.apply`): nothing is overwritten, and
a failure half way restores every file it touched.
"""
