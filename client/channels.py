"""Opening a client's channel: TLS or plaintext, channel options, interceptors, and the rule
that a token never crosses a network in plaintext."""

import ipaddress
import logging
from collections.abc import Iterable, Sequence

import grpc

from client.options import ChannelOption, ChannelOptions, ClientSettings

_LOGGER = logging.getLogger(__name__)

# gRPC name-resolver prefixes in front of host:port (gRPC's naming doc); unix sockets are
# local by construction.
_LOCAL_SCHEMES = ("unix:", "unix-abstract:")
_ADDRESS_SCHEMES = ("ipv4:", "ipv6:", "dns:")


# What grpc.intercept_channel takes: an interceptor of any of the four call shapes.
Interceptor = (grpc.UnaryUnaryClientInterceptor | grpc.UnaryStreamClientInterceptor
               | grpc.StreamUnaryClientInterceptor | grpc.StreamStreamClientInterceptor)


class PlaintextTokenRefused(ValueError):
    """A token would travel unencrypted to a host beyond this machine."""


def _hosts(target: str) -> list[str]:
    """The host part(s) of a gRPC target: host:port, [v6]:port, dns:///h:p, ipv4:a:p,b:p."""
    rest = target
    for scheme in _ADDRESS_SCHEMES:
        if rest.startswith(scheme):
            rest = rest[len(scheme):]
            if scheme == "dns:" and rest.startswith("//"):
                rest = rest[2:].partition("/")[2]  # dns://[authority]/host:port
            break
    hosts = []
    for address in rest.split(","):
        if address.startswith("["):
            hosts.append(address[1:].partition("]")[0])
        elif address.count(":") == 1:
            hosts.append(address.partition(":")[0])
        else:
            hosts.append(address)  # no port, or a bare IPv6 address
    return hosts


def is_loopback(target: str) -> bool:
    """Whether every address `target` names is on this machine (loopback or a unix socket)."""
    if target.startswith(_LOCAL_SCHEMES):
        return True
    for host in _hosts(target):
        if host.lower() == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True


def check_token_transport(settings: ClientSettings, secure: bool,
                          allow_plaintext_token: bool) -> None:
    """Refuse to send a token without TLS to another host: anyone on the path could read it
    and call as its owner. Loopback is exempt (`make run`'s plaintext Envoy); a caller whose
    network is otherwise protected (a service mesh, a VPN) says so with
    allow_plaintext_token."""
    if not settings.token or secure or is_loopback(settings.target):
        return
    if allow_plaintext_token:
        _LOGGER.warning("sending the token in plaintext to %s", settings.target)
        return
    raise PlaintextTokenRefused(
        f"refusing to send the token in plaintext to {settings.target}: use TLS "
        "(sarah --tls, or credentials=grpc.ssl_channel_credentials()), or allow it "
        "explicitly (--allow-plaintext-token, allow_plaintext_token=True) if the network "
        "in between is trusted")


def channel_options(settings: ClientSettings, extra: Iterable[ChannelOption]) -> ChannelOptions:
    """The client's own options, then the caller's: a caller's key replaces ours."""
    merged = dict(settings.channel_options())
    merged.update(extra)
    return list(merged.items())


def sync_channel(settings: ClientSettings, credentials: grpc.ChannelCredentials | None,
                 options: ChannelOptions,
                 interceptors: Sequence[Interceptor]) -> grpc.Channel:
    """A blocking channel: secure when `credentials` are given."""
    channel = (grpc.secure_channel(settings.target, credentials, options)
               if credentials is not None else grpc.insecure_channel(settings.target, options))
    return grpc.intercept_channel(channel, *interceptors) if interceptors else channel


def aio_channel(settings: ClientSettings, credentials: grpc.ChannelCredentials | None,
                options: ChannelOptions,
                interceptors: Sequence[grpc.aio.ClientInterceptor]) -> grpc.aio.Channel:
    """The asyncio twin of sync_channel."""
    if credentials is not None:
        return grpc.aio.secure_channel(settings.target, credentials, options,
                                       interceptors=interceptors or None)
    return grpc.aio.insecure_channel(settings.target, options,
                                     interceptors=interceptors or None)
