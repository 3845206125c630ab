"""The consumers relay process: ``python -m write_side.consumers.relay``."""

from contracts import consumers as contract
from kernel.relay import contract_mapping, serve_relay
from write_side.consumers.bootstrap import build_application
from write_side.consumers.domain import Consumer, Verification
from write_side.consumers.settings import ConsumersSettings

to_contract = contract_mapping(
    {
        Verification.Verified: contract.ConsumerVerified,
        Verification.Failed: contract.ConsumerVerificationFailed,
    },
    private=(Consumer.Registered, Consumer.Deactivated, Consumer.Reactivated),
)


if __name__ == "__main__":
    settings = ConsumersSettings()
    serve_relay(
        build_application(settings), settings, topic=contract.TOPIC, to_contract=to_contract
    )
