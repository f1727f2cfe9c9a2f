"""Byte-level check of Apache Thrift for Python's zlib stack against Go's,
without a server: TSocket is replaced by a TMemoryBuffer, everything above
it is the stack the Python client uses,

    TMemoryBuffer -> TFramedTransport -> TZlibTransport -> TCompactProtocol

so the zlib stream runs inside the frames (Go: thrift.NewTZlibTransport over
thrift.NewTFramedTransport).

  zlib_layering.py --gen DIR write       prints "hex=<bytes>" of two
                                         executeBatch CALLs, then PASS
  zlib_layering.py --gen DIR read HEX    decodes two executeBatch REPLYs
                                         written by Go, checks them, PASS
"""

import argparse
import sys


def stack(data=None):
    from thrift.protocol.TCompactProtocol import TCompactProtocol
    from thrift.transport.TTransport import TFramedTransport, TMemoryBuffer
    from thrift.transport.TZlibTransport import TZlibTransport
    mem = TMemoryBuffer(data)
    zlib_trans = TZlibTransport(TFramedTransport(mem))
    return mem, zlib_trans, TCompactProtocol(zlib_trans)


def fail(message):
    sys.stderr.write("interop FAIL: %s\n" % message)
    sys.exit(1)


def write():
    from thrift.Thrift import TMessageType
    from thrift.transport.TTransport import TMemoryBuffer
    from thrift.protocol.TCompactProtocol import TCompactProtocol
    from catalog import Catalog
    from thriftbatch.batch import BatchService
    from thriftbatch.batch.ttypes import BatchRequest, Codec, Request

    mem, trans, proto = stack()
    for seqid, product_id in ((1, 7), (2, 8)):
        buf = TMemoryBuffer()
        Catalog.getProduct_args(id=product_id).write(TCompactProtocol(buf))
        request = BatchRequest(requests=[Request(method="getProduct", arguments=buf.getvalue(), id=seqid)],
                               acceptCodecs=[Codec.ZLIB])
        proto.writeMessageBegin("executeBatch", TMessageType.CALL, seqid)
        BatchService.executeBatch_args(request=request).write(proto)
        proto.writeMessageEnd()
        trans.flush()  # one frame per message
    print("hex=" + mem.getvalue().hex())
    print("PASS zlib-layering wrote 2 executeBatch calls, %d bytes" % len(mem.getvalue()))


def read(hex_data):
    from thrift.Thrift import TMessageType
    from catalog import Catalog
    from thriftbatch.batch import BatchService
    from thrift.transport.TTransport import TMemoryBuffer
    from thrift.protocol.TCompactProtocol import TCompactProtocol

    _, _, proto = stack(bytes.fromhex(hex_data))
    want = {1: ("success", 7, "Widget"), 2: ("notFound", 8, "no product 8")}
    for seqid in (1, 2):
        name, mtype, rseqid = proto.readMessageBegin()
        if (name, mtype, rseqid) != ("executeBatch", TMessageType.REPLY, seqid):
            fail("message %d: header %r" % (seqid, (name, mtype, rseqid)))
        result = BatchService.executeBatch_result()
        result.read(proto)
        proto.readMessageEnd()
        responses = result.success.responses
        if len(responses) != 1 or responses[0].id != seqid:
            fail("message %d: responses %r" % (seqid, responses))
        reply = Catalog.getProduct_result()
        reply.read(TCompactProtocol(TMemoryBuffer(responses[0].reply)))
        field, product_id, text = want[seqid]
        got = getattr(reply, field)
        if got is None or got.id != product_id or text not in (getattr(got, "name", None), getattr(got, "reason", None)):
            fail("message %d: reply %r" % (seqid, reply))
    print("PASS zlib-layering read 2 executeBatch replies written by Go")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gen", required=True, help="directory of the code thrift --gen py generated")
    p.add_argument("mode", choices=["write", "read"])
    p.add_argument("hex", nargs="?")
    args = p.parse_args()
    sys.path.insert(0, args.gen)
    if args.mode == "write":
        write()
    else:
        read(args.hex or fail("read needs HEX"))


if __name__ == "__main__":
    main()
