"""The headers every test that calls the running APIs over HTTP sends: an `ops` token
(ops may call every route; tests/integration/test_auth.py checks the other roles)."""

from tests.support import bearer


def request_headers(service: str) -> dict[str, str]:
    """Headers for a request to ``service``'s API (``orders``, ..., ``query``)."""
    return bearer()
