"""pprof (perftools.profiles) encoding of profiler snapshots.

``build_profile``/``write_pprof`` turn a ``ddprofiler._native`` snapshot into a pprof
``Profile`` following the Datadog CPU-profile conventions; ``read_pprof``/``stacks`` read a
pprof file back into plain per-sample stacks (for tests and tools). ``profile_pb2`` is
generated from ``profile.proto`` with protoc 29.0 and needs protobuf>=5.29.0 at run time.
"""
from .builder import MAX_LOCATIONS_PER_SAMPLE, TRUNCATED_FRAME, build_profile, write_atomic, write_pprof
from .reader import Stack, read_pprof, stacks

__all__ = [
    "MAX_LOCATIONS_PER_SAMPLE",
    "TRUNCATED_FRAME",
    "Stack",
    "build_profile",
    "read_pprof",
    "stacks",
    "write_atomic",
    "write_pprof",
]
