"""The orchestrator's pure domain: orders and their state machine, sourcing rules as a
document business teams read, the sourcing engine that explains every decision, delivery
promises and rule simulations. Only the standard library and runtime.errors are imported."""
