"""C++ code from .proto files with Debian's protoc and grpc_cpp_plugin (no rules_proto offline)."""

def epinfer_proto(name, src, deps = [], services = True):
    """Makes <name>_cc_proto (messages) and, with services, <name>_cc_grpc (stubs).

    Args:
      name: base name, e.g. "completion".
      src: the .proto, under epinfer/v1/ in this package.
      deps: other epinfer_proto base names whose .proto files src imports.
      services: generate gRPC stubs.
    """
    base = src[:-len(".proto")]
    dep_srcs = [":" + d + "_proto_src" for d in deps]
    native.filegroup(
        name = name + "_proto_src",
        srcs = [src],
        visibility = ["//visibility:public"],
    )
    outs = [base + ".pb.h", base + ".pb.cc"]
    if services:
        outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    grpc_flags = ("--grpc_out=$(GENDIR)/proto --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin "
                  if services else "")
    native.genrule(
        name = name + "_gen",
        srcs = [src] + dep_srcs,
        outs = outs,
        cmd = ("/usr/bin/protoc --proto_path=proto --cpp_out=$(GENDIR)/proto " + grpc_flags +
               "proto/" + src),
    )
    native.cc_library(
        name = name + "_cc_proto",
        srcs = [base + ".pb.cc"],
        hdrs = [base + ".pb.h"],
        includes = ["."],
        deps = [":" + d + "_cc_proto" for d in deps] + ["//third_party:protobuf"],
        visibility = ["//visibility:public"],
    )
    if services:
        native.cc_library(
            name = name + "_cc_grpc",
            srcs = [base + ".grpc.pb.cc"],
            hdrs = [base + ".grpc.pb.h"],
            includes = ["."],
            deps = [":" + name + "_cc_proto", "//third_party:grpc"],
            visibility = ["//visibility:public"],
        )
