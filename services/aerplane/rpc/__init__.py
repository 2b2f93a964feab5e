"""Generated and hand-written gRPC code."""
