// Minimal diagnostics: PCCL_LOG=debug in the environment prints to stderr.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace pccl {

inline bool debug_enabled() {
    static const bool on = [] {
        const char *v = std::getenv("PCCL_LOG");
        return v && std::strcmp(v, "debug") == 0;
    }();
    return on;
}

inline void debug_log(const std::string &who, const std::string &msg) {
    if (debug_enabled()) std::fprintf(stderr, "[pccl %s] %s\n", who.c_str(), msg.c_str());
}

}  // namespace pccl
