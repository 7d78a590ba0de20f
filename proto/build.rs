//! Generates the gRPC code from the .proto with protox (pure Rust, no system
//! `protoc`) and tonic's prost codegen, and keeps the encoded descriptor set
//! for server reflection.
use protox::prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=breachcheck");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(["breachcheck/v1/breachcheck.proto"], ["."])?;
    std::fs::write(
        out_dir.join("breachcheck_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Bucket payloads are served straight from the index map, no copy.
        .bytes(".breachcheck.v1.BucketChunk.payload")
        // The client and server code only with the `grpc` feature: the
        // messages alone build for wasm32 (web/).
        .client_mod_attribute(".", "#[cfg(feature = \"grpc\")]")
        .server_mod_attribute(".", "#[cfg(feature = \"grpc\")]")
        .compile_fds(fds)?;
    Ok(())
}
