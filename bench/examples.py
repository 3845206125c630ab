"""Example data the benchmark workloads send."""

ADDRESS = {
    "street": "1 Bench Street",
    "city": "Springfield",
    "postal_code": "12345",
    "country": "US",
}
"""A structured delivery address (``orders.OrderCreated`` v2), as the orders API takes it."""
