// testsvc.thrift: the service the end-to-end tests batch against.

namespace go testsvc

exception DivideByZero {
  1: string why,
}

struct Item {
  1: i64 key,
  2: string label,
  3: list<string> tags,
}

service Test {
  // echo returns text unchanged.
  string echo(1: string text),
  // divide returns a / b, or raises DivideByZero.
  i32 divide(1: i32 a, 2: i32 b) throws (1: DivideByZero oops),
  // sleepy sleeps for millis milliseconds (or until its context ends) and returns tag.
  i64 sleepy(1: i32 millis, 2: i64 tag),
  // boom panics.
  void boom(),
  // failing returns an undeclared error.
  void failing(),
  // note records text; oneway.
  oneway void note(1: string text),
  // whereAmI returns the batch call index from the context, or -1.
  i32 whereAmI(),
  // items returns count deterministic items, for large responses.
  list<Item> items(1: i32 count),
  // nested sends a batch of echo calls to the server at addr and returns how many answered.
  i32 nested(1: string addr, 2: i32 calls),
  // secret is refused by the authorization middleware of the tests.
  string secret(),
}
