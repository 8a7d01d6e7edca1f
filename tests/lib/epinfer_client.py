"""A Python client of epinfer's gRPC API, built from proto/ with Debian's protoc and
python3-grpcio: an independent client (not this project's C++) for end-to-end tests."""
import os
import sys

import grpc


def _add_generated_path():
    for root in (os.environ.get("TEST_SRCDIR"), os.environ.get("RUNFILES_DIR")):
        if root and os.path.isdir(os.path.join(root, "epinfer", "proto", "epinfer")):
            sys.path.insert(0, os.path.join(root, "epinfer", "proto"))
            return
    raise ImportError("generated epinfer/v1/*_pb2.py not in the runfiles (data: //proto:py_protos)")


_add_generated_path()
from epinfer.v1 import completion_pb2 as pb  # noqa: E402
from epinfer.v1 import scheduler_pb2 as scheduler_pb  # noqa: E402
from epinfer.v1 import worker_pb2 as worker_pb  # noqa: E402


class Completions:
    """epinfer.v1.Completions on `address` (TLS with `credentials`, e.g.
    grpc.ssl_channel_credentials; `metadata` on every call, e.g. the API key)."""

    def __init__(self, address, metadata=None, credentials=None):
        self.channel = (grpc.secure_channel(address, credentials) if credentials
                        else grpc.insecure_channel(address))
        self.metadata = metadata
        self._generate = self.channel.unary_stream(
            "/epinfer.v1.Completions/Generate",
            request_serializer=pb.CompletionRequest.SerializeToString,
            response_deserializer=pb.CompletionChunk.FromString)
        self._complete = self.channel.unary_unary(
            "/epinfer.v1.Completions/Complete",
            request_serializer=pb.CompletionRequest.SerializeToString,
            response_deserializer=pb.CompletionResponse.FromString)
        self._list = self.channel.unary_unary(
            "/epinfer.v1.Completions/ListModels",
            request_serializer=pb.ListModelsRequest.SerializeToString,
            response_deserializer=pb.ListModelsResponse.FromString)
        self.complete_raw = self.channel.unary_unary("/epinfer.v1.Completions/Complete")

    def generate(self, request, timeout_s=120):
        """The streaming call (iterate it for chunks; .cancel() cancels)."""
        return self._generate(request, timeout=timeout_s, metadata=self.metadata)

    def complete(self, request, timeout_s=120):
        return self._complete(request, timeout=timeout_s, metadata=self.metadata)

    def list_models(self, timeout_s=10):
        return self._list(pb.ListModelsRequest(), timeout=timeout_s, metadata=self.metadata)

    def close(self):
        self.channel.close()


def worker_info(address, timeout_s=5):
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/epinfer.v1.Worker/Info",
                                   request_serializer=worker_pb.InfoRequest.SerializeToString,
                                   response_deserializer=worker_pb.InfoResponse.FromString)
        return call(worker_pb.InfoRequest(), timeout=timeout_s)


def tokens_request(ids, max_tokens, **sampling):
    request = pb.CompletionRequest()
    request.tokens.ids.extend(ids)
    request.sampling.max_tokens = max_tokens
    request.sampling.temperature = sampling.pop("temperature", 0.0)
    for key, value in sampling.items():
        setattr(request.sampling, key, value)
    return request


def chat_request(messages, max_tokens, **sampling):
    request = pb.CompletionRequest()
    for role, content in messages:
        m = request.chat.messages.add()
        m.role = role
        m.content = content.encode()
    request.sampling.max_tokens = max_tokens
    request.sampling.temperature = sampling.pop("temperature", 0.0)
    for key, value in sampling.items():
        setattr(request.sampling, key, value)
    return request


def scheduler_load(address, timeout_s=5):
    """epinfer.v1.Scheduler/GetLoad: the telemetry window's imbalance."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/epinfer.v1.Scheduler/GetLoad",
                                   request_serializer=scheduler_pb.GetLoadRequest.SerializeToString,
                                   response_deserializer=scheduler_pb.GetLoadResponse.FromString)
        return call(scheduler_pb.GetLoadRequest(), timeout=timeout_s)
