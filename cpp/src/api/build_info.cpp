#include "pccl/pccl.h"

extern "C" const char *pccl_build_info(void) {
    return "pccl_py 0.1.0 (C++17, " __VERSION__ ")";
}
