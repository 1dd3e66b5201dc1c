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


def _prefetch_codegen(context, builder, signature, args):
    """llvm.prefetch (write, keep in all cache levels) of the address of ``args[0][args[1:]]``."""
    array_type = signature.args[0]
    ary = context.make_array(array_type)(context, builder, args[0])
    index = [context.cast(builder, a, t, types.intp) for a, t in zip(args[1:], signature.args[1:])]
    ptr = cgutils.get_item_pointer2(context, builder, ary.data, cgutils.unpack_tuple(builder, ary.shape),
                                    cgutils.unpack_tuple(builder, ary.strides), array_type.layout, index)
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                        "llvm.prefetch.p0")
    builder.call(fn, [builder.bitcast(ptr, i8p), i32(1), i32(3), i32(1)])
    return context.get_dummy_value()


@intrinsic
def prefetch(typingctx, array, i, j):
    """Prefetch ``&array[i, j]`` of a 2-D array."""
    return types.void(array, i, j), _prefetch_codegen


@intrinsic
def prefetch_item(typingctx, array, i):
    """Prefetch ``&array[i]`` of a 1-D array."""
    return types.void(array, i), _prefetch_codegen
