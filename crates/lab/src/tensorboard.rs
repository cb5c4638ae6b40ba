//! TensorBoard event files: every metrics row also goes, as scalars, into
//! `events.out.tfevents.<unix secs>.<host>` beside `metrics.jsonl`, so `tensorboard --logdir runs`
//! shows each run's curves (docs/metrics.md lists the tags).
//!
//! The format is small enough to write by hand, which spares a protobuf and a TensorFlow
//! dependency:
//!
//! - **Records** (TFRecord framing): the data length as a little-endian `u64`, the masked
//!   CRC-32C of those 8 bytes (`u32` LE), the data, the masked CRC-32C of the data. The mask is
//!   `((crc >> 15) | (crc << 17)) + 0xa282ead8`, wrapping.
//! - **Data**: one `tensorflow.Event` protobuf per record: `wall_time` (double, field 1), `step`
//!   (int64, field 2), and either `file_version` (string, field 3, `"brain.Event:2"`, only in the
//!   first record) or `summary` (message, field 5), whose repeated `value` (field 1) entries
//!   carry a `tag` (string, field 1) and a `simple_value` (float, field 2).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use attune_persist::AppendLog;

use crate::metrics::MetricRow;

/// The prefix TensorBoard looks for in a log directory.
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// The version string TensorBoard expects in the first event of a file.
const FILE_VERSION: &str = "brain.Event:2";

/// Appends events to one event file, one record per write (an attune-persist [`AppendLog`],
/// like metrics.jsonl; the file is rebuilt from metrics.jsonl whenever a run is opened).
pub struct EventWriter {
    path: PathBuf,
    file: AppendLog,
}

impl EventWriter {
    /// Removes the event files already in `dir` (they belong to rows `metrics.jsonl` no longer
    /// holds, or to an earlier run in the same directory) and starts a new one.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        remove_event_files(dir)?;
        let now = unix_now();
        let path = dir.join(format!("{FILE_PREFIX}{}.{}", now as u64, hostname()));
        let file = AppendLog::create(&path)?;
        let mut w = EventWriter { path, file };
        let mut event = Vec::new();
        put_double(&mut event, 1, now);
        put_varint_field(&mut event, 2, 0);
        put_bytes(&mut event, 3, FILE_VERSION.as_bytes());
        w.write_record(&event)?;
        Ok(w)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event holding `scalars` (tag, value) at `step`. Non-finite values are written
    /// as they are: TensorBoard shows them as NaN/inf, which is what happened.
    pub fn write_scalars(&mut self, step: u64, wall_time: f64, scalars: &[(String, f32)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, tag.as_bytes());
            put_float(&mut v, 2, *value);
            put_bytes(&mut summary, 1, &v);
        }
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time);
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    /// Frames `data` as one record and writes it in a single call.
    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.file.append(&rec).with_context(|| format!("writing {}", self.path.display()))
    }
}

/// The scalars of one metrics row: `<split>/loss`, `<split>/accuracy`, and where the row has
/// them `<split>/grad_norm` and `<split>/tokens_per_s`; training rows add `train/lr` (the
/// other splits repeat the same learning rate, so it is logged once).
pub fn scalars_of(row: &MetricRow) -> Vec<(String, f32)> {
    let s = &row.split;
    let mut out = vec![(format!("{s}/loss"), row.loss as f32), (format!("{s}/accuracy"), row.accuracy as f32)];
    if let Some(g) = row.grad_norm {
        out.push((format!("{s}/grad_norm"), g as f32));
    }
    if let Some(t) = row.tokens_per_s {
        out.push((format!("{s}/tokens_per_s"), t as f32));
    }
    if s == "train" {
        out.push(("train/lr".into(), row.lr as f32));
    }
    if let Some(rl) = &row.rl {
        for (k, v) in [
            ("reward", rl.reward),
            ("baseline", rl.baseline),
            ("policy_loss", rl.policy_loss),
            ("reinforce_var", rl.reinforce_var),
        ] {
            out.push((format!("{s}/{k}"), v as f32));
        }
    }
    out
}

/// Deletes `dir/events.out.tfevents.*`.
fn remove_event_files(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(FILE_PREFIX) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove the stale event file {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The machine's name for the file name (TensorBoard's convention); `localhost` when unknown.
/// Characters other than ASCII letters, digits, `-` and `.` become `_`, so it is a safe name.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let name: String =
        raw.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    if name.is_empty() { "localhost".into() } else { name }
}

// ---- protobuf wire format (only the three wire types the Event message needs) ----

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Field key: field number and wire type (0 varint, 1 64-bit, 2 length-delimited, 5 32-bit).
fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_key(out, field, 0);
    put_varint(out, v);
}

fn put_double(out: &mut Vec<u8>, field: u32, v: f64) {
    put_key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_float(out: &mut Vec<u8>, field: u32, v: f32) {
    put_key(out, field, 5);
    out.extend_from_slice(&v.to_le_bytes());
}

// ---- CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), table-driven ----

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82f6_3b78 } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8))
}

/// The CRC TFRecord stores: rotated and offset so that a CRC of data containing CRCs is not
/// trivially related to them.
fn masked_crc32c(data: &[u8]) -> u32 {
    // `((crc >> 15) | (crc << 17)) + 0xa282ead8` in the format's definition.
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check value of the CRC-32C catalogue entry (CRC RevEng, "CRC-32/ISCSI").
    #[test]
    fn crc32c_matches_the_published_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn varints_use_seven_bits_per_byte() {
        let enc = |v| {
            let mut o = Vec::new();
            put_varint(&mut o, v);
            o
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(1), [1]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
    }
}
