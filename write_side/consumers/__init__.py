"""The consumers service: registers consumers and verifies them for the createOrder saga."""
