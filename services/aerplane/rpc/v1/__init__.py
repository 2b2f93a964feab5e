"""Generated gRPC code for aerplane.v1 (scripts/gen_proto.py); do not edit by hand."""
