//! Parsing `ptxas -v` (the `ptxas info` lines) into per-function resources.
//!
//! For each entry ptxas prints `Compiling entry function 'NAME' for 'sm_XX'`, then
//! `Function properties for NAME` followed by a line `N bytes stack frame, S bytes spill
//! stores, L bytes spill loads`, then `Used R registers, ... M bytes smem, C bytes cmem[B]`.
//! Non-inlined device functions get only the `Function properties` pair.

/// Resources of one function as ptxas reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionResources {
    /// The (unmangled for `extern "C"`) name.
    pub name: String,
    /// Whether it is a kernel entry (else a called device function).
    pub entry: bool,
    /// Registers per thread (entries only).
    pub registers: u32,
    /// Stack frame bytes.
    pub stack: u32,
    /// Spill store bytes.
    pub spill_stores: u32,
    /// Spill load bytes.
    pub spill_loads: u32,
    /// Static shared memory bytes.
    pub smem: u32,
    /// Constant memory bytes, summed over banks (`cmem[0]` holds the parameters).
    pub cmem: u32,
    /// Barriers used.
    pub barriers: u32,
}

/// The first unsigned number in `s` (`12 registers`, `used 1 barriers`).
fn first_number(s: &str) -> Option<u32> {
    let digits: String = s.chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The text between the first pair of single quotes after `marker`.
fn quoted_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let start = rest.find('\'')? + 1;
    let len = rest[start..].find('\'')?;
    Some(&rest[start..start + len])
}

/// Parses the whole `ptxas -v` output (stdout and stderr together).
pub fn parse(output: &str) -> Vec<FunctionResources> {
    let mut funcs: Vec<FunctionResources> = Vec::new();
    let index = |funcs: &mut Vec<FunctionResources>, name: &str| -> usize {
        match funcs.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                funcs.push(FunctionResources { name: name.to_string(), ..Default::default() });
                funcs.len() - 1
            }
        }
    };
    // The function the next properties line describes, and the entry being compiled.
    let mut properties_of: Option<usize> = None;
    let mut compiling: Option<usize> = None;
    for line in output.lines() {
        let text = line.trim();
        if let Some(name) = quoted_after(text, "Compiling entry function") {
            let i = index(&mut funcs, name);
            funcs[i].entry = true;
            compiling = Some(i);
        } else if let Some(name) = text.split("Function properties for ").nth(1) {
            properties_of = Some(index(&mut funcs, name.trim()));
        } else if text.contains("bytes stack frame") {
            if let Some(i) = properties_of.take() {
                for part in text.split(',') {
                    let n = first_number(part).unwrap_or(0);
                    if part.contains("stack frame") {
                        funcs[i].stack = n;
                    } else if part.contains("spill stores") {
                        funcs[i].spill_stores = n;
                    } else if part.contains("spill loads") {
                        funcs[i].spill_loads = n;
                    }
                }
            }
        } else if let Some(rest) = text.split("Used ").nth(1).filter(|r| r.contains("registers"))
            && let Some(i) = compiling
        {
            for part in rest.split(',') {
                let n = first_number(part).unwrap_or(0);
                if part.contains("registers") {
                    funcs[i].registers = n;
                } else if part.contains("barriers") {
                    funcs[i].barriers = n;
                } else if part.contains("bytes smem") {
                    funcs[i].smem = n;
                } else if part.contains("bytes cmem") {
                    funcs[i].cmem += n;
                }
            }
        }
    }
    funcs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from the CUDA 12.9 ptxas (`ptxas -arch=sm_80 -v --maxrregcount 24`) on a kernel
    /// made to spill, with a non-inlined device function, plus the smoke kernel's entries (its
    /// `8 bytes cmem[2]` added by hand to cover a second constant bank).
    const SAMPLE: &str = "\
ptxas info    : Overriding maximum register limit 256 for 'heavy' with  24 of maxrregcount option
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'heavy' for 'sm_80'
ptxas info    : Function properties for heavy
    288 bytes stack frame, 496 bytes spill stores, 508 bytes spill loads
ptxas info    : Used 24 registers, used 0 barriers, 288 bytes cumulative stack size, 372 bytes cmem[0]
ptxas info    : Compile time = 19.622 ms
ptxas info    : Function properties for _Z6helperPfi
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function 'smoke_block_sum' for 'sm_80'
ptxas info    : Function properties for smoke_block_sum
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 1 barriers, 512 bytes smem, 368 bytes cmem[0], 8 bytes cmem[2]
ptxas info    : Compile time = 3.021 ms
";

    #[test]
    fn parses_entries_spills_and_device_functions() {
        let f = parse(SAMPLE);
        assert_eq!(f.len(), 3);
        let heavy = &f[0];
        assert_eq!(
            heavy,
            &FunctionResources {
                name: "heavy".into(),
                entry: true,
                registers: 24,
                stack: 288,
                spill_stores: 496,
                spill_loads: 508,
                smem: 0,
                cmem: 372,
                barriers: 0
            }
        );
        assert_eq!((f[1].name.as_str(), f[1].entry, f[1].stack), ("_Z6helperPfi", false, 0));
        let sum = &f[2];
        assert_eq!((sum.name.as_str(), sum.entry, sum.registers, sum.barriers), ("smoke_block_sum", true, 12, 1));
        assert_eq!((sum.smem, sum.cmem, sum.spill_stores, sum.spill_loads), (512, 376, 0, 0));
    }

    #[test]
    fn sm90_lines_without_cmem_parse() {
        let out = "ptxas info    : Compiling entry function 'smoke_axpy' for 'sm_90'\nptxas info    : Function properties for smoke_axpy\n    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\nptxas info    : Used 10 registers, used 0 barriers\n";
        let f = parse(out);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].registers, f[0].smem, f[0].cmem), (10, 0, 0));
    }
}
