#include "collectives/allgather.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "common/error.h"

namespace pccl::collectives {

// Frame addressing: `chunk` carries the blob's total size (so pieces may
// arrive in any order over several streams), `sub` the piece index.
std::vector<std::string> all_gather_bytes(mesh::Channel &ch, const std::string &mine, size_t chunk_bytes) {
    const size_t n = ch.size(), me = ch.rank();
    if (mine.size() >= 0xffffffffu) fail(PCCL_ERR_INVALID_ARGUMENT, "all_gather_bytes: blobs must be < 4 GiB");
    std::vector<std::string> out(n);
    out[me] = mine;
    if (n == 1) return out;
    const size_t piece = std::max<size_t>(1, chunk_bytes);
    auto npieces = [&](size_t size) { return size == 0 ? size_t(1) : (size + piece - 1) / piece; };
    for (size_t r = 0; r < n; ++r) {
        if (r == me) continue;
        for (size_t j = 0; j < npieces(mine.size()); ++j)
            ch.send(r, static_cast<uint32_t>(mine.size()), static_cast<uint32_t>(j), mine.data() + j * piece,
                    std::min(piece, mine.size() - std::min(mine.size(), j * piece)));
    }
    // A blob's total size comes from its sender's header, so nothing is
    // allocated from it: pieces are kept as they arrive (their frames hold
    // bytes the sender really sent) and a blob is assembled only once all of
    // its pieces are there. A size that changes between pieces, a piece index
    // beyond it, a duplicate or a piece of the wrong length fails the op.
    struct Partial {
        bool started = false;
        size_t size = 0, left = 0;
        std::map<size_t, net::Frame> pieces;
    };
    std::vector<Partial> parts(n);
    size_t left = n - 1;
    while (left > 0) {
        mesh::Incoming in = ch.recv();
        const size_t src = in.src, j = in.frame.header.sub, size = in.frame.header.chunk;
        Partial &p = parts[src];
        if (!p.started) {
            p.started = true;
            p.size = size;
            p.left = npieces(size);
        }
        const size_t off = j * piece;
        const size_t len = std::min(piece, size - std::min(size, off));
        if (src == me || p.size != size || p.left == 0 || j >= npieces(size) || p.pieces.count(j) ||
            in.frame.size() != len)
            fail(PCCL_ERR_PROTOCOL, "all_gather_bytes: unexpected piece from rank " + std::to_string(src));
        p.pieces.emplace(j, std::move(in.frame));
        if (--p.left > 0) continue;
        out[src].resize(p.size);
        for (auto &kv : p.pieces)
            if (kv.second.size()) std::memcpy(&out[src][kv.first * piece], kv.second.data(), kv.second.size());
        p.pieces.clear();
        --left;
    }
    ch.flush();
    return out;
}

}  // namespace pccl::collectives
