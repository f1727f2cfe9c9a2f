// interop_derived.thrift: a service that inherits ping and poke from
// interop_base.thrift's Base, for helper_faults.py.

include "interop_base.thrift"

namespace py interop_derived

service Derived extends interop_base.Base {
  i32 pong(1: i32 y),
}
