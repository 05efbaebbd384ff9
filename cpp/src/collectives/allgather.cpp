#include "collectives/allgather.h"

#include <algorithm>
#include <cstring>

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
    std::vector<std::vector<uint8_t>> seen(n);
    std::vector<size_t> left_pieces(n, 0);
    size_t left = n - 1;
    while (left > 0) {
        mesh::Incoming in = ch.recv();
        const size_t src = in.src, j = in.frame.header.sub, size = in.frame.header.chunk;
        if (seen[src].empty()) {
            seen[src].assign(npieces(size), 0);
            left_pieces[src] = seen[src].size();
            out[src].resize(size);
        }
        const size_t off = j * piece;
        const size_t len = std::min(piece, size - std::min(size, off));
        if (out[src].size() != size || j >= seen[src].size() || seen[src][j] || in.frame.size() != len)
            fail(PCCL_ERR_PROTOCOL, "all_gather_bytes: unexpected piece from rank " + std::to_string(src));
        seen[src][j] = 1;
        if (len) std::memcpy(&out[src][off], in.frame.data(), len);
        if (--left_pieces[src] == 0) --left;
    }
    ch.flush();
    return out;
}

}  // namespace pccl::collectives
