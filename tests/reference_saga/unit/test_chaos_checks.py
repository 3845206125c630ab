"""The chaos rounds' schedule and checks, on made-up facts: a schedule is its seed's; each
check finds what it is there to find (an order doubled, a charge doubled, a wrong end)."""

import random

from bench.chaos import checks, workload
from bench.chaos.checks import Facts, StoredOrder
from bench.chaos.schedule import make_schedule

PROCESSES = {
    "api": ["orders-api", "query-api"],
    "relay": ["orders-relay"],
    "saga": ["orders-saga", "kitchen-saga"],
    "projections": ["projections"],
}
ALL = ("api", "relay", "saga", "projections", "broker", "mongo")


def test_a_schedule_is_its_seeds_and_restarts_each_server_once():
    first = make_schedule(random.Random(7), 20, PROCESSES, ALL, kills=6)
    again = make_schedule(random.Random(7), 20, PROCESSES, ALL, kills=6)
    other = make_schedule(random.Random(8), 20, PROCESSES, ALL, kills=6)
    assert first == again != other
    assert [a.target for a in first if a.kind in ("broker", "mongo")].count("broker") == 1
    assert [a.target for a in first if a.kind in ("broker", "mongo")].count("mongo") == 1
    assert all(
        0 <= a.at <= 15 and a.at == sorted(b.at for b in first)[i] for i, a in enumerate(first)
    )
    killed = [a for a in first if a.kind not in ("broker", "mongo")]
    for action in killed:  # a process is not killed again while it is down
        assert not [
            b
            for b in killed
            if b is not action
            and b.target == action.target
            and action.at <= b.at < action.restart_at
        ]


def test_a_schedule_kills_only_the_kinds_chosen():
    actions = make_schedule(random.Random(1), 20, PROCESSES, ("api", "relay"), kills=10)
    assert {a.kind for a in actions} <= {"api", "relay"}
    assert actions


def placed(kind: str, number: int) -> workload.PlacedOrder:
    cast = workload.Cast(run="t")
    customer, restaurant, items = cast.inputs(kind, number)
    return workload.PlacedOrder(
        number, kind, f"key-{number}", customer, restaurant, items, order_id=f"id-{number}"
    )


def stored(order: workload.PlacedOrder, state: str, failed_step: str | None = None) -> StoredOrder:
    names = ["Order.Placed"] + {"APPROVED": ["Order.Approved"], "REJECTED": ["Order.Rejected"]}.get(
        state, []
    )
    return StoredOrder(
        str(order.order_id),
        order.key,
        order.customer_id,
        order.total_cents,
        state,
        failed_step,
        names,
    )


def facts_of(approved: workload.PlacedOrder, refused: workload.PlacedOrder) -> Facts:
    """What the stores hold when both orders ended as they should."""
    return Facts(
        orders={
            approved.key: [stored(approved, "APPROVED")],
            refused.key: [stored(refused, "REJECTED", "accounting")],
        },
        tickets={
            "id-0": ["Ticket.Created", "Ticket.Approved"],
            "id-1": ["Ticket.Created", "Ticket.Cancelled"],
        },
        authorizations={"id-0": ["Authorization.Authorized"], "id-1": ["Authorization.Failed"]},
        account_authorized={approved.customer_id: [("id-0", approved.total_cents)]},
    )


def test_the_checks_pass_on_orders_that_ended_as_their_inputs_dictate():
    orders = [placed("approved", 0), placed("card blocked", 1)]
    facts = facts_of(*orders)
    assert checks.outcomes(orders, facts).passed
    assert checks.nothing_twice(orders, facts).passed
    assert checks.accounts(facts).passed


def test_an_order_that_ended_otherwise_is_named_with_what_was_expected():
    orders = [placed("approved", 0), placed("card blocked", 1)]
    facts = facts_of(*orders)
    facts.tickets["id-1"] = ["Ticket.Created"]  # the compensation never came
    check = checks.outcomes(orders, facts)
    assert check.problems == [
        "order #1 id-1 (card blocked): ticket CREATE_PENDING, expected CANCELLED"
    ]


def test_an_order_never_accepted_or_lost_is_a_problem():
    orders = [placed("approved", 0), placed("card blocked", 1)]
    facts = facts_of(*orders)
    del facts.orders[orders[1].key]
    orders[0].order_id = None
    problems = checks.outcomes(orders, facts).problems
    assert problems[0].startswith("order #0 (approved, key key-0): never accepted")
    assert problems[1] == "order #1 (card blocked, key key-1): 201 with id-1, not in the store"


def test_an_order_placed_twice_and_a_charge_made_twice_are_found():
    orders = [placed("approved", 0), placed("card blocked", 1)]
    facts = facts_of(*orders)
    twin = stored(orders[0], "APPROVED")
    twin.order_id = "id-0-again"
    facts.orders[orders[0].key].append(twin)
    facts.account_authorized[orders[0].customer_id].append(("id-0", orders[0].total_cents))
    facts.tickets["id-1"].append("Ticket.Cancelled")
    problems = checks.nothing_twice(orders, facts).problems
    assert "2 orders for Idempotency-Key key-0: id-0, id-0-again" in problems
    assert any("ticket id-1: Ticket.Cancelled more than once" in p for p in problems)
    assert any("orders authorized more than once: id-0" in p for p in problems)


def test_an_account_charged_for_more_than_its_approved_orders_is_found():
    orders = [placed("approved", 0), placed("card blocked", 1)]
    facts = facts_of(*orders)
    facts.account_authorized[orders[0].customer_id].append(("id-9", 700))
    assert checks.accounts(facts).problems == [
        "account rich-t-0: 3200 cents authorized, approved orders 2500 cents"
    ]


def test_a_client_learns_its_order_from_an_answer_lost_and_retries_on_another_409():
    lost = b'{"title": "Answer lost", "status": 409, "saved": [{"id": "o-1", "version": 1}]}'
    in_progress = b'{"title": "Request in progress", "status": 409}'

    assert workload._lost_answer(lost) == "o-1"
    assert workload._lost_answer(in_progress) is None
    assert workload._lost_answer(b"not json") is None
