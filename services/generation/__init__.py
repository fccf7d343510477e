"""The generation service (gRPC)."""
