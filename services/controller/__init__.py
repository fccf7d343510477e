"""The controller service (gRPC)."""
