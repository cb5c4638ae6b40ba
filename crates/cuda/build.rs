//! Embeds every file under the workspace's `kernels/` directory into the crate, so a built
//! binary carries its kernel sources (NVRTC and the emulator compile them at run time) and the
//! cache key can hash exactly what is compiled.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("cu" | "cuh" | "h")) {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kernels = manifest.join("../../kernels").canonicalize().expect("the workspace has a kernels/ directory");
    println!("cargo:rerun-if-changed={}", kernels.display());
    let mut files = Vec::new();
    collect(&kernels, &mut files);
    let mut code = String::from(
        "/// Every kernel source file: (path relative to kernels/, contents).\npub static KERNEL_FILES: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(&kernels).expect("inside kernels/").to_string_lossy().replace('\\', "/");
        writeln!(code, "    ({rel:?}, include_str!({:?})),", f.display().to_string()).expect("write to String");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kernel_files.rs");
    std::fs::write(out, code).expect("write kernel_files.rs");
}
