// The one exception guard of the C boundary: every C entry point
// (pccl_api.cpp, diloco_api.cpp) and the async worker run their body through
// run_guarded, so no C++ exception crosses pccl.h or ends a thread (which
// would terminate the process). Also the last-error records of pccl.h.
#pragma once

#include <atomic>
#include <exception>
#include <new>
#include <string>

#include "common/error.h"
#include "pccl/pccl.h"

namespace pccl::api {

// What a guarded body ended with: PCCL_OK and "", or a status and its message.
struct Outcome {
    pccl_status_t status = PCCL_OK;
    std::string message;
};

// Runs body() on the calling thread and maps whatever it throws:
// pccl::Error -> its status and message; std::bad_alloc -> PCCL_ERR_INTERNAL
// "out of memory"; any other std::exception or anything else thrown ->
// PCCL_ERR_INTERNAL "internal error: ...". Never throws itself.
template <typename Body>
Outcome run_guarded(Body &&body) noexcept {
    Outcome o;
    try {
        body();
        return o;
    } catch (const Error &e) {
        o.status = e.status();
        o.message = e.what();
    } catch (const std::bad_alloc &) {
        o.status = PCCL_ERR_INTERNAL;
        o.message = "out of memory";
    } catch (const std::exception &e) {
        o.status = PCCL_ERR_INTERNAL;
        o.message = std::string("internal error: ") + e.what();
    } catch (...) {
        o.status = PCCL_ERR_INTERNAL;
        o.message = "internal error: unknown exception";
    }
    return o;
}

// Records a failure for pccl_last_error: as the calling thread's last error
// on comm (NULL: its last error without a communicator) and, for a
// communicator, as that communicator's most recent one. Thread-safe.
void record_failure(const pccl_comm_t *comm, const std::string &message);

// What pccl_last_error(comm) returns (see pccl.h). The pointer is the
// calling thread's own storage: no other thread writes it.
const char *last_error(const pccl_comm_t *comm);

// A fresh pccl_comm::serial (never 0, never repeated).
uint64_t next_comm_serial();

// Clears the calling thread's error without a communicator (a successful
// pccl_comm_create).
void clear_thread_error();

// An entry point's body: run_guarded, and on failure record_failure.
template <typename Body>
pccl_status_t guard(const pccl_comm_t *comm, Body &&body) noexcept {
    Outcome o = run_guarded(std::forward<Body>(body));
    if (o.status != PCCL_OK) record_failure(comm, o.message);
    return o.status;
}

namespace testing {
// Test-only fault injection (tests/test_error_surface.py, through
// _core._testing_throw_in_next_async_worker): when set, the next async
// worker throws a non-std exception before running its op and clears it, to
// prove the guard turns that into PCCL_ERR_INTERNAL instead of terminating
// the process. Never set outside tests; one relaxed load per async op.
extern std::atomic<bool> throw_in_next_async_worker;
}  // namespace testing

}  // namespace pccl::api
