// Views, pure: what the next view is, who coordinates a view, and whether a
// commit may replace the view a peer holds. No sockets, threads, clocks or
// locks: the Mesh (mesh.cpp) and the simulator (sim/) both drive these with
// what they know (the view, who is dead here, the joiners, the members'
// link reports) and act on the answer. Signatures are checked at the edge
// (the Mesh verifies a commit's signature before asking accept_commit).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace pccl::mesh {

struct Member {
    std::string id;
    uint64_t incarnation = 0;
    std::vector<std::string> addrs;
    uint64_t addrs_version = 0;  // grows when the peer re-advertises (a relay changed)
    std::string sig;             // the peer's signature of this record (record_bytes); may be empty in a commit
};

struct View {
    uint64_t epoch = 0;
    std::vector<Member> members;  // in ring order (by id, unless the coordinator's ring order moved them)
    int index_of(const std::string &id) const;
    std::vector<std::string> ids() const;
};

// Whether every member advertises addresses, all of them direct TCP ones on
// loopback (127.0.0.0/8, ::1): the whole view runs on one machine. Pure, so
// every member answers the same for the same view. A member's claim can
// only change how an op is pipelined (mesh::Channel::one_host), never who
// takes part or what it computes.
bool one_host(const View &v);

// Members of the current view declared dead here -> why.
using DeadSet = std::map<std::string, std::string>;

// The coordinator of `v` as seen by a peer that holds `dead`: its lowest live
// id (`self` when every member is dead here).
std::string coordinator_of(const View &v, const DeadSet &dead, const std::string &self);

// What the members reported of their links in their ready (and the
// coordinator of its own): input to the ring order of the next view.
struct LinkReports {
    std::map<std::string, std::vector<std::string>> relay_only;  // member -> peers it reaches only via a relay
    std::map<std::string, std::map<std::string, double>> rtt;    // member -> its RTT (s) to others
};

// The successor of `cur` that a coordinator commits: epoch + 1; the live
// members (not in `dead`) plus the `pending` joiners; in the ring order
// (mesh/ring_order.h) that keeps relay-only links out of the ring and
// the slowest hop small, keeping the current order while it is about as good;
// `by_id_order`: the id order (relay-only links still avoided), measured RTTs ignored.
View next_view(const View &cur, const DeadSet &dead, const std::map<std::string, Member> &pending,
               const LinkReports &reports, bool by_id_order = false);

// A commit's claims once its signature checked out: the view it installs,
// the view it replaces (epoch and member ids) and its signer.
struct CommitClaim {
    View next;
    uint64_t prev_epoch = 0;
    std::vector<std::string> prev_ids;
    std::string by;
};

// Whether a peer may install `c`. A member (`ours` non-null: its view, with
// `dead` its dead set) accepts only a commit replacing exactly its view whose
// signer is that view's coordinator as far as it knows (every lower id dead
// here; itself not counted when the commit removes it: it was made while we
// looked dead). A joiner (`ours` null) has no view to check against: the
// commit must admit its incarnation and be signed by the coordinator of the
// view it names (every lower id of it absent from the new one). On false,
// `why` says which rule failed.
bool accept_commit(const CommitClaim &c, const View *ours, const DeadSet &dead, const std::string &self,
                   uint64_t self_incarnation, std::string &why);

}  // namespace pccl::mesh
