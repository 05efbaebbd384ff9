// Routes relay messages to their handlers: one handler per message type
// ("t"), each registered by the unit that owns the type. Replaces a switch
// over every type: a unit adds its messages without touching the others.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "common/msgpack.h"
#include "nat/wire.h"

namespace pccl::nat {

class Dispatcher {
public:
    // Event loop, on the connection the message came on. Throws Error
    // (PROTOCOL: malformed): that connection closes.
    using Handler = std::function<void(const ConnPtr &c, const MsgValue &m)>;

    // Setup only (before the transport runs); one handler per type.
    void on(const std::string &type, Handler h);
    // Event loop: decodes `f` (a relay frame) and calls its type's handler.
    // An unknown type is ignored (a newer peer's message).
    void dispatch(const ConnPtr &c, const net::Frame &f) const;

private:
    std::map<std::string, Handler> handlers_;  // read-only once the transport runs
};

}  // namespace pccl::nat
