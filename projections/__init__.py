"""Read-model projections: pure functions (event → document) and the runtime that feeds them."""
