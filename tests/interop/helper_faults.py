"""Faults the helper library clients/python/thriftbatch_client.py must report
precisely, with Apache Thrift for Python (generated code) or with ThriftPy
(thriftpy.load). One check per run (--check):

  accept     Batch refuses an accept codec it cannot decompress (S2, an
             unknown value, zstd or snappy without their module).
  extends    a method inherited through `service Derived extends Base` (its
             _args and _result classes live in Base's module only) is
             encoded and decoded; an unknown method is an AttributeError.
  settle     every call of a batch is settled, each on its own: a reply that
             does not decode, a Response with neither or both of reply and
             error, a missing or wrong id are CallError PROTOCOL_ERROR on
             that call only; no call ends with a silent None.
  limit      max_decompressed_bytes (default 64 MiB) bounds the decompressed
             response for every codec, exact size included (a response of
             many zstd steps and blocks), and a limit beyond C's ssize_t
             works. Bombs (zeros, hand-built zstd RLE frames with and
             without a content size or lying about it) are refused at 1 MiB
             and 64 MiB, the decompressors having produced (or allocated up
             front) at most the limit plus the README's bound: 512 KiB for
             zstd, 1 byte for gzip and zlib, nothing for Snappy.
  corrupt    truncated, trailing-garbage (a second frame or member too) or
             absent compressedResponses, a Snappy length over 32 bits, and
             a payload that does not decode, name what was wrong.
  failure    after a BatchError or a transport error, every call's result()
             raises that same exception, 100 times with a traceback of
             constant length (as after every failed execute() here).
  constants  CallError's constants are the names and values of SPEC 5.2;
             the names before it are deprecated aliases.
  header     (Apache only; HOST:PORT serves -transport header) a client on
             THeaderProtocol without protocol_factory is refused naming
             protocol_factory, and works with it.

settle, limit and corrupt answer executeBatch from a stand-in (the
BatchService client's executeBatch replaced by a function building the
BatchResponse), since example_server only sends well-formed responses.

usage: helper_faults.py HOST:PORT --library apache|thriftpy --check CHECK [--gen DIR]
"""

import gzip
import importlib.util
import os
import random
import struct
import sys
import types
import zlib

from interop_common import CODEC_NAMES, ROOT, fail, parse_args, thriftpy_client, thriftpy_idls

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = os.path.join(ROOT, "clients", "python", "thriftbatch_client.py")
sys.path.insert(0, os.path.dirname(MODULE))

import thriftbatch_client as tbc  # noqa: E402
from thriftbatch_client import Batch, CallError  # noqa: E402

CHECKS = ["accept", "extends", "settle", "limit", "corrupt", "failure", "constants", "header"]
PROTOCOL_ERROR = CallError.PROTOCOL_ERROR
# How far past max_decompressed_bytes each codec may decompress before the
# payload is refused, as clients/python/README.md states.
OVERSHOOT = {tbc.ZSTD: 512 << 10, tbc.GZIP: 1, tbc.ZLIB: 1, tbc.SNAPPY: 0}


class Library:
    """What the checks need from one Python Thrift library: the Catalog
    service, the wire structs of batch.thrift, bare-struct encoding with the
    binary protocol, and clients."""

    def __init__(self, args):
        self.args = args
        self.apache = args.library == "apache"
        if self.apache:
            if not args.gen:
                fail("--gen DIR is required with --library apache")
            sys.path.insert(0, args.gen)
            from thrift.protocol.TBinaryProtocol import TBinaryProtocol
            from thrift.transport.TTransport import TMemoryBuffer
            from catalog import Catalog
            from catalog.ttypes import NotFound, Product
            from thriftbatch.batch import BatchService, ttypes
            self.Catalog, self.NotFound, self.Product, self.wire = Catalog, NotFound, Product, ttypes
            self._service = BatchService
        else:
            from thriftpy.protocol import TBinaryProtocol
            from thriftpy.transport import TMemoryBuffer
            self.wire, catalog = thriftpy_idls()
            self.Catalog, self.NotFound, self.Product = catalog.Catalog, catalog.NotFound, catalog.Product
        self._proto, self._buffer = TBinaryProtocol, TMemoryBuffer
        self.requests = []  # the BatchRequests the stand-in received

    def encode(self, struct):
        buf = self._buffer()
        struct.write(self._proto(buf))
        return buf.getvalue()

    def decode(self, struct, data):
        struct.read(self._proto(self._buffer(data)))
        return struct

    def stand_in(self, respond):
        """A BatchService client on no connection whose executeBatch records
        the request and returns respond(request)."""
        proto = self._proto(self._buffer())
        if self.apache:
            client = self._service.Client(proto)
        else:
            from thriftpy.thrift import TClient
            client = TClient(self.wire.BatchService, proto)

        def execute_batch(request):
            self.requests.append(request)
            return respond(request)
        client.executeBatch = execute_batch
        return client

    def connect(self):
        """A BatchService client on a buffered binary connection to the
        server; returns (client, close)."""
        if self.apache:
            from apache_batch import open_stack
            trans, proto, _ = open_stack("buffered-binary", self.args.host, self.args.port)
            return self._service.Client(proto), trans.close
        client = thriftpy_client(self.wire.BatchService, self.args.host, self.args.port)
        return client, client.close

    def response(self, id=None, reply=None, error=None):
        """A wire Response; error is (type, message)."""
        if error is not None:
            error = self.wire.CallError(type=error[0], message=error[1])
        return self.wire.Response(id=id, reply=reply, error=error)

    def count_reply(self, n):
        return self.encode(self.Catalog.countProducts_result(success=n))

    def inner(self, n):
        """The encoded BatchResponse answering n countProducts calls with
        1000, 1001, ..."""
        return self.encode(self.wire.BatchResponse(
            responses=[self.response(id=i, reply=self.count_reply(1000 + i)) for i in range(n)]))

    def big_inner(self, n, size):
        """(the encoded BatchResponse answering n getProduct calls with
        Products whose descriptions hold size random hex digits, those
        descriptions)."""
        rnd = random.Random(n * size)
        descriptions = ["%0*x" % (size, rnd.getrandbits(4 * size)) for _ in range(n)]
        return self.encode(self.wire.BatchResponse(responses=[
            self.response(id=i, reply=self.encode(self.Catalog.getProduct_result(
                success=self.Product(id=i, description=d))))
            for i, d in enumerate(descriptions)])), descriptions

    def compressed(self, codec, payload, responses=None):
        """respond() for a BatchResponse carrying payload as compressedResponses."""
        return lambda request: self.wire.BatchResponse(responses=responses or [], codec=codec,
                                                       compressedResponses=payload)


def raises(what, fn, exc_type, *fragments):
    """Call fn; fail unless it raises exc_type whose text has every fragment.
    Returns the exception."""
    try:
        fn()
    except exc_type as e:
        for f in fragments:
            if f not in str(e):
                fail("%s: %s %r lacks %r" % (what, type(e).__name__, str(e), f))
        return e
    except Exception as e:
        fail("%s: want %s naming %r, got %s: %s" % (what, exc_type.__name__, fragments, type(e).__name__, e))
    fail("%s: want %s naming %r, nothing raised" % (what, exc_type.__name__, fragments))


def refused_as_too_large(what, fn, codec, limit):
    """Call fn; fail unless it raises the ValueError of a payload over the
    limit (naming the codec and the limit), rather than that of a corrupt
    one, whose text may hold both too. Returns the exception."""
    err = raises(what, fn, ValueError, CODEC_NAMES[codec], "max_decompressed_bytes = %d bytes" % limit)
    if "is corrupt" in str(err):
        fail("%s: refused as corrupt, want as too large: %s" % (what, err))
    return err


def outcome(call):
    """('value', v) or ('raised', exception) of call.result()."""
    try:
        return "value", call.result()
    except Exception as e:
        return "raised", e


def expect_value(what, call, want):
    kind, got = outcome(call)
    if kind != "value" or got != want:
        fail("%s: want %r, got %s %r" % (what, want, kind, got))


def expect_call_error(what, call, type_, *fragments):
    kind, got = outcome(call)
    if not isinstance(got, CallError) or got.type != type_:
        fail("%s: want CallError type %d, got %s %r" % (what, type_, kind, got))
    for f in fragments:
        if f not in got.message:
            fail("%s: CallError message %r lacks %r" % (what, got.message, f))


def expect_same_error(what, calls, err):
    """Every call is done and its result() raises err itself, with a
    traceback that does not grow with every result()."""
    for i, call in enumerate(calls):
        if not call.done:
            fail("%s: call %d is not done after execute() raised %r" % (what, i, err))
        kind, got = outcome(call)
        if got is not err:
            fail("%s: call %d result() gave %s %r, want the exception execute() raised: %r" % (what, i, kind, got, err))
    lengths = []
    for _ in range(100):
        try:
            calls[0].result()
        except Exception as e:
            lengths.append(traceback_length(e.__traceback__))
    if min(lengths) != max(lengths):
        fail("%s: the traceback of the exception result() raises grew from %d to %d frames over 100 calls"
             % (what, lengths[0], lengths[-1]))


def traceback_length(tb):
    n = 0
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


def module_without(*names):
    """A fresh copy of thriftbatch_client, loaded while names do not import."""
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for n in names:
            sys.modules[n] = None  # import raises ImportError
        spec = importlib.util.spec_from_file_location("thriftbatch_client_without_" + "_".join(names), MODULE)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def check_accept(lib):
    client = lib.stand_in(lambda request: fail("executeBatch sent although Batch() should have refused"))
    if tbc.S2 in tbc.accepted_codecs():
        fail("accepted_codecs() offers S2, which no Python decoder reads")
    raises("Batch(accept=[S2])", lambda: Batch(client, lib.Catalog, accept=[tbc.S2]), ValueError, "3", "S2")
    raises("Batch(accept=[99])", lambda: Batch(client, lib.Catalog, accept=[99]), ValueError, "99")
    raises("Batch(accept=[GZIP, S2])", lambda: Batch(client, lib.Catalog, accept=[tbc.GZIP, tbc.S2]),
           ValueError, "S2")
    for accept in (None, [], tbc.accepted_codecs(), [tbc.ZSTD, tbc.SNAPPY, tbc.GZIP, tbc.ZLIB]):
        Batch(client, lib.Catalog, accept=accept)
    for module, codec in (("zstandard", tbc.ZSTD), ("snappy", tbc.SNAPPY)):
        other = module_without(module)
        if codec in other.accepted_codecs():
            fail("without %s, accepted_codecs() still offers codec %d" % (module, codec))
        raises("Batch(accept=[%d]) without %s" % (codec, module),
               lambda: other.Batch(client, lib.Catalog, accept=[codec]), ValueError, str(codec), module)
        other.Batch(client, lib.Catalog)  # the default offers what imports
    return "refused=S2,99,zstd-without-zstandard,snappy-without-snappy"


def check_extends(lib):
    if lib.apache:
        from interop_base import Base
        from interop_derived import Derived
    else:
        import thriftpy
        testdata = os.path.join(HERE, "testdata")
        Derived = thriftpy.load(os.path.join(testdata, "interop_derived.thrift"),
                                module_name="interop_derived_thrift", include_dirs=[testdata]).Derived
        Base = Derived

    def respond(request):
        responses = []
        for r in request.requests:
            name = r.method
            args = lib.decode(getattr(Base if name in ("ping", "poke") else Derived, name + "_args")(),
                              r.arguments)
            if name == "ping":
                if args.x is None:
                    fail("ping(x=5) was sent with empty arguments: %r" % r.arguments)
                reply = lib.encode(Base.ping_result(success=args.x + 1))
            elif name == "pong":
                reply = lib.encode(Derived.pong_result(success=args.y * 2))
            elif name == "poke":
                if args.x != 1:
                    fail("poke(x=1) was sent with arguments %r" % r.arguments)
                reply = b"\x00"
            else:
                fail("unexpected method %r in the batch" % name)
            responses.append(lib.response(id=r.id, reply=reply))
        return lib.wire.BatchResponse(responses=responses)

    batch = Batch(lib.stand_in(respond), Derived, accept=[])
    ping, poke, pong = batch.add("ping", x=5), batch.add("poke", x=1), batch.add("pong", y=4)
    batch.execute()
    expect_value("inherited ping(x=5)", ping, 6)
    expect_value("inherited oneway poke(x=1)", poke, None)
    expect_value("own pong(y=4)", pong, 8)
    raises('add("nope") on Derived', lambda: batch.add("nope"), AttributeError, "Derived", "nope")
    raises('add("noSuchMethod") on Catalog', lambda: Batch(lib.stand_in(respond), lib.Catalog).add("noSuchMethod"),
           AttributeError, "Catalog", "noSuchMethod")
    if lib.apache:
        # A service module holding ping_args but no ping_result, and no Client
        # saying ping is oneway: refused, not sent as a oneway call.
        stub = types.ModuleType("stub.Stub")
        stub.ping_args = Base.ping_args
        raises("ping without a ping_result class", lambda: Batch(lib.stand_in(respond), stub).add("ping", x=1),
               AttributeError, "ping_result")
    return "inherited=ping,poke unknown=AttributeError"


def check_settle(lib):
    good = lib.count_reply(1000)
    truncated = b"\x0c\x00\x00\x0a\x00\x01\x00\x00"  # Product{id: i64 cut short}
    plan = [  # (method, kwargs, Response)
        ("countProducts", {}, lib.response(id=0, reply=good)),
        ("getProduct", {"id": 1}, lib.response(id=1, reply=truncated)),
        ("countProducts", {}, lib.response(id=2)),
        ("countProducts", {}, lib.response(id=3, reply=good, error=(6, "and an error"))),
        ("countProducts", {}, lib.response(reply=good)),
        ("countProducts", {}, lib.response(id=42, reply=good)),
        ("getProduct", {"id": 6}, lib.response(id=6, reply=lib.encode(lib.Catalog.getProduct_result(
            notFound=lib.NotFound(id=6, reason="gone"))))),
        ("getProduct", {"id": 7}, lib.response(id=7, error=(1, "unknown method"))),
        ("getProduct", {"id": 8}, lib.response(id=8, reply=lib.encode(lib.Catalog.getProduct_result()))),
        ("recordView", {"id": 9}, lib.response(id=9, reply=b"\x00")),
        ("countProducts", {}, lib.response(id=10, reply=good)),
    ]
    batch = Batch(lib.stand_in(lambda request: lib.wire.BatchResponse(responses=[p[2] for p in plan])),
                  lib.Catalog, accept=[])
    calls = [batch.add(method, **kwargs) for method, kwargs, _ in plan]
    try:
        batch.execute()
    except Exception as e:
        fail("execute() raised %s: %s; want each bad response settled on its own call" % (type(e).__name__, e))
    for i, call in enumerate(calls):
        if not call.done:
            fail("call %d is not done after execute()" % i)
    expect_value("call 0 (good reply)", calls[0], 1000)
    expect_call_error("call 1 (reply cut short)", calls[1], PROTOCOL_ERROR, "reply of call 1 does not decode")
    expect_call_error("call 2 (neither reply nor error)", calls[2], PROTOCOL_ERROR, "neither")
    expect_call_error("call 3 (both reply and error)", calls[3], PROTOCOL_ERROR, "both")
    expect_call_error("call 4 (no id)", calls[4], PROTOCOL_ERROR, "no id")
    expect_call_error("call 5 (id 42)", calls[5], PROTOCOL_ERROR, "42")
    kind, got = outcome(calls[6])
    if not isinstance(got, lib.NotFound) or got.id != 6:
        fail("call 6: want NotFound(id=6), got %s %r" % (kind, got))
    expect_call_error("call 7 (CallError)", calls[7], 1, "unknown method")
    expect_call_error("call 8 (no success)", calls[8], 5)
    expect_value("call 9 (oneway)", calls[9], None)
    expect_value("call 10 (good reply after bad ones)", calls[10], 1000)
    return "calls=%d protocol_errors=5" % len(calls)


def zero_bombs(size):
    """{codec: size zero bytes compressed} for zstd, zlib and gzip, made
    1 MiB at a time (zlib and gzip share one raw deflate stream)."""
    import zstandard
    chunk = bytes(1 << 20)
    z, deflate = zstandard.ZstdCompressor().compressobj(), zlib.compressobj(1, zlib.DEFLATED, -15)
    zs, raw, crc, adler = [], [], 0, 1
    for _ in range(size >> 20):
        zs.append(z.compress(chunk))
        raw.append(deflate.compress(chunk))
        crc, adler = zlib.crc32(chunk, crc), zlib.adler32(chunk, adler)
    zs.append(z.flush())
    raw.append(deflate.flush())
    raw = b"".join(raw)
    return {tbc.ZSTD: b"".join(zs),
            tbc.ZLIB: b"\x78\x01" + raw + struct.pack(">I", adler),
            tbc.GZIP: b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + raw + struct.pack("<II", crc, size & 0xffffffff)}


def inflated_size(codec, data):
    """How many bytes data decompresses to, counted 16 MiB at a time."""
    n = 0
    if codec == tbc.ZSTD:
        import io
        import zstandard
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
        for chunk in iter(lambda: reader.read(1 << 24), b""):
            n += len(chunk)
        return n
    d = zlib.decompressobj({tbc.ZLIB: 15, tbc.GZIP: 31}[codec])
    while data:
        n += len(d.decompress(data, 1 << 24))
        data = d.unconsumed_tail
    return n + len(d.flush()) if d.eof else -1


def rle_frame(size, content_size=None):
    """A zstd frame of size zero bytes in RLE blocks of 128 KiB (4 bytes
    each), with a 128 KiB window; content_size, if given, is declared in its
    header whatever size is."""
    if content_size is None:
        out = [b"\x28\xb5\x2f\xfd\x00\x38"]  # no content size; window descriptor 2^17
    else:
        out = [b"\x28\xb5\x2f\xfd\xc0\x38" + struct.pack("<Q", content_size)]  # 8-byte content size
    while True:
        block = min(size, 128 << 10)
        size -= block
        last = size == 0
        out.append(struct.pack("<I", last | 1 << 1 | block << 3)[:3] + b"\x00")  # type 1: RLE
        if last:
            return b"".join(out)


def snappy_length(data):
    """The length a Snappy block declares (its varint header), or 0."""
    n = shift = 0
    for b in bytes(data[:5]):
        n |= (b & 0x7f) << shift
        shift += 7
        if b < 0x80:
            return n
    return 0


class Produced:
    """While active, counts the bytes the helper gets from the decompressors,
    with what they allocate up front: a one-shot zstd decompression the
    frame's declared content size, Snappy the declared length. Only the
    calls below are measured: the helper touching any other attribute of
    the wrapped objects is recorded in unmeasured."""

    def __init__(self):
        self.total = 0
        self.unmeasured = []

    def count(self, n):
        self.total += n

    def __enter__(self):
        import snappy
        import zstandard
        self._saved = (zstandard.ZstdDecompressor, zlib.decompressobj, snappy.uncompress)
        real_zstd, real_zlib, real_snappy = self._saved
        produced = self

        class Wrapped:
            def __init__(self, inner):
                self._inner = inner

            def __getattr__(self, name):
                produced.unmeasured.append("%s.%s" % (type(self._inner).__name__, name))
                return getattr(self._inner, name)

        class Stream(Wrapped):  # a zstd or zlib decompressobj
            def decompress(self, data, *args):
                out = self._inner.decompress(data, *args)
                produced.count(len(out))
                return out

            def flush(self, *args):
                out = self._inner.flush(*args)
                produced.count(len(out))
                return out

            eof = property(lambda self: self._inner.eof)
            unused_data = property(lambda self: self._inner.unused_data)
            unconsumed_tail = property(lambda self: self._inner.unconsumed_tail)

        class Zstd(Wrapped):
            def decompressobj(self, *args, **kwargs):
                return Stream(self._inner.decompressobj(*args, **kwargs))

            def decompress(self, data, *args, **kwargs):
                try:
                    declared = zstandard.get_frame_parameters(data).content_size
                except zstandard.ZstdError:
                    declared = zstandard.CONTENTSIZE_UNKNOWN
                if declared != zstandard.CONTENTSIZE_UNKNOWN:
                    produced.count(declared)  # its output buffer
                out = self._inner.decompress(data, *args, **kwargs)
                if declared == zstandard.CONTENTSIZE_UNKNOWN:
                    produced.count(len(out))
                return out

        def uncompress(data, *args, **kwargs):
            out = real_snappy(data, *args, **kwargs)
            produced.count(max(len(out), snappy_length(data)))
            return out
        zstandard.ZstdDecompressor = lambda *args, **kwargs: Zstd(real_zstd(*args, **kwargs))
        zlib.decompressobj = lambda *args, **kwargs: Stream(real_zlib(*args, **kwargs))
        snappy.uncompress = uncompress
        return self

    def __exit__(self, *exc):
        import snappy
        import zstandard
        zstandard.ZstdDecompressor, zlib.decompressobj, snappy.uncompress = self._saved
        return False

    def expect_within(self, what, bound):
        if self.unmeasured:
            fail("%s: the helper used %s, which this check does not measure" % (what, ", ".join(self.unmeasured)))
        if self.total > bound:
            fail("%s: the decompressors produced %d bytes, more than %d (max_decompressed_bytes and the "
                 "README's bound)" % (what, self.total, bound))


def check_limit(lib):
    import snappy
    import zstandard
    if tbc.DEFAULT_MAX_DECOMPRESSED_BYTES != 64 << 20:
        fail("DEFAULT_MAX_DECOMPRESSED_BYTES is %r, want 64 MiB as the Go client" % tbc.DEFAULT_MAX_DECOMPRESSED_BYTES)

    # Exactly at the limit and one byte over, with a response of 8 Products
    # of 48 KiB: some 200 KiB of zstd input, fed in many steps, and blocks
    # of 128 KiB.
    inner, descriptions = lib.big_inner(8, 48 << 10)
    stream = zstandard.ZstdCompressor().compressobj()
    payloads = [
        ("zstd", tbc.ZSTD, zstandard.ZstdCompressor().compress(inner)),
        ("zstd without content size", tbc.ZSTD, stream.compress(inner) + stream.flush()),
        ("snappy", tbc.SNAPPY, snappy.compress(inner)),
        ("gzip", tbc.GZIP, gzip.compress(inner)),
        ("zlib", tbc.ZLIB, zlib.compress(inner)),
    ]
    if zstandard.get_frame_parameters(payloads[1][2]).content_size != zstandard.CONTENTSIZE_UNKNOWN:
        fail("the zstd stream declares its content size")

    def run(what, codec, payload, limit, too_large=False):
        """Execute a batch of getProduct calls answered by payload; expect
        every value, or (too_large) execute() to refuse it as too large."""
        batch = Batch(lib.stand_in(lib.compressed(codec, payload)), lib.Catalog, max_decompressed_bytes=limit)
        calls = [batch.add("getProduct", id=i) for i in range(len(descriptions))]
        with Produced() as produced:
            if too_large:
                err = refused_as_too_large(what, batch.execute, codec, limit)
            else:
                try:
                    batch.execute()
                except Exception as e:
                    fail("%s: execute() raised %s: %s" % (what, type(e).__name__, e))
        produced.expect_within(what, limit + (OVERSHOOT[codec] if too_large else 0))
        if too_large:
            return expect_same_error(what, calls, err)
        for i, call in enumerate(calls):
            kind, got = outcome(call)
            if kind != "value" or got.id != i or got.description != descriptions[i]:
                fail("%s: call %d: %s %r, want Product %d and its description" % (what, i, kind, got, i))

    for what, codec, payload in payloads:
        run("%s at exactly the limit (%d bytes)" % (what, len(inner)), codec, payload, len(inner))
        run("%s one byte over the limit" % what, codec, payload, len(inner) - 1, too_large=True)
        # A limit beyond C's ssize_t is no limit, not an error (zlib's
        # max_length overflowed).
        for limit in (sys.maxsize, 1 << 80):
            run("%s at max_decompressed_bytes %d" % (what, limit), codec, payload, limit)
    client = lib.stand_in(lambda request: fail("executeBatch sent with an invalid limit"))
    for limit in (0, -1, True, 1.5, None):
        raises("max_decompressed_bytes=%r" % (limit,),
               lambda: Batch(client, lib.Catalog, max_decompressed_bytes=limit), ValueError, "positive int")
        raises("decompress(max_bytes=%r)" % (limit,), lambda: tbc.decompress(tbc.GZIP, payloads[3][2], limit),
               ValueError, "positive int")

    # Bombs of 256 MiB at 1 MiB and at the default limit: refused naming
    # the codec and the limit (or as corrupt: the frames whose content
    # size lies), the decompressors having produced at most the limit plus
    # the codec's bound.
    size = 256 << 20
    zeros = zero_bombs(size)
    for codec, bomb in zeros.items():
        if inflated_size(codec, bomb) != size:
            fail("the %s bomb does not decompress to %d bytes" % (CODEC_NAMES[codec], size))
    for what, bomb in (("RLE frame", rle_frame(size)), ("RLE frame with its content size", rle_frame(size, size))):
        if inflated_size(tbc.ZSTD, bomb) != size:
            fail("the zstd %s does not decompress to %d bytes" % (what, size))
    summary = []
    for limit in (1 << 20, None):
        shown = limit or tbc.DEFAULT_MAX_DECOMPRESSED_BYTES
        # libzstd writes no further than the declared content size.
        too_large, corrupt = "too large", ("is corrupt", "Destination buffer is too small")
        bombs = [
            ("zstd zeros without content size", tbc.ZSTD, zeros[tbc.ZSTD], too_large),
            ("zstd RLE frame without content size", tbc.ZSTD, rle_frame(size), too_large),
            ("zstd RLE frame declaring its content size", tbc.ZSTD, rle_frame(size, size), too_large),
            ("zstd RLE frame declaring 1,000 bytes", tbc.ZSTD, rle_frame(size, 1000), corrupt),
            ("zstd RLE frame declaring the limit", tbc.ZSTD, rle_frame(size, shown), corrupt),
            ("gzip zeros", tbc.GZIP, zeros[tbc.GZIP], too_large),
            ("zlib zeros", tbc.ZLIB, zeros[tbc.ZLIB], too_large),
            # Snappy's header declares 4 GiB - 1; the body does not matter.
            ("snappy header of 4 GiB - 1", tbc.SNAPPY, b"\xff\xff\xff\xff\x0f" + b"\x00" * 64, too_large),
        ]
        most = 0
        for what, codec, bomb, fragments in bombs:
            what = "%s of %d bytes at limit %d" % (what, len(bomb), shown)
            options = {} if limit is None else {"max_decompressed_bytes": limit}
            batch = Batch(lib.stand_in(lib.compressed(codec, bomb)), lib.Catalog, **options)
            calls = [batch.add("countProducts")]
            with Produced() as produced:
                if fragments == too_large:
                    err = refused_as_too_large(what, batch.execute, codec, shown)
                else:
                    err = raises(what, batch.execute, ValueError, "(codec %d)" % codec, *fragments)
            produced.expect_within(what, shown + OVERSHOOT[codec])
            expect_same_error(what, calls, err)
            if codec == tbc.ZSTD:
                most = max(most, produced.total - shown)
        summary.append("zstd_overshoot_at_%d=%d" % (shown, most))
    return "codecs=zstd,snappy,gzip,zlib exact=%d bytes bombs=refused %s" % (len(inner), " ".join(summary))


def check_corrupt(lib):
    import snappy
    import zstandard
    inner = lib.inner(3)
    z = zstandard.ZstdCompressor().compress(inner)
    stream = zstandard.ZstdCompressor().compressobj()
    z_stream = stream.compress(inner) + stream.flush()
    gz, zl, sn = gzip.compress(inner), zlib.compress(inner), snappy.compress(inner)
    not_a_response = b"\x0f\x00\x01\x0c\x00\x00\x00\x05"  # a list of 5 Responses, then nothing
    cases = [  # (what, codec, payload, fragments)
        ("zstd cut short", tbc.ZSTD, z[:-4], ["truncated"]),
        ("zstd with trailing garbage", tbc.ZSTD, z + b"garbage", ["7 bytes follow"]),
        ("zstd of another format", tbc.ZSTD, b"hello world", []),
        ("gzip cut short", tbc.GZIP, gz[:-4], ["truncated"]),
        ("gzip with trailing garbage", tbc.GZIP, gz + b"garbage", ["7 bytes follow"]),
        ("zlib cut short", tbc.ZLIB, zl[:-4], ["truncated"]),
        ("zlib with trailing garbage", tbc.ZLIB, zl + b"garbage", ["7 bytes follow"]),
        ("snappy cut short", tbc.SNAPPY, sn[:-4], []),
        ("snappy with trailing garbage", tbc.SNAPPY, sn + b"garbage", []),
        ("snappy length over 32 bits", tbc.SNAPPY, b"\xff\xff\xff\xff\x7f" + sn, ["ff ff ff ff 7f", "32 bits"]),
        ("snappy length of 2^32", tbc.SNAPPY, b"\x80\x80\x80\x80\x10" + sn, ["80 80 80 80 10", "32 bits"]),
        ("zstd followed by a second frame", tbc.ZSTD, z + z, ["%d bytes follow" % len(z)]),
        ("zstd without content size, with trailing garbage", tbc.ZSTD, z_stream + b"garbage", ["7 bytes follow"]),
        ("zstd without content size, cut short", tbc.ZSTD, z_stream[:-4], ["truncated"]),
        ("zstd after a skippable frame", tbc.ZSTD, b"\x50\x2a\x4d\x18\x03\x00\x00\x00abc" + z, ["not a zstd frame"]),
        ("gzip followed by a second member", tbc.GZIP, gz + gz, ["%d bytes follow" % len(gz)]),
        ("zlib followed by a second stream", tbc.ZLIB, zl + zl, ["%d bytes follow" % len(zl)]),
        ("zstd absent", tbc.ZSTD, None, ["absent"]),
        ("zlib empty", tbc.ZLIB, b"", ["empty"]),
        ("zlib of bytes that are not a BatchResponse", tbc.ZLIB, zlib.compress(not_a_response), ["decode"]),
    ]
    for what, codec, payload, fragments in cases:
        batch = Batch(lib.stand_in(lib.compressed(codec, payload)), lib.Catalog)
        calls = [batch.add("countProducts") for _ in range(3)]
        prefix = "thriftbatch: compressedResponses (codec %d) is corrupt: " % codec
        err = raises(what, batch.execute, ValueError, prefix, *fragments)
        expect_same_error(what, calls, err)
    # A codec not accepted (S2) and compressed responses beside plain ones.
    for what, respond, fragments in [
            ("codec S2, not accepted", lib.compressed(tbc.S2, b"\x03abc"), ["codec 3", "not accept"]),
            ("responses and compressedResponses both set",
             lib.compressed(tbc.ZLIB, zl, responses=[lib.response(id=0, reply=lib.count_reply(1))]), ["both"])]:
        batch = Batch(lib.stand_in(respond), lib.Catalog)
        calls = [batch.add("countProducts")]
        err = raises(what, batch.execute, ValueError, *fragments)
        expect_same_error(what, calls, err)
    return "cases=%d" % (len(cases) + 2)


def check_failure(lib):
    client, close = lib.connect()
    # timeoutMillis -1 is refused as a whole: INVALID_REQUEST (6), nothing runs.
    batch = Batch(client, lib.Catalog, timeout_millis=-1)
    calls = [batch.add("getProduct", id=1), batch.add("countProducts")]
    err = raises("timeoutMillis -1", batch.execute, lib.wire.BatchError, "timeoutMillis")
    if err.code != 6:
        fail("BatchError code %r, want 6 INVALID_REQUEST" % err.code)
    expect_same_error("after a BatchError", calls, err)
    # The batch is empty again and the connection still serves.
    batch = Batch(client, lib.Catalog)
    again = batch.add("getProduct", id=1)
    if batch.execute() != [again]:
        fail("the refused calls stayed in the batch")
    kind, got = outcome(again)
    if kind != "value" or got.id != 1:
        fail("getProduct(1) after the BatchError: %s %r" % (kind, got))
    # A transport error: the connection is closed under the batch.
    close()
    calls = [batch.add("countProducts"), batch.add("getProduct", id=2)]
    try:
        batch.execute()
    except Exception as e:
        err = e
    else:
        fail("execute() on a closed connection did not raise")
    expect_same_error("after a transport error (%s)" % type(err).__name__, calls, err)
    return "batch_error=reraised transport_error=reraised"


def check_constants(lib):
    want = {"UNKNOWN": 0, "UNKNOWN_METHOD": 1, "INVALID_MESSAGE_TYPE": 2, "WRONG_METHOD_NAME": 3,
            "BAD_SEQUENCE_ID": 4, "MISSING_RESULT": 5, "INTERNAL_ERROR": 6, "PROTOCOL_ERROR": 7,
            "INVALID_TRANSFORM": 8, "INVALID_PROTOCOL": 9, "UNSUPPORTED_CLIENT_TYPE": 10,
            "CALL_DEADLINE_EXCEEDED": 100, "CALL_OVERLOADED": 101, "CALL_NOT_ALLOWED": 102,
            "CALL_CANCELED": 103}
    for name, value in want.items():
        if getattr(CallError, name, None) != value:
            fail("CallError.%s is %r, want %d (docs/SPEC.md 5.2)" % (name, getattr(CallError, name, None), value))
    # The names before SPEC 5.2's, kept as deprecated aliases.
    aliases = {"DEADLINE_EXCEEDED": 100, "OVERLOADED": 101, "NOT_ALLOWED": 102, "CANCELED": 103}
    for name, value in aliases.items():
        if getattr(CallError, name, None) != value:
            fail("CallError.%s (deprecated alias) is %r, want %d" % (name, getattr(CallError, name, None), value))
    if lib.apache:
        from thrift.Thrift import TApplicationException
        from thriftbatch.batch import constants
    else:
        from thriftpy.thrift import TApplicationException
        constants = lib.wire
    for name, value in want.items():
        # batch.thrift defines every CALL_* code, and every library's
        # TApplicationException the codes 0 to 7: a missing one fails.
        # Codes 8 to 10 are checked where the library has them (ThriftPy's
        # has not).
        in_idl = name.startswith("CALL_")
        for where, source in (("TApplicationException", TApplicationException), ("batch.thrift", constants)):
            if not hasattr(source, name):
                if in_idl if where == "batch.thrift" else value <= 7:
                    fail("%s has no %s (CallError.%s is %d)" % (where, name, name, value))
                continue
            if getattr(source, name) != value:
                fail("%s.%s is %r, CallError.%s %d" % (where, name, getattr(source, name), name, value))
    return "constants=%d deprecated_aliases=%d" % (len(want), len(aliases))


def check_header(lib):
    if not lib.apache:
        fail("--check header needs --library apache")
    from thrift.protocol.TBinaryProtocol import TBinaryProtocolFactory
    from thrift.protocol.THeaderProtocol import THeaderProtocol
    from thrift.transport import TSocket
    from thrift.transport.THeaderTransport import THeaderClientType, THeaderSubprotocolID
    sock = TSocket.TSocket(lib.args.host, lib.args.port)
    sock.setTimeout(20000)
    proto = THeaderProtocol(sock, [THeaderClientType.HEADERS], THeaderSubprotocolID.BINARY)
    sock.open()
    client = lib._service.Client(proto)
    raises("Batch on THeaderProtocol without protocol_factory", lambda: Batch(client, lib.Catalog),
           ValueError, "THeaderProtocol", "protocol_factory")
    batch = Batch(client, lib.Catalog, protocol_factory=TBinaryProtocolFactory())
    p = batch.add("getProduct", id=7)
    batch.execute()
    kind, got = outcome(p)
    if kind != "value" or got.id != 7:
        fail("getProduct(7) over THeader: %s %r" % (kind, got))
    sock.close()
    return "refused_without_factory works_with_factory"


def main():
    args = parse_args(__doc__.splitlines()[0],
                      library=("which Python Thrift library", ["apache", "thriftpy"], "apache"),
                      gen=("Apache: directory of the code thrift --gen py generated", None, None),
                      check=("the fault to check", CHECKS, None))
    if not args.check:
        fail("--check is required: one of %s" % ", ".join(CHECKS))
    lib = Library(args)
    detail = globals()["check_" + args.check](lib)
    print("PASS helper-faults library=%s check=%s %s" % (args.library, args.check, detail))


if __name__ == "__main__":
    main()
