"""The fault suite (issue 7): load, a fault, invariants on the final state."""
