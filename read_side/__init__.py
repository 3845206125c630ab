"""Query API (read side): serves the MongoDB read models the projections maintain.

Run it with ``uvicorn read_side.api:create_app --factory``; configuration comes from
the environment (see :mod:`read_side.settings`).
"""
