"""The headers every test that calls the running APIs over HTTP sends (one place to add
credentials, e.g. a bearer token, for all of them)."""


def request_headers(service: str) -> dict[str, str]:
    """Headers for a request to ``service``'s API (``orders``, ..., ``query``)."""
    return {}
