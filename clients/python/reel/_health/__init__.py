"""The standard grpc.health.v1 messages, generated from
api/grpc/health/v1/health.proto by gen_stubs.py."""
