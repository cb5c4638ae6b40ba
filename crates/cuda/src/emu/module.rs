//! Loaded emulator modules: a shared library per (kernel file + defines, sanitizer flag), its
//! entry table, and the process's map of them (lock-free reads; different modules build at
//! once, each one once).

use super::compile;
use crate::cache::DiskCache;
use crate::sources::SourceSet;
use crate::{Error, ModuleSpec, Result};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The `AttuneEmuEntry` struct of kernels/emu/launch.h.
#[repr(C)]
struct RawEntry {
    name: *const c_char,
    thunk: Option<Thunk>,
    nargs: c_uint,
    sizes: *const c_uint,
}

/// A kernel thunk: takes cuLaunchKernel-style `void** params`.
pub(crate) type Thunk = unsafe extern "C" fn(*mut *mut c_void);
/// `attune_emu_run_block` of kernels/emu/runtime.h.
pub(crate) type RunBlock = unsafe extern "C" fn(*const super::run::BlockLaunch) -> c_int;

/// One kernel of a module.
#[derive(Debug)]
pub(crate) struct Entry {
    pub name: CString,
    pub thunk: Thunk,
    /// `sizeof` of each parameter, in order.
    pub arg_sizes: Vec<u32>,
}

/// A loaded module. The library is never unloaded (its thread-locals hold static shared memory
/// of live threads), so the function pointers stay valid for the process.
pub(crate) struct Module {
    pub spec: ModuleSpec,
    pub run_block: RunBlock,
    pub entries: HashMap<String, Entry>,
    _lib: libloading::Library,
}

impl Module {
    /// The entry `name`, or [`Error::MissingEntry`] listing the ones there are.
    pub fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.get(name).ok_or_else(|| {
            let mut known: Vec<&str> = self.entries.keys().map(String::as_str).collect();
            known.sort();
            Error::MissingEntry {
                backend: "emu",
                entry: name.to_string(),
                file: format!("{} (whose entries are: {})", self.spec.file, known.join(", ")),
                defines: self.spec.defines_string(),
            }
        })
    }
}

/// Counters of module lookups, for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EmuStats {
    /// Modules compiled by the host compiler.
    pub compiled: u64,
    /// Modules loaded from a valid disk-cache entry without compiling.
    pub loaded_from_disk: u64,
}

type Key = (ModuleSpec, bool);

/// The modules of one executor.
pub(crate) struct ModuleMap {
    map: ArcSwap<HashMap<Key, Arc<Module>>>,
    /// A lock per module ever built: a build runs the host compiler on one core for seconds,
    /// so callers on other threads (the parity command checks cases on every core) build other
    /// modules meanwhile, while a second caller of the same module waits for the first.
    building: Mutex<HashMap<Key, Arc<Mutex<()>>>>,
    cache: DiskCache,
    compiled: AtomicU64,
    loaded: AtomicU64,
}

impl ModuleMap {
    pub fn new(cache: DiskCache) -> ModuleMap {
        ModuleMap {
            map: ArcSwap::from_pointee(HashMap::new()),
            building: Mutex::new(HashMap::new()),
            cache,
            compiled: AtomicU64::new(0),
            loaded: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> EmuStats {
        EmuStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            loaded_from_disk: self.loaded.load(Ordering::Relaxed),
        }
    }

    pub fn cache(&self) -> &DiskCache {
        &self.cache
    }

    /// The module of `spec`, loading or building it on first use.
    pub fn get(&self, spec: &ModuleSpec, sanitize: bool) -> Result<Arc<Module>> {
        let key = (spec.clone(), sanitize);
        if let Some(m) = self.map.load().get(&key) {
            return Ok(m.clone());
        }
        let slot = self.building.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().clone();
        let _guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = self.map.load().get(&key) {
            return Ok(m.clone());
        }
        let module = Arc::new(self.load_or_build(spec, sanitize)?);
        // rcu: another thread may have stored a different module since the load above.
        self.map.rcu(|map| {
            let mut next = HashMap::clone(map);
            next.insert(key.clone(), module.clone());
            next
        });
        Ok(module)
    }

    fn load_or_build(&self, spec: &ModuleSpec, sanitize: bool) -> Result<Module> {
        let set = SourceSet::load(&spec.file)?;
        let cxx = compile::host_compiler()?;
        let key = compile::cache_key(&set, spec, sanitize, cxx);
        let bytes = match self.cache.get(&key, "so") {
            Some(bytes) => {
                self.loaded.fetch_add(1, Ordering::Relaxed);
                bytes
            }
            None => {
                let path = compile::build(spec, &set, sanitize, &self.cache, &key)?;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                std::fs::read(&path).map_err(|e| Error::io("reading a built emulator module", &path, e))?
            }
        };
        load(spec, &key, &bytes, sanitize)
    }
}

/// dlopen()s the verified bytes from a private copy: the cache file itself could be replaced by
/// another process, and glibc would hand back an already loaded library of the same path.
fn load(spec: &ModuleSpec, key: &str, bytes: &[u8], sanitize: bool) -> Result<Module> {
    if sanitize {
        super::sanitize::check_runtime_loaded()?;
    }
    let dir = std::env::temp_dir().join(format!("attune-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating the emulator's load directory", &dir, e))?;
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let path: PathBuf = dir.join(format!("{key}-{}.so", SERIAL.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, bytes).map_err(|e| Error::io("writing an emulator module to load", &path, e))?;
    let loaded = unsafe { libloading::Library::new(&path) };
    // ASan symbolises reports from the file, so it stays while sanitizing.
    if !sanitize {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&dir);
    }
    let bad = |why: String| Error::EmuCompile {
        file: spec.file.clone(),
        defines: spec.defines_string(),
        compiler: "dlopen".into(),
        log: why,
    };
    let lib = loaded.map_err(|e| bad(format!("loading the compiled module failed: {e}")))?;
    unsafe {
        let abi: libloading::Symbol<unsafe extern "C" fn() -> c_uint> =
            lib.get(b"attune_emu_abi_version\0").map_err(|e| bad(format!("no ABI version symbol: {e}")))?;
        if abi() != super::run::ABI_VERSION {
            return Err(bad(format!(
                "module ABI {} but this build expects {}; clear the cache",
                abi(),
                super::run::ABI_VERSION
            )));
        }
        let run_block: RunBlock = *lib
            .get::<RunBlock>(b"attune_emu_run_block\0")
            .map_err(|e| bad(format!("no attune_emu_run_block: {e}")))?;
        let table: libloading::Symbol<unsafe extern "C" fn() -> *const RawEntry> =
            lib.get(b"attune_emu_entries\0").map_err(|e| bad(format!("no entry table: {e}")))?;
        let mut entries = HashMap::new();
        let mut p = table();
        while !(*p).name.is_null() {
            let raw = &*p;
            let name = CStr::from_ptr(raw.name).to_owned();
            let sizes = (0..raw.nargs as usize).map(|i| *raw.sizes.add(i)).collect();
            let thunk = raw.thunk.ok_or_else(|| bad("entry without a thunk".into()))?;
            entries.insert(name.to_string_lossy().into_owned(), Entry { name, thunk, arg_sizes: sizes });
            p = p.add(1);
        }
        Ok(Module { spec: spec.clone(), run_block, entries, _lib: lib })
    }
}
