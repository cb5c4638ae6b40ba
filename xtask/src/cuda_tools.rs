//! `cargo xtask cuda-tools [--cublas] [--nccl]`: installs the pinned CUDA 12.9 PyPI wheels (NVRTC, the
//! runtime headers, ptxas; with `--cublas` also cuBLAS, with `--nccl` NCCL) into `<target dir>/cuda-tools`, once
//! (a stamp file holds the pins; a second run only prints), then prints the toolchain the
//! runtime will use: the NVRTC library and `nvrtcVersion`, the include dir holding
//! cuda_fp16.h, and ptxas with `ptxas --version`.

use anyhow::{Context, Result};
use attune_cuda::toolchain;
use std::process::Command;

/// Options of `cargo xtask cuda-tools`.
#[derive(clap::Args, Debug)]
pub struct CudaToolsArgs {
    /// Also install cuBLAS (about 600 MB), for matrix multiply on a GPU without a CUDA toolkit.
    #[arg(long)]
    cublas: bool,
    /// Also install NCCL (about 320 MB) and its `libnccl.so` link, for `--distributed` training
    /// on GPUs (docs/distributed.md).
    #[arg(long)]
    nccl: bool,
}

/// Runs the command.
pub fn run(args: &CudaToolsArgs) -> Result<()> {
    let dir = toolchain::default_tools_dir();
    let pins: Vec<String> = toolchain::PINNED_WHEELS.iter().map(|(n, v)| format!("{n}=={v}")).collect();
    if toolchain::install_tools(&dir)? {
        println!("installed {} into {}", pins.join(" "), dir.display());
    } else {
        println!("already installed in {}: {}", dir.display(), pins.join(" "));
    }
    if args.cublas {
        let (n, v) = toolchain::CUBLAS_WHEELS[0];
        if toolchain::install_cublas(&dir)? {
            println!("installed {n}=={v} into {}", dir.join("cublas").display());
        } else {
            println!("already installed in {}: {n}=={v}", dir.join("cublas").display());
        }
    }
    if args.nccl {
        let (n, v) = toolchain::NCCL_WHEELS[0];
        let lib = toolchain::install_nccl(&dir)?;
        println!("NCCL:     {n}=={v} in {}; run GPU ranks with LD_LIBRARY_PATH={}", lib.display(), lib.display());
    }

    let nv = toolchain::nvrtc().context("the toolchain was installed but NVRTC cannot be loaded")?;
    let tc = &nv.toolchain;
    println!("NVRTC:    {} (nvrtcVersion {}.{})", tc.nvrtc_lib.display(), nv.version.0, nv.version.1);
    if let Some(b) = &tc.nvrtc_builtins {
        println!("builtins: {}", b.display());
    }
    println!("include:  {} (cuda_fp16.h)", tc.include_dir.display());
    let ptxas = tc.ptxas()?;
    let out = Command::new(ptxas).arg("--version").output().with_context(|| format!("running {}", ptxas.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    let version =
        version.lines().filter(|l| l.contains("release") || l.starts_with("Build")).collect::<Vec<_>>().join("; ");
    println!("ptxas:    {} ({version})", ptxas.display());
    match tc.cublas_libs.as_slice() {
        [] => println!(
            "cuBLAS:   not found (`cargo xtask cuda-tools --cublas` installs it; only GPU matrix multiply needs it)"
        ),
        libs => println!("cuBLAS:   {}", libs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")),
    }
    Ok(())
}
