"""Detects a CUDA toolkit with NCCL and exposes it as @local_cuda.

@local_cuda//:defs.bzl defines CUDA_FOUND; @local_cuda//:cudart and :nccl are cc_library targets
that link the libraries, :runtime the headers and run path for loading them at run time (all
empty when CUDA is absent, so labels always resolve).
"""

def _cuda_configure_impl(ctx):
    cuda_path = ctx.os.environ.get("CUDA_PATH", "/usr/local/cuda")
    enabled = ctx.os.environ.get("EPINFER_CUDA", "1") != "0"
    root = ctx.path(cuda_path)
    found = (enabled and root.exists and
             ctx.path(cuda_path + "/include/cuda_runtime.h").exists and
             ctx.path(cuda_path + "/include/nccl.h").exists)

    if found:
        ctx.symlink(root.realpath, "cuda")
        libdirs = [d for d in ["lib64", "lib"] if ctx.path(cuda_path + "/" + d).exists]
        rpaths = ["-Wl,-rpath," + str(root.realpath) + "/" + d for d in libdirs]
        lflags = ["-L" + str(root.realpath) + "/" + d for d in libdirs]
        build = """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "headers",
    hdrs = glob(["cuda/include/**"], allow_empty = True),
    includes = ["cuda/include"],
)

cc_library(
    name = "cudart",
    deps = [":headers"],
    linkopts = {lflags} + {rpaths} + ["-lcudart"],
)

cc_library(
    name = "nccl",
    deps = [":cudart"],
    linkopts = {lflags} + {rpaths} + ["-lnccl"],
)

# For code that loads cudart and NCCL at run time (dlopen): the headers, and the toolkit's
# library directories as the binary's run path, linking neither library.
cc_library(
    name = "runtime",
    deps = [":headers"],
    linkopts = {rpaths} + ["-ldl"],
)
""".format(lflags = repr(lflags), rpaths = repr(rpaths))
    else:
        build = """
package(default_visibility = ["//visibility:public"])

cc_library(name = "headers")

cc_library(name = "cudart")

cc_library(name = "nccl")

cc_library(name = "runtime")
"""
    ctx.file("BUILD.bazel", build)
    ctx.file("defs.bzl", "CUDA_FOUND = {}\nCUDA_PATH = {}\n".format(
        "True" if found else "False",
        repr(str(root.realpath) if found else ""),
    ))

cuda_configure = repository_rule(
    implementation = _cuda_configure_impl,
    environ = ["CUDA_PATH", "EPINFER_CUDA"],
    local = True,
)
