#include "net/hello.h"

#include "common/error.h"
#include "net/noise.h"

namespace pccl::net {

MsgValue hello_fields(const Identity &self, const Key32 &local_static, uint64_t incarnation,
                      const std::vector<std::string> &advertised, bool encrypt) {
    std::vector<MsgValue> addrs(advertised.begin(), advertised.end());
    const std::string statement = NoiseHandshake::static_key_statement(local_static);
    const Signature sig = sign_as(self, statement.data(), statement.size());
    return MsgValue::map({
        {"id", self.peer_id},
        {"sig", MsgValue::binary(std::string(sig.begin(), sig.end()))},
        {"inc", incarnation},
        {"addrs", MsgValue::array(std::move(addrs))},
        {"enc", encrypt},
    });
}

PeerHello verify_hello(const std::string &payload, const Key32 &remote_static) {
    PeerHello out;
    out.fields = msgpack_decode(reinterpret_cast<const uint8_t *>(payload.data()), payload.size());
    const MsgValue &m = out.fields;
    out.id = m.at("id").as_str();
    const std::string sig = m.at("sig").as_bin();
    const std::string statement = NoiseHandshake::static_key_statement(remote_static);
    Key32 pub{};
    if (!peer_public_key(out.id, pub)) fail(PCCL_ERR_AUTH_FAILED, "peer sent a peer id that names no Ed25519 key");
    if (!ed25519_verify(pub, statement.data(), statement.size(), reinterpret_cast<const uint8_t *>(sig.data()),
                        sig.size()))
        fail(PCCL_ERR_AUTH_FAILED, "peer " + out.id + " could not prove it holds that id's key");
    const auto &addrs = m.at("addrs").as_array();
    if (addrs.size() > kMaxAdvertised) fail(PCCL_ERR_PROTOCOL, "peer advertised too many addresses");
    for (const auto &a : addrs) {
        if (a.as_str().size() > kMaxAddrLength) fail(PCCL_ERR_PROTOCOL, "peer advertised an oversized address");
        out.addrs.push_back(a.as_str());
    }
    out.incarnation = m.at("inc").as_uint();
    out.encrypt = m.at("enc").as_bool();
    return out;
}

}  // namespace pccl::net
