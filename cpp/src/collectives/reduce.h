// Element-wise reduction kernels for every dtype and op. Pure functions.
#pragma once

#include <cstddef>

#include "pccl/pccl.h"

namespace pccl::collectives {

// Throws Error(PCCL_ERR_INVALID_ARGUMENT) for an unknown dtype.
size_t dtype_size(pccl_dtype_t dtype);
const char *dtype_name(pccl_dtype_t dtype);
const char *op_name(pccl_reduce_op_t op);
bool valid_op(pccl_reduce_op_t op);

// acc[i] = op(acc[i], in[i]) for i < count. Avg accumulates like sum.
// Integers wrap around on overflow (two's complement); f16/bf16 are computed
// in f32 and rounded once per element and hop.
void reduce_into(pccl_dtype_t dtype, pccl_reduce_op_t op, void *acc, const void *in, size_t count);

// acc[i] /= n, the last step of avg. Integers: the (wrapped) sum divided by n,
// rounded to nearest with ties away from zero (7/2 -> 4, -7/2 -> -4, 5/3 -> 2).
void divide_by(pccl_dtype_t dtype, void *acc, size_t count, size_t n);

}  // namespace pccl::collectives
