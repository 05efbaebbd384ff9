// The core's one clock: monotonic seconds (steady_clock), for deadlines and
// round-trip times. Never goes back; unrelated to wall time.
#pragma once

#include <chrono>

namespace pccl {

inline double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace pccl
