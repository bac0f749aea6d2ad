"""The processes the tests and the bench start and talk to: servers, Envoy, PostgreSQL,
free loopback ports, HTTP calls, waiting for a condition. Not part of the installed package."""
