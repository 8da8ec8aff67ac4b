// Build script: records the compiler's version and socket2's (from Cargo.lock) for the
// agent's `ready` line. Cargo rebuilds the crate whenever rustc changes.
use std::{env, fs, path::Path, process::Command};

fn main() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "rustc (unknown version)".into());
    println!("cargo:rustc-env=AGENT_RUSTC_VERSION={version}");

    let lock = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.lock");
    let text = fs::read_to_string(&lock).unwrap_or_default();
    let mut socket2 = "unknown";
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"socket2\"" {
            if let Some(v) = lines.next().and_then(|l| l.trim().strip_prefix("version = ")) {
                socket2 = v.trim_matches('"');
            }
            break;
        }
    }
    println!("cargo:rustc-env=AGENT_SOCKET2_VERSION={socket2}");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=build.rs");
}
