"""Client side of SarahService: the generated stub and messages, from the one generated package."""

from sarah.v1 import sarah_pb2 as messages
from sarah.v1.sarah_pb2_grpc import SarahServiceStub

__all__ = ["SarahServiceStub", "messages"]
