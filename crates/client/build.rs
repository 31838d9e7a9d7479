//! Generates the protobuf types, gRPC clients and server stubs from the workspace's `proto/`
//! with a vendored `protoc`, so a fresh machine needs no protobuf install, and writes the file
//! descriptor set that the server's reflection serves. The one codegen: the server and every
//! client use these types.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { env::set_var("PROTOC", protoc) };

    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "token.proto",
        "access_key.proto",
        "device_credential.proto",
        "broker_auth.proto",
        "revocation.proto",
    ]
    .map(|p| root.join("mqtt/token/v1").join(p));
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("mqtt_token_v1_descriptor.bin"))
        .compile_protos(&protos, std::slice::from_ref(&root))?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
