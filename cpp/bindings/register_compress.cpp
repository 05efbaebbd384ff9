// pccl_py._core codecs: quantizers, top-k / sparse sets, FedZip.
// numpy float32 arrays in (other dtypes are converted), numpy arrays / bytes out.
// Heavy calls run without the GIL; a pccl::Error is raised as the
// pccl_py.errors class of its status (the module's translator, register_util).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bindings.h"
#include "common/error.h"
#include "compress/codec.h"
#include "compress/fedzip.h"
#include "compress/quantize.h"
#include "compress/topk.h"

namespace py = pybind11;

namespace pccl::bindings {
namespace {

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

std::string_view view_of(const py::bytes &b) {
    char *data = nullptr;
    Py_ssize_t len = 0;
    if (PyBytes_AsStringAndSize(b.ptr(), &data, &len) != 0)
        throw py::error_already_set();
    return std::string_view(data, static_cast<size_t>(len));
}

// A bytes object of `size` bytes whose buffer the caller fills (no extra copy).
py::bytes new_bytes(size_t size, uint8_t **buf) {
    PyObject *obj = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size));
    if (!obj)
        throw py::error_already_set();
    *buf = reinterpret_cast<uint8_t *>(PyBytes_AS_STRING(obj));
    return py::reinterpret_steal<py::bytes>(obj);
}

compress::QuantOptions quant_options(const std::string &kind, uint32_t block, bool stochastic, uint64_t seed) {
    compress::QuantOptions o;
    o.kind = compress::codec_by_name(kind).id;
    o.block = block;
    o.stochastic = stochastic;
    o.seed = seed;
    return o;
}

py::array_t<float> to_numpy(std::vector<float> &&v) {
    py::array_t<float> out(static_cast<py::ssize_t>(v.size()));
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

py::tuple sparse_to_tuple(compress::SparseSet &&s) {
    I64Array idx(static_cast<py::ssize_t>(s.indices.size()));
    std::copy(s.indices.begin(), s.indices.end(), idx.mutable_data());
    return py::make_tuple(idx, to_numpy(std::move(s.values)), s.n);
}

}  // namespace

void register_compress(py::module_ &m) {
    // The codec table as Python sees it (pccl_py.compress.QUANT_KINDS and the
    // all-reduce's quant names come from here).
    m.def(
        "codecs",
        [] {
            py::list out;
            for (const compress::Codec &c : compress::codecs()) {
                py::dict d;
                d["name"] = c.name;
                d["id"] = static_cast<int>(c.id);
                d["blocked"] = c.blocked;
                d["stochastic"] = c.stochastic;
                d["summary"] = c.summary;
                out.append(d);
            }
            return out;
        },
        "The codec table: one dict (name, id, blocked, stochastic, summary) per codec, in id order.");
    m.def(
        "quantize",
        [](F32Array values, const std::string &kind, uint32_t block, bool stochastic, uint64_t seed) {
            const auto o = quant_options(kind, block, stochastic, seed);
            const size_t n = static_cast<size_t>(values.size());
            uint8_t *buf;
            py::bytes out = new_bytes(compress::encoded_size(o, n), &buf);
            const float *in = values.data();
            {
                py::gil_scoped_release nogil;
                compress::quantize(o, in, n, buf);
            }
            return out;
        },
        py::arg("values"), py::arg("kind") = "int8", py::arg("block") = 128, py::arg("stochastic") = false,
        py::arg("seed") = 0, "Quantizes a flat float32 array; returns encoded_size(...) bytes.");
    m.def(
        "dequantize",
        [](const py::bytes &data, size_t count, const std::string &kind, uint32_t block) {
            const auto o = quant_options(kind, block, false, 0);
            const std::string_view in = view_of(data);
            const size_t need = compress::encoded_size(o, count);
            if (in.size() != need)
                fail(PCCL_ERR_INVALID_ARGUMENT, "dequantize: got " + std::to_string(in.size()) +
                                                    " bytes, " + kind + " of " + std::to_string(count) +
                                                    " values needs " + std::to_string(need));
            py::array_t<float> out(static_cast<py::ssize_t>(count));
            float *dst = out.mutable_data();
            {
                py::gil_scoped_release nogil;
                compress::dequantize(o, reinterpret_cast<const uint8_t *>(in.data()), count, dst);
            }
            return out;
        },
        py::arg("data"), py::arg("count"), py::arg("kind") = "int8", py::arg("block") = 128);
    m.def(
        "encoded_size",
        [](size_t count, const std::string &kind, uint32_t block) {
            return compress::encoded_size(quant_options(kind, block, false, 0), count);
        },
        py::arg("count"), py::arg("kind") = "int8", py::arg("block") = 128);
    m.def(
        "max_abs_error_bound",
        [](F32Array values, const std::string &kind, uint32_t block, bool stochastic) {
            const auto o = quant_options(kind, block, stochastic, 0);
            const float *in = values.data();
            const size_t n = static_cast<size_t>(values.size());
            py::gil_scoped_release nogil;
            return compress::max_abs_error_bound(o, in, n);
        },
        py::arg("values"), py::arg("kind") = "int8", py::arg("block") = 128, py::arg("stochastic") = false);

    m.def(
        "topk_select",
        [](F32Array values, double density, uint64_t seed, double sample_rate) {
            compress::TopKOptions o;
            o.density = density;
            o.seed = seed;
            o.sample_rate = sample_rate;
            const float *in = values.data();
            const size_t n = static_cast<size_t>(values.size());
            compress::SparseSet s;
            {
                py::gil_scoped_release nogil;
                s = compress::topk_select(o, in, n);
            }
            py::tuple t = sparse_to_tuple(std::move(s));
            return py::make_tuple(t[0], t[1]);
        },
        py::arg("values"), py::arg("density"), py::arg("seed") = 0, py::arg("sample_rate") = 0.01,
        "Returns (indices int64 ascending, values float32) of about ceil(density*n) largest |values|.");
    m.def(
        "topk_target", [](double density, size_t n) { return compress::topk_target(density, n); },
        py::arg("density"), py::arg("n"));
    m.def(
        "sparse_encode",
        [](I64Array indices, F32Array values, uint64_t n, bool fp16) {
            if (indices.size() != values.size())
                fail(PCCL_ERR_INVALID_ARGUMENT, "sparse_encode: indices and values differ in length");
            const int64_t *ip = indices.data();
            for (py::ssize_t i = 0; i < indices.size(); ++i)
                if (ip[i] < 0)
                    fail(PCCL_ERR_INVALID_ARGUMENT, "sparse_encode: negative index");
            const float *vp = values.data();
            const size_t count = static_cast<size_t>(values.size());
            std::string out;
            {
                py::gil_scoped_release nogil;
                out = compress::sparse_encode(reinterpret_cast<const uint64_t *>(ip), vp, count, n, fp16);
            }
            return py::bytes(out);
        },
        py::arg("indices"), py::arg("values"), py::arg("n"), py::arg("fp16") = false);
    m.def(
        "sparse_decode",
        [](const py::bytes &data) {
            const std::string_view in = view_of(data);
            compress::SparseSet s;
            {
                py::gil_scoped_release nogil;
                s = compress::sparse_decode(in);
            }
            return sparse_to_tuple(std::move(s));
        },
        py::arg("data"), "Returns (indices int64, values float32, n).");
    m.def(
        "sparse_sum",
        [](const py::list &sets, size_t n) {
            std::vector<std::string_view> views;
            for (const auto &item : sets)
                views.push_back(view_of(item.cast<py::bytes>()));
            py::array_t<float> out(static_cast<py::ssize_t>(n));
            float *dst = out.mutable_data();
            {
                py::gil_scoped_release nogil;
                compress::sparse_sum_into(views, dst, n);
            }
            return out;
        },
        py::arg("sets"), py::arg("n"), "Dense float32 sum of the sparse sets, added in list order.");

    m.def(
        "fedzip_encode",
        [](F32Array values, double density, uint32_t clusters) {
            compress::FedZipOptions o;
            o.density = density;
            o.clusters = clusters;
            const float *in = values.data();
            const size_t n = static_cast<size_t>(values.size());
            std::string out;
            {
                py::gil_scoped_release nogil;
                out = compress::fedzip_encode(o, in, n);
            }
            return py::bytes(out);
        },
        py::arg("values"), py::arg("density"), py::arg("clusters") = 3);
    m.def(
        "fedzip_quantize",
        [](F32Array values, double density, uint32_t clusters) {
            compress::FedZipOptions o;
            o.density = density;
            o.clusters = clusters;
            std::vector<float> q;
            {
                const float *in = values.data();
                const size_t n = static_cast<size_t>(values.size());
                py::gil_scoped_release nogil;
                q = compress::fedzip_quantize(o, in, n);
            }
            return to_numpy(std::move(q));
        },
        py::arg("values"), py::arg("density"), py::arg("clusters") = 3,
        "The tensor fedzip_decode(fedzip_encode(...)) restores.");
    m.def(
        "fedzip_decode",
        [](const py::bytes &data, std::optional<uint64_t> n) {
            const std::string_view in = view_of(data);
            std::vector<float> out;
            {
                py::gil_scoped_release nogil;
                out = compress::fedzip_decode(in, n ? *n : compress::fedzip_default_max_n(in));
            }
            if (n && out.size() != *n)
                fail(PCCL_ERR_PROTOCOL, "fedzip: the blob holds " + std::to_string(out.size()) +
                                            " values, expected " + std::to_string(*n));
            return to_numpy(std::move(out));
        },
        py::arg("data"), py::arg("n") = py::none(),
        "The dense tensor of a blob. n: its expected length (checked before allocating); without it the "
        "blob may describe at most 4096 values per byte.");
    m.def(
        "fedzip_mode", [](const py::bytes &data) { return compress::fedzip_mode(view_of(data)); },
        py::arg("data"), "0: Huffman symbols + one position list, 1: per-cluster position lists.");
    m.def(
        "kmeans_1d",
        [](F32Array values, uint32_t k, uint32_t iterations) {
            return to_numpy(compress::kmeans_1d(values.data(), static_cast<size_t>(values.size()), k, iterations));
        },
        py::arg("values"), py::arg("k") = 3, py::arg("iterations") = 30);
    m.def(
        "huffman_codes",
        [](const std::vector<uint64_t> &freqs) {
            const auto lengths = compress::huffman_code_lengths(freqs);
            const auto codes = compress::canonical_codes(lengths);
            std::vector<std::pair<uint64_t, unsigned>> out;
            for (size_t i = 0; i < lengths.size(); ++i)
                out.emplace_back(codes[i], lengths[i]);
            return out;
        },
        py::arg("freqs"), "Canonical Huffman (code, length) per symbol; length 0 for unused symbols.");
}

}  // namespace pccl::bindings
