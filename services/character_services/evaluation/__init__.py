"""The evaluation service (gRPC)."""
