"""The kitchen service: restaurants, their menus, and the tickets of the createOrder saga."""
