//! Links the guest with its own linker script: x86_64 a fixed layout at
//! 0x100000 (refusing a position-independent executable), aarch64 a PIE
//! Image linked at 0 that relocates itself (linker-aarch64.ld).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    // x86_64: a fixed-address image; aarch64: a PIE that relocates itself.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let (script, model) = match arch.as_str() {
        "aarch64" => ("linker-aarch64.ld", "relocation-model=pie"),
        _ => ("linker.ld", "relocation-model=static"),
    };
    println!("cargo:rustc-link-arg-bins=-T{dir}/{script}");
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rerun-if-changed=build.rs");

    // The flags come from .cargo/config.toml, which cargo only reads when run
    // from this folder; without them lld would link the wrong kind of image.
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !flags.split('\x1f').any(|flag| flag.ends_with(model)) {
        panic!(
            "mercury-test-guest needs `-C {model}` (from its .cargo/config.toml): \
             build it with guest-images/test-guest/build.sh"
        );
    }
}
