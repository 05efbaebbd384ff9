#include "nat/dispatcher.h"

namespace pccl::nat {

Dispatcher::Outcome Dispatcher::route(const net::ConnPtr &c, const uint8_t *data, size_t n) const {
    try {
        RelayDecoded d = decode_relay(data, n);
        if (!d.ok()) return {PCCL_ERR_PROTOCOL, "malformed relay message: " + d.error};
        if (const Erased &h = handlers_[d.msg.index()]) h(c, d.msg);
        return {};
    } catch (const Error &e) {
        return {e.status(), e.what()};
    } catch (const std::exception &e) {
        return {PCCL_ERR_INTERNAL, std::string("relay message handler: ") + e.what()};
    }
}

void Dispatcher::dispatch(const net::ConnPtr &c, const net::Frame &f) const {
    Outcome o = route(c, f.data(), f.size());
    if (o.status != PCCL_OK) c->close(o.status, o.why);
}

}  // namespace pccl::nat
