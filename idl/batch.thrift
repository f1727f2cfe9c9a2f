// batch.thrift: the thriftbatch wire contract.
//
// A server wrapped by thriftbatch answers executeBatch on the same port as its
// own methods. docs/SPEC.md describes every field precisely enough to write a
// client in any language from it alone.

namespace go batch
namespace py thriftbatch.batch

// Codec names a compression format for compressedRequests and
// compressedResponses.
enum Codec {
  NONE = 0,
  ZSTD = 1,
  SNAPPY = 2,  // Snappy block format, no framing.
  S2 = 3,      // S2 block format, no framing.
  GZIP = 4,    // RFC 1952.
  ZLIB = 5,    // RFC 1950.
}

// BatchErrorCode says why a batch as a whole was refused.
enum BatchErrorCode {
  UNKNOWN = 0,
  TOO_MANY_CALLS = 1,          // more requests than the server allows in one batch
  TOO_MANY_BYTES = 2,          // request or decompressed request larger than allowed
  UNSUPPORTED_CODEC = 3,       // requestCodec the server does not know
  CORRUPT_PAYLOAD = 4,         // compressedRequests does not decompress or decode
  NESTED_BATCH = 5,            // executeBatch named as a call inside a batch
  INVALID_REQUEST = 6,         // fields that contradict each other
  RESPONSE_TOO_LARGE = 7,      // the responses would exceed the response limit
  SHUTTING_DOWN = 8,           // the server is closing and takes no new batches
}

// CallError.type codes of thriftbatch's own, for what TApplicationException
// has no code for. Codes 0..10 are TApplicationException's.
const i32 CALL_DEADLINE_EXCEEDED = 100  // the batch deadline passed before the call finished
const i32 CALL_OVERLOADED = 101         // no worker was free and the server's policy is to refuse
const i32 CALL_NOT_ALLOWED = 102        // the server does not allow this method, or this call, in a batch
const i32 CALL_CANCELED = 103           // the batch was canceled (client gone, server shutting down)

// Request is one call of a batch.
struct Request {
  // The method name as the wrapped processor knows it: "getProduct", or
  // "Catalog:getProduct" under a TMultiplexedProcessor.
  1: string method,
  // The method's args struct, serialized with the protocol of the connection
  // the batch arrives on, without a message header.
  2: binary arguments,
  // Echoed back unchanged in the matching Response.
  3: optional i32 id,
}

// CallError reports why one call of a batch produced no reply. type holds a
// TApplicationException code (1..10) or a thriftbatch code (100 and up), see
// docs/SPEC.md.
struct CallError {
  1: i32 type,
  2: string message,
}

// Response answers one Request. Exactly one of reply and error is set.
struct Response {
  1: optional i32 id,
  // The method's result struct, exactly as a REPLY message carries it after
  // the message header.
  2: optional binary reply,
  3: optional CallError error,
}

struct BatchRequest {
  1: list<Request> requests,
  2: optional Codec requestCodec,
  // A serialized BatchRequest holding only requests, compressed with
  // requestCodec. Set instead of requests.
  3: optional binary compressedRequests,
  // Codecs the client reads, in its order of preference.
  4: optional list<Codec> acceptCodecs,
  // A deadline for the whole batch, in milliseconds; 0 or absent means the
  // server's default.
  5: optional i32 timeoutMillis,
  // Run the calls one at a time, in request order.
  6: optional bool sequential,
}

struct BatchResponse {
  // responses[i] answers requests[i].
  1: list<Response> responses,
  2: optional Codec codec,
  // A serialized BatchResponse holding only responses, compressed with codec.
  // Set instead of responses.
  3: optional binary compressedResponses,
}

// BatchError reports a failure of the batch as a whole. No call ran, except
// for RESPONSE_TOO_LARGE, which is known only once the calls have answered.
exception BatchError {
  1: BatchErrorCode code,
  2: string message,
}

service BatchService {
  BatchResponse executeBatch(1: BatchRequest request) throws (1: BatchError error),
}
