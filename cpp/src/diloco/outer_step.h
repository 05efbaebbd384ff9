// Outer-optimizer kernels of DiLoCo on flat f32 buffers. Pure functions: no
// I/O, no allocation; the caller owns every buffer. Elementwise with one
// rounding per operation (no fused multiply-add), so every peer that runs them
// on bit-identical inputs gets bit-identical outputs.
#pragma once

#include <cstddef>

namespace pccl::diloco {

// One step of SGD with (Nesterov) momentum and no dampening, as
// torch.optim.SGD defines it, applied to the global copy:
//   buf = momentum * buf + g
//   d   = nesterov ? g + momentum * buf : buf
//   global -= lr * d
// g is the (averaged) pseudo-gradient (global - local). momentum_buf must start
// zeroed; with momentum == 0 it is left untouched and may be NULL.
void outer_step_f32(float *global, const float *pseudograd, float *momentum_buf, size_t n, float lr,
                    float momentum, bool nesterov);

// Streaming DiLoCo merge: local = alpha * local + (1 - alpha) * global.
// alpha == 0 copies global exactly.
void merge_f32(float *local, const float *global, size_t n, float alpha);

}  // namespace pccl::diloco
