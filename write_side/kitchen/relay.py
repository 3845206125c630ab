"""The kitchen relay process: ``python -m write_side.kitchen.relay``."""

from contracts import kitchen as contract
from kernel.relay import aggregate_id, contract_mapping, serve_relay
from write_side.kitchen.bootstrap import build_application
from write_side.kitchen.domain import Restaurant, Ticket
from write_side.kitchen.settings import KitchenSettings

to_contract = contract_mapping(
    {
        Ticket.Created: contract.TicketCreated,
        Ticket.Rejected: contract.TicketRejected,
        Ticket.Approved: contract.TicketApproved,
        Ticket.Cancelled: contract.TicketCancelled,
    },
    # Restaurant events stay inside the kitchen: no other service reads restaurants.
    private=(Restaurant.Registered, Restaurant.Opened, Restaurant.Closed, Restaurant.MenuChanged),
    computed={"order_id": aggregate_id},  # a ticket's id is its order's id
)


if __name__ == "__main__":
    settings = KitchenSettings()
    serve_relay(
        build_application(settings), settings, topic=contract.TOPIC, to_contract=to_contract
    )
