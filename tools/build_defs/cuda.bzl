"""cuda_library: compiles .cu files with nvcc for Hopper and wraps them as a cc_library.

nvcc runs once per source with the C++ toolchain's compiler as host compiler and the include
paths and defines of the C++ deps, so a .cu file includes project headers exactly like a .cc file.
The objects are archived into a static library that a native cc_library then exposes.
"""

load("@bazel_tools//tools/cpp:toolchain_utils.bzl", "find_cpp_toolchain")

_NVCC = "/usr/local/cuda/bin/nvcc"

# sm_90a SASS for H100/H200 (wgmma, TMA) plus compute_90 PTX so newer drivers can JIT.
_ARCH_FLAGS = [
    "-gencode=arch=compute_90a,code=sm_90a",
    "-gencode=arch=compute_90,code=compute_90",
]

def _nvcc_archive_impl(ctx):
    cc_toolchain = find_cpp_toolchain(ctx)
    compilation_contexts = [dep[CcInfo].compilation_context for dep in ctx.attr.deps if CcInfo in dep]

    include_flags = ["-I."]
    header_inputs = []
    defines = []
    for cc in compilation_contexts:
        for path in cc.includes.to_list() + cc.quote_includes.to_list() + cc.system_includes.to_list():
            include_flags.append("-I" + path)
        defines += ["-D" + d for d in cc.defines.to_list()]
        header_inputs.append(cc.headers)
    headers = depset(ctx.files.hdrs, transitive = header_inputs)

    mode_flags = ["-O3", "-lineinfo"] if ctx.var["COMPILATION_MODE"] == "opt" else ["-O1", "-lineinfo"]
    objects = []
    for src in ctx.files.srcs:
        obj = ctx.actions.declare_file("_objs/%s/%s.o" % (ctx.label.name, src.basename))
        args = [
            "-c",
            src.path,
            "-o",
            obj.path,
            "-ccbin",
            cc_toolchain.compiler_executable,
            "-std=c++17",
            "-Xcompiler",
            "-fPIC",
            "--expt-relaxed-constexpr",
            "-DINDEXCACHE_WITH_CUDA",
        ] + mode_flags + _ARCH_FLAGS + include_flags + defines + ctx.attr.copts
        ctx.actions.run(
            executable = _NVCC,
            arguments = args,
            inputs = depset([src], transitive = [headers]),
            outputs = [obj],
            mnemonic = "Nvcc",
            progress_message = "nvcc %s" % src.short_path,
            use_default_shell_env = True,
        )
        objects.append(obj)

    # ".lo": Bazel whole-archives a precompiled library only by this extension; the cc_library's
    # alwayslink attribute does not reach archives listed in its srcs.
    archive = ctx.actions.declare_file("lib%s.lo" % ctx.label.name)
    ctx.actions.run(
        executable = cc_toolchain.ar_executable,
        arguments = ["rcs", archive.path] + [o.path for o in objects],
        inputs = objects,
        outputs = [archive],
        mnemonic = "NvccArchive",
    )
    return [DefaultInfo(files = depset([archive]))]

_nvcc_archive = rule(
    implementation = _nvcc_archive_impl,
    attrs = {
        "srcs": attr.label_list(allow_files = [".cu"]),
        "hdrs": attr.label_list(allow_files = True),
        "deps": attr.label_list(providers = [CcInfo]),
        "copts": attr.string_list(),
        "_cc_toolchain": attr.label(default = "@bazel_tools//tools/cpp:current_cc_toolchain"),
    },
    toolchains = ["@bazel_tools//tools/cpp:toolchain_type"],
    fragments = ["cpp"],
)

def cuda_library(name, srcs, hdrs = [], deps = [], copts = [], **kwargs):
    """A cc_library whose sources are .cu files compiled by nvcc for sm_90a."""
    all_deps = deps + ["@cuda//:cudart"]
    _nvcc_archive(
        name = name + "_nvcc",
        srcs = srcs,
        hdrs = hdrs,
        deps = all_deps,
        copts = copts,
    )
    native.cc_library(
        name = name,
        srcs = [":" + name + "_nvcc"],
        hdrs = hdrs,
        deps = all_deps,
        alwayslink = True,
        # No objects of its own, so no shared library to build (Bazel warns otherwise).
        linkstatic = True,
        **kwargs
    )
