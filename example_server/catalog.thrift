// catalog.thrift: the product catalog that example_server serves behind the
// thriftbatch wrapper.

namespace go catalog
namespace py catalog

struct Product {
  1: i64 id,
  2: string name,
  3: string description,
  4: i64 priceCents,
  5: string currency,
  6: list<string> tags,
  7: i32 stock,
}

exception NotFound {
  1: i64 id,
  2: string reason,
}

service Catalog {
  // getProduct returns product id, or raises NotFound.
  Product getProduct(1: i64 id) throws (1: NotFound notFound),
  // getProducts is the hand-written bulk method: the products among ids that
  // exist, in the order asked.
  list<Product> getProducts(1: list<i64> ids),
  // putProduct adds or replaces a product. A missing product, or one whose
  // id is 0 or less (ids start at 1), is refused with a
  // TApplicationException (INTERNAL_ERROR) whose message says why.
  void putProduct(1: Product product),
  // search returns, in id order, up to limit products whose name contains
  // text, ignoring case. The limit is capped at 1000 (store.MaxSearchLimit);
  // a limit of 0 or less returns none.
  list<Product> search(1: string text, 2: i32 limit),
  // countProducts returns how many products exist.
  i64 countProducts(),
  // recordView counts a view of product id; oneway.
  oneway void recordView(1: i64 id),
}
