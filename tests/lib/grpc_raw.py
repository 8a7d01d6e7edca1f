"""gRPC calls from Python without generated code, for the standard services (health,
reflection): messages are encoded by hand from their .proto definitions."""
import grpc


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data, pos):
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data):
    """Decodes one protobuf message level: list of (field number, wire type, value)."""
    pos, out = 0, []
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError("wire type %d" % wire)
        out.append((number, wire, value))
    return out


def string_field(number, text):
    raw = text.encode()
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def health_check(address, service="", timeout_s=5):
    """grpc.health.v1.Health/Check → "SERVING", "NOT_SERVING", ..."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/grpc.health.v1.Health/Check")
        reply = call(string_field(1, service) if service else b"", timeout=timeout_s)
    status = 0
    for number, _, value in fields(reply):
        if number == 1:
            status = value
    return HEALTH_STATUS.get(status, str(status))


def list_services(address, timeout_s=5):
    """Service names from grpc.reflection.v1alpha.ServerReflection (list_services = field 7)."""
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        replies = call(iter([string_field(7, "")]), timeout=timeout_s)
        names = []
        for reply in replies:
            for number, _, value in fields(reply):
                if number == 6:  # list_services_response
                    for n, _, service in fields(value):
                        if n == 1:
                            names.extend(v.decode() for k, _, v in fields(service) if k == 1)
            break
    return names


def call_status(address, method, request=b"", timeout_s=5):
    """Calls a unary method with raw bytes; returns the grpc.StatusCode."""
    with grpc.insecure_channel(address) as channel:
        try:
            channel.unary_unary(method)(request, timeout=timeout_s)
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            return error.code()
