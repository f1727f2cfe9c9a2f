"""What every interop script shares: the command line, the batch's plan, the
check of each outcome against its own request, and how to fail.

The scripts run with /usr/bin/python3 (Debian's python3-thrift,
python3-thriftpy, python3-zstandard and python3-snappy are visible to it
only), against example_server started by interop_test.go. They exit 1 with
an "interop FAIL:" line on stderr on any mismatch, and print one line
starting with "PASS " on success.
"""

import argparse
import gzip
import os
import sys
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

# Codec values of idl/batch.thrift.
CODECS = {"none": 0, "zstd": 1, "snappy": 2, "gzip": 4, "zlib": 5}
CODEC_NAMES = {v: k for k, v in CODECS.items()}
UNKNOWN_METHOD = 1  # TApplicationException.UNKNOWN_METHOD, as CallError.type
UNKNOWN_NAME = "noSuchMethod"


def fail(message):
    """Report a mismatch on stderr and exit 1."""
    sys.stderr.write("interop FAIL: %s\n" % message)
    sys.stdout.flush()
    sys.exit(1)


def parse_args(description, **extra):
    """Parse HOST:PORT and the common options; extra: name -> (help, choices, default)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("address", help="HOST:PORT of a running example_server")
    p.add_argument("--products", type=int, default=1000, help="ids 1..N exist on the server")
    p.add_argument("--calls", type=int, default=20, help="getProduct calls for existing ids")
    p.add_argument("--codec", choices=sorted(CODECS), default="none",
                   help="the one codec to put in acceptCodecs; the server must use it")
    for name, (help_, choices, default) in extra.items():
        p.add_argument("--" + name, choices=choices, default=default, help=help_)
    args = p.parse_args()
    host, _, port = args.address.rpartition(":")
    if not host or not port.isdigit():
        p.error("address must be HOST:PORT, got %r" % args.address)
    args.host, args.port = host, int(port)
    return args


def thriftpy_idls(root=ROOT):
    """ThriftPy's modules of idl/batch.thrift and example_server/catalog.thrift
    under root, loaded at run time as a ThriftPy user does."""
    import thriftpy
    batch_thrift = thriftpy.load(os.path.join(root, "idl", "batch.thrift"), module_name="batch_thrift")
    catalog_thrift = thriftpy.load(os.path.join(root, "example_server", "catalog.thrift"),
                                   module_name="catalog_thrift")
    return batch_thrift, catalog_thrift


def thriftpy_client(service, host, port, framed=False):
    """A ThriftPy client of service over TBinaryProtocol on a buffered (or
    framed) TSocket transport, with a 20 s timeout."""
    from thriftpy.protocol import TBinaryProtocolFactory
    from thriftpy.rpc import make_client
    from thriftpy.transport import TBufferedTransportFactory, TFramedTransportFactory
    factory = TFramedTransportFactory() if framed else TBufferedTransportFactory()
    return make_client(service, host, port, proto_factory=TBinaryProtocolFactory(),
                       trans_factory=factory, timeout=20000)


def plan(products, calls):
    """The calls of the batch, as (method, id argument or None, expectation).

    Existing ids (spread over 1..products, both ends included), two missing
    ids (NotFound), an unknown method (CallError UNKNOWN_METHOD) and
    countProducts (returns products), interleaved so that the answers to
    neighbours differ.
    """
    ids = [1, products] + [1 + (i * 7919) % products for i in range(max(calls - 2, 0))]
    entries = [("getProduct", i, "product") for i in ids[:max(calls, 0)]]
    extra = [("getProduct", products + 1, "notfound"),
             (UNKNOWN_NAME, None, "unknown"),
             ("countProducts", None, "count"),
             ("getProduct", 10 ** 12, "notfound")]
    for k, e in enumerate(extra):
        entries.insert(min(1 + 3 * k, len(entries)), e)
    return entries


class Tally:
    """Counts checked outcomes for the summary line."""

    def __init__(self):
        self.products = self.notfound = self.unknown = self.count = 0

    def summary(self):
        return "products=%d notfound=%d unknown_method=%d count=%d" % (
            self.products, self.notfound, self.unknown, self.count)


def check_responses(entries, responses, products, service, decode):
    """Check every response against its own request, in order.

    service is the Catalog service (its getProduct_result and
    countProducts_result classes decode the replies) and decode(obj, data)
    reads a bare struct with the connection's protocol. Returns the tally and,
    for each id asked, its first decoded result (to compare with the same
    call sent alone).
    """
    if len(responses) != len(entries):
        fail("%d responses for %d requests" % (len(responses), len(entries)))
    tally = Tally()
    batched = {}
    for i, (entry, r) in enumerate(zip(entries, responses)):
        if r.id != 1000 + i:
            fail("response %d carries id %r, want %d" % (i, r.id, 1000 + i))
        if (r.reply is None) == (r.error is None):
            fail("response %d: exactly one of reply and error must be set: %r" % (i, r))
        if r.error is not None:
            check(i, entry, tally, products, call_error=(r.error.type, r.error.message))
            continue
        result_cls = service.getProduct_result if entry[0] == "getProduct" else service.countProducts_result
        result = decode(result_cls(), r.reply)
        check(i, entry, tally, products, value=result.success, exc=getattr(result, "notFound", None))
        batched.setdefault(entry[1], result)
    return tally, batched


def check(index, entry, tally, products, value=None, exc=None, call_error=None):
    """Check one call's outcome against its own request.

    value: the returned value; exc: the declared exception raised or decoded;
    call_error: (type, message) of a Response.error. Exactly one is set.
    """
    method, arg, expect = entry
    where = "call %d %s(%s)" % (index, method, "" if arg is None else arg)
    if expect == "unknown":
        if call_error is None:
            fail("%s: want CallError UNKNOWN_METHOD, got value=%r exc=%r" % (where, value, exc))
        if call_error[0] != UNKNOWN_METHOD or UNKNOWN_NAME not in call_error[1]:
            fail("%s: want CallError type 1 naming %s, got %r" % (where, UNKNOWN_NAME, call_error))
        tally.unknown += 1
        return
    if call_error is not None:
        fail("%s: unexpected CallError %r" % (where, call_error))
    if expect == "product":
        if exc is not None or value is None:
            fail("%s: want Product %d, got exc=%r value=%r" % (where, arg, exc, value))
        if value.id != arg:
            fail("%s: got the Product of id %r" % (where, value.id))
        if not isinstance(value.name, str) or not value.name:
            fail("%s: Product %d has no name: %r" % (where, arg, value))
        tally.products += 1
    elif expect == "notfound":
        if type(exc).__name__ != "NotFound":
            fail("%s: want NotFound, got exc=%r value=%r" % (where, exc, value))
        if exc.id != arg:
            fail("%s: NotFound names id %r" % (where, exc.id))
        tally.notfound += 1
    elif expect == "count":
        if exc is not None or value != products:
            fail("%s: want %d, got exc=%r value=%r" % (where, products, exc, value))
        tally.count += 1


def plain(value):
    """value as nested dicts and lists, for comparing structs and exceptions
    (ThriftPy's exceptions compare by identity)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "thrift_spec"):
        return {k: plain(v) for k, v in vars(value).items() if not k.startswith("_")}
    return value


def decompress(codec, data):
    """Decompress compressedResponses written with codec (an int)."""
    if isinstance(data, str):  # ThriftPy decodes valid UTF-8 binaries as str
        data = data.encode("utf-8")
    if codec == CODECS["zstd"]:
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if codec == CODECS["snappy"]:
        import snappy
        return snappy.uncompress(data)
    if codec == CODECS["gzip"]:
        return gzip.decompress(data)
    if codec == CODECS["zlib"]:
        return zlib.decompress(data)
    fail("unexpected codec %r" % codec)


def check_codec(args, response, calls):
    """Check that the server used the codec asked for, and only then."""
    want = CODECS[args.codec]
    got = response.codec or 0
    if got != want:
        fail("asked acceptCodecs=[%s] for %d calls, the response has codec %r" % (args.codec, calls, got))
    if want and response.responses:
        fail("codec %s set but responses also carries %d entries" % (args.codec, len(response.responses)))
    if want and not response.compressedResponses:
        fail("codec %s set but compressedResponses is empty" % args.codec)
