"""Generated gRPC stubs (scripts/gen-proto.sh); do not edit."""
