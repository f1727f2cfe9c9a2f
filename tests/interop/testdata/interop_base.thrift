// interop_base.thrift: the base service of interop_derived.thrift, for the
// inheritance check of helper_faults.py (a method reached through
// `extends` has its _args and _result classes in this IDL's generated
// module only).

namespace py interop_base

service Base {
  i32 ping(1: i32 x),
  oneway void poke(1: i32 x),
}
