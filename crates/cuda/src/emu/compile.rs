//! Building an emulator module: the kernel file and its headers are written into a temporary
//! directory, the preprocessed source is scanned for `extern "C" __global__` entry points, a
//! trailer exporting one thunk per entry is appended, and the host C++ compiler links a shared
//! library that is stored in the disk cache.

use crate::cache::DiskCache;
use crate::sources::SourceSet;
use crate::{Error, ModuleSpec, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Bumped whenever the trailer, the flags or the ABI between Rust and the runtime headers
/// change, so stale cache entries are never loaded.
const EMU_BUILD_VERSION: &str = "attune-emu-build-1";

/// The host C++ compiler: `CXX` (program plus optional leading arguments) or `c++`.
#[derive(Debug, Clone)]
pub(crate) struct HostCompiler {
    /// The command line prefix (program and its arguments from `CXX`).
    pub argv: Vec<String>,
    /// `--version` output, part of every cache key.
    pub version: String,
}

impl HostCompiler {
    /// The compiler as a display string.
    pub fn display(&self) -> String {
        self.argv.join(" ")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        cmd
    }
}

/// The host compiler, probed once per process.
pub(crate) fn host_compiler() -> Result<&'static HostCompiler> {
    static CXX: OnceLock<std::result::Result<HostCompiler, String>> = OnceLock::new();
    let probed = CXX.get_or_init(|| {
        let spec = std::env::var("CXX").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "c++".into());
        let argv: Vec<String> = spec.split_whitespace().map(str::to_string).collect();
        let probe = HostCompiler { argv: argv.clone(), version: String::new() };
        match probe.command().arg("--version").output() {
            Ok(out) if out.status.success() => {
                Ok(HostCompiler { argv, version: String::from_utf8_lossy(&out.stdout).trim().to_string() })
            }
            Ok(out) => Err(format!("`{spec} --version` exited with {}", out.status)),
            Err(e) => Err(format!("running `{spec} --version`: {e}")),
        }
    });
    probed.as_ref().map_err(|why| Error::ToolchainMissing {
        what: "a host C++ compiler for the CUDA emulator",
        looked: why.clone(),
        env: "CXX (e.g. CXX=g++)",
    })
}

/// Compiler flags. `-ffp-contract=off` keeps a*b+c two roundings whatever the compiler's default
/// and the target (no -march, so the cached library runs on any x86-64 sharing the cache);
/// `-fno-strict-aliasing` because CUDA code reinterprets shared memory between types (half2 as
/// u32, float4 loads); `-fno-math-errno` lets sqrtf inline without changing any result.
pub(crate) fn flags(sanitize: bool) -> Vec<&'static str> {
    let mut f = vec![
        "-std=c++17",
        "-fPIC",
        "-shared",
        "-fvisibility=hidden",
        "-fno-exceptions",
        "-fno-rtti",
        "-ffp-contract=off",
        "-fno-strict-aliasing",
        "-fno-math-errno",
    ];
    if sanitize {
        f.extend(["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-DATTUNE_EMU_SANITIZE=1"]);
    } else {
        f.push("-O2");
    }
    f
}

/// The cache key of a module: sources, headers, defines, flags, compiler version.
pub(crate) fn cache_key(set: &SourceSet, spec: &ModuleSpec, sanitize: bool, cxx: &HostCompiler) -> String {
    let flags = flags(sanitize).join(" ");
    let defines = spec.defines_string();
    set.hash(&[EMU_BUILD_VERSION, &defines, &flags, &cxx.display(), &cxx.version])
}

/// Builds the module of `spec` and stores it in `cache` under `key`; returns the cached path.
pub(crate) fn build(
    spec: &ModuleSpec,
    set: &SourceSet,
    sanitize: bool,
    cache: &DiskCache,
    key: &str,
) -> Result<PathBuf> {
    let cxx = host_compiler()?;
    let dir = cache.temp_path("build")?;
    let result = build_in(spec, set, sanitize, cache, key, cxx, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn build_in(
    spec: &ModuleSpec,
    set: &SourceSet,
    sanitize: bool,
    cache: &DiskCache,
    key: &str,
    cxx: &HostCompiler,
    dir: &Path,
) -> Result<PathBuf> {
    write_tree(dir, &set.file, set.source)?;
    for (name, text) in &set.headers {
        write_tree(dir, name, text)?;
    }
    let compile_error = |log: String| Error::EmuCompile {
        file: spec.file.clone(),
        defines: spec.defines_string(),
        compiler: cxx.display(),
        log,
    };
    let defines: Vec<String> = spec.defines.iter().map(|(k, v)| format!("-D{k}={v}")).collect();

    // 1. Preprocess with `__global__` kept as a token, to find the entry points (macros may
    //    generate kernels, #if may remove them).
    let mut pre = cxx.command();
    pre.current_dir(dir).args(["-E", "-P", "-x", "c++", "-std=c++17", "-iquote", ".", "-DATTUNE_EMU_SCAN=1"]);
    if sanitize {
        pre.arg("-DATTUNE_EMU_SANITIZE=1");
    }
    pre.args(&defines).arg(&set.file);
    let out = pre.output().map_err(|e| compile_error(format!("could not run the preprocessor: {e}")))?;
    if !out.status.success() {
        return Err(compile_error(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    let entries = scan_entries(&String::from_utf8_lossy(&out.stdout));

    // 2. Compile the file with the trailer into a shared library.
    let main = "attune_emu_main.cpp";
    let trailer = trailer(&set.file, &entries);
    std::fs::write(dir.join(main), trailer)
        .map_err(|e| Error::io("writing the emulator trailer", dir.join(main), e))?;
    let mut cc = cxx.command();
    cc.current_dir(dir).args(["-x", "c++", "-iquote", "."]).args(flags(sanitize)).args(&defines);
    cc.args([main, "-o", "module.so"]);
    let out = cc.output().map_err(|e| compile_error(format!("could not run the compiler: {e}")))?;
    if !out.status.success() {
        let mut log = String::from_utf8_lossy(&out.stderr).into_owned();
        log.push_str(&String::from_utf8_lossy(&out.stdout));
        return Err(compile_error(log));
    }
    cache.put_file(key, "so", &dir.join("module.so"))
}

fn write_tree(dir: &Path, rel: &str, text: &str) -> Result<()> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("creating the emulator build directory", parent, e))?;
    }
    std::fs::write(&path, text).map_err(|e| Error::io("writing a kernel source for the emulator", &path, e))
}

/// The generated end of the translation unit: the kernel file, then one thunk per entry and
/// the entry table (kernels/emu/launch.h).
pub(crate) fn trailer(file: &str, entries: &[String]) -> String {
    let mut s = format!("// Generated by attune-cuda's emulator.\n#include \"{file}\"\n");
    for e in entries {
        s.push_str(&format!("ATTUNE_EMU_THUNK({e})\n"));
    }
    s.push_str("static const AttuneEmuEntry attune_emu_entry_table[] = {\n");
    for e in entries {
        s.push_str(&format!("    ATTUNE_EMU_ENTRY({e}),\n"));
    }
    s.push_str("    {nullptr, nullptr, 0, nullptr}\n};\n");
    s.push_str(
        "extern \"C\" __attribute__((visibility(\"default\"))) const AttuneEmuEntry* attune_emu_entries() {\n    return attune_emu_entry_table;\n}\n",
    );
    s
}

/// The names of the `extern "C" __global__` functions in preprocessed source (one per name,
/// in order of first appearance).
pub(crate) fn scan_entries(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut names: Vec<String> = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find("__global__").map(|p| p + from) {
        from = pos + "__global__".len();
        let before_ok = pos == 0 || !is_ident(bytes[pos - 1]);
        let after_ok = from >= bytes.len() || !is_ident(bytes[from]);
        if !before_ok || !after_ok || !preceded_by_extern_c(&text[..pos]) {
            continue;
        }
        if let Some(name) = declared_name(&text[from..])
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn preceded_by_extern_c(before: &str) -> bool {
    let t = before.trim_end();
    let Some(rest) = t.strip_suffix("\"C\"") else { return false };
    rest.trim_end().ends_with("extern")
}

/// After `__global__`: skips `void`, attributes and `__launch_bounds__(...)`, returns the
/// identifier that precedes the parameter list.
fn declared_name(after: &str) -> Option<String> {
    let b = after.as_bytes();
    let mut i = 0;
    let mut last: Option<&str> = None;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if is_ident(c) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let word = &after[start..i];
            if matches!(word, "__attribute__" | "__launch_bounds__" | "__declspec" | "alignas") {
                i = skip_parens(b, i)?;
            } else {
                last = Some(word);
            }
        } else if c == b'(' {
            return last.filter(|w| *w != "void").map(str::to_string);
        } else if c == b'[' && b.get(i + 1) == Some(&b'[') {
            // C++11 attribute [[...]]
            let end = after[i..].find("]]")?;
            i += end + 2;
        } else {
            return None;
        }
    }
    None
}

fn skip_parens(b: &[u8], mut i: usize) -> Option<usize> {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if b.get(i) != Some(&b'(') {
        return Some(i);
    }
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_in_preprocessed_text() {
        let text = r#"
            extern "C" __global__ void __launch_bounds__(256, 2) first(const float* x, int n) {}
            extern "C"
            __global__ void second(S s);
            extern "C" __global__ void second(S s) { }
            template <int N> __global__ void not_an_entry(float* x) {}
            static __device__ void helper__global__x() {}
            extern "C" __global__ __attribute__((noinline)) void third() {}
        "#;
        assert_eq!(scan_entries(text), vec!["first", "second", "third"]);
    }

    #[test]
    fn trailer_lists_every_entry() {
        let t = trailer("tensor/x.cu", &["a".into(), "b".into()]);
        assert!(t.contains("#include \"tensor/x.cu\""));
        assert!(t.contains("ATTUNE_EMU_THUNK(a)") && t.contains("ATTUNE_EMU_ENTRY(b)"));
    }
}
