// Shared by the libFuzzer harnesses in this folder (one decoder each).
//
// A harness feeds hostile bytes to a decoder and then checks what the decoder
// promises: it either accepts, and then the result satisfies its invariants
// (round trips, bounds), or it rejects with exactly the documented pccl::Error
// status. Anything else aborts, which libFuzzer records as a crash together
// with the input: a broken invariant (FUZZ_CHECK), a rejection with another
// status, an exception of another type (std::bad_alloc from an unchecked
// count, std::out_of_range, ...), or whatever ASan / UBSan report.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <utility>

#include "common/error.h"

#define FUZZ_CHECK(cond)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            std::fprintf(stderr, "fuzz invariant failed: %s at %s:%d\n", #cond, __FILE__,  \
                         __LINE__);                                                          \
            std::abort();                                                                    \
        }                                                                                    \
    } while (0)

namespace pccl::fuzz {

// Runs `f`; PCCL_OK when it returned, else the status of the pccl::Error it
// threw. Exceptions of other types escape (and abort the harness).
template <typename F>
pccl_status_t status_of(F &&f) {
    try {
        std::forward<F>(f)();
        return PCCL_OK;
    } catch (const Error &e) {
        return e.status();
    }
}

// Runs `f`; true when it returned, false when it threw pccl::Error with
// `status`. Every other outcome aborts.
template <typename F>
bool accepts(pccl_status_t status, F &&f) {
    try {
        std::forward<F>(f)();
        return true;
    } catch (const Error &e) {
        if (e.status() != status) {
            std::fprintf(stderr, "rejected with status %d instead of %d: %s\n", int(e.status()), int(status),
                         e.what());
            std::abort();
        }
        return false;
    }
}

}  // namespace pccl::fuzz
