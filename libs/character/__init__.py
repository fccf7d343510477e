"""Open character training: give an LLM assistant a persona and measure that it took.

The library holds all domain logic; the `oct` CLI, the gRPC services and the
Kubernetes executor are thin layers over it.
"""

__version__ = "0.1.0"
