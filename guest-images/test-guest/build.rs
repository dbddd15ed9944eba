//! Links the guest with its own linker script (fixed layout at 0x100000) and
//! refuses to build it as a position-independent executable.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");

    // The flags come from .cargo/config.toml, which cargo only reads when run
    // from this folder; without them lld would link a static PIE.
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !flags
        .split('\x1f')
        .any(|flag| flag.ends_with("relocation-model=static"))
    {
        panic!(
            "mercury-test-guest needs `-C relocation-model=static` (from its \
             .cargo/config.toml): build it with guest-images/test-guest/build.sh"
        );
    }
}
