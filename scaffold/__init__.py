"""`cqrs new-domain`, `new-event`, `new-projection`, `new-reaction`: code generation.

Whole new files are copier (Jinja) templates under `templates/`; the few existing files
that must learn about a new piece carry one marked insertion point per list
(`# cqrs-scaffold: <slot>`), and generation inserts one well-formed entry there.
Everything is applied as one transaction (`changes.apply`): nothing is overwritten, and
a failure half way restores every file it touched.
"""
