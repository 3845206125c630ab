-- cqrs-reference-saga: begin
-- One database per write-side service on the one PostgreSQL server of docker-compose.yml.
-- `orders` is POSTGRES_DB; these are the others. The postgres image runs this file on
-- its first start only (an empty data volume): after adding a service, create its
-- database by hand or `docker compose down -v` to start from scratch.
CREATE DATABASE consumers;
CREATE DATABASE kitchen;
CREATE DATABASE accounting;
-- cqrs-reference-saga: end
-- cqrs-reference-saga: instead -- One database per write-side service on the one PostgreSQL server of
-- cqrs-reference-saga: instead -- docker-compose.yml. The postgres image runs this file on its first start only.
