//! Compiles `proto/gatehouse/v1/*.proto` with a vendored `protoc`, so a fresh machine needs no
//! system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // `bytes` fields become `bytes::Bytes`: payloads are shared, not copied, on fan-out.
    config.bytes(["."]);
    println!("cargo:rerun-if-changed=../../proto");
    tonic_prost_build::configure().compile_with_config(
        config,
        &[
            "../../proto/gatehouse/v1/common.proto",
            "../../proto/gatehouse/v1/registry.proto",
            "../../proto/gatehouse/v1/gateway.proto",
            "../../proto/gatehouse/v1/api.proto",
        ],
        &["../../proto"],
    )?;
    Ok(())
}
