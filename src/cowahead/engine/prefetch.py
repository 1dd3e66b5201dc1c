"""A software prefetch for numba: ``prefetch(array, i, j)`` hints that ``array[i, j]`` is written soon.

The replay loop is bound by cache misses when faults come at random pages
(a PTE, then the frame it maps); asking for them a few events ahead lets
those misses overlap instead of following one another. A prefetch is only a
hint: a stale or wrong index costs nothing but the hint.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, array, i, j):
    """llvm.prefetch (write, keep in all cache levels) of ``&array[i, j]``; a 2-D array."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        ary = context.make_array(array_type)(context, builder, args[0])
        index = [context.cast(builder, args[1], signature.args[1], types.intp),
                 context.cast(builder, args[2], signature.args[2], types.intp)]
        ptr = cgutils.get_item_pointer2(context, builder, ary.data, cgutils.unpack_tuple(builder, ary.shape),
                                        cgutils.unpack_tuple(builder, ary.strides), array_type.layout, index)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, i, j), codegen
