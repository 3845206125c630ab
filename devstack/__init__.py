"""Local stack tooling: start the Kafka- and MongoDB-compatible servers, run the processes.

Used by `make run` (`cqrs run`) and by the integration tests. Production and
`docker compose` use the real servers instead.
"""
