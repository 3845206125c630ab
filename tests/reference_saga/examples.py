"""Example data shared by tests."""

DELIVERY_ADDRESS = {
    "street": "1 Main Street",
    "city": "Springfield",
    "postal_code": "12345",
    "country": "US",
}

PLACE_ORDER = {
    "customer_id": "customer-1",
    "restaurant_id": "restaurant-1",
    "delivery_address": DELIVERY_ADDRESS,
    "line_items": [
        {"menu_item_id": "pizza", "quantity": 2, "unit_price_cents": 1250},
        {"menu_item_id": "soda", "quantity": 3, "unit_price_cents": 300},
    ],
}
