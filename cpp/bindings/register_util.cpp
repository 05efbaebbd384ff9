// Utility building blocks exposed for tests and the pure-Python layer:
// hashes, msgpack, multiaddrs, peer ids. A pccl::Error is raised as the
// pccl_py.errors class of its status (raise_status, defined here).
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <map>
#include <utility>

#include <pybind11/stl.h>

#include "bindings.h"
#include "common/crypto.h"
#include "common/error.h"
#include "common/msgpack.h"
#include "mesh/ring_order.h"
#include "mesh/view.h"
#include "net/multiaddr.h"
#include "net/peer_id.h"

namespace py = pybind11;

namespace pccl::bindings {
namespace {

const uint8_t *bytes_data(const std::string &s) {
    return reinterpret_cast<const uint8_t *>(s.data());
}

py::bytes digest_bytes(const Digest &d) {
    return py::bytes(reinterpret_cast<const char *>(d.data()), d.size());
}

// True when every byte of [p, p + n) lies in mappings this process may write
// (per /proc/self/maps, whose lines are sorted by address). A torch tensor
// carries no read-only flag (torch.from_numpy of a read-only memmap shares
// PROT_READ pages), so writing a result into one would be a SIGSEGV; the
// Python layer asks this first. Cost: one read of the maps file.
bool memory_writable(uintptr_t p, size_t n) {
    if (n == 0) return true;
    if (p + n < p) return false;
    std::ifstream maps("/proc/self/maps");
    if (!maps) return true;  // not Linux-like: cannot tell, do not refuse
    uintptr_t want = p;
    const uintptr_t end = p + n;
    std::string line;
    while (want < end && std::getline(maps, line)) {
        unsigned long lo = 0, hi = 0;
        char perms[5] = {0};
        if (std::sscanf(line.c_str(), "%lx-%lx %4s", &lo, &hi, perms) != 3) continue;
        if (hi <= want) continue;
        if (lo > want || perms[1] != 'w') return false;  // a hole or a read-only mapping
        want = hi;
    }
    return want >= end;
}

}  // namespace

void raise_status(pccl_status_t status, const std::string &message) {
    py::gil_scoped_acquire gil;
    py::object errors = py::module_::import("pccl_py.errors");
    py::object exc = errors.attr("error_for_status")(static_cast<int>(status), message);
    PyErr_SetObject(py::type::handle_of(exc).ptr(), exc.ptr());
    throw py::error_already_set();
}

void register_util(py::module_ &m) {
    // Every pccl::Error leaving any binding of this module becomes the
    // pccl_py.errors class of its status (not pybind11's RuntimeError).
    py::register_local_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Error &e) {
            py::object errors = py::module_::import("pccl_py.errors");
            py::object exc = errors.attr("error_for_status")(static_cast<int>(e.status()), std::string(e.what()));
            PyErr_SetObject(py::type::handle_of(exc).ptr(), exc.ptr());
        }
    });
    // py::buffer accepts bytes, bytearray and memoryview slices (any offset).
    m.def(
        "sha256",
        [](py::buffer data) {
            py::buffer_info info = data.request();
            return digest_bytes(sha256(info.ptr, size_t(info.size * info.itemsize)));
        },
        py::arg("data"), "SHA-256 digest (32 bytes).");
    m.def(
        "hmac_sha256",
        [](py::buffer key, py::buffer msg) {
            py::buffer_info k = key.request(), d = msg.request();
            return digest_bytes(hmac_sha256(k.ptr, size_t(k.size * k.itemsize), d.ptr,
                                            size_t(d.size * d.itemsize)));
        },
        py::arg("key"), py::arg("msg"), "HMAC-SHA256 (32 bytes).");
    m.def(
        "hash64",
        [](py::buffer data, uint64_t seed) {
            py::buffer_info info = data.request();
            return hash64(info.ptr, size_t(info.size * info.itemsize), seed);
        },
        py::arg("data"), py::arg("seed") = 0, "XXH64 of the bytes (non-cryptographic).");
    m.def(
        "msgpack_roundtrip",
        [](const std::string &data) {
            std::string out = msgpack_encode(msgpack_decode(bytes_data(data), data.size()));
            return py::bytes(out);
        },
        py::arg("data"), "Decode msgpack bytes and encode them again (smallest forms).");
    m.def(
        "multiaddr_to_bytes",
        [](const std::string &text) {
            return py::bytes(Multiaddr::parse(text).to_bytes());
        },
        py::arg("text"));
    m.def(
        "multiaddr_from_bytes",
        [](const std::string &data) {
            return Multiaddr::from_bytes(bytes_data(data), data.size()).to_string();
        },
        py::arg("data"));
    m.def(
        "multiaddr_normalize",
        [](const std::string &text) {
            return Multiaddr::parse(text).to_string();
        },
        py::arg("text"), "Parse and print a multiaddr in canonical form.");
    m.def(
        "base58_encode",
        [](const std::string &data) { return base58_encode(bytes_data(data), data.size()); },
        py::arg("data"));
    m.def(
        "base58_decode",
        [](const std::string &text) { return py::bytes(base58_decode(text)); },
        py::arg("text"));
    m.def(
        "peer_id_from_secret",
        [](const std::string &secret) {
            if (secret.size() != 32) raise_status(PCCL_ERR_INVALID_ARGUMENT, "secret must be exactly 32 bytes");
            std::array<uint8_t, 32> s;
            std::memcpy(s.data(), secret.data(), s.size());
            return peer_id_from_secret(s);
        },
        py::arg("secret"));
    m.def("memory_writable", &memory_writable, py::arg("ptr"), py::arg("nbytes"),
          "True when [ptr, ptr + nbytes) is mapped writable in this process.");
    m.def("is_valid_peer_id", [](const std::string &id) { return is_valid_peer_id(id); },
          py::arg("peer_id"));
    m.def(
        "ring_order",
        [](std::vector<std::string> ids, const std::vector<std::pair<std::string, std::string>> &pairs,
           const std::map<std::pair<std::string, std::string>, double> &rtt, const std::vector<std::string> &current) {
            std::sort(ids.begin(), ids.end());
            pccl::mesh::RelayedPairs relayed;
            for (const auto &p : pairs) relayed.insert(p.first < p.second ? p : std::make_pair(p.second, p.first));
            auto order = pccl::mesh::ring_order(ids, relayed, rtt, current);
            const auto cost = pccl::mesh::ring_cost(order, relayed, rtt);
            return py::make_tuple(order, cost.relayed, cost.bottleneck, cost.total);
        },
        py::arg("ids"), py::arg("relayed_pairs"), py::arg("rtt") = std::map<std::pair<std::string, std::string>, double>{},
        py::arg("current") = std::vector<std::string>{},
        "The ring order a coordinator commits from the members' reports (relayed pairs, directed RTTs in s "
        "keyed (from, to), the previous order), and its (relayed hops, bottleneck RTT, total RTT).");
    m.def(
        "one_host",
        [](const std::vector<std::vector<std::string>> &addrs) {
            pccl::mesh::View v;
            for (const auto &a : addrs) {
                pccl::mesh::Member m;
                m.addrs = a;
                v.members.push_back(std::move(m));
            }
            return pccl::mesh::one_host(v);
        },
        py::arg("addrs"),
        "Whether a view whose members advertise `addrs` (one list per member) is on one machine "
        "(mesh::one_host: ops then pipeline in larger sub-chunks).");
    m.def(
        "load_or_create_identity",
        [](const std::string &path) {
            return load_or_create_identity(path).peer_id;
        },
        py::arg("path"), "Peer id from the key file at path, creating the file if missing.");
}

}  // namespace pccl::bindings
