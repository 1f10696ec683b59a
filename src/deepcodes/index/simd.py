"""SIMD and memory pieces numba cannot express, written in LLVM IR through
``numba.extending.intrinsic``, and the host CPU's features that decide whether a kernel may use them.

numba vectorizes plain loops, but it never emits a gather (a vector of loads from computed
addresses), which is what an ADC scan needs: eight codes' table entries for one sub-quantizer are
eight scattered floats. :func:`gather_sums8` does that scan step with AVX2's ``vgatherdps``. Nor
does it emit a software prefetch, which a scan hopping between short runs of a large table needs to
overlap their cache misses: :func:`prefetch`.
"""
from __future__ import annotations

from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

HAVE_AVX2 = bool(llvm.get_host_cpu_features().get("avx2", False))

# codes per gather: one AVX2 register of float32
LANES = 8


@intrinsic
def gather_sums8(typingctx, tables, groups, group_at, n_sub, sub_stride, bias, bias_at, q_bias, bound, out):
    """ADC distances of one group of 8 codes for one query, and which of them are below a bound.

    ``tables`` (M * sub_stride,) float32 is one query's flat look-up table (sub-quantizer m's entry
    j at ``m * sub_stride + j``); ``groups`` uint8 holds codes grouped by 8, sub-code-major: code
    l's sub-code m at ``group_at + 8 m + l``; ``bias`` float32 the codes' own terms, from
    ``bias_at``. Writes ``out[l] = bias[bias_at + l] + q_bias + T[0, c_l0] + ... + T[M - 1, c_l(M-1)]``
    (float32, summed in that order, so equal to the scalar kernels' sums bit for bit) into
    ``out[0:8]`` and returns an int32 whose bit l is set where ``out[l] < bound``.
    """
    # the IR below adds and compares float32 lanes and does its offset arithmetic in 64-bit integers
    if q_bias != types.float32 or bound != types.float32:
        return None
    if not all(isinstance(v, types.Integer) and v.bitwidth == 64 for v in (group_at, n_sub, sub_stride, bias_at)):
        return None
    if not all(isinstance(a, types.Array) and a.ndim == 1 and a.dtype == dt
               for a, dt in ((tables, types.float32), (groups, types.uint8), (bias, types.float32), (out, types.float32))):
        return None
    sig = types.int32(tables, groups, group_at, n_sub, sub_stride, bias, bias_at, q_bias, bound, out)

    def codegen(context, builder, signature, args):
        t_arr, g_arr, group_at_v, n_sub_v, stride_v, b_arr, bias_at_v, q_bias_v, bound_v, o_arr = args
        data = [context.make_array(signature.args[i])(context, builder, v).data
                for i, v in ((0, t_arr), (1, g_arr), (5, b_arr), (9, o_arr))]
        t_ptr, g_ptr, b_ptr, o_ptr = data
        i8, i32, i64, f32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
        v8f, v8i, v8b = ir.VectorType(f32, LANES), ir.VectorType(i32, LANES), ir.VectorType(i8, LANES)
        gather = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8f, [v8f, i8.as_pointer(), v8i, v8f, i8]), "llvm.x86.avx2.gather.d.ps.256")
        every_lane = builder.bitcast(ir.Constant(v8i, [-1] * LANES), v8f)
        table_base = builder.bitcast(t_ptr, i8.as_pointer())

        def splat(value, vector_type):
            one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, one, ir.Constant(v8i, [0] * LANES))

        start = builder.load(builder.bitcast(builder.gep(b_ptr, [bias_at_v]), v8f.as_pointer()), align=4)
        acc = cgutils.alloca_once_value(builder, builder.fadd(start, splat(q_bias_v, v8f)))
        stride = builder.trunc(stride_v, i32)
        with cgutils.for_range(builder, n_sub_v) as loop:
            m = loop.index
            at = builder.add(group_at_v, builder.mul(m, ir.Constant(i64, LANES)))
            sub_codes = builder.load(builder.bitcast(builder.gep(g_ptr, [at]), v8b.as_pointer()), align=1)
            index = builder.add(builder.zext(sub_codes, v8i), splat(builder.mul(builder.trunc(m, i32), stride), v8i))
            entries = builder.call(gather, [ir.Constant(v8f, None), table_base, index, every_lane, ir.Constant(i8, 4)])
            builder.store(builder.fadd(builder.load(acc), entries), acc)
        sums = builder.load(acc)
        builder.store(sums, builder.bitcast(o_ptr, v8f.as_pointer()), align=4)
        below = builder.fcmp_ordered("<", sums, splat(bound_v, v8f))
        return builder.zext(builder.bitcast(below, i8), i32)

    return sig, codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Hint that the element of a C-contiguous ``array`` at ``index`` (a tuple of leading indices,
    the rest taken as 0: a row) will be read soon: LLVM's ``prefetch`` (read, into every cache
    level), which changes no result and never faults."""
    if not (isinstance(array, types.Array) and array.layout == "C"):
        return None
    if not (isinstance(index, types.BaseTuple) and 0 < len(index) <= array.ndim
            and all(isinstance(t, types.Integer) for t in index)):
        return None
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        array_type, index_type = signature.args
        data = context.make_array(array_type)(context, builder, args[0])
        leading = cgutils.unpack_tuple(builder, args[1], len(index_type))
        at = [context.cast(builder, v, t, types.intp) for v, t in zip(leading, index_type)]
        at += [context.get_constant(types.intp, 0)] * (array_type.ndim - len(at))
        ptr = cgutils.get_item_pointer(context, builder, array_type, data, at)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        hint = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")
        # (address, 0 = read, 3 = keep in every cache level, 1 = data cache)
        builder.call(hint, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
