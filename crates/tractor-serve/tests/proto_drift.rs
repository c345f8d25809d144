//! The committed gRPC code (`src/generated/inference.rs`) must be what the proto generates.
//!
//! Regenerate with `TRACTOR_REGENERATE=1 cargo test -p tractor-serve --test proto_drift`; protox parses
//! the proto in pure Rust, so no `protoc` is needed anywhere.

#[test]
fn generated_grpc_code_matches_the_proto() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let fds = protox::compile(
        [format!("{dir}/proto/grpc_predict_v2.proto")],
        [format!("{dir}/proto")],
    )
    .expect("parse proto");
    let out = std::env::temp_dir().join(format!("tractor-proto-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    tonic_prost_build::configure()
        .out_dir(&out)
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("generate");
    let fresh = std::fs::read_to_string(out.join("inference.rs")).expect("generated file");
    let _ = std::fs::remove_dir_all(&out);
    let committed_path = format!("{dir}/src/generated/inference.rs");
    if std::env::var_os("TRACTOR_REGENERATE").is_some() {
        std::fs::write(&committed_path, &fresh).expect("write generated code");
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        fresh == committed,
        "{committed_path} is stale: run TRACTOR_REGENERATE=1 cargo test -p tractor-serve --test proto_drift"
    );
}
