"""The introspection service (gRPC)."""
