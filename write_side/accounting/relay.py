"""The accounting relay process: ``python -m write_side.accounting.relay``."""

from contracts import accounting as contract
from kernel.relay import contract_mapping, serve_relay
from write_side.accounting.bootstrap import build_application
from write_side.accounting.domain import Account, Authorization
from write_side.accounting.settings import AccountingSettings

to_contract = contract_mapping(
    {
        Authorization.Authorized: contract.CardAuthorized,
        Authorization.Failed: contract.CardAuthorizationFailed,
    },
    private=(Account.Opened, Account.CardBlocked, Account.CardUnblocked, Account.Authorized),
)


if __name__ == "__main__":
    settings = AccountingSettings()
    serve_relay(
        build_application(settings), settings, topic=contract.TOPIC, to_contract=to_contract
    )
