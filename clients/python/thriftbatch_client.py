"""Send many Thrift calls in one ``executeBatch`` round trip.

Works with Apache Thrift for Python (code from ``thrift --gen py``) and with
ThriftPy (``thriftpy.load``), on the protocol of an open connection to a
server wrapped by thriftbatch (idl/batch.thrift, docs/SPEC.md)::

    batch = Batch(batch_client, Catalog)      # BatchService client, service
    p1 = batch.add("getProduct", id=7)
    batch.execute()                           # one round trip
    product = p1.result()                     # or raises NotFound / CallError

Arguments and replies are bare structs encoded with the connection's
protocol; compressed responses (zstd, snappy, gzip, zlib: whichever of their
Python modules import) are decompressed transparently.
"""

import gzip
import sys
import zlib

__all__ = ["Batch", "Call", "CallError", "accepted_codecs", "decompress",
           "ZSTD", "SNAPPY", "S2", "GZIP", "ZLIB"]

# Codec values of idl/batch.thrift. S2 has no Python decoder: never accepted.
NONE, ZSTD, SNAPPY, S2, GZIP, ZLIB = 0, 1, 2, 3, 4, 5


def _decompressors():
    """Return {codec: function(bytes) -> bytes} for the codecs available."""
    found = {GZIP: gzip.decompress, ZLIB: zlib.decompress}
    try:
        import zstandard
        # A stream decompressor also reads frames without a content size.
        found[ZSTD] = lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)
    except ImportError:
        pass
    try:
        import snappy
        found[SNAPPY] = snappy.uncompress  # raw block format, no framing
    except ImportError:
        pass
    return found


_DECOMPRESS = _decompressors()


def accepted_codecs():
    """The codecs this module can decompress, most preferred first."""
    return [c for c in (ZSTD, SNAPPY, GZIP, ZLIB) if c in _DECOMPRESS]


def decompress(codec, data):
    """Decompress a compressedResponses payload written with codec."""
    if codec not in _DECOMPRESS:
        raise ValueError("thriftbatch: cannot decompress codec %d" % codec)
    return _DECOMPRESS[codec](_as_bytes(data))


class CallError(Exception):
    """One call of a batch produced no reply (a Response.error).

    type is a TApplicationException code (0..10) or a thriftbatch code
    (100..103); message is human-readable text.
    """

    UNKNOWN_METHOD, PROTOCOL_ERROR, INTERNAL_ERROR, MISSING_RESULT = 1, 7, 6, 5
    DEADLINE_EXCEEDED, OVERLOADED, NOT_ALLOWED, CANCELED = 100, 101, 102, 103

    def __init__(self, type, message):
        super().__init__("thriftbatch call error %d: %s" % (type, message))
        self.type = type
        self.message = message


class Call:
    """One call added to a Batch; result() answers it once the batch ran."""

    def __init__(self, method, arguments, result_class):
        self.method = method
        self.arguments = arguments
        self._result_class = result_class
        self._reply = self._error = None
        self.done = False

    def result(self):
        """Return the call's return value (None for void and oneway methods).

        Raises the method's declared exception, CallError when the server
        answered with an error, or RuntimeError before the batch ran.
        """
        if not self.done:
            raise RuntimeError("thriftbatch: %s has not been executed" % self.method)
        if self._error is not None:
            raise self._error
        return self._reply


class Batch:
    """Collects calls and sends them in one executeBatch.

    client is a BatchService client on an open connection: Apache
    ``BatchService.Client(protocol)`` or ThriftPy
    ``make_client(batch_thrift.BatchService, ...)``. service holds the
    calls' ``<method>_args`` and ``<method>_result`` classes: the Apache
    generated module (``catalog.Catalog``) or the ThriftPy service
    (``catalog_thrift.Catalog``).

    protocol_factory encodes arguments and decodes replies; by default the
    client's own protocol class (unwrapping TMultiplexedProtocol) is used.
    prefix is put before every method name ("Catalog:" under a
    TMultiplexedProcessor). accept overrides the codecs offered for the
    response; timeout_millis and sequential go into the BatchRequest.
    """

    def __init__(self, client, service, protocol_factory=None, prefix="",
                 accept=None, timeout_millis=None, sequential=None):
        self._client = client
        self._service = service
        self._prefix = prefix
        self._accept = accepted_codecs() if accept is None else list(accept)
        self._timeout = timeout_millis
        self._sequential = sequential
        self._calls = []
        self.codec = NONE  # the codec the last response arrived in
        # ThriftPy's TClient keeps its service; Apache's Client lives in the
        # generated module that also holds executeBatch_args and _result.
        owner = getattr(client, "_service", None) or sys.modules[type(client).__module__]
        self._BatchRequest = _nested_class(owner.executeBatch_args, 1)
        self._Request = _nested_class(self._BatchRequest, 1)
        self._BatchResponse = _nested_class(owner.executeBatch_result, 0)
        self._new_protocol = _protocol_maker(client._oprot, protocol_factory)

    def add(self, method, *args, **kwargs):
        """Queue method(*args, **kwargs); return its Call."""
        args_cls = getattr(self._service, method + "_args", None)
        if args_cls is None:  # unknown here: send empty args, let the server say
            arguments = self._empty_struct()
        else:
            arguments = self._encode(args_cls(*args, **kwargs))
        call = Call(self._prefix + method, arguments,
                    getattr(self._service, method + "_result", None))
        self._calls.append(call)
        return call

    def execute(self):
        """Send the queued calls in one executeBatch and settle each Call.

        Returns the calls, in the order added; the batch is then empty and
        can be reused. A refused batch raises the IDL's BatchError.
        """
        calls, self._calls = self._calls, []
        request = self._BatchRequest(requests=[
            self._Request(method=c.method, arguments=c.arguments, id=i)
            for i, c in enumerate(calls)])
        if self._accept:
            request.acceptCodecs = self._accept
        if self._timeout is not None:
            request.timeoutMillis = self._timeout
        if self._sequential is not None:
            request.sequential = self._sequential
        response = self._client.executeBatch(request)
        responses = response.responses or []
        self.codec = response.codec or NONE
        if self.codec:
            inner = self._BatchResponse()
            self._decode(inner, decompress(self.codec, response.compressedResponses))
            responses = inner.responses or []
        if len(responses) != len(calls):
            raise RuntimeError("thriftbatch: %d responses for %d calls" % (len(responses), len(calls)))
        for i, (call, r) in enumerate(zip(calls, responses)):
            if r.id is not None and r.id != i:
                raise RuntimeError("thriftbatch: response %d carries id %d" % (i, r.id))
            self._settle(call, r)
        return calls

    def _settle(self, call, response):
        call.done = True
        if response.error is not None:
            call._error = CallError(response.error.type, response.error.message)
            return
        if call._result_class is None:  # oneway (Apache generates no result)
            return
        result = call._result_class()
        self._decode(result, response.reply)
        names = _field_names(call._result_class)
        for fid, name in sorted(names.items()):
            if fid != 0 and getattr(result, name, None) is not None:
                call._error = getattr(result, name)  # a declared exception
                return
        if 0 in names:
            call._reply = result.success
            if call._reply is None:
                call._error = CallError(CallError.MISSING_RESULT, "%s returned no result" % call.method)

    def _encode(self, struct):
        proto, buf = self._new_protocol(None)
        struct.write(proto)
        return buf.getvalue()

    def _empty_struct(self):
        proto, buf = self._new_protocol(None)
        if not hasattr(proto, "writeStructBegin"):
            return b"\x00"  # ThriftPy: binary and compact protocols
        proto.writeStructBegin("args")  # Apache: any protocol, JSON's {} too
        proto.writeFieldStop()
        proto.writeStructEnd()
        return buf.getvalue()

    def _decode(self, struct, data):
        struct.read(self._new_protocol(_as_bytes(data))[0])


def _as_bytes(data):
    """ThriftPy decodes a binary field as str when it is valid UTF-8."""
    return data.encode("utf-8") if isinstance(data, str) else (data or b"")


def _field_names(cls):
    """{field id: attribute name} of a generated struct class."""
    spec = cls.thrift_spec
    if isinstance(spec, dict):  # ThriftPy: {id: (ttype, name, ...)}
        return {fid: e[1] for fid, e in spec.items()}
    return {e[0]: e[2] for e in spec if e}  # Apache: ((id, ttype, name, ...), ...)


def _nested_class(cls, fid):
    """The struct class of field fid of cls, or of its list's elements."""
    spec = cls.thrift_spec
    if isinstance(spec, dict):  # ThriftPy: (ttype, name, cls | (elem_ttype, cls), req)
        t = spec[fid][2]
        return t[1] if isinstance(t, tuple) else t
    t = spec[fid][3]  # Apache: (id, ttype, name, [cls, spec] | (elem_ttype, [cls, spec], _), default)
    return (t[1] if isinstance(t, tuple) else t)[0]


def _protocol_maker(proto, factory):
    """Return new(data) -> (protocol, buffer): the connection's protocol
    over a memory buffer holding data (None: an empty one to write to)."""
    thriftpy = hasattr(proto, "write_struct")
    if thriftpy:
        from thriftpy.transport import TMemoryBuffer
        proto = getattr(proto, "_proto", proto)  # TMultiplexedProtocol
        kwargs = {"decode_response": proto.decode_response} if hasattr(proto, "decode_response") else {}
    else:
        from thrift.transport.TTransport import TMemoryBuffer
        kwargs = {}
    cls = type(proto)
    if not thriftpy and "TProtocolDecorator" in [c.__name__ for c in cls.__mro__]:
        cls = cls.__bases__[1]  # Apache TMultiplexedProtocol: (decorator, protocol class)

    def new(data):
        buf = TMemoryBuffer() if data is None else TMemoryBuffer(data)
        if factory is None:
            return cls(buf, **kwargs), buf
        return (factory.get_protocol(buf) if thriftpy else factory.getProtocol(buf)), buf
    return new
