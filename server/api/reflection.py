"""Server reflection that serves the proto's comments, so `grpcurl describe` shows them.

grpcio-reflection rebuilds each file from the runtime descriptor pool, which holds no
comments (generated code strips them). For the files of our own descriptor set, built with
--include_source_info, this pool hands reflection the stored file instead.
"""

from importlib import resources
from typing import Any, cast

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection


def _own_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    data = resources.files("sarah.v1").joinpath("sarah.pb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    own = {f.name: f for f in files if f.name.startswith("sarah/")}
    for file in own.values():
        for message in file.message_type:
            for field in message.field:
                # protoc fills in lowerCamelCase json_name, which grpcurl would then print;
                # without it grpcurl prints the contract's snake_case keys.
                field.ClearField("json_name")
    return own


class _FileWithComments:
    """A file descriptor whose CopyToProto includes source info when we have it."""

    def __init__(self, file: descriptor.FileDescriptor,
                 own: dict[str, descriptor_pb2.FileDescriptorProto]):
        self._descriptor = file
        self._own = own
        self.name = file.name

    @property
    def dependencies(self) -> list["_FileWithComments"]:
        return [_FileWithComments(d, self._own) for d in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:  # noqa: N802
        if self.name in self._own:
            proto.CopyFrom(self._own[self.name])
        else:
            self._descriptor.CopyToProto(proto)


class _PoolWithComments:
    """The default descriptor pool, answering file look-ups with _FileWithComments."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()
        self._own = _own_files()

    def FindFileByName(self, name: str) -> _FileWithComments:  # noqa: N802
        return _FileWithComments(self._pool.FindFileByName(name), self._own)

    def FindFileContainingSymbol(self, symbol: str) -> _FileWithComments:  # noqa: N802
        return _FileWithComments(self._pool.FindFileContainingSymbol(symbol), self._own)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._pool, attribute)


def enable_reflection(service_names: tuple[str, ...], server: grpc.Server) -> None:
    """Register reflection for `service_names` (and reflection itself) on `server`."""
    # Reflection only looks files and symbols up, which _PoolWithComments answers (and
    # forwards the rest), so it stands in for the DescriptorPool it does not inherit from.
    pool = cast(descriptor_pool.DescriptorPool, _PoolWithComments())
    reflection.enable_server_reflection(
        (*service_names, reflection.SERVICE_NAME), server, pool=pool)
