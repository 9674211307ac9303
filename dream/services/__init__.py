"""The service model: schema, normalization and checks, and the plan the supervisor runs."""
