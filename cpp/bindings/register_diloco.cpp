// The DiLoCo schedule and outer-step kernels, bound over the C API (pccl.h)
// so Python exercises the contract C embedders get. Buffers arrive as raw
// pointers already checked by pccl_py._buffers; kernels release the GIL.
#include <pybind11/pybind11.h>

#include <string>

#include "bindings.h"
#include "pccl/pccl.h"

namespace py = pybind11;

namespace pccl::bindings {
namespace {

// The message is read on the thread that made the call (pccl_last_error(NULL)
// is per thread): every call below runs on its caller's thread.
void check(pccl_status_t st) {
    if (st != PCCL_OK) raise_status(st, pccl_last_error(nullptr));
}

struct Schedule {
    pccl_diloco_schedule_t s;
    Schedule(uint64_t sync_every, uint32_t fragments, uint32_t overlap_steps) : s{sync_every, fragments, overlap_steps} {
        check(pccl_diloco_schedule_validate(&s));
    }
    int64_t fragment_to_start(uint64_t step) const {
        int64_t f = -1;
        check(pccl_diloco_fragment_to_start(&s, step, &f));
        return f;
    }
    int64_t fragment_to_apply(uint64_t step) const {
        int64_t f = -1;
        check(pccl_diloco_fragment_to_apply(&s, step, &f));
        return f;
    }
    uint64_t start_step(uint32_t fragment, uint64_t round) const {
        uint64_t t = 0;
        check(pccl_diloco_start_step(&s, fragment, round, &t));
        return t;
    }
};

}  // namespace

void register_diloco(py::module_ &m) {
    py::class_<Schedule>(m, "DilocoSchedule")
        .def(py::init<uint64_t, uint32_t, uint32_t>(), py::arg("sync_every"), py::arg("fragments"),
             py::arg("overlap_steps"))
        .def_property_readonly("sync_every", [](const Schedule &s) { return s.s.sync_every; })
        .def_property_readonly("fragments", [](const Schedule &s) { return s.s.fragments; })
        .def_property_readonly("overlap_steps", [](const Schedule &s) { return s.s.overlap_steps; })
        .def("fragment_to_start", &Schedule::fragment_to_start, py::arg("step"))
        .def("fragment_to_apply", &Schedule::fragment_to_apply, py::arg("step"))
        .def("start_step", &Schedule::start_step, py::arg("fragment"), py::arg("round"));
    m.def(
        "outer_step_f32",
        [](uintptr_t global, uintptr_t pseudograd, uintptr_t momentum_buf, size_t n, float lr, float momentum,
           bool nesterov) {
            pccl_status_t st;
            {
                py::gil_scoped_release nogil;
                st = pccl_outer_step_f32(reinterpret_cast<float *>(global), reinterpret_cast<const float *>(pseudograd),
                                         reinterpret_cast<float *>(momentum_buf), n, lr, momentum, nesterov ? 1 : 0);
            }
            check(st);
        },
        py::arg("global_ptr"), py::arg("pseudograd_ptr"), py::arg("momentum_ptr"), py::arg("n"), py::arg("lr"),
        py::arg("momentum"), py::arg("nesterov"));
    m.def(
        "diloco_merge_f32",
        [](uintptr_t local, uintptr_t global, size_t n, float alpha) {
            pccl_status_t st;
            {
                py::gil_scoped_release nogil;
                st = pccl_diloco_merge_f32(reinterpret_cast<float *>(local), reinterpret_cast<const float *>(global), n,
                                           alpha);
            }
            check(st);
        },
        py::arg("local_ptr"), py::arg("global_ptr"), py::arg("n"), py::arg("alpha"));
}

}  // namespace pccl::bindings
