//! Compiles the vendored CSI and kubelet plugin-registration protos with protox (a
//! pure-Rust protobuf compiler) and generates tonic servers and clients from them.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let protos = ["proto/csi.proto", "proto/pluginregistration.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // RPCs the plugin does not implement answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}
