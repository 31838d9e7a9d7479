//! Generates the gRPC code from `proto/` with a vendored `protoc`, so a fresh machine needs no
//! protobuf install, and writes the file descriptor set that server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "proto/mqtt/token/v1/token.proto",
        "proto/mqtt/token/v1/access_key.proto",
        "proto/mqtt/token/v1/device_credential.proto",
        "proto/mqtt/token/v1/broker_auth.proto",
        "proto/mqtt/token/v1/revocation.proto",
        "proto/mqtt/token/v1/broker_session.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("mqtt_token_v1_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");

    // mosquitto-go-auth's `grpc.AuthService` (a third-party contract, kept apart from ours).
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure().compile_protos(
        &[PathBuf::from("compat/go-auth/auth.proto")],
        &[PathBuf::from("compat/go-auth"), well_known],
    )?;
    println!("cargo:rerun-if-changed=compat");
    Ok(())
}
