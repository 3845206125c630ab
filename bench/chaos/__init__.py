"""`make chaos`: the createOrder saga under load while processes are killed (issue 17)."""
