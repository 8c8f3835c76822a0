"""pprof (perftools.profiles) encoding of profiles, and reading pprof files back.

``encode_profiles``/``encode_profile``/``write_pprof`` encode a ``ddprofiler.Profile`` as
pprof following the Datadog CPU-profile conventions, through the core's encoder
(``builder``); ``build_profile`` returns the decoded message; ``read_pprof``/
``stacks`` read a pprof file back into plain per-sample stacks, for tests and tools
(``reader``). ``profile_pb2.py`` is generated from ``profile.proto`` with protoc 29.0
(``protoc --python_out``) and needs protobuf>=5.29.0 at run time; ``profile_pb2.pyi``, its
typed stub, with ``protoc --pyi_out`` (e.g. ``python -m grpc_tools.protoc -I python
--pyi_out=python python/ddprofiler/pprof/profile.proto``). Protobuf is imported only by
``build_profile`` and the readers, when called: the continuous profiler never imports it.
"""
from .builder import Encoded, build_profile, encode_profile, encode_profiles, write_atomic, write_pprof
from .reader import Stack, parse_pprof, read_pprof, stacks

__all__ = [
    "Encoded",
    "Stack",
    "build_profile",
    "encode_profile",
    "encode_profiles",
    "parse_pprof",
    "read_pprof",
    "stacks",
    "write_atomic",
    "write_pprof",
]
