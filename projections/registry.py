"""Every projection: the worker runs them all and `cqrs replay` can rebuild each.

A projection is a `Projection(...)` assigned at the top level of a module of
`projections/` (each domain's `projections/<name>.py`): they are found there, in module
name order, so adding or removing one edits nothing here.
"""

from contracts.discovery import modules_calling
from kernel.projection import Projection

_FOUND = {
    value.name: value
    for module in modules_calling("projections", "Projection")
    for value in vars(module).values()
    if isinstance(value, Projection)
}
PROJECTIONS: tuple[Projection, ...] = tuple(_FOUND.values())
"""Each once, by name, should a module import another's."""
