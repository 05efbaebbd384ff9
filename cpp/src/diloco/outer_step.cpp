#include "diloco/outer_step.h"

#include <cstring>

// One rounding per operation, so results do not depend on whether the
// compiler may contract a*b+c into an FMA on the build machine.
#pragma GCC optimize("fp-contract=off")

namespace pccl::diloco {

void outer_step_f32(float *global, const float *g, float *buf, size_t n, float lr, float momentum,
                    bool nesterov) {
    if (momentum == 0.0f) {
        for (size_t i = 0; i < n; ++i) {
            const float step = lr * g[i];
            global[i] = global[i] - step;
        }
        return;
    }
    for (size_t i = 0; i < n; ++i) {
        const float mb = momentum * buf[i];
        const float b = mb + g[i];
        buf[i] = b;
        float d = b;
        if (nesterov) {
            const float mb2 = momentum * b;
            d = g[i] + mb2;
        }
        const float step = lr * d;
        global[i] = global[i] - step;
    }
}

void merge_f32(float *local, const float *global, size_t n, float alpha) {
    if (alpha == 0.0f) {
        if (n) std::memmove(local, global, n * sizeof(float));
        return;
    }
    const float beta = 1.0f - alpha;
    for (size_t i = 0; i < n; ++i) {
        const float a = alpha * local[i];
        const float b = beta * global[i];
        local[i] = a + b;
    }
}

}  // namespace pccl::diloco
