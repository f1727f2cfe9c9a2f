"""The helper library clients/python/thriftbatch_client.py, used with Apache
Thrift for Python (generated code) or with ThriftPy (thriftpy.load):

    batch = Batch(batch_client, Catalog)
    p = batch.add("getProduct", id=7)
    batch.execute()
    p.result()

--accept default offers every codec whose module imports (zstd first), so a
batch of 300 calls must come back zstd-compressed; --accept none offers none.

usage: helper_batch.py HOST:PORT --library apache|thriftpy
           [--gen DIR --stack STACK] [--transport buffered|framed]
           [--products N] [--calls N] [--accept default|none]
"""

import os
import sys

from interop_common import (CODEC_NAMES, ROOT, UNKNOWN_NAME, Tally, check, fail, parse_args, plan,
                            thriftpy_client, thriftpy_idls)

sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

import thriftbatch_client  # noqa: E402
from thriftbatch_client import Batch, CallError  # noqa: E402


class NewerService:
    """The service as a client built from a newer IDL sees it: one more
    method, UNKNOWN_NAME (shaped like countProducts), that the server does
    not have."""

    def __init__(self, service):
        self._service = service

    def __getattr__(self, name):
        if name.startswith(UNKNOWN_NAME + "_"):
            name = "countProducts" + name[len(UNKNOWN_NAME):]
        return getattr(self._service, name)


def apache_clients(args):
    """Return (batch client, Catalog service module, single-call client, close)."""
    sys.path.insert(0, args.gen)
    from apache_batch import open_stack
    from catalog import Catalog
    from thriftbatch.batch import BatchService
    trans, proto, _ = open_stack(args.stack, args.host, args.port)
    return BatchService.Client(proto), Catalog, Catalog.Client(proto), trans.close


def thriftpy_clients(args):
    """Return (batch client, Catalog service class, single-call client, close)."""
    from thriftpy.thrift import TClient
    batch_thrift, catalog_thrift = thriftpy_idls()
    client = thriftpy_client(batch_thrift.BatchService, args.host, args.port, args.transport == "framed")
    single = TClient(catalog_thrift.Catalog, client._iprot, client._oprot)
    return client, catalog_thrift.Catalog, single, client.close


def main():
    args = parse_args(__doc__.splitlines()[0],
                      library=("which Python Thrift library", ["apache", "thriftpy"], "apache"),
                      gen=("Apache: directory of the code thrift --gen py generated", None, None),
                      stack=("Apache: transport and protocol (see apache_batch.py)", None, "buffered-binary"),
                      transport=("ThriftPy: transport factory", ["buffered", "framed"], "buffered"),
                      accept=("codecs to offer", ["default", "none"], "default"))
    if args.library == "apache":
        if not args.gen:
            fail("--gen DIR is required with --library apache")
        client, service, single, close = apache_clients(args)
        stack = args.stack
    else:
        client, service, single, close = thriftpy_clients(args)
        stack = args.transport + "-binary"

    # A method the service does not have is refused before anything is sent.
    try:
        Batch(client, service).add(UNKNOWN_NAME)
        fail("add(%r) did not raise AttributeError" % UNKNOWN_NAME)
    except AttributeError as e:
        if UNKNOWN_NAME not in str(e):
            fail("add(%r): AttributeError %r does not name the method" % (UNKNOWN_NAME, str(e)))

    # The batch's service knows UNKNOWN_NAME, the server does not: it answers
    # that call with CallError UNKNOWN_METHOD.
    batch = Batch(client, NewerService(service), accept=[] if args.accept == "none" else None)
    entries = plan(args.products, args.calls)
    calls = [batch.add(method) if arg is None else batch.add(method, arg) for method, arg, _ in entries]
    try:
        calls[0].result()
        fail("result() before execute() did not raise")
    except RuntimeError:
        pass
    batch.execute()

    # The server compresses with the first codec offered once the responses
    # reach its threshold (1024 bytes; 300 products are well above it).
    first = thriftbatch_client.accepted_codecs()[0] if args.accept == "default" else 0
    allowed = {first} if len(entries) >= 300 else {0, first}
    if batch.codec not in allowed:
        fail("response codec %d, want one of %r" % (batch.codec, sorted(allowed)))
    codec = batch.codec

    tally = Tally()
    for i, (entry, call) in enumerate(zip(entries, calls)):
        try:
            value = call.result()
        except CallError as e:
            check(i, entry, tally, args.products, call_error=(e.type, e.message))
        except Exception as e:  # the declared exception, NotFound
            check(i, entry, tally, args.products, exc=e)
        else:
            check(i, entry, tally, args.products, value=value)

    # The batch is reusable, and answers like the same call sent alone.
    again = batch.add("getProduct", id=args.products)
    batch.execute()
    alone = single.getProduct(args.products)
    if vars(again.result()) != vars(alone):
        fail("reused batch: getProduct(%d) batched %r, alone %r" % (args.products, again.result(), alone))
    close()
    print("PASS helper library=%s stack=%s calls=%d codec=%s %s" % (
        args.library, stack, len(entries), CODEC_NAMES[codec], tally.summary()))


if __name__ == "__main__":
    main()
