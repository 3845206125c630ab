"""Every projection: the worker runs them all and `cqrs replay` can rebuild each.

`cqrs new-domain` and `cqrs new-projection` add theirs at the marked lines.
"""

from kernel.projection import Projection

# cqrs-reference-saga: begin
# isort: split
from projections.orders import ORDERS
from projections.tickets import TICKETS

# isort: split
# cqrs-reference-saga: end
# cqrs-scaffold: projection imports

PROJECTIONS: tuple[Projection, ...] = (
    # cqrs-reference-saga: begin
    ORDERS,
    TICKETS,
    # cqrs-reference-saga: end
    # cqrs-scaffold: projections
)
