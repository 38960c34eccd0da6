"""Mutation testing of the exactly-once core (``make mutation``): mutmut on the modules that
read tickets and keep job state, with the fast tests that reach them (docs/mutation.md)."""
