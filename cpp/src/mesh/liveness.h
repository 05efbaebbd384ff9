// Liveness of a mesh's members: heartbeats, redials and frozen-peer
// detection, on two threads of its own. Every wait derives from the
// configured bounds: heartbeat = min(heartbeat_timeout, timeout); a heartbeat
// goes out every heartbeat/4 (20 ms..1 s) on one connection per member, and a
// member silent for `heartbeat` is declared dead, so a frozen peer is found
// within its heartbeat bound, not the op timeout that large transfers on slow
// links need. Members with no connection left are redialed every timeout/8
// (50..500 ms). This thread not running for longer than the bound means we
// were frozen, not the peers: they get a fresh bound.
//
// The threads read the membership through the Host (the mesh), which answers
// from its routing snapshot, so a slow view change holding the membership
// lock does not stop our heartbeats. The own lock is a leaf: no Host call is
// made with it held.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mesh/view.h"

namespace pccl::mesh {

class Liveness {
public:
    class Host {
    public:
        virtual ~Host() = default;
        // Each heartbeat round (before the beats): housekeeping of the mesh.
        virtual void liveness_tick(double now) = 0;
        // The live members to beat and watch (empty: not a member).
        virtual std::vector<std::string> watched() = 0;
        virtual void beat(const std::string &id) = 0;
        // Members silent for longer than the bound: (id, why).
        virtual void silent(const std::vector<std::pair<std::string, std::string>> &who) = 0;
        // Members with no connection (not dead, not leaving), and a redial of one.
        virtual std::vector<Member> unlinked() = 0;
        virtual void relink(const Member &m) = 0;
    };

    Liveness(double timeout_s, double heartbeat_timeout_s);
    ~Liveness();

    double bound() const { return bound_; }
    // Starts both threads.
    void start(Host *host);
    // Stops both threads and joins the heartbeat thread; join() joins the
    // redial thread (after the transport's shutdown: a redial under way fails then).
    void stop();
    void join();

    // Any frame from `id` (any thread).
    void heard(const std::string &id);
    // A view was installed: its members get a fresh bound.
    void reset(const std::vector<Member> &members);
    // Just resumed from a freeze (the heartbeat thread has not ticked for
    // longer than the bound).
    bool resumed() const;
    // Seconds since `id` was last heard (0 if never).
    double silence(const std::string &id) const;

private:
    void heartbeat_loop();
    void redial_loop();

    const double bound_;
    const double beat_period_;
    const double redial_period_;
    Host *host_ = nullptr;
    mutable std::mutex mu_;  // guards everything below
    std::condition_variable cv_;
    bool stop_ = false;
    std::map<std::string, double> last_heard_;  // peer id -> monotonic seconds
    double last_tick_ = 0;  // the heartbeat thread's last round
    std::thread heartbeat_thread_;
    std::thread redial_thread_;
};

}  // namespace pccl::mesh
