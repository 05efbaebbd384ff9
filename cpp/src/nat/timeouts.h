// Every wait of the NAT layer, derived from the configured op timeout T
// (TransportOptions::op_timeout_s = pccl_config_t.timeout_s), so that a
// caller whose dial goes through a relay, a punch or a dial-back returns
// within T like every other path ("every survivor returns within the
// timeout"). Each wait is min(its old fixed value, a fraction of T): at the
// default T = 10 s every one equals the value it had before it was derived;
// a shorter T shrinks them in proportion, a longer one never stretches them
// (they bound exchanges that take a few round trips, not bulk transfers).
//
//   wait                 at T = 10 s   derived            bounds
//   relay_request_s      5 s           min(5, T / 2)      reserve dial + answer; dial-back answer
//   relay_retry_s        5 s           min(5, T / 2)      a failed relay is retried after this
//   circuit_setup_s      10 s          min(10, T)         stop connection; end-to-end handshake via a relay
//   autonat_probe_s      3 s           min(3, 0.3 T)      the dial-back probe's connect + handshake
//   punch_attempt_s      3 s           min(3, 0.3 T)      each wait of a punch attempt; a reversal
//   punch_linger_s       2 s           min(2, 0.2 T)      a punch dial / mapping probe outlives its attempt
//   retire_relayed_s     2 s           min(2, 0.2 T)      a replaced relayed link lives on (late frames)
//   upgrade_budget_s     5 s           min(5, T / 2)      reversal + every punch attempt of one dial
//
// The upgrade of a relayed link (reversal, then up to kPunchAttempts punch
// attempts) stops at upgrade_budget_s and at the dial's own deadline,
// whichever comes first: a relayed dial returns within its timeout_s, with
// the relayed link when there was no time left to upgrade it, and a dial
// that an op waits for (the mesh may dial data links on the op's thread)
// leaves half the op timeout to the op. Before, a punch behind a symmetric
// NAT ran its 3 x 3 s attempts to the end (past the dial's deadline); it
// now gives up after ~5 s at the default T (the first attempt, which is the
// one that succeeds where punching works at all, is unchanged).
#pragma once

#include <algorithm>

namespace pccl::nat {

constexpr int kPunchAttempts = 3;

struct NatTimeouts {
    double relay_request_s = 5;
    double relay_retry_s = 5;
    double circuit_setup_s = 10;
    double autonat_probe_s = 3;
    double punch_attempt_s = 3;
    double punch_linger_s = 2;
    double retire_relayed_s = 2;
    double upgrade_budget_s = 5;

    static NatTimeouts derive(double op_timeout_s) {
        const double t = op_timeout_s > 0 ? op_timeout_s : 10.0;
        NatTimeouts w;
        w.relay_request_s = std::min(5.0, t / 2);
        w.relay_retry_s = std::min(5.0, t / 2);
        w.circuit_setup_s = std::min(10.0, t);
        w.autonat_probe_s = std::min(3.0, 0.3 * t);
        w.punch_attempt_s = std::min(3.0, 0.3 * t);
        w.punch_linger_s = std::min(2.0, 0.2 * t);
        w.retire_relayed_s = std::min(2.0, 0.2 * t);
        w.upgrade_budget_s = std::min(5.0, t / 2);
        return w;
    }
};

}  // namespace pccl::nat
