#include "net/nat_hooks.h"

#include <atomic>

namespace pccl::net {

namespace {
// Written once at static initialisation (nat/), read by every TcpTransport.
std::atomic<NatFactory> g_nat_layer{nullptr};
}  // namespace

void register_nat_layer(NatFactory factory) { g_nat_layer.store(factory); }

NatFactory nat_layer() { return g_nat_layer.load(); }

}  // namespace pccl::net
