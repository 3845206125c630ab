"""The orders service: places orders and follows them through the createOrder saga."""
