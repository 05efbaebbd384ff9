// Reading the caller's option structs (pccl.h): each comes with the
// struct_size of the header the caller was built with. These copy exactly
// that many bytes over a struct from its *_init function (so fields an older
// caller lacks keep their defaults) and reject sizes that no release has had.
// The result is what the core consumes; nothing else reads the caller's copy.
#pragma once

#include "pccl/pccl.h"

namespace pccl::api {

// Throws PCCL_ERR_INVALID_ARGUMENT for NULL or a garbage struct_size.
pccl_config_t read_config(const pccl_config_t *config);
// NULL: the defaults. Throws PCCL_ERR_INVALID_ARGUMENT for a garbage struct_size.
pccl_allreduce_opts_t read_allreduce_opts(const pccl_allreduce_opts_t *opts);

}  // namespace pccl::api
