// The seam between algorithms and the network: a collective sees its group as
// ranks 0..size-1 and exchanges addressed payloads through a Channel. The
// mesh implements it over TCP connections; tests can implement it in memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "net/frame.h"
#include "pccl/pccl.h"

namespace pccl::mesh {

struct Incoming {
    size_t src = 0;  // rank of the sender
    net::Frame frame;  // header.chunk / header.sub address the payload
};

// One collective operation's view of the group. Owned and used by one thread.
class Channel {
public:
    virtual ~Channel() = default;
    virtual size_t size() const = 0;
    virtual size_t rank() const = 0;
    virtual uint64_t epoch() const = 0;

    // Enqueues `len` bytes at `data` for rank `dst`; never blocks on the
    // network. The bytes are borrowed: they must stay valid and unmodified
    // until flush() returns.
    virtual void send(size_t dst, uint32_t chunk, uint32_t sub, const void *data, size_t len) = 0;
    // Same, but the channel owns the bytes.
    virtual void send_owned(size_t dst, uint32_t chunk, uint32_t sub, std::string bytes) = 0;

    // Blocks for the next payload of this op from any rank. Throws Error:
    // PCCL_ERR_PEER_LOST (a member died), PCCL_ERR_TIMEOUT (nothing arrived
    // within the timeout), or the status another member aborted the op with.
    virtual Incoming recv() = 0;

    // Blocks until every send has been handed to the kernel. Throws
    // PCCL_ERR_PEER_LOST when a send could not be delivered.
    virtual void flush() = 0;

    // Tells every other member that this op failed here, so they stop waiting
    // and fail it too (with `status` and `message`). Call it on any error.
    virtual void abort(pccl_status_t status, const std::string &message) = 0;

    // After a successful data phase: blocks until the op's outcome is agreed.
    // Returns when every member of the view finished its data phase (so all of
    // them hold the result and report success); throws PCCL_ERR_PEER_LOST
    // when the group cannot confirm that (then no member reports success and
    // every survivor retries). See the vote protocol in mesh.h.
    virtual void commit() = 0;

    // Optional zero-copy receive: the payload of the frame addressed
    // (chunk, sub), if it is exactly `len` bytes, may be written straight to
    // `dst` (it then arrives with Frame::in_place and no payload). `dst` must
    // stay valid until that frame is received or quiesce() returns.
    virtual void expect(uint32_t chunk, uint32_t sub, void *dst, size_t len) {
        (void)chunk, (void)sub, (void)dst, (void)len;
    }
    // Whether the whole group is on one machine (mesh::one_host of the op's
    // view as committed): no loss and no pacing, the CPU is the limit, so an op may
    // pipeline in larger sub-chunks. The same on every member of the op.
    virtual bool one_host() const { return false; }

    // After a failure: no write into an expect()ed destination happens after
    // this returns (so the caller may restore or free that memory).
    virtual void quiesce() {}

    uint64_t tx_bytes = 0;
    uint64_t rx_bytes = 0;
};

}  // namespace pccl::mesh
