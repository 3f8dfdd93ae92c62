"""What reel's Python tests share: the end-to-end tests (tests/e2e, through
conftest.py) and the crash test (tests/crash).

- protos.generate(): the message classes of api/reel/v1/*.proto (modules
  reel.v1.*_pb2) and of the standard health.proto (health_pb2), generated
  once per process with /usr/bin/protoc into a temp dir on sys.path.
- Reeld: one reeld process on a data dir and a port (a free one unless
  given); start() waits until health answers SERVING.
- free_port(), unary() and stream() (a method's callable on a channel),
  reelctl() (runs reelctl against an address), sanitized() (whether a
  binary is an ASan build: slower, its RSS meaningless).

Binaries come from $REELD / $REELCTL (scripts/test.sh sets them, e.g. to
the ASan build), or from bazel-bin. Importing this package generates
nothing; grpcio must be importable (use /usr/bin/python3).
"""
from reeltest.protos import generate
from reeltest.server import REELCTL, REELD, ROOT, Reeld, binary, free_port, sanitized
from reeltest.calls import reelctl, stream, unary

__all__ = ["REELCTL", "REELD", "ROOT", "Reeld", "binary", "free_port", "generate",
           "reelctl", "sanitized", "stream", "unary"]
