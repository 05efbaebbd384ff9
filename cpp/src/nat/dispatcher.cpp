#include "nat/dispatcher.h"

#include "common/error.h"

namespace pccl::nat {

void Dispatcher::on(const std::string &type, Handler h) {
    if (!handlers_.emplace(type, std::move(h)).second)
        fail(PCCL_ERR_INTERNAL, "two handlers for relay message '" + type + "'");
}

void Dispatcher::dispatch(const ConnPtr &c, const net::Frame &f) const {
    MsgValue m = msgpack_decode(f.data(), f.size());
    auto it = handlers_.find(m.at("t").as_str());
    if (it != handlers_.end()) it->second(c, m);
}

}  // namespace pccl::nat
