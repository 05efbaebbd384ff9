// All-gather of variable-sized byte blobs: every member ends with every
// member's blob, in rank order. Each member sends its blob straight to every
// other member (one hop of latency; fine for the group sizes of a run).
#pragma once

#include <string>
#include <vector>

#include "mesh/channel.h"

namespace pccl::collectives {

// Blocking. Blobs larger than chunk_bytes travel in several frames.
std::vector<std::string> all_gather_bytes(mesh::Channel &ch, const std::string &mine, size_t chunk_bytes);

}  // namespace pccl::collectives
