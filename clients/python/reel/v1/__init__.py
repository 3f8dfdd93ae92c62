"""reel.v1's message classes, generated from api/reel/v1/*.proto by
gen_stubs.py (do not edit the *_pb2.py files): `from reel.v1 import kv_pb2`."""
