"""The training service (gRPC)."""
