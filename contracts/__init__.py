"""Public integration events: the only thing services share.

A contract event has a stable name and a semantic version. The major version is part
of the type on the wire (``orders.OrderCreated.v1``); every message travels in the same
:class:`~contracts.envelope.Envelope`.
"""

from contracts.envelope import Envelope
from contracts.registry import ContractError, decode_envelope, parse_data

__all__ = ["ContractError", "Envelope", "decode_envelope", "parse_data"]
