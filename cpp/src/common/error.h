// Error values of the core. Internals throw pccl::Error; cpp/src/api is the one
// place that turns it into a pccl_status_t (and a last-error message).
#pragma once

#include <stdexcept>
#include <string>

#include "pccl/pccl.h"

namespace pccl {

class Error : public std::runtime_error {
public:
    Error(pccl_status_t status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    pccl_status_t status() const { return status_; }

private:
    pccl_status_t status_;
};

[[noreturn]] inline void fail(pccl_status_t status, const std::string &message) {
    throw Error(status, message);
}

// A broken invariant is a bug, not a recoverable status.
#define PCCL_ASSERT(cond)                                                                \
    do {                                                                                 \
        if (!(cond))                                                                     \
            ::pccl::fail(PCCL_ERR_INTERNAL, std::string("assertion failed: ") + #cond + \
                                                " at " __FILE__ ":" + std::to_string(__LINE__)); \
    } while (0)

}  // namespace pccl
