"""executeBatch from ThriftPy, the way a ThriftPy user writes it: load both
IDLs at run time, build BatchRequest(requests=[Request(...)]), call
client.executeBatch and iterate response.responses in order.

Stack: TSocket -> TBufferedTransport or TFramedTransport (ThriftPy's
TBufferedTransportFactory / TFramedTransportFactory) -> TBinaryProtocol.
ThriftPy's compact protocol is not used: it is broken on Python 3.11.

usage: thriftpy_batch.py HOST:PORT --idl-dir DIR --transport buffered|framed
                         [--products N] [--calls N] [--codec C]
"""


from interop_common import (CODEC_NAMES, CODECS, ROOT, check_codec, check_responses,
                            decompress, fail, parse_args, plain, plan, thriftpy_client,
                            thriftpy_idls)


def main():
    args = parse_args(__doc__.splitlines()[0],
                      transport=("ThriftPy transport factory", ["buffered", "framed"], "buffered"),
                      **{"idl-dir": ("repository root holding idl/ and example_server/", None, None)})
    from thriftpy.protocol import TBinaryProtocol
    from thriftpy.thrift import TClient
    from thriftpy.transport import TMemoryBuffer

    batch_thrift, catalog_thrift = thriftpy_idls(args.idl_dir or ROOT)
    Catalog = catalog_thrift.Catalog
    client = thriftpy_client(batch_thrift.BatchService, args.host, args.port, args.transport == "framed")

    def encode(struct):
        buf = TMemoryBuffer()
        struct.write(TBinaryProtocol(buf))
        return buf.getvalue()

    def decode(struct, data):
        if isinstance(data, str):  # a binary field that happened to be valid UTF-8
            data = data.encode("utf-8")
        struct.read(TBinaryProtocol(TMemoryBuffer(data)))
        return struct

    entries = plan(args.products, args.calls)
    requests = []
    for i, (method, arg, _) in enumerate(entries):
        if method == "getProduct":
            arguments = encode(Catalog.getProduct_args(id=arg))
        elif method == "countProducts":
            arguments = encode(Catalog.countProducts_args())
        else:
            arguments = b"\x00"
        requests.append(batch_thrift.Request(method=method, arguments=arguments, id=1000 + i))
    request = batch_thrift.BatchRequest(requests=requests)
    if args.codec != "none":
        request.acceptCodecs = [CODECS[args.codec]]

    response = client.executeBatch(request)
    check_codec(args, response, len(entries))
    responses = response.responses
    if response.codec:
        inner = decode(batch_thrift.BatchResponse(), decompress(response.codec, response.compressedResponses))
        responses = inner.responses
    tally, batched = check_responses(entries, responses, args.products, Catalog, decode)

    # The same calls sent one by one on the same connection answer the same.
    catalog_client = TClient(Catalog, client._iprot, client._oprot)
    for i, (method, arg, _) in enumerate(entries[:6]):
        if method != "getProduct":
            continue
        try:
            single = Catalog.getProduct_result(success=catalog_client.getProduct(arg))
        except catalog_thrift.NotFound as e:
            single = Catalog.getProduct_result(notFound=e)
        if plain(single) != plain(batched[arg]):
            fail("call %d getProduct(%d): batched %r, alone %r" % (i, arg, batched[arg], single))
    if catalog_client.countProducts() != args.products:
        fail("countProducts() alone did not answer %d" % args.products)
    client.close()
    print("PASS thriftpy transport=%s protocol=binary calls=%d codec=%s %s" % (
        args.transport, len(entries), CODEC_NAMES[response.codec or 0], tally.summary()))


if __name__ == "__main__":
    main()
