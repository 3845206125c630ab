"""Operating a running system: ``cqrs replay``, ``cqrs dead-letters``, ``cqrs projections``.

These commands act on production stores, topics and read models; the local stack
(``devstack/``) is not needed to use them.
"""
