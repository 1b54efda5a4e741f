//! Build steps: compile the wire protocol (no system protoc needed), write
//! the C header, and give the shared library its SONAME and export list.

use std::env;
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());

    // The shared library: SONAME carries the major version; export fm_* only.
    let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libflowmesh.so.{major}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={}", root.join("flowmesh.map").display());
    println!("cargo:rerun-if-changed=flowmesh.map");

    compile_protos(&root);
    generate_header(&root);
}

fn compile_protos(root: &std::path::Path) {
    let proto_dir = root.join("proto");
    println!("cargo:rerun-if-changed=proto");
    let files: Vec<PathBuf> = std::fs::read_dir(proto_dir.join("flowmesh/v1"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "proto")).collect()
        })
        .unwrap_or_default();
    assert!(!files.is_empty(), "no .proto files under proto/flowmesh/v1");
    let fds = protox::compile(&files, [&proto_dir]).expect("proto files compile");
    tonic_prost_build::configure().bytes(".").compile_fds(fds).expect("generate gRPC code");
}

fn generate_header(root: &std::path::Path) {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    match cbindgen::Builder::new().with_crate(root).with_config(config).generate() {
        Ok(bindings) => {
            bindings.write_to_file(root.join("include/flowmesh.h"));
        }
        Err(e) => println!("cargo:warning=cbindgen could not generate include/flowmesh.h: {e}"),
    }
}
