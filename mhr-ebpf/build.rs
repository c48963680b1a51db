//! Rebuild when the bpf-linker binary changes (cargo cannot see it otherwise).
fn main() {
    // The host build of this crate (a build-dependency of mhr-userspace) is
    // an empty library and links nothing.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("bpf") {
        return;
    }
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
