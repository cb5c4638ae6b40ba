//! The TensorBoard event files `MetricsLog` writes, read back by a reader written here from the
//! format's definition (TFRecord framing with masked CRC-32C, the `Event`/`Summary` protobufs),
//! sharing no code with the writer; and, when Python's `tensorboard` package is installed, by
//! TensorBoard's own `EventFileLoader`.

use std::path::{Path, PathBuf};

use attune_lab::metrics::{MetricRow, MetricsLog, read};

/// CRC-32C bit by bit (reflected Castagnoli polynomial), unlike the writer's table.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb == 1 {
                crc ^= 0x82f6_3b78;
            }
        }
    }
    crc ^ 0xffff_ffff
}

/// The mask as the format defines it, spelled as there.
#[allow(clippy::manual_rotate)]
fn masked(data: &[u8]) -> u32 {
    let c = crc32c(data);
    ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
}

/// Splits a TFRecord file into its records, checking both CRCs of each; `Err` names the first
/// bad record.
fn records(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes.get(at..at + 12).ok_or(format!("record {}: truncated header", out.len()))?;
        let len = u64::from_le_bytes(header[..8].try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(header[8..12].try_into().unwrap());
        if len_crc != masked(&header[..8]) {
            return Err(format!("record {}: length CRC {len_crc:#x} != {:#x}", out.len(), masked(&header[..8])));
        }
        let data = bytes.get(at + 12..at + 12 + len).ok_or(format!("record {}: truncated data", out.len()))?;
        let tail = bytes.get(at + 12 + len..at + 16 + len).ok_or(format!("record {}: no data CRC", out.len()))?;
        let data_crc = u32::from_le_bytes(tail.try_into().unwrap());
        if data_crc != masked(data) {
            return Err(format!("record {}: data CRC {data_crc:#x} != {:#x}", out.len(), masked(data)));
        }
        out.push(data.to_vec());
        at += 16 + len;
    }
    Ok(out)
}

/// One protobuf field value.
#[derive(Debug)]
enum Field {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(Vec<u8>),
    Fixed32([u8; 4]),
}

fn varint(b: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// Every (field number, value) of a message, in order.
fn fields(b: &[u8]) -> Vec<(u64, Field)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        let key = varint(b, &mut at);
        let value = match key & 7 {
            0 => Field::Varint(varint(b, &mut at)),
            1 => {
                at += 8;
                Field::Fixed64(b[at - 8..at].try_into().unwrap())
            }
            2 => {
                let n = varint(b, &mut at) as usize;
                at += n;
                Field::Bytes(b[at - n..at].to_vec())
            }
            5 => {
                at += 4;
                Field::Fixed32(b[at - 4..at].try_into().unwrap())
            }
            w => panic!("unexpected wire type {w}"),
        };
        out.push((key >> 3, value));
    }
    out
}

/// A decoded `Event`.
#[derive(Debug, Default)]
struct Event {
    wall_time: f64,
    step: u64,
    file_version: Option<String>,
    scalars: Vec<(String, f32)>,
}

fn event(data: &[u8]) -> Event {
    let mut e = Event::default();
    for (num, f) in fields(data) {
        match (num, f) {
            (1, Field::Fixed64(b)) => e.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => e.step = v,
            (3, Field::Bytes(s)) => e.file_version = Some(String::from_utf8(s).unwrap()),
            (5, Field::Bytes(summary)) => {
                for (vnum, value) in fields(&summary) {
                    let (1, Field::Bytes(value)) = (vnum, value) else { panic!("Summary field {vnum}") };
                    let (mut tag, mut simple) = (None, None);
                    for (n, f) in fields(&value) {
                        match (n, f) {
                            (1, Field::Bytes(t)) => tag = Some(String::from_utf8(t).unwrap()),
                            (2, Field::Fixed32(x)) => simple = Some(f32::from_le_bytes(x)),
                            other => panic!("Summary.Value field {other:?}"),
                        }
                    }
                    e.scalars.push((tag.expect("tag"), simple.expect("simple_value")));
                }
            }
            other => panic!("Event field {other:?}"),
        }
    }
    e
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."))
        .collect();
    v.sort();
    v
}

/// The single event file of `dir`, decoded.
fn read_events(dir: &Path) -> Vec<Event> {
    let files = event_files(dir);
    assert_eq!(files.len(), 1, "expected one event file, found {files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    records(&bytes).unwrap().iter().map(|r| event(r)).collect()
}

fn row(step: u64, split: &str, loss: f64) -> MetricRow {
    let train = split == "train";
    MetricRow {
        step,
        split: split.into(),
        loss,
        accuracy: 1.0 / (1.0 + loss),
        lr: 1e-3 / step as f64,
        grad_norm: train.then_some(0.5 * step as f64),
        tokens_per_s: train.then_some(1000.0 + step as f64),
        elapsed_s: 0.25 * step as f64,
        rl: None,
        eval_metrics: None,
        comm_fraction: None,
    }
}

/// The (tag, value) pairs a row must appear as in TensorBoard, written out from the row
/// rather than through the writer's mapping.
fn expected(r: &MetricRow) -> Vec<(String, f32)> {
    let s = &r.split;
    let mut v = vec![(format!("{s}/loss"), r.loss as f32), (format!("{s}/accuracy"), r.accuracy as f32)];
    if s == "train" {
        v.push(("train/grad_norm".into(), r.grad_norm.unwrap() as f32));
        v.push(("train/tokens_per_s".into(), r.tokens_per_s.unwrap() as f32));
        v.push(("train/lr".into(), r.lr as f32));
    }
    v
}

/// Checks that the events of `dir` are the file-version event followed by one event per row
/// of `metrics.jsonl`, in order, with the row's step and scalars.
fn assert_events_match_metrics(dir: &Path) {
    let rows = read(&dir.join("metrics.jsonl")).unwrap();
    let events = read_events(dir);
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert!(events[0].scalars.is_empty());
    assert_eq!(events.len(), rows.len() + 1, "one event per metrics row after the version event");
    for (r, e) in rows.iter().zip(&events[1..]) {
        assert_eq!(e.step, r.step);
        assert_eq!(e.file_version, None);
        let mut got = e.scalars.clone();
        let mut want = expected(r);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "step {} {}", r.step, r.split);
    }
    // Wall times follow the rows' training time, so TensorBoard's relative axis is elapsed_s.
    for (r, e) in rows.iter().zip(&events[1..]) {
        let first = &events[1];
        assert!(((e.wall_time - first.wall_time) - (r.elapsed_s - rows[0].elapsed_s)).abs() < 1e-3);
    }
}

#[test]
fn every_metrics_row_becomes_an_event_with_valid_crcs() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetricsLog::open(dir.path(), None).unwrap();
    for step in 1..=6 {
        log.write(&row(step, "train", 2.0 / step as f64)).unwrap();
        if step % 2 == 0 {
            log.write(&row(step, "valid", 2.5 / step as f64)).unwrap();
        }
    }
    let name = log.events_path().file_name().unwrap().to_string_lossy().into_owned();
    let parts: Vec<&str> = name.strip_prefix("events.out.tfevents.").unwrap().splitn(2, '.').collect();
    assert!(parts[0].parse::<u64>().unwrap() > 1_600_000_000, "unix seconds in {name}");
    assert!(!parts[1].is_empty(), "host name in {name}");
    assert_events_match_metrics(dir.path());
    assert_eq!(read_events(dir.path()).len(), 1 + 6 + 3);
}

#[test]
fn the_reader_here_rejects_a_flipped_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetricsLog::open(dir.path(), None).unwrap();
    log.write(&row(1, "train", 1.0)).unwrap();
    let path = event_files(dir.path()).remove(0);
    let bytes = std::fs::read(&path).unwrap();
    assert!(records(&bytes).is_ok());
    // One bit in the length, in the data, and in each CRC of the last record.
    let last = records(&bytes).unwrap().last().unwrap().len();
    let start = bytes.len() - last - 16;
    for at in [start, start + 9, start + 12 + last / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        assert!(records(&bad).is_err(), "flipped byte {at} passed");
    }
}

#[test]
fn a_resumed_log_rewrites_the_events_to_match_the_kept_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetricsLog::open(dir.path(), None).unwrap();
    let mut committed = 0;
    for step in 1..=6 {
        log.write(&row(step, "train", 1.0 / step as f64)).unwrap();
        if step == 3 {
            // What a checkpoint at step 3 records.
            committed = log.sync().unwrap();
        }
    }
    log.write(&row(6, "valid", 0.3)).unwrap();
    drop(log);
    // A stale file from some earlier run in the same directory goes too.
    std::fs::write(dir.path().join("events.out.tfevents.1.old-host"), b"stale").unwrap();
    let mut log = MetricsLog::open(dir.path(), Some(committed)).unwrap();
    log.write(&row(4, "train", 0.77)).unwrap();
    log.write(&row(4, "valid", 0.88)).unwrap();
    let rows = log.rows().unwrap();
    assert_eq!(rows.iter().map(|r| r.step).collect::<Vec<_>>(), [1, 2, 3, 4, 4]);
    assert_events_match_metrics(dir.path());
    // A fresh run in the directory starts both files empty.
    drop(log);
    MetricsLog::open(dir.path(), None).unwrap();
    assert_eq!(read_events(dir.path()).len(), 1);
}

/// TensorBoard's own reader, when Python has the `tensorboard` package (the test passes
/// without it, saying so on stderr).
#[test]
fn tensorboard_loads_the_events_when_installed() {
    let has_tb = std::process::Command::new("python3")
        .args(["-c", "import tensorboard.backend.event_processing.event_file_loader"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_tb {
        eprintln!("skipped: python3 cannot import tensorboard (pip install tensorboard to run this check)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetricsLog::open(dir.path(), None).unwrap();
    let rows = [row(1, "train", 2.0), row(2, "train", 1.5), row(2, "valid", 1.75)];
    for r in &rows {
        log.write(r).unwrap();
    }
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
for e in EventFileLoader(sys.argv[1]).Load():
    if e.HasField("file_version"):
        print("version", e.file_version)
    for v in e.summary.value:
        # The loader migrates simple_value to a scalar tensor.
        x = v.simple_value if v.HasField("simple_value") else v.tensor.float_val[0]
        print(e.step, v.tag, repr(x))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &log.events_path().to_string_lossy()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("version brain.Event:2"));
    let mut got: Vec<(u64, String, f32)> = lines
        .map(|l| {
            let p: Vec<&str> = l.split(' ').collect();
            (p[0].parse().unwrap(), p[1].to_string(), p[2].parse().unwrap())
        })
        .collect();
    let mut want: Vec<(u64, String, f32)> =
        rows.iter().flat_map(|r| expected(r).into_iter().map(|(t, v)| (r.step, t, v))).collect();
    got.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    want.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    assert_eq!(got, want);
}
