// The calling thread's last error of a C entry point without a communicator
// (what pccl_last_error(NULL) returns). Defined in pccl_api.cpp.
#pragma once

#include <string>

namespace pccl::api {
void set_thread_last_error(const std::string &message);
}  // namespace pccl::api
