"""pprof (perftools.profiles) encoding of profiles, and reading pprof files back.

``build_profile``/``write_pprof`` turn a ``ddprofiler.Profile`` into a pprof ``Profile``
message following the Datadog CPU-profile conventions (``builder``); ``read_pprof``/
``stacks`` read a pprof file back into plain per-sample stacks, for tests and tools
(``reader``). ``profile_pb2.py`` is generated from ``profile.proto`` with protoc 29.0
(``protoc --python_out``) and needs protobuf>=5.29.0 at run time; ``profile_pb2.pyi``, its
typed stub, with ``protoc --pyi_out`` (e.g. ``python -m grpc_tools.protoc -I python
--pyi_out=python python/ddprofiler/pprof/profile.proto``). Importing this package imports
protobuf: ``ddprofiler`` imports it only on first use.
"""
from .builder import build_profile, write_atomic, write_pprof
from .reader import Stack, parse_pprof, read_pprof, stacks

__all__ = [
    "Stack",
    "build_profile",
    "parse_pprof",
    "read_pprof",
    "stacks",
    "write_atomic",
    "write_pprof",
]
