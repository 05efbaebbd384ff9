// C entry points of the DiLoCo schedule and outer-step kernels: thin
// wrappers over cpp/src/diloco. Each body runs under api/guard.h's guard;
// the message goes to pccl_last_error(NULL).
#include <string>
#include <utility>

#include "api/guard.h"
#include "common/error.h"
#include "diloco/outer_step.h"
#include "diloco/schedule.h"
#include "pccl/pccl.h"

namespace {

template <typename F>
pccl_status_t guard(F &&f) {
    return pccl::api::guard(nullptr, std::forward<F>(f));
}

void require(const void *p, const char *what) {
    if (!p) pccl::fail(PCCL_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

pccl::diloco::Schedule make(const pccl_diloco_schedule_t *s) {
    require(s, "schedule");
    return pccl::diloco::Schedule(s->sync_every, s->fragments, s->overlap_steps);
}

}  // namespace

extern "C" {

pccl_status_t pccl_diloco_schedule_validate(const pccl_diloco_schedule_t *schedule) {
    return guard([&] { make(schedule); });
}

pccl_status_t pccl_diloco_fragment_to_start(const pccl_diloco_schedule_t *schedule, uint64_t step,
                                            int64_t *fragment) {
    return guard([&] {
        require(fragment, "fragment");
        *fragment = make(schedule).fragment_to_start(step);
    });
}

pccl_status_t pccl_diloco_fragment_to_apply(const pccl_diloco_schedule_t *schedule, uint64_t step,
                                            int64_t *fragment) {
    return guard([&] {
        require(fragment, "fragment");
        *fragment = make(schedule).fragment_to_apply(step);
    });
}

pccl_status_t pccl_diloco_start_step(const pccl_diloco_schedule_t *schedule, uint32_t fragment, uint64_t round,
                                     uint64_t *step) {
    return guard([&] {
        require(step, "step");
        *step = make(schedule).start_step(fragment, round);
    });
}

pccl_status_t pccl_outer_step_f32(float *global, const float *pseudograd, float *momentum_buf, size_t n, float lr,
                                  float momentum, int nesterov) {
    return guard([&] {
        if (n == 0) return;
        require(global, "global");
        require(pseudograd, "pseudograd");
        if (momentum != 0.0f) require(momentum_buf, "momentum_buf (momentum != 0)");
        pccl::diloco::outer_step_f32(global, pseudograd, momentum_buf, n, lr, momentum, nesterov != 0);
    });
}

pccl_status_t pccl_diloco_merge_f32(float *local, const float *global, size_t n, float alpha) {
    return guard([&] {
        if (n == 0) return;
        require(local, "local");
        require(global, "global");
        pccl::diloco::merge_f32(local, global, n, alpha);
    });
}

}  // extern "C"
