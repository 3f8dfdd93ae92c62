"""Calling reeld: a method's callable on a grpcio channel, and reelctl."""
import subprocess

from reeltest import server


def unary(channel, method, req_cls, resp_cls):
    return channel.unary_unary(method, request_serializer=req_cls.SerializeToString,
                               response_deserializer=resp_cls.FromString)


def stream(channel, method, req_cls, resp_cls):
    return channel.unary_stream(method, request_serializer=req_cls.SerializeToString,
                                response_deserializer=resp_cls.FromString)


def reelctl(addr, *args, timeout=30):
    """Runs reelctl --addr addr args...; the CompletedProcess (text)."""
    return subprocess.run([server.REELCTL, "--addr", addr] + list(args),
                          capture_output=True, text=True, timeout=timeout)
