// The mesh's Channel: one op's frames go out on the stream pool's data links
// (Links) and come in through its mailbox (Router); its commit runs the vote
// protocol (OpVote, see mesh.h) over the links' control connections. It
// never takes the mesh's membership lock: what it needs of the membership
// (who is dead, whether the view moved on, whether the mesh closed) is the
// router's snapshot.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mesh/channel.h"
#include "mesh/links.h"
#include "mesh/router.h"
#include "net/peer_id.h"

namespace pccl::mesh {

// What every op of one mesh shares.
struct OpContext {
    Router *router;
    Links *links;
    const Identity *identity;  // signs our done votes
    std::string self_id;
    double timeout_s;  // every wait of an op derives from it
};

class MeshChannel : public Channel {
public:
    // one_host: mesh::one_host of the view as committed (the same on every member).
    MeshChannel(const OpContext &ctx, OpKey key, View view, bool one_host, size_t rank, std::shared_ptr<Mailbox> mb);
    ~MeshChannel() override;

    size_t size() const override { return view_.members.size(); }
    size_t rank() const override { return rank_; }
    uint64_t epoch() const override { return key_.epoch; }
    bool one_host() const override { return one_host_; }

    void send(size_t dst, uint32_t chunk, uint32_t sub, const void *data, size_t len) override;
    void send_owned(size_t dst, uint32_t chunk, uint32_t sub, std::string bytes) override;
    Incoming recv() override;
    void flush() override;
    void abort(pccl_status_t status, const std::string &message) override;
    void expect(uint32_t chunk, uint32_t sub, void *dst, size_t len) override;
    void quiesce() override;
    void commit() override;

private:
    // The *_locked members run with the router's lock held.
    // A vote to rank `to` naming the members of `done` (with their signatures).
    void send_vote_locked(size_t to, const RankSet &done, const std::vector<std::string> &nack, bool failed,
                          pccl_status_t status, const std::string &message);
    // A vote naming our whole done set to every other member.
    void broadcast_vote_locked(const std::vector<std::string> &nack, bool failed, pccl_status_t status,
                               const std::string &message);
    void check_alive_locked() const;
    void post(size_t dst, uint32_t chunk, uint32_t sub, net::OutFrame f);

    OpContext ctx_;
    OpKey key_;
    View view_;
    bool one_host_;
    size_t rank_;
    std::shared_ptr<Mailbox> mb_;
    std::shared_ptr<net::SendTracker> tracker_;
    std::map<size_t, std::vector<net::LinkPtr>> links_;
};

}  // namespace pccl::mesh
