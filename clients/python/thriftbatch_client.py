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
Python modules import) are decompressed transparently, up to
max_decompressed_bytes.
"""

import functools
import sys
import zlib

__all__ = ["Batch", "Call", "CallError", "accepted_codecs", "decompress",
           "DEFAULT_MAX_DECOMPRESSED_BYTES",
           "NONE", "ZSTD", "SNAPPY", "S2", "GZIP", "ZLIB"]

# Codec values of idl/batch.thrift. S2 has no Python decoder: never accepted.
NONE, ZSTD, SNAPPY, S2, GZIP, ZLIB = 0, 1, 2, 3, 4, 5
_CODEC_NAMES = {NONE: "none", ZSTD: "zstd", SNAPPY: "snappy", S2: "S2", GZIP: "gzip", ZLIB: "zlib"}
_CODEC_MODULES = {ZSTD: "zstandard", SNAPPY: "snappy"}

# The default of max_decompressed_bytes: 64 MiB, as the Go client's
# client.DefaultMaxDecompressedBytes (client.WithMaxDecompressedBytes).
DEFAULT_MAX_DECOMPRESSED_BYTES = 64 << 20

# The zstd frame's magic number (RFC 8878 3.1.1).
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# At most 128 KiB come out of a 4-byte zstd block (an RLE block).
_ZSTD_MAX_RATIO = 32768
# A frame that does not declare its content size is fed to the decompressor
# this many bytes at least per step: they complete at most 4 blocks, so at
# most 512 KiB come out past max_decompressed_bytes before it is refused.
_ZSTD_MIN_STEP = 16


class _TooLarge(ValueError):
    """A compressed payload decompresses to more than the limit."""

    def __init__(self, codec, limit, declared=None):
        super().__init__("thriftbatch: compressedResponses (codec %d, %s) decompresses to more than "
                         "max_decompressed_bytes = %d bytes%s"
                         % (codec, _CODEC_NAMES[codec], limit,
                            "" if declared is None else " (it declares %d)" % declared))


def _unzstd(zstandard):
    def run(data, limit):
        if data[:4] != _ZSTD_MAGIC:
            raise ValueError("it is not a zstd frame: it starts with %s, not the magic number %s"
                             % (data[:4].hex(), _ZSTD_MAGIC.hex()))
        params = zstandard.get_frame_parameters(data)
        if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
            return _unzstd_stepwise(zstandard, data, limit)
        if params.content_size > limit:
            raise _TooLarge(ZSTD, limit, params.content_size)
        end = _zstd_frame_end(data, zstandard.frame_header_size(data), params.has_checksum)
        if end < len(data):
            raise ValueError("%d bytes follow the end of the zstd frame" % (len(data) - end))
        # One call into a buffer of the declared size, which libzstd does not
        # write past: a frame holding more fails ("Destination buffer is too
        # small"), one holding less too ("Data corruption detected").
        return zstandard.ZstdDecompressor().decompress(data)
    return run


def _zstd_frame_end(data, pos, checksum):
    """The end of the zstd frame whose first block starts at pos, found from
    its block headers (RFC 8878 3.1.1.2), its checksum included."""
    header = 0
    while pos + 3 <= len(data):
        header = int.from_bytes(data[pos:pos + 3], "little")
        kind = header >> 1 & 3
        if kind == 3:
            raise ValueError("the zstd block at byte %d has the reserved block type" % pos)
        pos += 3 + (1 if kind == 1 else header >> 3)  # an RLE block holds 1 byte
        if header & 1:  # the last block
            if pos + (4 if checksum else 0) > len(data):
                break
            return pos + (4 if checksum else 0)
    raise ValueError("the zstd frame is truncated: its %d bytes end inside %s"
                     % (len(data), "its last block or its checksum" if header & 1 else "a block"))


def _unzstd_stepwise(zstandard, data, limit):
    """Decompress a frame that does not declare its content size, a few
    bytes of input at a time: little enough that their output cannot go far
    past limit, whatever its ratio."""
    d = zstandard.ZstdDecompressor().decompressobj()
    view, pos, size, out = memoryview(data), 0, 0, []
    while pos < len(view) and not d.eof:
        step = max(_ZSTD_MIN_STEP, (limit - size) // _ZSTD_MAX_RATIO)
        chunk = d.decompress(view[pos:pos + step])
        pos += step
        size += len(chunk)
        if size > limit:
            raise _TooLarge(ZSTD, limit)
        out.append(chunk)
    if not d.eof:
        raise ValueError("the zstd frame is truncated (%d bytes decompressed before its input ended)" % size)
    trailing = len(d.unused_data) + max(len(view) - pos, 0)
    if trailing:
        raise ValueError("%d bytes follow the end of the zstd frame" % trailing)
    return b"".join(out)


def _unsnappy(snappy):
    def run(data, limit):
        # The block starts with the uncompressed length, a varint.
        length = shift = 0
        for n, b in enumerate(data[:5], 1):
            length |= (b & 0x7f) << shift
            shift += 7
            if b < 0x80:
                break
        else:
            raise ValueError("the snappy block has no valid length header")
        if length > 0xffffffff:  # at most 32 bits: the fifth byte holds 4
            raise ValueError("the snappy length header (%s) overflows 32 bits" % data[:n].hex(" "))
        if length > limit:
            raise _TooLarge(SNAPPY, limit)
        return snappy.uncompress(data)
    return run


def _unzlib(codec, wbits):
    def run(data, limit):
        d = zlib.decompressobj(wbits)
        # max_length is a C ssize_t: a larger limit is no limit anyway.
        out = d.decompress(data, min(limit, sys.maxsize - 1) + 1)
        if len(out) > limit:
            raise _TooLarge(codec, limit)
        if not d.eof:
            raise ValueError("the %s stream is truncated (%d bytes decompressed before its input ended)"
                             % (_CODEC_NAMES[codec], len(out)))
        if d.unused_data:
            raise ValueError("%d bytes follow the end of the %s stream" % (len(d.unused_data), _CODEC_NAMES[codec]))
        return out
    return run


def _decompressors():
    """Return {codec: function(bytes, limit) -> bytes} for the codecs available."""
    found = {GZIP: _unzlib(GZIP, 31), ZLIB: _unzlib(ZLIB, 15)}
    try:
        import zstandard
        found[ZSTD] = _unzstd(zstandard)
    except ImportError:
        pass
    try:
        import snappy
        found[SNAPPY] = _unsnappy(snappy)  # raw block format, no framing
    except ImportError:
        pass
    return found


_DECOMPRESS = _decompressors()


def accepted_codecs():
    """The codecs this module can decompress, most preferred first."""
    return [c for c in (ZSTD, SNAPPY, GZIP, ZLIB) if c in _DECOMPRESS]


def decompress(codec, data, max_bytes=DEFAULT_MAX_DECOMPRESSED_BYTES):
    """Decompress a compressedResponses payload written with codec.

    Raises ValueError when codec is not one of accepted_codecs(), when
    max_bytes is not a positive int, when the payload would decompress to
    more than max_bytes, and when it is corrupt (not of that format,
    truncated, or followed by other bytes, a second zstd frame or gzip
    member included). A zstd frame without a content size may decompress up
    to 512 KiB past max_bytes before it is refused (README.md).
    """
    if codec not in _DECOMPRESS:
        raise ValueError("thriftbatch: cannot decompress codec %s%s" % (_codec_name(codec), _missing(codec)))
    _check_limit("max_bytes", max_bytes)
    if data is None:
        raise _corrupt(codec, "it is absent")
    if not data:
        raise _corrupt(codec, "it is empty")
    try:
        return _DECOMPRESS[codec](_as_bytes(data), max_bytes)
    except _TooLarge as e:
        error = e.with_traceback(None)
    except Exception as e:
        error = _corrupt(codec, _describe(e))
    # Raised here, out of the except clauses, the error refers to no frame
    # of the decompressor: calls that keep it keep no output alive.
    raise error


def _check_limit(name, limit):
    # 0 or less would make zlib's max_length unbounded (0) or invalid.
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        raise ValueError("thriftbatch: %s must be a positive int, got %r" % (name, limit))


def _codec_name(codec):
    name = _CODEC_NAMES.get(codec)
    return "%s (%s)" % (codec, name) if name else str(codec)


def _missing(codec):
    """Why codec cannot be decompressed here."""
    if codec == S2:
        return ": no Python decoder reads S2"
    if codec in _CODEC_MODULES:
        return ": the %s module does not import" % _CODEC_MODULES[codec]
    return ": not a codec of idl/batch.thrift"


def _corrupt(codec, reason):
    return ValueError("thriftbatch: compressedResponses (codec %d) is corrupt: %s" % (codec, reason))


def _describe(e):
    text = str(e)
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__


class CallError(Exception):
    """One call of a batch produced no reply (a Response.error), or its
    Response was malformed (PROTOCOL_ERROR, raised by this module).

    type is a TApplicationException code (0..10) or a thriftbatch code
    (100..103), named by the constants below as in docs/SPEC.md section 5.2;
    message is human-readable text.
    """

    # TApplicationException's codes.
    UNKNOWN, UNKNOWN_METHOD, INVALID_MESSAGE_TYPE, WRONG_METHOD_NAME = 0, 1, 2, 3
    BAD_SEQUENCE_ID, MISSING_RESULT, INTERNAL_ERROR, PROTOCOL_ERROR = 4, 5, 6, 7
    INVALID_TRANSFORM, INVALID_PROTOCOL, UNSUPPORTED_CLIENT_TYPE = 8, 9, 10
    # thriftbatch's own (idl/batch.thrift constants).
    CALL_DEADLINE_EXCEEDED, CALL_OVERLOADED, CALL_NOT_ALLOWED, CALL_CANCELED = 100, 101, 102, 103
    # Deprecated: the names of 100..103 before 6e6a903, kept as aliases for
    # code written against them. Use the CALL_ names above.
    DEADLINE_EXCEEDED, OVERLOADED, NOT_ALLOWED, CANCELED = (
        CALL_DEADLINE_EXCEEDED, CALL_OVERLOADED, CALL_NOT_ALLOWED, CALL_CANCELED)

    def __init__(self, type, message):
        super().__init__("thriftbatch call error %s: %s" % (type, message))
        self.type = type
        self.message = message


class Call:
    """One call added to a Batch; result() answers it once the batch ran.

    done is True once execute() settled the call, whatever the outcome.
    """

    def __init__(self, method, arguments, result_class):
        self.method = method
        self.arguments = arguments
        self._result_class = result_class
        self._reply = self._error = self._tb = None
        self.done = False

    def result(self):
        """Return the call's return value (None for void and oneway methods).

        Raises the method's declared exception; CallError when the server
        answered with an error or the call's Response is malformed; the
        exception execute() raised when the batch as a whole failed
        (BatchError, a transport error, a corrupt compressed response); or
        RuntimeError before the batch ran.
        """
        if not self.done:
            raise RuntimeError("thriftbatch: %s has not been executed" % self.method)
        if self._error is not None:
            # From the traceback it had when the call was settled: raising
            # it as is would add this frame and the caller's to the shared
            # exception's traceback at every result().
            raise self._error.with_traceback(self._tb)
        return self._reply


class Batch:
    """Collects calls and sends them in one executeBatch.

    client is a BatchService client on an open connection: Apache
    ``BatchService.Client(protocol)`` or ThriftPy
    ``make_client(batch_thrift.BatchService, ...)``. service holds the
    calls' ``<method>_args`` and ``<method>_result`` classes: the Apache
    generated module (``catalog.Catalog``) or the ThriftPy service
    (``catalog_thrift.Catalog``); methods inherited through ``extends`` are
    found in the base services.

    protocol_factory encodes arguments and decodes replies; by default the
    client's own protocol class (unwrapping TMultiplexedProtocol) is used; a
    client on THeaderProtocol needs one. prefix is put before every method
    name ("Catalog:" under a TMultiplexedProcessor). accept overrides the
    codecs offered for the response; each must be one of accepted_codecs()
    (or NONE), else ValueError. max_decompressed_bytes bounds the size a
    compressed response may decompress to. timeout_millis and sequential go
    into the BatchRequest.
    """

    def __init__(self, client, service, protocol_factory=None, prefix="",
                 accept=None, timeout_millis=None, sequential=None,
                 max_decompressed_bytes=DEFAULT_MAX_DECOMPRESSED_BYTES):
        self._client = client
        self._service = service
        self._prefix = prefix
        self._accept = accepted_codecs() if accept is None else list(accept)
        for codec in self._accept:
            if codec != NONE and codec not in _DECOMPRESS:
                raise ValueError("thriftbatch: accept names codec %s, which this module cannot decompress%s; "
                                 "it can: %s" % (_codec_name(codec), _missing(codec),
                                                 ", ".join(_codec_name(c) for c in accepted_codecs())))
        _check_limit("max_decompressed_bytes", max_decompressed_bytes)
        self._max_decompressed = max_decompressed_bytes
        self._timeout = timeout_millis
        self._sequential = sequential
        self._calls = []
        self._classes = {}  # method: (args class, result class), looked up once
        self.codec = NONE  # the codec the last response arrived in
        # ThriftPy's TClient keeps its service; Apache's Client lives in the
        # generated module that also holds executeBatch_args and _result.
        owner = getattr(client, "_service", None) or sys.modules[type(client).__module__]
        self._BatchRequest = _nested_class(owner.executeBatch_args, 1)
        self._Request = _nested_class(self._BatchRequest, 1)
        self._BatchResponse = _nested_class(owner.executeBatch_result, 0)
        self._writer, self._reader = _protocol_makers(client._oprot, protocol_factory)

    def add(self, method, *args, **kwargs):
        """Queue method(*args, **kwargs); return its Call.

        Raises AttributeError when the service (with the services it
        extends) has no such method.
        """
        classes = self._classes.get(method)
        if classes is None:
            classes = self._classes[method] = self._method_classes(method)
        args_cls, result_cls = classes
        call = Call(self._prefix + method, self._encode(args_cls(*args, **kwargs)), result_cls)
        self._calls.append(call)
        return call

    def _method_classes(self, method):
        """(args class, result class: None when oneway) of method."""
        args_cls = _service_attr(self._service, method + "_args")
        if args_cls is None:
            raise AttributeError("thriftbatch: service %s has no method %s (no %s_args in it or in the "
                                 "services it extends)" % (_service_name(self._service), method, method))
        result_cls = _service_attr(self._service, method + "_result")
        if result_cls is None and not _apache_oneway(self._service, method):
            raise AttributeError("thriftbatch: service %s has no %s_result for its method %s, which is not "
                                 "oneway" % (_service_name(self._service), method, method))
        return args_cls, result_cls

    def execute(self):
        """Send the queued calls in one executeBatch and settle each Call.

        Returns the calls, in the order added; the batch is then empty and
        can be reused. A refused batch raises the IDL's BatchError; a
        transport error, a compressed response that is corrupt or larger
        than max_decompressed_bytes (ValueError) and a response that does
        not answer every call (RuntimeError) raise too. Whatever execute()
        raises, every call is done and its result() raises that exception.
        """
        calls, self._calls = self._calls, []
        try:
            responses = self._exchange(calls)
        except BaseException as e:  # KeyboardInterrupt too: no call is left pending
            for call in calls:
                call._reply, call._error, call._tb, call.done = None, e, e.__traceback__, True
            raise
        for i, (call, r) in enumerate(zip(calls, responses)):
            self._settle(i, call, r)
        return calls

    def _exchange(self, calls):
        """Send the batch; return its list of Responses, decompressed."""
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
            if responses:
                raise ValueError("thriftbatch: the response sets both responses (%d) and compressedResponses "
                                 "(codec %d)" % (len(responses), self.codec))
            responses = self._decompressed(self.codec, response.compressedResponses)
        if len(responses) != len(calls):
            raise RuntimeError("thriftbatch: %d responses for %d calls" % (len(responses), len(calls)))
        return responses

    def _decompressed(self, codec, data):
        """The Responses inside compressedResponses data."""
        if codec not in self._accept:  # __init__ accepts decompressible codecs only
            raise ValueError("thriftbatch: the response is compressed with codec %s, which this batch did "
                             "not accept" % _codec_name(codec))
        raw = decompress(codec, data, self._max_decompressed)
        inner = self._BatchResponse()
        try:
            self._decode(inner, raw)
        except Exception as e:
            error = _corrupt(codec, "its %d bytes do not decode as a BatchResponse: %s" % (len(raw), _describe(e)))
        else:
            return inner.responses or []
        raw = inner = None  # not kept alive by the error's traceback
        raise error

    def _settle(self, i, call, response):
        """Settle call i with its Response."""
        call._reply, call._error = self._outcome(i, call, response)
        call.done = True

    def _outcome(self, i, call, r):
        """(reply, error) of call i, answered by Response r."""
        def malformed(what):
            return None, CallError(CallError.PROTOCOL_ERROR, "response %d (%s) %s" % (i, call.method, what))
        if r.id is None:
            return malformed("carries no id; its request had id %d" % i)
        if r.id != i:
            return malformed("carries id %s; its request had id %d" % (r.id, i))
        if r.reply is not None and r.error is not None:
            return malformed("has both a reply and an error (%s: %s)" % (r.error.type, r.error.message))
        if r.reply is None and r.error is None:
            return malformed("has neither a reply nor an error")
        if r.error is not None:
            return None, CallError(r.error.type, r.error.message)
        if call._result_class is None:  # oneway (Apache generates no result)
            return None, None
        result = call._result_class()
        try:
            self._decode(result, r.reply)
        except Exception as e:
            return None, CallError(CallError.PROTOCOL_ERROR, "reply of call %d does not decode: %s" % (i, _describe(e)))
        exceptions, has_success = _result_shape(call._result_class)
        for name in exceptions:
            if getattr(result, name, None) is not None:
                return None, getattr(result, name)  # a declared exception
        if has_success:
            if result.success is None:
                return None, CallError(CallError.MISSING_RESULT, "%s returned no result" % call.method)
            return result.success, None
        return None, None  # void

    def _encode(self, struct):
        proto, buf = self._writer()
        struct.write(proto)
        return buf.getvalue()

    def _decode(self, struct, data):
        struct.read(self._reader(_as_bytes(data)))


def _as_bytes(data):
    """ThriftPy decodes a binary field as str when it is valid UTF-8."""
    return data.encode("utf-8") if isinstance(data, str) else (data or b"")


def _service_name(service):
    return getattr(service, "__name__", None) or type(service).__name__


def _service_attr(service, name):
    """service's attribute name, or None, looked up in the services it
    extends too: a ThriftPy service class inherits them; Apache keeps them in
    the module of the service that declares the method, the module of one of
    the generated Iface's base classes."""
    found = getattr(service, name, None)
    if found is not None:
        return found
    iface = getattr(service, "Iface", None)
    for base in getattr(iface, "__mro__", ())[1:]:
        found = getattr(sys.modules.get(base.__module__), name, None)
        if found is not None:
            return found
    return None


def _apache_oneway(service, method):
    """Whether the Apache generated service declares method oneway: its
    Client sends it and receives nothing."""
    client = getattr(service, "Client", None)
    return (isinstance(client, type) and hasattr(client, "send_" + method)
            and not hasattr(client, "recv_" + method))


@functools.lru_cache(maxsize=None)
def _result_shape(cls):
    """(names of the declared exceptions in field id order, whether there is
    a success field) of a generated result class."""
    names = _field_names(cls)
    return tuple(name for fid, name in sorted(names.items()) if fid != 0), 0 in names


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


def _protocol_makers(proto, factory):
    """Return writer() -> (protocol, buffer), the connection's protocol over
    an empty memory buffer whose getvalue() is what it wrote, and
    reader(data) -> protocol, the same over a buffer holding data."""
    thriftpy = hasattr(proto, "write_struct")
    if thriftpy:
        # Replies are read from the pure-Python buffer: ThriftPy's cython
        # TMemoryBuffer lets the cython binary protocol read past the end
        # of a short reply. Arguments are written the usual way.
        from thriftpy.transport import TMemoryBuffer as WriteBuffer
        from thriftpy.transport.memory import TMemoryBuffer
        proto = getattr(proto, "_proto", proto)  # TMultiplexedProtocol
        kwargs = {"decode_response": proto.decode_response} if hasattr(proto, "decode_response") else {}
    else:
        from thrift.transport.TTransport import TMemoryBuffer
        WriteBuffer = TMemoryBuffer
        kwargs = {}
    cls = type(proto)
    if not thriftpy:
        if "TProtocolDecorator" in [c.__name__ for c in cls.__mro__]:
            cls = cls.__bases__[1]  # Apache TMultiplexedProtocol: (decorator, protocol class)
        if factory is None and "THeaderProtocol" in [c.__name__ for c in cls.__mro__]:
            raise ValueError("thriftbatch: the client is on a THeaderProtocol: pass protocol_factory, the "
                             "factory of the protocol inside the header (TBinaryProtocolFactory() or "
                             "TCompactProtocolFactory())")

    if factory is None:
        def make(trans):
            return cls(trans, **kwargs)
    else:
        make = factory.get_protocol if thriftpy else factory.getProtocol

    wrap = None
    if thriftpy:
        try:
            make(TMemoryBuffer())
        except TypeError:  # a cython protocol reads cython transports only
            from thriftpy.transport import TCyBufferedTransport as wrap

    def writer():
        buf = WriteBuffer()
        return make(buf), buf

    def reader(data):
        buf = TMemoryBuffer(data)
        return make(buf if wrap is None else wrap(buf))
    return writer, reader
