// Routes relay messages to their handlers: each message type (relay_wire.h)
// has at most one handler, registered by the unit that owns the type. A
// unit adds its messages without touching the others.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <variant>

#include "common/error.h"
#include "nat/relay_wire.h"
#include "net/tcp_transport.h"

namespace pccl::nat {

class Dispatcher {
public:
    // Event loop, on the connection the message came on. A handler may
    // throw Error: route() catches it (the connection closes).
    template <class M>
    using Handler = std::function<void(const net::ConnPtr &c, const M &m)>;

    // Setup only (before the transport runs); one handler per type
    // (a second one is a bug: Error INTERNAL).
    template <class M>
    void on(Handler<M> h) {
        constexpr size_t i = index_of<M>();
        if (handlers_[i]) fail(PCCL_ERR_INTERNAL, "two handlers for one relay message type");
        handlers_[i] = [h = std::move(h)](const net::ConnPtr &c, const RelayMsg &m) { h(c, std::get<M>(m)); };
    }

    struct Outcome {
        pccl_status_t status = PCCL_OK;  // PROTOCOL: malformed; else what a handler threw
        std::string why;
    };
    // Decodes `n` bytes and calls the handler of their type (none: an
    // unknown type, or one nobody here handles, is ignored). Never throws;
    // touches `c` only to pass it on. Event loop (or a test).
    Outcome route(const net::ConnPtr &c, const uint8_t *data, size_t n) const;
    // Event loop: route()s a relay frame; a failure closes `c` (only).
    void dispatch(const net::ConnPtr &c, const net::Frame &f) const;

private:
    template <class M, size_t I = 0>
    static constexpr size_t index_of() {
        if constexpr (std::is_same_v<std::variant_alternative_t<I, RelayMsg>, M>) return I;
        else return index_of<M, I + 1>();
    }
    using Erased = std::function<void(const net::ConnPtr &c, const RelayMsg &m)>;
    std::array<Erased, std::variant_size_v<RelayMsg>> handlers_;  // by variant index; read-only once the transport runs
};

}  // namespace pccl::nat
