//! Tells the tests what this machine can run, so that a check it cannot run
//! is reported as ignored (with the reason), never as passed.
//!
//! `tests/aot.rs`'s aarch64 test needs a cross compiler and qemu-user: with
//! them (or with `CELLC_REQUIRE_QEMU` set, which makes their absence a
//! failure), the build sets `cfg(cellc_qemu)` and the test runs; without them
//! `cargo test` lists it as "ignored, no aarch64-linux-gnu-gcc or
//! qemu-aarch64".

use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(cellc_qemu)");
    println!("cargo::rerun-if-env-changed=CELLC_REQUIRE_QEMU");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-changed=build.rs");
    let required = std::env::var_os("CELLC_REQUIRE_QEMU").is_some();
    if required || (have("aarch64-linux-gnu-gcc") && have("qemu-aarch64")) {
        println!("cargo::rustc-cfg=cellc_qemu");
    }
}
