-- One database per service (owner: POSTGRES_USER). Run by the postgres image
-- on the first start of an empty data volume only.
CREATE DATABASE intake;
CREATE DATABASE qualification;
CREATE DATABASE routing;
CREATE DATABASE metrics;
CREATE DATABASE webhooks;
