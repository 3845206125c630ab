"""The accounting service: consumers' accounts, and card authorizations for the createOrder saga."""
